"""Per-layer sensitivity and the rollback: the fewest quantized layers kept in float that make
the final outputs pass the gate.

Sensitivity: each quantized layer's own output (INT8 clone fed the float inputs) against its
float output, by cosine (AMCT's `accuracy_based_auto_calibration` ranks by the same metric).
Rollback: layers are kept in float worst-first; a binary search over that order finds the
shortest prefix that passes, then each kept layer is tried back in INT8 (least sensitive first)
and stays quantized when the gate still passes. Every candidate set is judged by running the
real candidate model (the preview for ascend, onnxruntime's QDQ model for ort targets), so the
result is re-checked, not inferred.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class Gate:
    """What a quantized model must keep: the cosine of every final output against fp32 and the
    top-1 agreement of classifier outputs."""

    min_cosine: float = 0.99
    min_agreement: float = 0.99  # a fraction

    def tolerance(self):
        from lvvit_opt.verify.golden import Tolerance

        return Tolerance(atol=None, rtol=None, min_cosine=self.min_cosine)

    def describe(self) -> str:
        return f"cosine >= {self.min_cosine:g} on every output and top-1 agreement >= {self.min_agreement * 100:g}%"


@dataclass
class Verdict:
    passed: bool
    cosine: float  # the lowest output cosine
    agreement: float | None  # the lowest top-1 agreement among classifier outputs
    failures: list[str]
    comparison: dict

    def line(self) -> str:
        agree = "n/a" if self.agreement is None else f"{self.agreement * 100:.2f}%"
        return (f"{'PASS' if self.passed else 'FAIL'}: cosine {self.cosine:.6f}, top-1 agreement {agree}"
                + (f" ({'; '.join(self.failures)})" if self.failures else ""))

    def to_dict(self) -> dict:
        return {"passed": self.passed, "cosine": self.cosine, "top1_agreement": self.agreement,
                "failures": self.failures, "comparison": self.comparison}


def judge(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], gate: Gate) -> Verdict:
    """The gate on final outputs, through verify.golden's one comparison."""
    from lvvit_opt.verify.golden import compare_outputs

    report = compare_outputs(reference, candidate, gate.tolerance())
    failures = [f"{o.name}: {f}" for o in report.outputs for f in o.failures]
    agreements = [o.top1_agreement for o in report.outputs if o.top1_agreement is not None]
    agreement = min(agreements) if agreements else None
    if agreement is not None and agreement < gate.min_agreement:
        failures.append(f"top-1 agreement {agreement * 100:.2f}% < {gate.min_agreement * 100:g}%")
    cosine = min(o.cosine for o in report.outputs) if report.outputs else 1.0
    return Verdict(not failures, cosine, agreement, failures, report.to_dict())


@dataclass
class Sensitivity:
    layer: str
    op_type: str
    cosine: float

    def to_dict(self) -> dict:
        return {"layer": self.layer, "op_type": self.op_type, "cosine": self.cosine}


def layer_sensitivity(model, layers: Sequence, params: Mapping, feeds: list[dict]) -> list[Sensitivity]:
    """Each quantized layer's own cosine against float, worst first (one onnxruntime session)."""
    from lvvit_opt.quantize.preview import build_sensitivity_model
    from lvvit_opt.verify.golden import open_model_runner, run_feeds

    probe, pairs = build_sensitivity_model(model, layers, params)
    runner = open_model_runner(probe, label="the sensitivity copy", built=True)
    try:
        outputs = run_feeds(runner, feeds, desc="sensitivity")
    finally:
        runner.close()
    op_of = {layer.name: layer.op_type for layer in layers}
    result = [Sensitivity(name, op_of[name], cosine(outputs[f], outputs[i])) for name, (f, i) in pairs.items()]
    return sorted(result, key=lambda s: s.cosine)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity in float64 (1.0 for two zero tensors, 0.0 with a NaN/Inf or one zero side)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return 0.0
    na, nb = np.sqrt(a @ a), np.sqrt(b @ b)
    if na == 0 and nb == 0:
        return 1.0
    return float(a @ b / (na * nb)) if na and nb else 0.0


@dataclass
class RollbackResult:
    before: Verdict  # everything selected quantized
    after: Verdict | None  # with `kept_float` in float (None when even all-float fails)
    kept_float: list[str]
    checks: int
    trail: list[dict] = field(default_factory=list)  # every set tried and its verdict

    @property
    def passed(self) -> bool:
        return self.after is not None and self.after.passed

    def to_dict(self) -> dict:
        return {"before": self.before.to_dict(), "after": None if self.after is None else self.after.to_dict(),
                "kept_float": self.kept_float, "checks": self.checks, "trail": self.trail}


def rollback(check: Callable[[frozenset], Verdict], ranked: Sequence[str]) -> RollbackResult:
    """The smallest set of `ranked` layers (worst first) to keep in float so that `check` passes.

    `check(float_set)` builds and runs the candidate with those layers in float and judges it.
    Greedy over the ranking (binary search for the shortest passing prefix), then pruned one
    layer at a time; every answer is a set `check` passed."""
    import logging

    log = logging.getLogger(__name__)
    trail: list[dict] = []
    cache: dict[frozenset, Verdict] = {}

    def run(float_set) -> Verdict:
        key = frozenset(float_set)
        if key not in cache:
            cache[key] = check(key)
            trail.append({"float": sorted(key), "verdict": cache[key].line()})
            log.info("rollback check %d: %d layer(s) in float: %s", len(cache), len(key), cache[key].line())
        return cache[key]

    before = run(())
    if before.passed:
        return RollbackResult(before, before, [], len(cache), trail)
    order = list(ranked)
    everything = run(order)
    if not everything.passed:
        return RollbackResult(before, None, order, len(cache), trail)
    lo, hi = 0, len(order)  # prefix lo fails, prefix hi passes
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if run(order[:mid]).passed:
            hi = mid
        else:
            lo = mid
    kept = list(order[:hi])
    for name in reversed(list(kept)):  # least sensitive first: try it back in INT8
        trial = [k for k in kept if k != name]
        if run(trial).passed:
            kept = trial
    after = run(kept)
    return RollbackResult(before, after, [name for name in order if name in kept], len(cache), trail)
