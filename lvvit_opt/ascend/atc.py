"""Build and run atc commands (ONNX -> .om) and read its failure logs.

`build_atc_command` mirrors the seed's command line token for token; `run_atc` runs a
command under the CANN environment, streams atc's output to a log file, reports elapsed
time through a callback, and judges success by `ATC run success` plus a fresh .om.
"""
from __future__ import annotations

import glob
import os
import re
import shlex
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from lvvit_opt.core.errors import ToolFailed, UserError
from lvvit_opt.core.progress import task
from lvvit_opt.core.tensor_spec import TensorSpec, input_specs
from lvvit_opt.core.cann import ToolNotFound, cann_environment, find_tool
from lvvit_opt.ascend.npu_smi import detect_soc_version

SUCCESS_MARKER = "ATC run success"
FAILURE_MARKER = "ATC run failed"
LOG_LEVELS = ("debug", "info", "warning", "error", "null")
# atc --precision_mode values for inference (CANN ATC/AOE docs, e.g. hiascend.com/document/detail/zh/
# canncommercial/601/devtools/auxiliarydevtool/aoepar_16_044.html; force_fp16 is the inference default);
# what each does to an op is in lvvit_opt.debug.precision, the CPU preview of them
PRECISION_MODES = ("force_fp16", "allow_fp32_to_fp16", "allow_mix_precision", "must_keep_origin_dtype")
# newer CANN (8.0 docs: .../CANNCommunityEdition/80RC2alpha002/devaids/auxiliarydevtool/aoepar_16_042.html)
# also takes these; atc passes them through, the CPU preview does not model them
ATC_PRECISION_MODES = PRECISION_MODES + ("force_fp32", "cube_fp16in_fp32out", "allow_mix_precision_fp16",
                                         "allow_mix_precision_bf16", "allow_fp32_to_bf16")
SET_ENV_HINT = "source /usr/local/Ascend/ascend-toolkit/set_env.sh"

ProgressCallback = Callable[[float, str], None]


OnnxInput = TensorSpec  # name, shape (ints; a symbol name or None for dynamic dims), dtype


@dataclass(frozen=True)
class AtcError:
    """One coded line of atc output, e.g. `EZ3003: No supported Ops kernel ... [Transpose_12], optype [Transpose]`.

    `details` are the indented lines that follow it (Possible Cause, Solution, TraceBack frames).
    """

    code: str
    message: str
    op_name: str | None = None
    op_type: str | None = None
    details: tuple = field(default=(), compare=False)

    @property
    def is_warning(self) -> bool:
        return self.code.startswith("W")

    def format(self) -> str:
        where = []
        if self.op_name:
            where.append(f"op {self.op_name}")
        if self.op_type:
            where.append(f"type {self.op_type}")
        message = self.message
        if message.rstrip("!. ").lower() == "inner error" and self.details:
            message += f" ({self.details[-1]})"  # E19999's first line says nothing; the cause comes last
        return f"{self.code}: {message}" + (f"  [{', '.join(where)}]" if where else "")


@dataclass
class AtcResult:
    command: list[str]
    log_path: Path
    om_path: Path | None
    returncode: int
    elapsed_s: float
    success_line: bool
    errors: list[AtcError] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)  # last lines of output, for failures without codes
    warnings: list[AtcError] = field(default_factory=list)  # W-coded lines (printed after success too)

    @property
    def succeeded(self) -> bool:
        return self.returncode == 0 and self.success_line and self.om_path is not None

    def failure_message(self) -> str:
        """Multi-line explanation: exit code, why, the coded errors with ops, the log path."""
        reasons = []
        if self.returncode != 0:
            reasons.append(f"exit {self.returncode}")
        if not self.success_line:
            reasons.append(f"no '{SUCCESS_MARKER}' line")
        elif self.om_path is None:
            reasons.append("no .om was written")
        lines = [f"atc failed ({', '.join(reasons)}) after {self.elapsed_s:.1f}s"]
        lines += [f"  {e.format()}" for e in self.errors]
        if not self.errors and self.tail:
            lines.append("  last output lines:")
            lines += [f"    {t}" for t in self.tail[-5:]]
        lines.append(f"  full log: {self.log_path}")
        return "\n".join(lines)


