"""`lvvit-opt atc`: compile an ONNX model to an Ascend .om (thin layer over lvvit_opt.ascend)."""
from __future__ import annotations

import logging

import click

from lvvit_opt.cli._base import cann_home_option, handle_errors, main
from lvvit_opt.cli.output import echo, emit_result, json_file, json_option, state, warn_random_weights
from lvvit_opt.ascend.atc import ATC_PRECISION_MODES
from lvvit_opt.cli.types import BATCH_SIZE, MAX_IMG_SIZE, SOC_VERSION, Count, FloatTriple, ModelFile

logger = logging.getLogger(__name__)

LOG_LEVELS = ["debug", "info", "warning", "error", "null"]


@main.command("atc")
@click.argument("model", type=ModelFile((".onnx",)))
@click.option("--output", "output", metavar="PREFIX", default=None,
              help="Output prefix; atc writes PREFIX.om. [default: MODEL without .onnx]")
@click.option("--soc-version", type=SOC_VERSION, default="auto", show_default=True,
              help="Target chip, e.g. Ascend310, Ascend310P3, Ascend910B3; 'auto' reads `npu-smi info`.")
@click.option("--batch-size", type=BATCH_SIZE, default=None,
              help="Batch for a model whose batch dimension is dynamic (a static one must agree).")
@click.option("--log", "log_level", type=click.Choice(LOG_LEVELS), default=None,
              help="atc's --log level (the manual guide uses debug). [default: atc's own, null]")
@click.option("--precision-mode", type=click.Choice(ATC_PRECISION_MODES), default=None,
              help="atc --precision_mode, passed through [atc's own: force_fp16 on the 310]. Preview it first: "
                   "lvvit-opt debug layers MODEL --precision-mode MODE [--keep-dtype FILE].")
@click.option("--keep-dtype", type=click.Path(dir_okay=False), default=None,
              help="atc --keep_dtype file (one node name or OpType::Name per line) kept in fp32.")
@click.option("--keep-dtype-op", "keep_dtype_ops", multiple=True, metavar="OPTYPE",
              help="Keep every op of this type in fp32 (repeatable, e.g. --keep-dtype-op Softmax); "
                   "writes PREFIX.keep_dtype.cfg and passes it as --keep_dtype.")
@click.option("--fusion-switch", type=click.Path(dir_okay=False), default=None,
              help="atc --fusion_switch_file (turn fusion passes on/off).")
@click.option("--extra-args", default=None, metavar='"..."',
              help='More atc flags, appended verbatim, e.g. --extra-args "--op_select_implmode=high_performance".')
@click.option("--aipp", is_flag=True,
              help="Static AIPP: write PREFIX.aipp.cfg from the model's recorded preprocessing and pass it as "
                   "--insert_op_conf. The .om then takes uint8 NHWC RGB of the resize size (lvvit-opt preprocess "
                   "--uint8) and does the crop and Normalize on the chip.")
@click.option("--aipp-mean", type=FloatTriple(), default=None, metavar="R,G,B",
              help="With --aipp: Normalize mean (0..1, applied after /255) instead of the recorded one.")
@click.option("--aipp-std", type=FloatTriple(1e-6, 1e6), default=None, metavar="R,G,B",
              help="With --aipp: Normalize std instead of the recorded one.")
@click.option("--aipp-src-size", type=Count(1, MAX_IMG_SIZE, "a size in pixels"), default=None, metavar="PX",
              help="With --aipp: side of the square uint8 image the host sends [default: floor(crop / crop_pct)].")
@click.option("--aipp-crop-size", type=Count(1, MAX_IMG_SIZE, "a size in pixels"), default=None, metavar="PX",
              help="With --aipp: side of the centre crop AIPP takes [default: the model's input size].")
