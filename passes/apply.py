"""The `apply` verb as a function: load, run the pass manager, validate, write atomically.

The pass manager itself (ordering, options, per-pass checks) is passes/pipeline.py.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from lvvit_opt.core.errors import ValidationFailed
from lvvit_opt.passes.base import PassReport
from lvvit_opt.passes.graph_utils import op_counts
from lvvit_opt.passes.pipeline import format_op_table, run_pipeline
from lvvit_opt.passes.registry import check_pass_plan, get_pass

logger = logging.getLogger(__name__)


@dataclass
class ApplyResult:
    """Everything `lvvit-opt apply` did; `to_dict` is the --report JSON."""

    input: str
    output: str
    passes: list[PassReport]
    ops_before: dict[str, int]
    ops_after: dict[str, int]
    validation: Any = None  # golden.ValidationResult or None when --no-validate
    transposes: list | None = None  # passes.transposes.TransposeUse of the rewritten graph (None: not inferable)
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
            "transposes": [u.to_dict() for u in self.transposes] if self.transposes is not None else None,
            "whitelist_shapes": self.whitelist_shapes(),
            "validation": self.validation.to_dict() if self.validation is not None else None,
        }

    def whitelist_shapes(self) -> list[list] | None:
        """Every static Transpose input shape of the rewritten graph (the one list's answer)."""
        from lvvit_opt.passes.transposes import static_shapes

        return [list(s) for s in static_shapes(self.transposes)] if self.transposes is not None else None

    def transpose_input_shapes(self) -> list[list]:
        """Input shapes of the Transposes the passes created (the `created` entries of `transposes`)."""
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
        if self.transposes:
            from lvvit_opt.passes.transposes import format_shapes, format_transpose_table, static_shapes

            lines += ["", "Transposes of the rewritten graph (whitelist these shapes on a white-list-era CANN: "
                      f"{format_shapes(static_shapes(self.transposes))}):", format_transpose_table(self.transposes)]
        if self.validation is not None:
            lines += ["", "validation (onnxruntime, original vs rewritten):", self.validation.format()]
        return "\n".join(lines)


class ApplyValidationFailed(ValidationFailed):
    def __init__(self, message: str, result: ApplyResult):
        super().__init__(message)
        self.result = result


class AttentionNotWrapped(ApplyValidationFailed):
    """softmax_transpose ran but some attention blocks of the graph kept an unwrapped softmax
    (fused attention ops, softmaxes of unknown rank): never reported as a success."""


def unwrapped_attention(reports: list[PassReport]) -> str | None:
    """'matched M of N attention blocks; not wrapped: ...' for the last softmax_transpose run
    that left attention unwrapped, or None."""
    runs = [r for r in reports if r.name == "softmax_transpose"]
    if not runs or not runs[-1].details.get("attention_not_wrapped"):
        return None
    report = runs[-1]
    missing = report.details["attention_not_wrapped"]
    done = report.details["attention_blocks"] - len(missing)
    lowered = [r for r in reports if r.name == "lower_attention"]
    left = lowered[-1].details.get("left", []) if lowered else []
    if left:  # lower_attention ran: say why it left each node, not to add it
        why = "; ".join(f"lower_attention left {entry['node']}: {entry['reason']}" for entry in left[:4])
        hint = f"({why}{' ...' if len(left) > 4 else ''})"
    else:
        hint = "(fused attention: add lower_attention before softmax_transpose; unknown rank: fix_shapes first)"
    return (f"softmax_transpose matched {done} of {report.details['attention_blocks']} attention blocks; "
            f"not wrapped: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''} {hint}")


def apply_file(in_path: str | os.PathLike, out_path: str | os.PathLike, passes: list[str] | str, *,
               batch_size: int | None = None, input_shapes: str | list[str] | None = None,
               options: Mapping[str, Mapping[str, Any]] | None = None, validate: bool = True,
               check_each: bool = False, report_path: str | os.PathLike | None = None,
               validation_inputs: int | str = 1, seed: int = 0, tolerance=None) -> ApplyResult:
    """The `apply` verb: load, run passes, validate on onnxruntime, write atomically.

    batch_size / input_shapes are shortcuts for the options of the passes that declare them
    (`fix_shapes.batch_size`, `fix_shapes.input_shapes`; an explicit `options` entry wins);
    batch_size is also the validation batch when the model's batch stays symbolic. `validation_inputs`: a number of seeded random batches
    or a file/directory (see lvvit_opt.verify.inputs). On validation failure nothing is written at
    `out_path` and ApplyValidationFailed (exit 1) carries the result; `report_path` is
    written either way.
    """
    from lvvit_opt.core.fileio import guard_outputs, write_text_atomic
    from lvvit_opt.core.onnx_files import load_onnx, save_onnx

    start = time.perf_counter()
    in_path, out_path = Path(in_path), Path(out_path)
    guard_outputs({"-o": out_path, "--report": report_path}, {"MODEL": in_path})
    if isinstance(input_shapes, (list, tuple)):
        input_shapes = ";".join(input_shapes)
    # the whole plan before the model is read; --batch-size is also the validation batch, so it
    # may be given without a pass taking it
    names, options = check_pass_plan(passes, options, {"batch_size": batch_size, "input_shapes": input_shapes or None},
                                     optional={"batch_size"})
    if tolerance is None and any(get_pass(name).reduces_precision for name in names):
        from lvvit_opt.verify.golden import Tolerance

        tolerance = Tolerance.fp16()  # to_fp16 and the like: judged as fp16 is, not by the fp32 tolerance
    # The reference of the validation is the input file itself, reopened by onnxruntime, so the
    # passes may rewrite the loaded model in place: apply holds one model, not the original
    # beside its rewrite (issue 20, memory). A file that changes meanwhile is refused.
    reference_on_disk = validate and not check_each and in_path.suffix.lower() == ".onnx"
    identity = _identity(in_path)
    model = load_onnx(in_path)
    ops_before = dict(op_counts(model))
    in_place = not check_each and (reference_on_disk or not validate)
    pipeline = run_pipeline(model, names, options, check_each=check_each, in_place=in_place,
                            check_seed=seed, check_batch_size=batch_size, tolerance=tolerance,
                            check_inputs=validation_inputs, check_inputs_model=str(in_path))
    result = ApplyResult(str(in_path), str(out_path), pipeline.reports, ops_before, dict(op_counts(pipeline.model)),
                         checks=pipeline.checks, transposes=_transposes(pipeline.model))
    missing = unwrapped_attention(pipeline.reports)
    if missing:  # said once, by the error raised below
        validate = False
    labels = (str(in_path), f"the rewrite of {in_path} ({', '.join(names)})")
    checks = {"inputs": validation_inputs, "seed": seed, "batch_size": batch_size, "tolerance": tolerance,
              "inputs_model": str(in_path), "labels": labels, "built": ("candidate",)}
    if validate and reference_on_disk and _writes_plainly(pipeline.model, out_path):
        # the rewrite goes to its temporary output first and the model leaves memory: each
        # onnxruntime session then opens a file (one at a time), and what is validated is
        # exactly what is written; a failed validation leaves nothing under out_path
        model = None  # the pipeline's model, rewritten in place: _validate_and_write lets it go
        result.validation, result.written = _validate_and_write(pipeline, in_path, out_path, identity, checks)
    else:
        if validate:
            from lvvit_opt.verify.golden import validate_models

            reference = in_path if reference_on_disk else model
            _check_unchanged(in_path, identity)
            result.validation = validate_models(reference, pipeline.model, **checks)
            _check_unchanged(in_path, identity)
        if not missing and (result.validation is None or result.validation.passed):
            save_onnx(pipeline.model, out_path)
            result.written = True
    result.seconds = time.perf_counter() - start
    if report_path:
        import json

        write_text_atomic(report_path, json.dumps(result.to_dict(), indent=2) + "\n")
    if missing:
        raise AttentionNotWrapped(f"{missing}; nothing written to {out_path}", result)
    if not result.written:
        raise ApplyValidationFailed(f"the rewritten graph does not compute the same function "
                                    f"({result.validation.summary()}); nothing written to {out_path}", result)
    return result




def _transposes(model) -> list | None:
    """The rewritten graph's Transposes (read from a weightless copy), or None with a warning."""
    from lvvit_opt.core.errors import UserError
    from lvvit_opt.passes.transposes import transpose_shapes

    try:
        return transpose_shapes(model)
    except UserError as exc:
        logger.warning(f"Transpose shapes of the rewritten graph not listed: {exc}")
        return None


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None  # load_onnx says why
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _check_unchanged(path: Path, identity) -> None:
    """UserError when the input file was replaced or rewritten while apply ran: the validation
    reads the reference from it, so it would prove the rewrite against another model."""
    from lvvit_opt.core.errors import UserError, shown

    if _identity(path) != identity:
        raise UserError(f"{shown(path)} changed while apply ran; the rewrite cannot be validated against it, "
                        "nothing written (run apply again)")


def _writes_plainly(model, out_path: Path) -> bool:
    """True when the rewrite is saved as one regular file at out_path (no external data past
    2 GB, not a device or FIFO), so the temporary output can be validated before it is renamed."""
    from lvvit_opt.core.fileio import special_kind
    from lvvit_opt.core.onnx_proto import needs_external_data

    return special_kind(out_path) is None and not needs_external_data(model)


class _Rejected(Exception):
    """The validation failed: leave the atomic write without renaming its temporary file."""


def _validate_and_write(pipeline, in_path: Path, out_path: Path, identity, checks: dict) -> tuple[Any, bool]:
    """Write the pipeline's model to out_path's temporary file, drop it (pipeline.model becomes
    None), validate that file against in_path, and rename it onto out_path only if the
    validation passed: (validation, written)."""
    from lvvit_opt.core import fileio
    from lvvit_opt.core.onnx_proto import write_model_streamed
    from lvvit_opt.verify.golden import validate_models

    validation = None
    try:
        with fileio.atomic_path(out_path, suffix=".onnx") as tmp:
            with open(tmp, "wb") as handle:
                write_model_streamed(pipeline.model, handle)
            pipeline.model = None
            _check_unchanged(in_path, identity)
            validation = validate_models(in_path, tmp, **checks)
            _check_unchanged(in_path, identity)
            if not validation.passed:
                raise _Rejected
    except _Rejected:
        return validation, False
    return validation, True
