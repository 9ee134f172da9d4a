"""Issue 22, data loss: device nodes, FIFOs and the tool's own files as outputs.

An atomic rename over /dev/null (as root) replaces the device by a regular file; a FIFO with
no reader blocks forever; `--json BACKUP` or `--json LOG` overwrites the only copy. Each case
asserts the exit status, the one-line message, the bytes of every input and that a device is
still the same device afterwards.
"""
from __future__ import annotations

import json
import os
import socket
import stat
import tempfile
import threading
from pathlib import Path

import pytest

from hostile_helpers import assert_refused, cli_subprocess, diff_snapshots, invoke, snapshot, temp_leftovers

pytestmark = pytest.mark.skipif(not hasattr(os, "mknod") or os.geteuid() != 0,
                                reason="device nodes are made with mknod, which needs root")

NULL, FULL = (1, 3), (1, 7)  # Linux's /dev/null and /dev/full (major, minor)

# verb -> argv with DEV where the device goes (fast verbs over the golden model)
DEVICE_VERBS = {
    "golden-check-json": ["golden", "check", "m.onnx", "g.npz", "--json", "DEV"],
    "validate-json": ["validate", "m.onnx", "c2.onnx", "--json", "DEV"],
    "apply-o": ["apply", "m.onnx", "-o", "DEV"],
    "apply-json": ["apply", "m.onnx", "-o", "sub/out.onnx", "--json", "DEV"],
    "golden-make-o": ["golden", "make", "m.onnx", "-o", "DEV"],
    "whitelist-shapes-json": ["whitelist", "shapes", "m.onnx", "--json", "DEV"],
    "passes-json": ["passes", "--json", "DEV"],
}


def make_device(path: Path, numbers: tuple[int, int]) -> Path:
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(*numbers))
    return path


def assert_same_device(path: Path, numbers: tuple[int, int]) -> None:
    st = os.lstat(path)
    assert stat.S_ISCHR(st.st_mode), f"{path} is no longer a character device"
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == numbers


def argv_with(argv: list[str], dev: Path) -> list[str]:
    return [str(dev) if a == "DEV" else a for a in argv]


def our_temps_in_tmpdir() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if f".lvvit-tmp.{os.getpid()}." in n}


@pytest.mark.parametrize("verb", list(DEVICE_VERBS))
def test_an_output_on_a_null_device_is_written_through_and_stays_a_device(ws, verb):
    null = make_device(ws / "null", NULL)
    before = snapshot(ws / "sub")
    outcome = invoke(argv_with(DEVICE_VERBS[verb], null), ws)
    assert outcome.exit_code == 0, outcome.stderr
    assert_same_device(null, NULL)
    assert temp_leftovers(ws) == [] and not our_temps_in_tmpdir()
    if verb != "apply-json":
        assert diff_snapshots(before, snapshot(ws / "sub")) == []


@pytest.mark.parametrize("verb", list(DEVICE_VERBS))
def test_an_output_on_a_full_device_is_one_line_and_the_device_survives(ws, ws_before, verb):
    full = make_device(ws / "full", FULL)
    outcome = invoke(argv_with(DEVICE_VERBS[verb], full), ws)
    assert_refused(outcome, 2, "No space left on device")
    assert_same_device(full, FULL)
    assert temp_leftovers(ws) == [] and not our_temps_in_tmpdir()
    changes = [c for c in diff_snapshots(ws_before, snapshot(ws)) if not c.startswith("new: full")]
    if verb == "apply-json":  # -o was written before --json failed: that is the only new file
        changes = [c for c in changes if c != "new: sub/out.onnx"]
    assert changes == []


@pytest.mark.parametrize("verb", ["golden-check-json", "apply-o", "passes-json", "whitelist-shapes-json"])
def test_a_fifo_without_reader_is_refused_in_one_line_not_a_hang(ws, ws_before, verb):
    fifo = ws / "pipe"
    os.mkfifo(fifo)
    outcome = invoke(argv_with(DEVICE_VERBS[verb], fifo), ws)
    assert_refused(outcome, 2, "a FIFO with no reader")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert temp_leftovers(ws) == [] and not our_temps_in_tmpdir()


