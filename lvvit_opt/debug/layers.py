"""`debug layers`: find the first tensor where a candidate stops agreeing with the reference.

The reference is an ONNX model. The candidate is another ONNX model (matched by tensor name,
and through the Transposes/Casts a rewrite adds), the reference converted to true fp16 with fp32
inputs and outputs the way atc's --precision_mode/--keep_dtype run it (lvvit_opt.debug.precision: a
CPU preview of what fp16 on the NPU does, constants rounded, never clamped), or an NPU dump
directory of the compiled .om (lvvit_opt.debug.dump).

Every intermediate tensor is exposed as a graph output of an in-memory copy of each ONNX
model (what Polygraphy's `--onnx-outputs mark all` and msit's ONNX dump do); both models
run on the same inputs. Tensors are compared in the reference's topological order with
golden.compare_outputs, the comparison every validation uses, in chunks whose activations
fit `chunk_mb`, so the activations of both models are never all held at once.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from lvvit_opt.core.errors import UserError, reason_of
from lvvit_opt.verify.golden import OutputComparison, Tolerance, compare_outputs, join_batches
from lvvit_opt.core.progress import task

log = logging.getLogger(__name__)

DEFAULT_CHUNK_MB = 384  # lvvit_s bs1 (~270 MB of activations per model): 2 runs of each model
_UNKNOWN_TENSOR_BYTES = 4 * 1024 * 1024  # budget stand-in for a tensor whose shape inference could not size


@dataclass(frozen=True)
class RefTensor:
    """One output of one reference node, in topological order."""

    index: int
    name: str
    node: str
    op_type: str
    output_index: int
    inputs: tuple[str, ...]  # the node's input tensor names


@dataclass(frozen=True)
class Match:
    """Where a reference tensor's value is found in the candidate, and how to align it.

    `to_ref` is the permutation that brings the candidate array into the reference layout
    (None: same layout); `via` says in words how the match was made."""

    ref: str
    candidate: str
    to_ref: tuple[int, ...] | None = None
    via: str = "same name"
    primary: bool = True  # False: an extra candidate tensor that holds a reference tensor again


@dataclass
class TensorResult:
    tensor: RefTensor
    match: Match
    comparison: OutputComparison

    @property
    def passed(self) -> bool:
        return self.comparison.passed

    def to_dict(self) -> dict[str, Any]:
        c = self.comparison
        return {"index": self.tensor.index, "tensor": self.tensor.name, "node": self.tensor.node,
                "op_type": self.tensor.op_type, "candidate_tensor": self.match.candidate, "via": self.match.via,
                "passed": c.passed, "shape": list(c.shape), "max_abs": c.max_abs,
                "max_abs_index": list(c.max_abs_index), "max_rel": c.max_rel, "mean_abs": c.mean_abs,
                "cosine": c.cosine, "atol_needed": c.atol_needed, "range_rel": c.range_rel, "mean_rel": c.mean_rel,
                "rmse": c.rmse, "overflow": c.overflow, "underflow": c.underflow, "failures": list(c.failures)}

    def line(self) -> str:
        c = self.comparison
        via = f" [{self.match.via}]" if _through(self.match) else ""
        flow = "".join(f" {label}={count}" for label, count in (("overflow", c.overflow), ("underflow", c.underflow))
                       if count)
        return (f"#{self.tensor.index} {self.tensor.node} ({self.tensor.op_type}) -> {self.match.candidate}{via} "
                f"{tuple(c.shape)}: max_abs={c.max_abs:.3g} max_rel={c.max_rel:.3g} cosine={c.cosine:.8f} "
                f"range_rel={c.range_rel:.3g}{flow} -> {'PASS' if c.passed else 'FAIL'}")


@dataclass
class LayerReport:
    reference: str
    candidate: str
    mode: str  # onnx | fp16 | dump
    tolerance: Tolerance
    inputs: dict[str, Any]
    results: list[TensorResult]
    unmatched_reference: list[str] = field(default_factory=list)
    unmatched_candidate: list[str] = field(default_factory=list)
    top: int = 10
    precision: dict[str, Any] | None = None  # fp16 mode: precision_mode, kept_fp32 nodes, note

    @property
    def first_overflow(self) -> TensorResult | None:
        """The first tensor with an fp16 overflow to Inf in the candidate, or a failing one with an
        underflow to 0 (tiny values rounding to 0 in a passing tensor are fp16's honest rounding)."""
        return next((r for r in self.results if r.comparison.overflow or (r.comparison.underflow and not r.passed)),
                    None)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def first_divergence(self) -> TensorResult | None:
        return next((r for r in self.results if not r.passed), None)

    def last_passing_before(self, failure: TensorResult) -> TensorResult | None:
        before = [r for r in self.results[: self.results.index(failure)] if r.passed]
        return before[-1] if before else None

    def worst(self, n: int | None = None) -> list[TensorResult]:
        """Failing tensors first, then by lowest cosine, then by largest atol needed; each
        reference tensor once (its worst comparison: a tensor matched through a cast or a
        second candidate tensor is still one tensor)."""
        ranked = sorted(self.results, key=lambda r: (r.passed, _sortable(r.comparison.cosine),
                                                     -_sortable(r.comparison.atol_needed, inf=True)))
        seen: set[str] = set()
        unique = [r for r in ranked if not (r.tensor.name in seen or seen.add(r.tensor.name))]
        return unique[: self.top if n is None else n]

    def op_types(self) -> dict[str, dict[str, Any]]:
        summary: dict[str, dict[str, Any]] = {}
        for r in self.results:
            if not r.match.primary:
                continue
            entry = summary.setdefault(r.tensor.op_type, {"tensors": 0, "failed": 0, "min_cosine": 1.0,
                                                          "max_abs": 0.0})
            entry["tensors"] += 1
            entry["failed"] += 0 if r.passed else 1
            entry["min_cosine"] = min(entry["min_cosine"], r.comparison.cosine)
            entry["max_abs"] = max(entry["max_abs"], r.comparison.max_abs)
        return dict(sorted(summary.items(), key=lambda kv: (-kv[1]["failed"], kv[1]["min_cosine"])))

    def broken_nodes(self) -> list[str]:
        """Nodes whose output fails while every compared input passes: where the error starts
        (later failures only inherit it). What atc's keep_dtype should keep in fp32."""
        status = {r.tensor.name: r.passed for r in self.results if r.match.primary}
        broken = []
        for r in self.results:
            if r.match.primary and not r.passed and all(status.get(i, True) for i in r.tensor.inputs):
                if r.tensor.node not in broken:
                    broken.append(r.tensor.node)
        return broken

    def readers_broken_by_casts(self) -> list[str]:
        """Readers of a tensor whose own (fp32) value agrees while its cast for the next node
        (the primary match) does not: a node kept in fp32 whose output overflows fp16, so
        its readers must stay in fp32 too."""
        by_ref: dict[str, list[TensorResult]] = {}
        for r in self.results:
            by_ref.setdefault(r.tensor.name, []).append(r)
        cast_broken = {name for name, rs in by_ref.items()  # one copy agrees (fp32), another (its cast) not
                       if any(not r.passed for r in rs) and any(r.passed for r in rs)}
        readers = []
        for r in self.results:
            if r.match.primary and cast_broken & set(r.tensor.inputs) and r.tensor.node not in readers:
                readers.append(r.tensor.node)
        return readers

    def to_dict(self) -> dict[str, Any]:
        first = self.first_divergence
        last = self.last_passing_before(first) if first else None
        return {
            "passed": self.passed, "reference": self.reference, "candidate": self.candidate, "mode": self.mode,
            "tolerance": asdict(self.tolerance), "inputs": self.inputs,
            "tensors_compared": len(self.results),
            "matched_through": sum(1 for r in self.results if _through(r.match)),
            "first_divergence": first.to_dict() if first else None,
            "first_overflow": self.first_overflow.to_dict() if self.first_overflow else None,
            "overflow_tensors": sum(1 for r in self.results if r.comparison.overflow),
            "underflow_tensors": sum(1 for r in self.results if r.comparison.underflow),
            "precision": self.precision,
            "last_passing_before": last.to_dict() if last else None,
            "worst": [r.to_dict() for r in self.worst()],
            "op_types": self.op_types(),
            "broken_nodes": self.broken_nodes(),
            "unmatched_reference": self.unmatched_reference,
            "unmatched_candidate": self.unmatched_candidate,
            "tensors": [r.to_dict() for r in self.results],
        }

    def format(self) -> str:
        t = self.tolerance
        through = sum(1 for r in self.results if _through(r.match))
        lines = [f"reference: {self.reference}", f"candidate: {self.candidate} ({self.mode})",
                 f"inputs: {self.inputs.get('source', '?')}",
                 f"compared {len(self.results)} tensor(s) in topological order ({through} matched through "
                 f"Transpose/Cast/node name); tolerance {t.enforced().replace(', ', ' ')}"]
        if self.unmatched_reference:
            lines.append(f"reference tensors without a candidate: {len(self.unmatched_reference)} "
                         f"(e.g. {', '.join(self.unmatched_reference[:3])})")
        if self.unmatched_candidate:
            lines.append(f"candidate tensors matched to nothing: {len(self.unmatched_candidate)} "
                         f"(e.g. {', '.join(self.unmatched_candidate[:3])})")
        first = self.first_divergence
        if first is None:
            lines.append("first divergence: none, every tensor agrees")
        else:
            lines.append(f"first divergence: {first.line()}")
            lines += [f"  {failure}" for failure in first.comparison.failures]
            cause = _flow_cause(first.comparison)
            if cause:
                lines.append(f"  cause: {cause}")
            last = self.last_passing_before(first)
            lines.append(f"  last passing before it: {last.line() if last else 'none (the first tensor fails)'}")
            broken = self.broken_nodes()
            lines.append(f"nodes where an error starts (inputs agree, output does not): {len(broken)}: "
                         f"{', '.join(broken[:10])}{' ...' if len(broken) > 10 else ''}")
        flows = self.first_overflow
        if self.mode == "fp16" or flows is not None:
            lines.append("first overflow/underflow: " + (f"{flows.line()}" if flows else "none (no Inf or 0 from "
                                                                                        "fp16's range)"))
        worst = self.worst()
        lines.append(f"worst {len(worst)} tensor(s):")
        lines += [f"  {r.line()}" for r in worst]
        lines.append("per op type:")
        lines.append(f"  {'op_type':<22}{'tensors':>8}{'failed':>8}{'min_cosine':>14}{'max_abs':>12}")
        for op_type, s in self.op_types().items():
            lines.append(f"  {op_type:<22}{s['tensors']:>8}{s['failed']:>8}{s['min_cosine']:>14.8f}"
                         f"{s['max_abs']:>12.3g}")
        lines.append("PASS" if self.passed else "FAIL")
        return "\n".join(lines)


def _flow_cause(c: OutputComparison) -> str | None:
    parts = []
    if c.overflow:
        parts.append(f"{c.overflow} value(s) overflow fp16 (|x| > 65504) to Inf")
    if c.underflow:
        parts.append(f"{c.underflow} value(s) underflow fp16 to 0")
    return "; ".join(parts) or None


def _through(match: Match) -> bool:
    return match.via.startswith(("through ", "same node "))


def _sortable(value: float, inf: bool = False) -> float:
    if value != value:  # NaN sorts as the worst
        return float("inf") if inf else float("-inf")
    return value


# -- graph side ---------------------------------------------------------------------------

def node_label(node, index: int) -> str:
    """A node's name, or msit's stand-in for an unnamed node (`{op_type}_{index}`)."""
    return node.name or f"{node.op_type}_{index}"


def reference_tensors(model) -> list[RefTensor]:
    """Every output of every top-level node except Constants, in the graph's (topological) order."""
    tensors = []
    for position, node in enumerate(model.graph.node):
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            continue
        for k, out in enumerate(node.output):
            if out:
                tensors.append(RefTensor(len(tensors), out, node_label(node, position), node.op_type, k,
                                         tuple(i for i in node.input if i)))
    return tensors


def match_onnx(reference, candidate) -> tuple[list[Match], list[str]]:
    """Candidate tensors holding each reference tensor: by name, then through the Transposes
    and Casts a rewrite or the fp16 converter adds, then by producing node name and output
    index. Returns (matches, candidate tensors matched to nothing)."""
    from lvvit_opt.passes.graph_utils import consumers
    from lvvit_opt.passes.softmax_transpose import inverse_perm

    ref_names = {t.name for t in reference_tensors(reference)}
    cand_nodes = [n for n in candidate.graph.node if not (n.op_type == "Constant" and n.domain in ("", "ai.onnx"))]
    cand_outputs = [o for n in cand_nodes for o in n.output if o]
    aligned: dict[str, tuple[str, tuple | None, str]] = {}  # cand tensor -> (ref tensor, to_ref, via)
    for name in [i.name for i in candidate.graph.input] + cand_outputs:  # inputs: only to align their Casts
        if name in ref_names or name in {i.name for i in reference.graph.input}:
            aligned[name] = (name, None, "same name")
    readers = consumers(candidate.graph)
    changed = True
    while changed:  # forward and backward through Transpose/Cast until nothing new is aligned
        changed = False
        for node in cand_nodes:
            if node.op_type not in ("Transpose", "Cast") or not node.input or not node.output:
                continue
            src, dst = node.input[0], node.output[0]
            perm = _perm(node) if node.op_type == "Transpose" else None
            if node.op_type == "Transpose" and perm is None:  # reverses the axes of a rank unknown here
                continue
            if dst not in aligned and src in aligned:  # dst = T(src): undo T, then src's alignment
                ref, to_ref, _ = aligned[src]
                aligned[dst] = (ref, _compose(inverse_perm(perm) if perm else None, to_ref),
                                f"through {node.op_type} {node.name or dst}")
                changed = True
            elif src not in aligned and dst in aligned and len(readers.get(src, [])) == 1:  # src = T^-1(dst)
                ref, to_ref, _ = aligned[dst]
                aligned[src] = (ref, _compose(perm, to_ref), f"through {node.op_type} {node.name or dst}")
                changed = True
    ref_by_node = {(t.node, t.output_index): t.name for t in reference_tensors(reference)}
    for position, node in enumerate(candidate.graph.node):  # e.g. the fp16 converter's renamed last output
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            continue
        for k, out in enumerate(node.output):
            key = (node_label(node, position), k)
            if out and out not in aligned and key in ref_by_node:
                aligned[out] = (ref_by_node[key], None, f"same node {key[0]} output {k}")
    matches, seen = [], set()
    for cand_name in cand_outputs:
        if cand_name in aligned and aligned[cand_name][0] in ref_names:
            ref, to_ref, via = aligned[cand_name]
            matches.append(Match(ref, cand_name, to_ref, via, primary=ref not in seen and via == "same name"))
            if via == "same name":
                seen.add(ref)
    # a reference tensor found only through a Transpose/Cast/node name: its first match is the primary one
    for i, m in enumerate(matches):
        if m.ref not in seen:
            matches[i] = Match(m.ref, m.candidate, m.to_ref, m.via, primary=True)
            seen.add(m.ref)
    unmatched = [n for n in cand_outputs if n not in aligned]
    log.debug("matched %d candidate tensors to the reference, %d unmatched", len(matches), len(unmatched))
    return matches, unmatched


def match_dump(dump, tensors: Sequence[RefTensor]) -> tuple[list[Match], list[str]]:
    """Reference tensors found in an NPU dump (lvvit_opt.debug.dump.DumpCandidate): a dumped
    op's sanitised name and output index, or the original op a fused op stands for (the .om
    graph JSON's renames). Returns (matches, dump files matched to nothing); UserError if
    nothing matches (the dump of another model)."""
    from lvvit_opt.debug.dump import dump_name

    by_key = {(dump_name(t.node), t.output_index): t for t in tensors}
    matches, used = [], set()
    for key, path in dump.files.items():
        tensor = by_key.get(key)
        via = f"dump of op {key[0]} output {key[1]}"
        if tensor is None and key in dump.renames:
            origin = dump.renames[key]
            tensor = by_key.get((dump_name(origin[0]), origin[1]))
            via = f"dump of fused op {key[0]} output {key[1]} (= {origin[0]} output {origin[1]})"
        if tensor is not None:
            matches.append(Match(tensor.name, str(path.relative_to(dump.directory)), None, via))
            used.add(key)
    unmatched = [str(p.relative_to(dump.directory)) for k, p in dump.files.items() if k not in used]
    if not matches:
        raise UserError(f"{dump.directory}: none of its {len(dump.files)} dumped op(s) matches a node of the "
                        f"reference (e.g. {next(iter(dump.files))[0]}); is it the dump of this model?")
    return matches, unmatched


def _perm(node) -> list[int] | None:
    for attr in node.attribute:
        if attr.name == "perm":
            return list(attr.ints)
    return None


def _compose(first: Sequence[int] | None, then: Sequence[int] | None) -> tuple[int, ...] | None:
    """The permutation of transpose(transpose(a, first), then)."""
    if first is None:
        return tuple(then) if then is not None else None
    if then is None:
        return tuple(first)
    combined = tuple(first[i] for i in then)
    return None if combined == tuple(range(len(combined))) else combined


def expose_outputs(model, names: Iterable[str]) -> None:
    """Make `names` graph outputs (name-only value infos: onnxruntime infers their types)."""
    import onnx

    present = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in present)


