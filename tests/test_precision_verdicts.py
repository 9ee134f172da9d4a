"""Every kind of error fails every comparison, honest fp16 noise passes, and the fp16 preview is a
true fp16 conversion (issue 21). Each case is a small graph built with onnx.helper."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lvvit_opt.cli import main
from lvvit_opt.debug.layers import compare_layers, to_fp16
from lvvit_opt.verify.golden import Tolerance, compare_outputs
from lvvit_opt.debug.precision import read_keep_dtype

FP16_POLICY = ["--atol", "off", "--rtol", "off", "--min-cosine", "0.999", "--max-range-rel", "0.01"]
RNG = np.random.default_rng(0)
WEIGHT = RNG.standard_normal((16, 16)).astype(np.float32) / 4
BIAS = RNG.standard_normal(16).astype(np.float32)


def chain(path, weight=WEIGHT, scale=1.0, bias=BIAS) -> str:
    """x (1, 8, 16) -> proj (MatMul) -> scale (Mul) -> shift (Add) -> out."""
    inits = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.float32(scale).reshape(()), "s"),
             numpy_helper.from_array(bias, "b")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["projected"], name="proj"),
             helper.make_node("Mul", ["projected", "s"], ["scaled"], name="scale"),
             helper.make_node("Add", ["scaled", "b"], ["out"], name="shift")]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, 16])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return str(path)


def nan_bias() -> np.ndarray:
    bias = BIAS.copy()
    bias[3] = np.nan
    return bias


# error kind -> (chain() arguments of the candidate, the first node that goes wrong, the metric that fails
# under the fp16 policy)
ERRORS = {
    "scale x1.5": ({"scale": 1.5}, "scale", "range_rel"),
    "scale x6": ({"scale": 6.0}, "scale", "range_rel"),
    "offset": ({"bias": BIAS + 0.5}, "shift", "range_rel"),
    "sign flip": ({"scale": -1.0}, "scale", "cosine"),
    "nan": ({"bias": nan_bias()}, "shift", "non-finite"),
    "channel permutation": ({"weight": WEIGHT[:, ::-1].copy()}, "proj", "cosine"),
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> str:
    return chain(tmp_path_factory.mktemp("ref") / "ref.onnx")


@pytest.mark.parametrize("kind", list(ERRORS))
def test_every_error_kind_fails_validate_and_debug_layers(kind, reference, cli_runner, tmp_path):
    changes, node, metric = ERRORS[kind]
    candidate = chain(tmp_path / "cand.onnx", **changes)
    for policy in ([], FP16_POLICY):  # the tight default, then the fp16 one
        result = cli_runner.invoke(main, ["validate", reference, candidate, "--inputs", "1", *policy])
        assert result.exit_code == 1, (kind, policy, result.output)
        out_line = next(line for line in result.stdout.splitlines() if line.startswith("out (1, 8, 16)"))
        assert out_line.endswith("-> FAIL")
        assert "would pass with" in result.stdout or "no tolerance passes this" in result.stdout
        assert result.stdout.splitlines()[-1].startswith("FAIL (atol=")
        golden = tmp_path / "golden.npz"
        assert cli_runner.invoke(main, ["golden", "make", reference, "-o", str(golden)]).exit_code == 0
        check = cli_runner.invoke(main, ["golden", "check", candidate, str(golden), *policy])
        assert check.exit_code == 1 and "-> FAIL" in check.stdout, check.output
        golden.unlink()
        report_path = tmp_path / "layers.json"
        layers = cli_runner.invoke(main, ["debug", "layers", reference, candidate, "--json", str(report_path),
                                          *policy])
        assert layers.exit_code == 1, layers.output
        first = json.loads(report_path.read_text())["result"]["first_divergence"]
        assert first["node"] == node
        if policy:
            assert any(f.startswith(metric) for f in first["failures"]), first["failures"]


@pytest.mark.parametrize("kind", list(ERRORS))
def test_every_error_kind_fails_the_fp16_tolerance(kind, reference, tmp_path):
    """compare_outputs is what validate, golden check, debug layers, apply --check-each and run judge by."""
    changes, _, metric = ERRORS[kind]
    candidate = chain(tmp_path / "cand.onnx", **changes)
    x = {"x": RNG.standard_normal((1, 8, 16)).astype(np.float32)}
    ref = ort.InferenceSession(reference).run(None, x)[0]
    cand = ort.InferenceSession(candidate).run(None, x)[0]
    for tolerance in (Tolerance.onnx(), Tolerance.fp16()):
        report = compare_outputs({"out": ref}, {"out": cand}, tolerance)
        assert not report.passed, (kind, report.format())
    failures = compare_outputs({"out": ref}, {"out": cand}, Tolerance.fp16()).outputs[0].failures
    assert any(f.startswith(metric) for f in failures)
    # a NaN or Inf on the reference side fails too
    assert not compare_outputs({"out": cand}, {"out": ref}, Tolerance.fp16()).passed or kind != "nan"


def test_failing_line_names_the_tolerance_that_would_pass(reference, tmp_path):
    candidate = chain(tmp_path / "x6.onnx", scale=6.0)
    x = {"x": RNG.standard_normal((1, 8, 16)).astype(np.float32)}
    ref = ort.InferenceSession(reference).run(None, x)[0]
    cand = ort.InferenceSession(candidate).run(None, x)[0]
    output = compare_outputs({"out": ref}, {"out": cand}, Tolerance.fp16()).outputs[0]
    assert output.cosine < 0.999 or output.failures == [
        f"range_rel {output.range_rel:.3g} > 0.01: would pass with --max-range-rel >= "
        + output.failures[0].rsplit(">= ", 1)[1]]
    hinted = float(output.failures[-1].rsplit(">= ", 1)[1])
    loose = Tolerance(atol=None, rtol=None, min_cosine=None, max_range_rel=hinted)
    assert compare_outputs({"out": ref}, {"out": cand}, loose).passed  # the hint really passes


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "-0.5", "abc"])
def test_tolerance_options_refuse_nan_negative_inf(value, reference, cli_runner):
    for verb in (["validate", reference, reference], ["debug", "layers", reference, reference],
                 ["golden", "check", reference, "g.npz"]):
        for flag in ("--atol", "--rtol", "--min-cosine", "--max-range-rel", "--max-rmse"):
            result = cli_runner.invoke(main, [*verb, flag, value])
            assert result.exit_code == 2 and f"Invalid value for '{flag}'" in result.output, (verb, flag)


def test_apply_check_each_takes_the_tolerance_options(cli_runner, golden_onnx, tmp_path):
    out = tmp_path / "o.onnx"
    result = cli_runner.invoke(main, ["apply", golden_onnx, "-o", str(out), "--check-each", "--max-range-rel", "nan"])
    assert result.exit_code == 2 and not out.exists()
    result = cli_runner.invoke(main, ["apply", golden_onnx, "-o", str(out), "--check-each", "--max-range-rel", "1e-3"])
    assert result.exit_code == 0, result.output
    assert "max_range_rel=0.001" in result.output


# -- the fp16 preview -------------------------------------------------------------------------

def scaled_graph(path, constant: float, follow: float | None = None) -> str:
    """x (1, 4, 8) -> big (Mul by `constant`) [-> restore (Mul by `follow`)] -> out."""
    inits = [numpy_helper.from_array(np.full((1,), constant, np.float32), "c")]
    nodes = [helper.make_node("Mul", ["x", "c"], ["big_out" if follow is not None else "out"], name="big")]
    if follow is not None:
        inits.append(numpy_helper.from_array(np.full((1,), follow, np.float32), "f"))
        nodes.append(helper.make_node("Mul", ["big_out", "f"], ["out"], name="restore"))
    graph = helper.make_graph(nodes, "scaled", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 8])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return str(path)


def test_fp16_overflow_to_inf_is_counted_and_named(cli_runner, tmp_path):
    model = scaled_graph(tmp_path / "overflow.onnx", 60000.0, 1 / 60000.0)
    preview = to_fp16(onnx.load(model))
    constant = next(i for i in preview.graph.initializer if i.name.startswith("c"))
    assert numpy_helper.to_array(constant).dtype == np.float16 and numpy_helper.to_array(constant)[0] == 60000.0
    report_path = tmp_path / "r.json"
    result = cli_runner.invoke(main, ["debug", "layers", model, "--fp16", "--json", str(report_path)])
    assert result.exit_code == 1, result.output
    report = json.loads(report_path.read_text())["result"]
    assert report["first_divergence"]["node"] == "big" and report["first_overflow"]["node"] == "big"
    assert report["first_divergence"]["overflow"] > 0
    assert "overflow fp16 (|x| > 65504) to Inf" in result.output


def test_fp16_underflow_of_a_small_constant_is_counted_and_named(cli_runner, tmp_path):
    model = scaled_graph(tmp_path / "underflow.onnx", 1e-8, 1e3)  # 1e-8 is below fp16's smallest subnormal
    report_path = tmp_path / "r.json"
    result = cli_runner.invoke(main, ["debug", "layers", model, "--precision-mode", "force_fp16",
                                      "--json", str(report_path)])
    assert result.exit_code == 1, result.output
    report = json.loads(report_path.read_text())["result"]
    first = report["first_divergence"]
    assert first["node"] == "big" and first["underflow"] == 32 and report["first_overflow"]["node"] == "big"
    assert any(f.startswith("range_rel 1 > 0.01") for f in first["failures"])
    assert "underflow fp16 to 0" in result.output
    # kept in fp32 by atc's own keep_dtype file format, the same graph agrees
    keep = tmp_path / "keep.cfg"
    keep.write_text("# node names or OpType::X\nbig\nOpType::Mul\n")
    assert read_keep_dtype(str(keep)).node_names == ["big"] and read_keep_dtype(str(keep)).op_types == ["Mul"]
    result = cli_runner.invoke(main, ["debug", "layers", model, "--keep-dtype", str(keep)])
    assert result.exit_code == 0, result.output
    # and under must_keep_origin_dtype everything is fp32
    assert cli_runner.invoke(main, ["debug", "layers", model, "--precision-mode", "must_keep_origin_dtype"]
                             ).exit_code == 0


def hand_made_fp16(path) -> str:
    """The chain graph converted to fp16 by hand: Cast in, fp16 weights (numpy rounding), Cast out."""
    inits = [numpy_helper.from_array(WEIGHT.astype(np.float16), "w"),
             numpy_helper.from_array(np.float16(3.0e4).reshape(()), "s"),
             numpy_helper.from_array(BIAS.astype(np.float16), "b")]
    nodes = [helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16),
             helper.make_node("MatMul", ["x16", "w"], ["projected"]),
             helper.make_node("Mul", ["projected", "s"], ["scaled"]),
             helper.make_node("Add", ["scaled", "b"], ["out16"]),
             helper.make_node("Cast", ["out16"], ["out"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "hand", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, 16])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return str(path)


def test_fp16_preview_equals_a_hand_made_true_fp16_conversion(tmp_path):
    original = onnx.load(chain(tmp_path / "c.onnx", scale=3.0e4))  # 3e4 > the 1e4 onnxconverter-common clamps to
    preview = to_fp16(original)
    originals = {i.name: numpy_helper.to_array(i) for i in original.graph.initializer}
    for init in preview.graph.initializer:  # no constant changed except by rounding
        value = numpy_helper.to_array(init)
        assert value.dtype == np.float16
        np.testing.assert_array_equal(value, originals[init.name.removesuffix("__fp16")].astype(np.float16))
    x = {"x": RNG.standard_normal((1, 8, 16)).astype(np.float32)}
    got = ort.InferenceSession(preview.SerializeToString()).run(None, x)[0]
    expected = ort.InferenceSession(hand_made_fp16(tmp_path / "hand.onnx")).run(None, x)[0]
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.float32


def _export_timm_opset17(path):
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=2).eval()
    torch.onnx.export(model, torch.randn(1, 3, 32, 32), str(path), opset_version=17, input_names=["image"],
                      output_names=["logits"], dynamo=False)


def _export_hf_eager_vit(path):
    import torch
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                       image_size=32, patch_size=16, attn_implementation="eager")
    vit = ViTModel(config).eval()

    class Hidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vit = vit

        def forward(self, x):
            return self.vit(pixel_values=x).last_hidden_state

    torch.onnx.export(Hidden(), torch.randn(1, 3, 32, 32), str(path), opset_version=17, input_names=["image"],
                      output_names=["hidden"], dynamo=False)


@pytest.mark.parametrize("exporter", [_export_timm_opset17, _export_hf_eager_vit], ids=["timm-legacy-17", "hf-eager"])
@pytest.mark.parametrize("mode", ["force_fp16", "allow_fp32_to_fp16"])
def test_fp16_preview_loads_for_other_exporters_and_honest_noise_passes(exporter, mode, tmp_path):
    """Their attention scale is a Cast to float: onnxconverter-common left it typed fp32 in value_info
    and onnxruntime refused the graph."""
    path = tmp_path / "m.onnx"
    exporter(path)
    report = compare_layers(str(path), fp16=True, precision_mode=mode)
    assert report.passed, report.format()
    assert report.precision["precision_mode"] == mode and len(report.results) > 20


def test_precision_mode_needs_no_candidate(cli_runner, reference):
    result = cli_runner.invoke(main, ["debug", "layers", reference, reference, "--precision-mode", "force_fp16"])
    assert result.exit_code == 2 and "no CANDIDATE" in result.output


# -- lvvit_s ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_lvvit_s_fp16_passes_and_a_layernorm_weight_x105_fails_there(lvvit_s_bs1_onnx, tmp_path, cli_runner):
    honest = compare_layers(lvvit_s_bs1_onnx, fp16=True)
    assert honest.passed and honest.first_divergence is None, honest.format()
    # random init has LayerNorm weight 1 and bias 0, which onnxsim folds away: scaling that weight by 1.05
    # is a Mul by 1.05 on the normalised output (the Div), added as the weight node the export dropped
    model = onnx.load(lvvit_s_bs1_onnx)
    div = next(n for n in model.graph.node if n.name == "/blocks.3/norm1/Div")
    scaled = div.output[0] + "_weighted"
    for reader in model.graph.node:
        for k, name in enumerate(reader.input):
            if name == div.output[0]:
                reader.input[k] = scaled
    model.graph.initializer.append(numpy_helper.from_array(np.full((384,), 1.05, np.float32), "ln_weight_x105"))
    node = helper.make_node("Mul", [div.output[0], "ln_weight_x105"], [scaled], name="/blocks.3/norm1/Mul_weight")
    model.graph.node.insert(list(model.graph.node).index(div) + 1, node)
    broken = tmp_path / "ln105.onnx"
    onnx.save(model, str(broken))
    for policy in ([], FP16_POLICY):
        report_path = tmp_path / "r.json"
        result = cli_runner.invoke(main, ["debug", "layers", lvvit_s_bs1_onnx, str(broken), "--json",
                                          str(report_path), *policy])
        assert result.exit_code == 1, result.output
        result_json = json.loads(report_path.read_text())["result"]
        first = result_json["first_divergence"]
        # the scaled LayerNorm output has no name in the reference: its first reader is the first to fail,
        # right after the LayerNorm itself (the Div) agrees
        assert first["node"] == "/blocks.3/attn/qkv/MatMul", first
        assert result_json["last_passing_before"]["node"] == "/blocks.3/norm1/Div"
