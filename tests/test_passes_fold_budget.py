"""fix_shapes/fold_constants: bounded memory (over-budget tensors not folded, reported) and
Shape(start, end) folded as the slice it is (dynamo exports; graphsurgeon 0.6 ignores start/end)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto as T, helper, numpy_helper

from pass_check import check_pass
from lvvit_opt.passes import run_pipeline


def test_fix_shapes_folds_sliced_shape_to_batch_only():
    """cls-token Expand to (batch, 1, 4) from Shape(x, start=0, end=1), as dynamo writes it."""
    inits = [numpy_helper.from_array(np.arange(4, dtype=np.float32).reshape(1, 1, 4), "cls"),
             numpy_helper.from_array(np.array([1], np.int64), "one"), numpy_helper.from_array(np.array([4], np.int64), "four")]
    nodes = [helper.make_node("Shape", ["x"], ["b"], start=0, end=1),
             helper.make_node("Concat", ["b", "one", "four"], ["target"], axis=0),
             helper.make_node("Expand", ["cls", "target"], ["tok"]),
             helper.make_node("Concat", ["tok", "x"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, ["batch", 3, 4])],
                              [helper.make_tensor_value_info("y", T.FLOAT, ["batch", 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    feeds = {"x": np.random.default_rng(0).standard_normal((4, 3, 4)).astype(np.float32)}
    result = check_pass(model, ["fix_shapes"], {"fix_shapes": {"batch_size": 4}}, feeds=feeds)
    assert result.reports[0].details["outputs"] == {"y": [4, 4, 4]}
    assert {n.op_type for n in result.model.graph.node} == {"Concat"}


def test_fold_skips_tensor_over_budget_and_reports_it():
    """ConstantOfShape of 64M floats (256 MB) -> ReduceSum: with a 1 MB budget it is not folded."""
    shape = numpy_helper.from_array(np.array([64, 1024, 1024], np.int64), "shape")
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"], name="make_big",
                              value=numpy_helper.from_array(np.array([1.0], np.float32))),
             helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
             helper.make_node("Add", ["x", "s"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [2])], [shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    result = run_pipeline(model, ["fold_constants"], {"fold_constants": {"size_threshold_mb": 1}})
    report = result.reports[0]
    assert report.details["not_folded_over_budget"] == ["big"]
    assert "did not fold 1 tensor(s) larger than 1 MB" in report.notes[0]
    assert [n.op_type for n in result.model.graph.node] == ["ConstantOfShape", "ReduceSum", "Add"]


def test_streamed_save_is_the_same_message(golden_onnx, tmp_path):
    """save_onnx writes one initializer at a time (no second copy of the weights): same model."""
    from lvvit_opt.core.onnx_files import save_onnx

    model = onnx.load(golden_onnx)
    save_onnx(model, tmp_path / "copy.onnx")
    again = onnx.load(str(tmp_path / "copy.onnx"))
    assert again == model and again.ByteSize() == model.ByteSize()
