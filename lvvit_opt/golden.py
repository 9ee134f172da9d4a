"""Golden data and the comparison every validation uses (ONNX vs ONNX, .om vs ONNX).

`compare_outputs` is the single place that decides whether two runs agree. It reports,
per output: max abs error and where it is, max rel error, mean and median abs error,
cosine similarity, top-1 agreement for classifier outputs, and the tolerance that would
have passed (in the spirit of Polygraphy's comparator).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """Pass criteria. A criterion set to None is reported but not enforced."""

    atol: float | None = 1e-4
    rtol: float | None = 1e-3
    min_cosine: float | None = 0.99999

    @classmethod
    def onnx(cls) -> "Tolerance":
        """ONNX vs ONNX on the same fp32 runtime: tight."""
        return cls()

    @classmethod
    def fp16(cls) -> "Tolerance":
        """Compiled .om (fp16 on the NPU) vs fp32 onnxruntime: judged by direction (cosine)."""
        return cls(atol=None, rtol=None, min_cosine=0.999)


@dataclass
class OutputComparison:
    name: str
    shape: tuple
    max_abs: float
    max_abs_index: tuple
    max_rel: float
    mean_abs: float
    median_abs: float
    cosine: float
    top1_agreement: float | None  # fraction of rows whose argmax agrees; None if not a classifier output
    atol_needed: float  # smallest atol that passes with the given rtol (0 if rtol not enforced)
    passed: bool
    failures: list[str] = field(default_factory=list)


@dataclass
class ComparisonReport:
    outputs: list[OutputComparison]
    tolerance: Tolerance

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "tolerance": asdict(self.tolerance),
            "outputs": [
                {**asdict(o), "shape": list(o.shape), "max_abs_index": list(o.max_abs_index)} for o in self.outputs
            ],
        }

    def format(self) -> str:
        lines = []
        for o in self.outputs:
            top1 = "n/a" if o.top1_agreement is None else f"{o.top1_agreement * 100:.2f}%"
            lines.append(
                f"{o.name} {tuple(o.shape)}: max_abs={o.max_abs:.3g} at {tuple(o.max_abs_index)} "
                f"max_rel={o.max_rel:.3g} mean_abs={o.mean_abs:.3g} median_abs={o.median_abs:.3g} "
                f"cosine={o.cosine:.8f} top1_agree={top1} -> {'PASS' if o.passed else 'FAIL'}"
            )
            for failure in o.failures:
                lines.append(f"  {failure}")
        t = self.tolerance
        lines.append(
            f"{'PASS' if self.passed else 'FAIL'} (atol={t.atol}, rtol={t.rtol}, min_cosine={t.min_cosine})"
        )
        return "\n".join(lines)


def compare_outputs(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    tolerance: Tolerance | None = None,
) -> ComparisonReport:
    """Compare candidate outputs to reference outputs, output by output (matched by name;
    if the names differ but the counts match, by position)."""
    tolerance = tolerance or Tolerance.onnx()
    ref_names, cand_names = list(reference), list(candidate)
    if set(ref_names) == set(cand_names):
        pairs = [(n, reference[n], candidate[n]) for n in ref_names]
    elif len(ref_names) == len(cand_names):
        pairs = [(rn, reference[rn], candidate[cn]) for rn, cn in zip(ref_names, cand_names)]
    else:
        raise ValueError(f"outputs differ: reference has {ref_names}, candidate has {cand_names}")
    return ComparisonReport([_compare_one(n, r, c, tolerance) for n, r, c in pairs], tolerance)


def _compare_one(name: str, ref: np.ndarray, cand: np.ndarray, tol: Tolerance) -> OutputComparison:
    ref = np.asarray(ref)
    cand = np.asarray(cand)
    if ref.shape != cand.shape:
        if ref.size == cand.size:
            cand = cand.reshape(ref.shape)  # e.g. a runner that returns flat buffers
        else:
            return OutputComparison(name, ref.shape, float("inf"), (), float("inf"), float("inf"), float("inf"),
                                    0.0, None, float("inf"), False,
                                    [f"shape mismatch: reference {ref.shape}, candidate {cand.shape}"])
    r = ref.astype(np.float64)
    c = cand.astype(np.float64)
    diff = np.abs(r - c)
    finite = np.isfinite(c).all() and np.isfinite(r).all()
    if diff.size == 0:
        return OutputComparison(name, ref.shape, 0.0, (), 0.0, 0.0, 0.0, 1.0, None, 0.0, True)
    worst = np.unravel_index(int(np.nanargmax(np.where(np.isnan(diff), np.inf, diff))), diff.shape)
    rel = diff / np.maximum(np.abs(r), 1e-12)
    cosine = _cosine(r, c)
    rtol_used = tol.rtol or 0.0
    atol_needed = float(np.max(diff - rtol_used * np.abs(r))) if finite else float("inf")
    failures = []
    if not finite:
        failures.append("non-finite values (NaN/Inf) in an output")
    if tol.atol is not None and atol_needed > tol.atol:
        failures.append(f"|a-b| exceeds atol + rtol*|ref|: would pass with atol >= {atol_needed:.3g} at rtol={rtol_used}")
    if tol.min_cosine is not None and not cosine >= tol.min_cosine:
        failures.append(f"cosine {cosine:.8f} < {tol.min_cosine}")
    return OutputComparison(
        name=name,
        shape=tuple(ref.shape),
        max_abs=float(diff[worst]),
        max_abs_index=tuple(int(i) for i in worst),
        max_rel=float(np.nanmax(rel)),
        mean_abs=float(np.nanmean(diff)),
        median_abs=float(np.nanmedian(diff)),
        cosine=cosine,
        top1_agreement=_top1_agreement(r, c),
        atol_needed=max(atol_needed, 0.0),
        passed=not failures,
        failures=failures,
    )


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0 or not np.isfinite(na * nb):
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def _top1_agreement(ref: np.ndarray, cand: np.ndarray) -> float | None:
    """Classifier outputs are (N, classes) with more than one class."""
    if ref.ndim != 2 or ref.shape[1] < 2:
        return None
    return float(np.mean(ref.argmax(axis=1) == cand.argmax(axis=1)))
