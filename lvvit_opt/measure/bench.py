"""Before/after throughput that a reader can trust.

Several models are measured in interleaved rounds after a warm-up, the order rotating from
round to round (A B, B A, ...), so drift of the machine (thermal, other load) hits every model
alike and none always runs first. Per model and batch size we report fps, median and p90
latency and the spread of fps over rounds; with two or more models, the ratio of each to the
first with its confidence interval and verdict (lvvit_opt.measure.stats: paired per-round
log-ratios; measuring goes on within the duration until the intervals are narrow enough), and
the machine's load with a warning when it was not quiet.

This module owns the measurement in one process and its per-device worker (BenchWorker); it
imports the runtime, passes and helpers below it, never lvvit_opt.scale, which composes it
(bench_models' scale_out).
"""
from __future__ import annotations

import logging
import math
import os
import platform
import re
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from lvvit_opt.core.errors import ToolFailed, UserError, ValidationFailed
from lvvit_opt.core.logs import LogCallback, reporter
from lvvit_opt.core.progress import task

logger = logging.getLogger(__name__)


def _backends() -> tuple[str, ...]:
    from lvvit_opt.runtime.registry import backend_choices

    return (*backend_choices(), "trtexec")


BACKENDS = _backends()  # "auto", every registered runner (runtime.registry), and trtexec
Entry = tuple[str, str, str, int]  # (name shown, path to run, backend, position on the command line)
PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                    "tensorrt": "TensorrtExecutionProvider", "trt": "TensorrtExecutionProvider"}


@dataclass
class BenchResult:
    model: str
    batch_size: int
    backend: str
    fps: float
    latency_median_ms: float
    latency_p90_ms: float
    round_fps: list[float]  # per round: batch x calls / backend time of its slot
    iterations: int
    fps_spread_pct: float  # (max - min) / median of the per-round fps, in percent
    ratio_to_first: float | None = None
    ratio_spread: tuple[float, float] | None = None  # min and max of the per-round ratios
    details: dict = field(default_factory=dict)
    position: int = 0  # the model's place on the command line (the same file may be given twice)
    comparison: dict | None = None  # against the first model: stats.Comparison.to_dict() (ratio, interval, verdict)
    round_rates: list[float] | None = None  # per round: batch / median call time (stats.slot_rate), compared

    def judged(self):
        """The stats.Comparison with the first model, or None (the first model itself)."""
        from lvvit_opt.measure.stats import Comparison

        return Comparison.from_dict(self.comparison) if self.comparison else None


@dataclass
class BenchReport:
    results: list[BenchResult]
    machine: dict
    settings: dict
    skipped: list[str] = field(default_factory=list)
    validation: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # the machine was not quiet (stats.LoadMonitor)
    load: dict = field(default_factory=dict)  # the load readings (stats.merge_load)
    rounds: dict = field(default_factory=dict)  # batch size -> how many rounds and why they stopped
    cached: dict = field(default_factory=dict)  # figures reused by `run` (measured_at, host); {} when measured now

    @classmethod
    def from_dict(cls, data: dict) -> "BenchReport":
        results = [BenchResult(**{**r, "ratio_spread": tuple(r["ratio_spread"]) if r.get("ratio_spread") else None})
                   for r in data.get("results", [])]
        return cls(results, data.get("machine", {}), data.get("settings", {}), data.get("skipped", []),
                   data.get("validation", {}), data.get("warnings", []), data.get("load", {}),
                   data.get("rounds", {}), data.get("cached", {}))

    def to_dict(self) -> dict:
        return {"machine": self.machine, "settings": self.settings, "skipped": self.skipped,
                "validation": self.validation, "warnings": self.warnings, "load": self.load,
                "rounds": self.rounds, "cached": self.cached, "results": [asdict(r) for r in self.results]}

    def verdicts(self) -> list[str]:
        """One sentence per model after the first at each batch size (stats.Comparison.sentence),
        then how each batch size's rounds stopped."""
        lines = []
        firsts = {}
        for r in self.results:
            firsts.setdefault(r.batch_size, r)
            judged = r.judged()
            if judged is not None:
                lines.append(f"batch {r.batch_size}: " + judged.sentence(_short(r.model, 60),
                                                                       _short(firsts[r.batch_size].model, 60)))
        for batch, info in self.rounds.items():
            lines.append(f"batch {batch}: {info.get('text', '')}")
        if self.cached:
            lines.append(f"CACHED: these figures were measured {self.cached.get('measured_at')} on "
                         f"{self.cached.get('host')}, not now (--rebench to measure again)")
        return lines

    def format_table(self) -> str:
        from lvvit_opt.core.table import format_table

        rows = []
        for r in self.results:
            judged = r.judged()
            ratio = "" if r.ratio_to_first is None else (judged.short() if judged else "baseline")
            rows.append([_short(r.model), r.batch_size, r.backend, f"{r.fps:.1f}", f"{r.latency_median_ms:.2f}",
                         f"{r.latency_p90_ms:.2f}", f"{r.fps_spread_pct:.1f}%", ratio])
        table = format_table(["model", "bs", "backend", "fps", "p50 ms", "p90 ms", "spread",
                              "ratio to the first [95% interval] verdict"], rows, align="lrlrrrrl").splitlines()
        lines = table[:2]
        for row, r in zip(table[2:], self.results):
            lines.append(row)
            if "card" in r.details:
                lines += format_card(r)
            if "card_fps" in r.details:
                lines.append(f"  card fps = {r.fps:.1f} x {r.details['chips']} chips = {r.details['card_fps']:.1f}")
        for s in self.skipped:
            lines.append(f"skipped: {s}")
        return "\n".join(lines)

    def runtime_notes(self) -> list[str]:
        """How each backend actually ran (the providers onnxruntime really used, the device of an
        .om runner), from the runners' own descriptions, not from what was asked."""
        notes = []
        for backend in dict.fromkeys(r.backend for r in self.results):
            details = next(r.details for r in self.results if r.backend == backend)
            if details.get("providers") is not None:
                used = ", ".join(details.get("providers") or [])
                level = details.get("graph_opt", self.settings.get("graph_opt"))
                notes.append(f"{backend}: threads {self.settings.get('threads')}; "
                             + (f"graph optimisation {level}; " if level else "") + f"providers used: {used}")
            else:
                extras = [f"{k} {details[k]}" for k in ("device_id", "chips", "timing") if k in details]
                notes.append(f"{backend}: " + ("; ".join(extras) if extras else "no further details"))
        return notes


