"""`tune`: the fastest deployment of a model that keeps its accuracy, measured, not guessed.

The search space is built from what the tool already has: batch sizes (bounded by memory),
pass sets (the pass registry; the batch is set by the runner or atc's --input_shape, so
fix_shapes is not among them), precision (fp32, fp16 as
`debug layers --fp16` builds it, fp16 with the nodes `debug layers --suggest-keep-dtype`
keeps in fp32) and target options (onnxruntime: intra-op threads and graph optimisation;
Ascend: atc --precision_mode, --op_select_implmode and CANN's transpose.py as installed or
whitelist-patched in a private opp tree, see tune.opp). `--space FILE` (JSON or YAML)
replaces any of these lists.

Every candidate is built, then gated on the user's inputs against the fp32 original: top-1
agreement (default >= 99.5 %) and validate's final-output tolerance (golden.compare_outputs;
tight for fp32 ONNX, the fp16 one for fp16 and .om). The gate's own inference calls are timed
too (the first is a warm-up): that screen prunes the slow ones cheaply (a batch size slower
than a smaller one by more than the spread, anything far below the best). The survivors and
the baseline (batch 1, fp32, no passes, default options) are then measured in interleaved
rounds whose order rotates (after a warm-up; at least --rounds, more while the budget lasts
until the intervals are narrow enough). The choice is measure.stats' (choose_best): every
candidate with no measurable difference from the fastest is a tie; among the ties measurably
faster than the baseline the simplest configuration wins (fp32 before fp16, fewer passes,
default options, smaller batch); when none is, the baseline stays the best and tune says
"no configuration measurably faster than the baseline".

State (gate, screen and final figures per candidate) is written atomically to
OUT/tune_state.json after every candidate, so a rerun with the same --out reuses them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import secrets
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from lvvit_opt.core.errors import LvvitOptError, UserError
from lvvit_opt.core.fileio import TEMP_MARKER
from lvvit_opt.core.logs import LogCallback, reporter
from lvvit_opt.core.progress import task
from lvvit_opt.tune.report import TuneReport, pareto_front, plot_tune  # noqa: F401  (public API)
from lvvit_opt.tune.space import (ASCEND_PRECISION_MODES, DEFAULT_BATCHES, GRAPH_OPT_LEVELS, IMPLMODES, PRECISIONS,
                                  SPACE_KEYS, TARGETS, Candidate, Space, default_space, enumerate_candidates,
                                  load_space, parse_budget, space_from_mapping)

logger = logging.getLogger(__name__)

STATE_FILE = "tune_state.json"
REPORT_FILE = "tune.json"
PLOT_FILE = "tune.png"
REPRODUCE_FILE = "reproduce.sh"
# best_fp32.onnx: what an earlier reproduce.sh wrote; best.keep_dtype.cfg: atc's --keep_dtype file of an ascend fp16-keep best
BEST_FILES = ("best.onnx", "best.om", "best_fp32.onnx", "best.keep_dtype.cfg")
TUNE_FILES = (STATE_FILE, REPORT_FILE, PLOT_FILE, REPRODUCE_FILE, *BEST_FILES)


def tune_files(out: str | os.PathLike) -> dict[str, Path]:
    """The files tune writes under --out with fixed names (label -> path), for the output guard."""
    return {f"tune's {name}": Path(out) / name for name in TUNE_FILES}


STATE_VERSION = 1
ORT_PROVIDERS = {"ort-cpu": "CPUExecutionProvider", "ort-cuda": "CUDAExecutionProvider",
                 "ort-trt": "TensorrtExecutionProvider"}

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
        from lvvit_opt.verify.golden import Tolerance

        if cand.precision == "int8":  # quantize's gate (cosine 0.99); top-1 agreement as for every candidate
            from lvvit_opt.quantize.rollback import Gate

            return Gate().tolerance()
        return Tolerance.fp16() if cand.precision != "fp32" else Tolerance.onnx()

    def reproduce(self, cand: Candidate, best_path: str, script) -> None:
        """Add the commands that build and measure the best artefact to `script` (core.shell.ShellScript)."""

    def prepare(self, space: Space, out: Path) -> None:
        """Settle the target's own dimensions before the candidates are enumerated (notes in space.notes)."""

    def build_options(self, onnx_path: Path, cand: Candidate) -> tuple[dict[str, Any], str]:
        """The options that decide the built artefact, and why they differ from cand.options ('' if not)."""
        return dict(cand.options), ""

    def provenance(self) -> dict[str, Any]:
        """What besides the model, inputs and options decides this target's stored results (state reuse)."""
        return {}


