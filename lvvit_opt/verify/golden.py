"""Golden data and the comparison every validation uses (ONNX vs ONNX, .om vs ONNX).

`compare_outputs` is the single place that decides whether two runs agree. It reports,
per output: max abs error and where it is, max rel error, mean and median abs error,
cosine similarity, top-1 agreement for classifier outputs, and the tolerance that would
have passed (in the spirit of Polygraphy's comparator).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np


# Metric names, in the order a line reports them (msit compare's set: cosine, max/mean absolute and
# relative error, RMSE, plus the error relative to the reference's range).
FP16_MAX = 65504.0
FP16_MIN_NORMAL = 2.0 ** -14
# Chosen from scripts/measure_fp16_tolerance.py (docs/precision.md): see there.
FP16_MIN_COSINE = 0.999
FP16_MAX_RANGE_REL = 0.01


# Machine epsilon of the float types an ONNX graph may compute in below float32
LOW_PRECISION_EPS = {"float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}


@dataclass(frozen=True)
class Tolerance:
    """Pass criteria. A criterion set to None is reported but not enforced.

    Elementwise: |a-b| <= atol + rtol*|ref|. Per tensor: cosine >= min_cosine (direction),
    range_rel = max|a-b| / max|ref| <= max_range_rel (scale-aware: sees a scale error, an
    offset, a sign flip or a permutation, which cosine alone is blind to in part), and the
    optional caps on max_rel, mean_rel and rmse. NaN, or the same Inf, at the same place on both
    sides is agreement (counted and reported); a NaN/Inf on one side only always fails.
    """

    atol: float | None = 1e-4
    rtol: float | None = 1e-3
    min_cosine: float | None = 0.99999
    max_range_rel: float | None = None
    max_rel: float | None = None
    max_mean_rel: float | None = None
    max_rmse: float | None = None

    @classmethod
    def onnx(cls) -> "Tolerance":
        """ONNX vs ONNX on the same fp32 runtime: tight."""
        return cls()

    @classmethod
    def fp16(cls) -> "Tolerance":
        """fp16 (a compiled .om, an fp16 preview) vs fp32 onnxruntime: direction (cosine) and the
        error relative to the reference's range. Measured basis: scripts/measure_fp16_tolerance.py
        and the fp16 tolerance table of docs/precision.md (worst honest fp16 tensor of three ViTs, with margin)."""
        return cls(atol=None, rtol=None, min_cosine=FP16_MIN_COSINE, max_range_rel=FP16_MAX_RANGE_REL)

    def at_precision(self, dtype) -> "Tolerance":
        """The tolerance for an output of this dtype: the default ONNX one judges float16 and
        bfloat16 outputs at their own precision (a few units in the last place: float16's
        epsilon is 9.8e-4, bfloat16's 7.8e-3), not at float32's; any other (given) tolerance
        is kept as it is."""
        name = getattr(dtype, "name", str(dtype))
        if self != Tolerance.onnx() or name not in LOW_PRECISION_EPS:
            return self
        eps = LOW_PRECISION_EPS[name]
        return Tolerance(atol=eps, rtol=4 * eps, min_cosine=1 - eps / 10)

    def enforced(self) -> str:
        """`atol=..., rtol=..., min_cosine=...` plus the optional criteria that are set."""
        parts = [f"atol={self.atol}", f"rtol={self.rtol}", f"min_cosine={self.min_cosine}"]
        parts += [f"{name}={getattr(self, name)}" for name in ("max_range_rel", "max_rel", "max_mean_rel", "max_rmse")
                  if getattr(self, name) is not None]
        return ", ".join(parts)


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
    range_rel: float = 0.0  # max|a-b| / max|ref|
    mean_rel: float = 0.0  # mean of |a-b| / max(|ref|, tiny)
    rmse: float = 0.0
    nonfinite_reference: int = 0  # NaN/Inf elements
    nonfinite_candidate: int = 0
    overflow: int = 0  # candidate Inf where the reference is finite (fp16 overflows past 65504)
    underflow: int = 0  # candidate 0 where the reference is a non-zero below fp16's smallest normal
    nonfinite_matched: int = 0  # NaN, or the same Inf, at the same place on both sides: agreement
    judged_at: str = ""  # set when a low-precision output was judged at its own precision (Tolerance.at_precision)


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
                f"cosine={o.cosine:.8f} range_rel={o.range_rel:.3g} mean_rel={o.mean_rel:.3g} rmse={o.rmse:.3g} "
                f"top1_agree={top1} -> {'PASS' if o.passed else 'FAIL'}"
            )
            if o.judged_at:
                lines.append(f"  judged at {o.judged_at}")
            if o.nonfinite_matched:
                lines.append(f"  {o.nonfinite_matched} NaN/Inf value(s) at the same places on both sides, "
                             "counted as agreement; the metrics above judge the other values")
            for failure in o.failures:
                lines.append(f"  {failure}")
        lines.append(f"{'PASS' if self.passed else 'FAIL'} ({self.tolerance.enforced()})")
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
        from lvvit_opt.core.errors import UserError

        raise UserError(f"the models have different outputs: reference {ref_names}, candidate {cand_names}")
    return ComparisonReport([compare_tensor(n, r, c, tolerance) for n, r, c in pairs], tolerance)


def compare_tensor(name: str, ref, cand, tol: Tolerance) -> OutputComparison:
    """One output's metrics and verdict: the comparison every check in the tool makes.

    NaN at the same place on both sides, or the same Inf (same sign), is agreement: it is
    counted (`nonfinite_matched`) and said in the report, and the metrics are computed on the
    rest. A NaN/Inf on one side only, or Inf of the other sign, always fails.
    Non-tensor values (sequences, maps such as a ZipMap classifier's, optionals) are compared
    leaf by leaf: the same structure, then the numbers as one tensor; strings and non-numeric
    leaves must be equal exactly."""
    flat_ref, flat_cand = _leaves(ref), _leaves(cand)
    if flat_ref is not None or flat_cand is not None:
        return _compare_structured(name, flat_ref, flat_cand, ref, cand, tol)
    ref = np.asarray(ref)
    cand = np.asarray(cand)
    if ref.shape != cand.shape:
        if ref.size == cand.size:
            cand = cand.reshape(ref.shape)  # e.g. a runner that returns flat buffers
        else:
            return _mismatch(name, ref.shape, f"shape mismatch: reference {ref.shape}, candidate {cand.shape}")
    if ref.size == 0:
        return OutputComparison(name, ref.shape, 0.0, (), 0.0, 0.0, 0.0, 1.0, None, 0.0, True)
    if not (_numeric(ref) and _numeric(cand)):  # strings, objects: equal or not
        equal = ref.dtype.kind == cand.dtype.kind and bool(np.all(ref == cand))
        different = 0 if equal else int(np.count_nonzero(ref != cand)) if ref.dtype.kind == cand.dtype.kind \
            else ref.size
        return _exact(name, ref.shape, equal, f"{different} of {ref.size} {ref.dtype.kind!r}-kind values differ "
                                              "(compared exactly)")
    given, tol = tol, tol.at_precision(ref.dtype)
    judged_at = "" if tol is given else f"{ref.dtype.name} precision ({tol.enforced()})"
    r = _as_float64(ref)
    c = _as_float64(cand)
    r_finite, c_finite = np.isfinite(r), np.isfinite(c)
    with np.errstate(invalid="ignore"):
        alike = (np.isnan(r) & np.isnan(c)) | (np.isinf(r) & (r == c))  # the same NaN/Inf on both sides
    matched = int(np.count_nonzero(alike))
    if matched:  # agreement there: both sides 0 in every metric below
        r, c = np.where(alike, 0.0, r), np.where(alike, 0.0, c)
        r_finite, c_finite = r_finite | alike, c_finite | alike
    bad_ref, bad_cand = int(r.size - np.count_nonzero(r_finite)), int(c.size - np.count_nonzero(c_finite))
    finite = bad_ref == 0 and bad_cand == 0
    overflow = int(np.count_nonzero(np.isinf(c) & r_finite))
    underflow = int(np.count_nonzero((c == 0) & (r != 0) & (np.abs(r) < FP16_MIN_NORMAL)))
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(r - c)
        diff = np.where(np.isnan(diff), np.inf, diff)  # NaN on either side, or Inf - Inf: the worst error
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    max_abs = float(diff[worst])
    abs_r = np.abs(r)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        rel = diff / np.maximum(abs_r, 1e-12)
        peak = float(np.max(np.where(r_finite, abs_r, 0.0)))
        range_rel = (max_abs / peak if peak > 0 else (0.0 if max_abs == 0 else float("inf"))) if finite \
            else float("inf")
        rmse = float(np.sqrt(np.mean(diff * diff))) if finite else float("inf")
    cosine = _cosine(r, c) if finite else 0.0
    rtol_used = tol.rtol or 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        atol_needed = float(np.max(diff - rtol_used * abs_r)) if finite else float("inf")
    metrics = {"max_rel": float(np.max(rel)), "mean_rel": float(np.mean(rel)), "rmse": rmse, "range_rel": range_rel}
    failures = []
    if not finite:  # the one failure that matters: every other metric is meaningless with a NaN/Inf
        failures.append(f"non-finite values (NaN/Inf) on one side only: {bad_ref} in the reference, {bad_cand} in "
                        f"the candidate ({overflow} overflow(s) to Inf); no tolerance passes this")
    elif tol.atol is not None and not atol_needed <= tol.atol:
        failures.append(f"|a-b| exceeds atol + rtol*|ref|: would pass with atol >= {atol_needed:.3g} at rtol={rtol_used}")
    if finite and tol.min_cosine is not None and not cosine >= tol.min_cosine:
        failures.append(f"cosine {cosine:.8f} < {tol.min_cosine}: would pass with --min-cosine <= {cosine:.8f}")
    for metric, limit, option in (("range_rel", tol.max_range_rel, "--max-range-rel"),
                                  ("max_rel", tol.max_rel, "--max-rel"),
                                  ("mean_rel", tol.max_mean_rel, "--max-mean-rel"),
                                  ("rmse", tol.max_rmse, "--max-rmse")):
        value = metrics[metric]
        if finite and limit is not None and not value <= limit:
            failures.append(f"{metric} {value:.3g} > {limit}: would pass with {option} >= {_round_up(value)}")
    return OutputComparison(
        name=name,
        shape=tuple(ref.shape),
        max_abs=max_abs,
        max_abs_index=tuple(int(i) for i in worst),
        max_rel=metrics["max_rel"],
        mean_abs=float(np.mean(diff)),
        median_abs=float(np.median(diff)),
        cosine=cosine,
        top1_agreement=_top1_agreement(r, c),
        atol_needed=max(atol_needed, 0.0),
        passed=not failures,
        failures=failures,
        range_rel=range_rel,
        mean_rel=metrics["mean_rel"],
        rmse=rmse,
        nonfinite_reference=bad_ref,
        nonfinite_candidate=bad_cand,
        overflow=overflow,
        underflow=underflow,
        nonfinite_matched=matched,
        judged_at=judged_at,
    )


def _numeric(array: np.ndarray) -> bool:
    return array.dtype.kind in "fiub" or array.dtype.name in _LOW_PRECISION


# numpy dtypes of ml_dtypes (bfloat16, float8, int4 ...) that onnxruntime may hand back
_LOW_PRECISION = ("bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
                  "float8_e8m0fnu", "float4_e2m1fn", "int4", "uint4", "int2", "uint2")


def _as_float64(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "V" or array.dtype.name in _LOW_PRECISION and array.dtype.kind not in "fiub":
        return array.astype(np.float32).astype(np.float64)
    return array.astype(np.float64)


def _leaves(value):
    """A non-tensor output as (structure, [leaf arrays]): a sequence (list), a map (dict, as
    onnxruntime returns a ZipMap's), an empty optional (None). None for a plain tensor."""
    if isinstance(value, np.ndarray) or np.isscalar(value):
        return None
    if value is None:
        return ("none",), []
    if isinstance(value, dict):
        keys = sorted(value, key=repr)
        leaves = []
        structure = ["map", tuple(repr(k) for k in keys)]
        for key in keys:
            inner = _leaves(value[key])
            structure.append(inner[0] if inner else ("tensor", np.shape(value[key])))
            leaves += inner[1] if inner else [np.asarray(value[key])]
        return tuple(structure), leaves
    if isinstance(value, (list, tuple)):
        structure, leaves = ["seq", len(value)], []
        for item in value:
            inner = _leaves(item)
            structure.append(inner[0] if inner else ("tensor", np.shape(item)))
            leaves += inner[1] if inner else [np.asarray(item)]
        return tuple(structure), leaves
    return None


def _compare_structured(name: str, flat_ref, flat_cand, ref, cand, tol: Tolerance) -> OutputComparison:
    """Sequences, maps and optionals: the same structure, numeric leaves as one tensor, the rest exactly."""
    kind = lambda v: "a tensor" if isinstance(v, np.ndarray) else "nothing (empty optional)" if v is None \
        else type(v).__name__  # noqa: E731
    if flat_ref is None or flat_cand is None or flat_ref[0] != flat_cand[0]:
        return _mismatch(name, (), f"structure differs: reference {kind(ref)} {_brief(flat_ref)}, "
                                   f"candidate {kind(cand)} {_brief(flat_cand)}")
    leaves = list(zip(flat_ref[1], flat_cand[1]))
    numeric = [(a, b) for a, b in leaves if _numeric(a) and _numeric(b)]
    other = [(a, b) for a, b in leaves if not (_numeric(a) and _numeric(b))]
    different = sum(1 for a, b in other if a.dtype.kind != b.dtype.kind or not np.array_equal(a, b))
    if different:
        return _exact(name, (len(leaves),), False, f"{different} of {len(other)} non-numeric element(s) differ "
                                                     "(compared exactly)")
    if not numeric:
        return _exact(name, (len(leaves),), True, "")
    joined_ref = np.concatenate([_as_float64(a).ravel() for a, _ in numeric])
    joined_cand = np.concatenate([_as_float64(b).ravel() for _, b in numeric])
    result = compare_tensor(name, joined_ref, joined_cand, tol)
    result.top1_agreement = None
    result.failures = [f"{f} (over the {len(numeric)} numeric element(s) of a {flat_ref[0][0]}, flattened)"
                       for f in result.failures]
    return result


def _brief(flat) -> str:
    if flat is None:
        return ""
    text = repr(flat[0])
    return text if len(text) <= 80 else text[:77] + "..."


def _mismatch(name: str, shape: tuple, why: str) -> OutputComparison:
    inf = float("inf")
    return OutputComparison(name, tuple(shape), inf, (), inf, inf, inf, 0.0, None, inf, False, [why],
                            range_rel=inf, mean_rel=inf, rmse=inf)


def _exact(name: str, shape: tuple, equal: bool, why: str) -> OutputComparison:
    if not equal:
        return _mismatch(name, shape, why)
    return OutputComparison(name, tuple(shape), 0.0, (), 0.0, 0.0, 0.0, 1.0, None, 0.0, True)


def _round_up(value: float) -> str:
    """A short number >= value (3 significant digits, rounded up), for a 'would pass with' hint."""
    if not np.isfinite(value):
        return "inf (nothing passes)"
    if value == 0:
        return "0"
    exponent = int(np.floor(np.log10(abs(value)))) - 2
    return f"{np.ceil(value / 10.0 ** exponent) * 10.0 ** exponent:.3g}"


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    # einsum, not np.dot/np.linalg.norm: BLAS wakes its thread pool for every call, which
    # costs ~100x on a loaded machine when debug layers compares hundreds of tensors
    a, b = a.ravel(), b.ravel()
    na, nb = np.sqrt(np.einsum("i,i->", a, a)), np.sqrt(np.einsum("i,i->", b, b))
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0 or not np.isfinite(na * nb):
        return 0.0
    return float(np.einsum("i,i->", a, b) / (na * nb))


def _top1_agreement(ref: np.ndarray, cand: np.ndarray) -> float | None:
    """Classifier outputs are (N, classes) with more than one class."""
    if ref.ndim != 2 or ref.shape[1] < 2:
        return None
    return float(np.mean(ref.argmax(axis=1) == cand.argmax(axis=1)))


# ---------------------------------------------------------------------------------------
# In-memory onnxruntime runs, model-vs-model validation and golden files (inputs: lvvit_opt.verify.inputs).
#
# Golden .npz format: one array per model input and per model output, stored under the
# tensor's own name (ONNX names are unique across inputs and outputs), e.g. `image` and
# `features`. Several input sets are concatenated along axis 0 (the batch); a model with a
# static batch B is fed the arrays in chunks of B. Which keys are inputs is decided by the
# model's input names.
# ---------------------------------------------------------------------------------------

def open_model_runner(model, *, label: str | None = None, built: bool = False, **options):
    """A runner for a path (.onnx, .om: via runtime.open_runner) or an in-memory ModelProto.

    For a ModelProto onnxruntime refuses, `label` names it in the error (the file it came from)
    and `built` says whose fault that is: True (a graph lvvit-opt rewrote) is an internal failure,
    exit 1; False (the user's model, only loaded or seeded) stays bad input, exit 2."""
    from lvvit_opt.core.errors import LvvitOptError, UserError
    from lvvit_opt.runtime.ort import OrtRunner, refusal_reason

    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        from lvvit_opt.runtime import open_runner

        try:
            return open_runner(model, **options)
        except UserError as exc:
            if not built:  # the user's file: their input, as the runner said
                raise
            raise _built_refusal(label, exc) from None
    try:
        return OrtRunner.from_model(model, **options)
    except UserError as exc:
        reason = refusal_reason(exc)
        if built:
            raise LvvitOptError(f"{label or 'the rewritten graph'}: onnxruntime cannot load the graph lvvit-opt "
                                f"built, an internal failure, not your model {reason}") from None
        if label:
            raise UserError(f"{label}: onnxruntime cannot load it {reason}") from None
        raise


def run_feeds(runner, feeds: list[Mapping[str, np.ndarray]], desc: str = "inference") -> dict[str, np.ndarray]:
    """Run each feed set (a progress step named `desc`); outputs concatenated along axis 0 (scalars stacked)."""
    from lvvit_opt.core.progress import task

    runs = []
    with task(desc, total=len(feeds), unit="batch") as bar:
        for feed in feeds:
            runs.append(runner.infer(feed))
            bar.update(1)
    return {name: join_batches([r[name] for r in runs]) for name in runs[0]}


def join_batches(arrays: list[np.ndarray]) -> np.ndarray:
    """Per-batch outputs as one array: concatenated along axis 0, scalars stacked. Non-tensor
    outputs (sequences, maps, optionals) stay as onnxruntime gave them: one, or a list per batch."""
    if any(not isinstance(a, np.ndarray) and not np.isscalar(a) for a in arrays):
        return arrays[0] if len(arrays) == 1 else list(arrays)
    if len(arrays) == 1:
        return np.asarray(arrays[0])
    if all(np.ndim(a) >= 1 for a in arrays):
        return np.concatenate(arrays, axis=0)
    return np.stack(arrays)


@dataclass
class ValidationResult:
    """Outcome of validate_models / check_golden: one or two comparisons, all must pass."""

    comparisons: dict[str, ComparisonReport]  # label -> report ("candidate vs reference", ...)
    inputs: dict[str, list]  # input name -> shape of one feed set
    input_sets: int
    seed: int | None
    input_source: dict[str, Any] | None = None  # inputs.InputSet.to_dict(): which inputs were used
    # side -> {"seeded": [...], "unseeded": [...]}: random nodes validate fixed the seed of, or could not
    random_nodes: dict[str, dict[str, list[str]]] | None = None

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.comparisons.values())

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "inputs": self.inputs, "input_sets": self.input_sets, "seed": self.seed,
                "input_source": self.input_source, "random_nodes": self.random_nodes,
                "comparisons": {label: r.to_dict() for label, r in self.comparisons.items()}}

    def random_lines(self) -> list[str]:
        """What the comparison did about random nodes: seeded alike, or left drawing noise."""
        lines = []
        for side, found in (self.random_nodes or {}).items():
            if found["seeded"]:
                lines.append(f"random nodes: {len(found['seeded'])} in the {side} seeded alike for this "
                             f"comparison ({', '.join(found['seeded'][:4])}{' ...' if len(found['seeded']) > 4 else ''})")
            if found["unseeded"]:
                lines.append(f"random nodes: {len(found['unseeded'])} in the {side} NOT seeded (its backend draws "
                             "its own numbers): the comparison judges noise there")
        return lines

    def summary(self) -> str:
        """One line: the verdict and the first failing output's first failure, for an error message."""
        for label, report in self.comparisons.items():
            for output in report.outputs:
                if not output.passed:
                    others = sum(1 for r in self.comparisons.values() for o in r.outputs if not o.passed) - 1
                    more = f", and {others} more output(s) failing" if others > 0 else ""
                    return (f"{label}: output {output.name} {list(output.shape)} max_abs={output.max_abs:.3g}: "
                            f"{output.failures[0] if output.failures else 'FAIL'}{more}")
        return f"PASS ({next(iter(self.comparisons.values())).tolerance.enforced()})" if self.comparisons else "PASS"

    def format(self) -> str:
        head = f"inputs: {', '.join(f'{n} {tuple(s)}' for n, s in self.inputs.items())} x {self.input_sets} set(s)"
        if self.input_source:
            head += f" from {self.input_source['source']}"
        parts = [head] + self.random_lines()
        for label, report in self.comparisons.items():
            parts.append(f"[{label}]")
            parts.append(report.format())  # ends with its own PASS/FAIL line
        if len(self.comparisons) > 1:  # one verdict per comparison above; say the overall one once
            failed = [label for label, r in self.comparisons.items() if not r.passed]
            parts.append(f"overall: FAIL ({', '.join(failed)})" if failed else "overall: PASS")
        return "\n".join(parts)


def default_tolerance_for(candidate) -> Tolerance:
    """fp16 tolerance for compiled .om candidates, the tight ONNX one otherwise."""
    if isinstance(candidate, (str, bytes)) or hasattr(candidate, "__fspath__"):
        if str(candidate).lower().endswith(".om"):
            return Tolerance.fp16()
    return Tolerance.onnx()


def validate_models(reference, candidate, *, golden: str | None = None, inputs: int | str = 4, seed: int = 0,
                    tolerance: Tolerance | None = None, batch_size: int | None = None,
                    candidate_options: Mapping[str, Any] | None = None,
                    inputs_model: str | None = None, labels: tuple[str | None, str | None] = (None, None),
                    built: tuple[str, ...] = ()) -> ValidationResult:
    """Run `reference` (ONNX path or ModelProto) and `candidate` (.onnx/.om path or ModelProto)
    on the same seeded inputs (or a golden file's inputs) and compare their outputs.

    `inputs`: a number of seeded random batches, or a file/directory (see lvvit_opt.verify.inputs);
    an image folder follows the preprocessing recorded in `inputs_model` (default: whichever
    of reference and candidate is an .onnx path).
    Inputs follow the candidate's input specs (a compiled or fixed-shape candidate decides
    the batch); a symbolic batch becomes `batch_size` or 1. With `golden`, the candidate is
    also compared to the stored outputs. Default tolerance: fp16 for .om, tight otherwise.
    `labels` name in-memory models in errors (reference, candidate); `built` lists the sides
    lvvit-opt rewrote ("reference", "candidate"): onnxruntime refusing one is our failure.
    """
    tolerance = tolerance or default_tolerance_for(candidate)
    from lvvit_opt.verify.inputs import load_inputs

    ref_label, cand_label = labels
    seeded_ref, ref_random = _seeded(reference, None, "reference" in built, ref_label)
    seeded_cand, cand_random = _seeded(candidate, candidate_options, "candidate" in built, cand_label)
    cand_options = _without_backend_if_copied(candidate_options, seeded_cand, candidate)

    def open_reference():
        return open_model_runner(seeded_ref, label=ref_label or _onnx_path(reference), built="reference" in built)

    def open_candidate():
        return open_model_runner(seeded_cand, label=cand_label or _onnx_path(candidate), built="candidate" in built,
                                 **cand_options)

    def feeds_for(ref_specs, cand_specs, ref_outputs):
        check_same_inputs(ref_specs, cand_specs)
        if golden:
            data = load_golden(golden)
            stored = {o.name: data[o.name] for o in ref_outputs if o.name in data}
            feeds = _golden_feeds(data, cand_specs)
            return feeds, {"kind": "golden", "source": f"golden file {golden}", "seed": None, "sets": len(feeds)}, stored
        input_set = load_inputs(inputs, cand_specs, seed=seed, batch_size=batch_size,
                                model=inputs_model or _onnx_path(reference) or _onnx_path(candidate))
        return input_set.feeds, input_set.to_dict(), {}

    planned = planned_input_specs(seeded_cand, cand_options)
    ref_runner = open_reference()
    if planned is None:  # an .om or another backend: only its runner knows its inputs, both stay open
        try:
            cand_runner = open_candidate()
        except BaseException:
            ref_runner.close()
            raise
        try:
            feeds, source, stored = feeds_for(ref_runner.inputs, cand_runner.inputs, ref_runner.outputs)
            ref_out, feeds, source = _run_reference(ref_runner, feeds, source, ref_label or _onnx_path(reference),
                                                    "reference" in built)
            cand_out = run_feeds(cand_runner, feeds, "validate: candidate")
        finally:
            for runner in (ref_runner, cand_runner):
                runner.close()
    else:
        # One onnxruntime session at a time: the reference runs and is closed (its copy of the
        # weights freed) before the candidate's session opens, so the peak holds one model's
        # session, not two (issue 20: validation was 8.9x the model file on a 22 MB ViT).
        try:
            ref_specs, ref_outputs = ref_runner.inputs, ref_runner.outputs
            feeds, source, stored = feeds_for(ref_specs, planned, ref_outputs)
            ref_out, feeds, source = _run_reference(ref_runner, feeds, source, ref_label or _onnx_path(reference),
                                                    "reference" in built)
        finally:
            ref_runner.close()
        del ref_runner
        cand_runner = open_candidate()
        try:
            if cand_runner.inputs != planned:  # onnxruntime reads the inputs otherwise: feed what it reports
                feeds, source, stored = feeds_for(ref_specs, cand_runner.inputs, ref_outputs)
                runner = open_reference()
                try:
                    ref_out, feeds, source = _run_reference(runner, feeds, source,
                                                            ref_label or _onnx_path(reference), "reference" in built)
                finally:
                    runner.close()
            cand_out = run_feeds(cand_runner, feeds, "validate: candidate")
        finally:
            cand_runner.close()
    comparisons = {"candidate vs reference": compare_outputs(ref_out, cand_out, tolerance)}
    if stored:
        matched = {k: cand_out[k] for k in stored} if set(stored) <= set(cand_out) else cand_out
        comparisons["candidate vs golden"] = compare_outputs(stored, matched, tolerance)
    return ValidationResult(comparisons, {n: list(a.shape) for n, a in feeds[0].items()}, len(feeds),
                            source.get("seed"), source,
                            random_nodes={"reference": ref_random, "candidate": cand_random})


# When the reference cannot run on seeded random inputs, the integer, boolean and small
# (<= 8 values: scales, ratios) inputs are set to each of these in turn (1: a count, a
# repeat, a step, a divisor; 0: an index, an offset, a Reshape dim that keeps its size)
SAFE_FILLS = (1, 0)
_SMALL_INPUT = 8


def _run_reference(runner, feeds, source: Mapping[str, Any], label: str | None = None,
                   built: bool = False) -> tuple[dict[str, np.ndarray], list, Mapping[str, Any]]:
    """(the reference's outputs, the feeds they came from, their source). When the reference
    cannot run on seeded random inputs, the inputs are at fault, not the model: random values
    cannot stand for an input that carries a shape, indices, axes, a count or scales. Those
    inputs are then set to safe values (SAFE_FILLS), and the source says so; when none runs,
    the one-line error names the likely inputs and the way out (--inputs with real values)."""
    from lvvit_opt.core.errors import LvvitOptError, UserError
    from lvvit_opt.runtime.ort import IN_MEMORY, OutputsNotExchangeable

    try:
        return run_feeds(runner, feeds, "validate: reference"), feeds, source
    except LvvitOptError as exc:
        if built:
            raise
        if isinstance(exc, OutputsNotExchangeable):  # no input would run it: not the inputs' fault
            raise UserError(str(exc).replace(IN_MEMORY, label or "the model")) from None
        if source.get("kind") != "random":  # the user's model on the user's inputs (a seeded in-memory copy too)
            raise UserError(str(exc).replace(IN_MEMORY, label or "the model")) from None
        exc = str(exc).replace(IN_MEMORY, label or "the model")
        floats = {name: array.size for name, array in feeds[0].items() if array.dtype.kind == "f"}
        data = max(floats, key=floats.get) if floats else None  # the largest float input stays random
        filled = [name for name, array in feeds[0].items() if array.dtype.kind in "iub"
                  or (array.dtype.kind == "f" and array.size <= _SMALL_INPUT and name != data)]
        for fill in SAFE_FILLS if filled else ():
            retry = [{name: (np.full_like(array, fill) if name in filled else array) for name, array in feed.items()}
                     for feed in feeds]
            try:
                outputs = run_feeds(runner, retry, "validate: reference")
            except LvvitOptError:
                continue
            note = (f"; {', '.join(filled)} set to {fill} (random values made the original fail; give --inputs "
                    "with real values to validate on them)")
            return outputs, retry, {**source, "source": source.get("source", "") + note, "filled": filled,
                                    "fill": fill}
        suspects = [f"{name!r} {array.dtype}{list(array.shape)}" for name, array in feeds[0].items()
                    if array.dtype.kind in "iub" or array.size <= _SMALL_INPUT]
        named = (f"likely {', '.join(suspects[:6])}{' ...' if len(suspects) > 6 else ''}; " if suspects else "")
        raise UserError(f"the original model does not run on validation's random inputs, which cannot stand "
                        f"for inputs that carry shapes, indices, axes, counts or scales ({named}give --inputs "
                        f"FILE.npz with real values, or --no-validate); onnxruntime said: {exc}") from None


def _seeded(model, options, built: bool, label: str | None):
    """with_seeded_random_nodes; a graph lvvit-opt built that the gate refuses is our failure."""
    from lvvit_opt.core.errors import UserError

    try:
        return with_seeded_random_nodes(model, options)
    except UserError as exc:
        if not built:
            raise
        raise _built_refusal(label, exc) from None


def _built_refusal(label: str | None, exc: Exception) -> Exception:
    from lvvit_opt.core.errors import LvvitOptError

    return LvvitOptError(f"{label or 'the rewritten graph'}: onnxruntime cannot load the graph lvvit-opt built, "
                         f"an internal failure, not your model ({exc})")


def planned_input_specs(model, options: Mapping[str, Any]) -> list | None:
    """The input specs onnxruntime will report for `model` (a ModelProto, or an .onnx path run on
    onnxruntime), read from the graph without opening a session; None for anything else."""
    from lvvit_opt.core.tensor_spec import read_specs
    from lvvit_opt.runtime.registry import canonical_name

    try:
        if canonical_name(str(options.get("backend", "auto"))) not in ("auto", "onnxruntime"):
            return None
    except Exception:  # an unknown backend: the runner opening it says so
        return None
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        if not os.fspath(model).lower().endswith(".onnx") or not os.path.isfile(model):
            return None
    try:
        return read_specs(model)[0]
    except Exception:  # unreadable: the runner opening it says why
        return None


def with_seeded_random_nodes(model, options: Mapping[str, Any] | None = None):
    """(model to run, {"seeded": labels, "unseeded": labels}): an ONNX model (path or proto)
    with random nodes comes back as a proto copy whose random nodes carry fixed seeds
    (lvvit_opt.verify.random_ops.seed_random_nodes, always seed 0 so validate, golden make and
    golden check agree across processes), so both sides of a comparison draw alike.
    (Unseeded, onnxruntime draws one seed per process: runs in one process happen to agree,
    a golden file made by another process does not.)
    Left as is, and listed "unseeded": a model another backend than onnxruntime runs (an .om,
    `--backend onnx_reference`), whose random numbers we cannot fix. The input is never modified."""
    from lvvit_opt.verify.random_ops import random_nodes, seed_random_nodes

    is_path = isinstance(model, (str, bytes)) or hasattr(model, "__fspath__")
    if is_path and not os.fspath(model).lower().endswith(".onnx"):
        return model, {"seeded": [], "unseeded": []}
    if is_path:
        from lvvit_opt.core.fileio import require_regular_file
        from lvvit_opt.core.onnx_files import load_onnx

        if not require_regular_file(model).is_file():  # a FIFO or device is refused unopened; absent: the runner says so
            return model, {"seeded": [], "unseeded": []}
        found = random_nodes(load_onnx(model, weights=False))
    else:
        found = random_nodes(model)
    if not found:
        return model, {"seeded": [], "unseeded": []}
    from lvvit_opt.runtime.registry import canonical_name

    if canonical_name(str((options or {}).get("backend", "auto"))) not in ("auto", "onnx", "onnxruntime"):
        return model, {"seeded": [], "unseeded": found}
    if is_path:
        copy = load_onnx(model)
    else:
        import onnx

        copy = onnx.ModelProto()
        copy.CopyFrom(model)
    return copy, {"seeded": seed_random_nodes(copy), "unseeded": []}


def _without_backend_if_copied(options: Mapping[str, Any] | None, opened, given) -> dict[str, Any]:
    """A seeded copy runs in onnxruntime from memory: the backend it was chosen by has no say there."""
    options = dict(options or {})
    if opened is not given:
        options.pop("backend", None)
    return options


def check_same_inputs(reference_specs, candidate_specs) -> None:
    """UserError unless both models take the same inputs: names, ranks and static dims (a
    symbolic dim matches anything). Otherwise one model could not even be fed."""
    from lvvit_opt.core.errors import UserError

    def describe(specs) -> str:
        return ", ".join(f"{s.name} {list(s.shape) if s.shape is not None else '(rank unknown)'}" for s in specs)

    ref = {s.name: s for s in reference_specs}
    cand = {s.name: s for s in candidate_specs}
    if set(ref) != set(cand):
        raise UserError(f"the models take different inputs: reference {describe(reference_specs)}, "
                        f"candidate {describe(candidate_specs)}; they cannot run on the same feeds")
    for name, spec in ref.items():
        if spec.shape is None or cand[name].shape is None:  # rank unknown (or not a tensor) on a side
            continue
        a, b = list(spec.shape), list(cand[name].shape)
        static = lambda d: isinstance(d, int) and d > 0  # noqa: E731
        if len(a) != len(b) or any(static(x) and static(y) and x != y for x, y in zip(a, b)):
            raise UserError(f"input {name} has shape {a} in the reference but {b} in the candidate; "
                            "they cannot run on the same feeds")


def _onnx_path(model) -> str | None:
    """`model` when it is the path of an .onnx (whose metadata an image folder follows)."""
    if isinstance(model, (str, os.PathLike)) and str(model).lower().endswith(".onnx"):
        return str(model)
    return None


def make_golden(model_path: str, out_path: str, *, inputs: int | str = 1, seed: int = 0,
                batch_size: int | None = None) -> dict[str, tuple]:
    """Run `model_path` on `inputs` (a number of seeded random batches, or a file/directory:
    see lvvit_opt.verify.inputs) and save inputs + outputs to `out_path` (.npz, format above,
    written atomically). Returns name -> shape of what was saved."""
    from lvvit_opt.core.fileio import atomic_path
    from lvvit_opt.verify.inputs import load_inputs

    runner = open_model_runner(with_seeded_random_nodes(model_path)[0])
    try:
        feeds = load_inputs(inputs, runner.inputs, seed=seed, batch_size=batch_size, model=_onnx_path(model_path)).feeds
        outputs = run_feeds(runner, feeds)
    finally:
        runner.close()
    arrays = {name: join_batches([f[name] for f in feeds]) for name in feeds[0]}
    arrays.update(outputs)
    with atomic_path(out_path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return {name: tuple(a.shape) for name, a in arrays.items()}


def load_golden(path: str) -> dict[str, np.ndarray]:
    from lvvit_opt.core.errors import UserError, reason_of, shown

    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise UserError(f"{shown(path)}: no such file") from None
    except Exception as exc:
        raise UserError(f"{shown(path)}: not a golden .npz file ({type(exc).__name__}: {reason_of(exc)})") from None


def check_golden(model, golden_path: str, tolerance: Tolerance | None = None) -> ValidationResult:
    """Run `model` on a golden file's inputs and compare with its stored outputs."""
    from lvvit_opt.core.errors import UserError

    tolerance = tolerance or default_tolerance_for(model)
    data = load_golden(golden_path)
    seeded, found = with_seeded_random_nodes(model)
    runner = open_model_runner(seeded)
    try:
        feeds = _golden_feeds(data, runner.inputs)
        missing = [o.name for o in runner.outputs if o.name not in data]
        if len(missing) == len(runner.outputs):
            raise UserError(f"{golden_path}: holds none of the model's outputs ({', '.join(missing)})")
        outputs = run_feeds(runner, feeds)
    finally:
        runner.close()
    stored = {name: data[name] for name in outputs if name in data}
    report = compare_outputs(stored, {name: outputs[name] for name in stored}, tolerance)
    return ValidationResult({"model vs golden": report}, {n: list(a.shape) for n, a in feeds[0].items()},
                            len(feeds), None, random_nodes={"model": found})


def _golden_feeds(data: Mapping[str, np.ndarray], specs) -> list[dict[str, np.ndarray]]:
    """Split stored inputs into feed sets of the model's static batch (one set if the batch is free)."""
    from lvvit_opt.verify.inputs import split_feeds

    return split_feeds(data, specs, what="golden file")