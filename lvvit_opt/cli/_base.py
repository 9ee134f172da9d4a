"""The click group every verb registers on, and the error handling they share.

Keep this module light: no torch, timm or onnx at import time. Command modules import
what they need inside the command function. Conventions (--json, -v/-q, progress, echo)
live in `output.py`; parameter types with completion in `types.py`.
"""
from __future__ import annotations

import functools
import os
import signal
import sys
import threading

import click

from lvvit_opt import __version__
from lvvit_opt.core.errors import LvvitOptError, Terminated, note_sigterm, one_line, sigterm_received
from lvvit_opt.cli.output import configure_logging, emit_error, set_verbosity, state

VERBOSE_HELP = "Say what is being done on stderr (-vv: debug messages, with the logger names)."
QUIET_HELP = "Nothing on stdout, no progress; only warnings and errors on stderr."


def _verbosity_callback(ctx: click.Context, param: click.Parameter, value) -> None:
    """-v / -q given after the verb (`lvvit-opt apply -q ...`) work like before it."""
    if not value:
        return
    if param.name == "quiet":
        set_verbosity(-1)
    elif not state().quiet:
        set_verbosity(int(value))


class LvvitGroup(click.Group):
    """A group whose every command (and sub-group's command) also accepts -v/-q."""

    group_class = type  # sub-groups (golden, whitelist) are LvvitGroups too

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not isinstance(cmd, click.Group):
            _add_verbosity_options(cmd)
        super().add_command(cmd, name)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode: bool = True, **extra):
        """As click's, but a usage error (bad option value, missing argument) is one line,
        `error: ... (see 'lvvit-opt VERB --help')`, exit 2, like every other bad input."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `lvvit-opt` / `lvvit-opt whitelist`: the help
                click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message(), err=True)
                sys.exit(exc.exit_code)
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"error: {exc.format_message()}{where}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _add_verbosity_options(cmd: click.Command) -> None:
    taken = {opt for p in cmd.params for opt in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])}
    if "-q" not in taken and "--quiet" not in taken:
        cmd.params.append(click.Option(["-q", "--quiet"], is_flag=True, expose_value=False,
                                       callback=_verbosity_callback, help=QUIET_HELP))
    if "-v" not in taken and "--verbose" not in taken:
        cmd.params.append(click.Option(["-v", "--verbose"], count=True, expose_value=False,
                                       callback=_verbosity_callback, help=VERBOSE_HELP))


@click.group(cls=LvvitGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="lvvit-opt")
@click.option("-v", "--verbose", count=True, help=VERBOSE_HELP)
@click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)
@click.option("--log-file", type=click.Path(dir_okay=False), metavar="PATH", default=None,
              help="Also append every diagnostic (debug level, timestamped) to PATH.")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool, log_file: str | None) -> None:
    """lvvit-opt: LV-ViT / ViT from a PyTorch checkpoint to a fast, verified Ascend model.

    \b
    Typical flow:
      lvvit-opt export -o model_bs16.onnx --batch-size 16 --checkpoint lvvit_s.pth.tar
      lvvit-opt apply model_bs16.onnx -o model_bs16_opt.onnx --passes softmax_transpose
      lvvit-opt whitelist patch --from-model model_bs16_opt.onnx
      lvvit-opt atc model_bs16_opt.onnx --soc-version auto
      lvvit-opt bench model_bs16.om model_bs16_opt.om
    or all of it at once: lvvit-opt run --out runs/NAME

    Every verb takes --json PATH ('-' = stdout) and -v/-q; see docs/cli-contract.md.
    """
    if verbose and quiet:
        raise click.UsageError("use either -v or -q, not both")
    st = state()
    st.verbosity = -1 if quiet else verbose
    st.log_file = log_file
    configure_logging(ctx)


def _raise_terminated(signum, frame) -> None:
    note_sigterm()  # a library may turn our Terminated into a plain KeyboardInterrupt (Ray's get)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
    raise Terminated()


def _redeliver_swallowed_sigterm(unraisable) -> None:
    """sys.unraisablehook: a Terminated raised where Python can only print and drop it (an
    os.register_at_fork callback while Ray or a pool forks, a __del__) would be lost, the
    handler already set to ignore, and the verb would run on. Re-arm and send it again; it
    is then raised at the next point the main thread can take it."""
    if isinstance(unraisable.exc_value, Terminated):
        signal.signal(signal.SIGTERM, _raise_terminated)
        # sent from another thread a moment later: sent from here it would be raised (and dropped) here again
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()
        return
    _previous_unraisablehook(unraisable)


_previous_unraisablehook = sys.unraisablehook


def handle_errors(fn):
    """Turn LvvitOptError into `error: <message>` on stderr and its exit code; no traceback.
    Ctrl-C exits 130 and SIGTERM 143, both after the command's clean-up ran.
    With --json, an envelope with ok=false and the message is written too."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        previous = _install_sigterm()
        try:
            return fn(*args, **kwargs)
        except LvvitOptError as exc:
            if sigterm_received():  # a failure that followed the SIGTERM (a worker killed by it) is its echo
                click.echo("terminated", err=True)
                sys.exit(143)
            message = one_line(str(exc))  # an error is one line, whoever raised it
            emit_error(message, exc.exit_code, getattr(exc, "paths", ()))
            click.echo(f"error: {message}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            if isinstance(exc, Terminated) or sigterm_received():
                click.echo("terminated", err=True)
                sys.exit(143)
            emit_error("interrupted", 130)
            click.echo("interrupted", err=True)
            sys.exit(130)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper


def _install_sigterm():
    """Install the SIGTERM handler (main thread only); returns the previous one."""
    note_sigterm(False)
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (e.g. a test harness thread)
        return None
    sys.unraisablehook = _redeliver_swallowed_sigterm
    return previous


def parse_int_list(text: str, what: str = "value", maximum: int | None = None, shape: bool = False) -> list[int]:
    """'1,16' -> [1, 16]; raises click.BadParameter (exit 2) on anything else.

    maximum: the largest value allowed (e.g. a batch size); shape: the list is a tensor shape a
    user typed, held to tensor_spec.SHAPE_LIMITS (rank, dims, elements), the limits in the message.
    """
    from lvvit_opt.core.tensor_spec import SHAPE_LIMITS, shape_problem

    expected = (SHAPE_LIMITS if shape else f"integers in 1..{maximum}" if maximum is not None
                else "positive integers")
    try:
        values = [int(p) for p in str(text).replace(" ", "").split(",") if p]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers for {what}, got {text!r}"
                                 + (f" ({expected})" if shape else "")) from None
    if shape:
        problem = shape_problem(values)
        if problem:
            raise click.BadParameter(f"{text!r}: {problem}; expected {expected}")
    elif not values or any(v <= 0 or (maximum is not None and v > maximum) for v in values):
        raise click.BadParameter(f"expected {expected} for {what}, got {text!r}")
    return values


