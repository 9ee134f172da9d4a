"""Find a CANN toolkit and build the environment its tools need, without touching ours.

Search order for the toolkit root: an explicit `cann_home`, `$ASCEND_TOOLKIT_HOME`,
`$ASCEND_HOME_PATH` (both exported by 8.x set_env.sh), `$install_path` (the seed's variable), then
`/usr/local/Ascend/ascend-toolkit/latest` and, for non-root installs, `~/Ascend/ascend-toolkit/latest`.
When the toolkit ships a `set_env.sh` it is sourced in a child bash and the resulting environment
captured (a script that stops early still yields what it had exported, with a warning); otherwise the
layout's own exports are applied to a copy (the seed's `install_path` block for 5.x `atc/` trees).
"""
from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from lvvit_opt.core.errors import ToolFailed, UserError

log = logging.getLogger(__name__)

DEFAULT_TOOLKIT_HOME = "/usr/local/Ascend/ascend-toolkit/latest"
USER_TOOLKIT_HOME = "~/Ascend/ascend-toolkit/latest"  # where a non-root install goes
TOOLKIT_ENV_VARS = ("ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH", "install_path")


class ToolNotFound(UserError):
    """An Ascend program (atc, npu-smi, benchmark, ...) is not installed here."""


@dataclass(frozen=True)
class CannToolkit:
    """A CANN toolkit root and the way its environment is set up."""

    home: Path
    set_env: Path | None  # set_env.sh to source, or None for the seed's manual exports
    source: str  # where the root came from: "--cann-home", "$ASCEND_TOOLKIT_HOME", ...


def find_cann(cann_home: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None,
              default_home: str | os.PathLike | None = DEFAULT_TOOLKIT_HOME) -> CannToolkit | None:
    """Locate the toolkit root; None when no candidate exists (tools may still be on PATH).

    An explicit `cann_home` that does not exist is a UserError, not a silent fallback.
    """
    environ = os.environ if environ is None else environ
    if cann_home is not None:
        home = Path(cann_home).expanduser()
        if not home.is_dir():
            raise UserError(f"--cann-home {home}: no such directory")
        return CannToolkit(home, find_set_env(home), "--cann-home")
    for var in TOOLKIT_ENV_VARS:
        value = environ.get(var)
        if value and Path(value).is_dir():
            return CannToolkit(Path(value), find_set_env(Path(value)), f"${var}")
    if default_home and Path(default_home).is_dir():
        return CannToolkit(Path(default_home), find_set_env(Path(default_home)), "default")
    return None


def find_set_env(home: Path) -> Path | None:
    """set_env.sh sits in the versioned root or in its parent (ascend-toolkit/set_env.sh)."""
    for candidate in (home / "set_env.sh", home.parent / "set_env.sh", home / "bin" / "setenv.bash"):
        if candidate.is_file():
            return candidate
    return None


def seed_exports(install_path: str | os.PathLike, base: Mapping[str, str]) -> dict[str, str]:
    """The seed's `export install_path=...` block applied to a copy of `base`."""
    root = str(install_path)
    env = dict(base)
    env["install_path"] = root
    env["PATH"] = _join(f"{root}/atc/ccec_compiler/bin", f"{root}/atc/bin", base.get("PATH"))
    env["PYTHONPATH"] = _join(f"{root}/atc/python/site-packages", base.get("PYTHONPATH"))
    env["LD_LIBRARY_PATH"] = _join(f"{root}/atc/lib64", f"{root}/acllib/lib64", base.get("LD_LIBRARY_PATH"))
    env["ASCEND_OPP_PATH"] = f"{root}/opp"
    env["ASCEND_AICPU_PATH"] = root
    return env


