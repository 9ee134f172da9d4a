"""The pass manager: run named passes in order, each checked before the next one runs.

After every pass a cheap structural check runs (onnx.checker, then strict shape inference
on a weight-free skeleton); a pass that leaves an invalid graph is named at once
(PassBrokeStructure). With check_each, a numeric check (onnxruntime, original vs current)
follows. Loading, validating and writing files is the `apply` verb's job (passes/apply.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import onnx

from lvvit_opt.core.errors import LvvitOptError, UserError, ValidationFailed, reason_of
from lvvit_opt.core.shape_inference import infer_shapes_bounded
from lvvit_opt.passes.base import PassReport, copy_model
from lvvit_opt.passes.graph_utils import weightless_skeleton
from lvvit_opt.passes.registry import get_pass, parse_pass_list


class PassFailed(LvvitOptError):
    """A pass raised an unexpected error; the message names it and the passes before it."""


class PassBrokeStructure(ValidationFailed):
    """The named pass left a graph that onnx.checker or strict shape inference rejects."""

    def __init__(self, message: str, pass_name: str, reports: list[PassReport]):
        super().__init__(message)
        self.pass_name = pass_name
        self.reports = reports


class PassBrokeEquivalence(ValidationFailed):
    """--check-each: the named pass changed what the graph computes."""

    def __init__(self, message: str, pass_name: str, validation, reports: list[PassReport]):
        super().__init__(message)
        self.pass_name = pass_name
        self.validation = validation
        self.reports = reports


@dataclass
class PipelineResult:
    model: onnx.ModelProto
    reports: list[PassReport]
    checks: dict[str, Any] = field(default_factory=dict)  # pass name -> validation dict (check_each)

    def to_dict(self) -> list[dict[str, Any]]:
        return [r.to_dict() | ({"check": self.checks[r.name]} if r.name in self.checks else {}) for r in self.reports]


def run_pipeline(model: onnx.ModelProto, names: list[str] | str, options: Mapping[str, Mapping[str, Any]] | None = None,
                 check_each: bool = False, *, in_place: bool = False, check_seed: int = 0,
                 check_batch_size: int | None = None, tolerance=None, check_inputs: int | str = 1,
                 check_structure: bool = True, check_inputs_model: str | None = None) -> PipelineResult:
    """Run the named passes in order on `model` (not modified unless `in_place`).

    options: pass name -> {option: value} (strings are converted to the option's type).
    check_each: after every pass, run the original and the current graph on onnxruntime on
    seeded inputs (or `check_inputs`: see lvvit_opt.verify.inputs; an image folder follows the
    preprocessing recorded in the .onnx `check_inputs_model`); the first pass that breaks
    equivalence raises PassBrokeEquivalence naming it.
    check_structure: after every pass (before any numeric check), onnx.checker and strict
    shape inference; the first pass that breaks the graph raises PassBrokeStructure.
    """
    names = parse_pass_list(names)
    options = dict(options or {})
    stray = set(options) - set(names)
    if stray:
        raise UserError(f"options given for pass(es) not in the pipeline: {', '.join(sorted(stray))}")
    passes = [get_pass(name)(**dict(options.get(name, {}))) for name in names]  # option errors before any work
    # Whose fault a failure is: a pass that fails on a graph onnx's checker already rejects
    # was given an invalid model (exit 2), and a graph invalid before the passes cannot
    # prove a pass broke it
    input_problem = structural_problem(model) if check_structure else None
    original = model
    current = model if in_place else copy_model(model)
    reports: list[PassReport] = []
    checks: dict[str, Any] = {}
    for graph_pass in passes:
        try:
            result = graph_pass.run(current, in_place=True)
        except LvvitOptError:
            raise
        except Exception as exc:
            ran = ", ".join(r.name for r in reports) or "nothing"
            if input_problem:
                raise UserError(f"the model is not a valid ONNX graph ({input_problem}); pass {graph_pass.name!r} "
                                f"failed on it ({type(exc).__name__}: {reason_of(exc, 200)})") from exc
            raise PassFailed(f"pass {graph_pass.name!r} failed ({type(exc).__name__}: {reason_of(exc, 300)}); "
                             f"ran before it: {ran}") from exc
        current = result.model
        reports.append(result.report)
        if input_problem:
            result.report.notes.append(f"not checked structurally: the input already fails onnx's check "
                                       f"({input_problem[:160]})")
        if check_structure and not input_problem:
            problem = structural_problem(current)
            if problem:
                ran = ", ".join(r.name for r in reports[:-1]) or "nothing"
                raise PassBrokeStructure(f"pass {graph_pass.name!r} left an invalid graph: {problem} "
                                         f"(passes before it: {ran})", graph_pass.name, reports)
        if check_each:
            validation = _check(original, current, check_seed, check_batch_size, tolerance, check_inputs,
                                check_inputs_model, after=graph_pass.name)
            checks[graph_pass.name] = validation.to_dict()
            if not validation.passed:
                ran = ", ".join(r.name for r in reports[:-1]) or "nothing"
                raise PassBrokeEquivalence(
                    f"pass {graph_pass.name!r} broke equivalence ({validation.summary()}; passes before it, "
                    f"which kept it: {ran})", graph_pass.name, validation, reports)
    return PipelineResult(current, reports, checks)


def structural_problem(model: onnx.ModelProto) -> str | None:
    """Why onnx.checker or strict shape inference rejects `model` (one line), or None.

    Cheap: both run on the weightless skeleton (graph_utils.weightless_skeleton), so a
    100 MB model is not copied; weights themselves are not checked.
    """
    try:
        skeleton = weightless_skeleton(model)
        onnx.checker.check_model(skeleton)
        infer_shapes_bounded(skeleton, strict_mode=True)
    except Exception as exc:  # checker.ValidationError, InferenceError, ...
        text = " ".join(str(exc).split())
        return f"{type(exc).__name__}: {text[:400]}"
    return None


def _check(reference, candidate, seed, batch_size, tolerance, inputs=1, inputs_model=None, after: str = "?"):
    from lvvit_opt.verify.golden import validate_models

    return validate_models(reference, candidate, inputs=inputs, seed=seed, batch_size=batch_size, tolerance=tolerance,
                           inputs_model=inputs_model, labels=(inputs_model, f"the graph after pass {after!r}"),
                           built=("candidate",))


def format_op_table(before: Mapping[str, int], after: Mapping[str, int]) -> str:
    """onnxsim-style op-count table, ops sorted by name, changed rows marked `*`."""
    from lvvit_opt.core.table import format_table

    rows = [[op, before.get(op, 0), after.get(op, 0), "*" if before.get(op, 0) != after.get(op, 0) else ""]
            for op in sorted(set(before) | set(after))]
    return format_table(["op", "before", "after", ""], rows, align="lrrl",
                        footer=["total", sum(before.values()), sum(after.values()), ""])
