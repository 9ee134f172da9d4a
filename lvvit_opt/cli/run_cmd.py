"""`lvvit-opt run`: the main job, checkpoint to before/after report."""
from __future__ import annotations

import click

from lvvit_opt.cli._base import (cann_home_option, handle_errors, main, parse_int_list, parse_pass_options,
                                 pass_option_flags)
from lvvit_opt.cli.output import echo, emit_result, json_file, json_option
from lvvit_opt.cli.types import (LazyHelpOption, default_preset, preset_help, BATCH_SIZE, MAX_BATCH, DURATION, MODEL_NAME, PASS_LIST, ROUNDS, SEED, SOC_VERSION,
                                 THREADS)
from lvvit_opt.cli._tolerances import tolerance_from, tolerance_options


@main.command("run")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Official checkpoint; omit to run on a seeded RANDOM init (the report says so).")
@click.option("--model", "model_name", type=MODEL_NAME, default="lvvit_s", show_default=True,
              help="lvvit_t/s/m/l or any timm model name (deit_tiny_patch16_224, swin_tiny_patch4_window7_224, ...); "
                   "completes in the shell.")
@click.option("--batch-sizes", default="1,16", show_default=True, help="One exported model per batch size.")
@click.option("--passes", type=PASS_LIST, default=default_preset, cls=LazyHelpOption,
              help_factory=lambda: preset_help("Graph passes or presets to apply, in order (see `lvvit-opt passes`)."))
@click.option("--batch-size", type=BATCH_SIZE, default=None,
              help="One batch size: exported at it, and fix_shapes' batch (as in apply); the same as "
                   "--batch-sizes N.")
@pass_option_flags
@click.option("--out", default="runs/default", show_default=True, type=click.Path(file_okay=False),
              help="Output folder (ONNX files, .om files, report.md, report.json, fps.png).")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--ema", is_flag=True, help="Use the checkpoint's EMA weights.")
@click.option("--non-strict", is_flag=True,
              help="Load a checkpoint with mismatched keys; the tensors it lacks stay RANDOM (warned, and in report.md).")
@cann_home_option
@click.option("--soc-version", type=SOC_VERSION, default="auto", show_default=True,
              help="atc --soc_version (Ascend310, Ascend310P3, ...); auto reads npu-smi info.")
@click.option("--patch-whitelist", is_flag=True, help="Patch CANN's transpose.py with the graph's Transpose shapes (backup kept).")
@click.option("--whitelist-file", type=click.Path(dir_okay=False), default=None, help="The transpose.py to patch.")
@click.option("--bench-duration", type=DURATION, default=10.0, show_default=True,
              help="Measured seconds per batch size (before and after share it, interleaved).")
@click.option("--bench-rounds", type=ROUNDS, default=5, show_default=True,
              help="The fewest interleaved rounds; more follow within --bench-duration until the interval of "
                   "the after/before ratio is within +-3%.")
@click.option("--rebench", "--force", "rebench", is_flag=True,
              help="Measure fps again even when the models are unchanged (a re-run otherwise shows the cached "
                   "figures, marked with when and on which machine they were measured).")
@click.option("--threads", type=THREADS, default=None, help="onnxruntime threads (default: all cores).")
@click.option("--aipp", is_flag=True,
              help="Also build the deployment .om with static AIPP (OUT/aipp.cfg from the model's preprocessing), "
                   "write uint8 .bin files of sample images and validate the CPU preview of AIPP.")
@click.option("--batch-gears", default=None, metavar="N,N,...",
              help="Also build one deployment .om for all these batch sizes (atc --dynamic_batch_size, 2 to 100 "
                   "gears) from a dynamic-batch export.")
