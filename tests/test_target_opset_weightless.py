"""target_opset converts a weightless copy and keeps the model's own weight tensors (issue 20,
memory): the same graph onnx's version_converter gives with the weights in, equal outputs on
onnxruntime, and a peak of the graph, not several copies of the weights."""
from __future__ import annotations


import numpy as np
import onnx
import pytest
from onnx import TensorProto as T, helper, numpy_helper, version_converter

from lvvit_opt.passes import target_opset as target_module
from lvvit_opt.passes.pipeline import run_pipeline
from lvvit_opt.runtime.ort import OrtRunner

from memory import peak_rise


def _model(layers: int = 4, width: int = 256) -> onnx.ModelProto:
    """Opset 20: MatMul weights (256 KB each), a ReduceMean whose axes the adapters move from
    input to attribute, a Squeeze, and Gelus (no adapter below 20: lowered)."""
    rng = np.random.default_rng(0)
    nodes, inits, last = [], [], "x"
    for i in range(layers):
        inits.append(numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32) / 16, f"w{i}"))
        nodes += [helper.make_node("MatMul", [last, f"w{i}"], [f"m{i}"]), helper.make_node("Gelu", [f"m{i}"], [f"g{i}"])]
        last = f"g{i}"
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axes"))
    nodes += [helper.make_node("ReduceMean", [last, "axes"], ["mean"], keepdims=1),
              helper.make_node("Squeeze", ["mean", "axes"], ["sq"]),
              helper.make_node("Add", [last, last], ["ab"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [2, width])],
                              [helper.make_tensor_value_info("ab", T.FLOAT, [2, width]),
                               helper.make_tensor_value_info("sq", T.FLOAT, [2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def _outputs(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    runner = OrtRunner.from_model(model)
    try:
        return runner.run_batch([x])
    finally:
        runner.close()


@pytest.mark.parametrize("target", [18, 17])
def test_the_weightless_conversion_is_the_converters_graph_with_the_same_weights(target):
    model = _model()
    lowered = run_pipeline(model, ["target_opset"], {"target_opset": {"opset": 19}}).model  # Gelu lowered
    reference = version_converter.convert_version(lowered, target)
    ours = run_pipeline(model, ["target_opset"], {"target_opset": {"opset": target}}).model
    assert list(ours.graph.node) == list(reference.graph.node)
    assert list(ours.opset_import) == list(reference.opset_import) and ours.ir_version == reference.ir_version
    assert sorted(t.SerializeToString() for t in ours.graph.initializer) == \
        sorted(t.SerializeToString() for t in reference.graph.initializer)
    assert {t.name: t for t in ours.graph.initializer}["w0"].raw_data == model.graph.initializer[0].raw_data
    x = np.random.default_rng(1).standard_normal((2, 256)).astype(np.float32)
    for got, want in zip(_outputs(ours, x), _outputs(model, x)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_placeholder_the_converter_rewrote_falls_back_to_the_full_conversion(monkeypatch):
    monkeypatch.setattr(target_module, "_placeholders_intact", lambda *_a: False)
    result = run_pipeline(_model(), ["target_opset"], {"target_opset": {"opset": 18}})
    assert "converted with the weights in" in " ".join(result.reports[0].notes)
    assert all(t.raw_data for t in result.model.graph.initializer if t.name.startswith("w"))


def test_the_conversion_peak_is_the_graph_not_the_weights():
    model = _model(layers=64)  # 16 MB of weights
    size = model.ByteSize()
    run_pipeline(model, ["target_opset"], {"target_opset": {"opset": 18}}, in_place=False)  # warm
    work = onnx.ModelProto()
    work.CopyFrom(model)
    with peak_rise() as peak:
        run_pipeline(work, ["target_opset"], {"target_opset": {"opset": 18}}, in_place=True)
    assert peak.rise <= 0.5 * size, f"target_opset rose {peak.rise / size:.2f}x the weights"
