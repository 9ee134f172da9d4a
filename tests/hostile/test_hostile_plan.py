"""The examples of issue 32's "Outputs nobody declared", each answered by the verb's plan."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from hostile_helpers import assert_refused, diff_snapshots, invoke, snapshot

SPACE = {"batch_sizes": [2], "pass_sets": [[]], "precisions": ["fp32"], "threads": [1], "graph_opt": ["all"]}


@pytest.fixture(autouse=True)
def space(ws):
    (ws / "space.json").write_text(json.dumps(SPACE))


def _tune(ws, *extra):
    return ["tune", "m.onnx", "--inputs", "1", "--space", "space.json", "--rounds", "2", "--warmup", "0",
            "--out", "out", *extra]


def _previous_tune(ws):
    """--out as an earlier tune left it: marked as tune's."""
    from lvvit_opt.core.plan import Plan

    plan = Plan.of("tune", owned={"--out": ws / "out"}).start()
    (ws / "out" / "tune.json").write_text("{}\n")  # what it wrote (a bare folder is removed on release)
    plan.release()


def test_model_given_as_a_file_tune_writes_is_refused(ws):
    _previous_tune(ws)
    shutil.copy(ws / "m.onnx", ws / "out" / "best.onnx")
    before = snapshot(ws)
    outcome = invoke(_tune(ws)[:1] + ["out/best.onnx"] + _tune(ws)[2:], ws)
    assert_refused(outcome, 2, "out/best.onnx")
    assert diff_snapshots(before, snapshot(ws)) == []


@pytest.mark.parametrize("name", ["best.onnx", "best.om", "tune.json", "tune_state.json", "reproduce.sh", "tune.png"])
def test_json_onto_a_file_tune_writes_is_refused(ws, name):
    _previous_tune(ws)
    before = snapshot(ws)
    outcome = invoke(_tune(ws, "--json", f"out/{name}"), ws)
    assert_refused(outcome, 2)
    assert diff_snapshots(before, snapshot(ws)) == []


@pytest.mark.parametrize("name", ["best.onnx", "models/x.onnx"])
def test_log_file_inside_the_tune_folder_is_refused(ws, name):
    _previous_tune(ws)
    (ws / "out" / "models").mkdir()
    outcome = invoke(["--log-file", f"out/{name}"] + _tune(ws), ws)
    assert_refused(outcome, 2)
    assert not (ws / "out" / "tune_state.json").exists()


def test_json_in_a_subfolder_of_the_tune_folder_is_refused(ws):
    outcome = invoke(_tune(ws, "--json", "out/models/lvvit_golden_bs2.onnx"), ws)
    assert_refused(outcome, 2, "subfolder of --out")
    assert not (ws / "out").exists()


def test_a_folder_of_unrelated_files_is_refused(ws):
    (ws / "out").mkdir()
    (ws / "out" / "tune.json").write_text("the user's own notes\n")
    before = snapshot(ws)
    outcome = invoke(_tune(ws), ws)
    assert_refused(outcome, 2, "already holds files")
    assert diff_snapshots(before, snapshot(ws)) == []


def test_a_folder_another_verb_owns_is_refused(ws):
    from lvvit_opt.core.plan import Plan

    plan = Plan.of("run", owned={"--out": ws / "out"}).start()
    (ws / "out" / "report.md").write_text("run's report\n")
    plan.release()
    outcome = invoke(_tune(ws), ws)
    assert_refused(outcome, 2, "`lvvit-opt run`")


def test_two_tunes_on_one_folder_do_not_run_at_once(ws):
    from lvvit_opt.core.plan import Plan

    holder = Plan.of("tune", owned={"--out": ws / "out"}).start()  # another tune holds the folder
    try:
        outcome = invoke(_tune(ws), ws)
        assert_refused(outcome, 2, "is writing there now")
        assert not (ws / "out" / "tune_state.json").exists()
    finally:
        holder.release()


def test_symlinked_private_opp_folder_is_never_followed(ws, tmp_path):
    from lvvit_opt.core.errors import UserError
    from lvvit_opt.tune.opp import OPP_DIR, build_private_opp

    cann = tmp_path / "cann_opp"
    (cann / "op_impl").mkdir(parents=True)
    victim = tmp_path / "elsewhere"
    victim.mkdir()
    (victim / "precious.txt").write_text("not tune's\n")
    out = ws / "out"
    out.mkdir()
    os.symlink(victim, out / OPP_DIR)
    transpose = ws / "opp" / "transpose.py"
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match="is a symlink"):
        build_private_opp(transpose, cann, [(2, 3, 197, 197)], out)
    assert diff_snapshots(before, snapshot(tmp_path)) == []


@pytest.mark.parametrize("args", [
    ["--keep-dtype", "keep.cfg", "--suggest-keep-dtype", "keep.cfg"],
    ["--om-json", "keep.cfg", "--json", "keep.cfg"],
    ["--keep-dtype", "keep.cfg", "--json", "keep.cfg"],
], ids=["keep-dtype=suggest", "om-json=json", "keep-dtype=json"])
def test_debug_layers_never_overwrites_its_own_input_lists(ws, args):
    before = snapshot(ws)
    outcome = invoke(["debug", "layers", "m.onnx", "--fp16", "--inputs", "1", *args], ws)
    assert_refused(outcome, 2, "keep.cfg")
    assert diff_snapshots(before, snapshot(ws)) == []