def onnx_inputs(model_path: str | os.PathLike) -> list[TensorSpec]:
    """The real graph inputs (initializers excluded); weights are not loaded."""
    return input_specs(model_path)


def resolve_input_shapes(inputs: Sequence[OnnxInput], batch_size: int | None = None) -> list[tuple[str, tuple[int, ...]]]:
    """Static shapes for atc: a dynamic batch dim takes `batch_size`; a static one must agree with it."""
    resolved = []
    for item in inputs:
        if not item.shape:
            raise UserError(f"input {item.name!r} has no shape in the model; cannot form --input_shape")
        dims = list(item.shape)
        if isinstance(dims[0], int):
            if batch_size is not None and dims[0] != batch_size:
                raise UserError(f"input {item.name!r} has a static batch of {dims[0]}; --batch-size {batch_size} "
                                "does not match (export the model at that batch size)")
        elif batch_size is None:
            raise UserError(f"input {item.name!r} has a dynamic batch dimension ({dims[0]}); pass --batch-size N")
        else:
            dims[0] = int(batch_size)
        dynamic = [i for i, d in enumerate(dims) if not isinstance(d, int)]
        if dynamic:
            raise UserError(f"input {item.name!r} has dynamic dims at {dynamic} ({item.shape}); "
                            "only the batch dimension may be dynamic")
        resolved.append((item.name, tuple(dims)))
    return resolved


# atc --dynamic_batch_size: 2..100 gears (the (1,100] of the ATC docs), each recommended in [1, 2048]
MIN_GEARS, MAX_GEARS, MAX_GEAR = 2, 100, 2048
DYNAMIC_BATCH_FIX = "re-export it with `lvvit-opt export --dynamic-batch`"


def parse_batch_gears(text: str | Sequence[int]) -> tuple[int, ...]:
    """'1,4,8,16' -> (1, 4, 8, 16): 2..100 distinct gears in [1, 2048], kept in increasing order."""
    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else [str(p) for p in text]
    if not all(p.isdigit() for p in parts):
        raise UserError(f"--batch-gears {text!r}: comma-separated positive integers, e.g. 1,4,8,16")
    gears = [int(p) for p in parts]
    if len(set(gears)) != len(gears):
        raise UserError(f"--batch-gears {text!r}: a gear is repeated")
    if not MIN_GEARS <= len(gears) <= MAX_GEARS:
        raise UserError(f"--batch-gears {text!r}: atc takes {MIN_GEARS} to {MAX_GEARS} gears, got {len(gears)}")
    if not all(1 <= g <= MAX_GEAR for g in gears):
        raise UserError(f"--batch-gears {text!r}: each gear must be in 1..{MAX_GEAR}")
    return tuple(sorted(gears))


def gear_input_shapes(inputs: Sequence[OnnxInput], gears: Sequence[int]) -> list[tuple[str, tuple[int, ...]]]:
    """--input_shape for --dynamic_batch_size: batch -1, every other dim static; a static-batch ONNX is refused."""
    resolved = []
    for item in inputs:
        if not item.shape:
            raise UserError(f"input {item.name!r} has no shape in the model; cannot form --input_shape")
        dims = list(item.shape)
        if isinstance(dims[0], int):
            raise UserError(f"--batch-gears: input {item.name!r} has a static batch of {dims[0]}; batch gears need a "
                            f"dynamic batch axis: {DYNAMIC_BATCH_FIX}")
        dynamic = [i for i, d in enumerate(dims[1:], 1) if not isinstance(d, int)]
        if dynamic:
            raise UserError(f"input {item.name!r} has dynamic dims at {dynamic} ({item.shape}); "
                            "only the batch dimension may be dynamic")
        resolved.append((item.name, (-1, *dims[1:])))
    return resolved


