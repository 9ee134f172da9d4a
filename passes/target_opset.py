"""target_opset: convert the graph to the opset a CANN version's atc accepts."""
from __future__ import annotations

from dataclasses import dataclass

import onnx

from lvvit_opt.core.errors import UserError
from lvvit_opt.core.graph_walk import walk_graphs
from lvvit_opt.passes.base import GraphPass, PassReport
from lvvit_opt.passes.graph_utils import NameAllocator, default_opset, fused_attention_nodes, node_label, replace_nodes
from lvvit_opt.passes.registry import register_pass


@register_pass
class TargetOpset(GraphPass):
    """Convert the default-domain opset to `opset` (CANN 7/8 atc: <= 18; 5.x/6.x: <= 13).

    Uses onnx's version_converter. Ops that have no down-conversion adapter (ONNX
    `Attention`, opset 23) must be lowered first: run lower_attention before this pass.
    `apply` then validates the converted graph on onnxruntime as for any pass.
    """

    name = "target_opset"

    @dataclass
    class Options:
        opset: int = 18

        def __post_init__(self):
            if not 7 <= int(self.opset) <= onnx.defs.onnx_opset_version():
                raise ValueError(f"opset must be between 7 and {onnx.defs.onnx_opset_version()}, got {self.opset}")

    def rewrite(self, model: onnx.ModelProto, report: PassReport) -> onnx.ModelProto:
        from onnx import version_converter

        source, target = default_opset(model), int(self.options.opset)
        report.details.update({"from": source, "to": target})
        if source == target:
            report.notes.append(f"already opset {target}")
            return model
        fused = [node_label(n) for n in fused_attention_nodes(model) if n.domain in ("", "ai.onnx")]
        if fused and target < 23:
            raise UserError(f"target_opset: {', '.join(fused[:4])} has no opset-{target} form; "
                            "run lower_attention before target_opset")
        off_last = _softmax_axes(model) if source >= 13 > target else {}
        if target < 20:
            lowered = _lower_gelu(model)
            if lowered:
                report.details["gelu_lowered"] = lowered
                report.notes.append(f"lowered {len(lowered)} Gelu (opset 20) to Erf/Tanh primitives")
        weights = _big_weights(model)
        shell = _weightless(model, weights)
        try:
            converted = version_converter.convert_version(shell, target)
        except Exception as exc:  # the converter's errors name the op without an adapter
            raise UserError(f"target_opset: onnx cannot convert opset {source} to {target} "
                            f"({' '.join(str(exc).split())[:300]})") from None
        report.matched = 1
        if _placeholders_intact(converted, weights):
            converted = _adopt_conversion(model, converted, weights)
        else:
            report.notes.append("the converter rewrote a weight placeholder: converted with the weights in")
            converted = version_converter.convert_version(model, target)
        if off_last:
            moved = _wrap_axis_last(converted, off_last)
            report.details["softmax_axis_moved"] = moved
            report.notes.append(f"{len(moved)} Softmax/LogSoftmax over a non-last axis wrapped in Transposes: below "
                                "opset 13 they flatten from the axis on, which would change the result")
        return converted


# Initializers at least this big are converted as data-less placeholders (name, type, dims):
# the converter serialises, parses and re-serialises the model it is given (9x a 3.6 MB ViT's
# file in peak RSS with the weights in), and its adapters rewrite attributes and small constant
# inputs, not weight tensors; _placeholders_intact checks that on every run.
_BIG_WEIGHT = 64 * 1024


def _big_weights(model: onnx.ModelProto) -> dict[str, tuple[int, list[int]]]:
    return {t.name: (t.data_type, list(t.dims)) for t in model.graph.initializer if t.ByteSize() >= _BIG_WEIGHT}


