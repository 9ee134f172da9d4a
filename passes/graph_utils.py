"""Small graph helpers the passes share: shapes, consumers, fresh names, op counts."""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable

import onnx
from onnx import helper

from lvvit_opt.core.graph_walk import all_names, walk_graphs, walk_nodes
from lvvit_opt.core.shape_inference import infer_shapes_bounded
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
    """Tensor name -> dims after (bounded) onnx shape inference on the weightless skeleton,
    over every graph: tensors inside If/Loop/Scan bodies too (function bodies have none)."""
    source = model.graph
    skeleton = weightless_skeleton(model)
    inferred = infer_shapes_bounded(skeleton)
    shapes: dict[str, tuple] = {}
    for scope in walk_graphs(inferred, functions=False):  # subgraph bodies carry their own value_info
        graph = scope.container
        for value in list(graph.input) + list(graph.value_info) + list(graph.output):
            dims = dims_of(value.type)
            if dims is not None:
                shapes[value.name] = dims
        if scope.depth:
            shapes.update({init.name: tuple(init.dims) for init in graph.initializer})
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
    """Hands out node and tensor names that do not collide with anything in the model (or
    graph): every scope counts, since a subgraph sees its outer graphs' names."""

    def __init__(self, model_or_graph) -> None:
        self.used: set[str] = all_names(model_or_graph)

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name


def op_counts(model: onnx.ModelProto) -> Counter:
    """Op type -> count over every graph of the model, subgraphs and local functions included
    (what the before/after table shows: a rewrite inside an If branch is seen there)."""
    return Counter(node.op_type for node, _ in walk_nodes(model))


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


def is_fused_attention(node: onnx.NodeProto) -> bool:
    return ((node.domain if node.domain != "ai.onnx" else ""), node.op_type) in FUSED_ATTENTION_OPS


def fused_attention_nodes(model_or_graph) -> list[onnx.NodeProto]:
    """Nodes whose softmax is inside a fused attention op, in every graph of the model (or
    graph): If/Loop/Scan bodies at any depth and local functions too."""
    return [node for node, _ in walk_nodes(model_or_graph) if is_fused_attention(node)]


def node_label(node: onnx.NodeProto) -> str:
    domain = f"{node.domain}." if node.domain not in ("", "ai.onnx") else ""
    return f"{node.name or node.output[0]} ({domain}{node.op_type})"


def scoped_label(node: onnx.NodeProto, scope) -> str:
    """node_label, plus where the node sits when that is not the main graph."""
    return node_label(node) if not (scope.depth or scope.is_function) else f"{node_label(node)} in {scope.where}"
