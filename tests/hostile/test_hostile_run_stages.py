"""Issue 22, not tried before: SIGTERM to `run` at every stage, two runs on one --out at once,
and messages that stay one line whatever the file is called."""
from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys

import onnx
import pytest

from fakes.ascend_env import no_tools  # noqa: F401  (fixture)
from hostile_helpers import (assert_refused, cli_subprocess, diff_snapshots, invoke, snapshot, temp_leftovers,
                             wait_for)

RUN = ["run", "--model", "lvvit_golden", "--batch-sizes", "2", "--bench-duration", "1", "--bench-rounds", "1",
       "--out", "out"]

# the -v line after which SIGTERM is sent, and whether the run is then certainly still working
STAGE_MARKS = {
    "export": ("[export bs2] running", True),
    "apply": ("[apply bs2] running", False),
    "after-atc-commands": ("[atc] atc not found", False),
    "bench": ("[bench bs2] running", True),
    "report": ("[bench bs2] done", False),
}


def _run_until(ws, mark: str) -> tuple[subprocess.Popen, list[str]]:
    proc = cli_subprocess(["-v", *RUN], ws)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if mark in line:
            proc.send_signal(signal.SIGTERM)
            break
    return proc, seen


def _assert_out_is_whole(out) -> None:
    """Whatever an interrupted run left is complete: no temporary file, every model loads,
    every JSON parses. A run stopped before it wrote anything leaves no folder (core.plan)."""
    if not out.exists():
        return
    assert temp_leftovers(out) == []
    for path in out.iterdir():
        if path.suffix == ".onnx":
            onnx.load(str(path))
        elif path.suffix == ".json":
            json.loads(path.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGE_MARKS))
def test_sigterm_at_each_stage_of_run_loses_nothing_and_the_rerun_resumes(ws, no_tools, stage):
    mark, surely_busy = STAGE_MARKS[stage]
    before = snapshot(ws)
    proc, seen = _run_until(ws, mark)
    rest, err = proc.communicate(timeout=300)
    err = "".join(seen) + err
    assert "Traceback" not in err + rest
    assert proc.returncode == 143 or (not surely_busy and proc.returncode == 0), (proc.returncode, err)
    if proc.returncode == 143:
        assert err.strip().splitlines()[-1] == "terminated"
    _assert_out_is_whole(ws / "out")
    assert [c for c in diff_snapshots(before, snapshot(ws)) if not c.startswith("new: out")] == []
    finished = [line.split("]")[0].lstrip("[") for line in err.splitlines() if line.endswith(" s") and "] done in" in line]
    again = invoke([*RUN, "--json", "again.json"], ws)
    assert again.exit_code == 0, again.stderr
    stages = {s["name"]: s["status"] for s in json.loads((ws / "again.json").read_text())["result"]["stages"]}
    for name in finished:  # what finished before the signal is not done twice
        assert stages[name] == "skipped", (name, stages)
    assert json.loads((ws / "out" / "report.json").read_text())["applies"]["2"]["validation"]["passed"] is True


def test_a_second_run_on_a_locked_out_is_refused_and_touches_nothing(ws, no_tools):
    (ws / "out").mkdir()
    (ws / "out" / ".lvvit-opt-owner").write_text('{"verb": "run"}\n')  # as the first run marked it
    (ws / "out" / "report.md").write_text("the first run's report\n")
    before = snapshot(ws)
    fd = os.open(ws / "out", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running `run` holds
        assert_refused(invoke(RUN, ws), 2, "another `lvvit-opt run` is writing there now")
    finally:
        os.close(fd)
    assert diff_snapshots(before, snapshot(ws)) == []


@pytest.mark.slow
def test_two_runs_on_one_out_at_once(ws, no_tools):
    first = cli_subprocess(["-v", *RUN], ws)
    assert wait_for(lambda: (ws / "out" / ".stages.json").exists() or first.poll() is not None, timeout=240)
    second = invoke(RUN, ws)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    if second.exit_code != 0:  # the usual case: the first was still running
        assert_refused(second, 2, "another `lvvit-opt run` is writing there now")
    _assert_out_is_whole(ws / "out")
    assert json.loads((ws / "out" / "report.json").read_text())["applies"]["2"]["validation"]["passed"] is True


def test_the_run_lock_dies_with_its_process(ws, no_tools):
    (ws / "out").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], "
                               "os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); "
                               "time.sleep(600)", str(ws / "out")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert_refused(invoke(RUN, ws), 2, "is writing there now")
    finally:
        holder.kill()
        holder.wait()
    outcome = invoke([*RUN, "--bench-duration", "0.1"], ws)
    assert outcome.exit_code == 0, outcome.stderr


