"""lower_attention: fused attention ops -> MatMul/Softmax/MatMul that softmax_transpose wraps.

Which op types are fused attention is graph_utils.FUSED_ATTENTION_OPS: softmax_transpose
uses it too, so a graph whose attention hides inside such an op is never reported wrapped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from lvvit_opt.core.errors import UserError
from lvvit_opt.core.graph_walk import walk_graphs
from lvvit_opt.passes.base import GraphPass, PassReport
from lvvit_opt.passes.graph_utils import (NameAllocator, consumers, infer_shapes_light, is_fused_attention,
                                          replace_nodes, scoped_label)
from lvvit_opt.passes.registry import register_pass

_IN_FUNCTION = ("inside a model-local function, where shape inference gives no shapes "
                "(inline the functions first, e.g. onnx.inliner.inline_local_functions)")


@register_pass
class LowerAttention(GraphPass):
    """Lower ONNX Attention (opset 23) to Transpose/MatMul/Mul/Softmax/MatMul primitives.

    Handles 4-D (batch, heads, seq, head_dim) and 3-D (batch, seq, heads*head_dim, with
    q_num_heads) inputs, an optional additive (float) or boolean mask (one shorter than the
    keys is padded with -inf, a fully masked row gives zeros), softmax_precision, and the
    `scale` attribute (default 1/sqrt(head_dim)). Nodes it cannot lower exactly (is_causal,
    softcap, sliding windows, past key/value, nonpad_kv_seqlen, grouped heads, extra outputs
    (present key/value, qk_matmul_output) that a node or the graph's outputs use, com.microsoft
    contrib attention) are left alone and listed in the notes; softmax_transpose then refuses
    to call the graph wrapped.
    """

    name = "lower_attention"

    @dataclass
    class Options:
        pass

    def rewrite(self, model: onnx.ModelProto, report: PassReport) -> onnx.ModelProto:
        shapes = infer_shapes_light(model)
        types = _elem_types(model)
        names = NameAllocator(model)
        lowered, left = [], []
        for scope in walk_graphs(model):  # If/Loop/Scan bodies at any depth, local functions
            graph = scope.container
            readers = consumers(graph)
            graph_outputs = set(graph.output) if scope.is_function else {o.name for o in graph.output}
            new_nodes = []
            for node in graph.node:
                if node.op_type != "Attention" or node.domain not in ("", "ai.onnx"):
                    if is_fused_attention(node):
                        left.append((scoped_label(node, scope),
                                     "contrib attention op: not lowered (re-export without fusion)"))
                    new_nodes.append(node)
                    continue
                if scope.is_function:
                    left.append((scoped_label(node, scope), _IN_FUNCTION))
                    new_nodes.append(node)
                    continue
                invalid = _invalid(node, shapes)
                if invalid:  # the model's fault, not the pass's: exit 2, naming the node
                    raise UserError(f"{scoped_label(node, scope)} is not a valid Attention: {invalid}")
                reason = _unsupported(node, shapes, readers, graph_outputs)
                if reason:
                    left.append((scoped_label(node, scope), reason))
                    new_nodes.append(node)
                    continue
                new_nodes.extend(_lower(node, shapes, types, names, graph))
                lowered.append((node.name or node.output[0]) + (f" in {scope.where}" if scope.depth else ""))
            replace_nodes(graph, new_nodes)
        report.matched = len(lowered)
        report.details.update({"lowered": lowered, "left": [{"node": n, "reason": r} for n, r in left]})
        report.notes += [f"left {label}: {reason}" for label, reason in left]
        return model


def _attr(node: onnx.NodeProto, name: str, default=None):
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    from lvvit_opt.core.shape_inference import infer_shapes_bounded
    from lvvit_opt.passes.graph_utils import weightless_skeleton

    inferred = infer_shapes_bounded(weightless_skeleton(model))
    types = {}
    for scope in walk_graphs(inferred, functions=False):
        graph = scope.container
        types.update({v.name: v.type.tensor_type.elem_type for v in
                      list(graph.input) + list(graph.value_info) + list(graph.output)})
        types.update({i.name: i.data_type for i in graph.initializer})
    types.update({i.name: i.data_type for i in model.graph.initializer})
    return types


def _invalid(node: onnx.NodeProto, shapes) -> str | None:
    """Why the node breaks Attention's own shape rules (known dims only), or None."""
    if len(node.input) < 3 or not all(node.input[:3]):
        return "query, key and value are required"
    q, k, v = (shapes.get(name) for name in node.input[:3])
    if q is None or k is None or v is None or not (len(q) == len(k) == len(v)):
        return None  # unknown or mixed ranks: _unsupported leaves the node
    known = lambda a, b: isinstance(a, int) and isinstance(b, int) and a != b  # noqa: E731
    if len(q) == 4:
        if known(q[3], k[3]):
            return f"query head size {q[3]} differs from the key's {k[3]}"
        if known(k[2], v[2]):
            return f"key length {k[2]} differs from the value's {v[2]}"
        if known(q[0], k[0]) or known(k[0], v[0]):
            return f"batch sizes differ (query {q[0]}, key {k[0]}, value {v[0]})"
        if isinstance(q[1], int) and isinstance(k[1], int) and k[1] and q[1] % k[1]:
            return f"{q[1]} query heads are not a multiple of {k[1]} key heads"
    elif len(q) == 3:
        heads_q, heads_kv = _attr(node, "q_num_heads"), _attr(node, "kv_num_heads")
        for what, hidden, heads in (("query", q[2], heads_q), ("key", k[2], heads_kv), ("value", v[2], heads_kv)):
            if heads and isinstance(hidden, int) and hidden % heads:
                return f"{what} hidden size {hidden} is not a multiple of {heads} heads"
        if known(k[1], v[1]):
            return f"key length {k[1]} differs from the value's {v[1]}"
    return None


