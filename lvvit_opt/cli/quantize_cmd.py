"""`lvvit-opt quantize`: INT8 for Ascend (AMCT) or onnxruntime, gated and rolled back on CPU first."""
from __future__ import annotations

import click

from lvvit_opt.cli._base import handle_errors, main
from lvvit_opt.cli._inputs import INPUTS_HELP, InputsParam
from lvvit_opt.cli.output import echo, emit_result, json_file, json_option
from lvvit_opt.cli.types import BATCH_SIZE, DURATION, PERCENT, ROUNDS, SEED, SOC_VERSION, FRACTION, ModelFile


@main.command("quantize")
@click.argument("model", type=ModelFile(suffixes=(".onnx",), exists=True))
@click.option("--calib", type=InputsParam(), required=True,
              help=f"Calibration inputs: {INPUTS_HELP} Use real images: random inputs calibrate nothing useful.")
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False),
              help="Output folder (owned): the INT8 model (ascend: MODEL_int8_preview.onnx; ort: MODEL_int8.onnx), "
                   "quantize_report.json; ascend also quant.cfg, preview_record.txt, calib_bin/, amct_commands.sh "
                   "and, where amct_onnx/atc are installed, amct/ and the .om.")
@click.option("--target", type=click.Choice(["ascend", "ort-cpu", "ort-trt"]), required=True,
              help="ascend: AMCT's scheme (previewed on onnxruntime, then AMCT + atc); ort-cpu/ort-trt: "
                   "onnxruntime's static QDQ model (ort-trt symmetric, as TensorRT takes it).")
@click.option("--inputs", type=InputsParam(), default=None,
              help="What the accuracy gate runs on (default: the calibration inputs; held-out inputs give an "
                   "unbiased figure).")
@click.option("--calib-method", type=click.Choice(["ifmr", "minmax", "percentile", "entropy"]), default=None,
              help="Activation calibration: ascend ifmr (AMCT's default) | minmax | percentile; ort minmax (default) "
                   "| percentile | entropy.")
@click.option("--percentile", type=PERCENT, default=99.9999, show_default=True,
              help="Percentile (%) of the activation range: IFMR's max/min_percentile and the percentile method's.")
@click.option("--min-cosine", type=FRACTION, default=0.99, show_default=True,
              help="Gate: cosine of every final output against fp32.")
@click.option("--min-agreement", type=PERCENT, default=99.0, show_default=True,
              help="Gate: top-1 agreement (%) of classifier outputs with fp32.")
@click.option("--skip", multiple=True, metavar="NODE",
              help="Keep this node in float (repeatable); a name that matches no node is an error.")
@click.option("--no-rollback", is_flag=True,
              help="Do not roll layers back: a model that fails the gate is not written.")
@click.option("--soc-version", type=SOC_VERSION, default="Ascend310", show_default=True,
              help="ascend: atc --soc_version of the compile command.")
@click.option("--atc-arg", "atc_args", multiple=True, metavar="FLAG=VALUE",
              help="ascend: extra atc flag (repeatable); dynamic gears and fp32-keeping precision flags are refused "
                   "with an INT8 deploy model.")
@click.option("--bench-seconds", type=DURATION, default=4.0, show_default=True,
              help="ort-cpu: seconds of interleaved fp32/INT8 timing after the model is written.")
@click.option("--no-bench", is_flag=True, help="ort-cpu: skip the fp32/INT8 timing.")
@click.option("--bench-rounds", type=ROUNDS, default=5, show_default=True, help="ort-cpu: timing rounds.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of random inputs.")
@click.option("--batch-size", type=BATCH_SIZE, default=None, help="Batch for a model whose batch is symbolic.")
@json_option
@handle_errors
def quantize_command(model, calib, out, target, inputs, calib_method, percentile, min_cosine, min_agreement, skip,
                     no_rollback, soc_version, atc_args, bench_seconds, no_bench, bench_rounds, seed, batch_size,
                     json_out):
    """Quantize MODEL to INT8 for --target, judged and rolled back on CPU first.

    \b
    Layers: Linear MatMul/Gemm and the patch Conv are quantized; attention's activation x
    activation MatMuls, Softmax, LayerNorm, GELU and residual Adds stay float (the target's
    documented rules); every layer is listed with its reason. Then: calibration on --calib,
    each layer's own INT8 cosine against float, and the gate on the final outputs (cosine and
    top-1 agreement against fp32). When it fails, layers go back to float worst first until it
    passes, then each is tried back in INT8 (a minimal set; every set is built and re-checked). If even all of them in float fail, nothing but the report is
    written and the exit status is 1.

    \b
    ascend writes the fake-quant preview, AMCT's quant.cfg (skip_layers), the .bin calibration
    batches and amct_commands.sh (amct_onnx calibration, then atc on the deploy model), and runs
    them where amct_onnx (and atc) are on the PATH. ort-cpu/ort-trt write the QDQ model; ort-cpu
    times it against fp32 with a paired interval.

    \b
    Examples:
      lvvit-opt quantize lvvit_s.onnx --calib images/ --target ascend -o q/
      lvvit-opt quantize lvvit_s.onnx --calib prep/ --inputs val_prep/ --target ort-cpu -o q_cpu/
    """
    from lvvit_opt.cli.output import start_plan
    from lvvit_opt.quantize.rollback import Gate
    from lvvit_opt.quantize.run import quantize

    def path_of(value):
        return value if isinstance(value, str) and not value.strip().isdigit() else None

    plan = start_plan(reads={"MODEL": model, "--calib": path_of(calib), "--inputs": path_of(inputs)},
                      writes={"--json": json_file(json_out)}, owned={"-o": out})
    report = quantize(model, calib, out, target, inputs=inputs, calib_method=calib_method,
                      percentile=percentile / 100.0, gate=Gate(min_cosine, min_agreement / 100.0), skip=skip,
                      rollback=not no_rollback, soc_version=soc_version, atc_args=atc_args, seed=seed,
                      batch_size=batch_size, bench_seconds=0 if no_bench else bench_seconds, bench_rounds=bench_rounds,
                      plan=plan)
    echo(report.format())
    emit_result(report.to_dict(), ok=report.passed)
    if not report.passed:
        raise click.exceptions.Exit(1)
