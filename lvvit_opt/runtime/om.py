"""Open an Ascend .om model with the best runner available, and batching helpers they share.

backend "om" prefers ais_bench's Python API (InferSession) when importable, then the
legacy benchmark.{x86_64,aarch64} binary; "ais_bench" / "benchmark" force one.
An .om has a fixed batch; `infer` accepts any number of rows and runs them in model-sized
chunks (the last one zero-padded), so golden inputs of batch 2 validate a batch-16 .om.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import fields
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ..errors import UserError
from .base import Runner, TensorSpec

OM_BACKENDS = ("om", "ais_bench", "benchmark")


def open_om_runner(path: str | os.PathLike, backend: str = "om", **options) -> Runner:
    """A Runner for an .om file. Options go to the chosen runner (device_id, onnx_path, chips, ...)."""
    if backend not in OM_BACKENDS:
        raise UserError(f"unknown .om backend {backend!r} (expected one of {', '.join(OM_BACKENDS)})")
    if not Path(path).is_file():
        raise UserError(f"{path}: no such file")
    if backend == "om":
        backend = pick_om_backend(options.get("env"), options.get("executable"))
    if backend == "ais_bench":
        from .ais_bench import AisBenchRunner as runner_class
    else:
        from .benchmark import BenchmarkRunner as runner_class
    return runner_class(str(path), **_known_options(runner_class, options))


def ais_bench_available() -> bool:
    """True when `ais_bench.infer.interface` can be imported here."""
    try:
        return importlib.util.find_spec("ais_bench") is not None
    except (ImportError, ValueError):
        return False


def pick_om_backend(env: Mapping[str, str] | None = None, executable: str | None = None) -> str:
    """'ais_bench' if importable, else 'benchmark' if the legacy binary is found; ToolNotFound otherwise.

    Passing a benchmark `executable` (or an `env`, which only the binary uses) selects the binary.
    """
    from ..ascend.cann import ToolNotFound, find_tool
    from .benchmark import benchmark_binary_name

    if executable is None and env is None and ais_bench_available():
        return "ais_bench"
    if executable is not None:
        return "benchmark"
    if find_tool(benchmark_binary_name(), env, extra_dirs=[os.getcwd()]) is not None:
        return "benchmark"
    raise ToolNotFound(
        "no way to run an .om here: the ais_bench Python package is not importable and "
        f"{benchmark_binary_name()} is not on PATH. On an Ascend host, install ais_bench "
        "(aclruntime + ais_bench wheels from the ait/tools repository) or put the legacy "
        f"{benchmark_binary_name()} on PATH; .om files only run on Ascend NPUs.")


def _known_options(runner_class, options: Mapping) -> dict:
    known = {f.name for f in fields(runner_class) if f.init}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UserError(f"{runner_class.__name__} does not take option(s) {', '.join(unknown)}; "
                        f"it takes {', '.join(sorted(known - {'model_path'}))}")
    return dict(options)


def sidecar_onnx(om_path: str | os.PathLike) -> Path | None:
    """The ONNX an .om was compiled from, by the seed's naming: x.om <- x.onnx (also x_linux_<arch>.om)."""
    om = Path(om_path)
    stem = om.stem.split("_linux_")[0]
    candidate = om.with_name(stem + ".onnx")
    return candidate if candidate.is_file() else None


def order_feeds(feeds: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]) -> list[np.ndarray]:
    """Feeds in the model's input order, cast to its dtypes: by name, or by position when names differ."""
    if set(feeds) == {s.name for s in specs}:
        arrays = [feeds[s.name] for s in specs]
    elif len(feeds) == len(specs):
        arrays = list(feeds.values())
    else:
        raise UserError(f"the model takes inputs {[s.name for s in specs]}; got {list(feeds)}")
    ordered = []
    for spec, array in zip(specs, arrays):
        array = np.ascontiguousarray(np.asarray(array), dtype=np.dtype(spec.dtype))
        if spec.is_static and tuple(array.shape[1:]) != tuple(spec.shape[1:]):
            raise UserError(f"input {spec.name!r}: the .om expects (N, {', '.join(map(str, spec.shape[1:]))}), "
                            f"got {tuple(array.shape)}")
        ordered.append(array)
    return ordered


def infer_in_model_batches(run_batch: Callable[[list[np.ndarray]], tuple[list[np.ndarray], float]],
                           arrays: list[np.ndarray], model_batch: int) -> tuple[list[np.ndarray], float]:
    """Run `arrays` (same leading N) through a fixed-batch model in chunks of `model_batch`.

    run_batch(chunk) returns (outputs, seconds). The last chunk is zero-padded and the
    padding rows are dropped from the outputs. Returns (outputs with N rows, total seconds).
    """
    rows = arrays[0].shape[0]
    if any(a.shape[0] != rows for a in arrays):
        raise UserError(f"inputs disagree on the batch size: {[a.shape[0] for a in arrays]}")
    if rows == model_batch:
        return run_batch(arrays)
    pieces: list[list[np.ndarray]] = []
    total_s = 0.0
    for start in range(0, rows, model_batch):
        count = min(model_batch, rows - start)
        chunk = [_pad_rows(a[start:start + count], model_batch) for a in arrays]
        outputs, seconds = run_batch(chunk)
        total_s += seconds
        for out in outputs:
            if out.ndim == 0 or out.shape[0] != model_batch:
                raise UserError(f"the .om has batch {model_batch} but an output of shape {out.shape}; "
                                f"feed exactly {model_batch} rows")
        pieces.append([out[:count] for out in outputs])
    return [np.concatenate(parts, axis=0) for parts in zip(*pieces)], total_s


def _pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    if array.shape[0] == rows:
        return np.ascontiguousarray(array)
    padded = np.zeros((rows,) + array.shape[1:], dtype=array.dtype)
    padded[: array.shape[0]] = array
    return padded


def model_batch_size(specs: Sequence[TensorSpec]) -> int:
    """The .om's fixed batch (first dim of its first input)."""
    first = specs[0].shape[0] if specs and specs[0].shape else None
    if not isinstance(first, int) or first <= 0:
        raise UserError(f"cannot tell the .om's batch size from its input shape {specs[0].shape if specs else ()}")
    return first
