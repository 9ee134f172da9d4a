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
               reference: Mapping[str, np.ndarray] | None = None) -> PipelineResult:
    """Run `passes` on `model` and check what every pass must keep.

    ops: the op types of the result, as a list in node order or a dict op -> count (None: not checked).
    feeds: inputs for the equality check (default: seeded inputs from the model's specs, batch 1);
    each graph is fed the ones it takes.
    atol: allowed max abs difference between onnxruntime outputs of the original and the result.
    reference: expected outputs (e.g. torch's golden outputs), also compared with `atol`.
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
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], atol=atol, rtol=0, err_msg=f"output {name}")
    for name, value in (reference or {}).items():
        np.testing.assert_allclose(got[name], value, atol=atol, rtol=0, err_msg=f"output {name} vs reference")
    return result


def _run(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """onnxruntime outputs, fed only the inputs this model takes (a pass may drop unused ones)."""
    with OrtRunner.from_model(model) as runner:
        return runner.infer({spec.name: feeds[spec.name] for spec in runner.inputs})
