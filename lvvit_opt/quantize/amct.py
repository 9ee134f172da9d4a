"""Driving AMCT (`amct_onnx`, CANN's quantizer) for Ascend: its simplified config (quant.cfg),
its calibration data (.bin batches for --data_dir), the exact commands, and the run itself
where amct_onnx is on the PATH; then atc on the deploy model.

Formats, from CANN's AMCT guide and Ascend/samples (python/level1_single_api/9_amct/amct_onnx):
- quant.cfg is the text form of calibration_config_onnx.proto: `batch_num`, `activation_offset`,
  repeated `skip_layers`, `common_config { arq_quantize {...} ifmr_quantize {...} }` and
  `override_layer_types { layer_type calibration_config {...} }`; with --calibration_config
  the command line takes no --batch_num (documented), so batch_num goes in the file.
- --data_dir holds raw float32 .bin files, one batch of --input_shape each (the sample's
  process_data.py writes 16 images into calibration.bin for "input:16,3,224,224").
- The record file is the text form of scale_offset_record_onnx.proto (record { key value {
  scale_d offset_d scale_w offset_w } }); ours records the preview's parameters.
- Outputs: <save_path>_deploy_model.onnx (atc only), <save_path>_fake_quant_model.onnx,
  <save_path>_quant.json; console "INFO - [AMCT]:[Utils]: The model file is saved in PATH".
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

SAVED_LINE = re.compile(r"\[AMCT\]:\[\w+\]: The model file is saved in (\S+)")
# atc flags an INT8 deploy model refuses (CANN docs): no dynamic gears, no fp32-keeping precision modes.
_DYNAMIC_FLAGS = ("--dynamic_batch_size", "--dynamic_image_size", "--dynamic_dims")
_REFUSED_VALUES = {"--precision_mode": ("force_fp32", "must_keep_origin_dtype"),
                   "--precision_mode_v2": ("origin",),
                   "--op_select_implmode": ("high_precision", "high_precision_for_all")}


def check_int8_atc_args(args: Sequence[str]) -> None:
    """UserError (one line) for an atc flag CANN forbids with an INT8 deploy model."""
    from lvvit_opt.core.errors import UserError

    for arg in args:
        name, _, value = arg.partition("=")
        if name in _DYNAMIC_FLAGS:
            raise UserError(f"atc {name}: an INT8 deploy model takes no dynamic batch or shape gears (CANN); "
                            "quantize one static batch per size instead")
        if value in _REFUSED_VALUES.get(name, ()):
            raise UserError(f"atc {name}={value}: keeps layers out of fp16/INT8, which an INT8 deploy model "
                            "refuses (CANN); leave the precision flags out")


def _proto_float(value: float) -> str:
    return repr(float(value))


def quant_cfg_text(skip_layers: Sequence[str], batch_num: int, *, activation_offset: bool = True,
                   percentile: float = 0.999999, search_range: tuple[float, float] = (0.7, 1.3),
                   search_step: float = 0.01, notes: Mapping[str, str] | None = None) -> str:
    """AMCT's simplified post-training config. MatMul/Gemm get channel_wise false (AMCT: fully
    connected layers have no channel); Conv keeps channel_wise true."""
    notes = notes or {}
    ifmr = ("        ifmr_quantize : {\n"
            f"            search_range_start : {_proto_float(search_range[0])}\n"
            f"            search_range_end : {_proto_float(search_range[1])}\n"
            f"            search_step : {_proto_float(search_step)}\n"
            f"            max_percentile : {_proto_float(percentile)}\n"
            f"            min_percentile : {_proto_float(percentile)}\n"
            "        }\n")
    lines = ["# AMCT simplified post-training quantization config (calibration_config_onnx.proto),",
             "# written by lvvit-opt quantize. Layers in skip_layers stay float (fp16 after atc).",
             f"batch_num : {int(batch_num)}",
             f"activation_offset : {'true' if activation_offset else 'false'}"]
    for name in skip_layers:
        if name in notes:
            lines.append(f"# {notes[name]}")
        lines.append(f"skip_layers : {_quoted(name)}")
    text = "\n".join(lines) + "\n"
    text += ("common_config : {\n    arq_quantize : {\n        channel_wise : true\n    }\n"
             + ifmr.replace("        ", "    ", 1).replace("\n        ", "\n    ") + "}\n")
    for op in ("MatMul", "Gemm"):
        text += (f"override_layer_types : {{\n    layer_type : \"{op}\"\n    calibration_config : {{\n"
                 "        arq_quantize : {\n            channel_wise : false\n        }\n" + ifmr + "    }\n}\n")
    return text


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def record_text(layers: Sequence, params: Mapping) -> str:
    """The preview's parameters as AMCT's record file (scale_offset_record_onnx.proto, text form)."""
    out = []
    for layer in layers:
        if not layer.quantize or layer.name not in params:
            continue
        p = params[layer.name]
        scales = np.atleast_1d(p.weight_scale)
        body = [f"    scale_d: {_proto_float(p.act.scale)}", f"    offset_d: {p.act.offset}"]
        body += [f"    scale_w: {_proto_float(s)}" for s in scales]
        body += ["    offset_w: 0"] * len(scales)
        out.append("record {\n  key: " + _quoted(layer.name) + "\n  value {\n" + "\n".join(
            "  " + line for line in body) + "\n  }\n}\n")
    return "".join(out)


@dataclass
class CalibData:
    """The .bin batches AMCT's --data_dir reads, and the matching --input_shape/--data_types."""

    data_dir: str  # ';'-joined folders for a multi-input model, relative to the output folder
    input_shape: str
    data_types: str
    batches: int
    files: list[str] = field(default_factory=list)


