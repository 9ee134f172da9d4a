"""Read-only destinations, as an unprivileged user would meet them (root writes everywhere, so
as root the CLI runs demoted to `nobody`): one line, exit 2, before any output is written."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from hostile_helpers import GOLDEN_DIR, build_images, diff_snapshots, snapshot, temp_leftovers

NOBODY = 65534


@pytest.fixture
def shared_ws():
    """A workspace `nobody` can read, with a read-only folder ro/ and a read-only file."""
    root = Path(tempfile.mkdtemp(prefix="lvvit-ro-", dir="/tmp"))
    try:
        ws = root / "ws"
        ws.mkdir()
        shutil.copyfile(GOLDEN_DIR / "lvvit_golden.onnx", ws / "m.onnx")
        build_images(ws, count=2)
        (ws / "results").mkdir()
        for i in range(2):
            np.save(ws / "results" / f"ILSVRC2012_val_{i + 1:08d}_0.npy", np.arange(1000, dtype=np.float32))
        (ws / "ro").mkdir()
        (root / "home").mkdir()
        for path in [root, *root.rglob("*")]:
            path.chmod(0o777 if path.is_dir() else 0o644)
        (ws / "ro").chmod(0o555)
        yield ws
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run_unprivileged(args, cwd: Path) -> subprocess.CompletedProcess:
    demote = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot test as an unprivileged user")
        demote = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    env = dict(os.environ, HOME=str(cwd.parent / "home"), MPLCONFIGDIR=str(cwd.parent / "home"))
    return subprocess.run(demote + [sys.executable, "-m", "lvvit_opt", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


READ_ONLY = [
    ("apply-report", ["apply", "m.onnx", "-o", "out.onnx", "--report", "ro/x.json"]),
    ("apply-o", ["apply", "m.onnx", "-o", "ro/out.onnx"]),
    ("apply-json", ["apply", "m.onnx", "-o", "out.onnx", "--json", "ro/a.json"]),
    ("preprocess-info", ["preprocess", "images", "prep", "--info", "ro/i.info"]),
    ("preprocess-out-dir", ["preprocess", "images", "ro/prep"]),
    ("golden-make", ["golden", "make", "m.onnx", "-o", "ro/g.npz"]),
    ("export", ["export", "--model", "lvvit_golden", "-o", "ro/e.onnx"]),
    ("bench-json", ["bench", "m.onnx", "--duration", "0.1", "--rounds", "1", "--json", "ro/b.json"]),
    ("bench-plot", ["bench", "m.onnx", "--duration", "0.1", "--rounds", "1", "--plot", "ro/b.png"]),
    ("postprocess-json", ["postprocess", "results", "--labels", "val.txt", "--json", "ro/p.json"]),
    ("eval-json", ["eval", "m.onnx", "--data", "images", "--labels", "val.txt", "--json", "ro/e.json"]),
    ("atc-output", ["atc", "m.onnx", "--soc-version", "Ascend310", "--output", "ro/m"]),
    ("run-out", ["run", "--model", "lvvit_golden", "--out", "ro/run"]),
    ("validate-json", ["validate", "m.onnx", "m.onnx", "--json", "ro/v.json"]),
]


@pytest.mark.parametrize("argv", [c[1] for c in READ_ONLY], ids=[c[0] for c in READ_ONLY])
def test_read_only_destination_is_one_line_before_any_output(shared_ws, argv):
    before = snapshot(shared_ws)
    proc = _run_unprivileged(argv, shared_ws)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert lines[-1].startswith("error:") and "ro" in lines[-1], proc.stderr
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]]
    assert diff_snapshots(before, snapshot(shared_ws)) == []   # nothing written, not even the other outputs
    assert temp_leftovers(shared_ws) == []
