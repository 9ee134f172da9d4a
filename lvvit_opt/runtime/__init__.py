"""Runners: one interface (runtime.base.Runner) over onnxruntime, ais_bench and the
legacy benchmark binary. `open_runner` picks the implementation from the file type."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError
from .base import Runner, TensorSpec

__all__ = ["Runner", "TensorSpec", "open_runner"]


def open_runner(path: str | os.PathLike, *, backend: str = "auto", **options) -> Runner:
    """Open a model for inference.

    backend: "auto" (.onnx -> onnxruntime, .om -> the best Ascend runner available),
    "ort"/"onnxruntime", or for .om files "om", "ais_bench", "benchmark".
    options go to the runner (threads/providers for onnxruntime, device_id/... for .om).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if backend == "auto":
        backend = "onnxruntime" if suffix == ".onnx" else "om"
    if backend in ("ort", "onnxruntime"):
        from .ort import OrtRunner

        return OrtRunner(str(path), **options)
    if backend in ("om", "ais_bench", "benchmark"):
        from .om import open_om_runner

        return open_om_runner(str(path), backend=backend, **options)
    raise UserError(f"unknown backend {backend!r} (expected auto, onnxruntime, om, ais_bench or benchmark)")