def format_input_shape(shapes: Sequence[tuple[str, Sequence[int]]]) -> str:
    """[('image', (16,3,224,224))] -> 'image:16,3,224,224' (several inputs joined by ';')."""
    return ";".join(f"{name}:{','.join(str(d) for d in dims)}" for name, dims in shapes)


def default_output_prefix(model_path: str | os.PathLike) -> str:
    """The model path as given, without `.onnx` (./model/x.onnx -> ./model/x)."""
    text = os.fspath(model_path)
    return text[: -len(".onnx")] if text.lower().endswith(".onnx") else text


def build_atc_command(
    model_path: str | os.PathLike,
    output: str | os.PathLike | None = None,
    soc_version: str = "Ascend310",
    batch_size: int | None = None,
    log: str | None = None,
    precision_mode: str | None = None,
    keep_dtype: str | os.PathLike | None = None,
    fusion_switch: str | os.PathLike | None = None,
    extra_args: str | Sequence[str] | None = None,
    input_shapes: Sequence[tuple[str, Sequence[int]]] | None = None,
    input_format: str = "NCHW",
    insert_op_conf: str | os.PathLike | None = None,
    batch_gears: Sequence[int] | None = None,
) -> list[str]:
    """The atc argv, seed order: framework, model, output, input_format, input_shape, log, soc_version, then extras.

    `input_shapes` defaults to the model's own inputs (see resolve_input_shapes; with `batch_gears`, batch -1
    and `--dynamic_batch_size`). `insert_op_conf`: a static AIPP file (lvvit_opt.ascend.aipp); with ONNX the
    input format and shape stay the model's NCHW ones (public atc lines, tests/fixtures/ascend/SOURCES.md).
    `soc_version` must be concrete here (resolve "auto" with detect_soc_version first).
    """
    check_soc_name(str(soc_version))
    if log is not None and log not in LOG_LEVELS:
        raise UserError(f"--log {log!r}: expected one of {', '.join(LOG_LEVELS)}")
    for flag, path in (("--keep-dtype", keep_dtype), ("--fusion-switch", fusion_switch)):
        if path is not None and not Path(path).is_file():
            raise UserError(f"{flag} {path}: no such file")
    if batch_gears is not None:
        gears = parse_batch_gears(batch_gears)
        if input_shapes is None:
            input_shapes = gear_input_shapes(onnx_inputs(model_path), gears)
    if input_shapes is None:
        input_shapes = resolve_input_shapes(onnx_inputs(model_path), batch_size)
    model_text = os.fspath(model_path)
    command = [
        "atc", "--framework=5", f"--model={model_text}",
        f"--output={os.fspath(output) if output is not None else default_output_prefix(model_text)}",
        f"--input_format={input_format}", f"--input_shape={format_input_shape(input_shapes)}",
    ]
    if log is not None:
        command.append(f"--log={log}")
    command.append(f"--soc_version={soc_version}")
    if batch_gears is not None:
        command.append(f"--dynamic_batch_size={','.join(str(g) for g in gears)}")
    if insert_op_conf is not None:
        command.append(f"--insert_op_conf={os.fspath(insert_op_conf)}")
    if precision_mode:
        command.append(f"--precision_mode={precision_mode}")
    if keep_dtype is not None:
        command.append(f"--keep_dtype={os.fspath(keep_dtype)}")
    if fusion_switch is not None:
        command.append(f"--fusion_switch_file={os.fspath(fusion_switch)}")
    command += split_extra_args(extra_args)
    return command


