"""`lvvit-opt run`: checkpoint all the way to a before/after report, resumably.

Stages, per batch size: export (+onnxsim) -> apply passes (validated on onnxruntime);
then whitelist shapes (and patch with --patch-whitelist when CANN is found) -> atc when
found, else a ready-to-run atc_commands.sh -> bench before/after on the best backend
available -> report.md / report.json / fps.png.

Every stage records a key (its options plus the size and mtime of its input files) in
`<out>/.stages.json`; a re-run skips a stage whose key is unchanged and whose outputs
exist. Every file is written atomically, so an interrupted run leaves no half-written file.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from lvvit_opt import __version__
from lvvit_opt.core.errors import UserError, ValidationFailed, shown
from lvvit_opt.core.fileio import write_text_atomic
from lvvit_opt.core.logs import LogCallback, reporter

logger = logging.getLogger(__name__)

DEFAULT_PASSES = ("ascend310",)  # the preset (passes/presets.py), expanded by the plan check
STATE_FILE = ".stages.json"
RUN_FILES = ("report.json", "report.md", "fps.png", "atc_commands.sh")  # (the state and lock: fileio.OWNED_NAMES)


def run_files(out: str | os.PathLike) -> dict[str, Path]:
    """The files a run writes under --out with fixed names (label -> path), for the output guard:
    `--json OUT/report.json` would be overwritten by the run's own report."""
    return {f"the run's {name}": Path(out) / name for name in RUN_FILES}


@dataclass
class RunOptions:
    out: str = "runs/default"
    checkpoint: str | None = None
    model: str = "lvvit_s"
    batch_sizes: tuple[int, ...] = (1, 16)
    passes: tuple[str, ...] = DEFAULT_PASSES
    pass_options: dict = field(default_factory=dict)  # -O: pass -> {option: value}
    batch_size: int | None = None       # --batch-size: fix_shapes' batch (the export batch too)
    input_shapes: tuple[str, ...] = ()  # --input-shape NAME:D,... for fix_shapes
    seed: int = 0
    ema: bool = False
    strict: bool = True
    cann_home: str | None = None
    soc_version: str = "auto"
    patch_whitelist: bool = False
    whitelist_file: str | None = None
    bench_duration: float = 10.0
    bench_rounds: int = 5
    rebench: bool = False  # measure again even when the bench stage's inputs are unchanged (--rebench)
    threads: int | None = None
    tolerance: Any = None  # golden.Tolerance for the rewritten-graph validation (None: the tight ONNX one)
    aipp: bool = False  # the deployment .om gets static AIPP (aipp.cfg from the model's preprocessing)
    batch_gears: tuple[int, ...] | None = None  # the deployment .om holds these batch gears
    plan_checked: bool = False  # set by check_run_plan


@dataclass
class RunSummary:
    out: Path
    random_weights: bool
    exports: dict[int, dict] = field(default_factory=dict)
    applies: dict[int, dict] = field(default_factory=dict)
    whitelist: dict = field(default_factory=dict)
    atc: dict = field(default_factory=dict)
    bench: dict = field(default_factory=dict)
    deploy: dict = field(default_factory=dict)  # --aipp / --batch-gears: the one deployment .om
    stages: list[dict] = field(default_factory=list)  # name, status (ran/skipped), seconds

    def to_dict(self) -> dict[str, Any]:
        return {"version": __version__, "out": str(self.out), "random_weights": self.random_weights,
                "exports": {str(k): v for k, v in self.exports.items()},
                "applies": {str(k): v for k, v in self.applies.items()},
                "whitelist": self.whitelist, "atc": self.atc, "bench": self.bench, "deploy": self.deploy,
                "stages": self.stages}


