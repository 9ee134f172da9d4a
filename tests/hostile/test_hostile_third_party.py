"""Graphs nobody here wrote (issue 32): small third-party-style graphs built with onnx.helper,
and a sample of onnx's own node test graphs, through `apply` (fold_constants,cleanup and
softmax_transpose) and `validate`.

Every run: no traceback, an error is one line, the exit code says whose fault it is (2: the
model or its inputs, 1: a check failed), and where apply succeeds the rewrite computes what
the original computes on onnxruntime. The comparison's verdict must still catch a planted 1 %
error with NaNs elsewhere.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hostile_helpers import REPO_ROOT, assert_refused, cli_subprocess, invoke

PASS_SETS = ("fold_constants,cleanup", "softmax_transpose")


# -- helpers -------------------------------------------------------------------------------

def _model(nodes, inputs, outputs, inits=(), opset=17, ir=8, extra_opsets=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "third_party", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets])
    model.ir_version = ir
    return model


def _save(tmp_path: Path, model: onnx.ModelProto, name: str = "m.onnx") -> Path:
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return path


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def _one_line_error(outcome, code: int) -> str:
    """The run failed with `code` and exactly one stderr line, `error: ...`; returns it."""
    assert "Traceback" not in outcome.stderr + outcome.stdout
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert outcome.exit_code == code, (outcome.exit_code, outcome.stdout, outcome.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), outcome.stderr
    return lines[0]


def _run(path: Path, feeds: dict) -> list:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _apply(tmp_path: Path, model_path: Path, passes: str, *extra: str):
    out = tmp_path / f"out_{passes.replace(',', '_')}.onnx"
    return invoke(["apply", model_path, "-o", out, "--passes", passes, "-q", *extra], tmp_path), out


def _assert_same_function(original: Path, rewritten: Path, feeds: dict) -> None:
    from lvvit_opt.verify.golden import Tolerance, compare_tensor

    for got, want in zip(_run(rewritten, feeds), _run(original, feeds)):
        if isinstance(want, np.ndarray) and want.dtype.kind in "fc":
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, equal_nan=True)
        elif isinstance(want, np.ndarray):
            np.testing.assert_array_equal(got, want)
        else:  # a sequence or map: the comparison's own structured check (tested below)
            assert compare_tensor("out", want, got, Tolerance(atol=1e-6, rtol=1e-5)).passed


# -- types numpy and onnxruntime's Python API cannot exchange --------------------------------

@pytest.mark.parametrize("passes", PASS_SETS)
@pytest.mark.parametrize("elem", [TensorProto.BFLOAT16, TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E5M2])
def test_low_precision_input_is_refused_naming_it(tmp_path, passes, elem):
    model = _model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
                   [_vi("x", elem, [2, 3])], [_vi("y", TensorProto.FLOAT, [2, 3])], opset=21, ir=10)
    outcome, out = _apply(tmp_path, _save(tmp_path, model), passes)
    line = _one_line_error(outcome, 2)
    assert "input 'x'" in line and "--no-validate" in line
    assert not out.exists()


@pytest.mark.parametrize("passes", PASS_SETS)
@pytest.mark.parametrize("elem", [TensorProto.INT4, TensorProto.UINT4])
def test_output_numpy_cannot_hold_is_one_line(tmp_path, passes, elem):
    model = _model([helper.make_node("Cast", ["x"], ["y"], to=elem)],
                   [_vi("x", TensorProto.FLOAT, [2, 4])], [_vi("y", elem, [2, 4])], opset=21, ir=10)
    outcome, _ = _apply(tmp_path, _save(tmp_path, model), passes)
    line = _one_line_error(outcome, 2)
    assert "'y'" in line and "--no-validate" in line


def test_the_same_graph_runs_with_no_validate(tmp_path):
    model = _model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT4)],
                   [_vi("x", TensorProto.FLOAT, [2, 4])], [_vi("y", TensorProto.INT4, [2, 4])], opset=21, ir=10)
    outcome, out = _apply(tmp_path, _save(tmp_path, model), "fold_constants,cleanup", "--no-validate")
    assert outcome.exit_code == 0, outcome.stderr
    assert onnx.load(out).graph.output[0].type.tensor_type.elem_type == TensorProto.INT4


# -- sequences, optionals, maps ------------------------------------------------------------

@pytest.mark.parametrize("passes", PASS_SETS)
def test_sequence_input_is_refused_naming_it(tmp_path, passes):
    seq = helper.make_tensor_sequence_value_info("xs", TensorProto.FLOAT, None)
    model = _model([helper.make_node("SequenceLength", ["xs"], ["n"])], [seq], [_vi("n", TensorProto.INT64, [])])
    outcome, _ = _apply(tmp_path, _save(tmp_path, model), passes)
    line = _one_line_error(outcome, 2)
    assert "input 'xs' is a sequence" in line and "--no-validate" in line


@pytest.mark.parametrize("passes", PASS_SETS)
def test_sequence_output_is_compared_element_by_element(tmp_path, passes):
    model = _model([helper.make_node("Relu", ["x"], ["r"]),
                    helper.make_node("SequenceConstruct", ["x", "r"], ["seq"])],
                   [_vi("x", TensorProto.FLOAT, [2, 3])],
                   [helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, [2, 3])])
    path = _save(tmp_path, model)
    outcome, out = _apply(tmp_path, path, passes, "--json", tmp_path / "r.json")
    assert outcome.exit_code == 0, outcome.stderr
    result = json.loads((tmp_path / "r.json").read_text())["result"]
    assert result["validation"]["passed"] is True
    x = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    _assert_same_function(path, out, {"x": x})
    if passes.startswith("fold_constants"):  # graphsurgeon cannot fold it: left as it was, and said so
        assert "not_folded" in result["passes"][0]["details"]


def _zipmap_classifier() -> onnx.ModelProto:
    """A scikit-learn-style classifier head (as skl2onnx exports one): scores -> Softmax ->
    ZipMap, whose output is a sequence of {label: probability} maps."""
    weights = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32), "W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["scores"]),
             helper.make_node("Softmax", ["scores"], ["probs"], axis=1),
             helper.make_node("ArgMax", ["probs"], ["label"], axis=1, keepdims=0),
             helper.make_node("ZipMap", ["probs"], ["probabilities"], domain="ai.onnx.ml",
                              classlabels_int64s=[10, 20, 30])]
    map_type = helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, []))
    outputs = [_vi("label", TensorProto.INT64, [None]),
               helper.make_value_info("probabilities", helper.make_sequence_type_proto(map_type))]
    return _model(nodes, [_vi("x", TensorProto.FLOAT, [None, 4])], outputs, [weights],
                  extra_opsets=[helper.make_opsetid("ai.onnx.ml", 3)])


@pytest.mark.parametrize("passes", PASS_SETS)
def test_classifier_with_a_map_output(tmp_path, passes):
    path = _save(tmp_path, _zipmap_classifier())
    outcome, out = _apply(tmp_path, path, passes)
    assert outcome.exit_code == 0, outcome.stderr
    x = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    _assert_same_function(path, out, {"x": x})
    assert onnx.load(out).graph.output[1].type.HasField("sequence_type")


def test_a_wrong_map_value_is_caught():
    from lvvit_opt.verify.golden import Tolerance, compare_tensor

    ref = [{10: np.float32(0.2), 20: np.float32(0.8)}]
    assert compare_tensor("p", ref, [{10: np.float32(0.2), 20: np.float32(0.8)}], Tolerance.onnx()).passed
    assert not compare_tensor("p", ref, [{10: np.float32(0.2), 20: np.float32(0.808)}], Tolerance.onnx()).passed
    assert not compare_tensor("p", ref, [{10: np.float32(0.2), 30: np.float32(0.8)}], Tolerance.onnx()).passed
    assert not compare_tensor("p", ref, None, Tolerance.onnx()).passed


# -- scalars, shapes, strings, booleans ----------------------------------------------------

@pytest.mark.parametrize("passes", PASS_SETS)
def test_scalar_input_is_fed_as_a_scalar(tmp_path, passes):
    model = _model([helper.make_node("Mul", ["x", "s"], ["y"])],
                   [_vi("x", TensorProto.FLOAT, [2, 3]), _vi("s", TensorProto.FLOAT, [])],
                   [_vi("y", TensorProto.FLOAT, [2, 3])])
    path = _save(tmp_path, model)
    outcome, out = _apply(tmp_path, path, passes, "--json", tmp_path / "r.json")
    assert outcome.exit_code == 0, outcome.stderr
    result = json.loads((tmp_path / "r.json").read_text())["result"]
    assert result["validation"]["inputs"] == {"x": [2, 3], "s": []}


@pytest.mark.parametrize("passes", PASS_SETS)
def test_an_input_that_carries_a_shape_blames_the_random_inputs(tmp_path, passes):
    model = _model([helper.make_node("Reshape", ["x", "shape"], ["y"])],
                   [_vi("x", TensorProto.FLOAT, [2, 3, 4]), _vi("shape", TensorProto.INT64, [2])],
                   [_vi("y", TensorProto.FLOAT, None)])
    path = _save(tmp_path, model)
    outcome, out = _apply(tmp_path, path, passes)
    line = _one_line_error(outcome, 2)
    # neither random 0/1 nor the safe fills (all 1: [1, 1], all 0: [2, 3]) reshape 24 values
    assert "validation's random inputs" in line and "'shape' int64[2]" in line and "give --inputs" in line
    assert not out.exists()
    # with the real values, the same graph goes through (3 rows each: --inputs splits .npz arrays into rows)
    np.savez(tmp_path / "real.npz", x=np.ones((2, 3, 4), np.float32), shape=np.array([6, 4], np.int64))
    outcome, out = _apply(tmp_path, path, passes, "--inputs", tmp_path / "real.npz")
    assert outcome.exit_code == 0, outcome.stderr


@pytest.mark.parametrize("passes", PASS_SETS)
def test_integer_inputs_random_values_break_are_set_to_safe_values_and_said(tmp_path, passes):
    """Integer Mod: a random 0 divisor makes onnxruntime refuse the original; validation then
    sets the integer inputs to 1, runs both graphs on that, and its source says so."""
    model = _model([helper.make_node("Mod", ["a", "b"], ["m"]), helper.make_node("Add", ["m", "a"], ["y"])],
                   [_vi("a", TensorProto.INT32, [8]), _vi("b", TensorProto.INT32, [8])],
                   [_vi("y", TensorProto.INT32, [8])])
    path = _save(tmp_path, model)
    outcome, out = _apply(tmp_path, path, passes, "--json", tmp_path / "r.json")
    assert outcome.exit_code == 0, outcome.stderr
    source = json.loads((tmp_path / "r.json").read_text())["result"]["validation"]["input_source"]
    assert source["filled"] == ["a", "b"] and source["fill"] == 1
    assert "set to 1 (random values made the original fail" in source["source"]


@pytest.mark.parametrize("passes", PASS_SETS)
def test_string_and_bool_inputs(tmp_path, passes):
    model = _model([helper.make_node("Equal", ["a", "b"], ["same"]),
                    helper.make_node("And", ["same", "flag"], ["y"])],
                   [_vi("a", TensorProto.STRING, [4]), _vi("b", TensorProto.STRING, [4]),
                    _vi("flag", TensorProto.BOOL, [4])], [_vi("y", TensorProto.BOOL, [4])], opset=19, ir=9)
    path = _save(tmp_path, model)
    outcome, out = _apply(tmp_path, path, passes)
    assert outcome.exit_code == 0, outcome.stderr
    feeds = {"a": np.array(["x", "y", "z", ""], dtype=object), "b": np.array(["x", "q", "z", "w"], dtype=object),
             "flag": np.array([True, True, False, True])}
    _assert_same_function(path, out, feeds)


def test_strings_are_compared_exactly():
    from lvvit_opt.verify.golden import Tolerance, compare_tensor

    same = compare_tensor("s", np.array(["a", "b"], dtype=object), np.array(["a", "b"], dtype=object),
                          Tolerance.onnx())
    other = compare_tensor("s", np.array(["a", "b"], dtype=object), np.array(["a", "c"], dtype=object),
                           Tolerance.onnx())
    assert same.passed and not other.passed and "1 of 2" in other.failures[0]


# -- cleanup keeps the interface; fold_constants on IR < 4 and subgraphs ---------------------

def test_cleanup_keeps_an_input_no_node_reads(tmp_path):
    """A CastLike-style graph: `like` only gives a type; folding makes it unread. The rewrite
    must still take it (validation feeds both graphs the same inputs)."""
    model = _model([helper.make_node("CastLike", ["x", "like"], ["y"])],
                   [_vi("x", TensorProto.FLOAT, [2, 3]), _vi("like", TensorProto.FLOAT16, [1])],
                   [_vi("y", TensorProto.FLOAT16, [2, 3])])
    path = _save(tmp_path, model)
    outcome, out = _apply(tmp_path, path, "fold_constants,cleanup")
    assert outcome.exit_code == 0, outcome.stderr
    assert [i.name for i in onnx.load(out).graph.input] == ["x", "like"]


def _ir3_model() -> onnx.ModelProto:
    """IR 3 (opset 8): initializers are listed among the graph inputs too; a + b folds."""
    a = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "a")
    b = numpy_helper.from_array(np.full((2, 3), 0.5, np.float32), "b")
    nodes = [helper.make_node("Add", ["a", "b"], ["c"]), helper.make_node("Mul", ["x", "c"], ["y"])]
    inputs = [_vi("x", TensorProto.FLOAT, [2, 3]), _vi("a", TensorProto.FLOAT, [2, 3]), _vi("b", TensorProto.FLOAT, [2, 3])]
    return _model(nodes, inputs, [_vi("y", TensorProto.FLOAT, [2, 3])], [a, b], opset=8, ir=3)


def test_fold_constants_on_ir3_lists_the_folded_initializer_among_the_inputs(tmp_path):
    path = _save(tmp_path, _ir3_model())
    outcome, out = _apply(tmp_path, path, "fold_constants,cleanup")
    assert outcome.exit_code == 0, outcome.stderr
    folded = onnx.load(out)
    onnx.checker.check_model(folded)
    assert folded.ir_version == 3
    assert [n.op_type for n in folded.graph.node] == ["Mul"]
    assert {i.name for i in folded.graph.initializer} <= {i.name for i in folded.graph.input}
    _assert_same_function(path, out, {"x": np.ones((2, 3), np.float32)})


@pytest.mark.parametrize("passes", PASS_SETS)
def test_if_subgraph_reading_outer_names(tmp_path, passes):
    """An If whose branches read outer-scope values (folding them out of the outer graph
    would break the branches): the graph keeps computing what it computed."""
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    then = helper.make_graph([helper.make_node("Mul", ["x", "scale"], ["t"])], "then", [],
                             [_vi("t", TensorProto.FLOAT, [2, 3])])
    other = helper.make_graph([helper.make_node("Sub", ["x", "scale"], ["e"])], "else", [],
                              [_vi("e", TensorProto.FLOAT, [2, 3])])
    nodes = [helper.make_node("Add", ["two", "two"], ["scale"]),
             helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
             helper.make_node("Greater", ["total", "two"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)]
    model = _model(nodes, [_vi("x", TensorProto.FLOAT, [2, 3])], [_vi("y", TensorProto.FLOAT, [2, 3])], [two])
    path = _save(tmp_path, model)
    outcome, out = _apply(tmp_path, path, passes)
    assert outcome.exit_code == 0, outcome.stderr
    onnx.checker.check_model(onnx.load(out))
    for x in (np.ones((2, 3), np.float32), -np.ones((2, 3), np.float32)):
        _assert_same_function(path, out, {"x": x})


# -- NaN/Inf agreement, and a wrong answer the verdict must catch ----------------------------

@pytest.mark.parametrize("passes", PASS_SETS)
def test_same_nan_and_inf_on_both_sides_is_agreement_and_said(tmp_path, passes):
    """Log of standard-normal inputs: NaN where x < 0 on both sides; 1/0: Inf."""
    model = _model([helper.make_node("Log", ["x"], ["y"]), helper.make_node("Reciprocal", ["x"], ["r"])],
                   [_vi("x", TensorProto.FLOAT, [4, 8])],
                   [_vi("y", TensorProto.FLOAT, [4, 8]), _vi("r", TensorProto.FLOAT, [4, 8])])
    path = _save(tmp_path, model)
    out = tmp_path / "o.onnx"
    outcome = invoke(["apply", path, "-o", out, "--passes", passes, "--json", tmp_path / "r.json"], tmp_path)
    assert outcome.exit_code == 0, outcome.stderr
    assert "NaN/Inf value(s) at the same places on both sides, counted as agreement" in outcome.stdout
    outputs = json.loads((tmp_path / "r.json").read_text())["result"]["validation"]["comparisons"][
        "candidate vs reference"]["outputs"]
    assert outputs[0]["nonfinite_matched"] > 0


def test_planted_one_percent_error_fails_despite_nans_elsewhere():
    from lvvit_opt.verify.golden import Tolerance, compare_outputs

    rng = np.random.default_rng(3)
    ref = rng.standard_normal((8, 16)).astype(np.float32)
    ref[rng.random((8, 16)) < 0.3] = np.nan
    ref[0, 0], ref[0, 1] = np.inf, -np.inf
    cand = ref.copy()
    assert compare_outputs({"y": ref}, {"y": cand}).passed
    finite = np.argwhere(np.isfinite(ref))
    cand[tuple(finite[len(finite) // 2])] *= 1.01  # one value 1 % off
    report = compare_outputs({"y": ref}, {"y": cand}, Tolerance.onnx())
    assert not report.passed
    assert report.outputs[0].nonfinite_matched == int(np.count_nonzero(~np.isfinite(ref)))
    # NaN on one side only, or the other Inf, still fails
    for place, value in ((tuple(finite[0]), np.nan), ((0, 0), -np.inf)):
        broken = ref.copy()
        broken[place] = value
        assert not compare_outputs({"y": ref}, {"y": broken}).passed


def test_validate_catches_a_one_percent_error_with_nans(tmp_path):
    """End to end: two graphs that agree on their NaNs but one is 1 % off: exit 1, one line."""
    log = _model([helper.make_node("Log", ["x"], ["y"])], [_vi("x", TensorProto.FLOAT, [4, 8])],
                 [_vi("y", TensorProto.FLOAT, [4, 8])])
    scale = numpy_helper.from_array(np.array(1.01, np.float32), "k")
    off = _model([helper.make_node("Log", ["x"], ["l"]), helper.make_node("Mul", ["l", "k"], ["y"])],
                 [_vi("x", TensorProto.FLOAT, [4, 8])], [_vi("y", TensorProto.FLOAT, [4, 8])], [scale])
    outcome = invoke(["validate", _save(tmp_path, log, "a.onnx"), _save(tmp_path, off, "b.onnx")], tmp_path)
    assert outcome.exit_code == 1, outcome.stderr
    assert "Traceback" not in outcome.stderr
    same = invoke(["validate", tmp_path / "a.onnx", tmp_path / "a.onnx"], tmp_path)
    assert same.exit_code == 0, same.stderr


def test_fp16_outputs_are_judged_at_their_precision_and_say_so():
    from lvvit_opt.verify.golden import Tolerance, compare_tensor

    ref = np.linspace(-2, 2, 64, dtype=np.float16)
    one_ulp = np.nextafter(ref, np.float16(np.inf))
    result = compare_tensor("y", ref, one_ulp, Tolerance.onnx())
    assert result.passed and result.judged_at.startswith("float16 precision")
    assert not compare_tensor("y", ref, (ref.astype(np.float32) * 1.01).astype(np.float16), Tolerance.onnx()).passed
    # a tolerance the user gave is kept as given
    assert Tolerance(atol=1e-6).at_precision(np.float16) == Tolerance(atol=1e-6)


# -- onnxruntime's own log, one-line errors, hostile names ---------------------------------

def test_onnxruntime_prints_nothing_but_our_line(tmp_path):
    """An RNN with layout=1, which onnxruntime refuses to load, in a real process (its logger
    writes to fd 2, which CliRunner does not see)."""
    w = numpy_helper.from_array(np.zeros((1, 4, 3), np.float32), "W")
    r = numpy_helper.from_array(np.zeros((1, 4, 4), np.float32), "R")
    model = _model([helper.make_node("RNN", ["x", "W", "R"], ["", "h"], hidden_size=4, layout=1)],
                   [_vi("x", TensorProto.FLOAT, [2, 5, 3])], [_vi("h", TensorProto.FLOAT, [2, 1, 4])], [w, r])
    path = _save(tmp_path, model)
    proc = cli_subprocess(["apply", path, "-o", tmp_path / "o.onnx", "--passes", "fold_constants,cleanup"], tmp_path)
    stdout, stderr = proc.communicate(timeout=300)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "onnxruntime cannot load it" in lines[0], stderr


def test_an_error_is_one_line_whoever_raised_it():
    from lvvit_opt.core.errors import one_line

    assert one_line("not ready:\n  problem one\n  problem two") == "not ready: problem one; problem two"
    assert "\n" not in one_line("a\r\nb\x1b[31m")


def test_non_utf8_model_path(tmp_path):
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", TensorProto.FLOAT, [2, 3])],
                   [_vi("y", TensorProto.FLOAT, [2, 3])])
    name = b"m\xff\xfe.onnx".decode(sys.getfilesystemencoding(), "surrogateescape")
    path = _save(tmp_path, model, name)
    outcome, out = _apply(tmp_path, path, "fold_constants,cleanup", "--json", tmp_path / "r.json")
    assert outcome.exit_code == 0, outcome.stderr
    json.loads((tmp_path / "r.json").read_text())


@pytest.mark.parametrize("verb", ["apply", "validate"])
def test_inputs_name_over_255_bytes(tmp_path, verb):
    model_path = _save(tmp_path, _model([helper.make_node("Relu", ["x"], ["y"])],
                                        [_vi("x", TensorProto.FLOAT, [2, 3])], [_vi("y", TensorProto.FLOAT, [2, 3])]))
    long_name = "i" * 300 + ".npz"
    args = ["apply", model_path, "-o", tmp_path / "o.onnx"] if verb == "apply" else ["validate", model_path, model_path]
    outcome = invoke([*args, "--inputs", long_name], tmp_path)
    assert_refused(outcome, 2)
    assert "File name too long" in outcome.stderr


# -- lower_attention and target_opset --------------------------------------------------------

def _attention(q_dtype=TensorProto.FLOAT, mask_len=None, qk_output=False, k_head=8) -> onnx.ModelProto:
    inputs = [_vi("Q", q_dtype, [1, 2, 4, 8]), _vi("K", q_dtype, [1, 2, 6, k_head]), _vi("V", q_dtype, [1, 2, 6, 8])]
    node_inputs = ["Q", "K", "V"]
    if mask_len is not None:
        inputs.append(_vi("M", TensorProto.BOOL, [4, mask_len]))
        node_inputs.append("M")
    outputs = [_vi("Y", q_dtype, [1, 2, 4, 8])]
    node_outputs = ["Y"]
    if qk_output:
        node_outputs += ["", "", "QK"]
        outputs.append(_vi("QK", q_dtype, [1, 2, 4, 6]))
    return _model([helper.make_node("Attention", node_inputs, node_outputs)], inputs, outputs, opset=23, ir=10)


def test_lower_attention_keeps_a_node_whose_qk_output_is_a_graph_output(tmp_path):
    path = _save(tmp_path, _attention(qk_output=True))
    outcome, out = _apply(tmp_path, path, "lower_attention")
    assert outcome.exit_code == 0, outcome.stderr
    lowered = onnx.load(out)
    onnx.checker.check_model(lowered, full_check=True)
    assert [n.op_type for n in lowered.graph.node] == ["Attention"]


def test_lower_attention_pads_a_shorter_mask(tmp_path):
    """A mask shorter than the keys is padded with -inf (Attention's definition). onnxruntime's
    own Attention kernel refuses such a mask, so onnx's reference implementation is the judge."""
    from onnx.reference import ReferenceEvaluator

    path = _save(tmp_path, _attention(mask_len=4))  # 6 keys, a mask over the first 4
    outcome, out = _apply(tmp_path, path, "lower_attention,softmax_transpose", "--no-validate")
    assert outcome.exit_code == 0, outcome.stderr
    ops = [n.op_type for n in onnx.load(out).graph.node]
    assert "Attention" not in ops and "Pad" in ops
    rng = np.random.default_rng(4)
    feeds = {name: rng.standard_normal(shape).astype(np.float32)
             for name, shape in (("Q", (1, 2, 4, 8)), ("K", (1, 2, 6, 8)), ("V", (1, 2, 6, 8)))}
    feeds["M"] = np.array([[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 0]], dtype=bool)  # row 1 fully masked
    expected = ReferenceEvaluator(str(path)).run(None, feeds)[0]
    got = _run(out, feeds)[0]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert not np.isnan(got).any() and np.all(got[0, :, 1] == 0)  # the fully masked row: zeros, as defined


def test_lower_attention_on_fp16_is_judged_at_fp16_precision(tmp_path):
    path = _save(tmp_path, _attention(q_dtype=TensorProto.FLOAT16))
    outcome, out = _apply(tmp_path, path, "lower_attention,softmax_transpose")
    assert outcome.exit_code == 0, outcome.stderr
    assert "judged at float16 precision" in outcome.stdout or outcome.stdout == ""


def test_lower_attention_on_an_invalid_attention_blames_the_model(tmp_path):
    path = _save(tmp_path, _attention(k_head=5))  # Q·K^T with head sizes 8 and 5: not a valid graph
    outcome, out = _apply(tmp_path, path, "lower_attention")
    _one_line_error(outcome, 2)
    assert not out.exists()


@pytest.mark.parametrize("axis", [0, 1, -1, None])
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_target_opset_below_13_keeps_what_softmax_computes(tmp_path, op, axis):
    attrs = {} if axis is None else {"axis": axis}
    model = _model([helper.make_node(op, ["x"], ["y"], **attrs)], [_vi("x", TensorProto.FLOAT, [2, 3, 4])],
                   [_vi("y", TensorProto.FLOAT, [2, 3, 4])], opset=13)
    path = _save(tmp_path, model)
    outcome, out = _apply(tmp_path, path, "target_opset", "-O", "target_opset.opset=11", "--no-validate")
    assert outcome.exit_code == 0, outcome.stderr
    assert onnx.load(out).opset_import[0].version == 11
    _assert_same_function(path, out, {"x": np.random.default_rng(5).standard_normal((2, 3, 4)).astype(np.float32)})


def test_target_opset_below_13_refuses_a_softmax_of_unknown_rank(tmp_path):
    model = _model([helper.make_node("Softmax", ["x"], ["y"], axis=1)], [_vi("x", TensorProto.FLOAT, None)],
                   [_vi("y", TensorProto.FLOAT, None)], opset=13)
    outcome, out = _apply(tmp_path, _save(tmp_path, model), "target_opset", "-O", "target_opset.opset=11",
                          "--no-validate")
    line = _one_line_error(outcome, 2)
    assert "unknown rank" in line and not out.exists()


def test_keep_dtype_file_lists_each_node_once():
    from lvvit_opt.ascend.atc import keep_dtype_lines

    assert keep_dtype_lines(["Softmax", "Softmax"], ["a", "b", "a"]) == "a\nb\nOpType::Softmax\n"


# -- onnx's own node test graphs -------------------------------------------------------------

SAMPLE_EVERY = 20  # every 20th of ~1,900 graphs: ~95 graphs, 190 runs, under a minute


def _node_cases(every: int) -> list:
    import warnings

    from onnx.backend.test.case import node as node_cases

    with warnings.catch_warnings():  # the generators divide by zero on purpose (Inf/NaN expectations)
        warnings.simplefilter("ignore")
        return sorted(node_cases.collect_testcases(), key=lambda c: c.name)[::every]


_CASES: dict[str, object] = {}


def _sample_names() -> list[str]:
    if not _CASES:
        _CASES.update((case.name, case) for case in _node_cases(SAMPLE_EVERY))
    return list(_CASES)


def _check_runs(tmp_path, cases) -> None:
    """Each graph through apply with both pass sets: ok, or refused (exit 2) in one line, or
    softmax_transpose refusing to call fused attention wrapped; never a traceback, a false
    "does not compute the same function", an internal failure or a two-line error."""
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    from third_party_matrix import PASS_SETS as SETS, run_one

    bad = []
    (tmp_path / "out").mkdir(exist_ok=True)
    for case in cases:
        path = tmp_path / f"{case.name}.onnx"
        path.write_bytes(case.model.SerializeToString())
        for passes in SETS:
            row = run_one(path, passes, tmp_path / "out")
            attention_left = row["class"] == "internal" and "attention blocks; not wrapped" in row["error"]
            if row["class"] not in ("ok", "refused") and not attention_left or row["multiline"]:
                bad.append(f"{row['class']} {passes} {row['model']}: {row['error'][:200]}")
    assert bad == [], "\n".join(bad)


@pytest.mark.parametrize("name", _sample_names())
def test_onnx_node_graph(tmp_path, name):
    _check_runs(tmp_path, [_CASES[name]])


@pytest.mark.slow
def test_onnx_node_graphs_all(tmp_path):
    """All ~1,900 of onnx's node test graphs (3,800 runs, several minutes on 2 cores)."""
    _check_runs(tmp_path, _node_cases(1))


def test_worst_tensors_list_each_tensor_once():
    """A reference tensor matched twice (its fp32 value and its cast for the next node) is one
    tensor in the "worst tensors" list, shown by its worst comparison."""
    from lvvit_opt.debug.layers import LayerReport, Match, RefTensor, TensorResult
    from lvvit_opt.verify.golden import Tolerance, compare_tensor

    ref = np.linspace(1, 2, 16, dtype=np.float32)
    tensors = [RefTensor(i, f"t{i}", f"n{i}", "MatMul", 0, ()) for i in range(3)]
    results = []
    for tensor, errors in zip(tensors, ((1.0, 1.5), (1.2,), (1.0,))):
        for k, factor in enumerate(errors):
            comparison = compare_tensor(tensor.name, ref, ref * factor, Tolerance.onnx())
            results.append(TensorResult(tensor, Match(tensor.name, f"{tensor.name}_{k}", primary=k == 0), comparison))
    report = LayerReport("r.onnx", "c.onnx", "fp16", Tolerance.onnx(), {}, results)
    worst = report.worst()
    assert sorted(r.tensor.name for r in worst) == ["t0", "t1", "t2"]  # each once (t0 was compared twice)
    assert next(r for r in worst if r.tensor.name == "t0").match.candidate == "t0_1"  # its worse comparison (x1.5)
    assert worst[-1].tensor.name == "t2"  # the passing one last
    assert "worst 3 tensor(s):" in report.format()
