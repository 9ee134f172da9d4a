"""onnx_reference: ONNX's own pure-Python evaluator as a backend.

Slow, but independent of onnxruntime: `lvvit-opt validate A.onnx B.onnx` compares two
graphs, and this runner tells whether a disagreement is in the graph or in onnxruntime
(`open_runner(path, backend="onnx_reference")`).

This is also the file to copy for a new backend (docs/architecture.md, "Adding a runner"): register the
class, declare `name`, `suffixes` and options (dataclass fields), fill `inputs`/`outputs`
in `__post_init__`, implement `run_batch`. The base class checks and orders the feeds,
pads to a fixed batch (`pads_to_batch = True`), times the call and closes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lvvit_opt.core.tensor_spec import read_specs
from lvvit_opt.runtime.base import Runner
from lvvit_opt.runtime.registry import register_runner


@register_runner
@dataclass
class OnnxReferenceRunner(Runner):
    """onnx.reference.ReferenceEvaluator on an ONNX file. verbose: the evaluator's trace level."""

    verbose: int = 0

    name = "onnx_reference"
    suffixes = (".onnx",)
    priority = -10  # "auto" prefers onnxruntime for .onnx

    def __post_init__(self) -> None:
        from onnx.reference import ReferenceEvaluator

        from lvvit_opt.core.onnx_files import load_onnx

        model = load_onnx(self.model_path)
        self.inputs, self.outputs = read_specs(model)
        self.evaluator = ReferenceEvaluator(model, verbose=int(self.verbose))

    def run_batch(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        feeds = {spec.name: array for spec, array in zip(self.inputs, arrays)}
        return [np.asarray(out) for out in self.evaluator.run(None, feeds)]

    def close(self) -> None:
        self.evaluator = None
