"""tune's `whitelist` dimension for Ascend: a private opp tree whose transpose.py is patched.

atc reads every operator implementation from $ASCEND_OPP_PATH. A `patched` candidate is
compiled against a tree under --out that mirrors the installed opp tree, with
lvvit-opt's whitelist package writing a patched copy of transpose.py into it (patch_file's
output= form: the installed file, which is usually root-owned, is only read). The user's
CANN install is never written.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from lvvit_opt.core.errors import UserError
from lvvit_opt.core.plan import refuse_symlinked_components

OPP_DIR = "whitelist_opp"   # under --out: one private opp tree per distinct shape set


@dataclass
class PrivateOpp:
    """The opp tree a `patched` candidate compiles against (root None: the patch adds nothing here)."""

    shapes: list[tuple[int, ...]]
    installed: Path            # the transpose.py atc reads as installed
    installed_opp: Path        # its opp tree ($ASCEND_OPP_PATH as installed)
    root: Path | None = None   # the private opp tree
    transpose: Path | None = None
    added: list = field(default_factory=list)
    message: str = ""

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """`base` with ASCEND_OPP_PATH at the private tree, and the private twin of every PYTHONPATH
        entry inside the installed opp tree put first (set_env.sh puts opp/.../tbe on PYTHONPATH, so an
        `impl` package imported from there would bypass ASCEND_OPP_PATH; unverified on real CANN which
        route atc's kernel selection takes, so both lead to the patched file)."""
        env = dict(base)
        if self.root is None:
            return env
        env["ASCEND_OPP_PATH"] = str(self.root)
        twins = self.pythonpath_twins(base)
        if twins:
            env["PYTHONPATH"] = os.pathsep.join(twins + ([base["PYTHONPATH"]] if base.get("PYTHONPATH") else []))
        return env

    def pythonpath_twins(self, base: Mapping[str, str]) -> list[str]:
        out = []
        opp = os.path.abspath(self.installed_opp)
        for entry in (base.get("PYTHONPATH") or "").split(os.pathsep):
            absolute = os.path.abspath(entry) if entry else ""
            if absolute and (absolute + os.sep).startswith(opp + os.sep) and self.root is not None:
                out.append(str(self.root / os.path.relpath(absolute, opp)))
        return out

    def reproduce(self, base: Mapping[str, str], script) -> None:
        """Add to `script` (core.shell.ShellScript) the commands that build the same tree by hand and
        point atc at it (nothing when there is no tree)."""
        from lvvit_opt.whitelist.locate import layout_relative_path

        if self.root is None:
            return
        layout = layout_relative_path(self.transpose) or self.installed.name
        root, opp = script.path(self.root), os.path.abspath(self.installed_opp)
        shapes = [word for s in self.shapes for word in ("--shape", ",".join(map(str, s)))]
        script.comment(f"whitelist patched: atc reads operators from a copy of {self.installed_opp} (symlinks) whose "
                       f"transpose.py is patched; {self.installed} is left as it is")
        script.run(["rm", "-rf", "--", root])
        script.run(["mkdir", "-p", "--", root])
        script.run(["cp", "-rs", "--", os.path.join(opp, "."), root + "/"])
        script.run(["rm", "-f", "--", os.path.join(root, layout)])
        script.run(["lvvit-opt", "whitelist", "patch", "--file", script.path(self.installed), *shapes,
                    "--output", os.path.join(root, layout)])
        script.export("ASCEND_OPP_PATH", [self.root])
        twins = self.pythonpath_twins(base)
        if twins:
            script.export("PYTHONPATH", twins, append_existing=True)


def installed_transpose(env: Mapping[str, str]) -> tuple[Path, Path]:
    """(transpose.py, its opp tree) atc would read with `env`; UserError when there is none."""
    from lvvit_opt.whitelist.locate import locate_transpose_py, opp_root_of

    path = locate_transpose_py(None, env)
    opp = opp_root_of(path)
    if opp is None:  # located files always follow a known layout; kept for a clear message
        raise UserError(f"{path}: not inside a known opp tree layout")
    return path, opp


def build_private_opp(installed: Path, installed_opp: Path, shapes: Sequence[Sequence[int]],
                      out: Path) -> PrivateOpp:
    """The private tree for `shapes` under out/OPP_DIR/<hash> (rebuilt each run), or root None when
    the installed file already selects the fast kernel for all of them (or cannot be patched: a
    black-list-era file), with why in `message`."""
    from lvvit_opt.whitelist import patch_file
    from lvvit_opt.whitelist.locate import layout_relative_path

    shapes = [tuple(int(d) for d in s) for s in shapes]
    result = PrivateOpp(shapes, installed, installed_opp)
    if not shapes:
        result.message = "the model has no static Transpose shape to whitelist"
        return result
    layout = layout_relative_path(installed)
    digest = hashlib.sha256(repr((str(installed), sorted(shapes))).encode()).hexdigest()[:12]
    root = Path(out) / OPP_DIR / digest
    refuse_symlinked_components("--out", out, root)  # a symlinked OUT/whitelist_opp must not lead the rmtree out
    if root.is_symlink() or root.is_file():
        root.unlink()
    elif root.exists():
        shutil.rmtree(root)   # ours (named by the hash); symlinks inside are removed, never followed
    _mirror(installed_opp, root, layout)
    dest = root / layout
    patched = patch_file(installed, shapes, output=dest)
    result.message, result.added = patched.message, list(patched.added)
    if not patched.added or patched.written is None:
        shutil.rmtree(root)
        return result
    result.root, result.transpose = root, dest
    return result


def _mirror(source: Path, dest: Path, layout: str) -> None:
    """dest as a stand-in for the opp tree `source`: real directories along `layout` (the path to
    transpose.py), every other entry a symlink to the installed one, so atc finds the whole opp tree
    while nothing of it is copied or written. transpose.py itself is left out (the patched copy goes
    there) and so is __pycache__ (Python must not write bytecode into the installed tree)."""
    parts = Path(layout).parts
    here_src, here_dst = Path(os.path.abspath(source)), dest
    here_dst.mkdir(parents=True)
    for depth, part in enumerate(parts):
        for entry in sorted(os.listdir(here_src)):
            if entry == part or entry == "__pycache__":
                continue
            (here_dst / entry).symlink_to(here_src / entry)
        if depth == len(parts) - 1:
            break
        here_src, here_dst = here_src / part, here_dst / part
        here_dst.mkdir()
