"""What atc really compiled: an .om read back as JSON, op types, and the attention kernels chosen.

The documented way to look inside an .om is `atc --mode=1 --om=M.om --json=M.json` (CANN
docs, atc parameters --om/--json). The JSON is GE's ModelDef in protobuf-JSON form
(Ascend/metadef proto/ge_ir.proto): `graph[].op[]` with `name`, `type`, `attr` (a list of
{"key", "value": {"s"|"i"|"f"|"b"|"list"|...}}) and `input_desc[].shape.dim`, plus
model-level `attr` keys such as `soc_version` and `atc_cmdline` — the same fields msit's
own reader (Ascend/msit msquickcmp/npu/om_parser.py) walks.

For the attention block the op type is the kernel choice: CANN compiles an ONNX Transpose
either as `Transpose` (the fast, dynamic-shape kernel, picked when transpose.py's
`check_supported` accepts the shape) or as `TransposeD` (the slow static one), and an ONNX
Softmax as `SoftmaxV2` with its `axes` attribute — so the softmax_transpose rewrite shows as
SoftmaxV2 on axis 1 between two Transposes instead of on the last axis.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from lvvit_opt.core.errors import ToolFailed, UserError, shown

log = logging.getLogger(__name__)

FAST_TRANSPOSE, SLOW_TRANSPOSE = "Transpose", "TransposeD"
ATC_TIMEOUT_S = 600

Shape = tuple  # of ints


@dataclass(frozen=True)
class OmOp:
    name: str
    type: str
    graph: str
    input_shapes: tuple  # one Shape (or None when the JSON has none) per input_desc
    attrs: dict
    output_attrs: tuple = ()  # attr_map of each output_desc (e.g. _datadump_origin_name of a fused op)

    @property
    def is_transpose(self) -> bool:
        return self.type in (FAST_TRANSPOSE, SLOW_TRANSPOSE)

    @property
    def is_softmax(self) -> bool:
        return self.type.startswith("Softmax") and not self.type.startswith("SoftmaxGrad")


@dataclass(frozen=True)
class KernelUse:
    """Ops of one type on one input shape (and perm / axes): the kernel atc chose for them."""

    type: str
    input_shape: Shape | None
    setting: str        # "perm 0,3,2,1" / "axes 1" / ""
    names: tuple

    @property
    def count(self) -> int:
        return len(self.names)

    @property
    def verdict(self) -> str:
        if self.type == FAST_TRANSPOSE:
            return "fast"
        if self.type == SLOW_TRANSPOSE:
            return "slow (TransposeD)"
        return ""

    def to_dict(self) -> dict:
        return {"type": self.type, "input_shape": list(self.input_shape) if self.input_shape else None,
                "setting": self.setting, "count": self.count, "verdict": self.verdict, "ops": list(self.names)}


@dataclass
class OmModel:
    """An .om as atc describes it."""

    source: str                        # the .om (or .json) given
    name: str
    attrs: dict
    graphs: list[str]
    ops: list[OmOp] = field(default_factory=list)

    @property
    def soc_version(self) -> str | None:
        return self.attrs.get("soc_version")

    def op_counts(self) -> Counter:
        return Counter(op.type for op in self.ops)

    def attention_kernels(self) -> list[KernelUse]:
        groups: dict[tuple, list[str]] = {}
        for op in self.ops:
            if op.is_transpose or op.is_softmax:
                key = (op.type, op.input_shapes[0] if op.input_shapes else None, _setting(op))
                groups.setdefault(key, []).append(op.name)
        return [KernelUse(t, s, setting, tuple(names)) for (t, s, setting), names in groups.items()]

    def attention_summary(self) -> dict:
        """Counts that answer 'did the rewrite reach the compiled model?'."""
        softmax = [op for op in self.ops if op.is_softmax]
        last = [op for op in softmax if _softmax_on_last_axis(op)]
        return {"transpose_fast": sum(op.type == FAST_TRANSPOSE for op in self.ops),
                "transpose_slow": sum(op.type == SLOW_TRANSPOSE for op in self.ops),
                "softmax": len(softmax), "softmax_last_axis": len(last),
                "softmax_other_axis": len(softmax) - len(last)}

    def verdict(self) -> str:
        s = self.attention_summary()
        if not s["softmax"]:
            text = "no softmax in the compiled graph"
        elif s["softmax_other_axis"]:
            text = (f"{s['softmax_other_axis']} of {s['softmax']} softmax(es) run on a non-last axis "
                    "(softmax_transpose rewrite present)")
        else:
            text = f"all {s['softmax']} softmax(es) run on the last axis (no softmax_transpose rewrite)"
        slow = s["transpose_slow"]
        return text + (f"; {slow} Transpose(s) compiled as slow TransposeD: whitelist their shapes" if slow
                       else f"; {s['transpose_fast']} Transpose(s), none on TransposeD")

    def slow_transpose_shapes(self) -> list[Shape]:
        """Distinct input shapes of the TransposeD ops: what `whitelist patch --shape` should add."""
        shapes: list[Shape] = []
        for op in self.ops:
            shape = op.input_shapes[0] if op.type == SLOW_TRANSPOSE and op.input_shapes else None
            if shape and shape not in shapes:
                shapes.append(shape)
        return shapes

    def whitelist_command(self) -> str | None:
        """The `lvvit-opt whitelist patch` line that lists every TransposeD shape, if there is one."""
        shapes = self.slow_transpose_shapes()
        return ("lvvit-opt whitelist patch " + " ".join(f"--shape {_shape_text(s)}" for s in shapes)
                if shapes else None)

    def to_dict(self) -> dict:
        return {"source": self.source, "name": self.name, "soc_version": self.soc_version,
                "atc_cmdline": self.attrs.get("atc_cmdline"), "graphs": list(self.graphs),
                "op_count": len(self.ops), "op_types": dict(sorted(self.op_counts().items())),
                "attention": self.attention_summary(),
                "attention_kernels": [k.to_dict() for k in self.attention_kernels()], "verdict": self.verdict(),
                "slow_transpose_shapes": [list(s) for s in self.slow_transpose_shapes()],
                "whitelist_command": self.whitelist_command()}


def _setting(op: OmOp) -> str:
    for key in ("perm", "axes", "axis"):
        value = op.attrs.get(key)
        if value is not None:
            return f"{key} {','.join(map(str, value)) if isinstance(value, list) else value}"
    return ""


def _softmax_on_last_axis(op: OmOp) -> bool:
    axes = op.attrs.get("axes", op.attrs.get("axis", [-1]))
    axes = axes if isinstance(axes, list) else [axes]
    rank = len(op.input_shapes[0]) if op.input_shapes and op.input_shapes[0] else None
    return all(a == -1 or (rank is not None and a == rank - 1) for a in axes)


# ---------------------------------------------------------------- reading the JSON

def attr_value(value: Any) -> Any:
    """{'s': 'x'} -> 'x'; {'list': {'i': [1, 2]}} -> [1, 2]; anything else as it is."""
    if not isinstance(value, Mapping):
        return value
    for key in ("s", "i", "f", "b", "dt"):
        if key in value:
            return value[key]
    if "list" in value and isinstance(value["list"], Mapping):
        items = [v for k, v in value["list"].items() if k != "val_type" and isinstance(v, list)]
        return items[0] if items else []
    if "list_list_int" in value and isinstance(value["list_list_int"], Mapping):
        return [item.get("list_i", []) for item in value["list_list_int"].get("list_list_i", [])]
    return value


def attr_map(attrs: Any) -> dict:
    """protobuf-JSON map (a list of {key, value}, or already an object) -> {key: plain value}."""
    if isinstance(attrs, Mapping):
        return {str(k): attr_value(v) for k, v in attrs.items()}
    result = {}
    for item in attrs or []:
        if isinstance(item, Mapping) and "key" in item:
            result[str(item["key"])] = attr_value(item.get("value"))
    return result


def _dims(values: Any) -> Shape | None:
    if not isinstance(values, list) or not values:
        return None
    try:
        return tuple(int(d) for d in values)
    except (TypeError, ValueError):  # pb2json may write int64 as strings; anything else is not a shape
        return None


def _desc_shape(desc: Any) -> Shape | None:
    if not isinstance(desc, Mapping):
        return None
    origin = _dims(attr_map(desc.get("attr")).get("origin_shape"))  # device layouts (NC1HWC0) keep it here
    if origin:
        return origin
    shape = desc.get("shape")
    return _dims(shape.get("dim")) if isinstance(shape, Mapping) else None


def parse_om_json(data: Any, source: str = "om json") -> OmModel:
    """An OmModel from the decoded JSON; UserError when it is not atc's ModelDef JSON."""
    graphs = data.get("graph") if isinstance(data, Mapping) else None
    graphs = [graphs] if isinstance(graphs, Mapping) else graphs  # one graph written as an object, not a list
    if not isinstance(graphs, list):
        raise UserError(f"{source}: not an `atc --mode=1` model JSON (no graph list)")
    model = OmModel(source=source, name=str(data.get("name", "")), attrs=attr_map(data.get("attr")), graphs=[])
    for index, graph in enumerate(graphs):
        if not isinstance(graph, Mapping):
            raise UserError(f"{source}: graph {index} is not an object")
        graph_name = str(graph.get("name", f"graph{index}"))
        model.graphs.append(graph_name)
        for op in graph.get("op") or []:
            if not isinstance(op, Mapping) or "type" not in op:
                raise UserError(f"{source}: an op of graph {graph_name!r} has no type")
            outputs = tuple(attr_map(d.get("attr")) if isinstance(d, Mapping) else {} for d in op.get("output_desc") or [])
            model.ops.append(OmOp(str(op.get("name", "")), str(op["type"]), graph_name,
                                  tuple(_desc_shape(d) for d in op.get("input_desc") or []), attr_map(op.get("attr")),
                                  outputs))
    return model