def write_calib_bins(feeds: list[dict[str, np.ndarray]], out_dir: Path, folder: str = "calib_bin") -> CalibData:
    """One raw .bin per feed set (and per input); every set must have the same shapes."""
    from lvvit_opt.core.errors import UserError
    from lvvit_opt.core.fileio import write_bytes_atomic

    names = list(feeds[0])
    shapes = {name: feeds[0][name].shape for name in names}
    usable = [f for f in feeds if all(f[n].shape == shapes[n] for n in names)]
    if len(usable) != len(feeds):  # a short last batch: AMCT's --input_shape is one shape
        if not usable:
            raise UserError("calibration batches differ in shape; AMCT's --input_shape takes one")
    files, dirs = [], []
    for name in names:
        sub = folder if len(names) == 1 else f"{folder}/{_safe(name)}"
        dirs.append(sub)
        for i, feed in enumerate(usable):
            rel = f"{sub}/calib_{i:04d}.bin"
            write_bytes_atomic(out_dir / rel, np.ascontiguousarray(feed[name]).tobytes())
            files.append(rel)
    return CalibData(";".join(dirs), ";".join(f"{n}:{','.join(str(d) for d in shapes[n])}" for n in names),
                     ";".join(str(feeds[0][n].dtype) for n in names), len(usable), files)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "input"


def amct_command(model: str, save_path: str, data: CalibData, config: str) -> list[str]:
    """`amct_onnx calibration ...` as the CANN guide spells it (no --batch_num with a config file)."""
    return ["amct_onnx", "calibration", "--model", model, "--save_path", save_path, "--input_shape",
            data.input_shape, "--data_dir", data.data_dir, "--data_types", data.data_types,
            "--calibration_config", config]


def deploy_paths(save_path: str) -> dict[str, str]:
    return {"deploy": f"{save_path}_deploy_model.onnx", "fake_quant": f"{save_path}_fake_quant_model.onnx",
            "quant_json": f"{save_path}_quant.json"}


def atc_command(deploy_model: str, output: str, input_shape: str, soc_version: str,
                atc_args: Sequence[str] = ()) -> list[str]:
    """atc on the deploy model: no extra flag is needed for INT8 (CANN); refused flags are refused."""
    from lvvit_opt.ascend.atc import build_atc_command

    check_int8_atc_args(atc_args)
    shapes = []
    for part in input_shape.split(";"):
        name, _, dims = part.rpartition(":")
        shapes.append((name, tuple(int(d) for d in dims.split(","))))
    return build_atc_command(deploy_model, output=output, soc_version=soc_version, input_shapes=shapes,
                             extra_args=list(atc_args))


