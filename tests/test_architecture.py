"""The architecture is a contract that fails the build (issue 23): scripts/lint_imports.py runs
import-linter's contracts (.importlinter) and the private-name check on a view of the installed
layout. Each test plants one defect in a copy of the tree and asserts the check catches it."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT = REPO / "scripts" / "lint_imports.py"


def lint(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(LINT), "--tree", str(tree)], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def clean_run() -> subprocess.CompletedProcess:
    return lint(REPO)


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of the checkout's sources and contracts, to plant a defect in."""
    copy = tmp_path / "tree"
    for folder in ("lvvit_opt", "passes", "whitelist"):
        shutil.copytree(REPO / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(REPO / ".importlinter", copy / ".importlinter")
    return copy


def plant(tree: Path, module: str, line: str) -> None:
    path = tree / module
    path.write_text(path.read_text() + "\n" + line + "\n")


def test_the_tree_keeps_every_contract(clean_run):
    out = clean_run.stdout + clean_run.stderr
    assert clean_run.returncode == 0, out
    kept = re.search(r"Contracts: (\d+) kept, (\d+) broken", out)
    assert kept and kept.group(2) == "0" and int(kept.group(1)) == 7, out
    assert "private names imported across modules: 0" in out


def test_the_view_holds_passes_and_whitelist(clean_run):
    """The contracts see lvvit_opt.passes and lvvit_opt.whitelist (installed from the top of the
    repository): a contract over a graph without them would be kept vacuously."""
    out = clean_run.stdout
    assert "Analyzed" in out
    files = int(re.search(r"Analyzed (\d+) files", out).group(1))
    expected = sum(1 for folder in ("lvvit_opt", "passes", "whitelist")
                   for p in (REPO / folder).rglob("*.py") if "__pycache__" not in p.parts)
    assert files == expected


@pytest.mark.parametrize("module, line, contract", [
    # a lower layer importing a higher one, at module level and lazily inside a function
    ("lvvit_opt/core/errors.py", "from lvvit_opt.cli import main", "The flow"),
    ("lvvit_opt/verify/golden.py", "def _late():\n    from lvvit_opt.measure.bench import bench", "The flow"),
    ("passes/cleanup.py", "import lvvit_opt.ascend.atc", "The flow"),
    ("lvvit_opt/runtime/ort.py", "from lvvit_opt.models import zoo", "Model definitions and runners"),
    ("lvvit_opt/measure/bench.py", "from lvvit_opt.debug import layers", "Measuring and debugging"),
    ("lvvit_opt/data/scoring.py", "from lvvit_opt.data import postprocess", "No import cycle"),
    ("lvvit_opt/pipeline/run.py", "from lvvit_opt.cli import _base", "A private module"),
])
def test_a_planted_import_breaks_the_build(tree, module, line, contract):
    plant(tree, module, line)
    result = lint(tree)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert re.search(r"Contracts: \d+ kept, [1-9]\d* broken", out), out
    broken = " ".join(out.split())  # import-linter wraps long contract names
    assert re.search(re.escape(contract) + r"(?:(?!KEPT).){0,150}? BROKEN", broken), out


def test_a_private_name_across_modules_breaks_the_build(tree):
    plant(tree, "lvvit_opt/measure/report.py", "from lvvit_opt.core.fileio import _umask")
    plant(tree, "whitelist/check.py", "from ..core.errors import _q")
    result = lint(tree)
    assert result.returncode == 1
    assert "lvvit_opt.measure.report:" in result.stdout and "private name _umask from lvvit_opt.core.fileio" in result.stdout
    assert "private name _q from lvvit_opt.core.errors" in result.stdout
    assert "private names imported across modules: 2" in result.stdout


def test_a_module_outside_the_layers_breaks_the_build(tree):
    """exhaustive: a new top-level module must be given a layer."""
    (tree / "lvvit_opt" / "helpers.py").write_text('"""stray"""\n')
    result = lint(tree)
    assert result.returncode == 1
    assert "helpers" in result.stdout + result.stderr


def test_architecture_md_names_every_package():
    """ARCHITECTURE.md's table lists each child of lvvit_opt (and passes/, whitelist/), and only those."""
    text = (REPO / "ARCHITECTURE.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("| ") and "`" in line.split("|")[2]]
    named = set()
    for row in table:
        named |= {n.strip("/").removesuffix(".py") for n in re.findall(r"`([\w_]+/?|[\w_]+\.py)`", row.split("|")[2])}
    children = {p.name.removesuffix(".py") for p in (REPO / "lvvit_opt").iterdir()
                if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.name != "__init__.py")}
    assert named == children | {"passes", "whitelist"}
    layers = re.search(r"layers =\n((?:    .+\n)+)", (REPO / ".importlinter").read_text()).group(1)
    assert {n.strip() for line in layers.splitlines() for n in line.split("|")} == children | {"passes", "whitelist"}