class StageCache:
    """Remembers which stages finished with which inputs, in <out>/.stages.json."""

    def __init__(self, out: Path):
        from lvvit_opt.core.readers import Fields, Is, MapOf, read_state

        self.path = out / STATE_FILE
        self.state = {}
        if os.path.lexists(self.path):  # a FIFO or device there is refused unopened, a wrong shape in one line
            self.state = read_state(self.path, "--out", MapOf(Fields({"key": Is("str"), "result": Is("dict")})),
                                    f"remove it (every stage then runs again) or give a fresh --out "
                                    f"(not {shown(out)})")

    @staticmethod
    def key(params: dict, inputs: list[str | os.PathLike]) -> str:
        stats = []
        for p in inputs:
            st = os.stat(p)
            stats.append([os.fspath(p), st.st_size, st.st_mtime_ns])
        blob = json.dumps({"params": params, "inputs": stats, "version": __version__}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def lookup(self, name: str, key: str, outputs: list[Path] | Callable[[dict], list]) -> dict | None:
        """The stored result if the key matches and the outputs exist; `outputs` may derive them from
        the stored result (e.g. the .om path atc reported)."""
        entry = self.state.get(name)
        if not entry or entry["key"] != key:
            return None
        result = entry["result"]
        try:
            paths = outputs(result) if callable(outputs) else outputs
        except (KeyError, TypeError):
            return None
        return result if all(Path(o).exists() for o in paths) else None

    def store(self, name: str, key: str, result: dict) -> None:
        self.state[name] = {"key": key, "result": result, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        write_text_atomic(self.path, json.dumps(self.state, indent=1, default=str) + "\n")


class _Stages:
    """Runs named stages through the cache and logs progress."""

    def __init__(self, out: Path, summary: RunSummary, log: Callable[[str], None]):
        self.cache, self.summary, self.log = StageCache(out), summary, log

    def run(self, name: str, params: dict, inputs: list, outputs: list[Path] | Callable[[dict], list],
            fn: Callable[[], dict], force: bool = False) -> dict:
        key = self.cache.key(params, inputs)
        cached = None if force else self.cache.lookup(name, key, outputs)
        if cached is not None:
            self.log(f"[{name}] unchanged, skipped")
            self.summary.stages.append({"name": name, "status": "skipped", "seconds": 0.0})
            return cached
        self.log(f"[{name}] running")
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        self.cache.store(name, key, result)
        self.summary.stages.append({"name": name, "status": "ran", "seconds": round(seconds, 2)})
        self.log(f"[{name}] done in {seconds:.1f} s")
        return result


def run(options: RunOptions, log: LogCallback = None) -> RunSummary:
    """The whole pipeline; returns what it did (also written to report.json / report.md).
    Messages go to `logging` (and to `log` when given)."""
    log = reporter(logger, log)
    out = Path(options.out)
    options = check_run_plan(options)  # the whole plan, before anything is created
    options = _resolve_soc_early(options)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create it ({exc.strerror})") from None
    with out_folder_lock(out):
        return _run_locked(options, out, log)


def check_run_plan(options: RunOptions) -> RunOptions:
    """The whole plan checked before anything is created (the CLI calls it before it locks --out):
    model name, passes and their options (presets expanded), checkpoint (loaded and matched), SoC
    name, memory, --whitelist-file. Returns the options with the passes resolved; run() does not
    check them again."""
    if options.plan_checked:
        return options
    options = _resolve_passes(options)
    _check_options(options)
    from dataclasses import replace

    return replace(options, plan_checked=True)


@contextlib.contextmanager
def out_folder_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on the --out folder for the whole run. Two runs writing the same
    stages and reports at once would mix their files (one's .stages.json naming the other's
    models), so the second is refused at once. The folder itself is flock'd (no lock file
    to leave behind or to race on); the lock dies with its process. Where the verb's plan
    (lvvit_opt.core.plan) already locks --out, that lock is the one."""
    import fcntl

    from lvvit_opt.core.plan import holds

    if holds(out):
        yield
        return
    try:
        fd = os.open(out, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        raise UserError(f"--out {shown(out)}: cannot open it ({exc.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"--out {shown(out)}: another `lvvit-opt run` is writing there now; "
                            f"wait for it to finish or give another --out") from None
        yield
    finally:
        os.close(fd)


def _run_locked(options: RunOptions, out: Path, log) -> RunSummary:
    summary = RunSummary(out=out, random_weights=options.checkpoint is None)
    stages = _Stages(out, summary, log)  # a stage cache of another shape: refused before any word or stage
    if summary.random_weights:
        from lvvit_opt.export import random_init_warning

        log.warning(random_init_warning(options.seed))  # once: the exports' repeats are dropped (cli.output)
    models = {}
    for batch in options.batch_sizes:
        original, optimized = _export_and_apply(options, batch, stages, summary, log)
        models[batch] = (original, optimized)
    summary.whitelist = _whitelist_stage(options, [opt for _, opt in models.values()], log)
    summary.atc = _atc_stage(options, models, summary.whitelist["shapes"], stages, out, log)
    summary.bench = _bench_stage(options, models, summary.atc, stages, out, log)
    if options.aipp or options.batch_gears:
        from lvvit_opt.pipeline.deploy import deploy_stage

        summary.deploy = deploy_stage(options, models, stages, out, log, summary.atc.get("compiled", False))
    from lvvit_opt.measure.report import write_reports

    write_reports(summary, options)
    log(f"report: {out / 'report.md'}")
    blocked = (summary.whitelist.get("patched") or {}).get("blocked") or []
    if blocked:  # the same exit status as `whitelist patch` for the same file and shapes
        raise ValidationFailed(f"{len(blocked)} black-listed shape(s) stay on TransposeD: "
                               + " ".join(",".join(map(str, b["shape"])) for b in blocked)
                               + f" (the rest of the run finished; see {out / 'report.md'})")
    return summary


def _check_options(options: RunOptions) -> None:
    from lvvit_opt.models.zoo import check_model_name

    check_model_name(options.model)  # LV-ViT or any timm model; close matches suggested
    if options.checkpoint is not None:  # a FIFO or device: refused here, unopened, before --out is created
        from lvvit_opt.core.readers import check_regular

        if not os.path.exists(options.checkpoint):
            raise UserError(f"{shown(options.checkpoint)}: no such checkpoint file")
        check_regular(options.checkpoint, "--checkpoint")
    _check_plan(options)


def _resolve_passes(options: RunOptions) -> RunOptions:
    """The pass plan checked as apply checks it (presets expanded, shortcuts mapped onto options, every
    option known and typed), plus what only run knows: each model is exported at a static batch from
    --batch-sizes, so a fix_shapes batch or input shape must be that batch. Any defect: UserError."""
    from dataclasses import replace

    from lvvit_opt.export import INPUT_NAME
    from lvvit_opt.passes import check_pass_plan, get_pass

    shapes = ";".join(options.input_shapes) or None
    names, pass_options = check_pass_plan(list(options.passes), options.pass_options,
                                          {"batch_size": options.batch_size, "input_shapes": shapes},
                                          optional={"batch_size"})
    if "fix_shapes" in names:
        fixed = get_pass("fix_shapes").parse_options(pass_options.get("fix_shapes", {}))
        sizes = ",".join(map(str, options.batch_sizes))
        if fixed.batch_size is not None and set(options.batch_sizes) != {fixed.batch_size}:
            raise UserError(f"fix_shapes batch {fixed.batch_size} contradicts --batch-sizes {sizes}: run exports "
                            f"each model at its own static batch (give --batch-size {fixed.batch_size} alone)")
        for name, dims in fixed.input_shapes.items():
            if name != INPUT_NAME:
                raise UserError(f"--input-shape {name}: the exported model's input is {INPUT_NAME!r}")
            if len(dims) != 4 or set(options.batch_sizes) != {dims[0]}:
                raise UserError(f"--input-shape {name}:{','.join(map(str, dims))}: expected 4 dims starting with "
                                f"the one exported batch (--batch-sizes {sizes})")
    return replace(options, passes=tuple(names), pass_options=pass_options)


def _resolve_soc_early(options: RunOptions) -> RunOptions:
    """--soc-version auto with atc present: ask npu-smi now, so an ambiguous SoC stops the run before the
    exports rather than after them. Without atc the commands file is written instead (see _atc_stage)."""
    if options.soc_version != "auto":
        return options
    from dataclasses import replace

    from lvvit_opt.core.cann import cann_environment, find_tool
    from lvvit_opt.ascend.npu_smi import detect_soc_version

    env = cann_environment(options.cann_home)
    if find_tool("atc", env) is None:
        return options
    return replace(options, soc_version=detect_soc_version(env))


def _check_plan(options: RunOptions) -> None:
    """Everything else a later stage would find out, found before the first file is written."""
    from lvvit_opt.ascend.atc import check_soc_name
    from lvvit_opt.core.fileio import guard_outputs

    guard_outputs({}, {"--checkpoint": options.checkpoint, "--whitelist-file": options.whitelist_file},
                  output_dirs={"--out": options.out})
    if options.soc_version != "auto":
        check_soc_name(options.soc_version)
    if options.batch_gears:
        from lvvit_opt.ascend.atc import parse_batch_gears

        parse_batch_gears(list(options.batch_gears))
    if options.whitelist_file is not None and not options.patch_whitelist:
        raise UserError("--whitelist-file is only used with --patch-whitelist; add --patch-whitelist "
                        "(or use `lvvit-opt whitelist check --file ...` to only check it)")
    if options.patch_whitelist and options.whitelist_file is not None:
        from lvvit_opt.whitelist import locate_transpose_py, read_transpose_source

        read_transpose_source(locate_transpose_py(options.whitelist_file))  # missing or unparsable -> UserError
    from lvvit_opt.export import export_memory_estimate
    from lvvit_opt.core.resources import require_memory

    biggest = max(options.batch_sizes)
    require_memory(export_memory_estimate(options.model, biggest, 224), f"exporting {options.model} at batch {biggest}")
    if options.checkpoint is not None:
        from lvvit_opt.models.model import create_model

        # loads and matches the keys now, not after out/ and the first exports exist
        create_model(options.model, options.checkpoint, ema=options.ema, strict=options.strict,
                     log=lambda _m: None)


def _export_and_apply(options: RunOptions, batch: int, stages: _Stages, summary: RunSummary, log) -> tuple[Path, Path]:
    from lvvit_opt.export import export_onnx
    from lvvit_opt.passes import apply_file

    out = Path(options.out)
    original = out / f"{options.model}_bs{batch}.onnx"
    optimized = out / f"{options.model}_bs{batch}_opt.onnx"
    checkpoint_inputs = [options.checkpoint] if options.checkpoint else []
    export_params = {"model": options.model, "batch": batch, "seed": options.seed, "ema": options.ema,
                     "strict": options.strict, "checkpoint": options.checkpoint}
    summary.exports[batch] = stages.run(
        f"export bs{batch}", export_params, checkpoint_inputs, [original],
        lambda: export_onnx(original, model=options.model, checkpoint=options.checkpoint, batch_size=batch,
                            seed=options.seed, ema=options.ema, strict=options.strict,
                            log=log.child("  ")).to_dict())
    apply_params = {"passes": list(options.passes), "options": options.pass_options}
    if options.tolerance is not None:  # a changed tolerance re-runs the validation
        apply_params["tolerance"] = asdict(options.tolerance)
    summary.applies[batch] = stages.run(
        f"apply bs{batch}", apply_params, [original], [optimized],
        lambda: apply_file(original, optimized, list(options.passes), options=options.pass_options,
                           tolerance=options.tolerance).to_dict())
    validation = summary.applies[batch].get("validation") or {}
    log(f"  bs{batch}: rewritten graph validation {'PASS' if validation.get('passed') else 'FAIL'}")
    return original, optimized


def _whitelist_stage(options: RunOptions, optimized: list[Path], log) -> dict:
    """The one list (passes.transposes): every Transpose of the rewritten graphs, marked as added
    by softmax_transpose or in the model before; every static input shape is to be whitelisted
    (and patched with --patch-whitelist)."""
    from lvvit_opt.whitelist import format_shapes, locate_transpose_py, patch_file, static_shapes, transpose_shapes

    uses, transposes = [], {}
    for path in optimized:
        found = transpose_shapes(str(path))
        uses += found
        transposes[path.name] = [u.to_dict() for u in found]
    shapes = [list(s) for s in static_shapes(uses)]
    created = [list(s) for s in static_shapes([u for u in uses if u.created])]
    result: dict[str, Any] = {"shapes": shapes, "created": created, "transposes": transposes, "patched": None}
    log(f"[whitelist] Transpose input shapes to whitelist: {format_shapes(shapes)} "
        f"({len(created)} added by softmax_transpose)")
    if not options.patch_whitelist:
        result["note"] = "not patched (pass --patch-whitelist to patch CANN's transpose.py)"
        return result
    environ = dict(os.environ)
    if options.cann_home:
        environ["ASCEND_TOOLKIT_HOME"] = options.cann_home
    try:
        path = locate_transpose_py(options.whitelist_file, environ)
    except UserError as exc:
        result["note"] = f"not patched: {exc}"
        log(f"[whitelist] {result['note']}")
        return result
    patched = patch_file(path, shapes)
    result["patched"] = patched.to_dict()
    log(f"[whitelist] {patched.message}")
    return result


def _atc_stage(options: RunOptions, models: dict[int, tuple[Path, Path]], whitelist_shapes: list, stages: _Stages,
               out: Path, log) -> dict:
    from lvvit_opt.ascend.atc import build_atc_command, compile_onnx
    from lvvit_opt.core.cann import cann_environment, find_tool

    env = cann_environment(options.cann_home)
    onnx_files = [p for pair in models.values() for p in pair]
    shapes = [tuple(s) for s in whitelist_shapes]
    if find_tool("atc", env) is None:
        from lvvit_opt.core.shell import ShellScript, quote_argv

        soc, soc_note = _script_soc_version(options.soc_version, env)
        script = ShellScript(out / "atc_commands.sh",
                             description="atc was not found here. On an Ascend host with CANN installed run this script.")
        script.comment("set_env.sh reads variables that may be unset (LD_LIBRARY_PATH, PYTHONPATH) and can stop early "
                       "on some installs, so it is sourced with strict mode off. Non-root installs: "
                       "ASCEND_SET_ENV=$HOME/Ascend/ascend-toolkit/set_env.sh")
        script.literal("set +eu")
        script.literal('source "${ASCEND_SET_ENV:-/usr/local/Ascend/ascend-toolkit/set_env.sh}"')
        script.literal("set -eu")
        script.literal('command -v atc >/dev/null || { echo "atc is not on PATH after sourcing set_env.sh" >&2; exit 1; }')
        script.comment(f"soc version: {soc}{soc_note}")
        script.comment("atc writes PREFIX.om, or PREFIX_linux_<arch>.om for models with host-side kernels.")
        if shapes:
            script.run(["lvvit-opt", "whitelist", "patch",
                        *[word for s in shapes for word in ("--shape", ",".join(map(str, s)))]])
        else:
            script.comment("no Transpose shapes to whitelist")
        argvs = [script.path_flags(build_atc_command(p, soc_version=soc, log="error"), ("--model=", "--output="))
                 for p in onnx_files]
        for argv in argvs:
            script.run(argv)
        script.write()
        commands = [quote_argv(argv) for argv in argvs]
        log(f"[atc] atc not found: wrote {out / 'atc_commands.sh'}")
        return {"compiled": False, "commands_file": str(out / "atc_commands.sh"), "commands": commands}
    compiled = {}
    # atc compiles against the installed transpose.py: a stored .om is reused only with the same one
    transpose = _installed_transpose_sha256(options, env)
    for path in onnx_files:
        # the .om is wherever atc put it (PREFIX.om or PREFIX_linux_<arch>.om): the stage records it
        compiled[path.name] = stages.run(
            f"atc {path.name}", {"soc": options.soc_version, "cann": options.cann_home, "transpose_sha256": transpose},
            [path],
            lambda result: [result["om"]], lambda p=path: _compile(p, options, compile_onnx, log))
    from lvvit_opt.ascend.om_graph import compare_om_files  # what atc compiled (atc --mode=1), original vs rewritten

    kernels = {str(batch): compare_om_files([compiled[o.name]["om"], compiled[r.name]["om"]], env=env)
               for batch, (o, r) in models.items()}
    return {"compiled": True, "models": compiled, "kernels": kernels}


def _installed_transpose_sha256(options: RunOptions, env: dict) -> str | None:
    """The SHA-256 of the transpose.py atc reads (--whitelist-file, else located), None without one."""
    from lvvit_opt.core.readers import file_sha256
    from lvvit_opt.whitelist.locate import locate_transpose_py

    try:
        return file_sha256(locate_transpose_py(options.whitelist_file, env), "transpose.py")
    except UserError:
        return None


def _script_soc_version(requested: str, env: dict) -> tuple[str, str]:
    """The --soc_version for atc_commands.sh and a note on where it came from (npu-smi may exist without atc)."""
    if requested != "auto":
        return requested, ""
    from lvvit_opt.ascend.npu_smi import detect_soc_version

    try:
        return detect_soc_version(env), " (from npu-smi on this machine)"
    except UserError as exc:
        return "Ascend310", (" (assumed, check `npu-smi info`: Name 310P3 -> Ascend310P3; Name Ascend910 -> "
                             "`npu-smi info -t board -i 0 -c 0`: {Chip Name}_{NPU Name}): " + str(exc).split(";")[0])


def _compile(path: Path, options: RunOptions, compile_onnx, log) -> dict:
    model = path.resolve()
    # atc leaves fusion_result.json and kernel_meta/ in its working directory: keep them in --out
    result = compile_onnx(model, soc_version=options.soc_version, cann_home=options.cann_home,
                          log_file=path.with_suffix(".atc.log"), output=str(model.with_suffix("")),
                          progress=lambda elapsed, line: None, cwd=model.parent)
    log(f"  compiled {result.om_path} in {result.elapsed_s:.1f} s")
    return {"om": str(result.om_path), "log": str(result.log_path), "seconds": round(result.elapsed_s, 2),
            "command": result.command}


def _bench_stage(options: RunOptions, models, atc: dict, stages: _Stages, out: Path, log) -> dict:
    from lvvit_opt.measure.bench import bench_models

    use_om = atc.get("compiled", False)
    reports = {}
    for batch, (original, optimized) in models.items():
        files = [Path(atc["models"][p.name]["om"]) for p in (original, optimized)] if use_om else [original, optimized]
        params = {"duration": options.bench_duration, "rounds": options.bench_rounds, "threads": options.threads,
                  "backend": "om" if use_om else "ort"}
        reports[str(batch)] = stages.run(
            f"bench bs{batch}", params, files, [],
            lambda f=files, b=batch: bench_models([str(p) for p in f], [b], backend="om" if use_om else "ort",
                                                  duration=options.bench_duration, rounds=options.bench_rounds,
                                                  threads=options.threads, log=log.child("  ")).to_dict(),
            force=options.rebench)
        if stages.summary.stages[-1]["status"] == "skipped":  # figures from an earlier run: say so
            report = dict(reports[str(batch)])
            report["cached"] = {"measured_at": stages.cache.state[f"bench bs{batch}"].get("finished"),
                                "host": (report.get("machine") or {}).get("host")}
            reports[str(batch)] = report
            log(f"  bench bs{batch}: fps from the run of {report['cached']['measured_at']} on "
                f"{report['cached']['host']}, not measured again (--rebench to measure)")
    return {"backend": "om" if use_om else "onnxruntime", "reports": reports}
