#!/usr/bin/env python3
"""Check the architecture: import-linter's contracts (.importlinter) and no private name
imported across modules. Run by scripts/test.sh before the tests; exit 1 when broken.

`passes/` and `whitelist/` live at the top of the repository but install as
`lvvit_opt.passes` and `lvvit_opt.whitelist` (setup.py's package_dir). grimp, which
import-linter builds its graph with, only walks `lvvit_opt/`, so the check runs on a view
of the installed layout: the three folders' .py files copied into one temporary
`lvvit_opt/` (a fraction of a second; symlinks would not be walked).

    python scripts/lint_imports.py [--tree DIR]   # DIR: another checkout (tests plant bad imports)
"""
from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# folder in the repository -> where it sits in the installed package
LAYOUT = {"lvvit_opt": "lvvit_opt", "passes": "lvvit_opt/passes", "whitelist": "lvvit_opt/whitelist"}


def build_view(tree: Path, view: Path) -> None:
    """Copy the package's .py files into `view` in their installed layout."""
    for source, target in LAYOUT.items():
        for path in (tree / source).rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            dest = view / target / path.relative_to(tree / source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)


def module_of(view: Path, path: Path) -> str:
    parts = list(path.relative_to(view).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def private_imports(view: Path) -> list[str]:
    """`from M import _name` where M is another lvvit_opt module (a private name crossing a
    module boundary). Private modules (`cli._base`) are import-linter's private_modules contract."""
    problems = []
    for path in sorted((view / "lvvit_opt").rglob("*.py")):
        here = module_of(view, path)
        package = here if path.name == "__init__.py" else here.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module != "lvvit_opt" and not module.startswith("lvvit_opt."):
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") and module != here:
                    problems.append(f"{here}:{node.lineno} imports the private name {alias.name} from {module}")
    return problems


def lint(tree: Path) -> int:
    """0 when every contract is kept and no private name crosses a module; 1 otherwise."""
    with tempfile.TemporaryDirectory(prefix="lvvit-lint-") as tmp:
        view = Path(tmp)
        build_view(tree, view)
        env = {**os.environ, "PYTHONPATH": str(view) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        lint_imports = Path(sys.executable).with_name("lint-imports")
        command = [str(lint_imports) if lint_imports.exists() else "lint-imports",
                   str(tree / ".importlinter"), "--no-cache"]
        status = subprocess.run(command, cwd=view, env=env).returncode
        problems = private_imports(view)
    for problem in problems:
        print(problem)
    print(f"private names imported across modules: {len(problems)}")
    return 1 if status or problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=REPO, help="the checkout to check (default: this one)")
    return lint(parser.parse_args().tree.resolve())


if __name__ == "__main__":
    sys.exit(main())
