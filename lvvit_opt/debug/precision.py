"""A true-fp16 copy of an ONNX graph, the way atc's --precision_mode runs it: the CPU preview
`debug layers --precision-mode` compares against fp32.

What atc documents (CANN ATC/AOE `--precision_mode` and `--keep_dtype` pages,
hiascend.com/document/detail/zh/canncommercial/601/devtools/auxiliarydevtool/aoepar_16_044.html,
.../CANNCommunityEdition/80RC2alpha002/devaids/auxiliarydevtool/aoepar_16_042.html,
.../en/canncommercial/800/devaids/atc/atlasatcparam_16_0074.html):
- force_fp16 (the inference default, e.g. Ascend310): an op that supports fp16 and fp32 runs in fp16.
- allow_fp32_to_fp16: matrix ops (Cube: MatMul/Gemm/Conv here) in fp16; vector ops keep fp32
  where they support it (we assume every vector op does: per-op support is not public).
- must_keep_origin_dtype: the original precision (fp32) everywhere; --keep_dtype has no effect.
- allow_mix_precision: ops reduced to fp16 per `precision_reduce` in the OPP's
  aic-<soc>-ops-info.json (true: fp16, false: fp32, absent: follows the previous op). That
  file is on an Ascend host only and its lists are NOT in the public documentation, so the
  preview treats every op as reducible: the force_fp16 worst case (said in the report).
- --keep_dtype FILE: one operator a line, an original-model node name or `OpType::TypeName`
  (an Ascend IR op type; matched here against ONNX op types of the same name).

The conversion itself: every float32 tensor a fp16 op reads is fp16; constants are rounded to
fp16 (numpy's round-to-nearest-even: values past 65504 become Inf, tiny ones fp16 subnormals
or 0) and never clamped; an op kept in fp32 reads fp32 (a Cast back where its input was made in
fp16) and its fp32 output is Cast to fp16 for fp16 readers, as atc inserts them. Graph inputs and
outputs stay fp32 (keep_io_types). Tensor names are kept, so the copy matches the original by name.
Subgraph ops (If/Loop/Scan) stay fp32. onnxruntime on CPU runs an fp16 op without an fp16 kernel
in fp32 between casts (its InsertCastTransformer), i.e. with fp16 inputs and outputs: close to
an NPU op that accumulates in fp32.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from lvvit_opt.core.errors import UserError

log = logging.getLogger(__name__)

from lvvit_opt.ascend.atc import PRECISION_MODES  # noqa: E402  (the one list; atc passes them through)
DEFAULT_PRECISION_MODE = "force_fp16"  # atc's inference default (Ascend310)
MATRIX_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose", "MatMulInteger", "Einsum")  # Cube ops
# inputs that stay as they are whatever the precision (the spec types them float32: scales, roi)
_FIXED_INPUTS = {("Resize", 1), ("Resize", 2), ("Upsample", 1)}
_SUBGRAPH_OPS = ("If", "Loop", "Scan")

FLOAT, FLOAT16 = 1, 10  # onnx.TensorProto.FLOAT, FLOAT16


@dataclass
class KeepDtype:
    """A parsed --keep_dtype file: node names and op types (`OpType::X`) kept in fp32."""

    node_names: list[str] = field(default_factory=list)
    op_types: list[str] = field(default_factory=list)

    def keeps(self, node, label: str) -> bool:
        return label in self.node_names or node.name in self.node_names or node.op_type in self.op_types


def read_keep_dtype(path: str) -> KeepDtype:
    """atc's --keep_dtype file: one operator a line, a node name or `OpType::TypeName` (blank
    lines and `#` comments skipped)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise UserError(f"--keep-dtype {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--keep-dtype {path}: cannot read it ({exc})") from None
    keep = KeepDtype()
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("OpType::"):
            keep.op_types.append(line[len("OpType::"):].strip())
        else:
            keep.node_names.append(line)
    return keep


def mode_keeps_fp32(mode: str, op_type: str) -> bool:
    """Whether atc's documented `mode` keeps an op of this ONNX type in fp32 (see module docstring)."""
    if mode not in PRECISION_MODES:
        raise UserError(f"--precision-mode {mode}: expected one of {', '.join(PRECISION_MODES)}")
    if mode == "must_keep_origin_dtype":
        return True
    if mode == "allow_fp32_to_fp16":
        return op_type not in MATRIX_OPS
    return False  # force_fp16; allow_mix_precision previewed as its worst case