def to_fp16(model, keep_fp32: Sequence[str] = (), precision_mode: str = "force_fp16", keep_dtype=None):
    """The model in true fp16 with fp32 inputs and outputs, the way atc's `precision_mode` runs
    it (lvvit_opt.debug.precision: constants rounded to fp16, never clamped); `keep_fp32` nodes and a
    parsed --keep_dtype file (precision.KeepDtype) stay fp32. The caller's model is not modified."""
    from lvvit_opt.debug.precision import to_true_fp16

    return to_true_fp16(model, keep_fp32, precision_mode, keep_dtype)[0]


class ExposedOnnx:
    """An ONNX model run on onnxruntime with any of its tensors fetchable."""

    def __init__(self, model, names: Iterable[str], label: str):
        from lvvit_opt.runtime.ort import OrtRunner

        expose_outputs(model, names)
        # no arena: a run materialises every exposed tensor; without it they are freed between runs
        self.runner = OrtRunner.from_model(model, memory_arena=False)
        self.runner.model_path = label
        self.runner.model = None  # the session has its own copy; do not keep the weights twice
        self.inputs = self.runner.inputs

    def fetch(self, names: Sequence[str], feeds: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
        try:
            runs = [self.runner.session.run(list(names), self._own_names(feed)) for feed in feeds]
        except Exception as exc:  # e.g. a candidate with another batch size or input shape
            raise UserError(f"{self.runner.model_path} cannot run on these inputs "
                            f"({reason_of(exc, 300)})") from None
        return {name: join_batches([run[i] for run in runs]) for i, name in enumerate(names)}

    def _own_names(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The reference's feeds under this model's input names (by position when they differ)."""
        own = [s.name for s in self.inputs]
        if set(feed) == set(own) or len(feed) != len(own):
            return dict(feed)
        return dict(zip(own, feed.values()))

    def close(self) -> None:
        self.runner.close()


# -- comparison ---------------------------------------------------------------------------

def compare_layers(reference_path: str, candidate: str | None = None, *, fp16: bool = False,
                   inputs: int | str = 1, seed: int = 0, batch_size: int | None = None,
                   tolerance: Tolerance | None = None, chunk_mb: float = DEFAULT_CHUNK_MB,
                   top: int = 10, om_json: str | None = None, keep_fp32: Sequence[str] = (),
                   precision_mode: str = "force_fp16", keep_dtype: str | None = None) -> LayerReport:
    """Compare REFERENCE (.onnx) with CANDIDATE (.onnx, or an NPU dump directory) or, with
    `fp16`, with its own true-fp16 conversion, tensor by tensor. See the module docstring.
    `om_json`: the .om's `atc --mode=1` graph JSON, to match fused ops of a dump.
    `keep_fp32`: with `fp16`, nodes the conversion leaves in fp32; `precision_mode` and
    `keep_dtype` (an atc --keep_dtype file): as atc's flags of those names (lvvit_opt.debug.precision)."""
    import os

    from lvvit_opt.core.onnx_files import load_onnx
    from lvvit_opt.verify.inputs import load_inputs

    if fp16 == (candidate is not None):
        raise UserError("give either a CANDIDATE (.onnx or dump directory) or --fp16, not both" if fp16
                        else "give a CANDIDATE (.onnx or dump directory) or --fp16")
    if om_json and mode_is_not_dump(candidate, fp16):
        raise UserError("--om-json maps the ops of an NPU dump; the candidate is not a dump directory")
    if chunk_mb <= 0:
        raise UserError(f"--chunk-mb {chunk_mb}: must be positive")
    if candidate is not None and not os.path.isdir(candidate) and not candidate.lower().endswith(".onnx"):
        raise UserError(f"CANDIDATE {candidate}: expected an .onnx or an NPU dump directory (for an .om: "
                        "python -m ais_bench --model X.om --input ... --output OUT --dump 1 --dump_npy 1, "
                        "then pass OUT/dump)")
    if (keep_dtype or precision_mode != "force_fp16") and not fp16:
        raise UserError("--precision-mode/--keep-dtype shape the fp16 preview: give them without a CANDIDATE")
    keep_file = None
    if keep_dtype:
        from lvvit_opt.debug.precision import read_keep_dtype

        keep_file = read_keep_dtype(keep_dtype)
    reference = load_onnx(reference_path)
    mode = "fp16" if fp16 else ("dump" if os.path.isdir(candidate) else "onnx")
    tolerance = tolerance or (Tolerance.onnx() if mode == "onnx" else Tolerance.fp16())
    tensors = reference_tensors(reference)
    sizes = _tensor_bytes(reference_path, tensors)
    from lvvit_opt.core.resources import require_memory

    # a run materialises every exposed tensor of a model; the chunk holds both models' share
    require_memory(sum(sizes.values()) + int(chunk_mb * 1024 * 1024),
                   f"debug layers on {reference_path} (every activation of one run, plus a {chunk_mb:g} MB chunk)")
    precision = None
    if mode == "dump":
        from lvvit_opt.debug.dump import DumpCandidate

        cand = DumpCandidate(candidate, om_json)
        matches, unmatched_cand = match_dump(cand, tensors)
    else:
        if fp16:
            from lvvit_opt.debug.precision import summary

            cand_model, kept = _fp16_candidate(reference, reference_path, keep_fp32, precision_mode, keep_file)
            precision = {"precision_mode": precision_mode, "keep_dtype": keep_dtype, "kept_fp32": kept,
                         "description": summary(precision_mode, kept)}
        else:
            cand_model = load_onnx(candidate)
        matches, unmatched_cand = match_onnx(reference, cand_model)
        label = candidate or f"{reference_path} (fp16)"
        if fp16:
            cand = _open_fp16_candidate(cand_model, [m.candidate for m in matches], label, reference, reference_path)
        else:
            cand = ExposedOnnx(cand_model, [m.candidate for m in matches], label)
        del cand_model
    ref = None
    try:
        ref = ExposedOnnx(reference, [t.name for t in tensors], reference_path)
        del reference
        input_set = load_inputs(inputs, ref.inputs, seed=seed, batch_size=batch_size, model=reference_path)
        if mode == "dump" and len(input_set.feeds) != 1:
            raise UserError(f"an NPU dump holds one inference; --inputs gave {len(input_set.feeds)} batches "
                            "(pass the exact batch ais_bench ran on)")
        results = _compare_in_chunks(tensors, matches, ref, cand, input_set.feeds, tolerance, sizes,
                                     chunk_mb * 1024 * 1024)
    finally:
        for runner in (ref, cand):
            if runner is not None:
                runner.close()
    matched_refs = {m.ref for m in matches}
    label = candidate or f"{reference_path} converted to {precision['description'] if precision else 'fp16'}"
    return LayerReport(reference_path, label, mode, tolerance, input_set.to_dict(), results,
                       [t.name for t in tensors if t.name not in matched_refs], unmatched_cand, top,
                       precision if mode == "fp16" else None)


FP16_INTERNAL = "an internal failure of lvvit-opt's fp16 conversion, not a problem of the model; please report it"


def _fp16_candidate(reference, reference_path: str, keep_fp32, precision_mode: str, keep_file):
    """REFERENCE converted to true fp16 (debug.precision). The reference has passed load_onnx's
    checks (a bad model is exit 2 before this), so a converter that breaks on it is our failure:
    LvvitOptError (exit 1), saying so, not a traceback and not the user's bad input. A UserError the
    converter raises on purpose (an unknown --precision-mode) stays the user's."""
    from lvvit_opt.core.errors import LvvitOptError
    from lvvit_opt.debug.precision import to_true_fp16

    try:
        return to_true_fp16(reference, keep_fp32, precision_mode, keep_file)
    except LvvitOptError:
        raise
    except Exception as exc:  # noqa: BLE001 - any other exception is a bug of the converter
        log.debug("fp16 conversion of %s failed", reference_path, exc_info=True)
        raise LvvitOptError(f"{reference_path}: the fp16 conversion failed ({type(exc).__name__}: "
                            f"{reason_of(exc, 200)}); {FP16_INTERNAL}") from exc


def _open_fp16_candidate(cand_model, names, label: str, reference, reference_path: str) -> "ExposedOnnx":
    """The fp16 copy on onnxruntime. If onnxruntime refuses it, the reference decides whose fault
    that is: a reference onnxruntime refuses too is the user's model (UserError, exit 2, naming the
    reference); one it runs means our conversion made a graph it cannot load (LvvitOptError, exit 1)."""
    from lvvit_opt.core.errors import LvvitOptError
    from lvvit_opt.runtime.ort import IN_MEMORY, OrtRunner

    try:
        return ExposedOnnx(cand_model, names, label)
    except UserError as exc:
        refused = exc
    try:
        OrtRunner.from_model(reference).close()
    except UserError as exc:
        raise UserError(str(exc).replace(IN_MEMORY, reference_path, 1)) from None
    detail = str(refused).split(": ", 1)[-1] if str(refused).startswith(IN_MEMORY) else str(refused)
    raise LvvitOptError(f"{reference_path}: onnxruntime runs it but not its fp16 conversion ({detail}); "
                        f"{FP16_INTERNAL}")


def mode_is_not_dump(candidate: str | None, fp16: bool) -> bool:
    import os

    return fp16 or candidate is None or not os.path.isdir(candidate)


def _tensor_bytes(reference_path: str, tensors: list[RefTensor]) -> dict[str, int]:
    """Estimated bytes of one batch of each tensor (onnx shape inference on the weightless graph)."""
    from lvvit_opt.core.onnx_files import load_onnx
    from lvvit_opt.passes.graph_utils import infer_shapes_light

    try:
        shapes = infer_shapes_light(load_onnx(reference_path, load_external_data=False))
    except Exception:  # shape inference is only a budget aid
        return {}
    sizes = {}
    for t in tensors:
        dims = shapes.get(t.name)
        if dims is not None and all(isinstance(d, int) and d >= 0 for d in dims):
            sizes[t.name] = 4 * int(np.prod(dims, dtype=np.int64))
    return sizes


def _chunks(results_order: list[tuple[RefTensor, list[Match]]], sizes: Mapping[str, int], budget: float):
    chunk, used = [], 0
    for item in results_order:
        cost = sizes.get(item[0].name, _UNKNOWN_TENSOR_BYTES) * (1 + len(item[1]))
        if chunk and used + cost > budget:
            yield chunk
            chunk, used = [], 0
        chunk.append(item)
        used += cost
    if chunk:
        yield chunk


def _compare_in_chunks(tensors, matches, ref, cand, feeds, tolerance, sizes, budget) -> list[TensorResult]:
    by_ref: dict[str, list[Match]] = {}
    for m in matches:
        by_ref.setdefault(m.ref, []).append(m)
    for group in by_ref.values():
        group.sort(key=lambda m: not m.primary)
    order = [(t, by_ref[t.name]) for t in tensors if t.name in by_ref]
    budget_per_set = budget / max(1, len(feeds))
    results: list[TensorResult] = []
    with task("debug layers", total=len(order), unit="tensor") as bar:
        for chunk in _chunks(order, sizes, budget_per_set):
            ref_values = ref.fetch([t.name for t, _ in chunk], feeds)
            cand_values = cand.fetch(list(dict.fromkeys(m.candidate for _, group in chunk for m in group)), feeds)
            for tensor, group in chunk:
                for m in group:
                    value = cand_values[m.candidate]
                    if hasattr(cand, "align"):  # an NPU dump in the device's own layout
                        value = cand.align(value, ref_values[tensor.name].shape)
                    if m.to_ref is not None:
                        value = np.transpose(value, m.to_ref) if value.ndim == len(m.to_ref) else value
                    report = compare_outputs({tensor.name: ref_values[tensor.name]}, {tensor.name: value}, tolerance)
                    results.append(TensorResult(tensor, m, report.outputs[0]))
            bar.update(len(chunk))
            del ref_values, cand_values
    return results


@dataclass
class KeepDtypeSuggestion:
    nodes: list[str]
    rounds: int  # fp16 re-runs with the nodes kept in fp32 (0 for a dump: the NPU cannot be re-run here)
    verified: bool | None  # every tensor agrees with the nodes kept in fp32 (None: not checked)
    remaining: TensorResult | None  # the first divergence still left after the last round

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "rounds": self.rounds, "verified": self.verified,
                "first_divergence_left": self.remaining.to_dict() if self.remaining else None}


def suggest_keep_fp32(report: LayerReport, max_rounds: int = 4, **compare_options) -> KeepDtypeSuggestion:
    """Nodes for atc's --keep_dtype: where the fp16 error starts; for an --fp16 report, then
    re-run with them kept in fp32 and add where an error still starts, or the readers a kept
    node's fp16 cast breaks (an overflowing MatMul needs its Softmax in fp32 as well), until
    everything agrees or `max_rounds` re-runs. `compare_options` are compare_layers' (inputs, ...)."""
    nodes = list(dict.fromkeys(report.broken_nodes()))
    if report.mode != "fp16" or not nodes:
        return KeepDtypeSuggestion(nodes, 0, None if report.mode != "fp16" else report.passed,
                                   report.first_divergence)
    last, rounds = report, 0
    while rounds < max_rounds:
        last = compare_layers(report.reference, fp16=True, keep_fp32=nodes, **compare_options)
        rounds += 1
        new = [n for n in dict.fromkeys(last.broken_nodes() + last.readers_broken_by_casts()) if n not in nodes]
        if last.passed or not new:
            break
        nodes += new
    return KeepDtypeSuggestion(nodes, rounds, last.passed, last.first_divergence)


def write_keep_dtype(nodes: Sequence[str], path: str) -> bool:
    """atc's --keep_dtype file (one node name a line); False (nothing written) when there are none."""
    from lvvit_opt.ascend.atc import write_keep_dtype_file

    if nodes:
        write_keep_dtype_file(path, node_names=nodes)
    return bool(nodes)
