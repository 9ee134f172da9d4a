"""`lvvit-opt tune`: the fastest deployment that keeps accuracy, measured."""
from __future__ import annotations

from pathlib import Path

import click

from lvvit_opt.cli._base import cann_home_option, handle_errors, main
from lvvit_opt.cli._inputs import INPUTS_HELP, InputsParam
from lvvit_opt.cli.output import echo, emit_result, json_file, json_option, warn_random_weights
from lvvit_opt.cli.types import BUDGET, DEVICE_ID, MODEL_NAME, PERCENT, ROUNDS, SOC_VERSION, WARMUP, Count, ModelFile


@main.command("tune")
@click.argument("model", required=False, type=ModelFile(suffixes=(".onnx",), exists=True))
@click.option("--model", "model_name", type=MODEL_NAME, default=None,
              help="Instead of MODEL.onnx: export this model (lvvit_t/s/m/l or a timm name) once per batch size "
                   "into --out/models first (RANDOM weights unless --checkpoint). A MODEL.onnx with a static "
                   "batch is tuned at that batch only; a dynamic one at every batch.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, exists=True), default=None,
              help="With --model: the checkpoint to export.")
@click.option("--inputs", type=InputsParam(), required=True,
              help=f"What the accuracy gate runs on: {INPUTS_HELP} An image folder follows the preprocessing "
                   "recorded in the model.")
@click.option("--target", type=click.Choice(["ort-cpu", "ort-cuda", "ort-trt", "ascend"]), default="ort-cpu",
              show_default=True, help="Where the model will run; ort-cuda/ort-trt need onnxruntime-gpu and a GPU, "
                                      "ascend needs atc and ais_bench (or the benchmark binary).")
@click.option("--budget", type=BUDGET, default="10m", show_default=True,
              help="Wall time for the whole search (90s, 10m, 1h): build, gate, screen and measure.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder: best.onnx (best.om), reproduce.sh, tune.json, tune.png, tune_state.json. "
                   "A rerun with the same --out reuses the candidates already measured.")
