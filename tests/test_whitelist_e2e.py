"""End to end: lvvit_s batch 16 -> softmax_transpose -> whitelist patch --from-model -> check."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lvvit_opt.cli import main

FIXTURE = Path(__file__).parent / "fixtures" / "transpose" / "transpose_whitelist_era.py"
LAYOUT = "op_impl/built-in/ai_core/tbe/impl/dynamic/transpose.py"


@pytest.mark.slow
def test_lvvit_s_bs16_shapes_patched_and_selected(lvvit_s_bs16_onnx, tmp_path, cli_runner, monkeypatch):
    optimised = tmp_path / "lvvit_s_bs16_opt.onnx"
    applied = cli_runner.invoke(main, ["apply", lvvit_s_bs16_onnx, "-o", str(optimised),
                                       "--passes", "softmax_transpose", "-q"])
    assert applied.exit_code == 0, applied.output

    shapes = cli_runner.invoke(main, ["whitelist", "shapes", str(optimised), "--json", "-"])
    assert shapes.exit_code == 0, shapes.output
    uses = {(tuple(t["shape"]), tuple(t["perm"])): t["count"] for t in json.loads(shapes.stdout)["result"]["transposes"]}
    # one Transpose pair around each of the 16 attention softmaxes
    assert uses[((16, 6, 197, 197), (0, 3, 2, 1))] == 16
    assert uses[((16, 197, 197, 6), (0, 3, 2, 1))] == 16

    # the white-list-era file found the way atc finds it
    opp = tmp_path / "opp"
    target = opp / LAYOUT
    target.parent.mkdir(parents=True)
    shutil.copyfile(FIXTURE, target)
    monkeypatch.setenv("ASCEND_OPP_PATH", str(opp))
    before = cli_runner.invoke(main, ["whitelist", "check", "--from-model", str(optimised), "--require-fast"])
    assert before.exit_code == 1, before.output

    patched = cli_runner.invoke(main, ["whitelist", "patch", "--from-model", str(optimised)])
    assert patched.exit_code == 0, patched.output
    assert "white_list_shape" in patched.output

    check = cli_runner.invoke(main, ["whitelist", "check", "--from-model", str(optimised), "--require-fast", "--json", "-"])
    assert check.exit_code == 0, check.output
    report = json.loads(check.stdout)["result"]
    assert report["file"] == str(target) and report["era"] == "white-list"
    selected = {tuple(s["shape"]): (s["kernel"], s["rule"]) for s in report["shapes"]}
    assert selected[(16, 6, 197, 197)] == ("Transpose", "exact")
    assert selected[(16, 197, 197, 6)] == ("Transpose", "exact")
    assert all(s["kernel"] == "Transpose" for s in report["shapes"])