def _read_fifo(path: Path, sink: list[bytes]) -> threading.Thread:
    """Open the FIFO's read end now (so the verb finds a reader) and read it in a thread until
    the writer closes it (EOF before any writer came is just "not yet")."""
    import time

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)

    def read() -> None:
        chunks, deadline = [], time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                try:
                    chunk = os.read(fd, 1 << 20)
                except BlockingIOError:  # a writer is there, nothing written yet
                    time.sleep(0.01)
                    continue
                if chunk:
                    chunks.append(chunk)
                elif chunks:  # the writer closed after writing
                    break
                else:
                    time.sleep(0.01)
        finally:
            os.close(fd)
        sink.append(b"".join(chunks))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("verb", ["golden-check-json", "passes-json"])
def test_a_fifo_with_a_reader_gets_the_whole_json_and_stays_a_fifo(ws, verb):
    fifo = ws / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = _read_fifo(fifo, got)
    outcome = invoke(argv_with(DEVICE_VERBS[verb], fifo), ws)
    reader.join(10)
    assert outcome.exit_code == 0, outcome.stderr
    envelope = json.loads(got[0])
    assert envelope["ok"] is True
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_an_output_on_a_fifo_reader_gets_a_whole_model(ws):
    fifo = ws / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = _read_fifo(fifo, got)
    outcome = invoke(["apply", "m.onnx", "-o", fifo], ws)
    reader.join(10)
    assert outcome.exit_code == 0, outcome.stderr
    import onnx

    model = onnx.load_from_string(got[0])
    assert sum(n.op_type == "Transpose" for n in model.graph.node) == 11  # the rewritten graph, whole


def test_json_to_dev_stdout_is_written_to_the_pipe(ws):
    proc = cli_subprocess(["golden", "check", "m.onnx", "g.npz", "-q", "--json", "/dev/stdout"], ws)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out)["ok"] is True
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_two_outputs_on_one_null_device_do_not_collide(ws):
    null = make_device(ws / "null", NULL)
    outcome = invoke(["apply", "m.onnx", "-o", null, "--json", null], ws)
    assert outcome.exit_code == 0, outcome.stderr
    assert_same_device(null, NULL)


def test_two_outputs_on_one_fifo_collide(ws, ws_before):
    fifo = ws / "pipe"
    os.mkfifo(fifo)
    outcome = invoke(["apply", "m.onnx", "-o", fifo, "--json", fifo], ws)
    assert_refused(outcome, 2, "are the same file")
    assert diff_snapshots(ws_before, snapshot(ws)) == ["new: pipe"]


def test_a_socket_as_output_is_refused(ws):
    path = ws / "sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        outcome = invoke(["golden", "check", "m.onnx", "g.npz", "--json", path], ws)
        assert_refused(outcome, 2, "is a socket")
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
    finally:
        server.close()


# -- --log-file --------------------------------------------------------------------------------

def test_log_file_on_a_null_device(ws):
    null = make_device(ws / "null", NULL)
    outcome = invoke(["--log-file", null, "golden", "check", "m.onnx", "g.npz"], ws)
    assert outcome.exit_code == 0, outcome.stderr
    assert_same_device(null, NULL)


def test_log_file_on_a_fifo_without_reader_is_refused_not_a_hang(ws, ws_before):
    fifo = ws / "pipe"
    os.mkfifo(fifo)
    outcome = invoke(["--log-file", fifo, "golden", "check", "m.onnx", "g.npz"], ws)
    assert_refused(outcome, 2, "a FIFO with no reader")
    assert diff_snapshots(ws_before, snapshot(ws)) == ["new: pipe"]


LOG_COLLISIONS = {
    "json-is-log": (["--log-file", "run.log", "golden", "check", "m.onnx", "g.npz", "--json", "run.log"],
                    "is the input --log-file"),
    "o-is-log": (["--log-file", "run.log", "apply", "m.onnx", "-o", "run.log"], "is the input --log-file"),
    "json-links-to-log": (["--log-file", "run.log", "golden", "check", "m.onnx", "g.npz", "--json", "log_link"],
                          "is the input --log-file"),
    "log-is-model": (["--log-file", "m.onnx", "golden", "check", "m.onnx", "g.npz"], "appending the log"),
    "log-is-hard-link-of-model": (["--log-file", "hard.onnx", "apply", "m.onnx", "-o", "sub/x.onnx"],
                                  "appending the log"),
    "log-is-golden": (["--log-file", "g.npz", "golden", "check", "m.onnx", "g.npz"], "appending the log"),
}