def _weightless(model: onnx.ModelProto, weights) -> onnx.ModelProto:
    """A copy of `model` whose big initializers are placeholders without data."""
    from lvvit_opt.core.onnx_proto import without_field

    shell = without_field(model, "graph")
    graph = without_field(model.graph, "initializer")
    for tensor in model.graph.initializer:
        if tensor.name in weights:
            graph.initializer.append(onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims))
        else:
            graph.initializer.append(tensor)
    shell.graph.CopyFrom(graph)
    return shell


def _placeholders_intact(converted: onnx.ModelProto, weights) -> bool:
    """Every placeholder came back once, data-less, with its type and dims."""
    returned = [t for t in converted.graph.initializer if t.name in weights]
    return len(returned) == len(weights) and all(
        (t.data_type, list(t.dims)) == weights[t.name] and t.ByteSize() < _BIG_WEIGHT and not t.raw_data
        and not t.external_data for t in returned)


def _adopt_conversion(model: onnx.ModelProto, converted: onnx.ModelProto, weights) -> onnx.ModelProto:
    """`model` itself, rewritten as the converter rewrote its weightless copy: the converted
    graph, with the original weight tensors left in place (not copied)."""
    for index in reversed(range(len(model.graph.initializer))):
        if model.graph.initializer[index].name not in weights:
            del model.graph.initializer[index]
    model.graph.initializer.extend(t for t in converted.graph.initializer if t.name not in weights)
    for field in ("node", "input", "output", "value_info", "sparse_initializer"):
        del getattr(model.graph, field)[:]
        getattr(model.graph, field).extend(getattr(converted.graph, field))
    for field in ("opset_import", "functions"):
        del getattr(model, field)[:]
        getattr(model, field).extend(getattr(converted, field))
    model.ir_version = converted.ir_version
    return model


_SOFTMAX_LIKE = ("Softmax", "LogSoftmax", "Hardmax")


def _softmax_axes(model: onnx.ModelProto) -> dict[str, tuple[int, int]]:
    """Before converting below opset 13, in place: every Softmax/LogSoftmax/Hardmax gets an
    explicit, non-negative axis. From opset 13 these ops normalise along one axis (default
    -1); before it they flatten the input to 2-D at `axis` (default 1) and normalise the whole
    trailing block, so only the last axis means the same in both. Returns first output ->
    (axis, rank) of the nodes over another axis (see _wrap_axis_last). A node whose input
    rank is unknown is refused, named."""
    from onnx import helper

    from lvvit_opt.passes.graph_utils import infer_shapes_light

    from lvvit_opt.core.graph_walk import walk_nodes
    from lvvit_opt.passes.graph_utils import scoped_label

    # every graph: a Softmax in an If branch or a Loop body changes meaning just the same
    nodes = [(n, scope) for n, scope in walk_nodes(model)
             if n.op_type in _SOFTMAX_LIKE and n.domain in ("", "ai.onnx")]
    if not nodes:
        return {}
    shapes = infer_shapes_light(model)
    off_last = {}
    for node, scope in nodes:
        dims = None if scope.is_function else shapes.get(node.input[0])
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), -1)
        if dims is None:
            raise UserError(f"target_opset: {scoped_label(node, scope)} normalises along axis {axis} of an input of unknown "
                            "rank, and below opset 13 that op means something else; give the input shapes "
                            "(fix_shapes first) or target opset 13 or later")
        rank = len(dims)
        axis = axis + rank if axis < 0 else axis
        for index in reversed([k for k, a in enumerate(node.attribute) if a.name == "axis"]):
            del node.attribute[index]
        node.attribute.append(helper.make_attribute("axis", axis))
        if rank and axis != rank - 1:
            off_last[node.output[0]] = (axis, rank)
    return off_last


def _wrap_axis_last(model: onnx.ModelProto, off_last: dict[str, tuple[int, int]]) -> list[str]:
    """After the conversion, in place: each node of `off_last` becomes Transpose -> op over
    the last axis -> Transpose, which computes what the op computed from opset 13 on."""
    names = NameAllocator(model)
    moved = []
    for scope in walk_graphs(model):  # the converted subgraphs too
        moved += _wrap_in(scope, off_last, names)
    return moved