def _unsupported(node: onnx.NodeProto, shapes, readers, graph_outputs=frozenset()) -> str | None:
    inputs = list(node.input) + [""] * (7 - len(node.input))
    if _attr(node, "is_causal", 0):
        return "is_causal=1 not lowered"
    if _attr(node, "softcap", 0.0):
        return "softcap not lowered"
    if inputs[4] or inputs[5]:
        return "past key/value not lowered"
    if inputs[6]:
        return "nonpad_kv_seqlen not lowered"
    if _attr(node, "left_window_size", -1) != -1 or _attr(node, "right_window_size", -1) != -1:
        return "sliding window not lowered"
    extra = [out for out in node.output[1:] if out and (readers.get(out) or out in graph_outputs)]
    if extra:  # a graph output or a node reads it: dropping it would leave an invalid graph
        return f"present key/value or qk_matmul_output in use ({', '.join(extra)})"
    q_dims = shapes.get(inputs[0])
    if q_dims is None or len(q_dims) not in (3, 4):
        return "query rank unknown (run fix_shapes or onnxsim first)"
    for other in inputs[1:3]:
        dims = shapes.get(other)
        if dims is None or len(dims) != len(q_dims):
            return "key/value rank unknown or differs from the query's"
    mask_dims = shapes.get(inputs[3]) if inputs[3] else ()
    if inputs[3] and mask_dims is None:
        return "mask rank unknown"
    kv_len = shapes[inputs[1]][-2]
    if mask_dims and mask_dims[-1] != kv_len and not (isinstance(mask_dims[-1], int) and isinstance(kv_len, int)):
        return "mask length or key/value length unknown (a shorter mask is padded: both must be known)"
    if mask_dims and isinstance(kv_len, int) and isinstance(mask_dims[-1], int) and mask_dims[-1] > kv_len:
        return f"mask longer ({mask_dims[-1]}) than the keys ({kv_len})"
    if len(q_dims) == 4:
        heads_q, heads_kv = q_dims[1], shapes[inputs[1]][1]
        if not (isinstance(heads_q, int) and heads_q == heads_kv):
            return f"grouped heads ({heads_q} query vs {heads_kv} key heads) not lowered"
        if _attr(node, "scale") is None and not isinstance(q_dims[3], int):
            return "head size unknown and no scale attribute"
    else:
        heads_q, heads_kv = _attr(node, "q_num_heads"), _attr(node, "kv_num_heads")
        if not heads_q or heads_q != heads_kv:
            return f"3-D input with q_num_heads={heads_q}, kv_num_heads={heads_kv} not lowered"
        if not isinstance(q_dims[2], int) or not isinstance(shapes[inputs[1]][2], int):
            return "3-D input with unknown hidden size"
    return None