def read_om_json(path: str | os.PathLike) -> OmModel:
    from lvvit_opt.core.readers import OM_JSON, read_json

    data = read_json(path, "", OM_JSON)  # a regular file, bounded and checked against memory (core.readers)
    return parse_om_json(data, str(path))


# ---------------------------------------------------------------- running atc --mode=1

def om_to_json_command(om_path: str | os.PathLike, json_path: str | os.PathLike) -> list[str]:
    return ["atc", "--mode=1", f"--om={os.fspath(om_path)}", f"--json={os.fspath(json_path)}"]


def om_to_json(om_path: str | os.PathLike, json_path: str | os.PathLike, *, cann_home: str | None = None,
               env: Mapping[str, str] | None = None) -> Path:
    """Run `atc --mode=1` (under the CANN environment); the JSON lands at json_path only if atc succeeded."""
    from lvvit_opt.core.fileio import atomic_path
    from lvvit_opt.ascend.atc import display_command, locate_atc, parse_atc_errors
    from lvvit_opt.core.cann import cann_environment

    om_path, json_path = Path(om_path), Path(json_path)
    if not om_path.is_file():
        raise UserError(f"{om_path}: no such file")
    if json_path.exists() and os.path.samefile(json_path, om_path):
        raise UserError(f"--keep-json {json_path} is the model itself")
    env = dict(cann_environment(cann_home) if env is None else env)
    with tempfile.TemporaryDirectory(prefix="lvvit-om-json-") as tmp:
        tmp_json = Path(tmp) / (om_path.stem + ".json")
        command = om_to_json_command(om_path.absolute(), tmp_json)
        executable = locate_atc(command, env)
        start = time.time()
        try:
            proc = subprocess.run([str(executable)] + command[1:], env=env, capture_output=True, text=True,
                                  errors="replace", timeout=ATC_TIMEOUT_S, cwd=tmp, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ToolFailed(f"{display_command(command)}: {exc}") from None
        output = (proc.stdout or "") + (proc.stderr or "")
        if proc.returncode != 0 or not tmp_json.is_file():
            errors = "\n".join(f"  {e.format()}" for e in parse_atc_errors(output))
            last = [line for line in output.strip().splitlines() if line.strip()][-3:]
            raise ToolFailed(f"atc --mode=1 failed (exit {proc.returncode}) after {time.time() - start:.1f}s: "
                             f"{display_command(command)}\n" + (errors or "\n".join(f"  {t}" for t in last)))
        with atomic_path(json_path, suffix=".json") as out:
            shutil.copyfile(tmp_json, out)
    return json_path


def inspect_om(path: str | os.PathLike, *, keep_json: str | os.PathLike | None = None,
               cann_home: str | None = None, env: Mapping[str, str] | None = None) -> OmModel:
    """Read an .om through `atc --mode=1` (or an already converted .json) into an OmModel."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{shown(path)}: no such file")
    if path.suffix.lower() == ".json":
        model = read_om_json(path)
    else:
        with tempfile.TemporaryDirectory(prefix="lvvit-inspect-") as tmp:
            json_path = om_to_json(path, Path(keep_json) if keep_json else Path(tmp) / "model.json",
                                   cann_home=cann_home, env=env)
            model = read_om_json(json_path)
    model.source = str(path)
    return model


# ---------------------------------------------------------------- printing

def _shape_text(shape: Shape | None) -> str:
    return ",".join(map(str, shape)) if shape else "?"


def format_model(model: OmModel, top: int | None = None) -> list[str]:
    """Human-readable report lines: header, op-type counts, attention kernels, verdict."""
    from lvvit_opt.core.table import format_table

    lines = [f"model: {model.source}" + (f"  (soc_version {model.soc_version})" if model.soc_version else ""),
             f"ops: {len(model.ops)} in {len(model.graphs)} graph(s)" + (f", the {top} most frequent types:" if top else ":")]
    lines += format_table(["op type", "count"], model.op_counts().most_common(top), align="lr").splitlines()
    kernels = model.attention_kernels()
    if not kernels:
        lines.append("attention kernels: none (no Transpose or Softmax ops)")
    else:
        lines.append("attention kernels:")
        rows = [(u.type, _shape_text(u.input_shape), u.setting, u.count, u.verdict) for u in kernels]
        lines += format_table(["kernel", "input shape", "setting", "ops", "verdict"], rows, align="lllrl").splitlines()
    lines.append(f"verdict: {model.verdict()}")
    command = model.whitelist_command()
    if command:
        lines.append(f"next: {command}, then run atc again")
    return lines


COMPARISON_ROWS = (("Transpose (fast)", "transpose_fast"), ("TransposeD (slow)", "transpose_slow"),
                   ("Softmax, last axis", "softmax_last_axis"), ("Softmax, other axis", "softmax_other_axis"))


def format_comparison(models: Sequence[OmModel], labels: Sequence[str] | None = None) -> list[str]:
    """Side-by-side attention-kernel counts of several .om files (for `bench` and `inspect A B`)."""
    from lvvit_opt.core.table import format_table

    if labels is None:
        names = [Path(m.source).name for m in models]
        labels = names if len(set(names)) == len(names) else [m.source for m in models]
    summaries = [m.attention_summary() for m in models]
    rows = [[title] + [s[key] for s in summaries] for title, key in COMPARISON_ROWS]
    rows.append(["ops in total"] + [len(m.ops) for m in models])
    return format_table(["compiled kernels"] + list(labels), rows, align="l" + "r" * len(models)).splitlines()


def compare_om_files(paths: Sequence[str | os.PathLike], *, cann_home: str | None = None,
                     env: Mapping[str, str] | None = None) -> list[str]:
    """format_comparison of several .om files, or one line saying why they could not be read."""
    from lvvit_opt.core.cann import ToolNotFound

    try:
        models = [inspect_om(p, cann_home=cann_home, env=env) for p in paths]
    except ToolNotFound:
        return ["compiled kernels: not compared (atc not found; `lvvit-opt inspect` needs atc --mode=1)"]
    except (ToolFailed, UserError) as exc:
        return [f"compiled kernels: not compared ({str(exc).splitlines()[0]})"]
    return format_comparison(models)