def _wrap_in(scope, off_last: dict[str, tuple[int, int]], names) -> list[str]:
    from onnx import helper

    out, moved = [], []
    for node in scope.nodes:
        if node.op_type not in _SOFTMAX_LIKE or not node.output or node.output[0] not in off_last:
            out.append(node)
            continue
        axis, rank = off_last[node.output[0]]
        perm = list(range(rank))
        perm[axis], perm[rank - 1] = rank - 1, axis
        base = node.name or node.output[0]
        before, after = names.fresh(f"{base}/axis_last_in"), names.fresh(f"{base}/axis_last_out")
        out.append(helper.make_node("Transpose", [node.input[0]], [before], name=names.fresh(f"{base}/to_last"),
                                    perm=perm))
        out.append(helper.make_node(node.op_type, [before], [after], name=node.name, axis=rank - 1))
        out.append(helper.make_node("Transpose", [after], list(node.output), name=names.fresh(f"{base}/from_last"),
                                    perm=perm))
        moved.append(base + (f" in {scope.where}" if scope.depth else ""))
    replace_nodes(scope.container, out)
    return moved


def _lower_gelu(model: onnx.ModelProto) -> list[str]:
    """Gelu (no adapter below opset 20) -> 0.5*x*(1+erf(x/sqrt(2))), or the tanh form for
    approximate='tanh', in place. Returns the lowered node names."""
    import math

    import numpy as np
    from onnx import numpy_helper

    graph = model.graph  # constants go here: every subgraph sees the main graph's initializers
    names = NameAllocator(model)
    consts: dict[float, str] = {}

    def const(value: float) -> str:
        if value not in consts:
            tensor = numpy_helper.from_array(np.array(value, np.float32), names.fresh(f"gelu_const_{len(consts)}"))
            graph.initializer.append(tensor)
            consts[value] = tensor.name
        return consts[value]

    lowered = []
    for scope in walk_graphs(model):  # If/Loop/Scan bodies at any depth
        if scope.is_function:
            hidden = [node_label(n) for n in scope.nodes if n.op_type == "Gelu" and n.domain in ("", "ai.onnx")]
            if hidden:
                raise UserError(f"target_opset: {hidden[0]} in {scope.where} has no form below opset 20 and a "
                                "function body cannot be rewritten here; inline the model's functions first "
                                "(onnx.inliner.inline_local_functions)")
            continue
        lowered += _lower_gelu_in(scope, names, const)
    return lowered


def _lower_gelu_in(scope, names, const) -> list[str]:
    import math

    from onnx import helper

    out, lowered = [], []
    for node in scope.nodes:
        if node.op_type != "Gelu" or node.domain not in ("", "ai.onnx"):
            out.append(node)
            continue
        x, y, base = node.input[0], node.output[0], node.name or node.output[0]
        approximate = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "approximate"), b"none")
        approximate = approximate.decode() if isinstance(approximate, bytes) else approximate

        def add(op, inputs):
            tensor = names.fresh(f"{base}/{op.lower()}_out")
            out.append(helper.make_node(op, inputs, [tensor], name=names.fresh(f"{base}/{op.lower()}")))
            return tensor

        if approximate == "tanh":  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            cube = add("Mul", [add("Mul", [x, x]), x])
            inner = add("Mul", [add("Add", [x, add("Mul", [cube, const(0.044715)])]), const(math.sqrt(2 / math.pi))])
            core = add("Tanh", [inner])
        else:
            core = add("Erf", [add("Mul", [x, const(1 / math.sqrt(2))])])
        half_x = add("Mul", [x, const(0.5)])
        out.append(helper.make_node("Mul", [half_x, add("Add", [core, const(1.0)])], [y], name=names.fresh(base)))
        lowered.append(base + (f" in {scope.where}" if scope.depth else ""))
    replace_nodes(scope.container, out)
    return lowered
