"""`lvvit-opt validate` and `golden make|check`: metrics, exit codes, tolerance defaults, golden format."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from lvvit_opt.cli import main
from lvvit_opt.verify.golden import Tolerance, default_tolerance_for, validate_models
from lvvit_opt.verify.inputs import make_inputs
from lvvit_opt.runtime.base import TensorSpec


@pytest.fixture
def perturbed_onnx(golden_onnx, tmp_path):
    """The golden graph with its classifier bias shifted by 1e-3 (small, but above atol 1e-4)."""
    model = onnx.load(golden_onnx)
    bias = next(i for i in model.graph.initializer if list(i.dims) == [1000])
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + np.float32(1e-3), bias.name))
    path = tmp_path / "perturbed.onnx"
    onnx.save(model, str(path))
    return str(path)


def test_identical_models_pass_with_json(cli_runner, golden_onnx):
    result = cli_runner.invoke(main, ["validate", golden_onnx, golden_onnx, "--inputs", "2", "--json", "-"])
    assert result.exit_code == 0, result.output
    envelope = json.loads(result.stdout)
    assert envelope["command"] == "validate" and envelope["ok"] is True and envelope["warnings"] == []
    data = envelope["result"]
    assert data["passed"] is True and data["input_sets"] == 2 and data["inputs"] == {"image": [2, 3, 224, 224]}
    features = data["comparisons"]["candidate vs reference"]["outputs"][0]
    assert features["shape"] == [4, 1000] and features["max_abs"] == 0.0 and features["top1_agreement"] == 1.0


def test_mismatch_exits_1_with_metrics_and_needed_tolerance(cli_runner, golden_onnx, perturbed_onnx):
    result = cli_runner.invoke(main, ["validate", golden_onnx, perturbed_onnx, "--inputs", "1"])
    assert result.exit_code == 1
    assert "FAIL" in result.output and "would pass with atol >=" in result.output
    for metric in ("max_abs=", "max_rel=", "mean_abs=", "cosine=", "top1_agree="):
        assert metric in result.output
    # the same pair passes when the tolerance allows a 1e-3 shift
    loose = cli_runner.invoke(main, ["validate", golden_onnx, perturbed_onnx, "--inputs", "1", "--atol", "2e-3",
                                     "--min-cosine", "0.9999"])
    assert loose.exit_code == 0, loose.output


def test_metrics_locate_the_worst_element(golden_onnx, tmp_path):
    model = onnx.load(golden_onnx)
    bias = next(i for i in model.graph.initializer if list(i.dims) == [1000])
    array = numpy_helper.to_array(bias).copy()
    array[123] += 0.5
    bias.CopyFrom(numpy_helper.from_array(array, bias.name))
    result = validate_models(golden_onnx, model, inputs=1)
    features = result.comparisons["candidate vs reference"].outputs[0]
    assert not result.passed and features.max_abs_index[1] == 123
    assert features.max_abs == pytest.approx(0.5, abs=1e-4) and features.atol_needed == pytest.approx(0.5, rel=0.01)


def test_bad_input_exits_2(cli_runner, golden_onnx, tmp_path):
    missing = cli_runner.invoke(main, ["validate", golden_onnx, str(tmp_path / "nope.onnx")])
    assert missing.exit_code == 2 and "no such file" in missing.output
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    bad_golden = cli_runner.invoke(main, ["validate", golden_onnx, golden_onnx, "--golden", str(junk)])
    assert bad_golden.exit_code == 2 and "not a golden .npz" in bad_golden.output


def test_golden_make_then_check(cli_runner, golden_onnx, perturbed_onnx, tmp_path):
    golden = tmp_path / "g.npz"
    made = cli_runner.invoke(main, ["golden", "make", golden_onnx, "-o", str(golden), "--inputs", "2", "--seed", "3"])
    assert made.exit_code == 0, made.output
    with np.load(golden) as data:
        assert sorted(data.files) == ["features", "image"]
        assert data["image"].shape == (4, 3, 224, 224) and data["features"].shape == (4, 1000)
        expected = np.concatenate([f["image"] for f in make_inputs(
            [TensorSpec("image", (2, 3, 224, 224))], count=2, seed=3)])
        np.testing.assert_array_equal(data["image"], expected)
    assert cli_runner.invoke(main, ["golden", "check", golden_onnx, str(golden)]).exit_code == 0
    bad = cli_runner.invoke(main, ["golden", "check", perturbed_onnx, str(golden)])
    assert bad.exit_code == 1 and "FAIL" in bad.output
    # validate --golden uses the file's inputs and also compares with its stored outputs
    both = cli_runner.invoke(main, ["validate", golden_onnx, perturbed_onnx, "--golden", str(golden), "--json", "-"])
    envelope = json.loads(both.stdout)
    assert envelope["ok"] is False and envelope["command"] == "validate"
    data = envelope["result"]
    assert both.exit_code == 1 and set(data["comparisons"]) == {"candidate vs reference", "candidate vs golden"}


def test_golden_check_against_committed_torch_outputs(cli_runner, golden_onnx, repo_root):
    result = cli_runner.invoke(main, ["golden", "check", golden_onnx, str(repo_root / "golden" / "lvvit_golden.npz")])
    assert result.exit_code == 0, result.output


def test_om_candidates_default_to_fp16_tolerance():
    assert default_tolerance_for("model_bs16.om") == Tolerance.fp16()
    assert default_tolerance_for("model_bs16.onnx") == Tolerance.onnx()
    assert Tolerance.fp16().min_cosine == 0.999 and Tolerance.fp16().atol is None


def test_symbolic_batch_inputs_use_batch_1_or_option():
    spec = TensorSpec("image", (None, 3, 8, 8))
    assert make_inputs([spec])[0]["image"].shape == (1, 3, 8, 8)
    assert make_inputs([spec], batch_size=4)[0]["image"].shape == (4, 3, 8, 8)
    first, second = make_inputs([spec], count=2, seed=7)
    assert not np.array_equal(first["image"], second["image"])
    np.testing.assert_array_equal(make_inputs([spec], count=2, seed=7)[1]["image"], second["image"])


def _custom_op_model(domain_op: bool):
    """y = Relu(x); with domain_op the Relu is 'com.example.Frobnicate', which onnxruntime refuses."""
    import onnx
    from onnx import TensorProto as T, helper

    node = (helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example") if domain_op
            else helper.make_node("Relu", ["x"], ["y"]))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", T.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, 4])])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.example", 1)] if domain_op else [])
    return helper.make_model(graph, opset_imports=opsets)


def test_a_rewrite_onnxruntime_refuses_is_our_failure_exit_1_and_the_users_model_is_exit_2():
    """In-memory graphs get the blame right: our rewrite refused -> internal failure (exit 1),
    naming it; the user's own model refused -> bad input (exit 2), naming its file."""
    from lvvit_opt.core.errors import LvvitOptError, UserError
    from lvvit_opt.verify.golden import validate_models

    good, bad = _custom_op_model(False), _custom_op_model(True)
    with pytest.raises(LvvitOptError) as ours:
        validate_models(good, bad, labels=("m.onnx", "the rewrite of m.onnx (fix_shapes)"), built=("candidate",))
    assert not isinstance(ours.value, UserError) and ours.value.exit_code == 1
    assert str(ours.value).startswith("the rewrite of m.onnx (fix_shapes): onnxruntime cannot load the graph "
                                      "lvvit-opt built, an internal failure, not your model (")
    with pytest.raises(UserError, match=r"^m\.onnx: onnxruntime cannot load it \(") as theirs:
        validate_models(bad, good, labels=("m.onnx", None), built=("candidate",))
    assert theirs.value.exit_code == 2
