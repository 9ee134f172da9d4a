"""`lvvit-opt atc`: compile an ONNX model to an Ascend .om (thin layer over lvvit_opt.ascend)."""
from __future__ import annotations

import logging

import click

from lvvit_opt.cli._base import cann_home_option, handle_errors, main
from lvvit_opt.cli.output import echo, emit_result, json_file, json_option
from lvvit_opt.ascend.atc import ATC_PRECISION_MODES
from lvvit_opt.cli.types import BATCH_SIZE, SOC_VERSION, ModelFile

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
              help="atc's --log level (the seed uses debug). [default: atc's own, null]")
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
@cann_home_option
@click.option("--log-file", type=click.Path(dir_okay=False), default=None,
              help="Where atc's output goes. [default: PREFIX.atc.log]")
@click.option("--dry-run", is_flag=True, help="Print the atc command line and exit 0 without running it "
              "(after the readiness check).")
@click.option("--cann-version", default=None, metavar="VERSION",
              help="CANN version whose documented ONNX support the readiness check uses (opset range, operator "
                   "list), e.g. 5.0.4 or 8.0.RC1. [default: read from the install, else the newest documented]")
@json_option
@handle_errors
def atc_command(model, output, soc_version, batch_size, log_level, precision_mode, keep_dtype, keep_dtype_ops,
                fusion_switch, extra_args, cann_home, log_file, dry_run, cann_version, json_out):
    """Compile MODEL (.onnx) to an .om with atc.

    The input name and shape come from the model (its static batch, or --batch-size).
    For the seed's bs16 model:

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
    prefix = output if output is not None else atc_lib.default_output_prefix(model)
    start_plan(reads={"MODEL": model, "--keep-dtype": keep_dtype, "--fusion-switch": fusion_switch}, writes={"--output": f"{prefix}.om", "--log-file": log_file or f"{prefix}.atc.log",
                   "--keep-dtype-op": f"{prefix}.keep_dtype.cfg" if keep_dtype_ops else None,
                   "--json": json_file(json_out)})
    env = cann_environment(cann_home)
    soc = atc_lib.resolve_soc_version(soc_version, env)
    def build(keep):
        return atc_lib.build_atc_command(model, output=output, soc_version=soc, batch_size=batch_size,
                                         log=log_level, precision_mode=precision_mode, keep_dtype=keep,
                                         fusion_switch=fusion_switch, extra_args=extra_args)

    command = build(keep_dtype)  # every option checked before the keep_dtype file is written
    from lvvit_opt.ascend.readiness import installed_cann_version, require_ready

    where = "--cann-version"
    if cann_version is None:
        cann_version, where = installed_cann_version(cann_home)
    fixed = {name: list(dims) for name, dims in atc_lib.resolve_input_shapes(atc_lib.onnx_inputs(model), batch_size)}
    readiness = require_ready(model, cann_version, where, fixed)  # exit 2 naming the op/opset and the fixing pass
    logger.info(f"readiness: opset {readiness.opset} and every op within CANN {readiness.cann}'s documented support")
    if keep_dtype_ops:
        keep_dtype = str(atc_lib.write_keep_dtype_file(f"{prefix}.keep_dtype.cfg", op_types=keep_dtype_ops))
        logger.info(f"wrote {keep_dtype} ({', '.join('OpType::' + t for t in keep_dtype_ops)})")
        command = build(keep_dtype)
    if dry_run:
        echo(atc_lib.display_command(command))
        emit_result({"dry_run": True, "command": command, "soc_version": soc, "readiness": readiness.to_dict()})
        return
    atc_lib.locate_atc(command, env)
    log_path = log_file or f"{prefix}.atc.log"
    logger.info(f"running: {atc_lib.display_command(command)}\n  log: {log_path}")
    result = atc_lib.run_atc(command, log_path=log_path, env=env)
    echo(f"wrote {result.om_path} (atc {result.elapsed_s:.1f}s, log {result.log_path})")
    for warning in result.warnings[:5]:  # e.g. W11001: an op misses the high-priority kernel library
        logger.warning(f"atc {warning.format()}")
    if len(result.warnings) > 5:
        logger.warning(f"atc: {len(result.warnings) - 5} more warning(s) in {result.log_path}")
    emit_result({"dry_run": False, "command": command, "soc_version": soc, "om": str(result.om_path),
                 "log": str(result.log_path), "seconds": round(result.elapsed_s, 3),
                 "warnings": [w.format() for w in result.warnings]})