CANN_HOME_HELP = ("CANN toolkit root [default: $ASCEND_TOOLKIT_HOME, $ASCEND_HOME_PATH, $install_path, "
                  "/usr/local/Ascend/ascend-toolkit/latest, ~/Ascend/ascend-toolkit/latest]. Its set_env.sh is "
                  "sourced for the Ascend tools only.")


def cann_home_option(fn):
    """`--cann-home DIR` (parameter `cann_home`), the same on every verb that runs an Ascend tool."""
    return click.option("--cann-home", type=click.Path(file_okay=False), default=None, metavar="DIR",
                        help=CANN_HOME_HELP)(fn)


def parse_pass_options(items: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """('softmax_transpose.perm=0,3,1,2', ...) -> {'softmax_transpose': {'perm': '0,3,1,2'}}."""
    options: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        pass_name, dot, option = key.strip().partition(".")
        if not sep or not dot or not pass_name or not option:
            raise click.BadParameter(f"expected PASS.OPTION=VALUE, got {item!r}", param_hint="--option")
        options.setdefault(pass_name, {})[option] = value.strip()
    return options


def pass_option_flags(fn):
    """--input-shape and -O, the pass options `apply` and `run` share (--batch-size is each verb's own)."""
    fn = click.option("-O", "--option", "pass_options", multiple=True, metavar="PASS.OPTION=VALUE",
                      help="A pass option, e.g. softmax_transpose.style=swin, softmax_transpose.perm=0,3,1,2, "
                           "softmax_transpose.upgrade_opset=true (repeatable; `lvvit-opt passes` lists "
                           "options).")(fn)
    fn = click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME:D1,D2,...",
                      help="fix_shapes: a whole static input shape, e.g. image:16,3,224,224 (repeatable).")(fn)
    return fn