def _lower(node, shapes, types, names: NameAllocator, graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Y = softmax(Q K^T * scale + mask) V, as primitives, the output keeping the node's name."""
    base = node.name or node.output[0]
    q, k, v = node.input[0], node.input[1], node.input[2]
    mask = node.input[3] if len(node.input) > 3 else ""
    q_dims = shapes[q]
    dtype = helper.tensor_dtype_to_np_dtype(types.get(q) or onnx.TensorProto.FLOAT)
    nodes: list[onnx.NodeProto] = []

    def add(op, inputs, **attrs):
        out = names.fresh(f"{base}/{op.lower()}_out")
        nodes.append(helper.make_node(op, inputs, [out], name=names.fresh(f"{base}/{op.lower()}"), **attrs))
        return out

    def const(value, label):
        tensor = numpy_helper.from_array(np.asarray(value), names.fresh(f"{base}/{label}"))
        graph.initializer.append(tensor)
        return tensor.name

    three_d = len(q_dims) == 3
    if three_d:
        heads = _attr(node, "q_num_heads")
        split = const(np.array([0, 0, heads, -1], dtype=np.int64), "split_heads")
        q, k, v = (add("Transpose", [add("Reshape", [t, split])], perm=[0, 2, 1, 3]) for t in (q, k, v))
        head_dim = q_dims[2] // heads
    else:
        head_dim = q_dims[3]
    scale = _attr(node, "scale")
    scale = float(scale) if scale is not None else 1.0 / math.sqrt(head_dim)
    k_t = add("Transpose", [k], perm=[0, 1, 3, 2])
    scores = add("MatMul", [q, k_t])
    scores = add("Mul", [scores, const(np.array(scale, dtype=dtype), "scale")])
    if mask:
        if types.get(mask) == onnx.TensorProto.BOOL:
            mask = add("Where", [mask, const(np.array(0, dtype=dtype), "kept"), const(np.array(-np.inf, dtype=dtype),
                                                                                       "masked")])
        mask_dims, kv_len = shapes.get(node.input[3]), shapes[node.input[1]][-2]
        if mask_dims and mask_dims[-1] != kv_len:  # a shorter mask: padded with -inf up to the key length
            rank = len(mask_dims)
            pads = np.zeros(2 * rank, dtype=np.int64)
            pads[2 * rank - 1] = kv_len - mask_dims[-1]
            mask = add("Pad", [mask, const(pads, "mask_pads"), const(np.array(-np.inf, dtype=dtype), "mask_fill")])
        scores = add("Add", [scores, mask])
    precision = _attr(node, "softmax_precision")
    native = types.get(node.input[0]) or onnx.TensorProto.FLOAT
    if precision and precision != native:  # softmax in the precision the node asks for, then back
        scores = add("Cast", [scores], to=int(precision))
    probs = add("Softmax", [scores], axis=-1)
    if precision and precision != native:
        probs = add("Cast", [probs], to=int(native))
    if mask:  # a fully masked row (all -inf) is a zero row, as Attention defines it, not Softmax's NaN
        probs = add("Where", [add("IsNaN", [probs]), const(np.array(0, dtype=dtype), "masked_row"), probs])
    out = node.output[0]
    if three_d:
        merged = add("Transpose", [add("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        nodes.append(helper.make_node("Reshape", [merged, const(np.array([0, 0, -1], dtype=np.int64), "merge_heads")],
                                      [out], name=names.fresh(f"{base}/merge_heads")))
    else:
        nodes.append(helper.make_node("MatMul", [probs, v], [out], name=names.fresh(f"{base}/matmul_v")))
    return nodes