class OrtTarget(Target):
    def __init__(self, name: str = "ort-cpu"):
        self.name = name
        self.provider = ORT_PROVIDERS[name]
        check_ort_target(name)

    def option_grid(self, space: Space) -> list[dict[str, Any]]:
        return [{"threads": t, "graph_opt": g} for t in space.threads for g in space.graph_opt]

    def open(self, path: Path, cand: Candidate):
        from lvvit_opt.runtime import open_runner

        providers = [self.provider] + (["CPUExecutionProvider"] if self.provider != "CPUExecutionProvider" else [])
        return open_runner(str(path), backend="onnxruntime", threads=cand.options["threads"], providers=providers,
                           graph_opt=cand.options["graph_opt"])

    def reproduce(self, cand: Candidate, best_path: str, script) -> None:
        provider = {"ort-cuda": ["--providers", "cuda"], "ort-trt": ["--providers", "tensorrt"]}.get(self.name, [])
        # the level the candidate was measured at, always spelled out: the line is the measurement
        script.run(["lvvit-opt", "bench", script.path(best_path), "--batch-sizes", str(cand.batch),
                    "--threads", str(cand.options["threads"]), "--graph-opt", str(cand.options["graph_opt"]),
                    *provider])


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
        from lvvit_opt.ascend.atc import resolve_soc_version
        from lvvit_opt.core.cann import cann_environment

        self.env = cann_environment(cann_home)
        self.soc_version = resolve_soc_version(soc_version, self.env)
        self.device_id = device_id
        self.commands: dict[str, list[str]] = {}
        self.keep_nodes: dict[tuple, list[str]] = {}  # pass set -> nodes for --keep_dtype (fp16-keep)
        self.out: Path | None = None
        self.installed: tuple[Path, Path] | None = None  # (transpose.py, its opp tree) as installed
        self.opps: dict[tuple, Any] = {}  # (onnx sha256, batch) -> tune.opp.PrivateOpp
        self.candidate_opp: dict[str, Any] = {}  # candidate key -> the PrivateOpp it compiled against

    def option_grid(self, space: Space) -> list[dict[str, Any]]:
        return [{"precision_mode": p, "op_select_implmode": m, "whitelist": w} for p in space.precision_modes
                for m in space.op_select_implmodes for w in (space.whitelist or ["unpatched"])]

    def prepare(self, space: Space, out: Path) -> None:
        """`patched` needs the transpose.py atc reads; without one it is left out (a note), or refused
        when it is all the space asks for."""
        from lvvit_opt.tune.opp import installed_transpose

        self.out = Path(out)
        if "patched" not in space.whitelist:
            return
        try:
            self.installed = installed_transpose(self.env)
        except UserError as exc:
            why = str(exc).splitlines()[0].replace(" Looked in:", "")
            if space.whitelist == ["patched"]:
                raise UserError(f"space whitelist [patched]: {why}") from None
            space.whitelist = [w for w in space.whitelist if w != "patched"]
            space.notes.append(f"ascend: whitelist patched left out: {why}")

    def provenance(self) -> dict[str, Any]:
        """atc compiles against the installed transpose.py: a stored result is reused only with the same one."""
        from lvvit_opt.core.readers import file_sha256
        from lvvit_opt.tune.opp import installed_transpose

        try:
            transpose = self.installed[0] if self.installed else installed_transpose(self.env)[0]
        except UserError:
            return {"transpose_sha256": None}
        return {"transpose_sha256": file_sha256(transpose, "transpose.py")}

    def private_opp(self, onnx_path: Path, cand: Candidate):
        """The PrivateOpp of a `patched` candidate: one per distinct (graph, batch), and one tree per
        distinct shape set (tune.opp names it by the shapes)."""
        from lvvit_opt.tune.opp import build_private_opp, installed_transpose

        key = (_sha256_file(onnx_path), cand.batch)
        if key not in self.opps:
            if self.installed is None:  # prepare() locates it; a candidate made by hand may come first
                self.installed = installed_transpose(self.env)
            if self.out is None:
                raise UserError("whitelist patched: no --out to build the private opp tree in")
            transpose, opp = self.installed
            shapes = transpose_shapes_at(onnx_path, cand.batch)
            built = next((o for o in self.opps.values() if o.shapes == shapes), None)
            self.opps[key] = built or build_private_opp(transpose, opp, shapes, self.out)
        return self.opps[key]

    def build_options(self, onnx_path: Path, cand: Candidate) -> tuple[dict[str, Any], str]:
        """The options that decide the .om, and why they differ from cand's: a patch that adds nothing
        (the installed transpose.py already selects Transpose for every shape) builds the unpatched .om."""
        if cand.options.get("whitelist") != "patched":
            return dict(cand.options), ""
        private = self.private_opp(onnx_path, cand)
        if private.root is not None:
            return dict(cand.options), ""
        return dict(cand.options, whitelist="unpatched"), f"whitelist patched changes nothing: {private.message}"

    def atc_command(self, onnx_path: Path, cand: Candidate, output: Path) -> list[str]:
        from lvvit_opt.ascend.atc import build_atc_command, write_keep_dtype_file

        keep = None
        if cand.precision == "fp16-keep":  # atc's --keep_dtype file: one node name a line
            keep = write_keep_dtype_file(Path(str(output) + ".keep_dtype.cfg"),
                                         node_names=self.keep_nodes[tuple(cand.passes)])
        return build_atc_command(onnx_path, output=output, soc_version=self.soc_version, batch_size=cand.batch,
                                 precision_mode=cand.options["precision_mode"], keep_dtype=keep,
                                 extra_args=[f"--op_select_implmode={cand.options['op_select_implmode']}"])

    def artefact(self, onnx_path: Path, cand: Candidate, workdir: Path) -> Path:
        from lvvit_opt.ascend.atc import run_atc

        output = workdir / f"{onnx_path.stem}_{_slug(cand.key)}"
        command = self.atc_command(onnx_path, cand, output)
        self.commands[cand.key] = command
        env = self.env
        if cand.options.get("whitelist") == "patched":
            private = self.private_opp(onnx_path, cand)
            self.candidate_opp[cand.key] = private
            env = private.env(self.env)  # ASCEND_OPP_PATH: the private tree (as installed when it adds nothing)
        result = run_atc(command, log_path=str(output) + ".atc.log", env=env, check=False, cwd=workdir)
        if not result.succeeded:
            first = result.errors[0].format() if result.errors else (result.tail[-1] if result.tail else "")
            raise CandidateFailed(f"atc failed (exit {result.returncode}): {first}"[:300])
        return result.om_path

    def open(self, path: Path, cand: Candidate):
        from lvvit_opt.runtime import open_runner

        return open_runner(str(path), backend="om", device_id=self.device_id)

    def tolerance(self, cand: Candidate):
        from lvvit_opt.verify.golden import Tolerance

        return Tolerance.fp16()

    def reproduce(self, cand: Candidate, best_path: str, script) -> None:
        onnx_best = best_path[: -len(".om")] + ".onnx" if best_path.endswith(".om") else best_path
        command = self.atc_command(Path(onnx_best), cand, Path(onnx_best[: -len(".onnx")]))
        private = self.candidate_opp.get(cand.key)
        if private is not None and private.root is not None:
            private.reproduce(self.env, script)
        elif cand.options.get("whitelist") == "patched":
            script.comment(f"whitelist patched: {private.message if private else 'not built'}; atc reads the "
                           "installed transpose.py")
        script.run(script.path_flags(command, ("--model=", "--output=", "--keep_dtype=")))
        script.run(["lvvit-opt", "bench", script.path(best_path), "--reference", script.path(onnx_best)])


