"""SIGINT (Ctrl-C, sent to the whole process group like a terminal does) and SIGTERM (what
`timeout` and schedulers send) while an output's temporary file exists: the command exits
130 / 143 with one line, leaves no temporary or partial file, and every input is intact.

The CLI runs as a real subprocess; tests/hostile/shim/sitecustomize.py makes each atomic
write pause between "temporary file complete" and "rename", which is when we signal."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hostile_helpers import build_images, diff_snapshots, snapshot, temp_leftovers, wait_for

SHIM = Path(__file__).parent / "shim"
SIGNALS = [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]


def _start(args, cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, LVVIT_HOSTILE_PAUSE="60", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(SHIM), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-m", "lvvit_opt", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _signal_mid_write(proc: subprocess.Popen, watch: Path, sig: int) -> tuple[str, str]:
    """Wait for one of our temporary files under `watch`, then signal (SIGINT: the group)."""
    writing = lambda: [t for t in temp_leftovers(watch) if ".probe" not in t]  # noqa: E731 (not the guard's probe)
    appeared = wait_for(lambda: proc.poll() is not None or bool(writing()), timeout=240)
    if proc.poll() is not None or not appeared:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"no temporary file appeared (exit {proc.returncode}):\n{out}\n{err}")
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # a terminal's Ctrl-C reaches every process of the group
    else:
        proc.send_signal(sig)
    return proc.communicate(timeout=120)


def _assert_clean_exit(proc, out, err, code, word):
    assert proc.returncode == code, (out, err)
    assert "Traceback" not in out + err and "BrokenPipe" not in err, err
    assert word in err.strip().splitlines()[-1]


@pytest.mark.parametrize("sig, code, word", SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_apply_signal_mid_write(ws, sig, code, word):
    before = snapshot(ws)
    proc = _start(["apply", "m.onnx", "-o", "out/opt.onnx", "--report", "out/r.json"], ws)
    out, err = _signal_mid_write(proc, ws, sig)
    _assert_clean_exit(proc, out, err, code, word)
    assert temp_leftovers(ws) == []
    assert [c for c in diff_snapshots(before, snapshot(ws)) if c != "new: out"] == []


@pytest.mark.parametrize("sig, code, word", SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_golden_make_signal_mid_write(ws, sig, code, word):
    before = snapshot(ws)
    proc = _start(["golden", "make", "m.onnx", "-o", "gold.npz"], ws)
    out, err = _signal_mid_write(proc, ws, sig)
    _assert_clean_exit(proc, out, err, code, word)
    assert diff_snapshots(before, snapshot(ws)) == []   # no gold.npz, no 0-byte file, no temp


@pytest.mark.parametrize("sig, code, word", SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_export_signal_mid_write(ws, sig, code, word):
    before = snapshot(ws)
    proc = _start(["export", "--model", "lvvit_golden", "--checkpoint", "c.pth", "--batch-size", "1",
                   "-o", "e.onnx"], ws)
    out, err = _signal_mid_write(proc, ws, sig)
    _assert_clean_exit(proc, out, err, code, word)
    assert diff_snapshots(before, snapshot(ws)) == []


@pytest.mark.parametrize("sig, code, word", SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_preprocess_signal_mid_write_then_resume(tmp_path, sig, code, word):
    images, _ = build_images(tmp_path, count=12)
    before = snapshot(images)
    out_dir = tmp_path / "prep"
    proc = _start(["preprocess", images, out_dir, "--workers", "2", "--img-size", "32"], tmp_path)
    out, err = _signal_mid_write(proc, out_dir, sig)
    _assert_clean_exit(proc, out, err, code, word)
    assert wait_for(lambda: temp_leftovers(out_dir) == [], timeout=10), temp_leftovers(out_dir)
    assert diff_snapshots(before, snapshot(images)) == []
    # workers died with the run: nothing is written after the exit
    assert not _children_alive(proc.pid)
    bins = sorted(out_dir.glob("*.bin"))
    assert all(b.stat().st_size == 3 * 32 * 32 * 4 for b in bins)   # complete or absent
    resumed = subprocess.run([sys.executable, "-m", "lvvit_opt", "preprocess", images, out_dir, "--workers", "2",
                              "--img-size", "32"], capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    assert len(list(out_dir.glob("*.bin"))) == 12 and temp_leftovers(out_dir) == []


def _children_alive(pid: int) -> bool:
    """Any process of the (new) session the CLI led still running?"""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == pid:
                    return True
            except (ProcessLookupError, PermissionError):
                continue
    return False


def test_preprocess_workers_die_with_a_killed_parent_and_the_next_run_cleans_up(tmp_path):
    """kill -9 of the CLI: its workers stop (no BrokenPipe tracebacks, no writes after), and the
    temporaries they had open are swept by the next run (their pids are dead)."""
    images, _ = build_images(tmp_path, count=12)
    out_dir = tmp_path / "prep"
    proc = _start(["preprocess", images, out_dir, "--workers", "2", "--img-size", "32"], tmp_path)
    writing = lambda: [t for t in temp_leftovers(out_dir) if ".probe" not in t] if out_dir.exists() else []  # noqa
    assert wait_for(lambda: proc.poll() is not None or bool(writing()), timeout=240), "no temp appeared"
    proc.kill()
    out, err = proc.communicate(timeout=60)
    assert wait_for(lambda: not _children_alive(proc.pid), timeout=20), "workers outlived their parent"
    assert "BrokenPipe" not in err and "Traceback" not in err, err
    resumed = subprocess.run([sys.executable, "-m", "lvvit_opt", "preprocess", images, out_dir, "--workers", "1",
                              "--img-size", "32"], capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    assert temp_leftovers(out_dir) == [] and len(list(out_dir.glob("*.bin"))) == 12


@pytest.mark.parametrize("sig, code, word", SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_eval_on_several_devices_stops_every_device_process(tmp_path, sig, code, word):
    """eval --device 0,1 runs one process per device: a signal stops all of them at once,
    quietly (no traceback per process)."""
    import shutil

    from hostile_helpers import GOLDEN_DIR

    images, labels = build_images(tmp_path, count=40)
    shutil.copyfile(GOLDEN_DIR / "lvvit_golden.onnx", tmp_path / "m.onnx")
    proc = _start(["eval", "m.onnx", "--data", images, "--labels", labels, "--device", "0,1", "--workers", "1"],
                  tmp_path)
    started = wait_for(lambda: proc.poll() is not None or _session_size(proc.pid) >= 3, timeout=120)
    assert started and proc.poll() is None, proc.communicate()
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    _assert_clean_exit(proc, out, err, code, word)
    assert wait_for(lambda: not _children_alive(proc.pid), timeout=15), "a device process outlived the run"


def _session_size(sid: int) -> int:
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                count += os.getsid(int(entry.name)) == sid
            except (ProcessLookupError, PermissionError):
                continue
    return count
