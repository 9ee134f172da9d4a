"""How every verb talks to the user (docs/cli-contract.md).

- `json_option` + `emit_result(result, ok=...)`: `--json PATH` (`-` = stdout) writes
  {"command", "version", "ok", "result", "warnings"}, atomically for a file. With
  `--json -` stdout carries only the JSON (human output is dropped).
- `echo(text)`: human output to stdout; silent with -q or `--json -`.
- Diagnostics go through `logging` (libraries: `logging.getLogger(__name__)`) to stderr:
  warnings and errors by default, INFO with -v, DEBUG with -vv; `--log-file PATH` gets DEBUG.
  Every WARNING of the command also lands in the envelope's "warnings".
- Progress: lvvit_opt.core.progress.task(); the CLI draws it with tqdm on a terminal, never
  with -q or when stderr is not a TTY.

Keep this module light (no torch/onnx): it is imported by every command module.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

import click

from lvvit_opt import __version__
from lvvit_opt.core import progress
from lvvit_opt.core.errors import shown

STATE_KEY = "lvvit_opt.cli_state"
LIBRARY_LOGGER = "lvvit_opt"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass
class CliState:
    """Per-invocation settings shared by the group and its commands."""

    verbosity: int = 0  # -1 quiet, 0 normal, 1+ verbose
    log_file: str | None = None
    json_target: str | None = None
    warnings: list[str] = field(default_factory=list)
    envelope_written: bool = False
    handlers: list[logging.Handler] = field(default_factory=list)

    @property
    def quiet(self) -> bool:
        return self.verbosity < 0

    @property
    def stdout_is_json(self) -> bool:
        return self.json_target == "-"


def state() -> CliState:
    """This invocation's CliState (a fresh default one outside a click context)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return CliState()
    root = ctx.find_root()
    if STATE_KEY not in root.meta:
        root.meta[STATE_KEY] = CliState()
    return root.meta[STATE_KEY]


# ---------------------------------------------------------------- human output

def echo(text: str = "", nl: bool = True) -> None:
    """Human-readable result text to stdout; nothing with -q or `--json -`."""
    st = state()
    if st.quiet or st.stdout_is_json:
        return
    click.echo(text, nl=nl)


# ---------------------------------------------------------------- JSON envelope

def json_option(fn):
    """Adds `--json PATH` (parameter `json_out`); pair it with `emit_result`."""
    return click.option(
        "--json", "json_out", type=click.Path(dir_okay=False, allow_dash=True), metavar="PATH", default=None,
        callback=_remember_json_target, is_eager=True,
        help="Also write the result as JSON to PATH ('-' = stdout, which then carries only the JSON): "
             '{"command", "version", "ok", "result", "warnings"}.')(fn)


def _remember_json_target(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        state().json_target = value
    return value


def json_file(json_out: str | None) -> str | None:
    """The --json value as an output file for fileio.guard_outputs (None for '-' or absent)."""
    return None if json_out in (None, "-") else json_out


def command_name() -> str:
    """'validate', 'golden check', ... (the verb's path below the group, whatever the program is
    called: `lvvit-opt`, `python -m lvvit_opt`)."""
    ctx = click.get_current_context(silent=True)
    names = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(names))


def envelope(result: Any, *, ok: bool = True, command: str | None = None,
             warnings: list[str] | None = None) -> dict[str, Any]:
    return {"command": command if command is not None else command_name(), "version": __version__,
            "ok": bool(ok), "result": result, "warnings": list(warnings if warnings is not None else state().warnings)}


def emit_result(result: Any, *, ok: bool = True, path: str | None = None) -> None:
    """Write the envelope to --json's PATH (or `path`); no-op when neither was given.

    `result` must be JSON-serialisable (non-finite floats are written as null, since JSON
    has no NaN)."""
    st = state()
    target = path if path is not None else st.json_target
    if target is None:
        return
    text = dumps(envelope(result, ok=ok))
    st.envelope_written = True
    if target == "-":
        click.echo(text, nl=False)
        return
    from lvvit_opt.core.fileio import write_text_atomic

    write_text_atomic(target, text)