class CandidateFailed(Exception):
    """A candidate could not be built (atc failed, a pass refused it): reported and skipped."""


def make_target(name: str, *, soc_version: str = "auto", cann_home: str | None = None, device_id: int = 0) -> Target:
    if name not in TARGETS:
        raise UserError(f"--target {name!r}: expected one of {', '.join(TARGETS)}")
    if name == "ascend":
        return AscendTarget(soc_version, cann_home, device_id)
    return OrtTarget(name)


def transpose_shapes_at(onnx_path: str | os.PathLike, batch: int) -> list[tuple[int, ...]]:
    """The static Transpose input shapes atc sees when it compiles onnx_path at `batch` (its
    --input_shape fixes a symbolic first dim), as `lvvit-opt whitelist shapes` reports them."""
    from lvvit_opt.core.onnx_files import load_onnx
    from lvvit_opt.whitelist import static_shapes, transpose_shapes

    model = load_onnx(onnx_path, load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if value.name not in initializers and dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = batch
    return static_shapes(transpose_shapes(model))


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text)[:80] + "_" + hashlib.sha1(text.encode()).hexdigest()[:6]


# ---------------------------------------------------------------------------------------- precision adapter

def fp16_candidate(model, keep_fp32: Sequence[str] = ()):
    """The one place tune builds an fp16 model: the `to_fp16` pass's conversion (fp32 inputs/outputs,
    `keep_fp32` nodes left in fp32), the one `debug layers --fp16` previews and reproduce.sh runs."""
    from lvvit_opt.passes.to_fp16 import convert_to_fp16

    return convert_to_fp16(model, keep_nodes=keep_fp32).model


