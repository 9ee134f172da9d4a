"""Find the CANN `transpose.py` that atc will read.

Search order:
1. `--file PATH` (used as is).
2. `$ASCEND_OPP_PATH`: this is the opp tree atc itself loads operators from, so when it
   holds a transpose.py that one wins (this is also how a patched copy made with
   `--output` is put to use).
3. Toolkit roots `$ASCEND_TOOLKIT_HOME`, `$install_path` (the seed's exports) and
   /usr/local/Ascend/ascend-toolkit/latest, each as `<root>/opp` and
   `<root>/{x86_64,aarch64,arm64}-linux/opp`.
Every opp dir is tried with both layouts (older `op_impl/built-in/...`, 8.x
`built-in/op_impl/...`). Paths are de-duplicated by their real path (`latest` is usually
a symlink); several distinct files are listed and the user is asked to pick with --file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from lvvit_opt.core.errors import UserError

LAYOUTS = (
    "op_impl/built-in/ai_core/tbe/impl/dynamic/transpose.py",   # CANN 5.x / 6.x / 7.x
    "built-in/op_impl/ai_core/tbe/impl/dynamic/transpose.py",   # CANN 8.x
)
ARCH_SUBROOTS = ("x86_64-linux", "aarch64-linux", "arm64-linux")
DEFAULT_TOOLKIT = "/usr/local/Ascend/ascend-toolkit/latest"
TOOLKIT_VARIABLES = ("ASCEND_TOOLKIT_HOME", "install_path")


def opp_dirs(environ: Mapping[str, str] | None = None,
             default_toolkit: str | os.PathLike | None = DEFAULT_TOOLKIT) -> list[tuple[str, Path]]:
    """Every (where-from label, opp dir) to try, in priority order (existing or not)."""
    environ = os.environ if environ is None else environ
    dirs: list[tuple[str, Path]] = []
    if environ.get("ASCEND_OPP_PATH"):
        dirs.append(("$ASCEND_OPP_PATH", Path(environ["ASCEND_OPP_PATH"])))
    roots = [(f"${name}", environ[name]) for name in TOOLKIT_VARIABLES if environ.get(name)]
    if default_toolkit:
        roots.append(("default toolkit", str(default_toolkit)))
    for label, root in roots:
        dirs.append((label, Path(root) / "opp"))
        dirs.extend((label, Path(root) / arch / "opp") for arch in ARCH_SUBROOTS)
    return dirs


def candidate_files(environ: Mapping[str, str] | None = None,
                    default_toolkit: str | os.PathLike | None = DEFAULT_TOOLKIT
                    ) -> tuple[list[tuple[str, Path]], list[Path]]:
    """(found (label, path) without duplicates, every path looked at)."""
    found: list[tuple[str, Path]] = []
    looked: list[Path] = []
    seen: set[str] = set()
    for label, opp in opp_dirs(environ, default_toolkit):
        for layout in LAYOUTS:
            path = opp / layout
            looked.append(path)
            if path.is_file():
                real = os.path.realpath(path)
                if real not in seen:
                    seen.add(real)
                    found.append((label, path))
    return found, looked


def locate_transpose_py(file: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None,
                        default_toolkit: str | os.PathLike | None = DEFAULT_TOOLKIT) -> Path:
    """The transpose.py to work on; UserError when there is none or the choice is ambiguous."""
    if file is not None:
        path = Path(file)
        if path.is_dir():
            raise UserError(f"--file {path} is a directory; give the transpose.py file itself")
        if not path.is_file():
            raise UserError(f"--file {path}: no such file")
        return path
    found, looked = candidate_files(environ, default_toolkit)
    from_opp_path = [path for label, path in found if label == "$ASCEND_OPP_PATH"]
    if len(from_opp_path) == 1:
        return from_opp_path[0]
    chosen = from_opp_path or [path for _, path in found]
    if len(chosen) == 1:
        return chosen[0]
    if not chosen:
        where = "\n  ".join(str(p) for p in looked)
        raise UserError("no CANN transpose.py found; pass --file PATH or set ASCEND_OPP_PATH "
                        f"(source set_env.sh). Looked in:\n  {where}")
    listing = "\n  ".join(f"{path}   ({label})" for label, path in found if path in chosen)
    raise UserError(f"several CANN transpose.py files found; pick one with --file:\n  {listing}")


def layout_relative_path(path: Path) -> str | None:
    """The path of `path` inside its opp tree ('op_impl/built-in/...'), if it follows a known layout."""
    posix = Path(path).as_posix()
    for layout in LAYOUTS:
        if posix.endswith("/" + layout) or posix == layout:
            return layout
    return None


def opp_root_of(path: Path) -> Path | None:
    """The opp dir that `path` sits in, if it follows a known layout."""
    layout = layout_relative_path(path)
    if layout is None:
        return None
    root = Path(path)
    for _ in Path(layout).parts:
        root = root.parent
    return root
