"""Small graph helpers the passes share: shapes, consumers, fresh names, op counts."""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable

import onnx
from onnx import helper

from lvvit_opt.core.tensor_spec import dims_of  # noqa: F401  (the one shape reader; re-exported for passes)

# Initializers larger than this are stood in for by shape-only graph inputs during shape
# inference: onnx's inference copies the whole model, and weights only contribute dims.
_LIGHT_INFERENCE_MAX_ELEMENTS = 64


def default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return 0


def weightless_skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` without its weights: large initializers become graph inputs of the same type
    and shape; small ones (Reshape targets, axes) keep their values so data propagation
    still resolves shapes. Cheap to check and to infer shapes on (no 100 MB copies)."""
    skeleton = onnx.ModelProto()
    skeleton.ir_version = model.ir_version
    skeleton.opset_import.extend(model.opset_import)
    skeleton.functions.extend(model.functions)
    graph = skeleton.graph
    source = model.graph
    graph.name = source.name or "graph"
    graph.node.extend(source.node)
    graph.input.extend(source.input)
    graph.output.extend(source.output)
    input_names = {i.name for i in source.input}
    for init in source.initializer:
        count = 1
        for d in init.dims:
            count *= d
        if count <= _LIGHT_INFERENCE_MAX_ELEMENTS and init.data_location != onnx.TensorProto.EXTERNAL:
            graph.initializer.append(init)
        elif init.name not in input_names:
            graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return skeleton


def infer_shapes_light(model: onnx.ModelProto) -> dict[str, tuple]:
    """Tensor name -> dims after onnx shape inference on the weightless skeleton."""
    source = model.graph
    skeleton = weightless_skeleton(model)
    inferred = onnx.shape_inference.infer_shapes(skeleton, data_prop=True)
    shapes: dict[str, tuple] = {}
    for value in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = dims_of(value.type)
        if dims is not None:
            shapes[value.name] = dims
    for init in source.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> nodes that read it (subgraph reads of outer names count)."""
    readers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node_reads(node):
            readers[name].append(node)
    return readers


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output if out}


def node_reads(node: onnx.NodeProto) -> set[str]:
    """Every tensor name a node reads, including names its subgraphs take from outside."""
    names = {i for i in node.input if i}
    for attr in node.attribute:
        for sub in list(attr.g.node if attr.HasField("g") else []) + [n for g in attr.graphs for n in g.node]:
            names |= node_reads(sub)
    return names


class NameAllocator:
    """Hands out node and tensor names that do not collide with anything in the graph."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.used: set[str] = {n.name for n in graph.node}
        for node in graph.node:
            self.used.update(node.input)
            self.used.update(node.output)
        self.used.update(i.name for i in graph.input)
        self.used.update(o.name for o in graph.output)
        self.used.update(i.name for i in graph.initializer)

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name


def op_counts(model: onnx.ModelProto) -> Counter:
    """Op type -> count over the main graph (what the before/after table shows)."""
    return Counter(node.op_type for node in model.graph.node)


def replace_nodes(graph: onnx.GraphProto, nodes: Iterable[onnx.NodeProto]) -> None:
    nodes = list(nodes)
    del graph.node[:]
    graph.node.extend(nodes)


# (domain, op type) of ops that compute softmax(QK^T)V inside one node. The default
# domain's `Attention` is ONNX opset 23; the com.microsoft ones are onnxruntime contrib ops
# (optimum/onnxruntime.transformers fusions).
FUSED_ATTENTION_OPS = {
    ("", "Attention"),
    ("com.microsoft", "Attention"),
    ("com.microsoft", "MultiHeadAttention"),
    ("com.microsoft", "GroupQueryAttention"),
    ("com.microsoft", "PackedAttention"),
    ("com.microsoft", "PackedMultiHeadAttention"),
    ("com.microsoft", "DecoderMaskedMultiHeadAttention"),
    ("com.microsoft", "SparseAttention"),
}


def fused_attention_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Nodes of `graph` whose softmax is inside a fused attention op."""
    return [n for n in graph.node if ((n.domain if n.domain != "ai.onnx" else ""), n.op_type) in FUSED_ATTENTION_OPS]


def node_label(node: onnx.NodeProto) -> str:
    domain = f"{node.domain}." if node.domain not in ("", "ai.onnx") else ""
    return f"{node.name or node.output[0]} ({domain}{node.op_type})"
