"""Stand-in for CANN's `amct_onnx` Python package (tests only): the documented post-training flow
create_quant_config -> quantize_model -> calibration runs with AMCT_SO -> save_model.

It replays the public console line "INFO - [AMCT]:[Utils]: The model file is saved in PATH"
and file names (tests/fakes/data/SOURCES.md); its models are copies of the input marked
lvvit_opt.fake_amct (it does not quantize). save_model refuses to run before quantize_model
wrote its record, and counts the calibration runs: fewer than batch_num is an error (the guide:
save_model only after batch_num forward passes).
"""
import json
import re
from pathlib import Path

import onnx
import onnxruntime

AMCT_SO = onnxruntime.SessionOptions()
_state = {"batch_num": 1, "runs": 0}


def _print(module, message):
    print(f"INFO - [AMCT]:[{module}]: {message}", flush=True)


def create_quant_config(config_file, model_file, skip_layers=None, batch_num=1, activation_offset=True,
                        config_defination=None, updated_model=None):
    if config_defination:
        text = Path(config_defination).read_text(encoding="utf-8")
        match = re.search(r"^batch_num\s*:\s*(\d+)", text, re.M)
        batch_num = int(match.group(1)) if match else 1
        skip_layers = re.findall(r'^skip_layers\s*:\s*"((?:[^"\\]|\\.)*)"', text, re.M)
    _state["batch_num"] = batch_num
    Path(config_file).parent.mkdir(parents=True, exist_ok=True)
    Path(config_file).write_text(json.dumps({"version": 1, "batch_num": batch_num, "skip_layers": skip_layers or []}))
    _print("Config", f"Generate config file:{config_file} success!")


def quantize_model(config_file, model_file, modified_onnx_file, record_file):
    model = onnx.load(model_file)
    onnx.save(model, modified_onnx_file)
    Path(record_file).write_text("".join(f'record {{\n  key: "{n.name}"\n  value {{\n  }}\n}}\n'
                                         for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")))
    _state["runs"] = 0
    _real_run = onnxruntime.InferenceSession.run

    def counting_run(self, *args, **kwargs):
        _state["runs"] += 1
        return _real_run(self, *args, **kwargs)
    onnxruntime.InferenceSession.run = counting_run


def save_model(modified_onnx_file, record_file, save_path):
    if not Path(record_file).is_file():
        raise RuntimeError(f"record file {record_file} does not exist")
    if _state["runs"] < _state["batch_num"]:
        raise RuntimeError(f"only {_state['runs']} calibration batch(es) ran, batch_num is {_state['batch_num']}")
    model = onnx.load(modified_onnx_file)
    Path(save_path).parent.mkdir(parents=True, exist_ok=True)
    for kind in ("deploy", "fake_quant"):
        entry = model.metadata_props.add()
        entry.key, entry.value = "lvvit_opt.fake_amct", kind
        path = f"{save_path}_{kind}_model.onnx"
        onnx.save(model, path)
        del model.metadata_props[-1]
        _print("Utils", f"The model file is saved in {path}")