@click.option("--space", "space_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="JSON or YAML mapping replacing any of the default lists: batch_sizes, pass_sets (pass or "
                   "preset names, e.g. [none, ascend310]), precisions "
                   "(fp32, fp16, fp16-keep), threads, graph_opt (all, disabled), precision_modes, "
                   "op_select_implmodes, whitelist (unpatched, patched) (ascend).")
@click.option("--min-agreement", type=PERCENT, default=99.5, show_default=True,
              help="Top-1 agreement with the fp32 original (%) a candidate needs, besides validate's tolerance.")
@click.option("--rounds", type=ROUNDS, default=5, show_default=True,
              help="The fewest interleaved rounds (order rotating) of the finalists; more follow while the "
                   "budget lasts until every interval is within +-3%. Fewer only when the budget runs out.")
@click.option("--warmup", type=WARMUP, default=1.0, show_default=True,
              help="Untimed seconds per finalist before the rounds.")
@click.option("--max-finalists", type=Count(1, 64, "a number of finalists"), default=6, show_default=True,
              help="How many of the fastest at the screen are measured (plus the baseline).")
@click.option("--soc-version", type=SOC_VERSION, default="auto", show_default=True, help="ascend: atc --soc_version.")
@cann_home_option
@click.option("--device-id", type=DEVICE_ID, default=0, show_default=True, help="ascend: the NPU to run on.")
@json_option
@handle_errors
def tune_command(model, model_name, checkpoint, inputs, target, budget, out, space_file, min_agreement, rounds,
                 warmup, max_finalists, soc_version, cann_home, device_id, json_out):
    """Find the fastest configuration of a model that keeps its accuracy, by measuring.

    Every candidate (batch size x pass set x precision x target options) is built, gated
    on --inputs against the fp32 original (top-1 agreement and validate's final-output
    tolerance; the reason is shown for every rejection), screened on the gate's own runs,
    pruned, and the finalists measured in rotating interleaved rounds with the baseline
    (batch 1, fp32, no passes). Candidates with no measurable difference from the fastest
    are ties, and among ties the simplest wins (fp32 before fp16, fewer passes, default
    threads and graph level, smaller batch). A win over the baseline is claimed only when
    the 95% interval says `faster`; otherwise the baseline stays the best. Prints the
    measured candidates (every candidate with -v and in --json), the before/after table at
    batch 1 and the best batch, and writes the best model with the commands that reproduce it.

    \b
    Examples:
      lvvit-opt tune model.onnx --inputs images/ --out tune/ --budget 10m
      lvvit-opt tune --model lvvit_t --inputs images/ --out tune_t/ --space space.yaml
      lvvit-opt tune model.onnx --inputs prep/ --target ascend --out tune_npu/
    """
    from lvvit_opt.core.errors import UserError
    from lvvit_opt.cli.output import start_plan
    from lvvit_opt.tune.search import TuneOptions, load_space, parse_budget, tune, tune_files

    if (model is None) == (model_name is None):
        raise UserError("give MODEL.onnx or --model NAME (one of them)")
    if checkpoint and model_name is None:
        raise UserError("--checkpoint goes with --model NAME")
    budget_s = parse_budget(budget)
    space = load_space(space_file, target, budget_s) if space_file else None
    start_plan(reads={"MODEL": model, "--inputs": inputs, "--space": space_file}, writes={"--json": json_file(json_out), **tune_files(out)}, owned={"--out": out})
    per_batch = None
    if model_name is not None:
        from lvvit_opt.tune.search import default_space

        batches = (space or default_space(target)).batch_sizes
        for b in batches:  # every stored export's provenance, before any is written
            _export(model_name, checkpoint, Path(out), b, check_only=True)
        per_batch = {b: str(_export(model_name, checkpoint, Path(out), b)) for b in batches}
        model = per_batch[min(batches)]
    warn_random_weights(model)
    report = tune(TuneOptions(model=str(model), inputs=inputs, out=out, target=target, budget_s=budget_s, space=space,
                              min_agreement=min_agreement, rounds=rounds, warmup_s=warmup,
                              max_finalists=max_finalists, soc_version=soc_version, cann_home=cann_home,
                              device_id=device_id, model_name=model_name, per_batch=per_batch))
    from lvvit_opt.cli.output import state

    echo(report.format_table(full=state().verbosity >= 1))
    before_after = report.format_before_after()
    if before_after:
        echo("\nbefore / after (images per second):\n" + before_after)
    best = report.by_key(report.best)
    if best is not None:
        echo(f"\nbest: {best.label()}: {best.timing['fps']:.1f} fps, top-1 agreement "
             f"{'n/a' if best.agreement is None else f'{best.agreement * 100:.2f}%'} ({best.gate['metric']})")
        if report.verdict.get("text"):
            echo(report.verdict["text"])
        echo("reproduce:\n  " + "\n  ".join(report.reproduce))

    for note in report.notes:
        echo(f"note: {note}")
    overhead = report.overhead
    echo(f"tune took {report.wall_s:.1f} s, {report.measured_s:.1f} s of it running candidates"
         + (f" (overhead {overhead:.2f}x)" if overhead else ""))
    echo("wrote " + ", ".join(report.outputs.values()))
    emit_result(report.to_dict(), ok=best is not None)
    if best is None:
        raise click.exceptions.Exit(1)


def _export(model_name: str, checkpoint: str | None, out: Path, batch: int, check_only: bool = False) -> Path:
    """--model NAME: one static-batch export per batch size, as the seed does (passes that need
    static shapes match at every batch), kept in --out/models so a rerun reuses them and resumes,
    reused only when their provenance (weights, batch, version) matches (tune.state.stored_export)."""
    from lvvit_opt.tune.state import stored_export

    return stored_export(model_name, checkpoint, out, batch, log=echo, check_only=check_only)
