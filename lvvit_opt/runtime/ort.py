"""onnxruntime runner."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import UserError
from ..tensor_spec import runtime_spec
from .base import Runner
from .registry import register_runner


@register_runner
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
    model: Any = None  # an in-memory onnx.ModelProto to run instead of the file (see from_model)
    memory_arena: bool = True  # False: freed activations go back to the system (debug layers' many outputs)

    name = "onnxruntime"
    aliases = ("ort",)
    suffixes = (".onnx",)

    @classmethod
    def from_model(cls, model, **options) -> "OrtRunner":
        """Run an in-memory onnx.ModelProto (passes, --check-each) without writing it first
        unless it is over protobuf's 2 GB limit."""
        return cls("<in-memory model>", model=model, **options)

    def __post_init__(self):
        import onnxruntime as ort

        self._spill_dir = None
        if self.model is None and not os.path.isfile(self.model_path):
            raise UserError(f"{self.model_path}: no such file")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = int(self.threads)
            options.inter_op_num_threads = 1
        if not self.optimize:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if not self.memory_arena:
            options.enable_cpu_mem_arena = False
        available = ort.get_available_providers()
        wanted = list(self.providers or ["CPUExecutionProvider"])
        self.missing_providers = [p for p in wanted if p not in available]
        chosen = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
        source = self.model_path if self.model is None else self._in_memory_source()
        try:
            self.session = ort.InferenceSession(source, options, providers=chosen)
        except Exception as exc:
            raise UserError(f"{self.model_path}: onnxruntime cannot load it ({str(exc).splitlines()[0][:300]})") from None
        self.inputs = [runtime_spec(i.name, i.shape, i.type) for i in self.session.get_inputs()]
        self.outputs = [runtime_spec(o.name, o.shape, o.type) for o in self.session.get_outputs()]

    def run_batch(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        feeds = {spec.name: array for spec, array in zip(self.inputs, arrays)}
        return self.session.run([o.name for o in self.outputs], feeds)

    def _in_memory_source(self):
        from ..fileio import needs_external_data, save_onnx

        if not needs_external_data(self.model):
            return self.model.SerializeToString()
        self._spill_dir = tempfile.TemporaryDirectory(prefix="lvvit-opt-")
        return str(save_onnx(self.model, os.path.join(self._spill_dir.name, "model.onnx")))

    def close(self) -> None:
        if self._spill_dir is not None:
            self._spill_dir.cleanup()
            self._spill_dir = None

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.model_path,
            "providers": self.session.get_providers(),
            "missing_providers": self.missing_providers,
            "threads": self.threads or "onnxruntime default",
        }

