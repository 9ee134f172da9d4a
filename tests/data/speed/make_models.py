"""Writes the two tiny models the speed-verdict tests measure (committed beside this script;
rerun it only to change them: `python tests/data/speed/make_models.py`).

matmul.onnx          y = MatMul(Tanh(MatMul(x, W)), W)              x: [32, 128] float32
matmul_planted.onnx  the same y, plus a real slowdown: a chain of six more MatMul+Tanh on x whose
                     result is multiplied by a zero weight and added to y. The outputs are equal,
                     but the chain depends on the input, so no constant folding removes it, and
                     onnxruntime does not rewrite a multiplication by zero.
"""
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).parent
ROWS, WIDTH, CHAIN = 32, 128, 6


def build(planted: bool) -> onnx.ModelProto:
    weight = (np.random.default_rng(0).standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "W")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h0"]), helper.make_node("Tanh", ["h0"], ["a0"]),
             helper.make_node("MatMul", ["a0", "W"], ["y" if not planted else "main"])]
    if planted:
        previous = "x"
        for i in range(CHAIN):
            nodes += [helper.make_node("MatMul", [previous, "W"], [f"c{i}"]),
                      helper.make_node("Tanh", [f"c{i}"], [f"t{i}"])]
            previous = f"t{i}"
        inits.append(numpy_helper.from_array(np.zeros((1,), np.float32), "zero"))
        nodes += [helper.make_node("Mul", [previous, "zero"], ["nothing"]),
                  helper.make_node("Add", ["main", "nothing"], ["y"])]
    graph = helper.make_graph(nodes, "planted" if planted else "plain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [ROWS, WIDTH])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [ROWS, WIDTH])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="lvvit-opt tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    onnx.save(build(False), HERE / "matmul.onnx")
    onnx.save(build(True), HERE / "matmul_planted.onnx")
