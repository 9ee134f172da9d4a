"""`to_fp16`: the graph computing in true fp16, the conversion `debug layers --fp16` previews and
tune's fp16 candidates are built with.

Every float32 tensor an fp16 op reads is fp16: constants (initializers, Constant nodes,
ConstantOfShape values) are rounded to fp16 (numpy's round-to-nearest-even: values past 65504
become Inf, tiny ones fp16 subnormals or 0) and never clamped; other tensors get a Cast. A node
kept in fp32 reads fp32 (a Cast back where its input was made in fp16) and its fp32 output is Cast
to fp16 for fp16 readers, as atc inserts them. Ops with subgraphs (If/Loop/Scan) and nodes with
graph attributes stay fp32, as do the inputs whose type the operator fixes (Resize scales and
roi). Tensor names are kept, so the copy matches the original by name. With keep_io_fp32 (the
default) graph inputs and outputs stay float32; without it, float32 inputs and outputs become
float16. onnxruntime on CPU runs an fp16 op without an fp16 kernel in fp32 between casts, i.e.
with fp16 inputs and outputs: close to an NPU op that accumulates in fp32.
"""
from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import onnx

from lvvit_opt.core.errors import UserError
from lvvit_opt.passes.base import GraphPass, PassReport
from lvvit_opt.passes.registry import register_pass

logger = logging.getLogger(__name__)

FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
FP16_MAX = 65504.0
# inputs that stay as they are whatever the precision (the spec types them float32: scales, roi)
FIXED_INPUTS = {("Resize", 1), ("Resize", 2), ("Upsample", 1)}
SUBGRAPH_OPS = ("If", "Loop", "Scan")
_GRAPH_ATTRIBUTES = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


@dataclass
class Fp16Conversion:
    """What convert_to_fp16 made: the model, the labels of the nodes left in fp32 (asked for, or
    ops with subgraphs), and facts for a report."""

    model: onnx.ModelProto
    kept: list[str] = field(default_factory=list)
    structural: list[str] = field(default_factory=list)  # of kept: ops with subgraphs or graph attributes
    converted: int = 0                # nodes that now compute in fp16
    constants_rounded: int = 0        # float32 constants stored again as fp16
    overflowed: list[str] = field(default_factory=list)   # constants with a finite value past 65504 (now Inf)
    unmatched_nodes: list[str] = field(default_factory=list)  # keep_nodes that name no node
    unmatched_op_types: list[str] = field(default_factory=list)


def node_label(node: onnx.NodeProto, position: int) -> str:
    """A node's name, or OpType_position for an unnamed one (the label keep lists use)."""
    return node.name or f"{node.op_type}_{position}"