@click.option("--batch-gears", default=None, metavar="N,N,...",
              help="One .om for several batch sizes: atc --dynamic_batch_size (2 to 100 gears, e.g. 1,4,8,16) "
                   "with batch -1 in --input_shape. Needs an ONNX with a dynamic batch (export --dynamic-batch).")
@cann_home_option
@click.option("--log-file", type=click.Path(dir_okay=False), default=None,
              help="Where atc's output goes. [default: PREFIX.atc.log]")
@click.option("--dry-run", is_flag=True, help="Print the atc command line and exit 0 without running it "
              "(after the readiness check; with --aipp it still writes PREFIX.aipp.cfg, which the command names).")
@click.option("--cann-version", default=None, metavar="VERSION",
              help="CANN version whose documented ONNX support the readiness check uses (opset range, operator "
                   "list), e.g. 5.0.4 or 8.0.RC1. [default: read from the install, else the newest documented]")
@json_option
@handle_errors
def atc_command(model, output, soc_version, batch_size, log_level, precision_mode, keep_dtype, keep_dtype_ops,
                fusion_switch, extra_args, aipp, aipp_mean, aipp_std, aipp_src_size, aipp_crop_size, batch_gears,
                cann_home, log_file, dry_run, cann_version, json_out):
    """Compile MODEL (.onnx) to an .om with atc.

    The input name and shape come from the model (its static batch, or --batch-size).
    For the manual guide's bs16 model:

    \b
      lvvit-opt atc ./model/model_best_bs16_sim.onnx --soc-version Ascend310 --log debug
    runs
      atc --framework=5 --model=./model/model_best_bs16_sim.onnx
          --output=./model/model_best_bs16_sim --input_format=NCHW
          --input_shape=image:16,3,224,224 --log=debug --soc_version=Ascend310

    atc's output is streamed to a log file while the elapsed time is shown. Success needs
    'ATC run success' and a fresh .om; on failure the E.../EZ... error codes, the ops they
    name and the log path are printed and the exit status is 1. Where atc is missing, the
    exact command to run on an Ascend host is printed (exit 2).
    """
    from lvvit_opt.ascend import atc as atc_lib
    from lvvit_opt.core.cann import cann_environment
    from lvvit_opt.cli.output import start_plan

    if keep_dtype and keep_dtype_ops:
        raise click.UsageError("use either --keep-dtype FILE or --keep-dtype-op, not both")
    overrides = {"--aipp-mean": aipp_mean, "--aipp-std": aipp_std, "--aipp-src-size": aipp_src_size,
                 "--aipp-crop-size": aipp_crop_size}
    given = [flag for flag, value in overrides.items() if value is not None]
    if given and not aipp:
        raise click.UsageError(f"{given[0]} needs --aipp")
    if batch_gears is not None and batch_size is not None:
        raise click.UsageError("use either --batch-size or --batch-gears, not both")
    prefix = output if output is not None else atc_lib.default_output_prefix(model)
    aipp_path = f"{prefix}.aipp.cfg" if aipp else None
    start_plan(reads={"MODEL": model, "--keep-dtype": keep_dtype, "--fusion-switch": fusion_switch}, writes={"--output": f"{prefix}.om", "--log-file": log_file or f"{prefix}.atc.log",
                   "--keep-dtype-op": f"{prefix}.keep_dtype.cfg" if keep_dtype_ops else None,
                   "--aipp": aipp_path, "--json": json_file(json_out)})
    warn_random_weights(model)
    gears = atc_lib.parse_batch_gears(batch_gears) if batch_gears is not None else None
    aipp_config = None
    if aipp:
        from lvvit_opt.ascend.aipp import aipp_for_model, check_aipp_shapes

        aipp_config = aipp_for_model(model, mean=aipp_mean, std=aipp_std, src_size=aipp_src_size,
                                     crop_size=aipp_crop_size)
        check_aipp_shapes(aipp_config, atc_lib.onnx_inputs(model), atc_lib.split_extra_args(extra_args))
    env = cann_environment(cann_home)
    soc = atc_lib.resolve_soc_version(soc_version, env)
    def build(keep):
        return atc_lib.build_atc_command(model, output=output, soc_version=soc, batch_size=batch_size,
                                         log=log_level, precision_mode=precision_mode, keep_dtype=keep,
                                         fusion_switch=fusion_switch, extra_args=extra_args,
                                         insert_op_conf=aipp_path, batch_gears=gears)

    command = build(keep_dtype)  # every option checked before the keep_dtype file is written
    from lvvit_opt.ascend.readiness import installed_cann_version, require_ready

    where = "--cann-version"
    if cann_version is None:
        cann_version, where = installed_cann_version(cann_home)
    fixed = {name: list(dims) for name, dims in atc_lib.resolve_input_shapes(
        atc_lib.onnx_inputs(model), max(gears) if gears else batch_size)}
    readiness = require_ready(model, cann_version, where, fixed)  # exit 2 naming the op/opset and the fixing pass
    logger.info(f"readiness: opset {readiness.opset} and every op within CANN {readiness.cann}'s documented support")
    if keep_dtype_ops:
        keep_dtype = str(atc_lib.write_keep_dtype_file(f"{prefix}.keep_dtype.cfg", op_types=keep_dtype_ops))
        logger.info(f"wrote {keep_dtype} ({', '.join('OpType::' + t for t in keep_dtype_ops)})")
        command = build(keep_dtype)
    extra = {}
    if aipp_config is not None:
        from lvvit_opt.ascend.aipp import write_aipp_config

        write_aipp_config(aipp_path, aipp_config)
        extra["aipp"] = {"config": aipp_path, **aipp_config.to_dict()}
        shape = aipp_config.input_shape()[1:]
        logger.info(f"wrote {aipp_path}: the .om takes uint8 NHWC {shape} (RGB), crops "
                    f"{aipp_config.crop_size_w}x{aipp_config.crop_size_h} and normalises on the chip")
    else:
        extra["input"] = {"layout": "NCHW", "dtype": "float32"}
    if gears:
        extra["batch_gears"] = list(gears)
    if dry_run:
        # stdout is the command alone; which CANN the check assumed goes beside it, on stderr
        checked = f"readiness checked against CANN {readiness.cann} ({readiness.cann_from})"
        if cann_version is None:  # assumed: no install to read, no --cann-version
            logger.warning(f"{checked}; give --cann-version (or --cann-home) for the CANN you will compile with")
        elif not state().quiet:
            click.echo(checked, err=True)
        echo(atc_lib.display_command(command))
        emit_result({"dry_run": True, "command": command, "soc_version": soc, "readiness": readiness.to_dict(),
                     **extra})
        return
    atc_lib.locate_atc(command, env)
    log_path = log_file or f"{prefix}.atc.log"
    logger.info(f"running: {atc_lib.display_command(command)}\n  log: {log_path}")
    result = atc_lib.run_atc(command, log_path=log_path, env=env)
    echo(f"wrote {result.om_path} (atc {result.elapsed_s:.1f}s, log {result.log_path})")
    if aipp_config is not None:
        echo(f"  input: uint8 NHWC {aipp_config.input_shape()[1:]} RGB (static AIPP {aipp_path})")
    if gears:
        echo(f"  batch gears: {','.join(map(str, gears))} (ais_bench --dymBatch N)")
    for warning in result.warnings[:5]:  # e.g. W11001: an op misses the high-priority kernel library
        logger.warning(f"atc {warning.format()}")
    if len(result.warnings) > 5:
        logger.warning(f"atc: {len(result.warnings) - 5} more warning(s) in {result.log_path}")
    emit_result({"dry_run": False, "command": command, "soc_version": soc, "om": str(result.om_path),
                 "log": str(result.log_path), "seconds": round(result.elapsed_s, 3),
                 "warnings": [w.format() for w in result.warnings], **extra})
