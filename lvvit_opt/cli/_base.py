"""The click group every verb registers on, and the error handling they share.

Keep this module light: no torch, timm or onnx at import time. Command modules import
what they need inside the command function.
"""
from __future__ import annotations

import functools
import signal
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


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, `timeout`, `kill`) raised like Ctrl-C, so every finally-block
    (temporary files, worker pools, atc) runs; the CLI then exits 143."""


def _raise_terminated(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
    raise Terminated()


def handle_errors(fn):
    """Turn LvvitOptError into `error: <message>` on stderr and its exit code; no traceback.
    Ctrl-C exits 130 and SIGTERM 143, both after the command's clean-up ran."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        previous = _install_sigterm()
        try:
            return fn(*args, **kwargs)
        except LvvitOptError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except Terminated:
            click.echo("terminated", err=True)
            sys.exit(143)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper


def _install_sigterm():
    """Install the SIGTERM handler (main thread only); returns the previous one."""
    try:
        return signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (e.g. a test harness thread)
        return None


def parse_int_list(text: str, what: str = "value") -> list[int]:
    """'1,16' -> [1, 16]; raises click.BadParameter (exit 2) on anything else."""
    try:
        values = [int(p) for p in str(text).replace(" ", "").split(",") if p]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers for {what}, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise click.BadParameter(f"expected positive integers for {what}, got {text!r}")
    return values