def suggest_keep_nodes(model_path: str, inputs) -> list[str]:
    """The nodes `debug layers --fp16 --suggest-keep-dtype` would keep in fp32 for this model."""
    from lvvit_opt.debug.layers import compare_layers, suggest_keep_fp32

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
    from lvvit_opt.verify.golden import compare_outputs

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
        from lvvit_opt.core.shape_inference import infer_shapes_bounded

        inferred = infer_shapes_bounded(skeleton)
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
    from lvvit_opt.core.resources import USABLE_SHARE, available_memory, format_bytes

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
        self.load: list = []  # measure.stats.LoadReport of each measurement
        self.rounds: dict = {}  # how the finalists' rounds went (measure.stats.Rounds.to_dict())

    # -- state
    def load_state(self, fingerprint: dict) -> dict[str, dict]:
        from lvvit_opt.tune.state import read_tune_state

        path = self.out / STATE_FILE
        if not os.path.lexists(path):
            return {}
        data = read_tune_state(path, self.out)  # one bounded reader, the schema checked (tune.state)
        if data.get("version") != STATE_VERSION or data.get("fingerprint") != fingerprint:
            differs = [k for k in fingerprint if (data.get("fingerprint") or {}).get(k) != fingerprint[k]]
            raise UserError(f"--out {self.out} holds a tune of something else ({', '.join(differs) or 'version'} "
                            f"differ); give another --out or remove {path}")
        return dict(data.get("candidates", {}))

    def save_state(self, fingerprint: dict, candidates: list[Candidate], previous: Mapping[str, dict]) -> None:
        from lvvit_opt.core.fileio import write_text_atomic

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
    from lvvit_opt.measure.bench import machine_info, weights_note
    from lvvit_opt.core.onnx_files import load_onnx, save_onnx
    from lvvit_opt.core.fileio import require_writable_dir
    from lvvit_opt.core.onnx_proto import weights_nbytes
    from lvvit_opt.verify.inputs import load_inputs
    from lvvit_opt.passes import run_pipeline
    from lvvit_opt.runtime import open_runner

    log = reporter(logger, log)
    s = _Search(options, log)
    target = make_target(options.target, soc_version=options.soc_version, cann_home=options.cann_home,
                         device_id=options.device_id)
    space = options.space or default_space(options.target)
    if not 0 < options.min_agreement <= 100:
        raise UserError(f"--min-agreement {options.min_agreement}: expected a percentage in (0, 100]")
    source = load_onnx(options.model)  # the model gate, before anything is written
    require_writable_dir(s.out, f"--out {s.out}")  # (created once the inputs are read: a refused one leaves none)

    # reference outputs of the fp32 original on the user's inputs
    with open_runner(options.model, backend="onnxruntime") as ref_runner:
        input_set = load_inputs(options.inputs, ref_runner.inputs, model=options.model)
        rows = _rows(input_set.feeds)
        ref_batch = ref_runner.inputs[0].batch or next(iter(rows.values())).shape[0]
        reference, _ = run_rows(ref_runner, rows, ref_batch)
    n_rows = next(iter(rows.values())).shape[0]
    s.out.mkdir(parents=True, exist_ok=True)
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
    target.prepare(space, s.out)
    s.notes += space.notes + mem_notes
    if "fp16-keep" in space.precisions and options.target != "ascend":
        s.notes.append("fp16-keep is built only where plain fp16 fails the gate (debug layers' keep-dtype search)")
    fingerprint = {"model_sha256": _sha256_file(options.model), "inputs_sha256": _sha256_arrays(rows),
                   "target": options.target, "min_agreement": options.min_agreement,
                   "soc_version": getattr(target, "soc_version", None),
                   "per_batch_sha256": {str(b): _sha256_file(p) for b, p in sorted((options.per_batch or {}).items())
                                        if b in space.batch_sizes}, **target.provenance()}
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

    # inside --out, named as our temporaries: a killed tune's folder is swept by the next run
    workdir_handle = tempfile.TemporaryDirectory(prefix=f".work{TEMP_MARKER}{os.getpid()}.{secrets.token_hex(4)}",
                                                 dir=s.out)
    workdir = Path(workdir_handle.name)
    built: dict[tuple, tuple[Path, str]] = {}  # variant -> (onnx path, graph hash)
    hashes: dict[tuple, str] = {}  # (precision, batch, graph hash) -> first candidate key with that graph
    keep_nodes: dict[tuple, list[str]] = {tuple(c.passes): c.gate["keep_fp32"] for c in candidates
                                          if c.reused and c.gate and "keep_fp32" in c.gate}
    if isinstance(target, AscendTarget):
        target.keep_nodes = keep_nodes  # the same dict: atc reads what the search finds

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
        elif c.precision == "fp16-keep" and not isinstance(target, AscendTarget):  # ascend: atc --keep_dtype
            model = fp16_candidate(model, keep_nodes[tuple(c.passes)])
        elif c.precision == "int8":  # built only through quantize's gate and rollback
            from lvvit_opt.quantize.run import int8_candidate

            fp32_path = workdir / f"{_slug('|'.join(map(str, variant(c))))}.fp32.onnx"
            save_onnx(model, fp32_path)
            model = int8_candidate(fp32_path, options.inputs, options.target, fp32_path.with_suffix(".int8"),
                                   options.min_agreement / 100.0)
        if build_hook is not None:
            model = build_hook(c, model)
        path = workdir / f"{_slug('|'.join(map(str, variant(c))))}.onnx"
        save_onnx(model, path)
        built[variant(c)] = (path, hashlib.sha256(model.SerializeToString()).hexdigest())
        return path

    def keep_dtype_for(c: Candidate) -> str | None:
        """None when fp16-keep should be built for c's pass set, else why it is skipped."""
        plain = "fp32" if isinstance(target, AscendTarget) else "fp16"  # ascend: atc's fp16 of the fp32 ONNX
        siblings = [o for o in candidates if o.passes == c.passes and o.precision == plain and o.gate]
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
                    build_opts, why_same = target.build_options(path, c)
                    twin = hashes.setdefault((c.precision, c.batch, graph, tuple(sorted(build_opts.items()))), c.key)
                    if twin != c.key:
                        c.status = "duplicate"
                        c.reason = (f"same build as {twin} ({why_same})"[:300] if why_same else
                                    f"same graph as {twin} (its passes changed nothing here)")
                        if why_same and why_same not in s.notes:
                            s.notes.append(why_same)
                            space.notes.append(why_same)
                        continue
                    c.artefact = str(target.artefact(path, c, workdir))
                    _gate_one(c, target, rows, reference, options.min_agreement)
                    if c.precision == "fp16-keep":
                        c.gate["keep_fp32"] = keep_nodes[tuple(c.passes)]
                except (CandidateFailed, LvvitOptError) as exc:  # a pass that breaks it, atc, a runner
                    c.status, c.reason = "failed", " ".join(str(exc).split())[:300]
                    log.warning(f"{c.label()}: {c.reason}; skipped")
                s.save_state(fingerprint, candidates, previous)
                bar.set_postfix_str(f"{c.label()}: {c.status}")

        # -- prune on the screen, then measure the finalists interleaved
        default_opts = target.default_options(space)
        baseline = next((c for c in candidates if c.batch == min(space.batch_sizes) and not c.passes
                         and c.precision == "fp32" and c.options == default_opts), None)
        finalists = _prune(candidates, baseline, options)
        # a ratio needs paired rounds: when one finalist is new, all are measured again together
        fresh = finalists if any(not c.timing for c in finalists) else []
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
        best, verdict = choose_best(measured, baseline, default_opts)
        if len({c.timing.get("run") for c in measured}) > 1:
            s.notes.append("some figures are reused from an earlier run: they were not measured interleaved "
                           "with this run's candidates, so they count as ties and no speed-up is claimed "
                           "between them")
        report = TuneReport(candidates, best.key if best else None, baseline.key if baseline else None,
                            options.target,
                            {"model": options.model, "model_name": options.model_name or Path(options.model).name,
                             "inputs": input_set.source, "min_agreement": options.min_agreement,
                             "budget_s": options.budget_s, "rounds": options.rounds, "warmup_s": options.warmup_s,
                             "max_finalists": options.max_finalists, "prune_margin": options.prune_margin,
                             "weights": weights_note([options.model])},
                            space.to_dict(), machine_info(), 0.0, s.notes)
        report.before_after = _before_after(candidates, best, default_opts)
        report.verdict = dict(verdict, order=list(SIMPLICITY_ORDER))
        from lvvit_opt.measure.stats import merge_load

        report.load = merge_load(s.load)
        report.warnings = report.load.get("warnings", [])
        report.rounds = s.rounds
        for warning in report.warnings:
            log.warning(warning)
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
    from lvvit_opt.core.fileio import write_text_atomic

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
    """Rotating interleaved rounds after a warm-up (measure.stats.measure_rounds), so machine noise
    hits every finalist alike: at least o.rounds, then more until the intervals are narrow
    enough or the budget is spent. The machine's load is read meanwhile (s.load)."""
    from lvvit_opt.measure.bench import timed_slot, warm_up
    from lvvit_opt.measure.stats import LoadMonitor, measure_rounds, slot_rate

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
        slot = available / (2 * o.rounds * len(runners))
        if slot < 0.05:
            s.notes.append(f"the budget left {available:.1f} s for {len(runners)} finalist(s): each got one call "
                           f"per round; raise --budget for steadier figures")
            slot = 0.0
        s.log(f"measuring {len(runners)} finalist(s) interleaved, order rotating: at least {o.rounds} rounds x "
              f"{slot:.2f} s, more within {available:.0f} s until the intervals are narrow enough")
        latencies: list[list[float]] = [[] for _ in runners]

        throughput: list[list[float]] = [[] for _ in runners]

        def one_slot(i: int) -> float:
            start, first = time.perf_counter(), len(latencies[i])
            spent, count = timed_slot(runners[i], feeds[i], slot, latencies[i])
            finalists[i].measured_s += time.perf_counter() - start
            throughput[i].append(finalists[i].batch * count / spent)
            return slot_rate(finalists[i].batch, latencies[i][first:])

        run_id = time.strftime("%Y-%m-%dT%H:%M:%S")
        with LoadMonitor() as load, task("tune: measure", total=None, unit="slot") as bar:
            done = measure_rounds(len(runners), one_slot, min_rounds=o.rounds, seconds=available, hard_limit=True,
                                  on_slot=lambda _r, _i: bar.update(1))
        s.load.append(load.report)
        s.rounds = done.to_dict()
        s.notes.append(f"measurement: {done.stop_text()}")
        for c, lat, fps, rates in zip(finalists, latencies, throughput, done.rates):
            c.timing = _summary(c.batch, lat, fps)
            c.timing["round_rates"] = rates  # batch / median call time per round: what is compared
            c.timing["run"] = run_id  # only figures of one run are paired round by round
    finally:
        for runner in runners:
            runner.close()


