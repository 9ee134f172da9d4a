"""validate/debug warn about random nodes (ViTMAE's RandomUniformLike masking, Dropout in
training mode) with their names: a comparison of such a graph judges noise."""
from __future__ import annotations

import numpy as np
import onnx
from click.testing import CliRunner
from onnx import TensorProto as T, helper, numpy_helper

from lvvit_opt.cli import main
from lvvit_opt.verify.random_ops import random_nodes


def _noisy_model(training: bool = True) -> onnx.ModelProto:
    nodes = [helper.make_node("RandomUniformLike", ["x"], ["noise"], name="mae_mask_noise"),
             helper.make_node("Add", ["x", "noise"], ["h"]),
             helper.make_node("Dropout", ["h", "ratio", "mode"], ["y"], name="drop")]
    inits = [numpy_helper.from_array(np.array(0.5, np.float32), "ratio"),
             numpy_helper.from_array(np.array(training), "mode")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_random_nodes_found_and_inference_dropout_is_not():
    assert random_nodes(_noisy_model()) == ["mae_mask_noise (RandomUniformLike)", "drop (Dropout) training_mode"]
    assert random_nodes(_noisy_model(training=False)) == ["mae_mask_noise (RandomUniformLike)"]


def test_validate_warns_with_node_names(tmp_path, golden_onnx):
    path = tmp_path / "noisy.onnx"
    onnx.save(_noisy_model(), path)
    result = CliRunner().invoke(main, ["validate", str(path), str(path)])
    assert "random node(s)" in result.output and "mae_mask_noise (RandomUniformLike)" in result.output
    quiet = CliRunner().invoke(main, ["validate", golden_onnx, golden_onnx])
    assert "random node" not in quiet.output
