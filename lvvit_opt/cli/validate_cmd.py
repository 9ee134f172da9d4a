"""`lvvit-opt validate` and `lvvit-opt golden make|check`: do two models compute the same function?"""
from __future__ import annotations

import click

from lvvit_opt.cli._base import handle_errors, main
from lvvit_opt.cli._inputs import inputs_option
from lvvit_opt.cli.output import echo, emit_result, json_option, warn_random_weights
from lvvit_opt.cli._tolerances import tolerance_from, tolerance_options
from lvvit_opt.cli.types import BATCH_SIZE, SEED, ModelFile, runner_backend_option


def _emit(result) -> None:
    echo(result.format())
    emit_result(result.to_dict(), ok=result.passed)
    if not result.passed:
        raise SystemExit(1)


@main.command("validate")
@click.argument("reference", type=ModelFile())
@click.argument("candidate", type=ModelFile(), required=False)
@click.option("--aipp", is_flag=True,
              help="Instead of a CANDIDATE: REFERENCE (.onnx) behind a CPU preview of the static AIPP `atc --aipp` "
                   "writes, against our float pipeline on the same images (lvvit-opt debug layers --aipp).")
@click.option("--golden", type=click.Path(dir_okay=False), default=None,
              help="Use this golden .npz's inputs (and also compare the candidate to its stored outputs).")
@inputs_option(4, "Inputs both models run on")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--batch-size", type=BATCH_SIZE, default=None,
              help="Batch for models whose batch is symbolic (default 1).")
@runner_backend_option("CANDIDATE", ", e.g. onnx_reference to rule out onnxruntime itself.")
@tolerance_options
@json_option
@handle_errors
def validate_command(reference, candidate, aipp, golden, inputs, seed, batch_size, backend, json_out, **metrics):
    """Run REFERENCE (.onnx) and CANDIDATE (.onnx, or .om on an Ascend host) on the same inputs
    and compare outputs: max abs error and where, max rel error, mean abs error, cosine
    similarity, top-1 agreement, and the atol that would have passed.

    Exit 0 when every output passes, 1 on a mismatch, 2 on bad input.
    """
    if aipp:
        if candidate is not None or golden:
            raise click.UsageError("--aipp compares REFERENCE with its own AIPP preview: give no CANDIDATE or --golden")
        from lvvit_opt.cli.debug_cmd import run_aipp_preview

        run_aipp_preview(reference, inputs, seed, json_out, metrics)
        return
    if candidate is None:
        raise click.UsageError("Missing argument 'CANDIDATE' (or --aipp).")
    from lvvit_opt.cli.output import start_plan
    from lvvit_opt.verify.golden import validate_models

    start_plan(reads={"REFERENCE": reference, "CANDIDATE": candidate, "--golden": golden,
                                         "--inputs": inputs}, writes={"--json": json_out})
    from lvvit_opt.verify.random_ops import warn_random_ops

    warn_random_ops(reference, candidate)
    warn_random_weights(reference, candidate)
    result = validate_models(reference, candidate, golden=golden, inputs=inputs, seed=seed, batch_size=batch_size,
                             tolerance=tolerance_from(candidate, **metrics),
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
    from lvvit_opt.cli.output import start_plan
    from lvvit_opt.verify.golden import make_golden
    from lvvit_opt.verify.inputs import parse_inputs_arg

    start_plan(reads={"MODEL": model, "--inputs": parse_inputs_arg(inputs)}, writes={"-o": output, "--json": json_out})
    warn_random_weights(model)
    saved = make_golden(model, output, inputs=inputs, seed=seed, batch_size=batch_size)
    echo(f"wrote {output}: " + ", ".join(f"{name} {shape}" for name, shape in saved.items()))
    emit_result({"output": str(output), "arrays": {name: list(shape) for name, shape in saved.items()}})


@golden_group.command("check")
@click.argument("model", type=ModelFile())
@click.argument("golden", type=click.Path(dir_okay=False))
@tolerance_options
@json_option
@handle_errors
def golden_check_command(model, golden, json_out, **metrics):
    """Run MODEL on GOLDEN's inputs and compare with its stored outputs (exit 0 pass, 1 mismatch, 2 bad input)."""
    from lvvit_opt.cli.output import start_plan
    from lvvit_opt.verify.golden import check_golden

    start_plan(reads={"MODEL": model, "GOLDEN": golden}, writes={"--json": json_out})
    warn_random_weights(model)
    _emit(check_golden(model, golden, tolerance=tolerance_from(model, **metrics)))