@tolerance_options
@json_option
@handle_errors
def run_command(checkpoint, model_name, batch_sizes, passes, batch_size, input_shapes, pass_options, out, seed, ema,
                non_strict, cann_home, soc_version, patch_whitelist, whitelist_file, bench_duration, bench_rounds,
                rebench, threads, aipp, batch_gears, json_out, **metrics):
    """Run the whole pipeline: export (+onnxsim) per batch size -> apply passes ->
    validate -> whitelist shapes (patch with --patch-whitelist) -> atc if found, else
    atc_commands.sh -> bench before/after -> report.md, report.json, fps.png.

    Re-running with the same options skips finished stages. The whole plan (model, passes and
    their options, SoC, checkpoint, memory, --out) is checked before anything is exported.

    \b
    Example:
      lvvit-opt run --checkpoint lvvit_s-26M-224-83.3.pth.tar --out runs/lvvit_s --patch-whitelist
    """
    from lvvit_opt.cli.output import start_plan
    from lvvit_opt.pipeline.run import RunOptions, check_run_plan, run, run_files

    from lvvit_opt.ascend.atc import parse_batch_gears

    gears = parse_batch_gears(batch_gears) if batch_gears is not None else None
    sizes = tuple(parse_int_list(batch_sizes, "--batch-sizes", maximum=MAX_BATCH))
    if batch_size is not None:
        explicit = click.get_current_context().get_parameter_source("batch_sizes") != click.core.ParameterSource.DEFAULT
        if explicit and sizes != (batch_size,):
            raise click.UsageError(f"--batch-size {batch_size} and --batch-sizes {batch_sizes} disagree; give one")
        sizes = (batch_size,)
    options = RunOptions(out=out, checkpoint=checkpoint, model=model_name, batch_sizes=sizes,
                         passes=tuple(passes), pass_options=parse_pass_options(pass_options),
                         batch_size=batch_size, input_shapes=tuple(input_shapes), seed=seed, ema=ema, strict=not non_strict,
                         cann_home=cann_home, soc_version=soc_version, patch_whitelist=patch_whitelist,
                         whitelist_file=whitelist_file, bench_duration=bench_duration, bench_rounds=bench_rounds,
                         rebench=rebench, threads=threads, tolerance=_explicit_tolerance(metrics), aipp=aipp,
                         batch_gears=gears)
    options = check_run_plan(options)  # before start_plan creates and locks --out: a bad plan leaves nothing
    # --aipp/--batch-gears write inside the owned --out: aipp.cfg, aipp_images/, aipp_bins/, MODEL_gears.*
    start_plan(reads={"--checkpoint": checkpoint, "--whitelist-file": whitelist_file},
               writes={"--json": json_file(json_out), **run_files(out)}, owned={"--out": out})
    summary = run(options)
    echo(_summary_text(summary))
    emit_result(summary.to_dict())


def _explicit_tolerance(metrics: dict):
    """The rewritten-graph tolerance when a tolerance option was given, else None (the default)."""
    if all(value is None for value in metrics.values()):
        return None
    from lvvit_opt.verify.golden import Tolerance

    return tolerance_from(None, base=Tolerance.onnx(), **metrics)


def _summary_text(summary) -> str:
    """What the run found, in a few lines (report.md has everything)."""
    from lvvit_opt.measure.report import merged_bench

    lines = []
    for batch, applied in summary.applies.items():
        validation = applied.get("validation") or {}
        lines.append(f"bs{batch}: rewritten graph validation {'PASS' if validation.get('passed') else 'FAIL'}")
    bench = merged_bench(summary)
    if bench is not None and bench.results:
        lines.append(bench.format_table())
        lines += bench.verdicts()
    deploy = summary.deploy or {}
    if deploy:
        lines.append(f"deployment .om: {deploy.get('om') or deploy.get('command')}")
        preview = (deploy.get("aipp") or {}).get("preview")
        if preview:
            lines.append(f"AIPP preview vs float pipeline: input max_abs {preview['input_max_abs']:.3g} -> "
                         f"{'PASS' if preview['passed'] else 'FAIL'}")
    lines.append(f"report: {summary.out / 'report.md'}")
    return "\n".join(lines)
