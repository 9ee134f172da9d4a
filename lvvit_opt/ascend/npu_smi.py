"""Read the NPU model from `npu-smi` and turn it into atc's `--soc_version`.

`npu-smi info` prints two rows per chip: `| NPU  Name | Health | ...` then `| Chip  Device | Bus-Id | ...`
(the second header reads `Chip Device`, `Chip Phy-ID` or just `Chip` depending on the driver). The Name cell
is not always enough: 310/310P3/910B3 tables name the SoC, but 910-A3 tables print `Ascend910`, a bare
`910B` hides the suffix, and the vendor's own documentation prints `xxx`. For those, the documented way is
`npu-smi info -t board -i NPU -c CHIP` (A2: `Chip Type` + `Chip Name` -> Ascend910B4; A3: `Chip Name` +
`_` + `NPU Name` -> Ascend910_9392), then `npu-smi info -m` (`Chip Name` column, e.g. `Ascend 910B3`).
If the SoC is still unknown the user is asked for --soc-version with the candidates (exit 2).
"""
from __future__ import annotations

import logging
import re
import subprocess
from dataclasses import dataclass
from typing import Mapping, Sequence

from lvvit_opt.core.errors import UserError
from lvvit_opt.core.cann import find_tool

log = logging.getLogger(__name__)

HEALTHY = "OK"
# Name cells that are a complete atc SoC suffix on their own (Ascend + name).
_EXACT_SOC = re.compile(r"^(310|310[PB]\d|910[A-Z]\d+[A-Z]?|910A|910ProA|910ProB|910PremiumA)$")
_A3_SOC = re.compile(r"^Ascend910_\d{4}$")
_NPU_CELL = re.compile(r"^(\d+)\s+(\S(?:.*\S)?)$")  # "0       310P3", "2048    310", "0     Ascend910"
_CHIP_CELL = re.compile(r"^(\d+)(?:\s+(\d+))?$")  # "0       0" (Chip Device / Chip Phy-ID) or "0" (Chip)
_HEALTH = re.compile(r"^[A-Za-z][A-Za-z ]*$")  # OK, Warning, Alarm, Critical, UNKNOWN
_VERSION = re.compile(r"npu-smi\s+(\S+)\s+Version:\s*(\S+)")
_BOARD_LINE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9 ()/%-]*?)\s*:\s*(.*?)\s*$")
SET_SOC_HINT = "pass --soc-version (atc's --soc_version), e.g. --soc-version Ascend310P3"


@dataclass(frozen=True)
class NpuChip:
    """One chip of an `npu-smi info` table: the NPU (card) row and the chip row under it."""

    npu_id: int  # the NPU column: what `npu-smi info -t ... -i` takes
    name: str  # as printed: "310", "310P3", "910B3", "Ascend910", "xxx"
    health: str
    chip_id: int | None = None  # `-c` of npu-smi
    device_id: int | None = None  # "Device" / "Phy-ID" column when the table has one
    bus_id: str | None = None

    @property
    def healthy(self) -> bool:
        return self.health == HEALTHY

    @property
    def soc_version(self) -> str | None:
        """`Ascend<name>` when the Name cell alone names the SoC, else None (ask npu-smi more)."""
        return soc_from_name(self.name)


# Kept for callers of the first version of this module.
NpuInfo = NpuChip


@dataclass(frozen=True)
class NpuSmiTable:
    version: str | None  # npu-smi / driver version from the first line, None when the paste lacks it
    chip_header: str | None  # "Chip Device", "Chip Phy-ID", "Chip"
    chips: tuple[NpuChip, ...]


def soc_from_name(name: str) -> str | None:
    """atc SoC for a Name cell or a `Chip Name` value: 310P3 -> Ascend310P3, `Ascend 910B3` -> Ascend910B3.

    None for names that do not pin the SoC down (Ascend910 on A3 hosts, a bare 910B, redacted names).
    """
    text = re.sub(r"\s+", "", name or "")
    base = text[len("Ascend"):] if text.startswith("Ascend") else text
    if _EXACT_SOC.match(base):
        return "Ascend" + base
    return text if _A3_SOC.match(text) else None


