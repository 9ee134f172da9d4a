"""fold_constants: evaluate every subgraph whose inputs are all constants."""
from __future__ import annotations

from dataclasses import dataclass

import onnx

from .base import GraphPass, PassReport
from .graph_utils import op_counts
from .registry import register_pass


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
        size_threshold_mb: float = 1024.0  # do not materialise folded tensors larger than this

    def rewrite(self, model: onnx.ModelProto, report: PassReport) -> onnx.ModelProto:
        before = op_counts(model)
        folded = fold_graph(model, fold_shapes=self.options.fold_shapes,
                            size_threshold=int(self.options.size_threshold_mb * 1024**2))
        after = op_counts(folded)
        report.matched = sum(before.values()) - sum(after.values())
        report.details["ops_folded"] = {op: before[op] - after.get(op, 0) for op in before if before[op] > after.get(op, 0)}
        return folded


def fold_graph(model: onnx.ModelProto, fold_shapes: bool = True, size_threshold: int | None = None) -> onnx.ModelProto:
    """Constant-fold `model` (not modified) and return a cleaned-up new model."""
    import logging

    import onnx_graphsurgeon as gs

    logging.getLogger("onnx_graphsurgeon").setLevel(logging.ERROR)
    gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # graphsurgeon's sessions otherwise warn per node
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    graph = gs.import_onnx(inferred)
    graph.fold_constants(fold_shapes=fold_shapes, size_threshold=size_threshold, error_ok=True)
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    folded = gs.export_onnx(graph, do_type_check=False)
    folded.ir_version = model.ir_version
    del folded.opset_import[:]
    folded.opset_import.extend(model.opset_import)
    for field in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(folded, field, getattr(model, field))
    folded.metadata_props.extend(model.metadata_props)
    return folded
