"""Which layers of a ViT are quantized to INT8, by the target's documented rules.

Quantized: Linear layers (MatMul with a constant 2-D weight as its second input, Gemm with a
constant B) and Conv with a constant weight (the patch embedding and its stem). Kept in float,
each with its reason: attention's activation-by-activation MatMuls (Q·Kᵀ, P·V), Softmax,
LayerNorm (fused or decomposed), GELU and the residual Adds. Only the main graph is quantized:
nodes inside subgraphs (If/Loop bodies) are reported as kept.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np

TARGETS = ("ascend", "ort-cpu", "ort-trt")
QUANTIZABLE_OPS = ("MatMul", "Gemm", "Conv")

# Reasons, with their sources (the record of the CANN docs and the ViT PTQ papers).
_ACT_MATMUL = {
    "ascend": "activation x activation MatMul (attention Q.K^T / P.V): CANN documents INT8 gains for it only on "
              "A2/A3/200I-A2/Atlas 350 and an accuracy drop on other products; kept fp16 on 310/310P",
    "ort": "activation x activation MatMul (attention Q.K^T / P.V): post-Softmax values follow a power law that "
           "per-tensor INT8 cannot hold (FQ-ViT, PTQ4ViT); kept float",
}
_KEPT_OPS = {
    "Softmax": "Softmax: never quantized (CANN: not an INT8 op; its output is power-law distributed)",
    "LayerNormalization": "LayerNorm: never quantized (CANN); its output carries the inter-channel outliers",
    "Gelu": "GELU: never quantized (CANN)",
    "Erf": "GELU (Erf form): never quantized (CANN)",
    "ReduceMean": "ReduceMean (a decomposed LayerNorm's mean or variance): never quantized (CANN)",
}
_RESIDUAL = ("Add of two activations (residual or branch merge): kept float (quantizing ViT residual Adds collapses accuracy: ViT-B falls to 0 % top-1 "
             "in the PTQ literature)")


@dataclass
class Layer:
    """One node the report lists: quantized or kept, and why."""

    name: str
    op_type: str
    quantize: bool
    reason: str
    activation: str | None = None  # the input that is quantized per tensor
    weight: str | None = None  # constant weight input
    bias: str | None = None  # Gemm/Conv bias input (quantized to int32 by AMCT's deploy model)
    channel_axis: int | None = None  # the weight's output-channel axis (per-channel quantization)
    per_channel: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def constant_values(graph) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs of the main graph, by tensor name."""
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _attr(node, name: str, default=None):
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def per_channel_for(target: str, op_type: str) -> bool:
    """Per-channel weights where the target supports them. AMCT's record documents channel-wise
    scale_w for Conv only (fully connected layers have none); onnxruntime and TensorRT take
    per-channel weights for Conv, MatMul and Gemm."""
    if target == "ascend":
        return op_type == "Conv"
    return True


def select_layers(model, target: str, skip: Iterable[str] = ()) -> list[Layer]:
    """Every listed node of `model`'s main graph, quantized or kept, with the reason.

    `skip`: node names the user keeps in float (reported as such); a name that matches
    nothing is a UserError (a typo must not pass silently)."""
    from lvvit_opt.core.errors import UserError

    if target not in TARGETS:
        raise UserError(f"--target {target!r}: expected one of {', '.join(TARGETS)}")
    graph = model.graph
    constants = constant_values(graph)
    skip = set(skip)
    names = {n.name for n in graph.node}
    unknown = sorted(skip - names)
    if unknown:
        raise UserError(f"--skip {', '.join(unknown)}: no node of that name in the model")
    family = "ascend" if target == "ascend" else "ort"
    layers: list[Layer] = []
    for node in graph.node:
        layer = _classify(node, constants, target, family)
        if layer is None:
            continue
        if layer.quantize and node.name in skip:
            layer.quantize, layer.reason = False, "kept float by --skip"
        if layer.quantize and not node.name:
            layer.quantize, layer.reason = False, "unnamed node: AMCT and onnxruntime select layers by name"
        layers.append(layer)
    for node in graph.node:  # subgraph bodies: never quantized, but said
        for attr in node.attribute:
            bodies = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
            for body in bodies:
                for inner in body.node:
                    if inner.op_type in QUANTIZABLE_OPS:
                        layers.append(Layer(inner.name, inner.op_type, False,
                                            f"inside the subgraph of {node.op_type} {node.name!r}: not quantized"))
    return layers


def _classify(node, constants, target: str, family: str) -> Layer | None:
    op = node.op_type
    inputs = list(node.input)
    if op == "MatMul" and len(inputs) == 2:
        a_const, b_const = inputs[0] in constants, inputs[1] in constants
        if not a_const and not b_const:
            return Layer(node.name, op, False, _ACT_MATMUL[family])
        if a_const and b_const:
            return Layer(node.name, op, False, "both inputs constant (foldable): nothing to quantize")
        if a_const:
            return Layer(node.name, op, False, "constant first operand: not the Linear x.W pattern")
        if np.ndim(constants[inputs[1]]) != 2:
            return Layer(node.name, op, False, f"weight of rank {np.ndim(constants[inputs[1]])}: only 2-D "
                                               "Linear weights are quantized")
        return Layer(node.name, op, True, "Linear (MatMul with a constant weight)", activation=inputs[0],
                     weight=inputs[1], channel_axis=1, per_channel=per_channel_for(target, op))
    if op == "Gemm" and len(inputs) >= 2:
        if inputs[1] not in constants or inputs[0] in constants:
            return Layer(node.name, op, False, "Gemm without a constant weight B: not a Linear layer")
        if _attr(node, "transA", 0):
            return Layer(node.name, op, False, "Gemm with transA=1: not the Linear pattern")
        axis = 0 if _attr(node, "transB", 0) else 1
        bias = inputs[2] if len(inputs) > 2 and inputs[2] in constants else None
        return Layer(node.name, op, True, "Linear (Gemm with a constant weight)", activation=inputs[0],
                     weight=inputs[1], bias=bias, channel_axis=axis, per_channel=per_channel_for(target, op))
    if op == "Conv" and len(inputs) >= 2:
        if inputs[1] not in constants:
            return Layer(node.name, op, False, "Conv with a computed weight: not quantized")
        bias = inputs[2] if len(inputs) > 2 and inputs[2] in constants else None
        return Layer(node.name, op, True, "Conv with a constant weight (patch embedding / stem)", activation=inputs[0],
                     weight=inputs[1], bias=bias, channel_axis=0, per_channel=per_channel_for(target, op))
    if op in _KEPT_OPS:
        return Layer(node.name, op, False, _KEPT_OPS[op])
    if op == "Add" and len(inputs) == 2 and not any(i in constants for i in inputs):
        return Layer(node.name, op, False, _RESIDUAL)
    return None


def summary_counts(layers: list[Layer]) -> dict[str, int]:
    """quantized / kept counts, for the report's first line."""
    quantized = sum(1 for layer in layers if layer.quantize)
    return {"quantized": quantized, "kept": len(layers) - quantized}
