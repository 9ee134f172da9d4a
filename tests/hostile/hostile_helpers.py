"""Shared tools of the hostile-input suite: a workspace of every kind of input, byte
snapshots of a directory, and one assertion for "refused cleanly, nothing touched"."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
GOLDEN_DIR = REPO_ROOT / "golden"
TRANSPOSE_FIXTURES = REPO_ROOT / "tests" / "fixtures" / "transpose"
TEMP_MARKER = ".lvvit-tmp."


def snapshot(root: Path) -> dict[str, object]:
    """Every entry under root -> its bytes (files), ('link', target) (symlinks), 'dir', or
    ('special', type, rdev) for devices and FIFOs."""
    state: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                state[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                state[rel] = "dir"
            elif not path.is_file():  # a device or FIFO: its kind and number, never its (endless) bytes
                st = os.lstat(path)
                state[rel] = ("special", stat.S_IFMT(st.st_mode), st.st_rdev)
            else:
                state[rel] = path.read_bytes()
    return state


def temp_leftovers(root: Path) -> list[str]:
    """Our temporary files (or the legacy preprocess partials) anywhere under root."""
    return [str(p.relative_to(root)) for p in root.rglob("*") if TEMP_MARKER in p.name or ".partial-" in p.name]


def diff_snapshots(before: dict, after: dict) -> list[str]:
    changes = [f"new: {k}" for k in after if k not in before]
    changes += [f"gone: {k}" for k in before if k not in after]
    changes += [f"changed: {k}" for k in before if k in after and before[k] != after[k]]
    return changes


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str


def invoke(args: list[str], cwd: Path) -> Outcome:
    """Run the CLI in-process (CliRunner) in `cwd`; an uncaught exception fails the test."""
    from click.testing import CliRunner

    from lvvit_opt.cli import main

    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)
    finally:
        os.chdir(old)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        raise AssertionError("uncaught exception (a traceback for the user):\n"
                             + "".join(traceback.format_exception(result.exception)))
    return Outcome(result.exit_code, result.stdout, result.stderr)


def assert_refused(outcome: Outcome, code: int = 2, match: str | None = None) -> None:
    """Exit `code`, one `error: ...` line on stderr, no traceback, nothing on stdout for exit 2."""
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert outcome.exit_code == code, (outcome.exit_code, outcome.stdout, outcome.stderr)
    assert "Traceback" not in outcome.stderr + outcome.stdout
    errors = [line for line in lines if line.startswith(("error:", "Error:"))]
    assert len(errors) == 1, outcome.stderr
    if code == 2:  # besides the error line, only click's own usage hint is allowed
        extra = [line for line in lines if line not in errors and not line.startswith(("Usage:", "Try '"))]
        assert extra == [], f"more than the one error line on stderr:\n{outcome.stderr}"
    if match is not None:
        assert match in errors[0], errors[0]


def cli_subprocess(args: list[str], cwd: Path, **kwargs) -> subprocess.Popen:
    """Start `python -m lvvit_opt ARGS` (a real process, for signals and concurrency)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "lvvit_opt", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def build_workspace(root: Path) -> Path:
    """A folder holding one of every kind of input the verbs take, plus aliases of them."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(GOLDEN_DIR / "lvvit_golden.onnx", root / "m.onnx")
    shutil.copyfile(GOLDEN_DIR / "lvvit_golden.onnx", root / "c2.onnx")  # a second model (a candidate)
    shutil.copyfile(GOLDEN_DIR / "lvvit_golden.pth", root / "c.pth")
    shutil.copyfile(GOLDEN_DIR / "lvvit_golden.npz", root / "g.npz")
    os.symlink("m.onnx", root / "link.onnx")
    os.link(root / "m.onnx", root / "hard.onnx")
    os.symlink("c.pth", root / "link.pth")
    (root / "sub").mkdir()
    opp = root / "opp"
    opp.mkdir()
    shutil.copyfile(TRANSPOSE_FIXTURES / "transpose_whitelist_era.py", opp / "transpose.py")
    os.symlink("opp/transpose.py", root / "transpose_link.py")
    (root / "keep.cfg").write_text("OpType::Softmax\n")
    (root / "not_a_dir").write_text("a file\n")
    return root


def build_images(root: Path, count: int = 3) -> tuple[Path, Path]:
    """An image folder and its val.txt under root (ImageNet val naming)."""
    from lvvit_opt.data.synthetic import make_image_dir, val_name, write_val_txt

    images = root / "images"
    make_image_dir(images, count, sizes=((64, 48), (48, 64)))
    labels = write_val_txt(root / "val.txt", {val_name(i + 1): i for i in range(count)})
    return images, labels
