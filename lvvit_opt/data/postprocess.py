"""Top-1 / top-5 accuracy from inference outputs, paired with labels by image stem.

Reads both tools' output directories:
- legacy `benchmark`: `<stem>_1.txt` (space-separated floats) or `<stem>_1.bin`;
- ais_bench: `<stem>_0.bin` / `<stem>_0.npy` / `<stem>_0.txt`, usually inside a
  `<timestamp>/` folder of the `--output` directory.

The seed paired the sorted listing of outputs with the lines of val.txt by position, so a
missing or extra file shifted every later pair. Here each output is matched to the label
of the image with the same stem; outputs without a label and labels without an output are
counted and reported, never silently paired.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

import numpy as np

from lvvit_opt.core.errors import UserError, shown
from lvvit_opt.core.fileio import require_regular_file
from lvvit_opt.data.images import image_stem
from lvvit_opt.data.scoring import EXAMPLES, AccuracyResult, score_predictions, top_k

RESULT_FILE = re.compile(r"^(?P<stem>.+)_(?P<index>\d+)\.(?P<ext>txt|bin|npy)$")


# -- labels ------------------------------------------------------------------------------

def read_labels(path: str | os.PathLike) -> dict[str, int]:
    """val.txt (`<image file name> <class index>` a line) -> {image stem: class}.

    Blank lines are ignored; anything else that does not fit is a UserError naming the line.
    """
    path = require_regular_file(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is not part of the first name
    except OSError as exc:
        raise UserError(f"{shown(path)}: cannot read labels ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise UserError(f"{shown(path)}: not a text file") from None
    labels: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        stem, label = _parse_label_line(line, f"{path}:{number}")
        if stem in labels:
            raise UserError(f"{path}:{number}: {stem} is labelled twice")
        labels[stem] = label
    if not labels:
        raise UserError(f"{shown(path)}: no labels")
    return labels


def check_label_range(labels: Mapping[str, int], classes: int | None, where: str = "labels") -> None:
    """UserError when a label is not a class of the model (0..classes-1): a wrong labels file
    would otherwise only look like misses."""
    if not classes:
        return
    outside = sorted((label, stem) for stem, label in labels.items() if not 0 <= label < classes)
    if outside:
        examples = ", ".join(f"{stem} -> {label}" for label, stem in outside[:EXAMPLES])
        raise UserError(f"{where}: {len(outside)} label(s) outside the model's {classes} classes "
                        f"(0..{classes - 1}), e.g. {examples}; wrong labels file for this model?")


def labels_by_stem(labels: Mapping[str, int]) -> dict[str, int]:
    """{image file name or stem: class} -> {stem: class}."""
    return {image_stem(name): int(label) for name, label in labels.items()}


def _parse_label_line(line: str, where: str) -> tuple[str, int]:
    fields = line.split()
    if len(fields) != 2 or not fields[1].isdigit():
        raise UserError(f"{where}: expected '<image name> <class index>', got {line.strip()[:120]!r}")
    return image_stem(fields[0]), int(fields[1])


# -- reading outputs ---------------------------------------------------------------------

def find_result_files(result_dir: str | os.PathLike) -> tuple[dict[str, Path], list[str]]:
    """{image stem: output file} for one model output, plus notes on what was chosen.

    Looks in `result_dir`; if it holds no output files but exactly one subdirectory does
    (ais_bench's `<timestamp>/`), looks there. With several output indices (a model with
    several outputs), the lowest index is used.
    """
    directory = Path(result_dir)
    if not directory.is_dir():
        raise UserError(f"{directory}: not a directory")
    notes: list[str] = []
    matches = _result_matches(directory)
    if not matches:
        candidates = [d for d in sorted(directory.iterdir()) if d.is_dir() and _result_matches(d)]
        if len(candidates) > 1:
            raise UserError(f"{directory}: several runs inside ({', '.join(d.name for d in candidates[:4])}); "
                            f"pass one of them")
        if not candidates:
            raise UserError(f"{directory}: no output files (<stem>_1.txt, <stem>_1.bin, <stem>_0.bin, <stem>_0.npy)")
        directory = candidates[0]
        notes.append(f"read outputs from {directory}")
        matches = _result_matches(directory)
    index = min(int(m["index"]) for m in matches)
    if any(int(m["index"]) != index for m in matches):
        notes.append(f"several output indices present; used output {index}")
    files: dict[str, Path] = {}
    for match in matches:
        if int(match["index"]) != index:
            continue
        stem = match["stem"]
        if stem in files:
            raise UserError(f"{directory}: two outputs for {stem}: {files[stem].name} and {match.string}")
        files[stem] = directory / match.string
    return files, notes


def _result_matches(directory: Path) -> list[re.Match]:
    return [m for m in (RESULT_FILE.match(p.name) for p in directory.iterdir()) if m and (directory / m.string).is_file()]


def read_scores(path: str | os.PathLike, dtype: str = "float32") -> np.ndarray:
    """One output file -> 1-D float array (txt: whitespace-separated; bin: raw `dtype`; npy)."""
    path = Path(path)
    suffix = path.suffix
    if suffix == ".npy":
        scores = np.load(path, allow_pickle=False)
    elif suffix == ".bin":
        scores = np.fromfile(path, dtype=dtype)
    else:
        scores = np.array(path.read_text(encoding="ascii").split(), dtype=np.float64)
    scores = np.asarray(scores).reshape(-1)
    if scores.size == 0:
        raise ValueError("empty file (zero bytes or no values)")
    if not np.issubdtype(scores.dtype, np.number):
        raise ValueError(f"not numbers ({scores.dtype})")
    if not np.isfinite(scores).all():
        bad = int(np.count_nonzero(~np.isfinite(scores)))
        raise ValueError(f"{bad} of {scores.size} scores are NaN or infinite")
    return scores


def postprocess(result_dir: str | os.PathLike, labels: str | os.PathLike | Mapping[str, int], *,
                dtype: str = "float32", shard=None) -> AccuracyResult:
    """Top-1/top-5 of the outputs in `result_dir` against `labels` (a val.txt path or a dict).

    `dtype` is the element type of `.bin` outputs. All outputs must hold the same number of
    classes; files that cannot be read or hold a different count are listed in `unreadable`.
    `shard` (data.shard.Shard): only the outputs and labels of that shard; the result then
    carries what `merge` needs.
    """
    all_labels = read_labels(labels) if isinstance(labels, (str, os.PathLike)) else labels_by_stem(labels)
    label_map = all_labels
    files, notes = find_result_files(result_dir)
    listed = len(files)
    if shard is not None:
        files = {stem: path for stem, path in files.items() if shard.holds(stem)}
        label_map = {stem: label for stem, label in all_labels.items() if shard.holds(stem)}
        notes.append(f"shard {shard}: {len(files)} of {listed} outputs")
    read: dict[str, tuple[int, np.ndarray]] = {}
    unreadable: dict[str, str] = {}
    for stem in sorted(files):
        try:
            scores = read_scores(files[stem], dtype)
        except Exception as exc:  # noqa: BLE001  truncated .npy (EOFError), bad text, NaN, ...: listed, never fatal
            unreadable[files[stem].name] = f"{type(exc).__name__}: {str(exc)[:120]}"
            continue
        read[stem] = (scores.size, top_k(scores))
    classes = _most_common([size for size, _ in read.values()])
    predictions: dict[str, np.ndarray] = {}
    for stem, (size, best) in read.items():
        if size == classes and size > 0:
            predictions[stem] = best
        else:
            unreadable[files[stem].name] = f"{size} values, expected {classes}"
    check_label_range(label_map, classes, str(labels) if isinstance(labels, (str, os.PathLike)) else "labels")
    result = score_predictions(predictions, label_map)
    result.unreadable = unreadable
    result.source = str(result_dir)
    result.notes = notes
    if shard is not None:
        from lvvit_opt.data.shard import shard_payload

        result.shard = shard_payload(shard, "postprocess", predictions, label_map, all_labels, listed)
    return result


def _most_common(values: list[int]) -> int | None:
    return max(set(values), key=values.count) if values else None
