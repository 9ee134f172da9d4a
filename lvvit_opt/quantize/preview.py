"""The CPU preview of the target's INT8 arithmetic: a fake-quant ONNX that runs on onnxruntime.

Like AMCT's `*_fake_quant_model.onnx`: every quantized layer reads its activation through a
QuantizeLinear/DequantizeLinear pair (int8, per tensor, the calibrated scale and offset) and
its weight as the dequantized int8 weight. The weight's quantize-dequantize is folded into the
initializer (exactly the float32 values a DequantizeLinear would output), so the preview runs
on any opset and per-channel weights need no opset-13 axis. Biases of Gemm/Conv are rounded to
the int32 grid scale_d*scale_w, as AMCT documents for its fake-quant model. Layer outputs stay
float: AMCT dequantizes every INT8 layer's int32 result back to float before the next op.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

SENSITIVITY_SUFFIX = "__int8"


def build_preview(model, layers: Sequence, params: Mapping, float_layers: Iterable[str] = ()):
    """A copy of `model` with every quantized layer not in `float_layers` fake-quantized."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep_float = set(float_layers)
    chosen = [layer for layer in layers if layer.quantize and layer.name not in keep_float]
    _Rewriter(out, params).rewrite(chosen, clone=False)
    return out


def build_sensitivity_model(model, layers: Sequence, params: Mapping):
    """A copy of `model` that computes every quantized layer twice from the same float inputs:
    the float node (its own output) and an INT8 clone (`<output>__int8`), both graph outputs.
    One run gives each layer's own error, free of the error upstream layers add."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    chosen = [layer for layer in layers if layer.quantize]
    pairs = _Rewriter(out, params).rewrite(chosen, clone=True)
    present = {o.name for o in out.graph.output}
    for float_name, int8_name in pairs.values():
        for name in (float_name, int8_name):
            if name not in present:
                out.graph.output.append(onnx.ValueInfoProto(name=name))
                present.add(name)
    return out, pairs


class _Rewriter:
    def __init__(self, model, params: Mapping) -> None:
        from lvvit_opt.passes.graph_utils import NameAllocator
        from lvvit_opt.quantize.select import constant_values

        self.model = model
        self.graph = model.graph
        self.params = params
        self.names = NameAllocator(self.graph)
        self.constants = constant_values(self.graph)
        self.qdq: dict[tuple, str] = {}
        self.new_nodes: dict[int, list] = {}  # index of the node they go before -> nodes

    def rewrite(self, layers: Sequence, clone: bool) -> dict[str, tuple[str, str]]:
        import onnx

        by_name = {layer.name: layer for layer in layers}
        index_of = {node.name: i for i, node in enumerate(self.graph.node) if node.name in by_name}
        pairs: dict[str, tuple[str, str]] = {}
        for name, layer in by_name.items():
            i = index_of[name]
            node = self.graph.node[i]
            target = node
            if clone:
                target = onnx.NodeProto()
                target.CopyFrom(node)
                target.name = self.names.fresh(node.name + SENSITIVITY_SUFFIX)
                del target.output[:]
                target.output.extend(self.names.fresh(o + SENSITIVITY_SUFFIX) for o in node.output)
                pairs[name] = (node.output[0], target.output[0])
            self._quantize_inputs(target, layer, i)
            if clone:
                self.new_nodes.setdefault(i + 1, []).append(target)
        self._splice()
        self._drop_unused_initializers()
        return pairs

    def _quantize_inputs(self, node, layer, index: int) -> None:
        from onnx import numpy_helper

        p = self.params[layer.name]
        act_slot = list(node.input).index(layer.activation)
        node.input[act_slot] = self._qdq(layer.activation, p.act.scale, p.act.offset, index)
        axis = layer.channel_axis if layer.per_channel else None
        from lvvit_opt.quantize.calibrate import fake_quant_bias, fake_quant_weight

        weight = fake_quant_weight(self.constants[layer.weight], p.weight_scale, axis)
        name = self.names.fresh(f"{layer.weight}_int8_{layer.name}")
        self.graph.initializer.append(numpy_helper.from_array(weight, name))
        node.input[1] = name
        if layer.bias is not None:
            bias = fake_quant_bias(self.constants[layer.bias], p.act.scale, p.weight_scale)
            name = self.names.fresh(f"{layer.bias}_int32_{layer.name}")
            self.graph.initializer.append(numpy_helper.from_array(bias, name))
            node.input[2] = name

    def _qdq(self, tensor: str, scale: float, offset: int, index: int) -> str:
        """`tensor` through QuantizeLinear/DequantizeLinear (one pair per tensor and parameters)."""
        from onnx import helper, numpy_helper

        key = (tensor, float(scale), int(offset))
        if key in self.qdq:
            return self.qdq[key]
        scale_name = self.names.fresh(f"{tensor}_scale_d")
        zp_name = self.names.fresh(f"{tensor}_offset_d")
        self.graph.initializer.append(numpy_helper.from_array(np.array(scale, dtype=np.float32), scale_name))
        self.graph.initializer.append(numpy_helper.from_array(np.array(offset, dtype=np.int8), zp_name))
        q_out, dq_out = self.names.fresh(f"{tensor}_int8"), self.names.fresh(f"{tensor}_dequant")
        nodes = [helper.make_node("QuantizeLinear", [tensor, scale_name, zp_name], [q_out],
                                  name=self.names.fresh(f"{tensor}_QuantizeLinear")),
                 helper.make_node("DequantizeLinear", [q_out, scale_name, zp_name], [dq_out],
                                  name=self.names.fresh(f"{tensor}_DequantizeLinear"))]
        self.new_nodes.setdefault(index, []).extend(nodes)
        self.qdq[key] = dq_out
        return dq_out

    def _splice(self) -> None:
        """Insert the new nodes before the node they were made for (stays topologically sorted)."""
        merged = []
        for i, node in enumerate(self.graph.node):
            merged.extend(self.new_nodes.get(i, []))
            merged.append(node)
        merged.extend(self.new_nodes.get(len(self.graph.node), []))
        del self.graph.node[:]
        self.graph.node.extend(merged)

    def _drop_unused_initializers(self) -> None:
        from lvvit_opt.passes.graph_utils import node_reads

        used = set()
        for node in self.graph.node:
            used |= node_reads(node)
        used |= {o.name for o in self.graph.output}
        kept = [init for init in self.graph.initializer if init.name in used]
        if len(kept) != len(self.graph.initializer):
            del self.graph.initializer[:]
            self.graph.initializer.extend(kept)
