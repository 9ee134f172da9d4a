"""Run an .om through the legacy `benchmark.{x86_64,aarch64}` binary, and parse its perf files.

The binary reads an info file (`index path width height` per preprocessed .bin image),
writes `result/dumpOutput_device{id}/<stem>_<k>.bin|txt` per image and output k (from 1),
and `result/perf_vision_batchsize_{bs}_device_{id}.txt`:

    [e2e] throughputRate: 51.2825, latency: 974992
    [data read] throughputRate: 54.323, moduleLatency: 18.4084
    [preprocess] throughputRate: 54.1712, moduleLatency: 18.46
    [infer] throughputRate: 51.3613, Interface throughputRate: 57.8179, moduleLatency: 18.6629
    [post] throughputRate: 3.21005, moduleLatency: 311.521

The Interface throughputRate is per chip; a card's fps is that times its chips (4 on an
Ascend 310 card, as the seed computes 57.8179 * 4 = 231.2716).
"""
from __future__ import annotations

import math
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from lvvit_opt.core.errors import ToolFailed, UserError, shown
from lvvit_opt.core.tensor_spec import TensorSpec, read_specs
from lvvit_opt.runtime.base import Runner
from lvvit_opt.runtime.om import sidecar_onnx
from lvvit_opt.runtime.registry import register_runner

CHIPS_PER_CARD_310 = 4
_STAGE_LINE = re.compile(r"^\s*\[([A-Za-z][A-Za-z0-9 ]*)\]\s*(.*)$")
_METRIC = re.compile(r"([A-Za-z][A-Za-z ]*?)\s*:\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)\b)",
                     re.IGNORECASE)
_PERF_NAME = re.compile(r"perf_vision_batchsize_(\d+)_device_(\d+)\.txt$")


@dataclass(frozen=True)
class BenchmarkPerf:
    """One perf_vision_batchsize_{bs}_device_{id}.txt: stage -> metric -> value."""

    stages: dict
    batch_size: int | None = None
    device_id: int | None = None
    path: str | None = None

    @property
    def interface_throughput(self) -> float:
        """`[infer] Interface throughputRate`: images/s of one chip, model execution only."""
        return float(self.stages["infer"]["Interface throughputRate"])

    @property
    def infer_throughput(self) -> float:
        return float(self.stages["infer"]["throughputRate"])

    @property
    def e2e_throughput(self) -> float:
        return float(self.stages["e2e"]["throughputRate"])

    def card_fps(self, chips: int = CHIPS_PER_CARD_310) -> float:
        """Interface throughputRate x chips per card (the seed's 'single card throughput')."""
        return self.interface_throughput * int(chips)


def parse_perf_text(text: str, source: str = "perf file") -> BenchmarkPerf:
    """Parse the five `[stage] key: value, ...` lines; tolerant of the seed's missing commas."""
    stages: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        match = _STAGE_LINE.match(line)
        if match:
            metrics = {k.strip(): float(v) for k, v in _METRIC.findall(match.group(2))}
            stages[match.group(1).strip()] = metrics
    if "Interface throughputRate" not in stages.get("infer", {}):
        raise UserError(f"{source}: not a benchmark perf file (no '[infer] ... Interface throughputRate' line)")
    _check_rates(stages, source)
    return BenchmarkPerf(stages)


def _check_rates(stages: dict, source: str) -> None:
    """A throughput that cannot be right (negative, zero, NaN, inf) is an error, never silently
    replaced by our own wall-clock timing."""
    for stage, metrics in stages.items():
        for key, value in metrics.items():
            lowest_ok = 0.0 if key != "Interface throughputRate" else math.ulp(0.0)  # only our fps must be > 0
            if "throughputRate" in key and not (math.isfinite(value) and value >= lowest_ok):
                raise ToolFailed(f"{source}: [{stage}] {key} is {value}, which cannot be a throughput; "
                                 f"the benchmark run is not trustworthy (rerun it)")


