"""Deterministic shards of an image set, and merging the results of shards.

Split rule (documented, stable across versions, hosts and Python runs): an image belongs
to shard K of N (K counts from 1) when

    int.from_bytes(sha256(stem.encode("utf-8")).digest()[:8], "big") % N == K - 1

where `stem` is the image file name without its last extension (`image_stem`), the same
key that pairs an image with its `.bin`, its output files and its val.txt label. A stable
hash rather than striding over the sorted listing, because then every verb agrees on the
shard of a name without seeing the full list: `preprocess --shard 2/4` on one host,
`postprocess --shard 2/4` of that host's outputs, and the val.txt labels of images that
are absent all land in the same shard. Shard sizes are balanced statistically, not exactly
(ImageNet's 50 000 val names split 4 ways: 12 669, 12 177, 12 524, 12 630). Work split inside
one run (`eval --device`, `--engine ray`) sees the whole list and divides it evenly instead.

A shard result (the `--json` of `eval`/`postprocess`/`preprocess` run with `--shard`)
carries its shard, its predictions (image stem -> top-5) and the labels of its shard, so
`merge_results` re-scores the union exactly like one unsharded run. An eval shard also carries
`model_sha256` (the model file's sha256): merge refuses shards of different models, and eval
shards without it (older results), since the union of two models' predictions is no model's.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence, TypeVar

from lvvit_opt.core.errors import UserError, shown
from lvvit_opt.core.fileio import require_regular_file
from lvvit_opt.data.images import image_stem
from lvvit_opt.data.scoring import AccuracyResult, score_predictions

SPLIT_METHOD = "sha256(stem)[:8] mod N"
_SHARD_TEXT = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (index from 1)."""

    index: int
    count: int

    def __post_init__(self):
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise UserError(f"shard {self.index}/{self.count}: K must be between 1 and N (1/{max(self.count, 1)} "
                            f"... {max(self.count, 1)}/{max(self.count, 1)})")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, name: str) -> bool:
        """True when the image (file name, path or stem) belongs to this shard."""
        return shard_index(image_stem(str(name)), self.count) == self.index

    def select(self, items: Iterable[T], key=str) -> list[T]:
        """The items whose name (key(item)) belongs to this shard, in the order given."""
        return [item for item in items if self.holds(key(item))]

    def to_dict(self) -> dict:
        return {"index": self.index, "count": self.count, "method": SPLIT_METHOD}


def parse_shard(text: str) -> Shard:
    """'2/4' -> Shard(2, 4); UserError for anything else (0/4, 5/4, 2, a/b)."""
    match = _SHARD_TEXT.match(str(text))
    if not match:
        raise UserError(f"--shard {text!r}: expected K/N, e.g. 1/4 (K counts from 1)")
    return Shard(int(match.group(1)), int(match.group(2)))


