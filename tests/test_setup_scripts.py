"""Lighter set-up (issue 34): scripts/demo.sh installs what the main job needs, scripts/test.sh
adds the test and Ray extras. Run on a copy of scripts/ whose .venv is a stand-in python that
records what pip was asked to install (nothing is installed)."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RECORDER = """#!/bin/sh
echo "$0 $*" >> "$(dirname "$0")/../calls.log"
case "$*" in *"import lvvit_opt"*) exit 0;; esac
exit 0
"""


def _sandbox(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "scripts", repo / "scripts")
    (repo / "setup.py").write_text("# stand-in\n")
    bin_dir = repo / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("python", "lvvit-opt"):
        (bin_dir / name).write_text(RECORDER)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    return repo


def _pip_installs(repo: Path) -> list[str]:
    calls = (repo / ".venv" / "calls.log").read_text().splitlines()
    return [c.split(" -e ", 1)[1] for c in calls if " -m pip install" in c and " -e " in c]


def test_demo_installs_the_project_alone_and_test_adds_the_extras(tmp_path):
    repo = _sandbox(tmp_path)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    subprocess.run(["bash", str(repo / "scripts" / "demo.sh")], env=env, check=True, capture_output=True)
    assert _pip_installs(repo) == [str(repo)]
    assert any(c.endswith("lvvit-opt run --out runs/demo") for c in
               (repo / ".venv" / "calls.log").read_text().splitlines())
    subprocess.run(["bash", str(repo / "scripts" / "demo.sh")], env=env, check=True, capture_output=True)
    assert _pip_installs(repo) == [str(repo)]  # installed once: the stamp holds
    # scripts/test.sh: lint_imports.py does not exist for the stand-in python, which records and exits 0
    subprocess.run(["bash", str(repo / "scripts" / "test.sh"), "-q"], env=env, check=True, capture_output=True)
    assert _pip_installs(repo) == [str(repo), f"{repo}[test,ray]"]