def dumps(data: Any) -> str:
    return json.dumps(_finite(data), indent=2, default=_default, allow_nan=False) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _default(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return _finite(value.to_dict())
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _finite(value.tolist())
    if hasattr(value, "__fspath__"):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


def emit_error(message: str, exit_code: int, refused: tuple[str, ...] = ()) -> None:
    """On a failing command with --json, still write an envelope (ok=false) saying why: to
    stdout always; to a file only when the inputs were fine (exit 1: a tool or check failed),
    never for a refused input (exit 2 writes nothing), nor when --json is itself one of the
    `refused` outputs (errors.OutputRefused.paths)."""
    st = state()
    if st.json_target is None or st.envelope_written or not _replaceable(st.json_target):
        return
    if exit_code == 2 and st.json_target != "-":
        return
    if st.json_target != "-" and refused:
        from lvvit_opt.core.fileio import same_path

        if any(same_path(st.json_target, path) for path in refused):
            return
    try:
        emit_result({"error": message, "exit_code": exit_code}, ok=False)
    except Exception:  # the JSON path itself may be what is wrong; the error line says enough
        pass


def _replaceable(target: str) -> bool:
    """An error envelope may replace nothing but an earlier envelope: the failure may be that
    --json names an input (guard_outputs refused it), which must survive byte for byte."""
    from lvvit_opt.core.fileio import special_kind

    if target == "-" or special_kind(target) is not None:  # a device or FIFO keeps nothing to lose;
        return True                                          # reading a FIFO would block forever
    try:
        with open(target, "rb") as fh:
            head = fh.read(4096)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return head.lstrip().startswith(b'{') and b'"command"' in head


# ---------------------------------------------------------------- logging

class _StderrHandler(logging.Handler):
    """Writes through tqdm.write (so a progress bar is not torn) to the current sys.stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)
        except Exception:
            self.handleError(record)


class _ConsoleFormatter(logging.Formatter):
    def __init__(self, verbose: bool):
        super().__init__()
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and self.verbose:
            message += "\n" + self.formatException(record.exc_info)
        prefix = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        if self.verbose:
            return f"[{record.name}] {prefix}{message}"
        return prefix + message


class _OncePerCommand(logging.Filter):
    """Drops a warning this command already showed: the same text, or a second random-weights
    caveat (every export of a run, every model of a bench would repeat it). One decision per
    record, shared by the console and the JSON `warnings`."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        keep = getattr(record, "lvvit_once", None)
        if keep is None:
            from lvvit_opt.models.metadata import RANDOM_WEIGHTS

            message = record.getMessage()
            key = RANDOM_WEIGHTS if message.startswith(RANDOM_WEIGHTS) else message
            keep = key not in self.seen
            self.seen.add(key)
            record.lvvit_once = keep
        return keep


def warn_random_weights(*models) -> None:
    """The random-weights caveat for the models a verb reads, from their metadata (one per command)."""
    from lvvit_opt.models.metadata import random_weights_caveat

    caveat = random_weights_caveat(models)
    if caveat:
        logging.getLogger(LIBRARY_LOGGER).warning(caveat)


class _WarningCollector(logging.Handler):
    def __init__(self, sink: list[str]):
        super().__init__(level=logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record.getMessage())


def console_level(verbosity: int) -> int:
    """Warnings and errors by default (and with -q: a bad input stays one `error:` line);
    -v adds what the libraries do (INFO), -vv their debug messages."""
    return logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG


def _refuse_unwritable_log(path: str) -> None:
    """A folder, socket or a FIFO nobody reads is refused at once: opening a FIFO without a
    reader would block the verb forever before it did anything."""
    from lvvit_opt.core.fileio import owned_file_kind, special_kind

    owned = owned_file_kind(path) or owned_file_kind(os.path.realpath(path))
    if owned is not None:
        raise click.BadParameter(f"{shown(path)} is {owned}, which lvvit-opt keeps; appending a log to it "
                                 f"would corrupt it", param_hint="--log-file")
    kind = special_kind(path)
    if os.path.isdir(path):
        raise click.BadParameter(f"{shown(path)} is a directory; give a file", param_hint="--log-file")
    if kind in ("socket", "block device"):
        raise click.BadParameter(f"{shown(path)} is a {kind}; give a file", param_hint="--log-file")
    if kind == "FIFO":
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as exc:
            reason = "a FIFO with no reader (start its reader first)" if exc.errno == errno.ENXIO else exc.strerror
            raise click.BadParameter(f"cannot open {shown(path)}: {reason}", param_hint="--log-file") from None


def configure_logging(ctx: click.Context) -> None:
    """Attach this invocation's handlers to the `lvvit_opt` logger; removed on close."""
    st = state()
    logger = logging.getLogger(LIBRARY_LOGGER)
    for handler in st.handlers:
        logger.removeHandler(handler)
        handler.close()
    console = _StderrHandler(level=console_level(st.verbosity))
    console.setFormatter(_ConsoleFormatter(st.verbosity > 1))
    st.handlers = [console, _WarningCollector(st.warnings)]
    once = _OncePerCommand()
    for handler in st.handlers:
        handler.addFilter(once)
    from lvvit_opt.core.fileio import protect

    protect("--log-file", st.log_file)  # an input of every verb's output guard: no output replaces it
    if st.log_file:
        _refuse_unwritable_log(st.log_file)
        try:
            file_handler = logging.FileHandler(st.log_file, mode="a", encoding="utf-8")
        except OSError as exc:
            raise click.BadParameter(f"cannot open {shown(st.log_file)}: {exc.strerror}", param_hint="--log-file")
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(logging.Formatter(FILE_FORMAT))
        st.handlers.append(file_handler)
    for handler in st.handlers:
        logger.addHandler(handler)
    saved = (logger.level, logger.propagate)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    previous = progress.install(_tqdm_factory)

    def _close() -> None:
        for handler in st.handlers:
            logger.removeHandler(handler)
            handler.close()
        st.handlers = []
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        progress.install(previous)

    if not getattr(ctx, "_lvvit_close_registered", False):
        ctx.call_on_close(_close)
        ctx._lvvit_close_registered = True  # type: ignore[attr-defined]


def set_verbosity(verbosity: int) -> None:
    """Change the console level after the group parsed (a -q/-v given after the verb)."""
    st = state()
    st.verbosity = verbosity
    for handler in st.handlers:
        if isinstance(handler, _StderrHandler):
            handler.setLevel(console_level(verbosity))
            handler.setFormatter(_ConsoleFormatter(verbosity > 1))


# ---------------------------------------------------------------- progress display

def progress_enabled() -> bool:
    return not state().quiet and _isatty(sys.stderr)


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _TqdmBar:
    """A tqdm bar on stderr; with no total it shows the elapsed time, refreshed by a thread."""

    def __init__(self, desc: str, total: int | None, unit: str):
        from tqdm import tqdm

        self.bar = tqdm(desc=desc, total=total, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True,
                        bar_format=None if total is not None else "{desc}: {elapsed}")
        self._stop = threading.Event()
        self._ticker = None
        if total is None:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            self.bar.refresh()

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def set_postfix_str(self, text: str) -> None:
        self.bar.set_postfix_str(text, refresh=True)

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=1)
        self.bar.close()


