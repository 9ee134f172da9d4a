"""The click group every verb registers on, and the error handling they share.

Keep this module light: no torch, timm or onnx at import time. Command modules import
what they need inside the command function.
"""
from __future__ import annotations

import functools
import sys

import click

from .. import __version__
from ..errors import LvvitOptError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="lvvit-opt")
def main() -> None:
    """lvvit-opt: LV-ViT / ViT from a PyTorch checkpoint to a fast, verified Ascend model.

    \b
    Typical flow:
      lvvit-opt export -o model_bs16.onnx --batch-size 16 --checkpoint lvvit_s.pth.tar
      lvvit-opt apply model_bs16.onnx -o model_bs16_opt.onnx --passes softmax_transpose
      lvvit-opt whitelist patch --from-model model_bs16_opt.onnx
      lvvit-opt atc model_bs16_opt.onnx --soc-version auto
      lvvit-opt bench model_bs16.om model_bs16_opt.om
    or all of it at once: lvvit-opt run --out runs/NAME
    """


def handle_errors(fn):
    """Turn LvvitOptError into `error: <message>` on stderr and its exit code; no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LvvitOptError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def parse_int_list(text: str, what: str = "value") -> list[int]:
    """'1,16' -> [1, 16]; raises click.BadParameter (exit 2) on anything else."""
    try:
        values = [int(p) for p in str(text).replace(" ", "").split(",") if p]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers for {what}, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise click.BadParameter(f"expected positive integers for {what}, got {text!r}")
    return values