def keep_dtype_lines(op_types: Iterable[str] = (), node_names: Iterable[str] = ()) -> str:
    """Contents of a --keep_dtype file: node names as-is, op types as `OpType::Softmax`; each once."""
    lines = list(dict.fromkeys([str(n) for n in node_names] + [f"OpType::{t}" for t in op_types]))
    return "".join(line + "\n" for line in lines)


def write_keep_dtype_file(path: str | os.PathLike, op_types: Iterable[str] = (),
                          node_names: Iterable[str] = ()) -> Path:
    """Write (atomically) a --keep_dtype file keeping these ops in fp32."""
    from lvvit_opt.core.fileio import write_text_atomic

    text = keep_dtype_lines(op_types, node_names)
    if not text:
        raise UserError("--keep-dtype-op: give at least one op type")
    write_text_atomic(path, text)
    return Path(path)


def option_value(command: Sequence[str], flag: str) -> str | None:
    """Value of `--flag=value` in an atc argv (last one wins)."""
    prefix = f"--{flag}="
    values = [arg[len(prefix):] for arg in command if arg.startswith(prefix)]
    return values[-1] if values else None


def display_command(command: Sequence[str]) -> str:
    """Shell-ready text of the command."""
    return shlex.join(command)


def missing_atc_message(command: Sequence[str]) -> str:
    return ("atc not found (no CANN toolkit on this machine). On an Ascend host with CANN installed, run:\n"
            f"  {SET_ENV_HINT}\n  {display_command(command)}")


def locate_atc(command: Sequence[str], env: Mapping[str, str] | None = None) -> Path:
    """The atc executable for command[0] on env's PATH; ToolNotFound (printing the command) if absent."""
    executable = find_tool(command[0], env) if os.sep not in command[0] else Path(command[0])
    if executable is None or not executable.is_file():
        raise ToolNotFound(missing_atc_message(command))
    return executable