def to_true_fp16(model, keep_fp32: Iterable[str] = (), precision_mode: str = DEFAULT_PRECISION_MODE,
                 keep_dtype: KeepDtype | None = None):
    """The model with fp32 inputs/outputs computing in fp16 as `precision_mode` does (module
    docstring); `keep_fp32` node names (and `keep_dtype`, ignored under must_keep_origin_dtype as
    atc does) stay fp32. The caller's model is not modified. Returns (model, kept node labels)."""
    import onnx
    from onnx import helper, numpy_helper

    from lvvit_opt.passes.graph_utils import weightless_skeleton

    mode_keeps_fp32(precision_mode, "")  # validates the name
    keep = KeepDtype(list(keep_fp32), [])
    if keep_dtype is not None and precision_mode != "must_keep_origin_dtype":
        keep = KeepDtype(keep.node_names + keep_dtype.node_names, keep_dtype.op_types)
    model = copy.deepcopy(model)
    graph = model.graph
    types = _elem_types(model, weightless_skeleton)
    inits = {i.name: i for i in graph.initializer}
    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant" and n.output}
    current = {i.name: types.get(i.name) for i in graph.input}  # tensor -> elem type it has now
    converted: dict[tuple[str, int], str] = {}
    new_nodes, new_inits, kept = [], [], []

    def as_type(name: str, target: int) -> str:
        key = (name, target)
        if key in converted:
            return converted[key]
        suffix = "__fp16" if target == FLOAT16 else "__fp32"
        source = inits.get(name)
        if source is None and name in constants:
            source = _constant_tensor(constants[name])
        if source is not None and target == FLOAT16:  # a constant: rounded, never clamped
            array = numpy_helper.to_array(source)
            new_inits.append(numpy_helper.from_array(_round_fp16(array), name + suffix))
        else:
            new_nodes.append(helper.make_node("Cast", [name], [name + suffix], name=f"{name}{suffix}_cast", to=target))
        converted[key] = name + suffix
        return name + suffix

    for position, node in enumerate(graph.node):
        label = node.name or f"{node.op_type}_{position}"
        if node.op_type == "Constant":
            new_nodes.append(node)
            for out in node.output:
                current[out] = types.get(out)
            continue
        in_fp32 = (mode_keeps_fp32(precision_mode, node.op_type) or keep.keeps(node, label)
                   or node.op_type in _SUBGRAPH_OPS or any(a.type in (5, 10) for a in node.attribute))
        region = FLOAT if in_fp32 else FLOAT16
        if in_fp32 and precision_mode != "must_keep_origin_dtype":
            kept.append(label)
        if node.op_type != "Cast":
            for k, name in enumerate(node.input):
                if not name or types.get(name) != FLOAT or (node.op_type, k) in _FIXED_INPUTS:
                    continue
                have = current.get(name, FLOAT if name in inits or name in constants else types.get(name))
                if have != region:
                    node.input[k] = as_type(name, region)
        elif region == FLOAT16 and _attr(node, "to") == FLOAT:
            _set_attr(node, "to", FLOAT16)
        if node.op_type == "ConstantOfShape" and region == FLOAT16:
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == FLOAT:
                    attr.t.CopyFrom(numpy_helper.from_array(_round_fp16(numpy_helper.to_array(attr.t)), attr.t.name))
        new_nodes.append(node)
        for out in node.output:
            if out:
                current[out] = region if types.get(out) == FLOAT else types.get(out)
    # graph outputs stay fp32: an fp16 output's producer writes NAME__fp16out, cast back to NAME
    renames = {}
    for output in graph.output:
        if types.get(output.name) == FLOAT and current.get(output.name) == FLOAT16:
            renames[output.name] = output.name + "__fp16out"
    for node in new_nodes:
        for k, name in enumerate(node.input):
            if name in renames:
                node.input[k] = renames[name]
        for k, name in enumerate(node.output):
            if name in renames:
                node.output[k] = renames[name]
    for original, renamed in renames.items():
        new_nodes.append(helper.make_node("Cast", [renamed], [original], name=f"{original}__fp32out_cast", to=FLOAT))
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(new_inits)
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    unread = [n for n in graph.node if n.op_type == "Constant" and not set(n.output) & read]  # now __fp16 copies
    for node in unread:
        graph.node.remove(node)
    survivors = [i for i in graph.initializer if i.name in read]
    del graph.initializer[:]
    graph.initializer.extend(survivors)
    del graph.value_info[:]  # stale fp32 types; onnxruntime infers them
    onnx.checker.check_model(weightless_skeleton(model))
    unknown = [t for t in keep.op_types if t not in {n.op_type for n in model.graph.node}]
    if unknown:
        log.warning("--keep-dtype: OpType::%s matches no ONNX op type of this model (Ascend IR names can "
                    "differ from ONNX's)", ", OpType::".join(unknown))
    return model, kept


def _round_fp16(array: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # past 65504: Inf, as the NPU's fp16 has it
        return array.astype(np.float16)


def _elem_types(model, skeleton) -> dict[str, int]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(skeleton(model))
    types = {}
    for value in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            types[value.name] = value.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            tensor = _constant_tensor(node)
            if tensor is not None:
                types[node.output[0]] = tensor.data_type
    return types


def _constant_tensor(node):
    from onnx import helper, numpy_helper

    for attr in node.attribute:
        if attr.name == "value":
            return attr.t
        if attr.name == "value_float":
            return numpy_helper.from_array(np.array(attr.f, dtype=np.float32))
        if attr.name == "value_floats":
            return numpy_helper.from_array(np.array(list(attr.floats), dtype=np.float32))
    del helper
    return None


def _attr(node, name: str):
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return None


def _set_attr(node, name: str, value: int) -> None:
    for attr in node.attribute:
        if attr.name == name:
            attr.i = value


def summary(precision_mode: str, kept: Sequence[str]) -> str:
    """One line: how the preview was built."""
    note = (" (allow_mix_precision's per-op lists are in the Ascend host's aic-<soc>-ops-info.json, not public: "
            "previewed as every op in fp16, the worst case)" if precision_mode == "allow_mix_precision" else "")
    return f"true fp16 ({precision_mode}, no constant clamped), {len(kept)} node(s) kept in fp32{note}"
