"""`lvvit-opt bench`: interleaved before/after throughput; the verb parses options and picks one
process or `--device` through lvvit_opt.scale.bench_any (it may import bench, scale and fileio)."""
from __future__ import annotations

import click

from lvvit_opt.cli._base import handle_errors, main, parse_int_list
from lvvit_opt.cli.output import echo, emit_result, json_file, json_option, warn_random_weights
from lvvit_opt.cli.types import GRAPH_OPT_LEVELS, MAX_BATCH, DEVICE_ID, DURATION, ROUNDS, THREADS, WARMUP, Backend, ModelFile


@main.command("bench")
@click.argument("models", nargs=-1, required=True, type=ModelFile())
@click.option("--batch-sizes", default=None,
              help="Comma-separated batch sizes, e.g. 1,16 (default: each model's own fixed batch; 1,16 for a dynamic one).")
@click.option("--backend", type=Backend(), default="auto", show_default=True,
              help="auto: .onnx on onnxruntime, .om on ais_bench or the legacy benchmark binary; "
                   "or a registered runner (lvvit_opt.runtime.registry), or trtexec.")
@click.option("--duration", type=DURATION, default=10.0, show_default=True,
              help="Measuring time per batch size, shared by all models and rounds: after --rounds rounds, "
                   "measuring goes on until every ratio's interval is within +-3% or this time is spent "
                   "(the output says which).")
@click.option("--rounds", type=ROUNDS, default=5, show_default=True,
              help="The fewest interleaved rounds (A B, then B A, ...); each ratio's interval is computed "
                   "from the paired rounds.")
@click.option("--warmup", type=WARMUP, default=1.0, show_default=True, help="Untimed seconds per model first.")
@click.option("--threads", type=THREADS, default=None, help="onnxruntime intra-op threads (default: all cores).")
@click.option("--providers", default=None,
              help="onnxruntime execution providers in order, e.g. tensorrt,cuda,cpu. An unknown name, or none "
                   "available in this build, is an error naming the available ones; unavailable ones are "
                   "dropped with a warning.")
@click.option("--graph-opt", type=click.Choice(GRAPH_OPT_LEVELS), default=None,
              help="onnxruntime's graph optimisation level for every session bench opens (--device workers "
                   "too): all, extended, basic or disabled (default: onnxruntime's own, all). The level used "
                   "is in the report. Refused for a model that does not run on onnxruntime (.om, trtexec).")
@click.option("--refix-batch", is_flag=True, help="Re-fix a fixed-batch ONNX to each asked batch size (fix_shapes pass).")
@click.option("--skip-validate", is_flag=True, help="Measure .om models without first validating them against their ONNX.")
@click.option("--reference", type=click.Path(dir_okay=False), default=None,
              help="ONNX to validate .om models against (default: the .onnx beside each .om).")
@click.option("--device-id", type=DEVICE_ID, default=0, show_default=True, help="The NPU to run on.")
@click.option("--device", "devices", default=None, metavar="0,1,2,3",
              help="Run every listed device at once, one process each (e.g. the four chips of a 310 card): "
                   "per-device fps and the measured card total, next to the manual guide's estimate (one chip x N).")
@json_option
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), default=None, help="Write a PNG bar chart of fps.")
@handle_errors
def bench_command(models, batch_sizes, backend, duration, rounds, warmup, threads, providers, graph_opt, refix_batch,
                  skip_validate, reference, device_id, devices, json_out, plot_out):
    """Measure fps of one or more models, interleaved so machine drift hits all alike.

    Prints fps, median/p90 latency and the spread over rounds per model and batch size,
    and with two or more models the ratio of each to the first with its 95% interval (Student t
    over the paired per-round log-ratios) and a verdict: faster, slower, or no measurable
    difference (the interval holds 1.0, or the ratio is within 3% of it). A machine that was not
    quiet (load average, other processes' CPU time, steal) gives a warning, in --json too.

    \b
    Examples:
      lvvit-opt bench model_bs16.onnx model_bs16_opt.onnx --duration 20
      lvvit-opt bench model_bs16.om model_bs16_opt.om        # validates each .om first
      lvvit-opt bench model.onnx --backend trtexec --batch-sizes 1,16
      lvvit-opt bench model.onnx --graph-opt disabled      # as `tune` measured it
      lvvit-opt bench model_bs16.om --device 0,1,2,3     # the whole card, measured
    """
    from lvvit_opt.measure.bench import plot_fps
    from lvvit_opt.core.errors import UserError
    from lvvit_opt.cli.output import start_plan
    from lvvit_opt.scale import bench_any, parse_devices

    if devices is not None:
        devices = parse_devices(devices)
        if device_id != 0:
            raise UserError("give --device (several at once) or --device-id (one), not both")
        if backend == "trtexec":
            raise UserError("--device runs ais_bench, the benchmark binary or onnxruntime; not trtexec")

    start_plan(reads={**{f"MODEL {m}": m for m in models}, "--reference": reference}, writes={"--json": json_file(json_out), "--plot": plot_out})
    warn_random_weights(*models, reference)
    report = bench_any(
        list(models), parse_int_list(batch_sizes, "--batch-sizes", maximum=MAX_BATCH) if batch_sizes else None,
        backend=backend,
        duration=duration, rounds=rounds, warmup=warmup, threads=threads,
        providers=providers.split(",") if providers else None, graph_opt=graph_opt, refix_batch=refix_batch,
        device_id=device_id,
        validate=not skip_validate, reference=reference, devices=devices,
    )
    echo(report.format_table())
    for line in report.verdicts():
        echo(line)
    if report.settings.get("weights"):
        echo(f"note: {report.settings['weights']}: fps is real, accuracy is not")
    echo(f"machine: {report.machine.get('processor')} x{report.machine.get('cpu_count')}")
    for note in report.runtime_notes():
        echo(note)
    if len(models) > 1 and all(str(m).lower().endswith(".om") for m in models):
        from lvvit_opt.ascend.om_graph import compare_om_files  # what atc compiled, beside the fps (lvvit-opt inspect)
        echo("\n".join(compare_om_files(models)))
    if plot_out:
        plot_fps(report, plot_out)
        echo(f"wrote {plot_out}")
    emit_result(report.to_dict(), ok=bool(report.results))
    if not report.results:
        raise click.exceptions.Exit(1)