@pytest.mark.parametrize("case", list(LOG_COLLISIONS))
def test_the_log_file_is_an_input_of_every_verb(ws, case):
    (ws / "run.log").write_text("2026-12-07 earlier run: the only record\n")
    os.symlink("run.log", ws / "log_link")
    before = snapshot(ws)
    argv, words = LOG_COLLISIONS[case]
    assert_refused(invoke(argv, ws), 2, words)
    assert diff_snapshots(before, snapshot(ws)) == []


# -- files the tool keeps ------------------------------------------------------------------------

OWNED = ["transpose.py.lvvit-opt.orig", "transpose.py.lvvit-opt.json", "transpose.py.lvvit-opt.replaced",
         ".stages.json", ".x.onnx.lvvit-tmp.1.abcd.onnx"]
OWNED_VERBS = {
    "golden-check-json": ["golden", "check", "m.onnx", "g.npz", "--json", "OWNED"],
    "apply-o": ["apply", "m.onnx", "-o", "OWNED"],
    "validate-json": ["validate", "m.onnx", "c2.onnx", "--json", "OWNED"],
}


@pytest.mark.parametrize("verb", list(OWNED_VERBS))
@pytest.mark.parametrize("name", OWNED)
def test_a_file_the_tool_keeps_is_never_an_output(ws, name, verb):
    kept = ws / "opp" / name
    kept.write_bytes(b"the only copy\n")
    before = snapshot(ws)
    argv = [str(kept) if a == "OWNED" else a for a in OWNED_VERBS[verb]]
    assert_refused(invoke(argv, ws), 2, "which lvvit-opt keeps")
    assert diff_snapshots(before, snapshot(ws)) == []


def test_a_symlink_to_a_backup_is_refused_too(ws):
    backup = ws / "opp" / "transpose.py.lvvit-opt.orig"
    backup.write_bytes(b"original\n")
    os.symlink(backup, ws / "harmless.json")
    before = snapshot(ws)
    assert_refused(invoke(["golden", "check", "m.onnx", "g.npz", "--json", "harmless.json"], ws), 2,
                   "the backup of a patched file")
    assert diff_snapshots(before, snapshot(ws)) == []


def test_run_json_cannot_be_the_runs_own_report(ws, ws_before):
    outcome = invoke(["run", "--model", "lvvit_golden", "--batch-sizes", "2", "--out", "out",
                      "--json", "out/report.json"], ws)
    assert_refused(outcome, 2, "the run's report.json")
    assert diff_snapshots(ws_before, snapshot(ws)) == []


def test_tune_json_cannot_be_tunes_own_report(ws, ws_before):
    outcome = invoke(["tune", "m.onnx", "--inputs", "2", "--out", "t", "--json", "t/tune.json"], ws)
    assert_refused(outcome, 2, "tune's tune.json")
    assert diff_snapshots(ws_before, snapshot(ws)) == []


def test_run_json_cannot_be_the_stage_cache(ws):
    (ws / "out").mkdir()
    (ws / "out" / ".stages.json").write_text("{}\n")
    before = snapshot(ws)
    outcome = invoke(["run", "--model", "lvvit_golden", "--batch-sizes", "2", "--out", "out",
                      "--json", "out/.stages.json"], ws)
    assert_refused(outcome, 2, "the stage cache")
    assert diff_snapshots(before, snapshot(ws)) == []


@pytest.mark.parametrize("name", OWNED[:4])
def test_the_log_file_is_never_a_file_the_tool_keeps(ws, name):
    kept = ws / "opp" / name
    kept.write_bytes(b"the only copy\n")
    before = snapshot(ws)
    outcome = invoke(["--log-file", kept, "golden", "check", "m.onnx", "g.npz"], ws)
    assert_refused(outcome, 2, "which lvvit-opt keeps")
    assert diff_snapshots(before, snapshot(ws)) == []


def test_every_file_the_whitelist_journal_keeps_is_known_to_the_guard(tmp_path):
    from lvvit_opt.core.fileio import owned_file_kind
    from lvvit_opt.whitelist.journal import own_files, replaced_path

    target = tmp_path / "transpose.py"
    target.write_text("x = []\n")
    kept = list(own_files(target).values()) + [replaced_path(target)]
    assert kept and all(owned_file_kind(p) is not None for p in kept if p != target), kept
    assert owned_file_kind(tmp_path / "transpose.py.lvvit-opt.replaced.2") is not None
    assert owned_file_kind(tmp_path / "transpose.py") is None and owned_file_kind(tmp_path / "model.onnx") is None