def toolkit_exports(home: str | os.PathLike, base: Mapping[str, str]) -> dict[str, str]:
    """What set_env.sh would export, for a toolkit without one: the 5.x `atc/` layout gets the seed's block,
    a 7.x/8.x tree (`bin/atc`, `compiler/`) the variables and directories of the real 8.1.RC1 set_env.sh
    (tests/fixtures/ascend/cann/set_env-8.1.RC1.sh), in its order."""
    root = Path(home)
    if not ((root / "bin" / "atc").exists() or (root / "compiler").is_dir()):
        return seed_exports(root, base)
    text = str(root)
    tiling = f"{text}/opp/built-in/op_impl/ai_core/tbe/op_tiling/lib/linux/{platform.machine()}"  # $(arch)
    env = dict(base)
    env.update(ASCEND_TOOLKIT_HOME=text, ASCEND_HOME_PATH=text, ASCEND_OPP_PATH=f"{text}/opp",
               ASCEND_AICPU_PATH=text, TOOLCHAIN_HOME=f"{text}/toolkit")
    env["LD_LIBRARY_PATH"] = _join(f"{text}/tools/aml/lib64", f"{text}/tools/aml/lib64/plugin", f"{text}/lib64",
                                   f"{text}/lib64/plugin/opskernel", f"{text}/lib64/plugin/nnengine", tiling,
                                   base.get("LD_LIBRARY_PATH"))
    env["PYTHONPATH"] = _join(f"{text}/python/site-packages", f"{text}/opp/built-in/op_impl/ai_core/tbe",
                              base.get("PYTHONPATH"))
    env["PATH"] = _join(f"{text}/bin", f"{text}/compiler/ccec_compiler/bin", f"{text}/tools/ccec_compiler/bin",
                        base.get("PATH"))
    return env


# An EXIT trap prints the environment even when set_env.sh calls `exit`; `|| true` keeps an internal `set -e`
# from ending the shell early (one CANN release's set_env.sh stops midway on an empty /etc/ascend_install.info).
_SOURCE_SCRIPT = 'trap "env -0" EXIT; source "$1" >/dev/null 2>&1 || true'


def source_set_env(script: Path, base: Mapping[str, str]) -> dict[str, str]:
    """Source `script` in a child bash started with `base` and return the environment it leaves."""
    bash = shutil.which("bash", path=base.get("PATH")) or shutil.which("bash") or "/bin/bash"
    try:
        proc = subprocess.run([bash, "-c", _SOURCE_SCRIPT, "lvvit-opt", str(script)],
                              env=dict(base), capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolFailed(f"could not source {script}: {exc}") from None
    env = {}
    for item in proc.stdout.split(b"\0"):
        key, sep, value = item.decode("utf-8", "replace").partition("=")
        if sep and key:
            env[key] = value
    if not env:
        raise ToolFailed(f"sourcing {script} failed (exit {proc.returncode}, no environment came back)")
    if proc.returncode != 0:
        log.warning("%s stopped with exit %s; using the variables it had exported by then", script, proc.returncode)
    return env


def build_cann_env(toolkit: CannToolkit | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for atc/benchmark: a new dict; `base` (default os.environ) is not modified."""
    base = dict(os.environ if base is None else base)
    if toolkit is None:
        return base
    if toolkit.set_env is not None:
        return source_set_env(toolkit.set_env, base)
    return toolkit_exports(toolkit.home, base)


def cann_environment(cann_home: str | os.PathLike | None = None,
                     base: Mapping[str, str] | None = None) -> dict[str, str]:
    """find_cann + build_cann_env in one call."""
    base = dict(os.environ if base is None else base)
    toolkit = find_cann(cann_home, base) or find_cann(None, base, default_home=os.path.expanduser(USER_TOOLKIT_HOME))
    return build_cann_env(toolkit, base)


def find_tool(name: str, env: Mapping[str, str] | None = None,
              extra_dirs: Iterable[str | os.PathLike] = ()) -> Path | None:
    """An executable named `name` on env's PATH, else in `extra_dirs` (e.g. the working directory)."""
    env = os.environ if env is None else env
    found = shutil.which(name, path=env.get("PATH", ""))
    if found:
        return Path(found)
    for folder in extra_dirs:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate.resolve()
    return None


def require_tool(name: str, env: Mapping[str, str] | None = None, extra_dirs: Iterable[str | os.PathLike] = (),
                 hint: str = "") -> Path:
    """find_tool or raise ToolNotFound with `hint` appended."""
    found = find_tool(name, env, extra_dirs)
    if found is None:
        message = f"{name} not found on PATH (is the CANN toolkit installed and its set_env.sh sourced?)"
        raise ToolNotFound(message + (f"\n{hint}" if hint else ""))
    return found


def _join(*parts: str | None) -> str:
    return os.pathsep.join(p for p in parts if p)
