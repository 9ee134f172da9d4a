"""`lvvit-opt doctor`: the checklist a user runs first on an Ascend host (thin layer over
lvvit_opt.ascend.doctor)."""
from __future__ import annotations

import os

import click

from lvvit_opt.cli._base import cann_home_option, handle_errors, main
from lvvit_opt.cli.output import echo, emit_result, json_option
from lvvit_opt.cli.types import gigabytes


@main.command("doctor")
@click.option("--model", type=click.Path(dir_okay=False), default=None,
              help="Also check whether this ONNX model's Transpose shapes get atc's fast Transpose kernel.")
@cann_home_option
@click.option("--transpose-file", type=click.Path(dir_okay=False), default=None,
              help="The transpose.py to check [default: found like `lvvit-opt whitelist` finds it].")
@click.option("--workdir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Where atc will run (it writes the .om, kernel_meta/ and logs there): free space is checked.")
@click.option("--min-free-gb", type=gigabytes(0), default=2.0, show_default=True,
              help="Free space atc needs in --workdir.")
@json_option
@handle_errors
def doctor_command(model, cann_home, transpose_file, workdir, min_free_gb, json_out) -> None:
    """Can this host run the whole pipeline? One line per check, with the fix for each failure.

    \b
    Checks, in the order to fix them:
      CANN toolkit   found, where, version (ascend_toolkit_install.info, version.cfg, version.info)
      set_env.sh     ASCEND_TOOLKIT_HOME, ASCEND_OPP_PATH, PYTHONPATH, LD_LIBRARY_PATH in effect
      atc            runnable (on PATH, or after sourcing set_env.sh)
      npu-smi        runnable, the NPUs and the SoC it reports (atc's --soc_version)
      NPU driver     version (npu-smi header or /usr/local/Ascend/driver/version.info)
      .om runner     ais_bench importable (and its version) or benchmark.<arch> found
      transpose.py   found, white-/black-list era, writable
      model shapes   with --model: every static Transpose shape gets the fast kernel
      disk space     free space in --workdir
    Exit 0 when nothing failed (warnings allowed), 1 otherwise. Changes nothing.
    """
    from lvvit_opt.ascend.doctor import run_doctor
    from lvvit_opt.cli.output import start_plan

    start_plan(reads={"--model": model, "--transpose-file": transpose_file}, writes={"--json": json_out if json_out != "-" else None})
    if model is not None and os.path.lexists(model):  # the gate, even with no transpose.py to check against
        from lvvit_opt.core.onnx_files import gate_model_file

        gate_model_file(model)
    report = run_doctor(cann_home=cann_home, model=model, transpose_file=transpose_file, workdir=workdir,
                        min_free_gb=min_free_gb)
    for line in report.format_lines():
        echo(line)
    emit_result(report.to_dict(), ok=report.ok)
    if not report.ok:
        raise click.exceptions.Exit(1)
