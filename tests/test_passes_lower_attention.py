"""lower_attention and the never-silent rule: fused attention is lowered (equal on onnxruntime)
or `apply` with softmax_transpose exits 1 naming the nodes it could not wrap."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T, helper, numpy_helper

from pass_check import check_pass
from lvvit_opt.passes import AttentionNotWrapped, apply_file, run_pipeline


def _attention_4d(mask: str | None = None, scale: float | None = None) -> onnx.ModelProto:
    """x (B,4,6,8) -> q = x*wq, k = x*wk, v = x -> Attention (opset 23)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), n) for n in ("wq", "wk")]
    nodes = [helper.make_node("MatMul", ["x", "wq"], ["q"]), helper.make_node("MatMul", ["x", "wk"], ["k"])]
    inputs = ["q", "k", "x"]
    if mask == "float":
        inits.append(numpy_helper.from_array(rng.standard_normal((6, 6)).astype(np.float32), "mask"))
        inputs.append("mask")
    elif mask == "bool":
        keep = rng.random((6, 6)) > 0.3
        keep[:, 0] = True  # every row attends somewhere
        inits.append(numpy_helper.from_array(keep, "mask"))
        inputs.append("mask")
    attrs = {"scale": scale} if scale is not None else {}
    nodes.append(helper.make_node("Attention", inputs, ["y"], name="attn", **attrs))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, ["batch", 4, 6, 8])],
                              [helper.make_tensor_value_info("y", T.FLOAT, ["batch", 4, 6, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])


def _attention_3d() -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Attention", ["x", "x", "x"], ["y"], name="attn3",
                                                q_num_heads=2, kv_num_heads=2)], "g",
                              [helper.make_tensor_value_info("x", T.FLOAT, [2, 5, 8])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [2, 5, 8])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])


@pytest.mark.parametrize("mask,scale", [(None, None), ("float", None), ("bool", 0.5)])
def test_lower_attention_4d_equals_onnxruntime_attention(mask, scale):
    result = check_pass(_attention_4d(mask, scale), ["lower_attention", "softmax_transpose"], atol=1e-5)
    lowered, wrapped = result.reports
    assert lowered.details["lowered"] == ["attn"] and lowered.matched == 1
    assert wrapped.matched == 1 and wrapped.details["attention_not_wrapped"] == []
    assert "Attention" not in {n.op_type for n in result.model.graph.node}


def test_lower_attention_3d_heads_equals_onnxruntime():
    result = check_pass(_attention_3d(), ["lower_attention", "softmax_transpose"], atol=1e-5)
    assert result.reports[0].matched == 1 and result.reports[1].matched == 1


def test_lower_attention_leaves_causal_and_says_why():
    model = _attention_4d()
    model.graph.node[-1].attribute.append(helper.make_attribute("is_causal", 1))
    report = run_pipeline(model, ["lower_attention"]).reports[0]
    assert report.matched == 0 and "is_causal" in report.details["left"][0]["reason"]


def test_apply_refuses_unlowered_attention_exit_1(tmp_path):
    src, out = tmp_path / "a.onnx", tmp_path / "o.onnx"
    onnx.save(_attention_4d(), src)
    with pytest.raises(AttentionNotWrapped) as info:
        apply_file(src, out, ["softmax_transpose"], batch_size=2)
    assert info.value.exit_code == 1
    assert "matched 0 of 1 attention blocks" in str(info.value) and "attn (Attention)" in str(info.value)
    assert not out.exists()


def test_apply_refuses_contrib_attention(tmp_path):
    """com.microsoft MultiHeadAttention (optimum fusions): not lowered, named, exit 1."""
    graph = helper.make_graph([helper.make_node("MultiHeadAttention", ["q", "q", "q"], ["y"], name="mha",
                                                domain="com.microsoft", num_heads=2)], "g",
                              [helper.make_tensor_value_info("q", T.FLOAT, [1, 5, 8])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, 5, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    src = tmp_path / "mha.onnx"
    onnx.save(model, src)
    with pytest.raises(AttentionNotWrapped, match=r"matched 0 of 1 .*mha \(com.microsoft.MultiHeadAttention\)"):
        apply_file(src, tmp_path / "o.onnx", ["lower_attention", "softmax_transpose"], validate=False)


def test_cli_apply_unlowered_attention_exit_1(tmp_path):
    from click.testing import CliRunner

    from lvvit_opt.cli import main

    src = tmp_path / "a.onnx"
    onnx.save(_attention_4d(), src)
    result = CliRunner().invoke(main, ["apply", str(src), "-o", str(tmp_path / "o.onnx"), "--batch-size", "2"])
    assert result.exit_code == 1, result.output
    assert "matched 0 of 1 attention blocks" in result.output
