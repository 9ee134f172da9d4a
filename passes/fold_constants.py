"""fold_constants: evaluate every subgraph whose inputs are all constants."""
from __future__ import annotations

from dataclasses import dataclass

import onnx

from lvvit_opt.passes.base import GraphPass, PassReport, copy_model
from lvvit_opt.passes.graph_utils import op_counts
from lvvit_opt.passes.registry import register_pass


@register_pass
class FoldConstants(GraphPass):
    """Fold constant subgraphs (incl. Shape of static tensors) with onnx-graphsurgeon + onnxruntime.

    Shape inference runs first so Shape nodes on tensors of known shape fold too. Transposes
    and other compute on graph inputs are never touched: a softmax_transpose wrap survives.
    """

    name = "fold_constants"

    @dataclass
    class Options:
        fold_shapes: bool = True  # fold Shape nodes (and what depends on them) when shapes are static
        size_threshold_mb: float = 0.0  # largest folded tensor; 0: max(256 MB, 2x the weights)

    def rewrite(self, model: onnx.ModelProto, report: PassReport) -> onnx.ModelProto:
        before = op_counts(model)
        budget = int(self.options.size_threshold_mb * 1024**2) or fold_budget(model)
        skipped: list[str] = []
        reason = unfoldable(model)
        if reason:  # left exactly as it is, and said so: never a broken graph
            report.details["not_folded"] = reason
            report.notes.append(f"folded nothing: {reason}")
            return model
        try:
            folded = fold_graph(model, fold_shapes=self.options.fold_shapes, size_threshold=budget, skipped=skipped,
                                in_place=True, checked=True)
        except FoldBrokeGraph as exc:
            why = f"onnx-graphsurgeon's folding left an invalid graph ({exc}); the graph is kept as it was"
            report.details["not_folded"] = why
            report.notes.append(f"folded nothing: {why}")
            return model
        note_skipped(report, skipped, budget)
        after = op_counts(folded)
        report.matched = sum(before.values()) - sum(after.values())
        report.details["ops_folded"] = {op: before[op] - after.get(op, 0) for op in before if before[op] > after.get(op, 0)}
        return folded


MIN_FOLD_BUDGET = 256 * 1024**2


def unfoldable(model: onnx.ModelProto) -> str | None:
    """Why onnx-graphsurgeon cannot fold this graph safely, or None: it loses values that are
    not tensors (sequences, maps such as a ZipMap's, optionals) and the outer-scope names
    subgraphs (If/Loop/Scan bodies) read."""
    graph = model.graph
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        kind = value.type.WhichOneof("value")
        if kind not in (None, "tensor_type"):
            return f"{value.name!r} is a {kind.replace('_type', '')}, not a tensor (onnx-graphsurgeon cannot fold such graphs)"
    for node in graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            return (f"node {node.name or node.output[0]!r} ({node.op_type}) has a subgraph (onnx-graphsurgeon's "
                    "folding does not keep the names a subgraph reads from outside)")
        if node.op_type.startswith(("Sequence", "Optional", "SplitToSequence", "ConcatFromSequence")) \
                or node.op_type in ("ZipMap", "CastMap", "DictVectorizer"):
            return f"node {node.name or node.output[0]!r} ({node.op_type}) makes or reads a non-tensor value"
    return None


def fold_budget(model: onnx.ModelProto) -> int:
    """Largest tensor folding may materialise: max(256 MB, 2x the model's weights)."""
    weights = sum(_nbytes(i.data_type, i.dims) for i in model.graph.initializer)
    return max(MIN_FOLD_BUDGET, 2 * weights)


def note_skipped(report: PassReport, skipped: list[str], budget: int) -> None:
    report.details["not_folded_over_budget"] = skipped
    if skipped:
        report.notes.append(f"did not fold {len(skipped)} tensor(s) larger than {budget / 1024**2:.0f} MB: "
                            f"{', '.join(skipped[:6])}{' ...' if len(skipped) > 6 else ''}")


def _nbytes(data_type: int, dims) -> int:
    count = 1
    for d in dims:
        count *= d if isinstance(d, int) else 0
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize
    except (KeyError, TypeError, ValueError):
        itemsize = 4
    return count * itemsize


def split_sliced_shapes(model: onnx.ModelProto) -> None:
    """Shape(x, start, end) (opset 15+, the dynamo exporter's batch reads) -> Shape(x) then
    Slice, in place. onnx-graphsurgeon 0.6's shape folding ignores start/end and folds the
    whole shape, which then breaks Concat ranks and blows up Expand (issue 20)."""
    from onnx import helper, numpy_helper
    import numpy as np

    from lvvit_opt.passes.graph_utils import NameAllocator

    names = NameAllocator(model.graph)
    nodes = []
    for node in model.graph.node:
        attrs = {a.name: a.i for a in node.attribute}
        if node.op_type != "Shape" or node.domain not in ("", "ai.onnx") or not ({"start", "end"} & set(attrs)):
            nodes.append(node)
            continue
        base = node.name or node.output[0]
        whole = names.fresh(f"{node.output[0]}_whole")
        start = numpy_helper.from_array(np.array([attrs.get("start", 0)], np.int64), names.fresh(f"{base}/start"))
        end = numpy_helper.from_array(np.array([attrs.get("end", 2**62)], np.int64), names.fresh(f"{base}/end"))
        model.graph.initializer.extend([start, end])
        nodes.append(helper.make_node("Shape", list(node.input), [whole], name=names.fresh(f"{base}/whole")))
        nodes.append(helper.make_node("Slice", [whole, start.name, end.name], list(node.output),
                                      name=names.fresh(f"{base}/slice")))
    del model.graph.node[:]
    model.graph.node.extend(nodes)


