"""`lvvit-opt validate` and `lvvit-opt golden make|check`: do two models compute the same function?"""
from __future__ import annotations

import click

from ._base import handle_errors, main
from ._inputs import inputs_option
from .output import echo, emit_result, json_option
from .types import BATCH_SIZE, SEED, ModelFile, RunnerBackend


_METRIC_OPTIONS = ("atol", "rtol", "min_cosine", "max_range_rel", "max_rel", "max_mean_rel", "max_rmse")


def _tolerance(candidate: str | None, atol=None, rtol=None, min_cosine=None, base=None, **metrics):
    """Defaults depend on the candidate (.om -> fp16 tolerance) unless `base` is given; explicit
    options override. `off` (parsed to -1) disables that criterion (reported only)."""
    from ..golden import default_tolerance_for, Tolerance

    base = base or default_tolerance_for(candidate)
    given = {"atol": atol, "rtol": rtol, "min_cosine": min_cosine, **metrics}
    pick = lambda name: getattr(base, name) if given.get(name) is None else (  # noqa: E731
        None if given[name] < 0 else given[name])
    return Tolerance(**{name: pick(name) for name in _METRIC_OPTIONS})


def _tolerance_options(fn):
    """--atol/--rtol/--min-cosine and the scale-aware metrics; each refuses NaN, Inf and negatives
    (`off`: reported, not enforced). Passed to the command as keyword arguments of the same names."""
    from .types import NonNegativeFloat

    number, unit = NonNegativeFloat(), NonNegativeFloat(maximum=1.0)
    options = [
        ("--atol", number, "Absolute tolerance: pass if |a-b| <= atol + rtol*|ref| [1e-4; off for fp16/.om]."),
        ("--rtol", number, "Relative tolerance of that elementwise test [1e-3; off for fp16/.om]."),
        ("--min-cosine", unit, "Minimum cosine similarity per tensor [0.99999; 0.999 for fp16/.om]."),
        ("--max-range-rel", number, "Maximum max|a-b| / max|ref|, the error relative to the reference's range; "
                                    "sees scale errors cosine cannot [off; 0.01 for fp16/.om]."),
        ("--max-rel", number, "Maximum elementwise |a-b|/|ref| [off]."),
        ("--max-mean-rel", number, "Maximum mean of |a-b|/|ref| [off]."),
        ("--max-rmse", number, "Maximum root mean square error [off]."),
    ]
    for flag, kind, text in reversed(options):
        fn = click.option(flag, type=kind, default=None, help=text + " off: reported, not enforced.")(fn)
    return fn


def _metric_kwargs(kwargs: dict) -> dict:
    """Pop the tolerance options out of a command's keyword arguments."""
    return {name: kwargs.pop(name) for name in _METRIC_OPTIONS if name in kwargs}


def _emit(result) -> None:
    echo(result.format())
    emit_result(result.to_dict(), ok=result.passed)
    if not result.passed:
        raise SystemExit(1)


@main.command("validate")
@click.argument("reference", type=ModelFile())
@click.argument("candidate", type=ModelFile())
@click.option("--golden", type=click.Path(dir_okay=False), default=None,
              help="Use this golden .npz's inputs (and also compare the candidate to its stored outputs).")
@inputs_option(4, "Inputs both models run on")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--batch-size", type=BATCH_SIZE, default=None,
              help="Batch for models whose batch is symbolic (default 1).")
@click.option("--backend", type=RunnerBackend(), default="auto", show_default=True,
              help="How to run CANDIDATE: auto (.onnx on onnxruntime, .om on ais_bench or the legacy benchmark "
                   "binary) or a registered runner, e.g. onnx_reference to rule out onnxruntime itself.")
@_tolerance_options
@json_option
@handle_errors
def validate_command(reference, candidate, golden, inputs, seed, batch_size, backend, json_out, **metrics):
    """Run REFERENCE (.onnx) and CANDIDATE (.onnx, or .om on an Ascend host) on the same inputs
    and compare outputs: max abs error and where, max rel error, mean abs error, cosine
    similarity, top-1 agreement, and the atol that would have passed.

    Exit 0 when every output passes, 1 on a mismatch, 2 on bad input.
    """
    from ..fileio import guard_outputs
    from ..golden import validate_models

    guard_outputs({"--json": json_out}, {"REFERENCE": reference, "CANDIDATE": candidate, "--golden": golden,
                                         "--inputs": inputs})
    from ..random_ops import warn_random_ops; warn_random_ops(reference, candidate)  # noqa: E702
    result = validate_models(reference, candidate, golden=golden, inputs=inputs, seed=seed, batch_size=batch_size,
                             tolerance=_tolerance(candidate, **metrics),
                             candidate_options={"backend": backend})
    _emit(result)


@main.group("golden")
def golden_group():
    """Save a model's inputs and outputs once (.npz), check models against them later.

    \b
    Format: one array per model input and output under the tensor's name (e.g. `image`,
    `features`); several input sets are concatenated along axis 0.
    """


@golden_group.command("make")
@click.argument("model", type=ModelFile())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Golden .npz to write.")
@inputs_option(1, "Inputs to run and store (several batches are concatenated along the batch axis)")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--batch-size", type=BATCH_SIZE, default=None,
              help="Batch for a model whose batch is symbolic (default 1).")
@json_option
@handle_errors
def golden_make_command(model, output, inputs, seed, batch_size, json_out):
    """Run MODEL on --inputs (seeded random by default) and save the inputs and outputs to -o."""
    from ..fileio import guard_outputs
    from ..golden import make_golden
    from ..inputs import parse_inputs_arg

    guard_outputs({"-o": output, "--json": json_out}, {"MODEL": model, "--inputs": parse_inputs_arg(inputs)})
    saved = make_golden(model, output, inputs=inputs, seed=seed, batch_size=batch_size)
    echo(f"wrote {output}: " + ", ".join(f"{name} {shape}" for name, shape in saved.items()))
    emit_result({"output": str(output), "arrays": {name: list(shape) for name, shape in saved.items()}})


@golden_group.command("check")
@click.argument("model", type=ModelFile())
@click.argument("golden", type=click.Path(dir_okay=False))
@_tolerance_options
@json_option
@handle_errors
def golden_check_command(model, golden, json_out, **metrics):
    """Run MODEL on GOLDEN's inputs and compare with its stored outputs (exit 0 pass, 1 mismatch, 2 bad input)."""
    from ..fileio import guard_outputs
    from ..golden import check_golden

    guard_outputs({"--json": json_out}, {"MODEL": model, "GOLDEN": golden})
    _emit(check_golden(model, golden, tolerance=_tolerance(model, **metrics)))
