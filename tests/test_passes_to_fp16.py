"""to_fp16 (through tests/pass_check.py): op lists, numeric closeness to fp32 within the fp16
tolerance, the wrong answers that tolerance must catch, and `apply --passes ...,to_fp16`."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lvvit_opt.cli import main
from lvvit_opt.core.errors import UserError
from lvvit_opt.passes import run_pipeline
from lvvit_opt.passes import to_fp16 as to_fp16_module
from lvvit_opt.verify.golden import Tolerance
from pass_check import check_pass

FP16 = Tolerance.fp16()


def _small(bias: float = 0.5) -> onnx.ModelProto:
    """x[1,4,8] @ w + b -> Softmax: a matrix op, a Constant node, an initializer and a vector op."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32), "w")
    nodes = [helper.make_node("Constant", [], ["b"], name="bias",
                              value=numpy_helper.from_array(np.full(8, bias, np.float32))),
             helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Add", ["h", "b"], ["a"], name="add"),
             helper.make_node("Softmax", ["a"], ["y"], name="softmax", axis=-1)]
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]),
                             opset_imports=[helper.make_opsetid("", 13)])


def _elem(value) -> int:
    return value.type.tensor_type.elem_type


def test_default_keeps_io_fp32_and_rounds_every_constant():
    result = check_pass(_small(), ["to_fp16"], ops=["Cast", "MatMul", "Add", "Softmax", "Cast"], tolerance=FP16)
    model, report = result.model, result.reports[0]
    assert [(n.input[0], n.output[0], n.attribute[0].i) for n in model.graph.node if n.op_type == "Cast"] == \
        [("x", "x__fp16", TensorProto.FLOAT16), ("y__fp16out", "y", TensorProto.FLOAT)]
    assert {i.name: i.data_type for i in model.graph.initializer} == {"w__fp16": TensorProto.FLOAT16,
                                                                       "b__fp16": TensorProto.FLOAT16}
    assert _elem(model.graph.input[0]) == _elem(model.graph.output[0]) == TensorProto.FLOAT
    assert report.matched == 3 and report.details["kept_fp32"] == [] and report.details["constants_rounded"] == 2
    w = numpy_helper.to_array(next(i for i in _small().graph.initializer if i.name == "w"))
    assert np.array_equal(numpy_helper.to_array(model.graph.initializer[0]), w.astype(np.float16))


def test_keep_fp32_nodes_and_op_types_stay_fp32_between_casts():
    result = check_pass(_small(), ["to_fp16"], {"to_fp16": {"keep_fp32": "softmax"}},
                        ops=["Cast", "MatMul", "Add", "Cast", "Softmax"], tolerance=FP16)
    softmax = result.model.graph.node[-1]
    assert list(softmax.input) == ["a__fp32"] and list(softmax.output) == ["y"]  # no cast back at the output
    assert result.reports[0].details["kept_fp32"] == ["softmax"]
    # a JSON list carries names with commas and spaces; op types too
    named = _small()
    named.graph.node[3].name = "soft, max"
    result = check_pass(named, ["to_fp16"], {"to_fp16": {"keep_fp32": '["soft, max"]', "keep_op_types": "MatMul"}},
                        ops=["MatMul", "Cast", "Add", "Cast", "Softmax"], tolerance=FP16)
    assert result.reports[0].details["kept_fp32"] == ["mm", "soft, max"]
    assert "w" in {i.name for i in result.model.graph.initializer}  # the kept MatMul reads the fp32 weight


def test_keep_io_fp32_false_makes_inputs_and_outputs_fp16():
    result = check_pass(_small(), ["to_fp16"], {"to_fp16": {"keep_io_fp32": "false"}},
                        ops=["MatMul", "Add", "Softmax"], tolerance=FP16)
    graph = result.model.graph
    assert _elem(graph.input[0]) == _elem(graph.output[0]) == TensorProto.FLOAT16
    # a kept producer of the output writes fp32: cast to the fp16 output
    kept = run_pipeline(_small(), ["to_fp16"], {"to_fp16": {"keep_io_fp32": "false", "keep_fp32": "softmax"}}).model
    assert [n.op_type for n in kept.graph.node] == ["MatMul", "Add", "Cast", "Softmax", "Cast"]
    assert kept.graph.node[-1].output[0] == "y" and _elem(kept.graph.output[0]) == TensorProto.FLOAT16


def test_the_fp16_check_catches_a_wrong_conversion(monkeypatch):
    """A conversion that scales constants by 5 % keeps the direction (cosine) but not the range:
    the fp16 tolerance the pass is judged by must fail it."""
    real = to_fp16_module.round_fp16
    monkeypatch.setattr(to_fp16_module, "round_fp16", lambda a: real(a * np.float32(1.05)))
    with pytest.raises(AssertionError, match="FAIL"):
        check_pass(_small(bias=0.0), ["to_fp16"], tolerance=FP16)


def test_constants_past_65504_become_inf_and_the_report_says_so():
    model = _small(bias=1e5)
    result = run_pipeline(model, ["to_fp16"])
    report = result.reports[0]
    assert report.details["constants_overflowed"] == ["b"]
    assert any("past fp16's 65504" in note for note in report.notes)
    with pytest.raises(AssertionError):  # not clamped: the Inf reaches the output (NaN after Softmax)
        check_pass(model, ["to_fp16"], tolerance=FP16)


