"""The one tensor-spec reader: the symbolic-dim policy and dtype names, from ONNX and runtimes."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from lvvit_opt.core.errors import UserError
from lvvit_opt.core.tensor_spec import TensorSpec, dims_of, normalise_dtype, read_specs, runtime_spec


def _model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch", 3, 0, None])
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, None)  # rank unknown
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, [])
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])
    w_input = helper.make_tensor_value_info("w", TensorProto.FLOAT, [1])  # old-IR style: initializer listed as input
    nodes = [helper.make_node("ReduceSum", ["x"], ["y"], keepdims=0)]
    graph = helper.make_graph(nodes, "g", [x, ids, w_input], [y], initializer=[weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_onnx_dims_follow_the_policy(tmp_path):
    model = _model()
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    for source in (model, str(path)):
        inputs, outputs = read_specs(source)
        assert inputs == [TensorSpec("x", ("batch", 3, None, None), "float16"), TensorSpec("ids", None, "int64")]
        assert outputs == [TensorSpec("y", (), "float16")]
    assert dims_of(model.graph.input[0].type) == ("batch", 3, None, None)


def test_runtime_specs_and_dtypes():
    assert runtime_spec("image", ["N", 3, -1, np.int64(224)], "tensor(float)") == \
        TensorSpec("image", ("N", 3, None, 224), "float32")
    assert normalise_dtype("dtype.FLOAT16") == "float16"  # ais_bench
    assert normalise_dtype("tensor(int64)") == "int64"  # onnxruntime
    assert normalise_dtype(np.dtype("uint8")) == "uint8"
    assert normalise_dtype(TensorProto.DOUBLE) == "float64"


def test_spec_helpers():
    spec = TensorSpec("image", ("N", 3, 224, 224))
    assert spec.batch is None and not spec.is_static
    assert spec.with_batch(16) == TensorSpec("image", (16, 3, 224, 224)) and spec.with_batch(16).is_static
    assert spec.concrete_shape(4) == (4, 3, 224, 224) and spec.concrete_shape() == (1, 3, 224, 224)
    assert spec.format_shape("N") == "(N, 3, 224, 224)" and spec.to_list() == ["image", ["N", 3, 224, 224], "float32"]
    with pytest.raises(UserError, match="has a symbolic dim besides the batch"):
        TensorSpec("x", (1, None)).concrete_shape()
    with pytest.raises(UserError, match="has no shape in the model"):
        TensorSpec("x", None).concrete_shape()


def test_unreadable_file(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(UserError, match="junk.onnx: not a readable ONNX model"):
        read_specs(str(junk))
