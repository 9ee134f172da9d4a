"""Issue 32, graph walkers: attention, a Softmax or a contrib op inside an If branch, a Loop
body (nested to any depth) or a model-local function is rewritten there (equal on
onnxruntime before and after, the op lists of every graph checked) or refused naming the
node; the readiness check flags an op in a branch. Never "ok, 0 attention blocks"."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T, helper, numpy_helper

from hostile_helpers import assert_refused, invoke
from lvvit_opt.core.graph_walk import walk_graphs, walk_nodes
from lvvit_opt.passes import AttentionNotWrapped, apply_file, run_pipeline
from lvvit_opt.runtime.ort import OrtRunner

SHAPE = [2, 4, 6, 6]


def _value(name, shape=SHAPE, elem=T.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _scaled_softmax_body(name: str, source: str, out: str, tag: str) -> onnx.GraphProto:
    """A branch computing Softmax(source * 2) over the last axis, its output `out`."""
    two = numpy_helper.from_array(np.array(2.0, np.float32), f"{tag}_two")
    nodes = [helper.make_node("Mul", [source, f"{tag}_two"], [f"{tag}_scaled"], name=f"{tag}_mul"),
             helper.make_node("Softmax", [f"{tag}_scaled"], [out], name=f"{tag}_softmax", axis=-1)]
    return helper.make_graph(nodes, name, [], [_value(out)], [two])


def _relu_body(name: str, source: str, out: str, tag: str) -> onnx.GraphProto:
    return helper.make_graph([helper.make_node("Relu", [source], [out], name=f"{tag}_relu")], name, [], [_value(out)])


def softmax_in_if() -> onnx.ModelProto:
    """y = If(flag, Softmax(2x), Relu(x)): the softmax lives in the then branch only."""
    node = helper.make_node("If", ["flag"], ["y"], name="choose",
                            then_branch=_scaled_softmax_body("then", "x", "then_y", "t"),
                            else_branch=_relu_body("else", "x", "else_y", "e"))
    graph = helper.make_graph([node], "g", [_value("x"), _value("flag", [], T.BOOL)], [_value("y")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _loop_body(inner: onnx.NodeProto | None = None) -> onnx.GraphProto:
    """Loop body: v_out = Softmax(v_in) (or `inner`, an If holding it, for nesting)."""
    nodes = [helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep_going")]
    nodes.append(inner or helper.make_node("Softmax", ["v_in"], ["v_out"], name="loop_softmax", axis=-1))
    return helper.make_graph(nodes, "body", [_value("i", [], T.INT64), _value("cond_in", [], T.BOOL), _value("v_in")],
                             [_value("cond_out", [], T.BOOL), _value("v_out")])


def softmax_in_loop(nested: bool = False) -> onnx.ModelProto:
    """Two iterations of v = Softmax(v); `nested`: the softmax sits in an If inside the Loop body."""
    inner = None
    if nested:
        inner = helper.make_node("If", ["flag"], ["v_out"], name="inner_choose",
                                 then_branch=_scaled_softmax_body("inner_then", "v_in", "inner_then_y", "it"),
                                 else_branch=_relu_body("inner_else", "v_in", "inner_else_y", "ie"))
    trips = numpy_helper.from_array(np.array(2, np.int64), "trips")
    go = numpy_helper.from_array(np.array(True), "go")
    node = helper.make_node("Loop", ["trips", "go", "x"], ["y"], name="repeat", body=_loop_body(inner))
    inputs = [_value("x")] + ([_value("flag", [], T.BOOL)] if nested else [])
    graph = helper.make_graph([node], "g", inputs, [_value("y")], [trips, go])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def attention_in_if() -> onnx.ModelProto:
    """ONNX Attention (opset 23) in the then branch, Identity in the else branch."""
    rng = np.random.default_rng(0)
    wq = numpy_helper.from_array(rng.standard_normal((6, 6)).astype(np.float32), "wq")
    then = helper.make_graph([helper.make_node("MatMul", ["x", "wq"], ["q"], name="proj_q"),
                              helper.make_node("Attention", ["q", "x", "x"], ["then_y"], name="branch_attn")],
                             "then", [], [_value("then_y")], [wq])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["else_y"], name="pass_through")], "else", [],
                              [_value("else_y")])
    node = helper.make_node("If", ["flag"], ["y"], name="choose", then_branch=then, else_branch=other)
    graph = helper.make_graph([node], "g", [_value("x"), _value("flag", [], T.BOOL)], [_value("y")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])


def contrib_attention_in_if() -> onnx.ModelProto:
    """com.microsoft MultiHeadAttention in a branch (optimum's fusions): cannot be lowered."""
    then = helper.make_graph([helper.make_node("MultiHeadAttention", ["q", "q", "q"], ["then_y"], name="branch_mha",
                                               domain="com.microsoft", num_heads=2)], "then", [],
                             [_value("then_y", [1, 5, 8])])
    other = helper.make_graph([helper.make_node("Identity", ["q"], ["else_y"], name="pass_through")], "else", [],
                              [_value("else_y", [1, 5, 8])])
    node = helper.make_node("If", ["flag"], ["y"], name="choose", then_branch=then, else_branch=other)
    graph = helper.make_graph([node], "g", [_value("q", [1, 5, 8]), _value("flag", [1], T.BOOL)],
                              [_value("y", [1, 5, 8])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


def softmax_in_function() -> onnx.ModelProto:
    """y = local.ScaledSoftmax(x): the Softmax is in a model-local function's body."""
    function = helper.make_function(
        "local", "ScaledSoftmax", ["a"], ["b"],
        [helper.make_node("Softmax", ["a"], ["b"], name="fn_softmax", axis=-1)],
        [helper.make_opsetid("", 17)])
    graph = helper.make_graph([helper.make_node("ScaledSoftmax", ["x"], ["y"], name="call", domain="local")], "g",
                              [_value("x")], [_value("y")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
                             functions=[function])


def ops_by_graph(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Graph label -> its op types in node order, over every graph the walker visits."""
    return {scope.where: [n.op_type for n in scope.nodes] for scope in walk_graphs(model)}


def outputs(model: onnx.ModelProto, feeds: dict) -> dict:
    with OrtRunner.from_model(model) as runner:
        return runner.infer({spec.name: feeds[spec.name] for spec in runner.inputs})


def assert_same_on_ort(before: onnx.ModelProto, after: onnx.ModelProto, flags=(True, False), atol=1e-5) -> None:
    x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    for flag in flags:
        feeds = {"x": x, "flag": np.array(flag)}
        expected, got = outputs(before, feeds), outputs(after, feeds)
        for name in expected:
            np.testing.assert_allclose(got[name], expected[name], atol=atol, rtol=0, err_msg=f"{name}, flag={flag}")


# -- the walker itself ---------------------------------------------------------------------------

def test_walker_visits_every_depth_and_functions():
    nested = softmax_in_loop(nested=True)
    wheres = [scope.where for scope in walk_graphs(nested)]
    assert wheres == ["main graph", "Loop node 'repeat' attribute body",
                      "If node 'inner_choose' attribute else_branch (in Loop node 'repeat' attribute body)",
                      "If node 'inner_choose' attribute then_branch (in Loop node 'repeat' attribute body)"]
    assert [node.name for node, _ in walk_nodes(softmax_in_function())] == ["call", "fn_softmax"]


# -- passes rewrite inside subgraphs -------------------------------------------------------------

def test_softmax_transpose_wraps_the_softmax_in_an_if_branch():
    model = softmax_in_if()
    result = run_pipeline(model, ["softmax_transpose"])
    report = result.reports[0]
    assert report.matched == 1 and report.details["attention_blocks"] == 1
    assert report.details["wrapped"] == ["t_softmax in If node 'choose' attribute then_branch"]
    assert report.details["transpose_input_shapes"] == [SHAPE, [2, 6, 6, 4]]
    assert ops_by_graph(result.model) == {"main graph": ["If"],
                                          "If node 'choose' attribute else_branch": ["Relu"],
                                          "If node 'choose' attribute then_branch": ["Mul", "Transpose", "Softmax",
                                                                                     "Transpose"]}
    assert report.nodes_added == 3 and report.nodes_removed == 1  # counted in the branch
    assert_same_on_ort(model, result.model)


@pytest.mark.parametrize("nested", [False, True], ids=["loop-body", "if-in-loop-body"])
def test_softmax_transpose_wraps_the_softmax_in_a_loop_body(nested):
    model = softmax_in_loop(nested)
    result = run_pipeline(model, ["softmax_transpose"])
    assert result.reports[0].matched == 1 and result.reports[0].details["attention_not_wrapped"] == []
    counts = Counter(node.op_type for node, _ in walk_nodes(result.model))
    assert counts["Transpose"] == 2 and counts["Softmax"] == 1
    where = "If node 'inner_choose' attribute then_branch (in Loop node 'repeat' attribute body)" if nested \
        else "Loop node 'repeat' attribute body"
    assert ops_by_graph(result.model)[where][-3:] == ["Transpose", "Softmax", "Transpose"]
    assert_same_on_ort(model, result.model, flags=(True, False) if nested else (True,))


def test_lower_attention_then_softmax_transpose_inside_an_if_branch():
    model = attention_in_if()
    result = run_pipeline(model, ["lower_attention", "softmax_transpose"])
    lowered, wrapped = result.reports
    assert lowered.details["lowered"] == ["branch_attn in If node 'choose' attribute then_branch"]
    assert wrapped.matched == 1 and wrapped.details["attention_not_wrapped"] == []
    ops = Counter(node.op_type for node, _ in walk_nodes(result.model))
    assert "Attention" not in ops and ops["Softmax"] == 1
    assert_same_on_ort(model, result.model)


def test_apply_refuses_contrib_attention_in_a_branch_naming_it(tmp_path):
    src, out = tmp_path / "mha.onnx", tmp_path / "o.onnx"
    onnx.save(contrib_attention_in_if(), src)
    with pytest.raises(AttentionNotWrapped, match=r"matched 0 of 1 .*branch_mha \(com.microsoft.MultiHeadAttention\) "
                                                  r"in If node 'choose'"):
        apply_file(src, out, ["lower_attention", "softmax_transpose"], validate=False)
    assert not out.exists()


@pytest.mark.parametrize("build,name", [(contrib_attention_in_if, "branch_mha"), (softmax_in_function, "fn_softmax")],
                         ids=["contrib-in-branch", "softmax-in-function"])
def test_cli_apply_refuses_hidden_attention_in_one_line(tmp_path, build, name):
    src = tmp_path / "m.onnx"
    onnx.save(build(), src)
    outcome = invoke(["apply", src, "-o", tmp_path / "o.onnx", "--passes", "softmax_transpose", "--no-validate"],
                     tmp_path)
    assert_refused(outcome, code=1, match="matched 0 of 1 attention blocks")
    assert name in outcome.stderr
    assert not (tmp_path / "o.onnx").exists()


# -- readiness ----------------------------------------------------------------------------------

def test_readiness_flags_a_contrib_op_in_a_branch(tmp_path):
    from lvvit_opt.ascend.readiness import check_readiness

    src = tmp_path / "mha.onnx"
    onnx.save(contrib_attention_in_if(), src)
    report = check_readiness(src)
    assert report.unsupported == {"com.microsoft.MultiHeadAttention":
                                  ["branch_mha in If node 'choose' attribute then_branch"]}
    assert not report.ok


def test_readiness_checks_function_bodies_not_the_call(tmp_path):
    from lvvit_opt.ascend.readiness import check_readiness

    model = softmax_in_function()
    model.functions[0].node.append(helper.make_node("FastGelu", ["b"], ["c"], name="fn_gelu", domain="com.microsoft"))
    model.functions[0].output[0] = "c"
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    model.functions[0].opset_import.append(helper.make_opsetid("com.microsoft", 1))
    src = tmp_path / "fn.onnx"
    onnx.save(model, src)
    report = check_readiness(src)
    assert report.unsupported == {"com.microsoft.FastGelu": ["fn_gelu in function local.ScaledSoftmax"]}


def test_cli_atc_dry_run_refuses_a_contrib_op_in_a_branch_in_one_line(tmp_path):
    src = tmp_path / "mha.onnx"
    onnx.save(contrib_attention_in_if(), src)
    outcome = invoke(["atc", src, "--soc-version", "Ascend310P3", "--dry-run"], tmp_path)
    assert_refused(outcome, code=2, match="com.microsoft.MultiHeadAttention")
    assert "in If node 'choose'" in outcome.stderr


# -- whitelist shapes: Transposes in a branch --------------------------------------------------

def test_whitelist_transpose_shapes_inside_a_loop_body():
    from lvvit_opt.whitelist.graph import transpose_shapes

    wrapped = run_pipeline(softmax_in_loop(nested=True), ["softmax_transpose"]).model
    uses = transpose_shapes(wrapped)
    assert [(u.shape, u.perm) for u in uses] == [(tuple(SHAPE), (0, 3, 2, 1)), ((2, 6, 6, 4), (0, 3, 2, 1))]


def gelu_in_if() -> onnx.ModelProto:
    """Gelu (opset 20) in the then branch: target_opset below 20 must lower it there."""
    then = helper.make_graph([helper.make_node("Gelu", ["x"], ["then_y"], name="branch_gelu")], "then", [],
                             [_value("then_y")])
    node = helper.make_node("If", ["flag"], ["y"], name="choose", then_branch=then,
                            else_branch=_relu_body("else", "x", "else_y", "e"))
    graph = helper.make_graph([node], "g", [_value("x"), _value("flag", [], T.BOOL)], [_value("y")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def test_target_opset_lowers_gelu_inside_a_branch():
    model = gelu_in_if()
    result = run_pipeline(model, ["target_opset"], {"target_opset": {"opset": 17}})
    assert result.reports[0].details["gelu_lowered"] == ["branch_gelu in If node 'choose' attribute then_branch"]
    assert "Gelu" not in {node.op_type for node, _ in walk_nodes(result.model)}
    assert_same_on_ort(model, result.model)


def test_random_ops_found_in_a_loop_body():
    from lvvit_opt.verify.random_ops import random_nodes

    model = softmax_in_loop()
    body = model.graph.node[0].attribute[0].g
    body.node.append(helper.make_node("RandomNormalLike", ["v_in"], ["noise"], name="noise"))
    assert random_nodes(model) == ["noise (RandomNormalLike)"]


def test_target_opset_below_13_refuses_a_branch_or_function_softmax_in_one_line():
    """Below opset 13 Softmax means something else: one in a branch (onnx has no If adapter
    below 13) or in a local function (no shapes there) is refused, named, never converted."""
    from lvvit_opt.core.errors import UserError

    branch = softmax_in_if()
    branch.opset_import[0].version = 13
    with pytest.raises(UserError, match="cannot convert opset 13 to 12") as info:
        run_pipeline(branch, ["target_opset"], {"target_opset": {"opset": 12}})
    assert "\n" not in str(info.value)
    function = softmax_in_function()
    function.opset_import[0].version = function.functions[0].opset_import[0].version = 13
    with pytest.raises(UserError, match=r"fn_softmax \(Softmax\) in function local.ScaledSoftmax normalises") as info:
        run_pipeline(function, ["target_opset"], {"target_opset": {"opset": 12}})
    assert "\n" not in str(info.value)
