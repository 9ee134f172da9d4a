"""onnxruntime runner."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import UserError
from .base import Runner, TensorSpec

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(uint8)": "uint8",
              "tensor(int8)": "int8", "tensor(bool)": "bool"}


@dataclass
class OrtRunner(Runner):
    """Runs an ONNX file on onnxruntime.

    threads: intra-op threads (None = onnxruntime's default, reported as such).
    providers: execution providers in priority order; None = CPU only. Providers that
    this onnxruntime build lacks are dropped and reported in describe().
    """

    threads: int | None = None
    providers: Sequence[str] | None = None
    optimize: bool = True

    def __post_init__(self):
        import onnxruntime as ort

        self.backend = "onnxruntime"
        if not os.path.isfile(self.model_path):
            raise UserError(f"{self.model_path}: no such file")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = int(self.threads)
            options.inter_op_num_threads = 1
        if not self.optimize:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        available = ort.get_available_providers()
        wanted = list(self.providers or ["CPUExecutionProvider"])
        self.missing_providers = [p for p in wanted if p not in available]
        chosen = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(self.model_path, options, providers=chosen)
        except Exception as exc:
            raise UserError(f"{self.model_path}: onnxruntime cannot load it ({str(exc).splitlines()[0][:300]})") from None
        self.inputs = [_spec(i) for i in self.session.get_inputs()]
        self.outputs = [_spec(o) for o in self.session.get_outputs()]

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.outputs]
        start = time.perf_counter()
        results = self.session.run(names, dict(feeds))
        self.last_infer_s = time.perf_counter() - start
        return dict(zip(names, results))

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.model_path,
            "providers": self.session.get_providers(),
            "missing_providers": self.missing_providers,
            "threads": self.threads or "onnxruntime default",
        }


def _spec(arg) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else (d or None) for d in arg.shape)
    return TensorSpec(arg.name, shape, _ORT_TYPES.get(arg.type, arg.type))
