"""`lvvit-opt apply` and `lvvit-opt passes`: rewrite a graph with named passes, proven equivalent.

No torch/timm here or in lvvit_opt.passes: `apply` starts in a fraction of a second.
"""
from __future__ import annotations

import logging

import click

from lvvit_opt.cli._base import handle_errors, main, parse_pass_options, pass_option_flags
from lvvit_opt.cli._inputs import inputs_option
from lvvit_opt.cli.output import echo, emit_result, json_file, json_option, state, warn_random_weights
from lvvit_opt.cli.types import BATCH_SIZE, PASS_LIST, SEED, LazyHelpOption, ModelFile, default_preset, preset_help
from lvvit_opt.cli._tolerances import tolerance_from, tolerance_options

logger = logging.getLogger(__name__)


@main.command("apply")
@click.argument("model", type=ModelFile((".onnx",)))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the rewritten .onnx (must differ from MODEL; written atomically, "
                   "only after validation passes).")
@click.option("--passes", "pass_names", type=PASS_LIST, default=default_preset, cls=LazyHelpOption,
              help_factory=lambda: preset_help("Comma-separated passes or presets, run in this order (see "
                                               "`lvvit-opt passes`; completes in the shell). The default preset is "
                                               "the original manual recipe."))
@click.option("--batch-size", type=BATCH_SIZE, default=None,
              help="fix_shapes: make the batch this static size. Also the validation batch when the "
                   "batch stays symbolic (default 1).")
@pass_option_flags
@click.option("--no-validate", is_flag=True,
              help="Skip running the original and the rewritten graph on onnxruntime and comparing them.")
@click.option("--check-each", is_flag=True,
              help="Validate after every pass; names the first pass that changes the result.")
@inputs_option(1, "Validation inputs")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the random validation inputs.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None, hidden=True,
              help="Deprecated: use --json PATH. Writes the bare result (no envelope).")
@tolerance_options
@json_option
@handle_errors
def apply_command(model, output, pass_names, batch_size, input_shapes, pass_options, no_validate, check_each,
                  inputs, seed, report_path, json_out, **metrics):
    """Rewrite MODEL with graph passes, check it still computes the same function, write it to -o.

    Prints an op-count table (before/after) and what each pass matched. Validation is on by
    default: original and rewritten graphs run on onnxruntime on seeded inputs; on a mismatch
    nothing is written and the exit code is 1.

    \b
    Examples:
      lvvit-opt apply model_bs16.onnx -o model_bs16_opt.onnx                  # the ascend310 preset
      lvvit-opt apply model_dyn.onnx -o model_bs16.onnx --batch-size 16       # dynamic batch made static
      lvvit-opt apply model_bs16.onnx -o model_bs16_opt.onnx --passes softmax_transpose
      lvvit-opt apply swin.onnx -o swin_opt.onnx -O softmax_transpose.style=swin
      lvvit-opt apply model.onnx -o model_fp16.onnx --passes softmax_transpose,to_fp16
    """
    from lvvit_opt.cli.output import start_plan
    from lvvit_opt.verify.inputs import parse_inputs_arg
    from lvvit_opt.verify.golden import Tolerance
    from lvvit_opt.passes import ApplyValidationFailed, PassBrokeEquivalence, apply_file, get_pass

    start_plan(reads={"MODEL": model, "--inputs": parse_inputs_arg(inputs)}, writes={"-o": output, "--report": report_path, "--json": json_file(json_out)})
    # a pass that lowers precision (to_fp16) is judged by the fp16 tolerance; --atol etc. still override
    base = Tolerance.fp16() if any(get_pass(name).reduces_precision for name in pass_names) else Tolerance.onnx()
    if report_path:
        logger.warning("--report is deprecated; use --json PATH (same result, inside the common envelope)")
    warn_random_weights(model)
    try:
        result = apply_file(model, output, pass_names, batch_size=batch_size, input_shapes=list(input_shapes),
                            options=parse_pass_options(pass_options), validate=not no_validate,
                            check_each=check_each, report_path=report_path, seed=seed,
                            validation_inputs=inputs, tolerance=tolerance_from(None, base=base, **metrics))
    except ApplyValidationFailed as failure:
        echo(failure.result.format())
        emit_result(failure.result.to_dict(), ok=False)
        raise
    except PassBrokeEquivalence as failure:  # the comparison on stdout; the error stays one line
        echo(failure.validation.format())
        raise
    echo(result.format())
    validated = "validated" if result.validation is not None else "NOT validated (--no-validate)"
    echo(f"wrote {result.output} ({validated}) in {result.seconds:.2f}s")
    emit_result(result.to_dict())


@main.command("passes")
@json_option
@handle_errors
def passes_command(json_out):
    """List the presets and graph passes `--passes` accepts (apply, run, tune's pass_sets), one line
    each (-v: with descriptions). A preset expands to its passes where it stands."""
    from lvvit_opt.cli.output import start_plan
    from lvvit_opt.passes import DEFAULT_PRESET, PRESET_SUMMARIES, PRESETS, available_passes

    start_plan(writes={"--json": json_out})

    registry = available_passes()
    width = max(len(name) for name in [*registry, *PRESETS])
    echo("presets:")
    for name, expansion in PRESETS.items():
        default = " (the default of apply and run)" if name == DEFAULT_PRESET else ""
        echo(f"{name:<{width}}  = {','.join(expansion)}{default}")
        echo(f"{' ' * (width + 2)}{PRESET_SUMMARIES.get(name, '')}")
    echo("passes:")
    listing = []
    for name, cls in registry.items():
        body = "\n".join(line.strip() for line in (cls.__doc__ or "").strip().splitlines()[1:]).strip()
        listing.append({"name": name, "summary": cls.summary(), "options": list(cls.option_names()),
                        "description": body})
        echo(f"{name:<{width}}  {cls.summary()}  [{', '.join(cls.option_names()) or 'no options'}]")
        if state().verbosity > 0:
            echo("".join(f"{' ' * (width + 2)}{line}\n" for line in body.splitlines()), nl=False)
    emit_result({"passes": listing, "presets": [{"name": name, "passes": list(expansion),
                                                  "summary": PRESET_SUMMARIES.get(name, ""),
                                                  "default": name == DEFAULT_PRESET}
                                                 for name, expansion in PRESETS.items()]})
