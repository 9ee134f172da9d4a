"""The legacy `benchmark` tool's input list ("info file"): one `index path width height` line
per preprocessed `.bin`, indices from 0 in sorted order (what the seed's
`gen_dataset_info.py` writes; width and height are the model input size)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from lvvit_opt.core.errors import UserError
from lvvit_opt.core.fileio import write_text_atomic


def info_lines(bin_paths: Iterable[str | os.PathLike], width: int = 224, height: int = 224) -> list[str]:
    """`index path width height` for each path, in the order given."""
    lines = []
    for index, path in enumerate(bin_paths):
        text = str(path)
        if any(c.isspace() for c in text):
            raise UserError(f"{text}: the benchmark's info file cannot hold a path with spaces")
        lines.append(f"{index} {text} {width} {height}")
    return lines


def write_info_file(dest: str | os.PathLike, bin_paths: Iterable[str | os.PathLike],
                    width: int = 224, height: int = 224) -> Path:
    """Write the info file atomically for `bin_paths` (in the order given)."""
    lines = info_lines(bin_paths, width, height)
    write_text_atomic(dest, "".join(line + "\n" for line in lines))
    return Path(dest)


def write_info_for_dir(bin_dir: str | os.PathLike, dest: str | os.PathLike,
                       width: int = 224, height: int = 224) -> Path:
    """The seed's gen_dataset_info.py: every `*.bin` in `bin_dir`, sorted by name."""
    directory = Path(bin_dir)
    paths = sorted(directory.glob("*.bin"))
    if not paths:
        raise UserError(f"{directory}: no .bin files")
    return write_info_file(dest, paths, width, height)
