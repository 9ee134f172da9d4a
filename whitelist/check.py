"""`whitelist check`: which kernel atc selects for each shape, and why."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from lvvit_opt.core.errors import UserError

from lvvit_opt.whitelist.locate import locate_transpose_py
from lvvit_opt.whitelist.source import (Selection, TransposeSource, normalise_shapes, read_transpose_source,
                                        select_kernel)

logger = logging.getLogger(__name__)


@dataclass
class CheckReport:
    """The file's era and one Selection per requested shape."""

    path: Path
    era: str
    era_description: str
    selections: list[Selection]
    notes: list[str] = field(default_factory=list)

    @property
    def slow(self) -> list[Selection]:
        return [s for s in self.selections if not s.fast]

    @property
    def all_fast(self) -> bool:
        return not self.slow

    def to_dict(self) -> dict:
        return {"file": str(self.path), "era": self.era, "era_description": self.era_description,
                "all_fast": self.all_fast, "shapes": [s.to_dict() for s in self.selections],
                "notes": list(self.notes)}


def check_source(source: TransposeSource, shapes: Iterable[Iterable[int]]) -> CheckReport:
    """Check shapes against an already parsed file."""
    selections = [select_kernel(source, shape) for shape in normalise_shapes(shapes)]
    return CheckReport(source.path or Path("transpose.py"), source.era, source.era_description, selections,
                       _notes(source))


def check_shapes(file: str | os.PathLike | None, shapes: Iterable[Iterable[int]]) -> CheckReport:
    """Locate (file=None) and read transpose.py, and report the kernel each shape gets.

    An interrupted `whitelist patch` is settled first (finished or undone), so the report
    is about a file that stays as it is; a journal that cannot be settled is a warning here
    (check only reads), and patch/restore refuse it.
    """
    located = locate_transpose_py(file)
    _settle(located)
    return check_source(read_transpose_source(located), shapes)


def _settle(located: Path) -> None:
    from lvvit_opt.whitelist.patch import real_file, settle_journal, transpose_lock

    path = real_file(located)
    try:
        with transpose_lock(path):
            settle_journal(path)
    except (OSError, UserError) as exc:
        logger.warning("whitelist journal of %s not settled: %s", path, getattr(exc, "strerror", None) or exc)


def _notes(source: TransposeSource) -> list[str]:
    notes = []
    if source.single_core is not None:
        notes.append(f"single-core SoCs (core_num == 1) use their own {source.single_core.name} "
                     f"(line {source.single_core.line}); this report is for multi-core SoCs such as Ascend 310")
    if source.white_fuzzy is None:
        notes.append("this file has no white_list_shape_fuzzy (_fuzzy_match); only exact entries apply")
    if source.vcopy_shortcut:
        notes.append("on SoCs that support tik.vcopy (check_supported asks api_check_support) every static "
                     "shape gets Transpose, black list or not")
    return notes
