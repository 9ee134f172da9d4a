"""One runner interface over every backend (onnxruntime, ais_bench, legacy benchmark).

A runner loads a model once, then `infer` maps input name -> array to output name ->
array. `last_infer_s` is the backend's own time for the last call (device/compute time
where the backend reports it, else the wall time of the call), which bench uses.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple  # ints for static dims; str or None for symbolic ones
    dtype: str = "float32"

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) and d > 0 for d in self.shape)


@dataclass
class Runner(abc.ABC):
    model_path: str
    inputs: list[TensorSpec] = field(default_factory=list, init=False)
    outputs: list[TensorSpec] = field(default_factory=list, init=False)
    last_infer_s: float = field(default=0.0, init=False)

    backend: str = field(default="abstract", init=False)

    @abc.abstractmethod
    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; returns output name -> array."""

    def describe(self) -> dict[str, Any]:
        """What was run and how (backend, providers, threads, ...), for reports."""
        return {"backend": self.backend, "model": self.model_path}

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # convenience for single-input models
    def infer_array(self, array: np.ndarray) -> dict[str, np.ndarray]:
        return self.infer({self.inputs[0].name: array})