def run_atc(command: Sequence[str], *, log_path: str | os.PathLike | None = None,
            env: Mapping[str, str] | None = None, progress: ProgressCallback | None = None,
            check: bool = True, cwd: str | os.PathLike | None = None) -> AtcResult:
    """Run an atc argv (argv[0] 'atc' is looked up on env's PATH), stream its output to `log_path`.

    progress(elapsed_s, last_line) is called about once a second. With check=True a
    failure raises ToolFailed carrying AtcResult.failure_message(); atc missing raises ToolNotFound.
    """
    command = list(command)
    env = dict(os.environ if env is None else env)
    executable = locate_atc(command, env)
    prefix = option_value(command, "output") or "atc_output"
    log_path = Path(log_path if log_path is not None else prefix + ".atc.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    set_aside = _set_aside_old_oms(prefix, cwd)
    succeeded = False
    try:
        with task("atc") as bar:
            def tick(elapsed_s: float, last_line: str) -> None:
                bar.set_postfix_str(last_line[:60])
                if progress:
                    progress(elapsed_s, last_line)

            returncode, tail = _stream_to_log([str(executable)] + command[1:], log_path, env, tick, cwd)
        elapsed = time.time() - start
        text = log_path.read_text(encoding="utf-8", errors="replace")
        coded = parse_atc_messages(text)
        result = AtcResult(command=command, log_path=log_path, om_path=find_om(prefix, since=start, cwd=cwd),
                           returncode=returncode, elapsed_s=elapsed, success_line=SUCCESS_MARKER in text,
                           errors=[m for m in coded if not m.is_warning], tail=list(tail),
                           warnings=[m for m in coded if m.is_warning])
        succeeded = result.succeeded
    finally:
        _settle_oms(prefix, cwd, set_aside, succeeded)
    if check and not result.succeeded:
        raise ToolFailed(result.failure_message())
    return result


def _om_candidates(prefix: str, cwd) -> list[Path]:
    """PREFIX.om and every PREFIX_linux_<arch>.om (the prefix taken literally, not as a glob)."""
    base = Path(cwd) / prefix if cwd is not None and not os.path.isabs(prefix) else Path(prefix)
    return [base.with_name(base.name + ".om")] + sorted(base.parent.glob(glob.escape(base.name) + "_linux_*.om"))


def _set_aside_old_oms(prefix: str, cwd) -> list[tuple[Path, Path]]:
    """Move existing .om files of this prefix to temporary names, so a failed or interrupted atc
    can neither leave a half-written .om nor destroy the previous good one."""
    from lvvit_opt.core.fileio import temp_path_for

    moved = []
    for om in _om_candidates(prefix, cwd):
        if om.is_file():
            aside = temp_path_for(om, ".om")
            os.replace(om, aside)
            moved.append((om, aside))
    return moved


def _settle_oms(prefix: str, cwd, set_aside: list[tuple[Path, Path]], succeeded: bool) -> None:
    """After atc: on failure remove what it wrote and put the old files back; on success drop
    the old files it replaced and put back the ones it did not write."""
    if not succeeded:
        for om in _om_candidates(prefix, cwd):  # the old ones are aside: whatever is here, atc wrote
            if om.is_file():
                om.unlink()
    for original, aside in set_aside:
        if succeeded and original.exists():
            aside.unlink(missing_ok=True)
        else:
            os.replace(aside, original)


def _stream_to_log(argv: list[str], log_path: Path, env: dict, progress: ProgressCallback | None,
                   cwd) -> tuple[int, deque]:
    """Run argv with stdout+stderr appended line by line to log_path; returns (exit code, last lines)."""
    tail: deque = deque(maxlen=20)
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(f"# {display_command(argv)}\n")
        log.flush()
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                    text=True, errors="replace", bufsize=1)
        except OSError as exc:
            raise ToolFailed(f"cannot start {argv[0]}: {exc}") from None
        reader = threading.Thread(target=_copy_lines, args=(proc.stdout, log, tail), daemon=True)
        reader.start()
        start = time.time()
        while True:
            try:
                proc.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                if progress:
                    progress(time.time() - start, tail[-1] if tail else "")
            except KeyboardInterrupt:
                proc.terminate()
                proc.wait()
                raise
        reader.join()
        if progress:
            progress(time.time() - start, tail[-1] if tail else "")
    return proc.returncode, tail


def _copy_lines(stream, log, tail: deque) -> None:
    for line in stream:
        log.write(line)
        log.flush()
        tail.append(line.rstrip("\n"))
    stream.close()


def find_om(prefix: str, since: float | None = None, cwd: str | os.PathLike | None = None) -> Path | None:
    """The .om atc wrote for --output=prefix: `prefix.om`, or `prefix_linux_<arch>.om`.

    GE appends `_<os>_<arch>` when the model carries host-side kernels (seen for some models on CANN 7/8,
    not for others in the same install), so both names are looked for. With `since`, a file older than the
    run (a stale one from before) does not count; the newest matching file wins.
    """
    fresh = [c for c in _om_candidates(prefix, cwd)
             if c.is_file() and (since is None or c.stat().st_mtime >= since - 1.0)]
    return max(fresh, key=lambda c: c.stat().st_mtime) if fresh else None


_CODE = r"[EW][A-Z]?\d{4,5}"
_CODE_START = re.compile(rf"^\s*({_CODE})\s*:\s*(.*)$")
_CODE_SPLIT = re.compile(rf"\s+(?={_CODE}\s*:\s)")  # several coded messages pasted on one line
_OP_NAME = re.compile(r"(?:\b[Oo]p\s*\[|\bfor\s*\[|\bnode\s*\[)([^\],\[]+)")
_OP_TYPE = re.compile(r"(?:[Oo]p\s?type|type)\s*:?\s*\[([^\]\[]+)\]")
_PID_STAMP = re.compile(r"^\[PID:\s*\d+\]\s*(\d{4}-\d{2}-\d{2}-[\d:.]+\s*)?")


