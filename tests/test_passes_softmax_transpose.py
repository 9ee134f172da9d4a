"""softmax_transpose on hand-built graphs, the golden LV-ViT, timm DeiT/Swin and (slow) lvvit_s."""
from __future__ import annotations

from collections import Counter

import onnx
import pytest
from onnx import TensorProto, helper

from lvvit_opt.core.errors import UserError
from lvvit_opt.passes import get_pass, inverse_perm, run_pipeline
from pass_check import check_pass

SEED_PERM = [0, 3, 2, 1]


def _attr(node, name):
    return helper.get_attribute_value(next(a for a in node.attribute if a.name == name))


def _wraps(model):
    """(pre perm, softmax axis, post perm) for every Transpose -> Softmax -> Transpose in the graph."""
    producer = {o: n for n in model.graph.node for o in n.output}
    readers = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    found = []
    for node in model.graph.node:
        if node.op_type != "Softmax":
            continue
        pre, post = producer.get(node.input[0]), readers.get(node.output[0], [])
        if pre is not None and pre.op_type == "Transpose" and len(post) == 1 and post[0].op_type == "Transpose":
            found.append((list(_attr(pre, "perm")), _attr(node, "axis"), list(_attr(post[0], "perm"))))
    return found


def _softmax_model(opset=13, axis=-1, shape=(2, 3, 5, 7)):
    """x -> Mul(2) -> Softmax(axis) -> y, plus a rank-3 softmax and a softmax over axis 1 that must be skipped."""
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["scaled"], name="scale"),
        helper.make_node("Softmax", ["scaled"], ["y"], name="attn_softmax", axis=axis),
        helper.make_node("Softmax", ["z"], ["z_out"], name="rank3_softmax", axis=-1),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape)),
              helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 4, 6])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape)),
               helper.make_tensor_value_info("z_out", TensorProto.FLOAT, [2, 4, 6])]
    if opset >= 13:
        nodes.append(helper.make_node("Softmax", ["x"], ["w"], name="axis1_softmax", axis=1))
        outputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, list(shape)))
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph(nodes, "softmaxes", inputs, outputs, [two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def test_seed_defaults_wrap_only_last_axis_rank4_softmax():
    result = check_pass(_softmax_model(), ["softmax_transpose"], ops={"Mul": 1, "Transpose": 2, "Softmax": 3},
                        atol=1e-6)
    report = result.reports[0]
    assert report.matched == 1 and report.details["wrapped"] == ["attn_softmax"]
    assert report.nodes_added == 3 and report.nodes_removed == 1
    assert _wraps(result.model) == [(SEED_PERM, 1, SEED_PERM)]
    assert report.details["transpose_input_shapes"] == [[2, 3, 5, 7], [2, 7, 5, 3]]
    assert any("rank3_softmax" in n for n in report.notes) and any("axis1_softmax" in n for n in report.notes)


def test_idempotent():
    once = check_pass(_softmax_model(), ["softmax_transpose"]).model
    twice = check_pass(once, ["softmax_transpose", "softmax_transpose"], ops=[n.op_type for n in once.graph.node])
    assert [r.matched for r in twice.reports] == [0, 0]
    assert twice.reports[0].details["already_wrapped"] == ["attn_softmax"]


def test_talking_heads_softmax_between_inverse_transposes_is_wrapped():
    """CaiT: permute(0,3,1,2) -> softmax(-1) -> permute(0,2,3,1). The Transposes are inverses, but the
    softmax still runs over the last axis of a rank-4 tensor (197 wide): it is not already wrapped."""
    nodes = [helper.make_node("Transpose", ["x"], ["heads_first"], name="proj_l_out", perm=[0, 3, 1, 2]),
             helper.make_node("Softmax", ["heads_first"], ["attn"], name="talking_softmax", axis=-1),
             helper.make_node("Transpose", ["attn"], ["y"], name="proj_w_in", perm=[0, 2, 3, 1])]
    graph = helper.make_graph(nodes, "talking_heads",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 7, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, 7, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    result = check_pass(model, ["softmax_transpose"], ops=["Transpose"] * 2 + ["Softmax"] + ["Transpose"] * 2,
                        atol=1e-6)
    report = result.reports[0]
    assert report.details["wrapped"] == ["talking_softmax"] and report.details["already_wrapped"] == []
    assert report.details["transpose_input_shapes"] == [[2, 3, 5, 7], [2, 7, 5, 3]]
    again = check_pass(result.model, ["softmax_transpose"], ops=[n.op_type for n in result.model.graph.node])
    assert again.reports[0].details["already_wrapped"] == ["talking_softmax"]


def test_skipped_softmaxes_are_listed_with_their_reason():
    report = check_pass(_softmax_model(), ["softmax_transpose"]).reports[0]
    assert report.details["skipped"] == [{"node": "rank3_softmax", "reason": "input rank 3, not 4"},
                                         {"node": "axis1_softmax", "reason": "softmax over axis 1, not the last"}]


@pytest.mark.parametrize("options, perm, axis, inverse", [
    ({"style": "swin"}, [0, 3, 1, 2], 1, [0, 2, 3, 1]),
    ({"perm": "0,2,3,1"}, [0, 2, 3, 1], 2, [0, 3, 1, 2]),
    ({"perm": [1, 0, 3, 2], "axis": 2}, [1, 0, 3, 2], 2, [1, 0, 3, 2]),
])
def test_other_perms_compute_inverse_and_axis(options, perm, axis, inverse):
    result = check_pass(_softmax_model(), ["softmax_transpose"], {"softmax_transpose": options}, atol=1e-6)
    assert _wraps(result.model) == [(perm, axis, inverse)]
    assert result.reports[0].details["transpose_input_shapes"][1] == [[2, 3, 5, 7][p] for p in perm]


def test_perm_that_keeps_last_axis_is_still_idempotent():
    options = {"softmax_transpose": {"perm": [1, 0, 2, 3]}}
    once = check_pass(_softmax_model(), ["softmax_transpose"], options).model
    again = check_pass(once, ["softmax_transpose"], options, ops=[n.op_type for n in once.graph.node])
    assert again.reports[0].matched == 0


@pytest.mark.parametrize("options, message", [
    ({"perm": [0, 1, 1, 3]}, "permutation"),
    ({"perm": [0, 3, 2, 1], "axis": 2}, "does not match"),
    ({"style": "weird"}, "style"),
    ({"nope": 1}, "no option"),
])
def test_bad_options_are_user_errors(options, message):
    with pytest.raises(UserError, match=message):
        get_pass("softmax_transpose")(**options)


def test_opset11_refused_by_default_and_converted_on_request():
    """Before opset 13, Softmax(axis=1) on 4-D would normalise over three axes: never emit that."""
    model = _softmax_model(opset=11, axis=3)
    with pytest.raises(UserError, match="opset 11"):
        run_pipeline(model, ["softmax_transpose"])
    result = check_pass(model, ["softmax_transpose"], {"softmax_transpose": {"upgrade_opset": "true"}}, atol=1e-6)
    assert result.model.opset_import[0].version == 13
    assert _wraps(result.model) == [(SEED_PERM, 1, SEED_PERM)]


def test_golden_lvvit_matches_golden_output(golden_onnx, golden_io):
    model = onnx.load(golden_onnx)
    ops = Counter(n.op_type for n in model.graph.node)
    result = check_pass(model, ["softmax_transpose"], ops=ops + Counter(Transpose=4), feeds={"image": golden_io["image"]},
                        reference={"features": golden_io["features"]})
    assert _wraps(result.model) == [(SEED_PERM, 1, SEED_PERM)] * 2
    assert result.reports[0].details["transpose_input_shapes"] == [[2, 3, 197, 197], [2, 197, 197, 3]]


def test_wrap_survives_onnxsim_transpose_fusions(golden_onnx, golden_io):
    """onnxsim runs fuse_consecutive_transposes / eliminate_nop_transpose; our wrap must stay."""
    onnxsim = pytest.importorskip("onnxsim")
    wrapped = check_pass(onnx.load(golden_onnx), ["softmax_transpose", "fold_constants", "cleanup"],
                         feeds={"image": golden_io["image"]}).model
    assert len(_wraps(wrapped)) == 2
    simplified, ok = onnxsim.simplify(wrapped)
    assert ok and _wraps(simplified) == [(SEED_PERM, 1, SEED_PERM)] * 2


# --- real architectures from timm, random weights, small sizes ---------------------------------

def _export_timm(tmp_path, name, simplify=False, **kwargs):
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model(name, pretrained=False, num_classes=10, **kwargs).eval()
    for module in net.modules():  # fused SDPA would hide the softmax from the graph
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    size = kwargs.get("img_size", 224)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(net, torch.randn(2, 3, size, size), str(path), input_names=["image"], output_names=["logits"],
                      opset_version=13, dynamo=False)
    if simplify:  # recipe step 2; Swin's raw export computes Reshape targets, hiding the softmax rank
        import onnxsim

        simplified, ok = onnxsim.simplify(onnx.load(str(path)))
        assert ok
        onnx.save(simplified, str(path))
    return str(path)


@pytest.mark.parametrize("name, kwargs, softmaxes, style", [
    ("deit_tiny_patch16_224", {"depth": 2, "img_size": 64}, 2, "seed"),
    ("swin_tiny_patch4_window7_224", {"depths": (2, 2, 2, 2), "embed_dim": 24, "num_heads": (1, 1, 1, 1),
                                      "simplify": True}, 8, "swin"),
])
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_timm_architectures(tmp_path, name, kwargs, softmaxes, style):
    path = _export_timm(tmp_path, name, **kwargs)
    model = onnx.load(path)
    ops = Counter(n.op_type for n in model.graph.node) + Counter(Transpose=2 * softmaxes)
    result = check_pass(model, ["softmax_transpose"], {"softmax_transpose": {"style": style}}, ops=ops, atol=1e-4)
    assert result.reports[0].matched == softmaxes
    perm = [0, 3, 1, 2] if style == "swin" else SEED_PERM
    assert _wraps(result.model) == [(perm, 1, inverse_perm(perm))] * softmaxes


@pytest.mark.slow
def test_lvvit_s_bs16_seed_rewrite(lvvit_s_bs16_onnx):
    model = onnx.load(lvvit_s_bs16_onnx)
    result = check_pass(model, ["softmax_transpose"], atol=1e-4)
    report = result.reports[0]
    assert report.matched == 16
    assert _wraps(result.model) == [(SEED_PERM, 1, SEED_PERM)] * 16
    assert report.details["transpose_input_shapes"] == [[16, 6, 197, 197], [16, 197, 197, 6]]


def test_inverse_perm():
    assert inverse_perm([0, 3, 1, 2]) == [0, 2, 3, 1]
    assert inverse_perm(SEED_PERM) == SEED_PERM
