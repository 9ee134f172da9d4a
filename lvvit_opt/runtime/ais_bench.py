"""Run an .om through ais_bench's Python API (`ais_bench.infer.interface.InferSession`).

ais_bench is not on PyPI; it is built from source on an Ascend host. Timing comes from the
session summary's `exec_time_list` (device execution time in ms), not from the wall clock.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..errors import ToolFailed
from .base import Runner, TensorSpec
from .om import infer_in_model_batches, model_batch_size, order_feeds

_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
           "uint64", "bool")


@dataclass
class AisBenchRunner(Runner):
    """InferSession on one NPU. device_id: the NPU id shown by `npu-smi info`."""

    device_id: int = 0

    def __post_init__(self):
        self.backend = "ais_bench"
        try:
            from ais_bench.infer.interface import InferSession
        except ImportError as exc:
            from ..ascend.cann import ToolNotFound

            raise ToolNotFound(f"ais_bench is not importable ({exc}); install its aclruntime and ais_bench "
                               "wheels on the Ascend host, or use --backend benchmark") from None
        try:
            self.session = InferSession(int(self.device_id), self.model_path)
        except Exception as exc:
            raise ToolFailed(f"ais_bench cannot load {self.model_path} on device {self.device_id}: "
                             f"{_first_line(exc)}") from None
        self.inputs = [desc_to_spec(d) for d in self.session.get_inputs()]
        self.outputs = [desc_to_spec(d) for d in self.session.get_outputs()]
        self.batch_size = model_batch_size(self.inputs)
        self.calls = 0

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = order_feeds(feeds, self.inputs)
        results, seconds = infer_in_model_batches(self._run_batch, arrays, self.batch_size)
        self.last_infer_s = seconds
        return {spec.name: out for spec, out in zip(self.outputs, results)}

    def _run_batch(self, arrays: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
        start = time.perf_counter()
        try:
            raw = self.session.infer(arrays)
        except Exception as exc:
            raise ToolFailed(f"ais_bench inference failed on {self.model_path}: {_first_line(exc)}") from None
        wall = time.perf_counter() - start
        self.calls += 1
        outputs = [_shaped(np.asarray(out), spec) for out, spec in zip(raw, self.outputs)]
        device = self.device_seconds()
        return outputs, wall if device is None else device

    def device_seconds(self) -> float | None:
        """Execution time of the latest inference as the session reports it, in seconds."""
        summary_fn = getattr(self.session, "summary", None) or getattr(self.session, "sumary", None)
        if summary_fn is None:
            return None
        try:
            times = list(summary_fn().exec_time_list)
        except Exception:
            return None
        if not times:
            return None
        last = times[-1]
        millis = last[1] - last[0] if isinstance(last, (tuple, list)) else last
        return float(millis) / 1000.0

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.model_path, "device_id": int(self.device_id),
                "batch_size": self.batch_size, "timing": "ais_bench exec_time_list (device)",
                "inputs": [[s.name, list(s.shape), s.dtype] for s in self.inputs],
                "outputs": [[s.name, list(s.shape), s.dtype] for s in self.outputs]}

    def close(self) -> None:
        session, self.session = getattr(self, "session", None), None
        if session is not None:
            try:
                session.free_resource()
            except Exception:
                pass


def desc_to_spec(desc) -> TensorSpec:
    """An ais_bench tensor desc (name, shape, datatype like `dtype.FLOAT32`) as a TensorSpec."""
    text = str(getattr(desc, "datatype", "float32")).lower().rsplit(".", 1)[-1]
    dtype = next((d for d in _DTYPES if text == d or text.endswith(d)), "float32")
    return TensorSpec(str(desc.name), tuple(int(d) for d in desc.shape), dtype)


def _shaped(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if spec.is_static and array.size == int(np.prod(spec.shape)) and array.shape != spec.shape:
        return array.reshape(spec.shape)
    return array


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__