# -- one-line messages whatever the name -------------------------------------------------------

NEWLINE_CASES = {
    "missing-model": (["apply", "no\nsuch.onnx", "-o", "x.onnx"], 2),
    "output-is-input": (["apply", "evil\nname.onnx", "-o", "evil\nname.onnx"], 2),
    "json-in-missing-dir-under-file": (["golden", "check", "m.onnx", "g.npz", "--json", "not_a_dir/a\nb.json"], 2),
    "missing-checkpoint": (["export", "--model", "lvvit_golden", "--checkpoint", "x\ny.pth", "-o", "e.onnx"], 2),
    "owned-name": (["golden", "check", "m.onnx", "g.npz", "--json", "a\nb.lvvit-opt.orig"], 2),
}


@pytest.mark.parametrize("case", list(NEWLINE_CASES))
def test_a_file_name_with_a_newline_keeps_the_message_one_line(ws, case):
    import shutil

    shutil.copyfile(ws / "m.onnx", ws / "evil\nname.onnx")
    (ws / "a\nb.lvvit-opt.orig").write_bytes(b"backup\n")
    before = snapshot(ws)
    argv, code = NEWLINE_CASES[case]
    outcome = invoke(argv, ws)
    assert_refused(outcome, code)
    assert "\\n" in outcome.stderr  # the name is shown quoted, its newline escaped
    assert diff_snapshots(before, snapshot(ws)) == []


def test_the_pickle_refusal_is_whole_sentences_naming_the_object(ws, tmp_path):
    import pathlib

    import torch

    torch.save({"state_dict": {"w": torch.zeros(2)}, "path": pathlib.PurePosixPath("/x")}, ws / "evil.pth")
    before = snapshot(ws)
    outcome = invoke(["export", "--model", "lvvit_golden", "--checkpoint", "evil.pth", "-o", "e.onnx"], ws)
    assert_refused(outcome, 2, "pathlib.PurePosixPath")
    line = outcome.stderr.strip().splitlines()[-1]
    assert line.endswith("and give that file") and "weights_only=False" in line and "\x1b" not in line
    assert diff_snapshots(before, snapshot(ws)) == []


@pytest.mark.parametrize("text, limit, expected", [
    ("short reason", 200, "short reason"),
    ("First sentence here. Second sentence that is long enough to be cut off somewhere", 40,
     "First sentence here. ..."),
    ("one two three four five six seven eight nine ten", 20, "one two three four ..."),
    ("first line\nsecond line", 200, "first line"),
])
def test_reason_of_cuts_at_a_sentence_or_word(text, limit, expected):
    from lvvit_opt.core.errors import reason_of

    assert reason_of(ValueError(text), limit) == expected


def test_shown_quotes_control_characters_only():
    from lvvit_opt.core.errors import shown

    assert shown("plain/path.onnx") == "plain/path.onnx"
    assert shown("a\nb") == "'a\\nb'" and shown("tab\there") == "'tab\\there'"


# -- SIGTERM to a Ray eval ------------------------------------------------------------------------

def _children(pid: int) -> set[int]:
    """Every descendant of pid (Ray's gcs_server, raylet, workers), from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, pytest.param(6.0, marks=pytest.mark.xfail(
    strict=False, reason="issue 32 item 8: a SIGTERM mid-eval sometimes ends the process by the default action "
                         "(-15), Ray having replaced the CLI's handler; open, not yet fixed"))],
    ids=["during-ray-init", "during-the-eval"])
def test_sigterm_to_a_ray_eval_exits_143_and_leaves_no_ray_process(ws, delay):
    pytest.importorskip("ray")
    import time

    from hostile_helpers import build_images

    images, labels = build_images(ws, count=256)  # about 8 s of eval on 2 cores: the signal lands mid-eval
    before = snapshot(ws)
    proc = cli_subprocess(["eval", "m.onnx", "--data", images, "--labels", labels, "--engine", "ray",
                           "--ray-workers", "1", "--json", "r.json"], ws)
    assert wait_for(lambda: proc.poll() is not None or len(_children(proc.pid)) >= 2, timeout=120)
    time.sleep(delay)
    assert proc.poll() is None, proc.communicate()
    ray_processes = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (out, err)
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "terminated"
    assert wait_for(lambda: not any(_alive(p) for p in ray_processes), timeout=60), \
        [p for p in ray_processes if _alive(p)]
    assert not (ws / "r.json").exists() and temp_leftovers(ws) == []
    assert diff_snapshots(before, snapshot(ws)) == []
