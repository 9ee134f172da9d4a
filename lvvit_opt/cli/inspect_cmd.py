"""`lvvit-opt inspect MODEL.om`: what atc compiled (thin layer over lvvit_opt.ascend.om_graph)."""
from __future__ import annotations

import click

from lvvit_opt.cli._base import cann_home_option, handle_errors, main
from lvvit_opt.cli.output import echo, emit_result, json_option
from lvvit_opt.cli.types import TOP


@main.command("inspect")
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--keep-json", type=click.Path(dir_okay=False), default=None,
              help="Keep atc's JSON of the (single) model here [default: a temporary file, removed].")
@click.option("--top", type=TOP, default=None, help="List only the N most frequent op types.")
@cann_home_option
@json_option
@handle_errors
def inspect_command(models, keep_json, top, cann_home, json_out) -> None:
    """Prove the rewrite reached the compiled model: op types and the attention kernels atc chose.

    Each MODEL (.om) is converted the documented way, `atc --mode=1 --om=M.om --json=M.json`
    (a .json from that command is read directly). Prints the op types with counts and, for
    the attention block, each Transpose / TransposeD / SoftmaxV2 with its input shape and
    perm / axes: `Transpose` is the fast kernel, `TransposeD` the slow one that a
    white-list-era transpose.py falls back to, and SoftmaxV2 on axis 1 between two
    Transposes is the softmax_transpose rewrite. Two or more models are also compared.

    \b
      lvvit-opt inspect model_bs16_opt.om
      lvvit-opt inspect model_bs16.om model_bs16_opt.om --top 10 --json inspect.json
    """
    from lvvit_opt.ascend.om_graph import format_comparison, format_model, inspect_om
    from lvvit_opt.cli.output import start_plan

    if keep_json and len(models) > 1:
        raise click.UsageError("--keep-json takes one model")
    start_plan(reads={f"MODEL {i + 1}": m for i, m in enumerate(models)}, writes={"--keep-json": keep_json, "--json": json_out if json_out != "-" else None})
    _refuse_onnx(models)
    results = [inspect_om(m, keep_json=keep_json, cann_home=cann_home) for m in models]
    for i, result in enumerate(results):
        if i:
            echo("")
        for line in format_model(result, top):
            echo(line)
    if len(results) > 1:
        echo("")
        for line in format_comparison(results):
            echo(line)
    emit_result({"models": [r.to_dict() for r in results]})


def _refuse_onnx(models) -> None:
    """An ONNX file is not what inspect reads: gate it (an invalid one is named as such), then say so."""
    from lvvit_opt.core.errors import UserError
    from lvvit_opt.core.onnx_files import gate_model_file

    for model in models:
        if str(model).lower().endswith(".onnx"):
            gate_model_file(model)
            raise UserError(f"{model}: an ONNX model; inspect reads compiled .om files (or their atc --mode=1 "
                            "json): compile it first with `lvvit-opt atc`")
