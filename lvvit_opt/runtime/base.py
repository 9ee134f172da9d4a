"""One runner interface over every backend (onnxruntime, ais_bench, legacy benchmark, ...).

A runner loads a model once, then `infer` maps input name -> array to output name -> array.
The base class does the shared work once, so a backend only implements `run_batch`:

* feeds are checked and ordered (missing, extra, mis-shaped or mis-typed feeds are a
  UserError naming the input; same-kind casts such as float64 -> float32 are done);
* a fixed-batch compiled model (`pads_to_batch`) takes any number of rows: they run in
  model-sized chunks, the last one zero-padded, and the padding is dropped from the outputs;
* the call is timed: `last_infer_s` is the backend's own time for the last `infer`
  (`batch_seconds` may turn the wall time into device time), which bench uses;
* `close()` and the context manager.

Subclasses may not override `infer` (enforced at class creation). To add a backend, see
docs/architecture.md, "Adding a runner", and copy `runtime/example.py`.
"""
from __future__ import annotations

import abc
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from lvvit_opt.core.errors import UserError
from lvvit_opt.core.tensor_spec import TensorSpec
from lvvit_opt.runtime.feeds import infer_in_model_batches, order_feeds

__all__ = ["Runner", "TensorSpec"]


@dataclass
class Runner(abc.ABC):
    model_path: str
    inputs: list[TensorSpec] = field(default_factory=list, init=False)
    outputs: list[TensorSpec] = field(default_factory=list, init=False)
    last_infer_s: float = field(default=0.0, init=False)

    # What the registry reads (see runtime/registry.py).
    name: ClassVar[str] = ""  # the backend name users type (--backend NAME)
    aliases: ClassVar[tuple[str, ...]] = ()  # other accepted spellings
    suffixes: ClassVar[tuple[str, ...]] = ()  # file suffixes it opens, lower case with the dot
    priority: ClassVar[int] = 0  # "auto" tries available runners for a suffix, highest first
    # A compiled model with a fixed batch: infer takes any number of rows (see the module doc).
    pads_to_batch: ClassVar[bool] = False
    # With pads_to_batch: hand run_batch all padded rows at once (the backend batches itself).
    batches_itself: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "infer" in cls.__dict__:
            raise TypeError(f"{cls.__name__} overrides Runner.infer; implement run_batch instead "
                            "(the base class checks feeds, pads, and sets last_infer_s)")

    # ------------------------------------------------------------------ for subclasses

    @abc.abstractmethod
    def run_batch(self, arrays: list[np.ndarray]) -> Sequence[np.ndarray]:
        """Run checked inputs (in `self.inputs` order, model dtypes); return outputs in
        `self.outputs` order."""

    def batch_seconds(self, wall_s: float, rows: int) -> float:
        """The backend's time for the `run_batch` call that just ended (default: its wall time)."""
        return wall_s

    @classmethod
    def unavailable_reason(cls, options: Mapping[str, Any]) -> str | None:
        """Why this backend cannot run here (with these options), or None. "auto" skips
        runners with a reason; keep it cheap (no model loading)."""
        return None

    def describe(self) -> dict[str, Any]:
        """What was run and how (backend, providers, threads, ...), for reports."""
        return {"backend": self.backend, "model": self.model_path}

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ shared

    @property
    def backend(self) -> str:
        return self.name

    @classmethod
    def option_names(cls) -> list[str]:
        """The options `open_runner(path, backend=NAME, **options)` accepts (dataclass fields)."""
        return [f.name for f in dataclasses.fields(cls) if f.init and f.name != "model_path"]

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(options) - set(cls.option_names()))
        if unknown:
            raise UserError(f"{cls.__name__} does not take option(s) {', '.join(unknown)}; "
                            f"it takes {', '.join(sorted(cls.option_names())) or 'none'}")
        return dict(options)

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run `feeds` (input name -> array); returns output name -> array and sets last_infer_s."""
        arrays = self.check_feeds(feeds)
        if self.pads_to_batch:
            outputs, seconds = self._infer_padded(arrays)
        else:
            outputs, seconds = self._timed(arrays)
        self.last_infer_s = seconds
        return {spec.name: out for spec, out in zip(self.outputs, outputs)}

    def infer_array(self, array: np.ndarray) -> dict[str, np.ndarray]:
        """Convenience for single-input models."""
        return self.infer({self.inputs[0].name: array})

    @property
    def model_batch(self) -> int:
        """The fixed batch of a compiled model (first dim of its first input)."""
        batch = self.inputs[0].batch if self.inputs else None
        if batch is None:
            raise UserError(f"cannot tell the {self._label}'s batch size from its input shape "
                            f"{self.inputs[0].shape if self.inputs else ()}")
        return batch

    def check_feeds(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Feeds in the model's input order and dtypes (see feeds.order_feeds)."""
        return order_feeds(feeds, self.inputs, self._label, free_batch=self.pads_to_batch)

    @property
    def _label(self) -> str:
        suffix = Path(str(self.model_path)).suffix.lower()
        return suffix if suffix and suffix != ".onnx" else "model"

    def _timed(self, arrays: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
        start = time.perf_counter()
        outputs = list(self.run_batch(arrays))
        wall = time.perf_counter() - start
        rows = arrays[0].shape[0] if arrays and arrays[0].ndim else 1
        return outputs, self.batch_seconds(wall, rows)

    def _infer_padded(self, arrays: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
        return infer_in_model_batches(self._timed, arrays, self.model_batch, self._label,
                                      all_at_once=self.batches_itself)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