SIMPLICITY_ORDER = ("precision: fp32, then fp16, then fp16-keep", "fewer passes", "fewer options changed from "
                    "the default (threads, graph level, ...)", "smaller batch")


def simplicity(c: Candidate, default_opts: Mapping[str, Any]) -> tuple:
    """The order among candidates that tie (SIMPLICITY_ORDER): the simplest configuration first."""
    changed = sum(1 for k, v in c.options.items() if default_opts.get(k) != v)
    return (PRECISIONS.index(c.precision) if c.precision in PRECISIONS else len(PRECISIONS), len(c.passes),
            changed, c.batch, c.key)


def _rates(c: Candidate) -> list[float]:
    """What tune compares: the per-round median-call rates (measure.stats.slot_rate), or the
    per-round fps of a state written before they were recorded."""
    return c.timing.get("round_rates") or c.timing["round_fps"]


def _paired(a: Candidate, b: Candidate) -> bool:
    return bool(a.timing and b.timing and a.timing.get("run") and a.timing.get("run") == b.timing.get("run"))


def choose_best(measured: list[Candidate], baseline: Candidate | None,
                default_opts: Mapping[str, Any]) -> tuple[Candidate | None, dict]:
    """The honest choice among measured candidates (measure.stats decides every comparison):

    * every candidate whose paired rounds show no measurable difference from the fastest is a tie
      (figures from different runs are not paired: they count as ties);
    * among the ties that are measurably `faster` than the baseline, the simplest
      (SIMPLICITY_ORDER) is the best, and the win is claimed;
    * when none is, the baseline stays the best: "no configuration measurably faster than the
      baseline" (with no measured baseline: the simplest tie, and no claim either way).

    Returns (best, verdict): verdict has the comparison with the baseline and the sentence."""
    from lvvit_opt.measure.stats import FASTER, NO_DIFFERENCE, compare

    if not measured:
        return None, {}
    fastest = max(measured, key=lambda c: c.timing["fps"])
    ties = [c for c in measured if c is fastest or not _paired(c, fastest)
            or compare(_rates(c), _rates(fastest)).verdict == NO_DIFFERENCE]
    base_ok = baseline is not None and baseline in measured
    for c in measured:
        c.tie = c in ties
        if base_ok and c is not baseline and _paired(c, baseline):
            c.timing["vs_baseline"] = compare(_rates(c), _rates(baseline)).to_dict()
    if not base_ok:
        best = min(ties, key=lambda c: simplicity(c, default_opts))
        best.tie = False
        return best, {"claim": False, "text": f"no baseline measured: {best.label()} is the simplest of the "
                                              f"candidates within noise of the fastest; no speed-up is claimed"}
    winners = [c for c in ties if c is not baseline and _paired(c, baseline)
               and compare(_rates(c), _rates(baseline)).verdict == FASTER]
    best = min(winners, key=lambda c: simplicity(c, default_opts)) if winners else baseline
    best.tie = False
    if best is baseline:
        simplest = min(ties, key=lambda c: simplicity(c, default_opts))
        judged = (compare(_rates(fastest), _rates(baseline))
                  if fastest is not baseline and _paired(fastest, baseline) else None)
        text = "no configuration measurably faster than the baseline; the baseline stays the best"
        if judged is not None:
            text += f" (the fastest, {fastest.label()}: " + judged.sentence("it", "the baseline").split(": ", 1)[-1]
            text += ")" if judged.verdict == NO_DIFFERENCE else ""
        return best, {"claim": False, "text": text, "fastest": fastest.key, "simplest_tie": simplest.key,
                      "comparison": judged.to_dict() if judged else None}
    judged = compare(_rates(best), _rates(baseline))
    return best, {"claim": True, "text": judged.sentence(best.label(), f"the baseline ({baseline.label()})"),
                  "fastest": fastest.key, "comparison": judged.to_dict()}


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
                     "after_source": None if not after else ("measured" if after.timing else "screen"),
                     "comparison": _comparison(after, before)})
    return rows


