"""Run an .om through ais_bench's Python API (`ais_bench.infer.interface.InferSession`).

ais_bench is not on PyPI; it is built from source on an Ascend host. Timing comes from the
session summary's `exec_time_list` (device execution time in ms), not from the wall clock.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from lvvit_opt.core.errors import ToolFailed
from lvvit_opt.core.tensor_spec import TensorSpec, runtime_spec
from lvvit_opt.runtime.ais_bench_summary import exec_time_ms
from lvvit_opt.runtime.base import Runner
from lvvit_opt.runtime.registry import register_runner


@register_runner
@dataclass
class AisBenchRunner(Runner):
    """InferSession on one NPU.

    device_id: the logical device (0..N-1: the `Device` / `Phy-ID` column of `npu-smi info`, the Chip Logic
    ID of `npu-smi info -m`), not the NPU id in its first column: an Atlas 300 lists NPU 2048 for devices
    0-3, and msit's docs pair device 0 with NPU ID 4.
    """

    device_id: int = 0
    dym_batch: int | None = None  # a gear of an .om compiled with --dynamic_batch_size (ais_bench --dymBatch N)

    name = "ais_bench"
    suffixes = (".om",)
    priority = 10  # preferred over the legacy benchmark binary
    pads_to_batch = True

    @classmethod
    def unavailable_reason(cls, options: Mapping[str, Any]) -> str | None:
        if ais_bench_available():
            return None
        return ("the ais_bench Python package is not importable (install the aclruntime and ais_bench wheels "
                "from the ait/tools repository on the Ascend host)")

    def __post_init__(self):
        try:
            from ais_bench.infer.interface import InferSession
        except ImportError as exc:
            from lvvit_opt.core.cann import ToolNotFound

            raise ToolNotFound(f"ais_bench is not importable ({exc}); install its aclruntime and ais_bench "
                               "wheels on the Ascend host, or use --backend benchmark") from None
        try:
            self.session = InferSession(int(self.device_id), self.model_path)
        except Exception as exc:
            raise ToolFailed(f"ais_bench cannot load {self.model_path} on device {self.device_id}: "
                             f"{_first_line(exc)}") from None
        if self.dym_batch:
            try:  # ait/msit interface: set_dynamic_batchsize(dym_batch: str), then infer in mode 'static'
                self.session.set_dynamic_batchsize(str(int(self.dym_batch)))
            except Exception as exc:
                raise ToolFailed(f"ais_bench cannot pick batch gear {self.dym_batch} of {self.model_path}: "
                                 f"{_first_line(exc)}") from None
        self.inputs = [desc_to_spec(d) for d in self.session.get_inputs()]
        self.outputs = [desc_to_spec(d) for d in self.session.get_outputs()]
        if self.dym_batch:  # the descs may report the largest gear: the batch run is the chosen one
            self.inputs = [self.inputs[0].with_batch(int(self.dym_batch))] + self.inputs[1:]
            self.outputs = [o.with_batch(int(self.dym_batch)) for o in self.outputs]
        self.batch_size = self.model_batch
        self.calls = 0

    def run_batch(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        try:
            raw = self.session.infer(arrays)
        except Exception as exc:
            raise ToolFailed(f"ais_bench inference failed on {self.model_path}: {_first_line(exc)}") from None
        self.calls += 1
        return [_shaped(np.asarray(out), spec) for out, spec in zip(raw, self.outputs)]

    def batch_seconds(self, wall_s: float, rows: int) -> float:
        device = self.device_seconds()
        return wall_s if device is None else device

    def device_seconds(self) -> float | None:
        """Execution time of the latest inference as the session reports it, in seconds.

        Newer ais_bench: `session.summary().exec_time_list` of (start_ms, end_ms) pairs; older releases
        only have the misspelt `session.sumary()` with plain durations (see ais_bench_summary.exec_time_ms).
        """
        summary_fn = getattr(self.session, "summary", None) or getattr(self.session, "sumary", None)
        if summary_fn is None:
            return None
        try:
            times = list(summary_fn().exec_time_list)
            return exec_time_ms(times[-1]) / 1000.0 if times else None
        except Exception:
            return None

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.model_path, "device_id": int(self.device_id),
                "batch_size": self.batch_size, "dym_batch": self.dym_batch, "timing": "ais_bench exec_time_list (device)",
                "inputs": [s.to_list() for s in self.inputs],
                "outputs": [s.to_list() for s in self.outputs]}

    def close(self) -> None:
        session, self.session = getattr(self, "session", None), None
        if session is not None:
            try:
                session.free_resource()
            except Exception:
                pass


def ais_bench_available() -> bool:
    """True when `ais_bench.infer.interface` can be imported here."""
    try:
        return importlib.util.find_spec("ais_bench") is not None
    except (ImportError, ValueError):
        return False


def desc_to_spec(desc) -> TensorSpec:
    """An ais_bench tensor desc (name, shape, datatype like `dtype.FLOAT32`) as a TensorSpec."""
    return runtime_spec(desc.name, desc.shape, str(getattr(desc, "datatype", "float32")))


def _shaped(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if spec.is_static and array.size == int(np.prod(spec.shape)) and array.shape != spec.shape:
        return array.reshape(spec.shape)
    return array


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__
