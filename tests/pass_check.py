"""The one helper every pass test goes through: graph -> pass(es) -> expected ops ->
onnxruntime equality -> the caller's model unchanged.

    from pass_check import check_pass
    result = check_pass(model, ["softmax_transpose"], ops={"Transpose": 2, "Softmax": 1, ...})
    assert result.reports[0].matched == 1          # then the pass's own facts

The pass manager's structural check (onnx.checker + strict shape inference) runs after
each pass inside run_pipeline; the helper asserts it once more on the final graph.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np
import onnx

from lvvit_opt.verify.inputs import make_inputs
from lvvit_opt.passes import PipelineResult, run_pipeline, structural_problem
from lvvit_opt.runtime.ort import OrtRunner
from lvvit_opt.core.tensor_spec import read_specs


def check_pass(model: onnx.ModelProto, passes: Sequence[str] | str,
               options: Mapping[str, Mapping[str, Any]] | None = None, *,
               ops: Sequence[str] | Mapping[str, int] | None = None,
               feeds: Mapping[str, np.ndarray] | None = None, atol: float = 1e-5,
               reference: Mapping[str, np.ndarray] | None = None, tolerance=None) -> PipelineResult:
    """Run `passes` on `model` and check what every pass must keep.

    ops: the op types of the result, as a list in node order or a dict op -> count (None: not checked).
    feeds: inputs for the equality check (default: seeded inputs from the model's specs, batch 1);
    each graph is fed the ones it takes.
    atol: allowed max abs difference between onnxruntime outputs of the original and the result.
    reference: expected outputs (e.g. torch's golden outputs), also compared with `atol`.
    tolerance: a golden.Tolerance judging the result instead of `atol` (an fp16 pass: Tolerance.fp16());
    outputs are compared as float64 whatever their type. Float feeds are cast for float16 inputs.
    Returns the PipelineResult for the pass's own assertions (reports, details).
    """
    before = model.SerializeToString()
    result = run_pipeline(model, passes, options)
    assert model.SerializeToString() == before, "the pass modified the caller's model"
    assert structural_problem(result.model) is None, structural_problem(result.model)
    if ops is not None:
        if isinstance(ops, Mapping):
            assert Counter(n.op_type for n in result.model.graph.node) == Counter(ops)
        else:
            assert [n.op_type for n in result.model.graph.node] == list(ops)
    if feeds is None:
        feeds = make_inputs(read_specs(model)[0], count=1, seed=0, batch_size=1)[0]
    expected, got = _run(model, feeds), _run(result.model, feeds)
    assert got.keys() == expected.keys(), (sorted(got), sorted(expected))
    if tolerance is not None:
        from lvvit_opt.verify.golden import compare_outputs

        for against, label in ((expected, "the original"), (reference or {}, "the reference")):
            mine = {name: got[name].astype(np.float64) for name in against}
            verdict = compare_outputs({n: np.asarray(v, np.float64) for n, v in against.items()}, mine, tolerance)
            assert verdict.passed, f"vs {label}:\n{verdict.format()}"
        return result
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], atol=atol, rtol=0, err_msg=f"output {name}")
    for name, value in (reference or {}).items():
        np.testing.assert_allclose(got[name], value, atol=atol, rtol=0, err_msg=f"output {name} vs reference")
    return result


def _run(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """onnxruntime outputs, fed only the inputs this model takes (a pass may drop unused ones)."""
    with OrtRunner.from_model(model) as runner:
        return runner.infer({spec.name: _as_input(feeds[spec.name], spec.dtype) for spec in runner.inputs})


def _as_input(value, dtype: str):
    """A float feed cast to a float16 input (a graph whose inputs to_fp16 made fp16); others as given."""
    value = np.asarray(value)
    return value.astype(np.float16) if dtype == "float16" and value.dtype.kind == "f" else value