def parse_npu_smi_table(text: str) -> NpuSmiTable:
    """The chips of an `npu-smi info` table, in order; the process table below it is ignored.

    Tolerates pasted tables: missing version line, leading prompt/comment lines, a cut-off last row.
    """
    version = chip_header = None
    chips: list[NpuChip] = []
    pending: tuple[int, str, str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if version is None and (match := _VERSION.search(stripped)):
            version = match.group(2)
        if not stripped.startswith("|"):
            continue
        cells = [c.strip() for c in stripped.strip("|").split("|")]
        first = re.sub(r"\s+", " ", cells[0])
        if first.startswith("NPU") and any(c.startswith("Process") for c in cells[1:]):
            break  # the process table repeats "NPU Chip" rows; they are not chips
        if first.startswith("Chip") and len(cells) > 1 and cells[1].startswith("Bus-Id"):
            chip_header = first
            continue
        if len(cells) < 2:
            continue
        if (match := _NPU_CELL.match(cells[0])) and _HEALTH.match(cells[1]) and cells[1] != "NA":
            if pending:
                chips.append(NpuChip(*pending))
            pending = (int(match.group(1)), match.group(2), cells[1])
        elif pending and (match := _CHIP_CELL.match(cells[0])):
            device = match.group(2)
            bus = cells[1] if cells[1] and cells[1] != "NA" else None
            chips.append(NpuChip(*pending, chip_id=int(match.group(1)),
                                 device_id=int(device) if device is not None else None, bus_id=bus))
            pending = None
    if pending:
        chips.append(NpuChip(*pending))
    return NpuSmiTable(version, chip_header, tuple(chips))


def parse_npu_smi_info(text: str) -> list[NpuChip]:
    """The chips (NPU row + chip row) of an `npu-smi info` table."""
    return list(parse_npu_smi_table(text).chips)


def parse_board_info(text: str) -> dict[str, str]:
    """`npu-smi info -t board -i N -c C` as a dict (`Chip Name` -> `910B4`, `NPU Name` -> `9392`, ...)."""
    fields = {}
    for line in text.splitlines():
        match = _BOARD_LINE.match(line)
        if match and not line.lstrip().startswith("#"):
            fields.setdefault(match.group(1), match.group(2))
    return fields


def soc_from_board(fields: Mapping[str, str]) -> str | None:
    """The documented rule: A3 -> `{Chip Name}_{NPU Name}`, A2 and others -> `{Chip Type}{Chip Name}`."""
    chip_name = fields.get("Chip Name", "").strip()
    npu_name = fields.get("NPU Name", "").strip()
    if chip_name and npu_name and npu_name.upper() not in ("NA", "N/A", "-"):
        candidate = f"{chip_name}_{npu_name}"
        return candidate if _A3_SOC.match(candidate) else None
    chip_type = fields.get("Chip Type", "").strip()
    if chip_type.lower() == "mcu":
        return None
    return soc_from_name(chip_name if chip_name.startswith("Ascend") else chip_type + chip_name) \
        or soc_from_name(chip_name)


@dataclass(frozen=True)
class ChipMapping:
    npu_id: int
    chip_id: int
    logic_id: int | None  # None for the MCU rows ("-")
    name: str  # "Ascend 910B3", "Mcu"


def parse_npu_smi_mapping(text: str) -> list[ChipMapping]:
    """`npu-smi info -m` rows: NPU ID, Chip ID, Chip Logic ID (`-` for the MCU), [Chip Phy-ID,] Chip Name."""
    rows = []
    numeric = 3
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("NPU ID"):
            numeric = len(re.findall(r"\bID\b", stripped))  # NPU ID, Chip ID, Chip Logic ID[, Chip Phy-ID]
            continue
        tokens = stripped.split()
        if len(tokens) <= numeric or not tokens[0].isdigit() or not tokens[1].isdigit():
            continue
        ids = tokens[:numeric]
        if any(not (t.isdigit() or t == "-") for t in ids):
            continue
        rows.append(ChipMapping(int(ids[0]), int(ids[1]), int(ids[2]) if ids[2].isdigit() else None,
                                " ".join(tokens[numeric:])))
    return rows


class SocVersionUnknown(UserError):
    """npu-smi answered, but which --soc_version to pass cannot be told without the user."""


def soc_version_from_table(text: str, npu_id: int | None = None) -> str:
    """`Ascend<name>` of the given NPU (default: the first healthy one) from the table alone.

    Raises SocVersionUnknown when the table lists no chip or the name does not pin the SoC down.
    """
    chip = select_chip(parse_npu_smi_info(text), npu_id)
    soc = chip.soc_version
    if soc is None:
        raise SocVersionUnknown(_ambiguous_message(chip, []))
    return soc


def select_chip(chips: Sequence[NpuChip], npu_id: int | None = None) -> NpuChip:
    """The chip to compile for: NPU `npu_id`, else the first healthy one (a warning names unhealthy ones)."""
    if not chips:
        raise SocVersionUnknown("`npu-smi info` printed no NPU rows (driver not loaded, or no device visible "
                                f"to this container?); {SET_SOC_HINT}")
    for chip in chips:
        if not chip.healthy:
            log.warning("npu-smi: NPU %s chip %s reports health %r", chip.npu_id, chip.chip_id, chip.health)
    if npu_id is not None:
        matching = [c for c in chips if c.npu_id == npu_id]
        if not matching:
            ids = ", ".join(str(i) for i in dict.fromkeys(c.npu_id for c in chips))
            raise SocVersionUnknown(f"no NPU with id {npu_id} in the `npu-smi info` table (it lists {ids}); "
                                    f"{SET_SOC_HINT}")
        return matching[0]
    names = {c.name for c in chips}
    if len(names) > 1:
        raise SocVersionUnknown(f"`npu-smi info` lists different chips ({', '.join(sorted(names))}); "
                                f"{SET_SOC_HINT}")
    return next((c for c in chips if c.healthy), chips[0])


def detect_soc_version(env: Mapping[str, str] | None = None, npu_id: int | None = None) -> str:
    """Run `npu-smi info` (then `-t board` and `-m` when needed) and return e.g. 'Ascend310P3'.

    UserError (exit 2) when npu-smi is missing or fails; SocVersionUnknown listing what npu-smi said when
    the SoC stays ambiguous.
    """
    tool = find_tool("npu-smi", env)
    if tool is None:
        raise UserError("cannot detect the SoC: npu-smi not found (no Ascend driver here); "
                        "pass --soc-version, e.g. --soc-version Ascend310")
    table = parse_npu_smi_table(_run_npu_smi(str(tool), ["info"], env, required=True))
    chip = select_chip(table.chips, npu_id)
    if chip.soc_version:
        return chip.soc_version
    tried: list[str] = []
    if chip.chip_id is not None:
        args = ["info", "-t", "board", "-i", str(chip.npu_id), "-c", str(chip.chip_id)]
        fields = parse_board_info(_run_npu_smi(str(tool), args, env) or "")
        soc = soc_from_board(fields)
        if soc:
            log.info("npu-smi %s -> %s", " ".join(args), soc)
            return soc
        if fields:
            shown = ", ".join(f"{k}: {fields[k]}" for k in ("Chip Type", "Chip Name", "NPU Name") if k in fields)
            tried.append(f"`npu-smi {' '.join(args)}` ({shown or 'no Chip Name'})")
    for row in parse_npu_smi_mapping(_run_npu_smi(str(tool), ["info", "-m"], env) or ""):
        if row.npu_id == chip.npu_id and (chip.chip_id is None or row.chip_id == chip.chip_id):
            soc = soc_from_name(row.name)
            if soc:
                return soc
            tried.append(f"`npu-smi info -m` Chip Name {row.name!r}")
            break
    raise SocVersionUnknown(_ambiguous_message(chip, tried))


def soc_candidates(name: str) -> list[str]:
    """What a Name cell that does not pin the SoC down may stand for (for the error message)."""
    base = re.sub(r"\s+", "", name)
    base = base[len("Ascend"):] if base.startswith("Ascend") else base
    if base == "910":  # A3 hosts print "Ascend910"; the SoC is Ascend910_<NPU Name of `-t board`>
        return ["Ascend910_9392 (or another Ascend910_<NPU Name>)"]
    if base == "910B":
        return ["Ascend910B1", "Ascend910B2", "Ascend910B3", "Ascend910B4", "Ascend910B"]
    if base.startswith("310P"):
        return ["Ascend310P1", "Ascend310P3"]
    if base.startswith("310B"):
        return ["Ascend310B1", "Ascend310B4"]
    return []


def _ambiguous_message(chip: NpuChip, tried: Sequence[str]) -> str:
    candidates = soc_candidates(chip.name)
    parts = [f"cannot tell atc's --soc_version from NPU {chip.npu_id}'s name {chip.name!r} in `npu-smi info`"]
    if tried:
        parts.append("also asked: " + "; ".join(tried))
    if candidates:
        parts.append("candidates: " + ", ".join(candidates))
    example = candidates[0].split()[0] if candidates else "Ascend310P3"
    parts.append(f"pass --soc-version with the right one, e.g. --soc-version {example} "
                 "(`npu-smi info -t board -i N -c 0`: A2 -> Ascend{Chip Name}, A3 -> {Chip Name}_{NPU Name})")
    return "; ".join(parts)


def _run_npu_smi(tool: str, args: list[str], env: Mapping[str, str] | None, required: bool = False) -> str | None:
    """stdout of `npu-smi ARGS`; None (or UserError when `required`) if it fails."""
    try:
        proc = subprocess.run([tool] + args, env=None if env is None else dict(env),
                              capture_output=True, text=True, errors="replace", timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        if required:
            raise UserError(f"cannot detect the SoC: `npu-smi {' '.join(args)}` failed ({exc}); "
                            "pass --soc-version") from None
        return None
    if proc.returncode != 0:
        if required:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            reason = detail[-1] if detail else f"exit {proc.returncode}"
            raise UserError(f"cannot detect the SoC: `npu-smi {' '.join(args)}` failed ({reason}); "
                            "pass --soc-version, e.g. --soc-version Ascend310")
        log.debug("npu-smi %s failed (exit %s)", " ".join(args), proc.returncode)
        return None
    return proc.stdout