def convert_to_fp16(model: onnx.ModelProto, *, keep_nodes: Iterable[str] = (), keep_op_types: Iterable[str] = (),
                    keep: Callable[[onnx.NodeProto], bool] | None = None, keep_io_fp32: bool = True,
                    in_place: bool = False) -> Fp16Conversion:
    """The model computing in fp16 (module docstring). A node stays fp32 when its name or label is
    in `keep_nodes`, its op type in `keep_op_types`, or `keep(node)` says so. The caller's model is
    not modified unless `in_place`."""
    from onnx import helper, numpy_helper

    from lvvit_opt.passes.graph_utils import weightless_skeleton

    if not in_place:
        model = copy.deepcopy(model)
    keep_nodes, keep_op_types = list(keep_nodes), list(keep_op_types)
    wanted_nodes, wanted_types = set(keep_nodes), set(keep_op_types)
    result = Fp16Conversion(model)
    graph = model.graph
    types = _elem_types(model, weightless_skeleton)
    inits = {i.name: i for i in graph.initializer}
    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant" and n.output}
    current = {i.name: types.get(i.name) for i in graph.input}  # tensor -> elem type it has now
    if not keep_io_fp32:
        for value in graph.input:
            if value.name not in inits and types.get(value.name) == FLOAT:
                value.type.tensor_type.elem_type = FLOAT16
                current[value.name] = FLOAT16
    converted: dict[tuple[str, int], str] = {}
    new_nodes, new_inits = [], []
    seen_labels = set()

    def rounded(array: np.ndarray, name: str) -> np.ndarray:
        half = round_fp16(array)
        result.constants_rounded += 1
        if np.any(np.isinf(half) & np.isfinite(array)):
            result.overflowed.append(name)
        return half

    def as_type(name: str, target: int) -> str:
        key = (name, target)
        if key in converted:
            return converted[key]
        suffix = "__fp16" if target == FLOAT16 else "__fp32"
        source = inits.get(name)
        if source is None and name in constants:
            source = constant_tensor(constants[name])
        if source is not None and target == FLOAT16:  # a constant: rounded, never clamped
            new_inits.append(numpy_helper.from_array(rounded(numpy_helper.to_array(source), name), name + suffix))
        else:
            new_nodes.append(helper.make_node("Cast", [name], [name + suffix], name=f"{name}{suffix}_cast", to=target))
        converted[key] = name + suffix
        return name + suffix

    for position, node in enumerate(graph.node):
        label = node_label(node, position)
        seen_labels.update((label, node.name))
        if node.op_type == "Constant":
            new_nodes.append(node)
            for out in node.output:
                current[out] = types.get(out)
            continue
        structural = node.op_type in SUBGRAPH_OPS or any(a.type in _GRAPH_ATTRIBUTES for a in node.attribute)
        in_fp32 = (structural or label in wanted_nodes or node.name in wanted_nodes or node.op_type in wanted_types
                   or (keep is not None and keep(node)))
        region = FLOAT if in_fp32 else FLOAT16
        if structural:
            result.structural.append(label)
        if in_fp32:
            result.kept.append(label)
        else:
            result.converted += 1
        if node.op_type != "Cast":
            for k, name in enumerate(node.input):
                if not name or types.get(name) != FLOAT or (node.op_type, k) in FIXED_INPUTS:
                    continue
                have = current.get(name, FLOAT if name in inits or name in constants else types.get(name))
                if have != region:
                    node.input[k] = as_type(name, region)
        elif region == FLOAT16 and _attr(node, "to") == FLOAT:
            _set_attr(node, "to", FLOAT16)
        if node.op_type == "ConstantOfShape" and region == FLOAT16:
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == FLOAT:
                    attr.t.CopyFrom(numpy_helper.from_array(rounded(numpy_helper.to_array(attr.t), node.name),
                                                            attr.t.name))
        new_nodes.append(node)
        for out in node.output:
            if out:
                current[out] = region if types.get(out) == FLOAT else types.get(out)
    _fix_output_types(graph, new_nodes, types, current, FLOAT if keep_io_fp32 else FLOAT16)
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(new_inits)
    if model.ir_version < 4:  # IR < 4: every initializer is also a graph input
        graph.input.extend(helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in new_inits)
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    unread = [n for n in graph.node if n.op_type == "Constant" and not set(n.output) & read]  # now __fp16 copies
    for node in unread:
        graph.node.remove(node)
    survivors = [i for i in graph.initializer if i.name in read or i.name in {v.name for v in graph.input}]
    del graph.initializer[:]
    graph.initializer.extend(survivors)
    del graph.value_info[:]  # stale fp32 types; onnxruntime infers them
    onnx.checker.check_model(weightless_skeleton(model))
    result.unmatched_nodes = [n for n in dict.fromkeys(keep_nodes) if n not in seen_labels]
    result.unmatched_op_types = [t for t in dict.fromkeys(keep_op_types)
                                 if t not in {n.op_type for n in model.graph.node}]
    return result


def _fix_output_types(graph, nodes: list, types: dict, current: dict, wanted: int) -> None:
    """Graph outputs that were float32 get the `wanted` type: a producer writing the other one
    writes NAME__fp16out / NAME__fp32out instead, Cast to NAME."""
    renames = {}
    produced = {out for node in nodes for out in node.output}
    for output in graph.output:
        if types.get(output.name) != FLOAT or output.name not in produced:
            continue
        if current.get(output.name) != wanted:
            renames[output.name] = output.name + ("__fp16out" if wanted == FLOAT else "__fp32out")
        output.type.tensor_type.elem_type = wanted
    for node in nodes:
        for k, name in enumerate(node.input):
            if name in renames:
                node.input[k] = renames[name]
        for k, name in enumerate(node.output):
            if name in renames:
                node.output[k] = renames[name]
    suffix = "__fp32out_cast" if wanted == FLOAT else "__fp16out_cast"
    for original, renamed in renames.items():
        nodes.append(onnx.helper.make_node("Cast", [renamed], [original], name=f"{original}{suffix}", to=wanted))


