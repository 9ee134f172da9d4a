"""`tune`: the fastest deployment of a model that keeps its accuracy, measured, not guessed.

The search space is built from what the tool already has: batch sizes (bounded by memory),
pass sets (the pass registry; the batch is set by the runner or atc's --input_shape, so
fix_shapes is not among them), precision (fp32, fp16 as
`debug layers --fp16` builds it, fp16 with the nodes `debug layers --suggest-keep-dtype`
keeps in fp32) and target options (onnxruntime: intra-op threads and graph optimisation;
Ascend: atc --precision_mode and --op_select_implmode). `--space FILE` (JSON or YAML)
replaces any of these lists.

Every candidate is built, then gated on the user's inputs against the fp32 original: top-1
agreement (default >= 99.5 %) and validate's final-output tolerance (golden.compare_outputs;
tight for fp32 ONNX, the fp16 one for fp16 and .om). The gate's own inference calls are timed
too (the first is a warm-up): that screen prunes the slow ones cheaply (a batch size slower
than a smaller one by more than the spread, anything far below the best). The survivors and
the baseline (batch 1, fp32, no passes, default options) are then measured interleaved
(round-robin after a warm-up, several rounds) with the rest of the budget; the fastest
passing one is chosen, and every candidate whose per-round range overlaps it is a "tie".

State (gate, screen and final figures per candidate) is written atomically to
OUT/tune_state.json after every candidate, so a rerun with the same --out reuses them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .errors import ToolFailed, UserError
from .logs import LogCallback, reporter
from .progress import task

logger = logging.getLogger(__name__)

TARGETS = ("ort-cpu", "ort-cuda", "ort-trt", "ascend")
PRECISIONS = ("fp32", "fp16", "fp16-keep")
GRAPH_OPT_LEVELS = ("all", "disabled")  # OrtRunner's `optimize` option: ORT_ENABLE_ALL or ORT_DISABLE_ALL
# atc --precision_mode values the stand-in and CANN accept (CANN ATC parameter reference)
ASCEND_PRECISION_MODES = ("force_fp16", "allow_fp32_to_fp16", "allow_mix_precision", "must_keep_origin_dtype",
                          "force_fp32", "allow_mix_precision_fp16", "cube_fp16in_fp32out")
# atc --op_select_implmode: hiascend.com CANN 8.0.0 ATC reference, "--op_select_implmode" (atlasatcparam_16_0072)
IMPLMODES = ("high_performance", "high_precision", "high_performance_for_all", "high_precision_for_all")
DEFAULT_BATCHES = (1, 4, 8, 16, 32)
STATE_FILE = "tune_state.json"
REPORT_FILE = "tune.json"
PLOT_FILE = "tune.png"
REPRODUCE_FILE = "reproduce.sh"
STATE_VERSION = 1
ORT_PROVIDERS = {"ort-cpu": "CPUExecutionProvider", "ort-cuda": "CUDAExecutionProvider",
                 "ort-trt": "TensorrtExecutionProvider"}


# ---------------------------------------------------------------------------------------- space

@dataclass
class Space:
    batch_sizes: list[int]
    pass_sets: list[list[str]]
    precisions: list[str]
    threads: list[int]
    graph_opt: list[str]
    precision_modes: list[str]
    op_select_implmodes: list[str]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SPACE_KEYS = ("batch_sizes", "pass_sets", "precisions", "threads", "graph_opt", "precision_modes",
              "op_select_implmodes")


def default_space(target: str) -> Space:
    """Batch 1..32, no passes and each registered pass alone (fix_shapes sets the batch anyway),
    fp32/fp16/fp16-keep for onnxruntime (atc's precision modes for Ascend), all cores."""
    from .passes import available_passes

    passes = [[]] + [[name] for name in available_passes() if name != "fix_shapes"]
    cores = os.cpu_count() or 1
    threads = sorted({cores, max(1, cores // 2)}, reverse=True)
    ascend = target == "ascend"
    return Space(list(DEFAULT_BATCHES), passes, ["fp32"] if ascend else list(PRECISIONS), threads,
                 list(GRAPH_OPT_LEVELS), ["force_fp16", "allow_mix_precision"] if ascend else [],
                 ["high_performance", "high_precision"] if ascend else [])


def load_space(path: str | os.PathLike, target: str) -> Space:
    """The default space with the lists FILE gives (JSON, or YAML for .yaml/.yml) put in their place."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--space {path}: cannot read it ({type(exc).__name__}: {exc})") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        first = " ".join(str(exc).split())[:200]
        raise UserError(f"--space {path}: not valid {'YAML' if path.suffix.lower() in ('.yaml', '.yml') else 'JSON'} "
                        f"({first})") from None
    return space_from_mapping(data, target, f"--space {path}")


def space_from_mapping(data: Any, target: str, what: str = "space") -> Space:
    """Check every list of a space mapping; a wrong key, type or value is a one-line UserError."""
    from .passes import parse_pass_list

    if not isinstance(data, Mapping):
        raise UserError(f"{what}: expected a mapping of {', '.join(SPACE_KEYS)} to lists, got {type(data).__name__}")
    unknown = [k for k in data if k not in SPACE_KEYS]
    if unknown:
        raise UserError(f"{what}: unknown key(s) {', '.join(map(str, unknown))}; valid keys: {', '.join(SPACE_KEYS)}")
    space = default_space(target)
    for key, value in data.items():
        if not isinstance(value, list) or not value:
            raise UserError(f"{what}: {key} must be a non-empty list, got {value!r}")
        if key in ("batch_sizes", "threads"):
            if not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 4096 for v in value):
                raise UserError(f"{what}: {key} must be positive integers (at most 4096), got {value!r}")
            value = sorted(set(value))
        elif key == "pass_sets":
            sets = []
            for entry in value:
                if isinstance(entry, str):
                    entry = [entry] if entry.strip() and entry.strip() != "none" else []
                if not isinstance(entry, list) or not all(isinstance(n, str) for n in entry):
                    raise UserError(f"{what}: each pass set is a list of pass names, got {entry!r}")
                names = [n for n in entry if n != "fix_shapes"]
                sets.append(parse_pass_list(names) if names else [])
            value = [list(s) for s in dict.fromkeys(tuple(s) for s in sets)]
        else:
            allowed = {"precisions": PRECISIONS, "graph_opt": GRAPH_OPT_LEVELS,
                       "precision_modes": ASCEND_PRECISION_MODES, "op_select_implmodes": IMPLMODES}[key]
            bad = [v for v in value if v not in allowed]
            if bad:
                raise UserError(f"{what}: {key} has {', '.join(map(repr, bad))}; valid: {', '.join(allowed)}")
            value = list(dict.fromkeys(value))
        setattr(space, key, value)
    if target == "ascend" and space.precisions != ["fp32"]:
        space.notes.append("ascend: fp16 comes from atc --precision_mode; precisions other than fp32 ignored")
        space.precisions = ["fp32"]
    return space


def parse_budget(text: str | float | int) -> float:
    """'10m', '90s', '1h', '1.5m' or plain seconds -> seconds (UserError otherwise)."""
    value = str(text).strip().lower()
    scale = {"s": 1, "m": 60, "h": 3600}.get(value[-1:], None)
    number = value[:-1] if scale else value
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise UserError(f"--budget {text!r}: expected a duration like 90s, 10m or 1h") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise UserError(f"--budget {text!r}: must be a positive duration")
    return seconds


# ---------------------------------------------------------------------------------------- candidates

@dataclass
class Candidate:
    batch: int
    passes: list[str]
    precision: str
    options: dict[str, Any]
    status: str = "pending"  # passed | rejected | failed | duplicate | skipped | pruned | measured | unmeasured
    reason: str = ""
    gate: dict[str, Any] | None = None
    screen: dict[str, Any] | None = None
    timing: dict[str, Any] | None = None
    measured_s: float = 0.0  # time spent running this candidate (gate/screen calls, warm-up, timed slots)
    tie: bool = False
    reused: bool = False
    artefact: str | None = None

    @property
    def key(self) -> str:
        opts = ",".join(f"{k}={self.options[k]}" for k in sorted(self.options))
        return f"bs{self.batch}|{'+'.join(self.passes) or 'none'}|{self.precision}|{opts}"

    @property
    def variant(self) -> tuple:
        """What the ONNX file depends on (batch and options only change how it is run or compiled)."""
        return (tuple(self.passes), self.precision)

    @property
    def fps(self) -> float | None:
        if self.timing:
            return self.timing["fps"]
        return self.screen["fps"] if self.screen else None

    @property
    def agreement(self) -> float | None:
        return None if not self.gate else self.gate.get("top1_agreement")

    def label(self) -> str:
        opts = " ".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"bs{self.batch} {'+'.join(self.passes) or 'no passes'} {self.precision} {opts}".strip()

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Candidate":
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in names})


def enumerate_candidates(space: Space, target: "Target") -> list[Candidate]:
    out = []
    for passes in space.pass_sets:
        for precision in space.precisions:
            for batch in space.batch_sizes:
                for options in target.option_grid(space):
                    out.append(Candidate(batch, list(passes), precision, dict(options)))
    return out


# ---------------------------------------------------------------------------------------- targets

class Target:
    name = ""

    def option_grid(self, space: Space) -> list[dict[str, Any]]:
        raise NotImplementedError

    def default_options(self, space: Space) -> dict[str, Any]:
        return self.option_grid(space)[0]

    def artefact(self, onnx_path: Path, cand: Candidate, workdir: Path) -> Path:
        return onnx_path

    def open(self, path: Path, cand: Candidate):
        raise NotImplementedError

    def tolerance(self, cand: Candidate):
        from .golden import Tolerance

        return Tolerance.fp16() if cand.precision != "fp32" else Tolerance.onnx()

    def reproduce(self, cand: Candidate, best_path: str) -> list[str]:
        return []


class OrtTarget(Target):
    def __init__(self, name: str = "ort-cpu"):
        self.name = name
        self.provider = ORT_PROVIDERS[name]
        check_ort_target(name)

    def option_grid(self, space: Space) -> list[dict[str, Any]]:
        return [{"threads": t, "graph_opt": g} for t in space.threads for g in space.graph_opt]

    def open(self, path: Path, cand: Candidate):
        from .runtime import open_runner

        providers = [self.provider] + (["CPUExecutionProvider"] if self.provider != "CPUExecutionProvider" else [])
        return open_runner(str(path), backend="onnxruntime", threads=cand.options["threads"], providers=providers,
                           optimize=cand.options["graph_opt"] == "all")

    def reproduce(self, cand: Candidate, best_path: str) -> list[str]:
        provider = {"ort-cuda": " --providers cuda", "ort-trt": " --providers tensorrt"}.get(self.name, "")
        line = (f"lvvit-opt bench {best_path} --batch-sizes {cand.batch} --threads {cand.options['threads']}"
                f"{provider}")
        if cand.options["graph_opt"] != "all":
            line += "   # tuned with onnxruntime graph optimisation disabled (ORT_DISABLE_ALL); bench uses ALL"
        return [line]


def check_ort_target(name: str) -> None:
    """ort-cuda / ort-trt need their execution provider in this onnxruntime build (one-line UserError)."""
    import onnxruntime as ort

    wanted = ORT_PROVIDERS[name]
    available = ort.get_available_providers()
    if wanted not in available:
        raise UserError(f"--target {name} needs onnxruntime's {wanted}, which this onnxruntime "
                        f"{ort.__version__} lacks (it has {', '.join(available)}); install onnxruntime-gpu "
                        f"on a machine with an NVIDIA GPU, or use --target ort-cpu")


class AscendTarget(Target):
    """atc compiles each candidate (runs that fail are reported and skipped); the .om runs on the
    best .om runner here (ais_bench, else the benchmark binary)."""

    name = "ascend"

    def __init__(self, soc_version: str = "auto", cann_home: str | None = None, device_id: int = 0):
        from .ascend.atc import resolve_soc_version
        from .ascend.cann import cann_environment

        self.env = cann_environment(cann_home)
        self.soc_version = resolve_soc_version(soc_version, self.env)
        self.device_id = device_id
        self.commands: dict[str, list[str]] = {}

    def option_grid(self, space: Space) -> list[dict[str, Any]]:
        return [{"precision_mode": p, "op_select_implmode": m} for p in space.precision_modes
                for m in space.op_select_implmodes]

    def atc_command(self, onnx_path: Path, cand: Candidate, output: Path) -> list[str]:
        from .ascend.atc import build_atc_command

        return build_atc_command(onnx_path, output=output, soc_version=self.soc_version, batch_size=cand.batch,
                                 precision_mode=cand.options["precision_mode"],
                                 extra_args=[f"--op_select_implmode={cand.options['op_select_implmode']}"])

    def artefact(self, onnx_path: Path, cand: Candidate, workdir: Path) -> Path:
        from .ascend.atc import run_atc

        output = workdir / f"{onnx_path.stem}_{_slug(cand.key)}"
        command = self.atc_command(onnx_path, cand, output)
        self.commands[cand.key] = command
        result = run_atc(command, log_path=str(output) + ".atc.log", env=self.env, check=False, cwd=workdir)
        if not result.succeeded:
            first = result.errors[0].format() if result.errors else (result.tail[-1] if result.tail else "")
            raise CandidateFailed(f"atc failed (exit {result.returncode}): {first}"[:300])
        return result.om_path

    def open(self, path: Path, cand: Candidate):
        from .runtime import open_runner

        return open_runner(str(path), backend="om", device_id=self.device_id)

    def tolerance(self, cand: Candidate):
        from .golden import Tolerance

        return Tolerance.fp16()

    def reproduce(self, cand: Candidate, best_path: str) -> list[str]:
        from .ascend.atc import display_command

        onnx_best = best_path[: -len(".om")] + ".onnx" if best_path.endswith(".om") else best_path
        command = self.atc_command(Path(onnx_best), cand, Path(onnx_best[: -len(".onnx")]))
        return [display_command(command), f"lvvit-opt bench {best_path} --reference {onnx_best}"]


class CandidateFailed(Exception):
    """A candidate could not be built (atc failed, a pass refused it): reported and skipped."""


def make_target(name: str, *, soc_version: str = "auto", cann_home: str | None = None, device_id: int = 0) -> Target:
    if name not in TARGETS:
        raise UserError(f"--target {name!r}: expected one of {', '.join(TARGETS)}")
    if name == "ascend":
        return AscendTarget(soc_version, cann_home, device_id)
    return OrtTarget(name)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text)[:80] + "_" + hashlib.sha1(text.encode()).hexdigest()[:6]


# ---------------------------------------------------------------------------------------- precision adapter

def fp16_candidate(model, keep_fp32: Sequence[str] = ()):
    """The one place tune builds an fp16 model (debug's builder: fp16 with fp32 inputs/outputs,
    `keep_fp32` nodes left in fp32). Switch this adapter when debug's builder changes."""
    from .debug import to_fp16

    return to_fp16(model, keep_fp32)


def suggest_keep_nodes(model_path: str, inputs) -> list[str]:
    """The nodes `debug layers --fp16 --suggest-keep-dtype` would keep in fp32 for this model."""
    from .debug import compare_layers, suggest_keep_fp32

    report = compare_layers(model_path, fp16=True, inputs=inputs)
    return list(suggest_keep_fp32(report, inputs=inputs).nodes)


# ---------------------------------------------------------------------------------------- gate + timing

def _rows(feeds: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([f[name] for f in feeds], axis=0) for name in feeds[0]}


def _chunks(rows: Mapping[str, np.ndarray], batch: int) -> list[tuple[dict[str, np.ndarray], int]]:
    """Feeds of exactly `batch` rows (the last zero-padded) and how many rows of each are real."""
    total = next(iter(rows.values())).shape[0]
    out = []
    for start in range(0, total, batch):
        real = min(batch, total - start)
        feed = {}
        for name, array in rows.items():
            piece = array[start:start + real]
            if real < batch:
                piece = np.concatenate([piece, np.zeros((batch - real, *piece.shape[1:]), piece.dtype)])
            feed[name] = piece
        out.append((feed, real))
    return out


def run_rows(runner, rows: Mapping[str, np.ndarray], batch: int) -> tuple[dict[str, np.ndarray], list[float]]:
    """All rows through a fixed-batch runner; (outputs with padding dropped, each call's backend seconds)."""
    parts: list[dict[str, np.ndarray]] = []
    seconds = []
    for feed, real in _chunks(rows, batch):
        out = runner.infer(feed)
        seconds.append(runner.last_infer_s)
        parts.append({k: np.asarray(v)[:real] for k, v in out.items()})
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}, seconds


def gate_outputs(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], tolerance,
                 min_agreement: float) -> dict[str, Any]:
    """The gate's verdict: validate's comparison (golden.compare_outputs) plus top-1 agreement."""
    from .golden import compare_outputs

    report = compare_outputs(reference, candidate, tolerance)
    agreements = [o.top1_agreement for o in report.outputs if o.top1_agreement is not None]
    top1 = min(agreements) if agreements else None
    reasons = []
    if top1 is not None and top1 * 100.0 < min_agreement:
        rows = next(iter(reference.values())).shape[0]
        reasons.append(f"top-1 agreement {top1 * 100:.2f}% < {min_agreement:g}% ({rows} input(s))")
    for o in report.outputs:
        reasons += [f"{o.name}: {f}" for f in o.failures]
    t = report.tolerance
    return {"passed": not reasons, "top1_agreement": top1, "reasons": reasons,
            "metric": (f"top-1 agreement >= {min_agreement:g}%" if top1 is not None else
                       "top-1 n/a (no (N, classes) output)") +
                      f" and final outputs within atol={t.atol}, rtol={t.rtol}, min_cosine={t.min_cosine}",
            "cosine": min(o.cosine for o in report.outputs), "max_abs": max(o.max_abs for o in report.outputs)}


def _fps_stats(batch: int, seconds: Sequence[float]) -> dict[str, Any]:
    per_call = [batch / s for s in seconds if s > 0]
    median = statistics.median(per_call) if per_call else 0.0
    return {"fps": batch * len(seconds) / float(sum(seconds)) if seconds else 0.0, "calls": len(seconds),
            "spread_pct": 100.0 * (max(per_call) - min(per_call)) / median if len(per_call) > 1 and median else 0.0}


def _summary(batch: int, latencies: list[float], round_fps: list[float]) -> dict[str, Any]:
    lat_ms = np.asarray(latencies) * 1000.0
    median = statistics.median(round_fps)
    fps = batch * len(latencies) / float(np.sum(latencies))
    return {"fps": fps, "fps_per_batch": fps / batch, "p50_ms": float(np.median(lat_ms)),
            "p99_ms": float(np.percentile(lat_ms, 99)), "round_fps": [float(f) for f in round_fps],
            "spread_pct": 100.0 * (max(round_fps) - min(round_fps)) / median if median else 0.0,
            "iterations": len(latencies), "rounds": len(round_fps)}


# ---------------------------------------------------------------------------------------- report

@dataclass
class TuneReport:
    candidates: list[Candidate]
    best: str | None
    baseline: str | None
    target: str
    settings: dict[str, Any]
    space: dict[str, Any]
    machine: dict[str, Any]
    wall_s: float
    notes: list[str] = field(default_factory=list)
    before_after: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    reproduce: list[str] = field(default_factory=list)

    def by_key(self, key: str | None) -> Candidate | None:
        return next((c for c in self.candidates if c.key == key), None)

    @property
    def measured_s(self) -> float:
        return sum(c.measured_s for c in self.candidates if not c.reused)

    @property
    def overhead(self) -> float | None:
        return self.wall_s / self.measured_s if self.measured_s > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "best": self.best, "baseline": self.baseline, "settings": self.settings,
                "space": self.space, "machine": self.machine, "wall_s": self.wall_s, "measured_s": self.measured_s,
                "overhead": self.overhead, "notes": self.notes, "before_after": self.before_after,
                "outputs": self.outputs, "reproduce": self.reproduce,
                "candidates": [c.to_dict() for c in self.candidates]}

    def format_table(self) -> str:
        from .table import format_table

        order = {"measured": 0, "pruned": 1, "passed": 1, "unmeasured": 2, "rejected": 3, "failed": 4,
                 "duplicate": 5, "skipped": 6}
        rows, notes = [], []
        ranked = sorted(self.candidates, key=lambda c: (order.get(c.status, 9), -(c.fps or 0.0)))
        for i, c in enumerate(ranked, 1):
            t = c.timing or {}
            mark = "BEST" if c.key == self.best else ("tie" if c.tie else "")
            if c.key == self.baseline:
                mark = (mark + " baseline").strip()
            top1 = "" if c.agreement is None else f"{c.agreement * 100:.1f}%"
            fps = "" if c.fps is None else f"{c.fps:.1f}" + ("" if c.timing else " (screen)")
            opts = " ".join(f"{k}={v}" for k, v in sorted(c.options.items()))
            rows.append([i, c.batch, "+".join(c.passes) or "-", c.precision, opts, top1, c.status + ("*" if c.reused else ""),
                         fps, f"{t['fps_per_batch']:.2f}" if t else "", f"{t['p50_ms']:.2f}" if t else "",
                         f"{t['p99_ms']:.2f}" if t else "", f"{t['spread_pct']:.1f}%" if t else "", mark])
            if c.reason and c.status not in ("measured",):
                notes.append(f"  #{i} {c.status}: {c.reason}")
        table = format_table(["#", "bs", "passes", "prec", "options", "top-1", "status", "fps", "batch/s", "p50 ms",
                              "p99 ms", "spread", ""], rows, align="rrllllrrrrrrl")
        lines = [table]
        if notes:
            lines += ["why:"] + notes
        if any(c.reused for c in self.candidates):
            lines.append("* reused from an earlier run with this --out")
        return "\n".join(lines)

    def format_before_after(self) -> str:
        from .table import format_table

        if not self.before_after:
            return ""
        rows = [[r["batch"], r["before_label"], _fmt(r["before_fps"], r["before_source"]), r["after_label"],
                 _fmt(r["after_fps"], r["after_source"]),
                 "" if not (r["before_fps"] and r["after_fps"]) else f"{r['after_fps'] / r['before_fps']:.2f}x"]
                for r in self.before_after]
        return format_table(["bs", "before (no passes, fp32)", "fps", "after (tuned)", "fps", "ratio"], rows,
                            align="rlrlrr")


def _fmt(value, source: str | None = None) -> str:
    if value is None:
        return "not measured"
    return f"{value:.1f}" + (" (screen)" if source == "screen" else "")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both (higher is better on both axes)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((ox >= x and oy >= y) and (ox > x or oy > y) for j, (ox, oy) in enumerate(points) if j != i):
            front.append(i)
    return front


def plot_tune(report: TuneReport, out: str | os.PathLike) -> Path:
    """fps vs top-1 agreement for every gated candidate; the Pareto front of those that pass joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fileio import atomic_path

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=90)
    shown = [c for c in report.candidates if c.fps is not None and c.agreement is not None]
    good = [c for c in shown if c.status in ("measured", "pruned", "passed", "unmeasured")]
    bad = [c for c in shown if c not in good]
    if good:
        ax.scatter([c.agreement * 100 for c in good], [c.fps for c in good], c="tab:blue", s=22,
                   label="passes the gate")
    if bad:
        ax.scatter([c.agreement * 100 for c in bad], [c.fps for c in bad], c="tab:red", marker="x", s=30,
                   label="rejected by the gate")
    front = [good[i] for i in pareto_front([(c.fps, c.agreement) for c in good])]
    front.sort(key=lambda c: c.agreement)
    if front:
        ax.plot([c.agreement * 100 for c in front], [c.fps for c in front], "-o", c="tab:green", ms=11, mfc="none",
                mew=2, label="Pareto front (fps, agreement)")
    for c in shown:  # which candidate is which: batch, passes, precision
        ax.annotate(f"bs{c.batch} {'+'.join(p[:8] for p in c.passes) or '-'} {c.precision}", (c.agreement * 100, c.fps),
                    xytext=(6, -3), textcoords="offset points", fontsize=6, color="dimgrey")
    best = report.by_key(report.best)
    if best is not None and best.agreement is not None:
        ax.scatter([best.agreement * 100], [best.fps], marker="*", s=220, c="gold", edgecolors="black", zorder=5,
                   label=f"chosen: {best.label()}")
    threshold = report.settings.get("min_agreement")
    if threshold is not None:
        ax.axvline(threshold, ls="--", c="grey", lw=1, label=f"gate {threshold:g}%")
    lowest = min([c.agreement * 100 for c in shown] + [threshold or 100.0])
    ax.set_xlim(lowest - max(0.5, (100 - lowest) * 0.1), 100 + max(0.5, (100 - lowest) * 0.35))
    ax.set_xlabel("top-1 agreement with the fp32 original (%)")
    ax.set_ylabel("images / s (higher is better)")
    ax.set_title(f"tune {report.target}: {len(shown)} candidates ({report.settings.get('model_name', '')})",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------- the search

def _sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256_arrays(rows: Mapping[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(rows):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(rows[name]).tobytes())
    return digest.hexdigest()


def _per_image_bytes(model) -> int:
    """Activation bytes of one image (every tensor shape inference sizes, float32 at batch 1)."""
    import onnx

    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    for value in skeleton.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton, data_prop=True)
    except Exception:
        return 0
    total = 0
    for value in inferred.graph.value_info:
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        if dims and all(d > 0 for d in dims):
            total += math.prod(dims) * 4
    return total


def bound_batches(batches: Sequence[int], model, weights: int, log) -> tuple[list[int], list[str]]:
    """Drop batch sizes whose activations (every tensor, twice: two sessions may hold them) do not fit."""
    from .resources import USABLE_SHARE, available_memory, format_bytes

    per_image = _per_image_bytes(model)
    available = available_memory()
    if not per_image or available is None:
        return list(batches), []
    kept, notes = [], []
    for b in batches:
        need = 2 * (per_image * b + weights)
        if need > available * USABLE_SHARE and b > min(batches):
            notes.append(f"batch {b} left out: needs about {format_bytes(need)}, {format_bytes(available)} available")
        else:
            kept.append(b)
    for note in notes:
        log.warning(note)
    return kept, notes


@dataclass
class TuneOptions:
    model: str  # an .onnx path (export a --model NAME first: see cli/tune_cmd.py)
    inputs: Any
    out: str
    target: str = "ort-cpu"
    budget_s: float = 600.0
    space: Space | None = None
    min_agreement: float = 99.5
    rounds: int = 5
    warmup_s: float = 1.0
    max_finalists: int = 6
    prune_margin: float = 0.25
    soc_version: str = "auto"
    cann_home: str | None = None
    device_id: int = 0
    model_name: str | None = None
    # batch -> a static-batch ONNX of the same weights (the seed's way; `--model NAME` exports them):
    # passes that need static shapes (softmax_transpose) then match at every batch. `model` is the reference.
    per_batch: dict[int, str] | None = None


class _Search:
    def __init__(self, options: TuneOptions, log):
        self.o = options
        self.log = log
        self.start = time.perf_counter()
        self.deadline = self.start + options.budget_s
        self.out = Path(options.out)
        self.notes: list[str] = []

    # -- state
    def load_state(self, fingerprint: dict) -> dict[str, dict]:
        path = self.out / STATE_FILE
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"--out {self.out}: {STATE_FILE} is unreadable ({type(exc).__name__}); remove it or "
                            f"give another --out") from None
        if data.get("version") != STATE_VERSION or data.get("fingerprint") != fingerprint:
            differs = [k for k in fingerprint if (data.get("fingerprint") or {}).get(k) != fingerprint[k]]
            raise UserError(f"--out {self.out} holds a tune of something else ({', '.join(differs) or 'version'} "
                            f"differ); give another --out or remove {path}")
        return dict(data.get("candidates", {}))

    def save_state(self, fingerprint: dict, candidates: list[Candidate], previous: Mapping[str, dict]) -> None:
        from .fileio import write_text_atomic

        merged = dict(previous)
        merged.update({c.key: c.to_dict() for c in candidates if c.status != "pending"})
        write_text_atomic(self.out / STATE_FILE, json.dumps({"version": STATE_VERSION, "fingerprint": fingerprint,
                                                             "candidates": merged}, indent=1) + "\n")

    def left(self) -> float:
        return self.deadline - time.perf_counter()


def tune(options: TuneOptions, log: LogCallback = None,
         build_hook: Callable[[Candidate, Any], Any] | None = None) -> TuneReport:
    """Search `options.space` on `options.target`; see the module docstring.

    build_hook(candidate, onnx.ModelProto) -> ModelProto: called on every built ONNX before it
    is written (tests inject a faulty candidate through it).
    """
    from .bench import machine_info
    from .fileio import load_onnx, require_writable_dir, save_onnx, weights_nbytes
    from .inputs import load_inputs
    from .passes import run_pipeline
    from .runtime import open_runner

    log = reporter(logger, log)
    s = _Search(options, log)
    target = make_target(options.target, soc_version=options.soc_version, cann_home=options.cann_home,
                         device_id=options.device_id)
    space = options.space or default_space(options.target)
    if not 0 < options.min_agreement <= 100:
        raise UserError(f"--min-agreement {options.min_agreement}: expected a percentage in (0, 100]")
    s.out.mkdir(parents=True, exist_ok=True)
    require_writable_dir(s.out, f"--out {s.out}")
    source = load_onnx(options.model)

    # reference outputs of the fp32 original on the user's inputs
    with open_runner(options.model, backend="onnxruntime") as ref_runner:
        input_set = load_inputs(options.inputs, ref_runner.inputs, model=options.model)
        rows = _rows(input_set.feeds)
        ref_batch = ref_runner.inputs[0].batch or next(iter(rows.values())).shape[0]
        reference, _ = run_rows(ref_runner, rows, ref_batch)
    n_rows = next(iter(rows.values())).shape[0]
    log(f"gate inputs: {input_set.source} ({n_rows} row(s))")
    if input_set.kind == "random":
        s.notes.append("the gate ran on seeded RANDOM inputs, not real data: agreement says little about accuracy")

    static = ref_runner.inputs[0].batch
    if options.per_batch:
        missing = [b for b in space.batch_sizes if b not in options.per_batch]
        if missing:
            s.notes.append(f"no model for batch size(s) {', '.join(map(str, missing))}: left out")
        space.batch_sizes = [b for b in space.batch_sizes if b in options.per_batch]
    elif static is not None and any(b != static for b in space.batch_sizes):
        dropped = [b for b in space.batch_sizes if b != static]
        s.notes.append(f"{options.model} has a static batch of {static}: batch size(s) "
                       f"{', '.join(map(str, dropped))} left out (export it with a dynamic batch to tune them)")
        log.warning(s.notes[-1])
        space.batch_sizes = [static]
    batches, mem_notes = bound_batches(space.batch_sizes, source, weights_nbytes(source), log)
    space.batch_sizes = batches
    s.notes += space.notes + mem_notes
    if "fp16-keep" in space.precisions and options.target != "ascend":
        s.notes.append("fp16-keep is built only where plain fp16 fails the gate (debug layers' keep-dtype search)")
    fingerprint = {"model_sha256": _sha256_file(options.model), "inputs_sha256": _sha256_arrays(rows),
                   "target": options.target, "min_agreement": options.min_agreement,
                   "soc_version": getattr(target, "soc_version", None),
                   "per_batch_sha256": {str(b): _sha256_file(p) for b, p in sorted((options.per_batch or {}).items())
                                        if b in space.batch_sizes}}
    previous = s.load_state(fingerprint)
    candidates = enumerate_candidates(space, target)
    for c in candidates:
        if c.key in previous:
            old = Candidate.from_dict(previous[c.key])
            if old.status not in ("pending", "unmeasured"):
                c.status, c.reason, c.gate, c.screen, c.timing = old.status, old.reason, old.gate, old.screen, old.timing
                c.measured_s, c.reused = old.measured_s, True
    reused = sum(c.reused for c in candidates)
    log(f"tune {options.target}: {len(candidates)} candidate(s) ({reused} reused from {s.out / STATE_FILE}), "
        f"budget {options.budget_s:.0f} s")

    workdir_handle = tempfile.TemporaryDirectory(prefix="lvvit-tune-")
    workdir = Path(workdir_handle.name)
    built: dict[tuple, tuple[Path, str]] = {}  # variant -> (onnx path, graph hash)
    hashes: dict[tuple, str] = {}  # (precision, batch, graph hash) -> first candidate key with that graph
    keep_nodes: dict[tuple, list[str]] = {tuple(c.passes): c.gate["keep_fp32"] for c in candidates
                                          if c.reused and c.gate and "keep_fp32" in c.gate}

    def variant(c: Candidate) -> tuple:
        return c.variant + ((c.batch,) if options.per_batch else ())

    def build_onnx(c: Candidate) -> Path:
        if variant(c) in built:
            return built[variant(c)][0]
        # the batch is the runner's (a dynamic ONNX runs at any batch) or atc's --input_shape, not a pass,
        # unless there is one static-batch ONNX per batch (per_batch)
        base = load_onnx(options.per_batch[c.batch]) if options.per_batch else source
        model = run_pipeline(base, list(c.passes)).model if c.passes else base
        if c.precision == "fp16":
            model = fp16_candidate(model)
        elif c.precision == "fp16-keep":
            model = fp16_candidate(model, keep_nodes[tuple(c.passes)])
        if build_hook is not None:
            model = build_hook(c, model)
        path = workdir / f"{_slug('|'.join(map(str, variant(c))))}.onnx"
        save_onnx(model, path)
        built[variant(c)] = (path, hashlib.sha256(model.SerializeToString()).hexdigest())
        return path

    def keep_dtype_for(c: Candidate) -> str | None:
        """None when fp16-keep should be built for c's pass set, else why it is skipped."""
        siblings = [o for o in candidates if o.passes == c.passes and o.precision == "fp16" and o.gate]
        if any(o.gate["passed"] for o in siblings):
            return "plain fp16 already passes the gate with these passes"
        if tuple(c.passes) not in keep_nodes:
            fp32 = Candidate(min(space.batch_sizes), c.passes, "fp32", c.options)
            log(f"keep-dtype search for {'+'.join(c.passes) or 'no passes'} (debug layers --fp16)")
            try:
                keep_nodes[tuple(c.passes)] = suggest_keep_nodes(str(build_onnx(fp32)), options.inputs)
            except UserError as exc:
                keep_nodes[tuple(c.passes)] = []
                return f"keep-dtype search failed: {exc}"
        if not keep_nodes[tuple(c.passes)]:
            return "the keep-dtype search found no node to keep in fp32"
        return None

    # -- build, gate and screen every candidate
    gate_deadline = s.start + 0.6 * options.budget_s
    todo = [c for c in candidates if c.status == "pending"]
    try:
        with task("tune: build + gate", total=len(todo), unit="candidate") as bar:
            for c in sorted(todo, key=lambda c: (PRECISIONS.index(c.precision), c.passes, c.batch)):
                bar.update(1)
                if time.perf_counter() > gate_deadline:
                    c.status, c.reason = "unmeasured", "budget spent before it could be gated"
                    continue
                if c.precision == "fp16-keep":
                    why = keep_dtype_for(c)
                    if why:
                        c.status, c.reason = "skipped", why
                        continue
                try:
                    path = build_onnx(c)
                    graph = built[variant(c)][1]
                    twin = hashes.setdefault((c.precision, c.batch, graph, tuple(sorted(c.options.items()))), c.key)
                    if twin != c.key:
                        c.status, c.reason = "duplicate", f"same graph as {twin} (its passes changed nothing here)"
                        continue
                    c.artefact = str(target.artefact(path, c, workdir))
                    _gate_one(c, target, rows, reference, options.min_agreement)
                    if c.precision == "fp16-keep":
                        c.gate["keep_fp32"] = keep_nodes[tuple(c.passes)]
                except (CandidateFailed, UserError, ToolFailed) as exc:
                    c.status, c.reason = "failed", " ".join(str(exc).split())[:300]
                    log.warning(f"{c.label()}: {c.reason}; skipped")
                s.save_state(fingerprint, candidates, previous)
                bar.set_postfix_str(f"{c.label()}: {c.status}")

        # -- prune on the screen, then measure the finalists interleaved
        default_opts = target.default_options(space)
        baseline = next((c for c in candidates if c.batch == min(space.batch_sizes) and not c.passes
                         and c.precision == "fp32" and c.options == default_opts), None)
        finalists = _prune(candidates, baseline, options)
        fresh = [c for c in finalists if not c.timing]
        for c in fresh:
            if not (c.artefact and Path(c.artefact).is_file()):  # reused from an earlier run: build it again
                c.artefact = str(target.artefact(build_onnx(c), c, workdir))
        if fresh:
            _measure(fresh, target, rows, options, s)
        for c in finalists:
            if c.timing:
                c.status = "measured"
        s.save_state(fingerprint, candidates, previous)

        measured = [c for c in candidates if c.status == "measured" and c.timing]
        best = max(measured, key=lambda c: c.timing["fps"]) if measured else None
        for c in measured:
            c.tie = best is not None and c is not best and max(c.timing["round_fps"]) >= min(best.timing["round_fps"])
        if len({c.reused for c in measured}) > 1:
            s.notes.append("some figures are reused from an earlier run: they were not measured interleaved "
                           "with this run's candidates")
        report = TuneReport(candidates, best.key if best else None, baseline.key if baseline else None,
                            options.target,
                            {"model": options.model, "model_name": options.model_name or Path(options.model).name,
                             "inputs": input_set.source, "min_agreement": options.min_agreement,
                             "budget_s": options.budget_s, "rounds": options.rounds, "warmup_s": options.warmup_s,
                             "max_finalists": options.max_finalists, "prune_margin": options.prune_margin},
                            space.to_dict(), machine_info(), 0.0, s.notes)
        report.before_after = _before_after(candidates, best, default_opts)
        if best is not None:
            _write_best(report, best, target, build_onnx, workdir, options)
        else:
            s.notes.append("no candidate passed the gate and was measured: nothing written as the best model")
    finally:
        workdir_handle.cleanup()
    report.wall_s = time.perf_counter() - s.start
    plot_tune(report, s.out / PLOT_FILE)
    report.outputs["plot"] = str(s.out / PLOT_FILE)
    report.outputs["report"] = str(s.out / REPORT_FILE)
    from .fileio import write_text_atomic

    write_text_atomic(s.out / REPORT_FILE, json.dumps(report.to_dict(), indent=1, default=str) + "\n")
    return report


def _gate_one(c: Candidate, target: Target, rows, reference, min_agreement: float) -> None:
    runner = target.open(Path(c.artefact), c)
    try:
        outputs, seconds = run_rows(runner, rows, c.batch)
        timed = seconds[1:]  # the first call is the warm-up
        start = time.perf_counter()
        first = _chunks(rows, c.batch)[0][0]
        while len(timed) < 3 or (sum(timed) < 0.3 and len(timed) < 50):  # a screen needs a few calls
            runner.infer(first)
            timed.append(runner.last_infer_s)
        c.measured_s += sum(seconds) + (time.perf_counter() - start)
    finally:
        runner.close()
    c.gate = gate_outputs(reference, outputs, target.tolerance(c), min_agreement)
    c.screen = _fps_stats(c.batch, timed)
    c.status = "passed" if c.gate["passed"] else "rejected"
    c.reason = "; ".join(c.gate["reasons"])


def _prune(candidates: list[Candidate], baseline: Candidate | None, o: TuneOptions) -> list[Candidate]:
    """Cheap pruning on the screen figures; returns the finalists (the baseline always among them)."""
    alive = [c for c in candidates if c.status in ("passed", "measured", "pruned") and c.screen]
    for c in alive:
        if c.status == "pruned":
            c.status, c.reason = "passed", ""
    groups: dict[tuple, list[Candidate]] = {}
    for c in alive:
        groups.setdefault((tuple(c.passes), c.precision, tuple(sorted(c.options.items()))), []).append(c)
    for group in groups.values():
        group.sort(key=lambda c: c.batch)
        best_small = None
        for c in group:
            if best_small is not None:
                spread = max(c.screen["spread_pct"], best_small.screen["spread_pct"], 5.0) / 100.0
                if c.screen["fps"] < best_small.screen["fps"] * (1 - spread):
                    c.status = "pruned"
                    c.reason = (f"batch {c.batch} screens at {c.screen['fps']:.1f} fps, below batch "
                                f"{best_small.batch}'s {best_small.screen['fps']:.1f} by more than the spread "
                                f"({spread * 100:.0f}%)")
                    continue
            if best_small is None or c.screen["fps"] > best_small.screen["fps"]:
                best_small = c
    left = [c for c in alive if c.status != "pruned"]
    if left:
        top = max(c.screen["fps"] for c in left)
        for c in left:
            if c.screen["fps"] < top * (1 - o.prune_margin):
                c.status = "pruned"
                c.reason = f"screens at {c.screen['fps']:.1f} fps, under {100 * (1 - o.prune_margin):.0f}% of the best screen ({top:.1f})"
    left = sorted([c for c in alive if c.status != "pruned"], key=lambda c: -c.screen["fps"])
    for c in left[o.max_finalists:]:
        c.status, c.reason = "pruned", f"not among the {o.max_finalists} fastest at the screen"
    finalists = left[:o.max_finalists]
    if baseline is not None and baseline in alive and baseline not in finalists:
        baseline.status, baseline.reason = "passed", ""
        finalists.append(baseline)  # the default config is always measured: the ratio needs it
    return finalists


def _measure(finalists: list[Candidate], target: Target, rows, o: TuneOptions, s: _Search) -> None:
    """Round-robin after a warm-up, so machine noise hits every finalist alike."""
    from .bench import timed_slot, warm_up

    runners, feeds = [], []
    try:
        for c in finalists:
            runners.append(target.open(Path(c.artefact), c))
            feeds.append(_chunks(rows, c.batch)[0][0])
        reserve = 2.0 + 0.05 * o.budget_s  # plot, report, writing the best model
        available = max(0.0, s.left() - reserve)
        warm = min(o.warmup_s, available * 0.15 / max(1, len(runners)))
        for c, runner, feed in zip(finalists, runners, feeds):
            start = time.perf_counter()
            warm_up([runner], [feed], warm)
            c.measured_s += time.perf_counter() - start
        available = max(0.0, s.left() - reserve)
        rounds = o.rounds
        slot = available / (rounds * len(runners))
        if slot < 0.05:
            s.notes.append(f"the budget left {available:.1f} s for {len(runners)} finalist(s): each got one call "
                           f"per round; raise --budget for steadier figures")
            slot = 0.0
        s.log(f"measuring {len(runners)} finalist(s) interleaved: {rounds} rounds x {slot:.2f} s")
        latencies: list[list[float]] = [[] for _ in runners]
        round_fps: list[list[float]] = [[] for _ in runners]
        with task("tune: measure", total=rounds * len(runners), unit="slot") as bar:
            for done in range(rounds):
                if done >= 2 and s.left() < reserve:
                    s.notes.append(f"measurement stopped after {done} of {rounds} rounds: budget spent")
                    break
                for i, (runner, feed) in enumerate(zip(runners, feeds)):
                    start = time.perf_counter()
                    spent, count = timed_slot(runner, feed, slot, latencies[i])
                    finalists[i].measured_s += time.perf_counter() - start
                    round_fps[i].append(finalists[i].batch * count / spent)
                    bar.update(1)
        for c, lat, fps in zip(finalists, latencies, round_fps):
            c.timing = _summary(c.batch, lat, fps)
    finally:
        for runner in runners:
            runner.close()


def _before_after(candidates: list[Candidate], best: Candidate | None, default_opts: dict) -> list[dict]:
    """The seed's table: no passes / fp32 vs the tuned passes and precision, at batch 1 and the best batch."""
    if best is None:
        return []

    def find(batch, passes, precision, opts):
        c = next((c for c in candidates if c.batch == batch and c.passes == passes and c.precision == precision
                  and c.options == opts), None)
        return c

    rows = []
    for batch in sorted({min(c.batch for c in candidates), best.batch}):
        before = find(batch, [], "fp32", default_opts)
        after = find(batch, best.passes, best.precision, best.options)
        rows.append({"batch": batch,
                     "before_label": before.label() if before else f"bs{batch} no passes fp32",
                     "before_fps": before.fps if before and before.fps and before.status in
                     ("measured", "pruned", "passed") else None,
                     "before_source": None if not before else ("measured" if before.timing else "screen"),
                     "after_label": after.label() if after else "",
                     "after_fps": after.fps if after and after.fps and after.status in
                     ("measured", "pruned", "passed") else None,
                     "after_source": None if not after else ("measured" if after.timing else "screen")})
    return rows


def _write_best(report: TuneReport, best: Candidate, target: Target, build_onnx, workdir: Path,
                o: TuneOptions) -> None:
    """OUT/best.onnx (and best.om for Ascend) and reproduce.sh with the exact commands."""
    import shutil

    from .fileio import atomic_path, write_text_atomic

    out = Path(o.out)
    onnx_path = build_onnx(best)
    with atomic_path(out / "best.onnx", suffix=".onnx") as tmp:
        shutil.copyfile(onnx_path, tmp)
    report.outputs["best_onnx"] = str(out / "best.onnx")
    best_path = str(out / "best.onnx")
    if isinstance(target, AscendTarget):
        artefact = best.artefact if best.artefact and Path(best.artefact).is_file() else None
        if artefact is None:
            artefact = str(target.artefact(onnx_path, best, workdir))
        with atomic_path(out / "best.om", suffix=".om") as tmp:
            shutil.copyfile(artefact, tmp)
        best_path = str(out / "best.om")
        report.outputs["best_om"] = best_path
    apply_out = str(out / "best.onnx") if best.precision == "fp32" else str(out / "best_fp32.onnx")
    lines = ["#!/bin/sh", f"# lvvit-opt tune: {best.label()} ({best.timing['fps']:.1f} fps on {o.target})", "set -e"]
    source = (o.per_batch or {}).get(best.batch, o.model)
    if best.passes:
        lines.append(f"lvvit-opt apply {source} -o {apply_out} --passes {','.join(best.passes)}")
    else:
        lines.append(f"cp {source} {apply_out}   # no pass: the original graph")
    if best.precision != "fp32":
        keep = ""
        if best.precision == "fp16-keep":
            keep = f", keep_fp32={_keep_list(report, best)!r}"
        lines.append(f"python -c \"import onnx; from lvvit_opt.debug import to_fp16; "
                     f"onnx.save(to_fp16(onnx.load('{apply_out}'){keep}), '{out / 'best.onnx'}')\"")
    lines += target.reproduce(best, best_path)
    report.reproduce = lines[3:]
    write_text_atomic(out / REPRODUCE_FILE, "\n".join(lines) + "\n")
    report.outputs["reproduce"] = str(out / REPRODUCE_FILE)


def _keep_list(report: TuneReport, best: Candidate) -> list[str]:
    return list((best.gate or {}).get("keep_fp32", []))