def parse_atc_messages(text: str) -> list[AtcError]:
    """Coded lines of atc output (`E10001: ...`, `EZ3003: ...`, `W11001: ...`) in order, deduplicated.

    A `[PID: n] date` stamp (newer CANN) is dropped from the message; indented lines after a coded line
    become its details; op name/type are read from the message (`Op [X]`, `optype [Y]`).
    """
    messages: list[AtcError] = []
    seen: set = set()
    current: list | None = None
    current_code = ""
    for line in text.splitlines():
        continues = line[:1].isspace() or line.startswith(current_code + " ")  # "E19999 The opp version ..."
        if current is not None and continues and line.strip() and not _CODE_START.match(line):
            current.append(line.strip())
            continue
        current = None
        for piece in _CODE_SPLIT.split(line.strip()):
            match = _CODE_START.match(piece)
            if not match:
                continue
            code, message = match.group(1), _PID_STAMP.sub("", match.group(2).strip())
            if (code, message) in seen:
                continue
            seen.add((code, message))
            name, op_type = _OP_NAME.search(message), _OP_TYPE.search(message)
            current, current_code = [], code
            messages.append(AtcError(code, message, name.group(1).strip() if name else None,
                                     op_type.group(1).strip() if op_type else None, current))
    return [AtcError(m.code, m.message, m.op_name, m.op_type, tuple(m.details)) for m in messages]


def parse_atc_errors(text: str) -> list[AtcError]:
    """The E-coded messages of atc output (see parse_atc_messages)."""
    return [m for m in parse_atc_messages(text) if not m.is_warning]


def parse_atc_warnings(text: str) -> list[AtcError]:
    """The W-coded messages (W11001: op misses the high-priority kernel library ...): atc still succeeded."""
    return [m for m in parse_atc_messages(text) if m.is_warning]


def resolve_soc_version(soc_version: str, env: Mapping[str, str] | None = None) -> str:
    """'auto' -> detect_soc_version(); anything else unchanged."""
    return detect_soc_version(env) if soc_version == "auto" else soc_version


# atc's --soc_version values: Ascend310, Ascend310P3, Ascend910B3, Ascend910_9391, ... (CANN's
# platform_config/*.ini names). Only the form is checked: new chips come with every CANN.
SOC_NAME = re.compile(r"^Ascend[0-9][0-9A-Za-z_-]*$")  # '-': Ascend910B4-1 exists


def check_soc_name(soc_version: str) -> str:
    """UserError for a name atc cannot know (so `run` finds it before writing anything)."""
    if not SOC_NAME.match(soc_version):
        raise UserError(f"--soc-version {soc_version!r}: expected a name like Ascend310, Ascend310P3, Ascend910B3")
    return soc_version


def compile_onnx(model_path: str | os.PathLike, *, soc_version: str = "auto", cann_home: str | None = None,
                 log_file: str | os.PathLike | None = None, progress: ProgressCallback | None = None,
                 cwd: str | os.PathLike | None = None, **command_options) -> AtcResult:
    """One call for pipelines: CANN env, soc detection, command, run. Raises on any failure.

    command_options go to build_atc_command (output, batch_size, log, precision_mode, ...). `cwd` is where
    atc runs: it leaves `fusion_result.json` and `kernel_meta/` there (pass absolute model/output paths).
    """
    env = cann_environment(cann_home)
    soc = resolve_soc_version(soc_version, env)
    command = build_atc_command(model_path, soc_version=soc, **command_options)
    return run_atc(command, log_path=log_file, env=env, progress=progress, cwd=cwd)


def split_extra_args(extra_args: str | Sequence[str] | None) -> list[str]:
    if not extra_args:
        return []
    if isinstance(extra_args, str):
        try:
            return shlex.split(extra_args)
        except ValueError as exc:
            raise UserError(f"--extra-args: {exc}") from None
    return [str(a) for a in extra_args]