def round_fp16(array: np.ndarray) -> np.ndarray:
    """float32 -> float16 by numpy's round-to-nearest-even: past 65504 is Inf, as the NPU's fp16 has it."""
    with np.errstate(over="ignore"):
        return array.astype(np.float16)


def _elem_types(model, skeleton) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(skeleton(model))
    types = {}
    for value in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            types[value.name] = value.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            tensor = constant_tensor(node)
            if tensor is not None:
                types[node.output[0]] = tensor.data_type
    return types


def constant_tensor(node: onnx.NodeProto):
    """The TensorProto a Constant node holds (value, value_float, value_floats), or None."""
    from onnx import numpy_helper

    for attr in node.attribute:
        if attr.name == "value":
            return attr.t
        if attr.name == "value_float":
            return numpy_helper.from_array(np.array(attr.f, dtype=np.float32))
        if attr.name == "value_floats":
            return numpy_helper.from_array(np.array(list(attr.floats), dtype=np.float32))
    return None


def _attr(node, name: str):
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return None


def _set_attr(node, name: str, value: int) -> None:
    for attr in node.attribute:
        if attr.name == name:
            attr.i = value


@register_pass
class ToFp16(GraphPass):
    """Convert the graph to true fp16 (constants rounded, never clamped); inputs/outputs stay fp32 by default.

    The conversion `debug layers --fp16` previews and tune's fp16 candidates are built with.
    keep_io_fp32 (default true): graph inputs and outputs stay float32 (Casts at the edges);
    false makes them float16. keep_fp32: node names (or OpType_index for unnamed nodes) left in
    fp32, comma-separated or a JSON list; keep_op_types: op types left in fp32. `apply`
    validates a graph with this pass against the fp16 tolerance (--atol etc. still override).
    """

    name = "to_fp16"
    reduces_precision = True

    @dataclass
    class Options:
        keep_io_fp32: bool = True
        keep_fp32: list[str] = field(default_factory=list)
        keep_op_types: list[str] = field(default_factory=list)

    def rewrite(self, model: onnx.ModelProto, report: PassReport) -> onnx.ModelProto:
        o = self.options
        done = convert_to_fp16(model, keep_nodes=o.keep_fp32, keep_op_types=o.keep_op_types,
                               keep_io_fp32=o.keep_io_fp32, in_place=True)
        report.matched = done.converted
        report.details.update({"nodes_fp16": done.converted, "kept_fp32": done.kept,
                               "constants_rounded": done.constants_rounded,
                               "constants_overflowed": done.overflowed, "keep_io_fp32": o.keep_io_fp32})
        if not done.converted:
            report.notes.append("no node converted: every node is kept in fp32 or the graph has no float32 op")
        if done.unmatched_nodes:
            raise UserError(f"to_fp16.keep_fp32: no node named {', '.join(map(json.dumps, done.unmatched_nodes[:5]))}"
                            f"{' ...' if len(done.unmatched_nodes) > 5 else ''} in this graph")
        if done.unmatched_op_types:
            report.notes.append(f"keep_op_types {', '.join(done.unmatched_op_types)}: no node of that type")
        if done.overflowed:
            report.notes.append(f"{len(done.overflowed)} constant(s) hold finite values past fp16's 65504, now Inf: "
                                f"{', '.join(done.overflowed[:5])}{' ...' if len(done.overflowed) > 5 else ''}")
        if done.structural:
            report.notes.append(f"{len(done.structural)} node(s) with subgraphs stay fp32 (their bodies too): "
                                f"{', '.join(done.structural[:5])}{' ...' if len(done.structural) > 5 else ''}")
        return done.model
