"""Scoring predictions against labels: top-k of a score vector and top-1/top-5 accuracy.
The one scorer of postprocess, eval, shard merges and the Ray engine; imports nothing of lvvit_opt."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping

import numpy as np

TOP_K = 5
EXAMPLES = 5


@dataclass
class AccuracyResult:
    """Accuracy of a set of predictions against val.txt labels."""

    evaluated: int                 # predictions that had a label
    top1_correct: int
    top5_correct: int
    predictions: int               # predictions read
    labels: int                    # labels in val.txt
    unmatched_predictions: int     # predictions whose image has no label
    missing_predictions: int       # labels whose image has no prediction
    unmatched_examples: list[str] = field(default_factory=list)
    missing_examples: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)  # output file -> why
    source: str = ""
    notes: list[str] = field(default_factory=list)
    shard: dict | None = field(default=None, repr=False)  # postprocess --shard: data.shard.shard_payload

    @property
    def top1(self) -> float:
        return self.top1_correct / self.evaluated if self.evaluated else 0.0

    @property
    def top5(self) -> float:
        return self.top5_correct / self.evaluated if self.evaluated else 0.0

    def to_dict(self) -> dict:
        data = asdict(self)
        if data["shard"] is None:
            data.pop("shard")
        data["top1"] = self.top1
        data["top5"] = self.top5
        return data

    def summary(self) -> str:
        lines = [
            f"top-1: {100 * self.top1:.2f} % ({self.top1_correct}/{self.evaluated})",
            f"top-5: {100 * self.top5:.2f} % ({self.top5_correct}/{self.evaluated})",
        ]
        if self.unmatched_predictions:
            lines.append(f"predictions without a label: {self.unmatched_predictions} "
                         f"(e.g. {', '.join(self.unmatched_examples)})")
        if self.missing_predictions:
            lines.append(f"labels without a prediction: {self.missing_predictions} "
                         f"(e.g. {', '.join(self.missing_examples)})")
        lines += [f"unreadable output: {name}: {why}" for name, why in self.unreadable.items()]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def top_k(scores: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Indices of the k highest scores, best first; ties go to the lower index (like argmax)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return order[:k]


def score_predictions(predictions: Mapping[str, np.ndarray], labels: Mapping[str, int]) -> AccuracyResult:
    """Accuracy of {image stem: top-k class indices, best first} against {image stem: label}."""
    top1 = top5 = evaluated = 0
    unmatched = sorted(stem for stem in predictions if stem not in labels)
    missing = sorted(stem for stem in labels if stem not in predictions)
    for stem, best in predictions.items():
        label = labels.get(stem)
        if label is None:
            continue
        evaluated += 1
        top1 += int(len(best) > 0 and best[0] == label)
        top5 += int(label in best[:TOP_K])
    return AccuracyResult(
        evaluated=evaluated, top1_correct=top1, top5_correct=top5, predictions=len(predictions),
        labels=len(labels), unmatched_predictions=len(unmatched), missing_predictions=len(missing),
        unmatched_examples=unmatched[:EXAMPLES], missing_examples=missing[:EXAMPLES],
    )