def shard_index(stem: str, count: int) -> int:
    """The shard (1..count) an image stem belongs to; see the module docstring."""
    # surrogateescape: a file name that is not valid UTF-8 hashes as its raw bytes instead of failing
    digest = hashlib.sha256(stem.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def split_by_shard(items: Sequence[T], count: int, key=str) -> list[list[T]]:
    """items -> `count` lists, list k-1 holding shard k/count (the order given is kept)."""
    groups: list[list[T]] = [[] for _ in range(count)]
    for item in items:
        groups[shard_index(image_stem(str(key(item))), count) - 1].append(item)
    return groups


def labels_digest(labels: Mapping[str, int]) -> str:
    """A fingerprint of a whole label map, so merge can tell shards scored against different val.txt."""
    text = "".join(f"{stem}\t{labels[stem]}\n" for stem in sorted(labels))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def model_digest(path: str | os.PathLike) -> str | None:
    """sha256 of a model file (what merge compares: the same model under two names is one model,
    two models under one name are two); None when `path` is not a file (an open runner's name)."""
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except (OSError, TypeError):
        return None
    return digest.hexdigest()


def shard_payload(shard: Shard, kind: str, predictions: Mapping[str, Sequence[int]], labels: Mapping[str, int],
                  all_labels: Mapping[str, int] | None, listed: int, model_sha256: str | None = None) -> dict:
    """What a shard result adds to its verb's JSON: enough for an exact merge.

    labels: the labels of this shard; all_labels: the whole label map (fingerprinted);
    listed: images (or output files) the verb listed before sharding; model_sha256: the model an
    eval shard ran (model_digest), so that merge refuses shards of different models.
    """
    extra = {"model_sha256": model_sha256} if kind == "eval" else {}
    return {"kind": kind, **shard.to_dict(), "listed_before_sharding": int(listed), **extra,
            "labels_digest": labels_digest(all_labels) if all_labels is not None else None,
            "predictions": {stem: [int(i) for i in best] for stem, best in predictions.items()},
            "labels": {stem: int(label) for stem, label in labels.items()}}


# -- merging -----------------------------------------------------------------------------

@dataclass
class MergedResult:
    """The accuracy of the union of all shards, and what was merged."""

    kind: str
    shards: int
    files: list[str]
    accuracy: AccuracyResult | None = None
    counts: dict = field(default_factory=dict)  # preprocess: summed counts
    failed: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    predictions: dict[str, list[int]] = field(default_factory=dict, repr=False)

    def to_dict(self, with_predictions: bool = False) -> dict:
        data = {"kind": self.kind, "shards": self.shards, "files": self.files, "counts": self.counts,
                "failed": self.failed, "warnings": self.warnings,
                "accuracy": self.accuracy.to_dict() if self.accuracy else None}
        if with_predictions:
            data["predictions"] = self.predictions
        return data

    def summary(self) -> str:
        lines = [f"merged {self.shards} shard(s) of {self.kind} results"]
        if self.accuracy is not None:
            lines.append(self.accuracy.summary())
        if self.counts:
            lines.append(", ".join(f"{k}: {v}" for k, v in self.counts.items()))
        lines += [f"failed: {name}: {why}" for name, why in self.failed.items()]
        return "\n".join(lines)


def read_result_file(path: str | os.PathLike) -> dict:
    """A verb's JSON result (bare, or inside the {"command", ..., "result": {...}} envelope)."""
    path = require_regular_file(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise UserError(f"{shown(path)}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{shown(path)}: not a JSON result ({type(exc).__name__})") from None
    if isinstance(data, dict) and isinstance(data.get("result"), dict) and "command" in data:
        data = data["result"]
    if not isinstance(data, dict) or not isinstance(data.get("shard"), dict):
        raise UserError(f"{shown(path)}: not a shard result (write one with `--shard K/N --json FILE` on eval, "
                        f"postprocess or preprocess)")
    return data


def merge_results(paths: Sequence[str | os.PathLike]) -> MergedResult:
    """Combine shard results into the result of one unsharded run.

    Every shard 1..N must be present exactly once, all of the same kind, N and label
    file; UserError naming the missing, duplicated or mismatched shards otherwise.
    """
    if not paths:
        raise UserError("no result files given")
    loaded = [(str(p), read_result_file(p)) for p in paths]
    shards = [_shard_of(path, data) for path, data in loaded]
    kinds = {s["kind"] for s in shards}
    if len(kinds) != 1:
        raise UserError(f"cannot merge results of different verbs: {', '.join(sorted(map(str, kinds)))}")
    kind = kinds.pop()
    count = _check_complete(loaded, shards)
    if kind == "preprocess":
        return _merge_preprocess(loaded, count)
    return _merge_accuracy(loaded, shards, kind, count)


def _shard_of(path: str, data: dict) -> dict:
    shard = data["shard"]
    try:
        index, count, kind = int(shard["index"]), int(shard["count"]), str(shard["kind"])
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{shown(path)}: its shard record is incomplete (index, count, kind)") from None
    if shard.get("method", SPLIT_METHOD) != SPLIT_METHOD:
        raise UserError(f"{shown(path)}: split by {shard.get('method')!r}, not by {SPLIT_METHOD!r}")
    return {**shard, "index": index, "count": count, "kind": kind}


def _check_complete(loaded, shards) -> int:
    counts = sorted({s["count"] for s in shards})
    if len(counts) != 1:
        listing = ", ".join(f"{path} ({s['index']}/{s['count']})" for (path, _), s in zip(loaded, shards))
        raise UserError(f"the results come from different splits (N = {', '.join(map(str, counts))}): {listing}")
    count = counts[0]
    seen: dict[int, str] = {}
    duplicated = []
    for (path, _), shard in zip(loaded, shards):
        if shard["index"] in seen:
            duplicated.append(f"shard {shard['index']}/{count} given twice ({seen[shard['index']]} and {path})")
        seen.setdefault(shard["index"], path)
    missing = [f"{k}/{count}" for k in range(1, count + 1) if k not in seen]
    problems = duplicated + ([f"missing shard(s) {', '.join(missing)}"] if missing else [])
    if problems:
        raise UserError("; ".join(problems))
    return count


def _merge_accuracy(loaded, shards, kind: str, count: int) -> MergedResult:
    if kind == "eval":
        _check_same_model(loaded, shards)
    digests = {s.get("labels_digest") for s in shards}
    if len(digests) != 1:
        raise UserError("the shards were scored against different label files (their labels_digest differ)")
    predictions: dict[str, list[int]] = {}
    labels: dict[str, int] = {}
    failed: dict[str, str] = {}
    owner: dict[str, str] = {}
    for (path, data), shard in zip(loaded, shards):
        shard_predictions, shard_labels = _checked_records(path, shard)
        for stem, best in shard_predictions.items():
            if stem in owner:
                raise UserError(f"{stem} has predictions in both {owner[stem]} and {path}")
            owner[stem] = path
            predictions[stem] = best
        labels.update(shard_labels)
        failed.update(data.get("failed") or {})
    accuracy = score_predictions(predictions, labels)
    accuracy.source = ", ".join(path for path, _ in loaded)
    for _, data in loaded:
        accuracy.unreadable.update((data.get("unreadable") or data.get("accuracy", {}).get("unreadable") or {}))
    return MergedResult(kind, count, [p for p, _ in loaded], accuracy=accuracy, failed=failed,
                        predictions=predictions)


def _checked_records(path: str, shard: dict) -> tuple[dict[str, list[int]], dict[str, int]]:
    """The shard's predictions (stem -> class indices) and labels (stem -> class), or a UserError naming the file."""
    try:
        predictions = {str(stem): [_class_index(i) for i in best] for stem, best in shard["predictions"].items()}
        labels = {str(stem): _class_index(label) for stem, label in shard["labels"].items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UserError(f"{shown(path)}: its predictions or labels are malformed (expected image stem -> class indices)") \
            from None
    return predictions, labels


def _class_index(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(value)
    return value


def _merge_preprocess(loaded, count: int) -> MergedResult:
    counts = {key: sum(int(data.get(key) or 0) for _, data in loaded) for key in ("images", "written", "skipped")}
    failed: dict[str, str] = {}
    for _, data in loaded:
        failed.update(data.get("failed") or {})
    counts["failed"] = len(failed)
    return MergedResult("preprocess", count, [p for p, _ in loaded], counts=counts, failed=failed)


def _check_same_model(loaded, shards) -> None:
    """Every eval shard names the sha256 of the model it ran, and all name the same one: the
    union of two models' predictions is no model's accuracy."""
    for (path, _), shard in zip(loaded, shards):
        digest = shard.get("model_sha256")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise UserError(f"{shown(path)}: its shard record does not say which model it ran (no model_sha256: written "
                            f"by an older lvvit-opt, or edited); rerun `lvvit-opt eval ... --shard K/N --json` "
                            f"for that shard")
    first_path, first = loaded[0][0], shards[0]
    for (path, data), shard in zip(loaded[1:], shards[1:]):
        if shard["model_sha256"] != first["model_sha256"]:
            raise UserError(f"the shards ran different models: {first_path} ran "
                            f"{Path(str(loaded[0][1].get('model', '?'))).name} (sha256 {first['model_sha256'][:16]}), "
                            f"{path} ran {Path(str(data.get('model', '?'))).name} "
                            f"(sha256 {shard['model_sha256'][:16]})")