def commands_script(commands: Sequence[Sequence[str]]) -> str:
    """A POSIX shell script that runs `commands` from its own folder (every word shlex-quoted)."""
    lines = ["#!/bin/sh", "# written by lvvit-opt quantize --target ascend: run on a host with CANN "
             "(source /usr/local/Ascend/ascend-toolkit/set_env.sh first)", "set -e", 'cd "$(dirname "$0")"']
    lines += [shlex.join(list(c)) for c in commands]
    return "\n".join(lines) + "\n"


def find_amct(env: Mapping[str, str] | None = None) -> str | None:
    """The amct_onnx executable on the PATH, or None."""
    env = os.environ if env is None else env
    return shutil.which("amct_onnx", path=env.get("PATH"))


@dataclass
class AmctRun:
    returncode: int
    log_path: str
    saved: list[str]
    deploy: str | None
    fake_quant: str | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def run_amct(command: Sequence[str], cwd: Path, log_path: Path, env: Mapping[str, str] | None = None) -> AmctRun:
    """Run amct_onnx in `cwd`, its console to `log_path`; ToolFailed unless it exits 0 and both
    models it announces exist."""
    from lvvit_opt.core.errors import ToolFailed

    executable = find_amct(env)
    argv = [executable or command[0]] + list(command[1:])
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=dict(env or os.environ))
    text = Path(log_path).read_text(encoding="utf-8", errors="replace")
    saved = SAVED_LINE.findall(text)
    deploy = next((s for s in saved if s.endswith("_deploy_model.onnx")), None)
    fake = next((s for s in saved if s.endswith("_fake_quant_model.onnx")), None)
    result = AmctRun(proc.returncode, str(log_path), saved, deploy, fake)
    if proc.returncode != 0:
        tail = " | ".join(text.strip().splitlines()[-3:])[:300]
        raise ToolFailed(f"amct_onnx calibration exited {proc.returncode}: {tail} (log: {log_path})")
    missing = [p for p in (deploy, fake) if p is None or not (cwd / p).is_file()]
    if missing or deploy is None:
        raise ToolFailed(f"amct_onnx calibration exited 0 but did not save both models ({', '.join(saved) or 'none'} "
                         f"announced; log: {log_path})")
    return result


def amct_importable() -> bool:
    """amct_onnx importable in this Python (CANN's AMCT wheel installed), without importing it."""
    import importlib.util

    return importlib.util.find_spec("amct_onnx") is not None


def run_amct_python(model: str, cfg: Path, feeds: list[dict[str, np.ndarray]], batch_num: int, out: Path,
                    save_path: str) -> AmctRun:
    """AMCT's documented Python flow: create_quant_config (from quant.cfg) -> quantize_model ->
    batch_num calibration batches on onnxruntime with AMCT's session options -> save_model.
    Runs in `out` (AMCT writes amct_log/ in the working directory); ToolFailed on any error."""
    import contextlib
    import io

    from lvvit_opt.core.errors import ToolFailed

    work = out / "amct_tmp"
    work.mkdir(exist_ok=True)
    console = io.StringIO()
    previous = os.getcwd()
    try:
        os.chdir(out)
        with contextlib.redirect_stdout(console):
            import amct_onnx as amct
            import onnxruntime

            config = str(work / "config.json")
            modified = str(work / "modified_model.onnx")
            record = str(work / "record.txt")
            amct.create_quant_config(config_file=config, model_file=model, config_defination=str(cfg))
            amct.quantize_model(config, model, modified, record)
            session = onnxruntime.InferenceSession(modified, amct.AMCT_SO)
            for feed in feeds[:batch_num]:
                session.run(None, feed)
            amct.save_model(modified, record, save_path)
    except Exception as exc:
        raise ToolFailed(f"amct_onnx (Python API) failed: {type(exc).__name__}: {str(exc)[:300]}") from None
    finally:
        os.chdir(previous)
    log_path = out / "amct.log"
    log_path.write_text(console.getvalue(), encoding="utf-8")
    paths = deploy_paths(save_path)
    missing = [p for p in (paths["deploy"], paths["fake_quant"]) if not (out / p).is_file()]
    if missing:
        raise ToolFailed(f"amct_onnx save_model did not write {', '.join(missing)} (log: {log_path})")
    return AmctRun(0, str(log_path), SAVED_LINE.findall(console.getvalue()), paths["deploy"], paths["fake_quant"])