def _tqdm_factory(desc: str, total: int | None, unit: str):
    if not progress_enabled():
        return progress._NullBar()
    return _TqdmBar(desc, total, unit)


# ---------------------------------------------------------------- the verb's plan

def start_plan(*, reads=None, writes=None, folders=None, owned=None, edits=None, compatible: tuple[str, ...] = ()):
    """Declare and start this verb's plan (lvvit_opt.core.plan): every file and folder it reads
    (`reads`), writes (`writes`), writes into (`folders`), owns alone (`owned`) and changes in place
    as its job (`edits`: whitelist patch's transpose.py), each a dict
    label -> path. --json and --log-file are added here. Checked before anything is written
    (exit 2 on a collision), owned folders locked until the command ends."""
    from lvvit_opt.core.plan import Plan

    st = state()
    plan = Plan.of(command_name() or "lvvit-opt", reads=reads, writes={**(writes or {}), "--json": json_file(st.json_target)},
                   folders=folders, owned=owned, edits=edits, compatible=compatible)
    if st.log_file:
        plan.read("--log-file", st.log_file)
    for label, path in _undeclared_file_options(plan).items():
        plan.read(label, path)
    plan.start()
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(plan.release)
    return plan


def _undeclared_file_options(plan) -> dict[str, str]:
    """Every file-valued option of the running command that the verb did not declare as an
    output is an input of its plan: a verb (or an option added later) cannot forget one, so
    `--suggest-keep-dtype F --keep-dtype F` is refused like `-o MODEL`. Folder-only options
    (--workdir, --cann-home) are left to the verb: outputs may live inside them."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return {}
    declared = {*plan.writes, *plan.folders, *plan.owned, *plan.edits, *plan.reads}
    found: dict[str, str] = {}
    for param in ctx.command.params:
        if not _file_valued(param):
            continue
        values = ctx.params.get(param.name)
        values = values if isinstance(values, (list, tuple)) else [values]
        for i, value in enumerate(values):
            if not isinstance(value, (str, os.PathLike)) or os.fspath(value) in ("", "-", ".") or str(value).isdigit():
                continue
            label = (param.opts[0] if getattr(param, "opts", None) and param.opts[0].startswith("-")
                     else param.name.upper())
            if label in declared:
                continue  # the verb declared this option itself (as an output, a folder or an input)
            found[label if len(values) == 1 else f"{label} {i + 1}"] = os.fspath(value)
    return found


def _file_valued(param: click.Parameter) -> bool:
    kind = param.type
    if isinstance(kind, click.Path):
        return bool(kind.file_okay)
    return type(kind).__name__ in ("ModelFile", "InputsParam")
