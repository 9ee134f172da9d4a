"""One test per user-facing defect of issue 14 (CLI part)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from lvvit_opt.checkpoint import save_checkpoint
from lvvit_opt.cli import main
from lvvit_opt.model import create_model


def _envelope(result) -> dict:
    data = json.loads(result.stdout)
    assert set(data) == {"command", "version", "ok", "result", "warnings"}
    return data


def test_non_strict_export_names_the_random_tensors(tmp_path, cli_runner):
    source = create_model("lvvit_golden", seed=3)
    state = source.state_dict()
    state.pop("head.bias")
    state["aux_head.weight"] = torch.zeros(2, 2)  # wrong shape: not loaded either
    ckpt = tmp_path / "partial.pth"
    torch.save({"state_dict": state}, ckpt)
    result = cli_runner.invoke(main, ["export", "--model", "lvvit_golden", "--checkpoint", str(ckpt),
                                      "--non-strict", "-o", str(tmp_path / "m.onnx"), "--json", "-"])
    assert result.exit_code == 0, result.output
    data = _envelope(result)
    assert data["result"]["random_tensors"] == ["head.bias", "aux_head.weight"]
    assert data["result"]["random_weights"] is False
    banner = [w for w in data["warnings"] if "partly RANDOM" in w]
    assert len(banner) == 1 and banner[0].endswith("(seed 0): head.bias, aux_head.weight")
    assert "warning: the exported model is partly RANDOM" in result.stderr


def test_strict_export_has_no_random_banner(tmp_path, cli_runner):
    ckpt = tmp_path / "w.pth"
    save_checkpoint(create_model("lvvit_golden", seed=3), ckpt)
    result = cli_runner.invoke(main, ["export", "--model", "lvvit_golden", "--checkpoint", str(ckpt),
                                      "-o", str(tmp_path / "m.onnx"), "--json", "-"])
    data = _envelope(result)
    assert data["warnings"] == [] and data["result"]["random_tensors"] == []
    assert "RANDOM" not in result.stderr


def test_dynamic_batch_with_batch_size_traces_and_verifies_at_that_batch(tmp_path, cli_runner):
    out = tmp_path / "dyn.onnx"
    result = cli_runner.invoke(main, ["export", "--model", "lvvit_golden", "--dynamic-batch", "--batch-size", "3",
                                      "-o", str(out), "--json", str(tmp_path / "e.json")])
    assert result.exit_code == 0, result.output
    assert "batch dynamic, traced and verified at batch 3" in result.stderr
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["result"]["batch_size"] is None
    assert "dynamic batch; traced and verified at batch 3" in data["result"]["notes"]
    assert data["warnings"][0].startswith("no --checkpoint given: weights are a deterministic RANDOM init")
    dim = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "batch"


def test_validate_with_a_golden_file_as_candidate_says_what_to_do(cli_runner, golden_onnx, repo_root):
    golden = str(repo_root / "golden" / "lvvit_golden.npz")
    result = cli_runner.invoke(main, ["validate", golden_onnx, golden])
    assert result.exit_code == 2
    assert "not a model file (expected .onnx or .om)" in result.stderr
    assert "lvvit-opt golden check MODEL GOLDEN.npz" in result.stderr
    assert "ais_bench" not in result.output and "Traceback" not in result.output


def _verdict_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.split(" ")[0] in ("PASS", "FAIL", "overall:")]


def test_validate_prints_its_verdict_once(cli_runner, golden_onnx):
    result = cli_runner.invoke(main, ["validate", golden_onnx, golden_onnx, "--inputs", "1"])
    assert result.exit_code == 0
    assert _verdict_lines(result.stdout) == ["PASS (atol=0.0001, rtol=0.001, min_cosine=0.99999)"]


def test_validate_with_golden_prints_each_verdict_and_one_overall(cli_runner, golden_onnx, tmp_path):
    golden = tmp_path / "g.npz"
    assert cli_runner.invoke(main, ["golden", "make", golden_onnx, "-o", str(golden)]).exit_code == 0
    result = cli_runner.invoke(main, ["validate", golden_onnx, golden_onnx, "--golden", str(golden)])
    assert _verdict_lines(result.stdout) == ["PASS (atol=0.0001, rtol=0.001, min_cosine=0.99999)"] * 2 + [
        "overall: PASS"]


def test_apply_prints_pass_once(cli_runner, golden_onnx, tmp_path):
    result = cli_runner.invoke(main, ["apply", golden_onnx, "-o", str(tmp_path / "o.onnx")])
    assert result.exit_code == 0, result.output
    assert _verdict_lines(result.stdout) == ["PASS (atol=0.0001, rtol=0.001, min_cosine=0.99999)"]