def test_unknown_keep_node_is_refused_and_a_subgraph_op_stays_fp32():
    with pytest.raises(UserError, match='no node named "nope"'):
        run_pipeline(_small(), ["to_fp16"], {"to_fp16": {"keep_fp32": "nope"}})
    with pytest.raises(UserError, match="JSON list"):
        run_pipeline(_small(), ["to_fp16"], {"to_fp16": {"keep_fp32": "[1, 2]"}})
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    branch = lambda op, name: helper.make_graph(  # noqa: E731
        [helper.make_node(op, ["x", "x"], [name])], f"{name}_g", [], [helper.make_tensor_value_info(name, 1, [2])])
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("If", ["c"], ["y"], name="choose", then_branch=branch("Add", "t"),
                              else_branch=branch("Mul", "e"))]
    model = helper.make_model(helper.make_graph(nodes, "g", [cond, x], [y]), opset_imports=[helper.make_opsetid("", 13)])
    feeds = {"c": np.array(True), "x": np.array([1.5, -2.0], np.float32)}
    result = check_pass(model, ["to_fp16"], feeds=feeds, tolerance=FP16)
    assert result.reports[0].details["kept_fp32"] == ["choose"]
    assert any("subgraphs stay fp32" in note and "choose" in note for note in result.reports[0].notes)


def test_golden_lvvit_close_to_torch_and_the_same_graph_tune_builds(golden_onnx, golden_io):
    """Another exporter's graph (torch's, the golden LV-ViT) within the fp16 tolerance of torch's
    own outputs; tune's fp16 candidate is this pass's graph, so reproduce.sh rebuilds it."""
    from lvvit_opt.tune.search import fp16_candidate

    model = onnx.load(golden_onnx)
    keep = [next(n.name for n in model.graph.node if n.op_type == "Softmax")]
    result = check_pass(model, ["to_fp16"], {"to_fp16": {"keep_fp32": keep}}, feeds={"image": golden_io["image"]},
                        reference={"features": golden_io["features"]}, tolerance=FP16)
    assert result.reports[0].details["kept_fp32"] == keep
    assert fp16_candidate(model, keep).SerializeToString() == result.model.SerializeToString()


def test_apply_validates_to_fp16_with_the_fp16_tolerance(cli_runner, golden_onnx, tmp_path):
    out, report = tmp_path / "fp16.onnx", tmp_path / "apply.json"
    keep = next(n.name for n in onnx.load(golden_onnx).graph.node if n.op_type == "Softmax")
    result = cli_runner.invoke(main, ["apply", golden_onnx, "-o", str(out), "--passes", "softmax_transpose,to_fp16",
                                      "-O", f"to_fp16.keep_fp32={json.dumps([keep])}", "--json", str(report)])
    assert result.exit_code == 0, result.output
    validation = json.loads(report.read_text())["result"]["validation"]
    tolerance = validation["comparisons"]["candidate vs reference"]["tolerance"]
    assert validation["passed"] and tolerance == dataclasses.asdict(FP16) and tolerance["atol"] is None
    fp16_inits = [i for i in onnx.load(out).graph.initializer if i.data_type == TensorProto.FLOAT16]
    assert fp16_inits
    # --atol still overrides: an exact fp32 tolerance fails the fp16 graph, nothing written
    again = cli_runner.invoke(main, ["apply", golden_onnx, "-o", str(tmp_path / "x.onnx"), "--passes", "to_fp16",
                                     "--atol", "0", "--rtol", "0"])
    assert again.exit_code == 1 and not (tmp_path / "x.onnx").exists()
    bad = cli_runner.invoke(main, ["apply", golden_onnx, "-o", str(tmp_path / "y.onnx"), "--passes", "to_fp16",
                                   "-O", "to_fp16.keep_fp32=missing_node"])
    assert bad.exit_code == 2 and bad.output.strip().splitlines() == [
        'error: to_fp16.keep_fp32: no node named "missing_node" in this graph']
    for value, message in (("[1", "not a JSON list of strings"), ('{"a": 1}', None), ("[1]", "JSON list of strings")):
        bad = cli_runner.invoke(main, ["apply", golden_onnx, "-o", str(tmp_path / "y.onnx"), "--passes", "to_fp16",
                                       "-O", f"to_fp16.keep_fp32={value}"])
        lines = bad.output.strip().splitlines()
        assert bad.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), bad.output
        assert message is None or message in lines[0]
    assert not (tmp_path / "y.onnx").exists()


def test_ir3_model_lists_its_fp16_initializers_among_the_graph_inputs():
    """IR < 4 requires every initializer to be a graph input: the rounded copies are listed too."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    w_input = helper.make_tensor_value_info("w", TensorProto.FLOAT, [8, 8])
    w = numpy_helper.from_array(np.random.default_rng(1).standard_normal((8, 8)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g", [x, w_input], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=3)
    result = check_pass(model, ["to_fp16"], feeds={"x": np.ones((1, 8), np.float32)}, tolerance=FP16,
                        ops=["Cast", "MatMul", "Cast"])
    inputs = {i.name: _elem(i) for i in result.model.graph.input}
    assert inputs == {"x": TensorProto.FLOAT, "w": TensorProto.FLOAT, "w__fp16": TensorProto.FLOAT16}
