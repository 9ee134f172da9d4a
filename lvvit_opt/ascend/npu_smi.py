"""Read the NPU model from `npu-smi info` and turn it into atc's `--soc_version`."""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from typing import Mapping

from ..errors import UserError
from .cann import find_tool

# first cell "NPU  Name" of an NPU row, e.g. "0       310" or "1       310P3"
_NPU_CELL = re.compile(r"^(\d+)\s+([0-9][0-9A-Za-z]*)$")
_HEALTH_CELL = re.compile(r"^[A-Za-z][A-Za-z ]*$")  # OK, Warning, Alarm, Critical, ...


@dataclass(frozen=True)
class NpuInfo:
    npu_id: int
    name: str  # e.g. "310", "310P3", "910B3"
    health: str

    @property
    def soc_version(self) -> str:
        return f"Ascend{self.name}"


def parse_npu_smi_info(text: str) -> list[NpuInfo]:
    """NPU rows of an `npu-smi info` table (the chip/bus-id and process rows are skipped)."""
    npus = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3:
            continue
        match = _NPU_CELL.match(cells[0])
        if match and _HEALTH_CELL.match(cells[1]):
            npus.append(NpuInfo(int(match.group(1)), match.group(2), cells[1]))
    return npus


def soc_version_from_table(text: str, npu_id: int | None = None) -> str:
    """`Ascend<name>` of the given NPU (default: the first one listed)."""
    npus = parse_npu_smi_info(text)
    if npu_id is not None:
        npus = [n for n in npus if n.npu_id == npu_id]
    if not npus:
        which = "" if npu_id is None else f" with id {npu_id}"
        raise UserError(f"no NPU{which} in the `npu-smi info` table; pass --soc-version (e.g. Ascend310)")
    return npus[0].soc_version


def detect_soc_version(env: Mapping[str, str] | None = None, npu_id: int | None = None) -> str:
    """Run `npu-smi info` and return e.g. 'Ascend310'; a UserError asking for --soc-version otherwise."""
    tool = find_tool("npu-smi", env)
    if tool is None:
        raise UserError("cannot detect the SoC: npu-smi not found (no Ascend driver here); "
                        "pass --soc-version, e.g. --soc-version Ascend310")
    try:
        proc = subprocess.run([str(tool), "info"], env=None if env is None else dict(env),
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"cannot detect the SoC: `npu-smi info` failed ({exc}); pass --soc-version") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        reason = detail[-1] if detail else f"exit {proc.returncode}"
        raise UserError(f"cannot detect the SoC: `npu-smi info` failed ({reason}); "
                        "pass --soc-version, e.g. --soc-version Ascend310")
    return soc_version_from_table(proc.stdout, npu_id)