def format_card(result: BenchResult) -> list[str]:
    """Table lines under a multi-device bench row (details "card" and "per_device", written by
    scale.devices): each device, the measured total, the estimate."""
    card = result.details["card"]
    lines = [f"    device {row['device']}: {row['fps']:.1f} fps (median latency {row['latency_median_ms']:.2f} ms, "
             f"pid {row['pid']})" for row in result.details["per_device"]]
    lines.append(f"    card total measured: {card['measured_fps']:.1f} fps (devices spread "
                 f"{card['device_spread_pct']:.1f} %, rounds spread {result.fps_spread_pct:.1f} %; wall clock "
                 f"{card['wall_fps']:.1f} fps)")
    lines.append(f"    seed-style estimate: {card['solo_fps']:.1f} x {len(card['devices'])} = "
                 f"{card['estimate_fps']:.1f} fps ({card['estimate_from']}); measured / estimate = "
                 f"{card['measured_fps'] / card['estimate_fps']:.3f}")
    return lines


def _short(path: str, width: int = 34) -> str:
    return path if len(path) <= width else "..." + path[-(width - 3):]


def machine_info(extra: dict | None = None) -> dict:
    info = {"host": platform.node(), "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version()}
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    info.update(extra or {})
    return info


# ---------------------------------------------------------------- runner-based backends

def _model_batch(path: str) -> int | None:
    """The static batch of an ONNX model's first input, or None if symbolic."""
    from lvvit_opt.core.tensor_spec import input_specs

    return input_specs(path)[0].batch


def _refix_batch(path: str, batch: int, workdir: Path) -> str:
    """Write a copy of `path` with its batch fixed to `batch` (through the fix_shapes pass)."""
    from lvvit_opt.core.onnx_files import load_onnx, save_onnx
    from lvvit_opt.passes import run_pipeline

    result = run_pipeline(load_onnx(path), ["fix_shapes"], {"fix_shapes": {"batch_size": batch}})
    out = workdir / f"{Path(path).stem}_bs{batch}.onnx"
    save_onnx(result.model, out)
    return str(out)


def _runner_batch(path: str, kind: str) -> int | None:
    """A compiled model's batch, from its runner's input specs (compiled batches are fixed)."""
    with _open(path, kind, None, None, 0) as runner:
        return runner.inputs[0].batch if runner.inputs else None


def _resolve_backend(path: str, backend: str) -> str:
    """A registered backend name, or "auto" / a suffix name ("om") left for the registry to
    pick from when the model is opened."""
    from lvvit_opt.runtime import registry

    return registry.canonical_name(backend)


def _runs_onnx(path: str, kind: str) -> bool:
    """True when `path` runs as ONNX under `kind` (re-fixable; needs no reference to validate)."""
    from lvvit_opt.runtime import registry

    if kind == "auto":
        return Path(path).suffix.lower() == ".onnx"
    if kind not in registry.names():
        return kind == "onnx"
    return registry.opens_onnx(kind)


def _open(path: str, backend: str, threads: int | None, providers: Sequence[str] | None, device_id: int,
          graph_opt: str | None = None):
    """Open `path`; the chosen runner takes the settings it declares (threads, providers, device_id,
    graph_opt). graph_opt None: the runner's own default (onnxruntime's "all")."""
    from lvvit_opt.runtime import open_runner

    settings = {"threads": threads, "providers": providers, "device_id": device_id}
    if graph_opt is not None:  # bench_models refused it already for a runner that does not take it
        settings["graph_opt"] = graph_opt
    return open_runner(path, backend=backend, shared=settings)


GRAPH_OPT_DEFAULT = "all"  # onnxruntime's own default, ORT_ENABLE_ALL (runtime.ort.GRAPH_OPT_LEVELS)


def _takes_graph_opt(path: str, kind: str) -> bool:
    """True when the runner that opens `path` under `kind` takes a graph optimisation level
    (onnxruntime); an .om runner (or any other) does not, and is never even looked up for it."""
    from lvvit_opt.runtime import registry

    if not _runs_onnx(path, kind):
        return False
    return "graph_opt" in registry.runner_for(path, kind).option_names()


def _check_graph_opt(graph_opt: str | None, models: Sequence[str], backend: str) -> None:
    """An unknown level, or a level asked of a backend that has none (.om runners, trtexec), is a
    one-line UserError (exit 2), never a setting silently ignored."""
    if graph_opt is None:
        return
    from lvvit_opt.runtime.ort import GRAPH_OPT_LEVELS

    if graph_opt not in GRAPH_OPT_LEVELS:
        raise UserError(f"graph_opt {graph_opt!r}: one of {', '.join(GRAPH_OPT_LEVELS)}")
    if backend == "trtexec":
        raise UserError("--graph-opt is onnxruntime's graph optimisation level; trtexec has none")
    for model in models:
        kind = _resolve_backend(model, backend)
        if not _takes_graph_opt(model, kind):
            raise UserError(f"--graph-opt is onnxruntime's graph optimisation level; {model} runs on backend "
                            f"{kind} ({Path(model).suffix or 'no suffix'}), which has none "
                            f"(drop --graph-opt, or bench the .onnx on onnxruntime)")


def _feeds(runner, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    from lvvit_opt.core.resources import require_memory, tensor_nbytes

    rng = np.random.default_rng(seed)
    shapes = {spec.name: [batch if i == 0 else (d if isinstance(d, int) and d > 0 else 1)
                          for i, d in enumerate(spec.shape)] for spec in runner.inputs}
    # the float64 draw and its cast, refused before numpy tries (a MemoryError traceback)
    require_memory(sum(tensor_nbytes(shape, "float64") + tensor_nbytes(shape, spec.dtype)
                       for spec, shape in zip(runner.inputs, shapes.values())),
                   "bench inputs " + ", ".join(f"{name} {shape}" for name, shape in shapes.items()))
    feeds = {}
    for spec in runner.inputs:
        feeds[spec.name] = rng.standard_normal(shapes[spec.name]).astype(
            spec.dtype if spec.dtype != "float16" else np.float16)
    return feeds


def _check_timing(duration: float, rounds: int, warmup: float) -> None:
    """The CLI holds these to stated ranges at parse time (cli.types); a caller from Python gets a
    refusal too instead of a measurement that never ends (inf seconds) or measures nothing (NaN)."""
    if not (isinstance(duration, (int, float)) and math.isfinite(duration) and duration > 0):
        raise UserError(f"duration {duration!r}: expected a finite number of seconds > 0")
    if not (isinstance(warmup, (int, float)) and math.isfinite(warmup) and warmup >= 0):
        raise UserError(f"warmup {warmup!r}: expected a finite number of seconds >= 0")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise UserError(f"rounds {rounds!r}: expected an integer >= 1")


class ScaleOut(Protocol):
    """How bench_models runs a batch size's models in other processes (lvvit_opt.scale builds one;
    this module never imports it): bench_models plans, validates and reports, this measures."""

    processes: int  # onnxruntime threads (unless given) are shared out over this many processes
    settings: dict  # added to the report's settings

    def __call__(self, entries: list[Entry], batch: int, duration: float, rounds: int, warmup: float,
                 threads: int | None, providers: Sequence[str] | None, log: LogCallback, *,
                 graph_opt: str | None = None) -> list[BenchResult]:
        ...


def bench_models(
    models: Sequence[str],
    batch_sizes: Sequence[int] | None = None,
    backend: str = "auto",
    duration: float = 10.0,
    rounds: int = 5,
    warmup: float = 1.0,
    threads: int | None = None,
    providers: Sequence[str] | None = None,
    refix_batch: bool = False,
    device_id: int = 0,
    validate: bool = True,
    reference: str | None = None,
    log: LogCallback = None,
    scale_out: ScaleOut | None = None,
    graph_opt: str | None = None,
) -> BenchReport:
    """Measure `models` interleaved at each batch size.

    duration: seconds of measurement per batch size, shared by all models and rounds.
    batch_sizes: None = each model's own static batch; a dynamic batch runs at the other models'
    static batches (1 and 16 when none has one), so a dynamic/fixed pair gets its ratio.
    A fixed-batch ONNX asked for another batch is skipped with a reason, unless
    refix_batch, which re-fixes it through the fix_shapes pass.
    validate: .om models are first checked against their ONNX (beside them, or
    `reference`); a model that fails is refused (ValidationFailed).
    scale_out: measures each batch size's models instead of this process (given by
    lvvit_opt.scale.bench_any, e.g. every device at once: each result's fps is then the
    measured card total, with every device in its details); None: this process, on `device_id`.
    graph_opt: onnxruntime's graph optimisation level (all, extended, basic, disabled) for every
    session bench opens, workers of scale_out included; None: onnxruntime's default (all). A
    level given for a model that does not run on onnxruntime (an .om, trtexec) is a UserError.
    The report's settings name the level used ("graph_opt"; None when no model ran on onnxruntime).
    """
    log = reporter(logger, log)
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    _check_timing(duration, rounds, warmup)
    if not models:
        raise UserError("no model given")
    from lvvit_opt.core.fileio import require_regular_file

    for m in models:
        if not require_regular_file(m).is_file():  # a FIFO or device: "not a regular file"
            raise UserError(f"{m}: no such file")
    _check_graph_opt(graph_opt, models, backend)
    if threads is None and (backend == "auto" or _runs_onnx(models[0], _resolve_backend(models[0], backend))):
        from lvvit_opt.core.resources import threads_per_process

        threads = threads_per_process(None, scale_out.processes if scale_out is not None else 1)
    providers = check_providers(providers, log) if providers else None
    if backend == "trtexec":
        return _bench_trtexec(models, batch_sizes or [1, 16], log)

    validation = _validate_om_models(models, backend, reference, log) if validate else {}
    import tempfile

    from lvvit_opt.measure.stats import LoadMonitor, merge_load

    results, skipped, loads, stops = [], [], [], {}
    with tempfile.TemporaryDirectory(prefix="lvvit-bench-") as tmp:
        plan = _plan(models, batch_sizes, backend, refix_batch, Path(tmp), skipped)
        for batch, entries in plan.items():
            if scale_out is not None:
                with LoadMonitor() as load:
                    results += scale_out(entries, batch, duration, rounds, warmup, threads, providers, log,
                                         graph_opt=graph_opt)
                loads.append(load.report)
            else:
                measured, rounds_done, load = _bench_interleaved(entries, batch, duration, rounds, warmup, threads,
                                                                 providers, device_id, log, graph_opt)
                results += measured
                loads.append(load)
                stops[str(batch)] = rounds_done.to_dict()
    load = merge_load(loads)
    for warning in load.get("warnings", []):
        log.warning(warning)
    settings = {"models": list(models), "backend": backend, "duration_s": duration, "rounds": rounds, "warmup_s": warmup,
                "threads": threads, "providers": list(providers) if providers else ["CPUExecutionProvider"],
                "batch_sizes": sorted({r.batch_size for r in results}),
                "graph_opt": _graph_opt_used(graph_opt, models, backend)}
    settings.update(scale_out.settings if scale_out is not None else {})
    settings["weights"] = weights_note(models)
    return BenchReport(results, machine_info(), settings, skipped, validation, load.get("warnings", []), load, stops)


def weights_note(models: Sequence[str]) -> str | None:
    """'random weights (...)' when a model's metadata (lvvit_opt.random_weights, written by
    export) says its weights are random or partly random; None otherwise or when unknown."""
    from lvvit_opt.models.metadata import PREFIX, read_props

    random = []
    for model in models:
        path = Path(model)
        if path.suffix.lower() != ".onnx":
            from lvvit_opt.runtime.om import source_onnx

            path = Path(source_onnx(model))
        try:
            value = read_props(path).get(PREFIX + "random_weights")
        except Exception:  # noqa: BLE001  (a missing or unreadable ONNX: no metadata to report)
            continue
        if value in ("true", "partly"):
            random.append(f"{path.name}: {'RANDOM' if value == 'true' else 'partly random'} weights")
    return "; ".join(random) if random else None


def _graph_opt_used(graph_opt: str | None, models: Sequence[str], backend: str) -> str | None:
    """The level the onnxruntime sessions ran at (the asked one, else onnxruntime's default);
    None when no model ran on a runner that has one."""
    if graph_opt is not None:
        return graph_opt
    try:
        ort_models = any(_takes_graph_opt(m, _resolve_backend(m, backend)) for m in models)
    except UserError:
        ort_models = False
    return GRAPH_OPT_DEFAULT if ort_models else None


def check_providers(providers: Sequence[str], log=None) -> list[str]:
    """Aliases (cpu, cuda, tensorrt, ...) to onnxruntime's names, checked against this build.

    A name onnxruntime does not know, or a list none of whose providers this build has, is a
    UserError naming the available ones (never a silent fall-back to CPU); providers this
    build lacks are dropped with a warning."""
    import onnxruntime as ort

    log = reporter(logger, log)
    names = [PROVIDER_ALIASES.get(p.strip().lower(), p.strip()) for p in providers if p.strip()]
    available = ort.get_available_providers()
    unknown = [p for p in names if p not in ort.get_all_providers()]
    if unknown:
        raise UserError(f"unknown onnxruntime provider(s) {', '.join(unknown)}; available here: "
                        f"{', '.join(available)} (aliases: {', '.join(PROVIDER_ALIASES)})")
    usable = [p for p in names if p in available]
    if not usable:
        raise UserError(f"none of the providers {', '.join(names)} is available in this onnxruntime build; "
                        f"available here: {', '.join(available)}")
    missing = [p for p in names if p not in available]
    if missing:
        log.warning(f"provider(s) {', '.join(missing)} not available in this onnxruntime build; "
                    f"running on {', '.join(usable)}")
    return usable


def _plan(models, batch_sizes, backend, refix_batch, workdir: Path, skipped: list[str]) -> dict[int, list]:
    """batch size -> [(display name, path to run, backend)], keeping the models' order."""
    plan: dict[int, list] = {}
    kinds = [_resolve_backend(model, backend) for model in models]
    statics = [_model_batch(m) if _runs_onnx(m, k) else _runner_batch(m, k) for m, k in zip(models, kinds)]
    # a dynamic-batch model beside fixed-batch ones runs at their batches, so each pair has a ratio
    fixed_batches = sorted({s for s in statics if s})
    for position, (model, kind, static) in enumerate(zip(models, kinds, statics)):
        runs_onnx = _runs_onnx(model, kind)
        wanted = list(batch_sizes) if batch_sizes else ([static] if static else (fixed_batches or [1, 16]))
        for batch in wanted:
            path = model
            if static is not None and static != batch and not refix_batch:
                skipped.append(f"{model} has a fixed batch of {static}; it cannot run at batch {batch} "
                               f"(export it at that batch, or pass --refix-batch)")
                continue
            if refix_batch and runs_onnx and static != batch:
                try:
                    path = _refix_batch(model, batch, workdir)
                except UserError as exc:
                    skipped.append(f"{model}: cannot re-fix to batch {batch}: {exc}")
                    continue
            plan.setdefault(batch, []).append((model, path, kind, position))
    return dict(sorted(plan.items()))


def _bench_interleaved(entries, batch, duration, rounds, warmup, threads, providers, device_id, log,
                       graph_opt: str | None = None) -> tuple[list[BenchResult], Any, Any]:
    """One batch size's models in rotating interleaved rounds (stats.measure_rounds): at least
    `rounds`, then more within `duration` until every interval is narrow enough. Returns the
    results, the stats.Rounds and the stats.LoadReport."""
    from lvvit_opt.measure.stats import LoadMonitor, measure_rounds, slot_rate, slot_seconds

    with BenchWorker(entries, batch, threads, providers, device_id, graph_opt) as worker:
        worker.warm_up(warmup)
        slot = slot_seconds(duration, rounds, len(entries))
        latencies: list[list[float]] = [[] for _ in entries]
        log(f"batch {batch}: {len(entries)} model(s), at least {rounds} rounds x {slot:.2f} s each, order rotating, "
            f"more within {duration:g} s until the intervals are narrow enough")

        throughput: list[list[float]] = [[] for _ in entries]

        def one_slot(i: int) -> float:
            first = len(latencies[i])
            spent, count = worker.slot(i, slot, latencies[i])
            throughput[i].append(batch * count / spent)
            return slot_rate(batch, latencies[i][first:])

        with LoadMonitor() as load, task(f"bench batch {batch}", total=None, unit="slot") as bar:
            measured = measure_rounds(len(entries), one_slot, min_rounds=rounds, seconds=duration,
                                      on_slot=lambda _r, _i: bar.update(1))
        results = [_summarise(name, kind, batch, lat, fps, details, position)
                   for (name, _, kind, position), details, lat, fps in zip(entries, worker.describe(), latencies,
                                                                          throughput)]
        for result, rates in zip(results, measured.rates):
            result.round_rates = rates
        return with_ratios(results), measured, load.report


class BenchWorker:
    """One process's part of a measurement: each entry's runner open on one device, with its
    random feed. The per-device entry point of scale.devices (one BenchWorker in each device
    process); bench_models' own interleaved loop is one too. graph_opt: onnxruntime's level for
    every session it opens (None: onnxruntime's default)."""

    def __init__(self, entries: Sequence[Entry], batch: int, threads: int | None,
                 providers: Sequence[str] | None, device_id: int, graph_opt: str | None = None) -> None:
        self.runners: list = []
        try:
            for _, path, kind, _ in entries:
                self.runners.append(_open(path, kind, threads, providers, device_id, graph_opt))
            self.feeds = [_feeds(runner, batch) for runner in self.runners]
        except BaseException:
            self.close()
            raise

    def warm_up(self, seconds: float) -> None:
        """Untimed: every runner at least once, then each until `seconds` have passed."""
        warm_up(self.runners, self.feeds, seconds)

    def slot(self, index: int, seconds: float, sink: list[float]) -> tuple[float, int]:
        """Entry `index` for `seconds` (at least once), each call's backend time appended to
        `sink`; returns (backend seconds spent, iterations)."""
        return _timed_slot(self.runners[index], self.feeds[index], seconds, sink)

    def describe(self) -> list[dict]:
        """Each runner's own description (backend, providers used, device id, ...)."""
        return [runner.describe() for runner in self.runners]

    def close(self) -> None:
        for runner in self.runners:
            runner.close()

    def __enter__(self) -> "BenchWorker":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def warm_up(runners, feeds, seconds: float) -> None:
    """Untimed: each runner at least once, then until `seconds` have passed."""
    for runner, feed in zip(runners, feeds):
        deadline = time.perf_counter() + seconds
        runner.infer(feed)
        while time.perf_counter() < deadline:
            runner.infer(feed)


def timed_slot(runner, feed, slot: float, sink: list[float]) -> tuple[float, int]:
    """Run `runner` on `feed` for `slot` seconds (at least once), appending each call's backend
    time to `sink`; returns (backend seconds spent, iterations). Shared with `tune`."""
    return _timed_slot(runner, feed, slot, sink)


def _timed_slot(runner, feed, slot: float, sink: list[float]) -> tuple[float, int]:
    """Run for `slot` seconds (at least once); returns (backend time spent, iterations)."""
    spent, count, start = 0.0, 0, time.perf_counter()
    while count == 0 or time.perf_counter() - start < slot:
        runner.infer(feed)
        if not (math.isfinite(runner.last_infer_s) and runner.last_infer_s > 0):
            raise ToolFailed(f"{runner.describe().get('backend', 'the backend')} reported an inference time of "
                             f"{runner.last_infer_s} s, which cannot be right; no fps computed from it")
        spent += runner.last_infer_s
        sink.append(runner.last_infer_s)
        count += 1
    return spent, count


def _summarise(name, kind, batch, latencies, round_fps, details, position) -> BenchResult:
    lat_ms = np.asarray(latencies) * 1000.0
    median_fps = statistics.median(round_fps)
    fps = batch * len(latencies) / float(np.sum(latencies))
    if details.get("chips"):  # legacy benchmark: timing is one chip's Interface throughputRate
        details = dict(details, card_fps=fps * int(details["chips"]))
    return BenchResult(
        model=name, batch_size=batch, backend=details.get("backend", kind),
        fps=fps,
        latency_median_ms=float(np.median(lat_ms)), latency_p90_ms=float(np.percentile(lat_ms, 90)),
        round_fps=[float(f) for f in round_fps], iterations=len(latencies),
        fps_spread_pct=100.0 * (max(round_fps) - min(round_fps)) / median_fps if median_fps else 0.0,
        details=details, position=position,
    )


def with_ratios(results: list[BenchResult]) -> list[BenchResult]:
    """Each model against the first at the same batch size, from their paired rounds
    (stats.compare: ratio, interval, verdict; on the per-round median-call rates where measured,
    else the per-round fps), with the min-max spread of the per-round fps ratios."""
    from lvvit_opt.measure.stats import compare

    if len(results) < 2:
        return results
    base = results[0]
    for r in results[1:]:
        per_round = [a / b for a, b in zip(r.round_fps, base.round_fps) if b > 0]
        judged = (compare(r.round_rates, base.round_rates) if r.round_rates and base.round_rates
                  else compare(r.round_fps, base.round_fps))
        r.comparison = judged.to_dict()
        r.ratio_to_first = judged.ratio if judged.rounds else None
        r.ratio_spread = (min(per_round), max(per_round)) if per_round else None
    base.ratio_to_first = 1.0
    return results


def _validate_om_models(models, backend, reference, log) -> dict:
    """Every .om is compared with its ONNX before any fps is reported."""
    report = {}
    for model in models:
        if _runs_onnx(model, _resolve_backend(model, backend)):
            continue
        from lvvit_opt.runtime.om import source_onnx

        ref = reference or str(source_onnx(model))  # x.onnx for x.om and for x_linux_<arch>.om
        if not Path(ref).is_file():
            raise UserError(f"{model}: cannot validate: no reference ONNX at {ref} (pass --reference MODEL.onnx, "
                            f"or --skip-validate to measure an unvalidated model)")
        from lvvit_opt.verify.golden import validate_models

        outcome = validate_models(ref, model)
        report[model] = outcome.to_dict()
        log(f"validation of {model} against {ref}: {'PASS' if outcome.passed else 'FAIL'}")
        if not outcome.passed:
            raise ValidationFailed(f"{model} disagrees with {ref}; refusing to report its fps "
                                   f"({outcome.summary()}; --skip-validate to measure anyway)")
    return report


# ---------------------------------------------------------------- trtexec

_TRT_STAT = re.compile(r"(min|max|mean|median|percentile\(90%\))\s*[=:]\s*([\d.eE+-]+)\s*ms")


def parse_trtexec_log(text: str, batch_size: int) -> dict:
    """fps from a trtexec log: batch * 1000 / mean latency, taken from the `GPU Compute Time`
    summary line (pure device time) when present, else the `Latency` line. Raises
    ToolFailed if the log has no latency summary (e.g. the engine build failed)."""
    lines = text.splitlines()
    for label in ("GPU Compute Time:", "Latency:"):
        for line in lines:
            if label in line and "mean" in line and not line.split(label)[0].rstrip().endswith(("H2D", "D2H")):
                stats = {k: float(v) for k, v in _TRT_STAT.findall(line.split(label, 1)[1])}
                if "mean" in stats and stats["mean"] > 0:
                    return {"mean_ms": stats["mean"], "median_ms": stats.get("median", stats["mean"]),
                            "p90_ms": stats.get("percentile(90%)", float("nan")), "min_ms": stats.get("min"),
                            "max_ms": stats.get("max"), "fps": batch_size * 1000.0 / stats["mean"],
                            "source": label.rstrip(":")}
    raise ToolFailed("no latency summary found in the trtexec log (did the engine build fail?)")


def trtexec_command(model: str, batch_size: int, input_name: str, input_shape: Sequence[int], fp16: bool = True) -> list[str]:
    """The model's real input shape with the asked batch (the seed used 112x112 for a 224 model)."""
    dims = "x".join(str(d) for d in [batch_size, *input_shape[1:]])
    cmd = ["trtexec", f"--onnx={model}", f"--shapes={input_name}:{dims}"]
    return cmd + (["--fp16"] if fp16 else [])


def _bench_trtexec(models, batch_sizes, log) -> BenchReport:
    import shutil

    from lvvit_opt.core.tensor_spec import input_specs

    if not shutil.which("trtexec"):
        raise UserError("trtexec not found on PATH (install TensorRT, or use --backend ort)")
    results = []
    for position, model in enumerate(models):
        first = input_specs(model)[0]
        for batch in batch_sizes:
            cmd = trtexec_command(model, batch, first.name, first.shape or ())
            log(" ".join(cmd))
            proc = subprocess.run(cmd, capture_output=True, text=True)
            parsed = parse_trtexec_log(proc.stdout + proc.stderr, batch)
            results.append(BenchResult(model, batch, "trtexec", parsed["fps"], parsed["median_ms"], parsed["p90_ms"],
                                       [parsed["fps"]], 0, 0.0, details=parsed, position=position))
    return BenchReport(_group_ratios(results), machine_info(), {"backend": "trtexec"})


def _group_ratios(results: list[BenchResult]) -> list[BenchResult]:
    by_batch: dict[int, list[BenchResult]] = {}
    for r in results:
        by_batch.setdefault(r.batch_size, []).append(r)
    out = []
    for batch in sorted(by_batch):
        out += with_ratios(by_batch[batch])
    return out


# ---------------------------------------------------------------- plot

def plot_fps(report: BenchReport, out: str | os.PathLike, title: str | None = None,
             labels: dict[int, str] | None = None) -> Path:
    """Grouped bar chart: fps per batch size, one bar per model position (the first model
    given, the second, ...), with the spread over rounds as error bars.

    labels: position -> legend text (default: the position and the model file name)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lvvit_opt.core.fileio import write_figure
    from lvvit_opt.measure.stats import relative_half_width

    batches = sorted({r.batch_size for r in report.results})
    positions = sorted({r.position for r in report.results})
    width = 0.8 / max(1, len(positions))
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(batches) + 2), 4.5), dpi=110)
    for i, position in enumerate(positions):
        series = [r for r in report.results if r.position == position]
        xs = [batches.index(r.batch_size) + (i - (len(positions) - 1) / 2) * width for r in series]
        ys = [r.fps for r in series]
        # the 95% interval of the per-round fps (t over their logs), around the bar; none from one round
        halves = [relative_half_width(r.round_fps) for r in series]
        err = np.array([[r.fps - r.fps / (1 + h), r.fps * h] if math.isfinite(h) else [0.0, 0.0]
                        for r, h in zip(series, halves)]).T
        label = (labels or {}).get(position, f"{position + 1}. {Path(series[0].model).name}")
        bars = ax.bar(xs, ys, width * 0.95, yerr=err, capsize=3, label=label)
        texts = [f"{y:.1f}" + (f"\n{r.judged().short()}" if r.judged() else "") for y, r in zip(ys, series)]
        ax.bar_label(bars, labels=texts, padding=2, fontsize=7)
    ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
    ax.set_ylabel("images / s (higher is better)")
    used = ", ".join(dict.fromkeys(r.backend for r in report.results)) or report.settings.get("backend", "")
    ax.set_title(title or f"Throughput ({used})")
    if positions:
        top = max(r.fps * (1 + min(h, 1.0)) if math.isfinite(h) else r.fps
                  for r, h in ((r, relative_half_width(r.round_fps)) for r in report.results))
        ax.set_ylim(0, top * 1.35)
        ax.legend(fontsize=8, loc="upper center", ncol=min(3, len(positions)))
    else:
        ax.text(0.5, 0.5, "no measurement", ha="center", va="center", transform=ax.transAxes)
    ax.grid(axis="y", alpha=0.3)
    import textwrap

    width_in = fig.get_size_inches()[0]
    caveats = [part for line in plot_caveats(report) for part in textwrap.wrap(line, int(width_in * 17))]
    fig.text(0.01, 0.01, "\n".join(caveats), fontsize=6.5, color="dimgrey", va="bottom", ha="left")
    fig.tight_layout(rect=(0, (0.1 + 0.12 * len(caveats)) / fig.get_size_inches()[1], 1, 1))
    from lvvit_opt.models.metadata import PLOT_CAVEAT, random_weights_caveat

    caveat = PLOT_CAVEAT if random_weights_caveat(dict.fromkeys(r.model for r in report.results)) else None
    return write_figure(fig, out, caveat=caveat)


def plot_caveats(report: BenchReport) -> list[str]:
    """What a reader of the figure must know: the backend actually used (from the runners'
    descriptions, not `auto`), the machine and its load, random weights, what the bars are."""
    used = ", ".join(dict.fromkeys(r.backend for r in report.results)) or report.settings.get("backend", "")
    machine = report.machine
    lines = [f"backend used: {used}; machine: {machine.get('host', '?')} ({machine.get('processor', '?')}, "
             f"{machine.get('cpu_count', '?')} cores)"
             + (f"; threads {report.settings.get('threads')}" if report.settings.get("threads") else ""),
             "error bars: 95% interval of each model's per-round fps (t over log fps); above a bar: its ratio to the "
             "first model, the paired 95% interval and the verdict"]
    if report.settings.get("weights"):
        lines.append(f"{report.settings['weights']}: fps is real, accuracy is not")
    if report.warnings:
        lines.append("measured under load: " + report.warnings[0].replace("machine not quiet: ", ""))
    if report.cached:
        lines.append(f"CACHED figures: measured {report.cached.get('measured_at')} on {report.cached.get('host')}")
    return lines
