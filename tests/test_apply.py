"""`lvvit-opt apply`: output, report, validation gate, --check-each, errors, atomic/large writes."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from lvvit_opt.cli import main
from lvvit_opt.runtime.ort import OrtRunner
from lvvit_opt.passes import GraphPass, apply_file, registered


class CorruptWeight(GraphPass):
    """Test-only: add noise to the largest float weight (breaks equivalence on purpose)."""

    name = "corrupt_weight"

    @dataclass
    class Options:
        pass

    def rewrite(self, model, report):
        inits = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
        target = max(inits, key=lambda t: np.prod(t.dims))
        array = numpy_helper.to_array(target)
        array = array + np.random.default_rng(0).standard_normal(array.shape).astype(np.float32)
        target.CopyFrom(numpy_helper.from_array(array, target.name))
        report.matched = 1


@pytest.fixture
def corrupt_pass():
    with registered(CorruptWeight):
        yield CorruptWeight.name


def test_apply_writes_validated_model_table_and_report(cli_runner, golden_onnx, golden_io, tmp_path):
    out, report = tmp_path / "opt.onnx", tmp_path / "report.json"
    result = cli_runner.invoke(main, ["apply", golden_onnx, "-o", str(out), "--passes", "softmax_transpose,cleanup",
                                      "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert re.search(r"^Transpose\s+7\s+11\s+\*$", result.output, re.M)
    assert re.search(r"^Softmax\s+2\s+2$", result.output, re.M)
    assert "softmax_transpose: matched 2, +6 -2 nodes" in result.output
    assert re.search(r"^2,3,197,197\s+0,3,2,1\s+2\s+added by softmax_transpose$", result.output, re.M)
    assert re.search(r"^2,197,197,3\s+0,3,2,1\s+2\s+added by softmax_transpose$", result.output, re.M)
    assert "PASS" in result.output
    data = json.loads(report.read_text())
    assert data["written"] is True and data["validation"]["passed"] is True
    assert [p["name"] for p in data["passes"]] == ["softmax_transpose", "cleanup"]
    assert data["op_counts"]["before"]["Transpose"] == 7 and data["op_counts"]["after"]["Transpose"] == 11
    assert data["transpose_input_shapes"] == [[2, 3, 197, 197], [2, 197, 197, 3]]
    assert [t["shape"] for t in data["transposes"] if t["created"]] == data["transpose_input_shapes"]
    assert sum(t["count"] for t in data["transposes"]) == 11
    features = OrtRunner.from_model(onnx.load(str(out))).infer({"image": golden_io["image"]})["features"]
    np.testing.assert_allclose(features, golden_io["features"], atol=1e-5, rtol=0)


def test_validation_failure_writes_nothing_and_exits_1(cli_runner, golden_onnx, tmp_path, corrupt_pass):
    out, report = tmp_path / "bad.onnx", tmp_path / "report.json"
    result = cli_runner.invoke(main, ["apply", golden_onnx, "-o", str(out), "--passes", f"softmax_transpose,{corrupt_pass}",
                                      "--report", str(report)])
    assert result.exit_code == 1
    assert not out.exists() and not list(tmp_path.glob(".bad.onnx*"))
    assert "would pass with atol >=" in result.output and "FAIL" in result.output
    assert "nothing written" in result.output
    assert json.loads(report.read_text())["written"] is False


def test_no_validate_writes_even_a_broken_rewrite(cli_runner, golden_onnx, tmp_path, corrupt_pass):
    out = tmp_path / "unchecked.onnx"
    result = cli_runner.invoke(main, ["apply", golden_onnx, "-o", str(out), "--passes", corrupt_pass, "--no-validate"])
    assert result.exit_code == 0 and out.exists()
    assert "NOT validated" in result.output


def test_check_each_names_the_broken_pass(cli_runner, golden_onnx, tmp_path, corrupt_pass):
    out = tmp_path / "x.onnx"
    result = cli_runner.invoke(main, ["apply", golden_onnx, "-o", str(out), "--check-each",
                                      "--passes", f"softmax_transpose,fold_constants,{corrupt_pass},cleanup"])
    assert result.exit_code == 1
    assert f"pass '{corrupt_pass}' broke equivalence" in result.output
    assert "passes before it, which kept it: softmax_transpose, fold_constants" in result.output
    assert not out.exists()


def test_check_each_records_a_check_per_pass(golden_onnx, tmp_path):
    result = apply_file(golden_onnx, tmp_path / "o.onnx", "softmax_transpose,cleanup", check_each=True, validate=False)
    assert set(result.checks) == {"softmax_transpose", "cleanup"}
    assert all(check["passed"] for check in result.checks.values())


def test_unknown_pass_lists_valid_ones(cli_runner, golden_onnx, tmp_path):
    result = cli_runner.invoke(main, ["apply", golden_onnx, "-o", str(tmp_path / "o.onnx"), "--passes", "softmax,cleanup"])
    assert result.exit_code == 2
    assert "unknown pass 'softmax'; valid passes: softmax_transpose, fold_constants, fix_shapes, cleanup, lower_attention, target_opset" in result.output
    assert "Traceback" not in result.output


def test_bad_inputs_are_one_line_errors(cli_runner, golden_onnx, tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf")
    cases = [
        (["apply", str(junk), "-o", str(tmp_path / "o.onnx")], "not a readable ONNX model"),
        (["apply", golden_onnx, "-o", golden_onnx], "is the input MODEL"),
        (["apply", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "o.onnx")], "no such file"),
        (["apply", golden_onnx, "-o", str(tmp_path / "o.onnx"), "-O", "softmax_transpose.perm=0,1,2"], "permutation"),
        (["apply", golden_onnx, "-o", str(tmp_path / "o.onnx"), "-O", "fold_constants.fold_shapes=false"], "not in --passes"),
    ]
    for args, message in cases:
        result = cli_runner.invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], result.output
    assert not (tmp_path / "o.onnx").exists()


def test_pass_options_reach_the_pass(cli_runner, golden_onnx, tmp_path):
    out = tmp_path / "swin_style.onnx"
    result = cli_runner.invoke(main, ["apply", golden_onnx, "-o", str(out), "-O", "softmax_transpose.style=swin", "-q"])
    assert result.exit_code == 0, result.output
    perms = [list(n.attribute[0].ints) for n in onnx.load(str(out)).graph.node if n.name.endswith("_transpose")]
    assert perms == [[0, 3, 1, 2], [0, 2, 3, 1]] * 2


def test_large_models_use_external_data(monkeypatch, golden_onnx, golden_io, tmp_path):
    """Models over the protobuf limit are saved (and validated) with external data; the limit is
    lowered here so the small golden graph takes that path."""
    import lvvit_opt.core.onnx_proto as onnx_proto

    monkeypatch.setattr(onnx_proto, "ONNX_PROTO_LIMIT", 1024)
    out = tmp_path / "big.onnx"
    apply_file(golden_onnx, out, ["softmax_transpose"])
    assert (tmp_path / "big.onnx.data").exists()
    assert out.stat().st_size < (tmp_path / "big.onnx.data").stat().st_size
    features = OrtRunner.from_model(onnx.load(str(out))).infer({"image": golden_io["image"]})["features"]
    np.testing.assert_allclose(features, golden_io["features"], atol=1e-5, rtol=0)


def test_passes_verb_lists_each_pass(cli_runner):
    result = cli_runner.invoke(main, ["passes"])
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert lines[:4] == ["presets:", "ascend310          = fix_shapes,softmax_transpose,cleanup (the default of apply "
                         "and run)", lines[2], "passes:"]
    assert [line.split()[0] for line in lines[4:]] == ["softmax_transpose", "fold_constants", "fix_shapes", "cleanup",
                                                         "lower_attention", "target_opset", "to_fp16"]


def test_apply_verb_does_not_import_torch(golden_onnx, tmp_path):
    """apply must start fast: neither torch nor timm (nor onnxsim) on its import path."""
    import subprocess
    import sys

    code = ("import sys; from lvvit_opt.cli import main; "
            f"sys.argv=['lvvit-opt','apply',{golden_onnx!r},'-o',{str(tmp_path / 'o.onnx')!r},'--no-validate','-q']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch','timm','onnxsim') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