class FoldBrokeGraph(Exception):
    """onnx-graphsurgeon's folded graph fails the structural check; `model` was not touched."""


def fold_graph(model: onnx.ModelProto, fold_shapes: bool = True, size_threshold: int | None = None,
               skipped: list[str] | None = None, in_place: bool = False, checked: bool = False) -> onnx.ModelProto:
    """Constant-fold `model` (a copy of it, or `model` itself with in_place) and return it cleaned up.

    size_threshold: tensors of known size above it are not folded; their names are appended
    to `skipped`. checked: the folded skeleton goes through the pass manager's structural check
    before `model` is touched; FoldBrokeGraph (model unchanged) when it fails where the
    original passed."""
    import logging

    import onnx_graphsurgeon as gs

    logging.getLogger("onnx_graphsurgeon").setLevel(logging.ERROR)
    gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR
    import onnxruntime

    onnxruntime.set_default_logger_severity(4)  # graphsurgeon's sessions otherwise log per node (errors too)
    from lvvit_opt.core.shape_inference import infer_shapes_bounded
    from lvvit_opt.passes.graph_utils import weightless_skeleton

    # Fold on the weight-free skeleton: large weights are graph inputs there, so neither shape
    # inference nor graphsurgeon's onnxruntime session copies them (memory stays ~1x the model).
    # Weight-only subgraphs are therefore not folded (exporters fold those already).
    inferred = infer_shapes_bounded(weightless_skeleton(model))
    split_sliced_shapes(inferred)
    inferred = infer_shapes_bounded(inferred)
    graph = gs.import_onnx(inferred)
    held = _hold_over_budget(graph, size_threshold) if size_threshold is not None else []
    if skipped is not None:
        skipped += [node.outputs[0].name for node, _, _ in held]
    graph.fold_constants(fold_shapes=fold_shapes, size_threshold=size_threshold, error_ok=True)
    for node, stand_in, original in held:  # reconnect: the node stays, computed at run time
        node.inputs[node.inputs.index(stand_in)] = original
        graph.inputs.remove(stand_in)
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    folded = gs.export_onnx(graph, do_type_check=False)
    if checked:
        from lvvit_opt.passes.pipeline import structural_problem

        folded.ir_version = max(model.ir_version, 4)  # _adopt lists IR < 4's initializers among the inputs
        problem = structural_problem(folded)
        if problem and not structural_problem(model):
            raise FoldBrokeGraph(problem[:200])
    target = model if in_place else copy_model(model)
    _adopt(target, folded)
    return target


def _adopt(model: onnx.ModelProto, folded: onnx.ModelProto) -> None:
    """Give `model` the folded skeleton's nodes, value_info, outputs and new constants, in place:
    its weights stay where they are (unused ones deleted in place, none copied)."""
    from lvvit_opt.passes.graph_utils import node_reads

    graph = model.graph
    read = set().union(*(node_reads(n) for n in folded.graph.node)) | {o.name for o in folded.graph.output}
    for index in reversed([k for k, init in enumerate(graph.initializer) if init.name not in read]):
        del graph.initializer[index]
    present = {i.name for i in graph.initializer}
    graph.initializer.extend(i for i in folded.graph.initializer if i.name not in present and i.name in read)
    del graph.node[:]
    graph.node.extend(folded.graph.node)
    weights = {i.name for i in graph.initializer}
    del graph.value_info[:]
    graph.value_info.extend(v for v in folded.graph.value_info if v.name not in weights)
    del graph.output[:]
    graph.output.extend(folded.graph.output)
    inputs = {i.name for i in folded.graph.input} | weights
    for index in reversed([k for k, value in enumerate(graph.input) if value.name not in inputs]):
        del graph.input[index]
    if model.ir_version < 4:  # IR < 4: every initializer must also be listed among the graph inputs
        from onnx import helper

        listed = {i.name for i in graph.input}
        graph.input.extend(helper.make_tensor_value_info(i.name, i.data_type, list(i.dims))
                           for i in graph.initializer if i.name not in listed)


def _hold_over_budget(graph, size_threshold: int) -> list[tuple]:
    """Keep graphsurgeon from evaluating constant-only nodes whose output (known from shape
    inference) exceeds the budget, even as an intermediate: one input of each is swapped
    for a stand-in graph input during folding. Returns (node, stand_in, original input)."""
    import numpy as np
    import onnx_graphsurgeon as gs

    constant = {name for name, t in graph.tensors().items() if isinstance(t, gs.Constant)}
    held = []
    for node in graph.nodes:
        inputs = [i for i in node.inputs if i.name]
        if not inputs or not all(i.name in constant for i in inputs):
            continue
        big = any(t.shape is not None and all(isinstance(d, int) for d in t.shape) and t.dtype is not None
                  and int(np.prod(t.shape)) * np.dtype(t.dtype).itemsize > size_threshold for t in node.outputs)
        if big:
            original = inputs[0]
            stand_in = gs.Variable(f"{original.name}__fold_stand_in", dtype=original.dtype, shape=original.shape)
            node.inputs[node.inputs.index(original)] = stand_in
            graph.inputs.append(stand_in)
            held.append((node, stand_in, original))
        else:
            constant.update(t.name for t in node.outputs)
    return held
