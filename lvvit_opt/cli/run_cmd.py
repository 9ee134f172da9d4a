"""`lvvit-opt run`: the main job, checkpoint to before/after report."""
from __future__ import annotations

import click

from ._base import cann_home_option, handle_errors, main, parse_int_list


@main.command("run")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Official checkpoint; omit to run on a seeded RANDOM init (the report says so).")
@click.option("--model", "model_name", default="lvvit_s", show_default=True,
              help="lvvit_t/s/m/l or any timm model name (deit_tiny_patch16_224, swin_tiny_patch4_window7_224, ...).")
@click.option("--batch-sizes", default="1,16", show_default=True, help="One exported model per batch size.")
@click.option("--passes", default="softmax_transpose,cleanup", show_default=True,
              help="Graph passes to apply, in order (see `lvvit-opt passes`).")
@click.option("--out", default="runs/default", show_default=True, type=click.Path(file_okay=False),
              help="Output folder (ONNX files, .om files, report.md, report.json, fps.png).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--ema", is_flag=True, help="Use the checkpoint's EMA weights.")
@click.option("--non-strict", is_flag=True, help="Load a checkpoint with mismatched keys (listed as a warning).")
@cann_home_option
@click.option("--soc-version", default="auto", show_default=True, help="atc --soc_version; auto reads npu-smi info.")
@click.option("--patch-whitelist", is_flag=True, help="Patch CANN's transpose.py with the graph's Transpose shapes (backup kept).")
@click.option("--whitelist-file", type=click.Path(dir_okay=False), default=None, help="The transpose.py to patch.")
@click.option("--bench-duration", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Measured seconds per batch size (before and after share it, interleaved).")
@click.option("--bench-rounds", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="onnxruntime threads (default: all cores).")
@handle_errors
def run_command(checkpoint, model_name, batch_sizes, passes, out, seed, ema, non_strict, cann_home, soc_version,
                patch_whitelist, whitelist_file, bench_duration, bench_rounds, threads):
    """Run the whole pipeline: export (+onnxsim) per batch size -> apply passes ->
    validate -> whitelist shapes (patch with --patch-whitelist) -> atc if found, else
    atc_commands.sh -> bench before/after -> report.md, report.json, fps.png.

    Re-running with the same options skips finished stages.

    \b
    Example:
      lvvit-opt run --checkpoint lvvit_s-26M-224-83.3.pth.tar --out runs/lvvit_s --patch-whitelist
    """
    from ..fileio import guard_outputs
    from ..pipeline import RunOptions, run

    guard_outputs({}, {"--checkpoint": checkpoint, "--whitelist-file": whitelist_file}, output_dirs={"--out": out})
    options = RunOptions(out=out, checkpoint=checkpoint, model=model_name,
                         batch_sizes=tuple(parse_int_list(batch_sizes, "--batch-sizes")),
                         passes=tuple(p for p in passes.split(",") if p), seed=seed, ema=ema, strict=not non_strict,
                         cann_home=cann_home, soc_version=soc_version, patch_whitelist=patch_whitelist,
                         whitelist_file=whitelist_file, bench_duration=bench_duration, bench_rounds=bench_rounds,
                         threads=threads)
    run(options, log=lambda m: click.echo(m, err=m.startswith("WARNING")))
