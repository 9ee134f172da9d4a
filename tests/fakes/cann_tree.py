"""Build a CANN 8.x install tree in a temporary directory, laid out like a real one.

Layout (from the public mirror of a real 8.1.RC1 install, github.com/leideng/CANN-8.1.RC1,
and an `ls -l ascend-toolkit/latest` of an 8.x host):

    <root>/ascend-toolkit/set_env.sh                                   (real content, root substituted)
    <root>/ascend-toolkit/latest -> 8.1.RC1                            (symlink)
    <root>/ascend-toolkit/8.1.RC1/aarch64-linux/ascend_toolkit_install.info
    <root>/ascend-toolkit/8.1.RC1/{compiler,opp}/version.info
    <root>/ascend-toolkit/8.1.RC1/opp/built-in/op_impl/ai_core/tbe/impl/dynamic/transpose.py
    <root>/ascend-toolkit/8.1.RC1/{python/site-packages,lib64}/
    <root>/ascend-toolkit/8.1.RC1/bin -> aarch64-linux/bin             (holds atc when with_atc)
    <root>/driver/version.info

The files come from tests/fixtures/ascend/cann/ (see its README for their sources).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CANN_FIXTURES = FIXTURES / "ascend" / "cann"
TRANSPOSE_FIXTURES = FIXTURES / "transpose"
FAKE_ATC = Path(__file__).resolve().parent / "atc"
REAL_ROOT = "/usr/local/Ascend"


@dataclass(frozen=True)
class CannTree:
    root: Path           # stands for /usr/local/Ascend
    toolkit: Path        # <root>/ascend-toolkit
    versioned: Path      # <root>/ascend-toolkit/8.1.RC1
    latest: Path         # <root>/ascend-toolkit/latest (symlink)
    set_env: Path
    transpose: Path      # the real file under versioned/opp
    driver_dir: Path

    @property
    def transpose_via_latest(self) -> Path:
        return self.latest / self.transpose.relative_to(self.versioned)


def build_cann_tree(root: str | os.PathLike, *, era: str = "blacklist", with_atc: bool = False,
                    driver_info: str | None = "driver-version-24.1.rc2.2.info", version: str = "8.1.RC1") -> CannTree:
    """Lay the tree out under `root`; era 'blacklist' or 'whitelist' picks the transpose.py fixture."""
    root = Path(root)
    toolkit = root / "ascend-toolkit"
    versioned = toolkit / version
    arch_dir = versioned / "aarch64-linux"
    (arch_dir / "bin").mkdir(parents=True)
    for sub in ("python/site-packages", "lib64", "compiler", "opp"):
        (versioned / sub).mkdir(parents=True, exist_ok=True)
    _copy(CANN_FIXTURES / "ascend_toolkit_install-8.1.RC1.info", arch_dir / "ascend_toolkit_install.info", root)
    _copy(CANN_FIXTURES / "compiler-version-8.1.RC1.info", versioned / "compiler" / "version.info", root)
    _copy(CANN_FIXTURES / "opp-version-8.1.RC1.info", versioned / "opp" / "version.info", root)
    (versioned / "bin").symlink_to("aarch64-linux/bin")
    latest = toolkit / "latest"
    latest.symlink_to(version)
    set_env = toolkit / "set_env.sh"
    _copy(CANN_FIXTURES / "set_env-8.1.RC1.sh", set_env, root)
    transpose = versioned / "opp" / "built-in" / "op_impl" / "ai_core" / "tbe" / "impl" / "dynamic" / "transpose.py"
    transpose.parent.mkdir(parents=True)
    shutil.copy(TRANSPOSE_FIXTURES / f"transpose_{era}_era.py", transpose)
    if with_atc:
        (arch_dir / "bin" / "atc").symlink_to(FAKE_ATC)
    driver_dir = root / "driver"
    driver_dir.mkdir()
    if driver_info:
        _copy(CANN_FIXTURES / driver_info, driver_dir / "version.info", root)
    return CannTree(root, toolkit, versioned, latest, set_env, transpose, driver_dir)


def _copy(source: Path, dest: Path, root: Path) -> None:
    dest.write_text(source.read_text(encoding="utf-8").replace(REAL_ROOT, str(root)), encoding="utf-8")
