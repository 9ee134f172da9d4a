"""Run passes in order (optionally validating after each), and the whole `apply` verb as a function."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import onnx

from ..errors import LvvitOptError, UserError, ValidationFailed
from .base import PassReport, copy_model
from .graph_utils import op_counts
from .registry import get_pass, parse_pass_list


class PassFailed(LvvitOptError):
    """A pass raised an unexpected error; the message names it and the passes before it."""


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
                 check_batch_size: int | None = None, tolerance=None, check_inputs: int | str = 1) -> PipelineResult:
    """Run the named passes in order on `model` (not modified unless `in_place`).

    options: pass name -> {option: value} (strings are converted to the option's type).
    check_each: after every pass, run the original and the current graph on onnxruntime on
    seeded inputs (or `check_inputs`: see lvvit_opt.inputs); the first pass that breaks
    equivalence raises PassBrokeEquivalence naming it.
    """
    names = parse_pass_list(names)
    options = dict(options or {})
    stray = set(options) - set(names)
    if stray:
        raise UserError(f"options given for pass(es) not in the pipeline: {', '.join(sorted(stray))}")
    passes = [get_pass(name)(**dict(options.get(name, {}))) for name in names]  # option errors before any work
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
            raise PassFailed(f"pass {graph_pass.name!r} failed ({type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}); "
                             f"ran before it: {ran}") from exc
        current = result.model
        reports.append(result.report)
        if check_each:
            validation = _check(original, current, check_seed, check_batch_size, tolerance, check_inputs)
            checks[graph_pass.name] = validation.to_dict()
            if not validation.passed:
                ran = ", ".join(r.name for r in reports[:-1]) or "nothing"
                raise PassBrokeEquivalence(
                    f"pass {graph_pass.name!r} broke equivalence (passes before it, which kept it: {ran})\n"
                    f"{validation.format()}", graph_pass.name, validation, reports)
    return PipelineResult(current, reports, checks)


def _check(reference, candidate, seed, batch_size, tolerance, inputs=1):
    from ..golden import validate_models

    return validate_models(reference, candidate, inputs=inputs, seed=seed, batch_size=batch_size, tolerance=tolerance)


@dataclass
class ApplyResult:
    """Everything `lvvit-opt apply` did; `to_dict` is the --report JSON."""

    input: str
    output: str
    passes: list[PassReport]
    ops_before: dict[str, int]
    ops_after: dict[str, int]
    validation: Any = None  # golden.ValidationResult or None when --no-validate
    checks: dict[str, Any] = field(default_factory=dict)
    written: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input, "output": self.output, "written": self.written, "seconds": round(self.seconds, 3),
            "passes": [r.to_dict() | ({"check": self.checks[r.name]} if r.name in self.checks else {})
                       for r in self.passes],
            "op_counts": {"before": self.ops_before, "after": self.ops_after},
            "transpose_input_shapes": self.transpose_input_shapes(),
            "validation": self.validation.to_dict() if self.validation is not None else None,
        }

    def transpose_input_shapes(self) -> list[list]:
        """Input shapes of every Transpose the passes created (for the CANN whitelist)."""
        shapes = []
        for report in self.passes:
            for shape in report.details.get("transpose_input_shapes", []):
                if shape not in shapes:
                    shapes.append(shape)
        return shapes

    def format(self) -> str:
        lines = [format_op_table(self.ops_before, self.ops_after), ""]
        lines += [r.summary() for r in self.passes]
        for report in self.passes:
            lines += [f"  {report.name}: {note}" for note in report.notes]
        shapes = self.transpose_input_shapes()
        if shapes:
            lines.append(f"created Transpose input shapes: {', '.join(str(tuple(s)) for s in shapes)}")
        if self.validation is not None:
            lines += ["", "validation (onnxruntime, original vs rewritten):", self.validation.format()]
        return "\n".join(lines)


class ApplyValidationFailed(ValidationFailed):
    def __init__(self, message: str, result: ApplyResult):
        super().__init__(message)
        self.result = result


def apply_file(in_path: str | os.PathLike, out_path: str | os.PathLike, passes: list[str] | str, *,
               batch_size: int | None = None, input_shapes: str | list[str] | None = None,
               options: Mapping[str, Mapping[str, Any]] | None = None, validate: bool = True,
               check_each: bool = False, report_path: str | os.PathLike | None = None,
               validation_inputs: int | str = 1, seed: int = 0, tolerance=None) -> ApplyResult:
    """The `apply` verb: load, run passes, validate on onnxruntime, write atomically.

    batch_size / input_shapes feed fix_shapes (batch_size is also the validation batch when
    the model's batch stays symbolic). `validation_inputs`: a number of seeded random batches
    or a file/directory (see lvvit_opt.inputs). On validation failure nothing is written at
    `out_path` and ApplyValidationFailed (exit 1) carries the result; `report_path` is
    written either way.
    """
    from ..fileio import guard_outputs, load_onnx, save_onnx, write_text_atomic

    start = time.perf_counter()
    in_path, out_path = Path(in_path), Path(out_path)
    guard_outputs({"-o": out_path, "--report": report_path}, {"MODEL": in_path})
    names = parse_pass_list(passes)
    options = {k: dict(v) for k, v in (options or {}).items()}
    if "fix_shapes" in names:
        if batch_size is not None:
            options.setdefault("fix_shapes", {})["batch_size"] = batch_size
        if input_shapes:
            options.setdefault("fix_shapes", {})["input_shapes"] = (
                ";".join(input_shapes) if isinstance(input_shapes, (list, tuple)) else input_shapes)
    elif input_shapes:
        raise UserError("--input-shape only applies to the fix_shapes pass; add it to --passes")
    model = load_onnx(in_path)
    ops_before = dict(op_counts(model))
    pipeline = run_pipeline(model, names, options, check_each=check_each, in_place=not (validate or check_each),
                            check_seed=seed, check_batch_size=batch_size, tolerance=tolerance,
                            check_inputs=validation_inputs)
    result = ApplyResult(str(in_path), str(out_path), pipeline.reports, ops_before, dict(op_counts(pipeline.model)),
                         checks=pipeline.checks)
    if validate:
        from ..golden import validate_models

        result.validation = validate_models(model, pipeline.model, inputs=validation_inputs, seed=seed,
                                            batch_size=batch_size, tolerance=tolerance)
    if result.validation is None or result.validation.passed:
        save_onnx(pipeline.model, out_path)
        result.written = True
    result.seconds = time.perf_counter() - start
    if report_path:
        import json

        write_text_atomic(report_path, json.dumps(result.to_dict(), indent=2) + "\n")
    if not result.written:
        raise ApplyValidationFailed(f"the rewritten graph does not compute the same function; nothing written "
                                    f"to {out_path}\n{result.validation.format()}", result)
    return result


def format_op_table(before: Mapping[str, int], after: Mapping[str, int]) -> str:
    """onnxsim-style op-count table, ops sorted by name, changed rows marked `*`."""
    from ..table import format_table

    rows = [[op, before.get(op, 0), after.get(op, 0), "*" if before.get(op, 0) != after.get(op, 0) else ""]
            for op in sorted(set(before) | set(after))]
    return format_table(["op", "before", "after", ""], rows, align="lrrl",
                        footer=["total", sum(before.values()), sum(after.values()), ""])