def parse_perf_file(path: str | os.PathLike) -> BenchmarkPerf:
    """Parse a perf_vision_batchsize_{bs}_device_{id}.txt (batch and device read from the name)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{shown(path)}: no such perf file")
    perf = parse_perf_text(path.read_text(encoding="utf-8", errors="replace"), str(path))
    match = _PERF_NAME.search(path.name)
    return BenchmarkPerf(perf.stages, int(match.group(1)) if match else None,
                         int(match.group(2)) if match else None, str(path))


def perf_file_path(result_dir: str | os.PathLike, batch_size: int, device_id: int = 0) -> Path:
    return Path(result_dir) / f"perf_vision_batchsize_{batch_size}_device_{device_id}.txt"


def benchmark_binary_name(machine: str | None = None) -> str:
    """benchmark.x86_64 or benchmark.aarch64 for this CPU."""
    machine = (machine or platform.machine()).lower()
    return "benchmark.aarch64" if machine in ("aarch64", "arm64") else "benchmark.x86_64"


@register_runner
@dataclass
class BenchmarkRunner(Runner):
    """The legacy benchmark binary as a Runner.

    Specs come from `onnx_path` (default: the .onnx beside the .om) with `batch_size`
    for a dynamic batch dim. `chips` turns the per-chip Interface throughputRate into card
    fps. `workdir` holds the .bin inputs and `result/` (a temp dir, removed on close, by
    default); `env` is the environment for the binary (default: the CANN environment).
    """

    device_id: int = 0
    onnx_path: str | None = None
    batch_size: int | None = None
    dym_batch: int | None = None  # a gear of an .om compiled with --dynamic_batch_size: -dym_batch=N
    chips: int = CHIPS_PER_CARD_310
    executable: str | None = None
    output_binary: bool = True
    workdir: str | None = None
    env: Mapping[str, str] | None = None
    cann_home: str | None = None
    timeout_s: float = 3600.0
    last_perf: BenchmarkPerf | None = field(default=None, init=False)

    name = "benchmark"
    suffixes = (".om",)
    pads_to_batch = True
    batches_itself = True  # one binary run takes every image; it batches them itself

    @classmethod
    def unavailable_reason(cls, options: Mapping[str, Any]) -> str | None:
        from lvvit_opt.core.cann import find_tool

        if options.get("executable") or find_tool(benchmark_binary_name(), options.get("env"),
                                                  extra_dirs=[os.getcwd()]) is not None:
            return None
        return (f"{benchmark_binary_name()} is not on PATH (put the legacy binary on PATH or in the working "
                "directory); .om files only run on Ascend NPUs")

    def __post_init__(self):
        from lvvit_opt.core.cann import cann_environment, require_tool

        self.env = dict(self.env) if self.env is not None else cann_environment(self.cann_home)
        self.binary = Path(self.executable) if self.executable else require_tool(
            benchmark_binary_name(), self.env, extra_dirs=[os.getcwd()],
            hint=f"Put the legacy {benchmark_binary_name()} on PATH or in the working directory, "
                 "or install ais_bench (use --backend ais_bench); .om files only run on Ascend NPUs.")
        self._load_specs()
        self._own_workdir = self.workdir is None
        self.workdir = self.workdir or tempfile.mkdtemp(prefix="lvvit-benchmark-")

    def _load_specs(self) -> None:
        onnx_path = self.onnx_path or sidecar_onnx(self.model_path)
        if onnx_path is None:
            raise UserError(f"{self.model_path}: the legacy benchmark binary cannot report input shapes; "
                            "put the source .onnx beside the .om or pass onnx_path")
        inputs, outputs = read_specs(onnx_path)
        if len(inputs) != 1 or inputs[0].shape is None or len(inputs[0].shape) != 4:
            raise UserError(f"{onnx_path}: the legacy benchmark binary runs single-input NCHW vision models; "
                            f"this one has inputs {[(s.name, s.shape) for s in inputs]}")
        if self.dym_batch:
            if inputs[0].batch is not None:
                raise UserError(f"{onnx_path}: dym_batch {self.dym_batch} needs the dynamic-batch ONNX the geared "
                                f".om was compiled from; this one has a static batch of {inputs[0].batch}")
            self.batch_size = int(self.dym_batch)
        batch = inputs[0].batch or self.batch_size
        if batch is None:
            raise UserError(f"{onnx_path}: the batch dimension is dynamic; pass batch_size (the .om's batch)")
        self.batch_size = int(batch)
        self.inputs = [inputs[0].with_batch(self.batch_size)]
        self.outputs = [o.with_batch(self.batch_size) for o in outputs]
        self.onnx_path = str(onnx_path)

    def run_batch(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return self.run_images(arrays[0])

    def batch_seconds(self, wall_s: float, rows: int) -> float:
        """Device time from the perf file: rows / Interface throughputRate (per chip)."""
        perf = self.last_perf
        return rows / perf.interface_throughput if perf and perf.interface_throughput > 0 else wall_s

    def run_images(self, images: np.ndarray) -> list[np.ndarray]:
        """Write images as .bin + info file, run the binary once, read outputs and the perf file."""
        work = Path(self.workdir)
        input_dir = work / "input"
        for stale in (input_dir, work / "result"):
            shutil.rmtree(stale, ignore_errors=True)
        input_dir.mkdir(parents=True)
        stems = [f"img_{i:06d}" for i in range(images.shape[0])]
        height, width = images.shape[2], images.shape[3]
        info_lines = []
        for index, (stem, image) in enumerate(zip(stems, images)):
            path = input_dir / f"{stem}.bin"
            image.tofile(path)
            info_lines.append(f"{index} {path} {width} {height}\n")
        info = work / "input.info"
        info.write_text("".join(info_lines), encoding="utf-8")
        self._run_binary(self.command(info, width, height))
        result = work / "result"
        self.last_perf = parse_perf_file(perf_file_path(result, self.batch_size, int(self.device_id)))
        return [np.stack([self._read_output(result, stem, k, spec) for stem in stems])
                for k, spec in enumerate(self.outputs, start=1)]

    def command(self, info_file: str | os.PathLike, width: int, height: int) -> list[str]:
        """The seed's command line for this model and info file."""
        return [str(self.binary), "-model_type=vision", f"-device_id={int(self.device_id)}",
                f"-batch_size={self.batch_size}", f"-om_path={os.path.abspath(self.model_path)}",
                f"-input_text_path={info_file}", f"-input_width={width}", f"-input_height={height}",
                f"-output_binary={self.output_binary}", "-useDvpp=False"] + (
                    [f"-dym_batch={int(self.dym_batch)}"] if self.dym_batch else [])

    def _run_binary(self, argv: Sequence[str]) -> None:
        log_path = Path(self.workdir) / "benchmark.log"
        try:
            with open(log_path, "w", encoding="utf-8") as log:
                proc = subprocess.run(list(argv), cwd=self.workdir, env=self.env, stdout=log,
                                      stderr=subprocess.STDOUT, timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            raise ToolFailed(f"{self.binary.name} timed out after {self.timeout_s:.0f}s; log: {log_path}") from None
        except OSError as exc:
            raise ToolFailed(f"cannot start {self.binary}: {exc}") from None
        if proc.returncode != 0:
            tail = deque(log_path.read_text(encoding="utf-8", errors="replace").splitlines(), maxlen=3)
            raise ToolFailed(f"{self.binary.name} failed (exit {proc.returncode}): {' | '.join(tail)}; "
                             f"log: {log_path}")

    def _read_output(self, result: Path, stem: str, k: int, spec: TensorSpec) -> np.ndarray:
        folder = result / f"dumpOutput_device{int(self.device_id)}"
        row_shape = tuple(spec.shape[1:])
        bin_path, txt_path = folder / f"{stem}_{k}.bin", folder / f"{stem}_{k}.txt"
        if bin_path.is_file():
            values = np.fromfile(bin_path, dtype=np.dtype(spec.dtype))
        elif txt_path.is_file():
            values = np.array(txt_path.read_text().split(), dtype=np.float64).astype(spec.dtype)
        else:
            raise ToolFailed(f"{self.binary.name} wrote no output {bin_path.name} (or .txt) in {folder}")
        if values.size != int(np.prod(row_shape)):
            raise ToolFailed(f"{bin_path.name}: {values.size} values, expected {row_shape} for output {spec.name!r}")
        return values.reshape(row_shape)

    def card_fps(self) -> float | None:
        """fps of one card from the latest run (Interface throughputRate x chips)."""
        return self.last_perf.card_fps(self.chips) if self.last_perf else None

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.model_path, "binary": str(self.binary),
                "device_id": int(self.device_id), "batch_size": self.batch_size, "chips": self.chips,
                "specs_from": self.onnx_path, "timing": "perf file Interface throughputRate (device)"}

    def close(self) -> None:
        if getattr(self, "_own_workdir", False) and self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