def _comparison(after: Candidate | None, before: Candidate | None) -> dict | None:
    """after vs before from their paired rounds (measure.stats), or None when they were not measured
    in the same rounds (a screen figure, another run) or are the same candidate."""
    from lvvit_opt.measure.stats import compare

    if after is None or before is None or after is before or not _paired(after, before):
        return None
    return compare(_rates(after), _rates(before)).to_dict()


def _write_best(report: TuneReport, best: Candidate, target: Target, build_onnx, workdir: Path,
                o: TuneOptions) -> None:
    """OUT/best.onnx (and best.om for Ascend) and reproduce.sh with the exact commands."""
    import shutil

    from lvvit_opt.core.fileio import atomic_path
    from lvvit_opt.core.shell import ShellScript

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
    script = ShellScript(out / REPRODUCE_FILE,
                         description=f"lvvit-opt tune: {best.label()} ({best.timing['fps']:.1f} fps on {o.target})")
    source = (o.per_batch or {}).get(best.batch, o.model)
    # ascend: the ONNX stays fp32 and atc does fp16; onnxruntime: the to_fp16 pass builds what was tuned
    converted = best.precision not in ("fp32", "int8") and not isinstance(target, AscendTarget)
    passes = list(best.passes) + (["to_fp16"] if converted else [])
    first = out / ("best_fp32.onnx" if best.precision == "int8" else "best.onnx")  # int8: quantize makes best.onnx
    if passes:
        argv = ["lvvit-opt", "apply", script.path(source), "-o", script.path(first),
                "--passes", ",".join(passes)]
        keep = _keep_list(report, best) if converted and best.precision == "fp16-keep" else []
        if keep:
            argv += ["-O", "to_fp16.keep_fp32=" + json.dumps(keep)]
        script.run(argv)
    else:
        script.run(["cp", "--", script.path(source), script.path(first)], comment="no pass: the original graph")
    if best.precision == "int8":  # quantize's gate and rollback, calibrated and gated on the same inputs
        inputs = o.inputs if isinstance(o.inputs, int) or str(o.inputs).strip().isdigit() else script.path(o.inputs)
        script.run(["lvvit-opt", "quantize", script.path(first), "--calib", str(inputs), "--target",
                    "ort-trt" if o.target == "ort-trt" else "ort-cpu", "-o", script.path(out / "int8"),
                    "--min-agreement", f"{o.min_agreement:g}", "--no-bench"])
        script.run(["cp", "--", script.path(out / "int8" / "best_fp32_int8.onnx"), script.path(out / "best.onnx")])
    target.reproduce(best, best_path, script)
    report.reproduce = script.body()
    script.write()
    report.outputs["reproduce"] = str(out / REPRODUCE_FILE)


def _keep_list(report: TuneReport, best: Candidate) -> list[str]:
    return list((best.gate or {}).get("keep_fp32", []))
