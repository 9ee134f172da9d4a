"""`run` validates its whole plan before it creates anything, and black-listed shapes give the
same exit status as `whitelist patch`."""
from __future__ import annotations

import shutil

import pytest

from fakes.ascend_env import no_tools  # noqa: F401  (fixture)
from hostile_helpers import TRANSPOSE_FIXTURES, assert_refused, diff_snapshots, invoke, snapshot

RUN = ["run", "--model", "lvvit_golden", "--batch-sizes", "2", "--bench-duration", "0.1", "--bench-rounds", "1",
       "--out", "out"]

PLAN_CASES = [
    ("unknown-pass", ["--passes", "softmax_transpose,nosuchpass"], "nosuchpass"),
    ("bad-soc", ["--soc-version", "Ascend-nope"], "--soc-version"),
    ("soc-with-shell", ["--soc-version", "Ascend310;rm -rf"], "--soc-version"),
    ("garbage-checkpoint", ["--checkpoint", "not_a_dir"], "not a PyTorch checkpoint"),
    ("missing-checkpoint", ["--checkpoint", "nosuch.pth"], "no such"),
    ("checkpoint-of-another-model", ["--model", "lvvit_t", "--checkpoint", "c.pth"], "does not match"),
    ("missing-whitelist-file", ["--patch-whitelist", "--whitelist-file", "nosuch.py"], "no such file"),
    ("whitelist-file-without-patch", ["--whitelist-file", "opp/transpose.py"], "--patch-whitelist"),
    ("whitelist-file-not-transpose", ["--patch-whitelist", "--whitelist-file", "keep.cfg"], "keep.cfg"),
    ("whitelist-file-is-dir", ["--patch-whitelist", "--whitelist-file", "opp"], "directory"),
    ("bad-batch-sizes", ["--batch-sizes", "2,x"], "--batch-sizes"),
    ("zero-batch-size", ["--batch-sizes", "0"], "--batch-sizes"),
    ("unknown-model", ["--model", "nosuchmodel"], "nosuchmodel"),
]


@pytest.mark.parametrize("extra, words", [c[1:] for c in PLAN_CASES], ids=[c[0] for c in PLAN_CASES])
def test_run_refuses_a_bad_plan_before_creating_anything(ws, ws_before, no_tools, extra, words):
    outcome = invoke(RUN + extra, ws)
    assert_refused(outcome, 2, words)
    assert not (ws / "out").exists()
    assert diff_snapshots(ws_before, snapshot(ws)) == []


def test_black_listed_shape_exits_1_in_run_like_in_whitelist_patch(ws, no_tools):
    black = ws / "black.py"
    text = (TRANSPOSE_FIXTURES / "transpose_blacklist_era.py").read_text()
    black.write_text(text.replace("[16, 6, 197, 197],", "[16, 6, 197, 197], [2, 3, 197, 197],"))
    before = black.read_bytes()
    patch = invoke(["whitelist", "patch", "--file", black, "--shape", "2,3,197,197"], ws)
    assert_refused(patch, 1, "black-listed")
    outcome = invoke(RUN + ["--patch-whitelist", "--whitelist-file", black], ws)
    assert_refused(outcome, 1, "black-listed")
    assert black.read_bytes() == before
    assert (ws / "out" / "report.json").is_file()  # the rest of the run finished
