"""The one graph walker: every graph of an ONNX model, subgraphs and local functions included.

A pass, detector or checker that looks at `model.graph.node` alone misses what sits in an
If branch, a Loop or Scan body (nested to any depth) or a model-local function: attention
there was invisible to softmax_transpose and the readiness check (issue 32). Everything that
visits nodes goes through `walk_graphs` / `walk_nodes`, so a subgraph is never skipped by
construction. Imports nothing of lvvit_opt.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator


@dataclass(frozen=True)
class Scope:
    """One graph of the model: the main graph, a subgraph or a function body.

    `where` names it for the user ("main graph", "If node 'cond' attribute then_branch",
    "function local.Block"); `owner` is the node whose attribute holds a subgraph (None for
    the main graph and functions); `container` is the GraphProto or FunctionProto itself
    (both have `.node`); `is_function` marks function bodies (no initializers, no shapes)."""

    container: object
    where: str
    owner: object = None
    depth: int = 0
    is_function: bool = False

    @property
    def nodes(self):
        return self.container.node


def node_name(node) -> str:
    return node.name or (node.output[0] if node.output else node.op_type)


_GRAPH, _GRAPHS = 5, 10  # AttributeProto.GRAPH, AttributeProto.GRAPHS
# The default domain's ops that hold graphs; onnx.checker (the model gate) refuses a graph
# attribute on any other of its ops, so only these and other domains' ops are looked into.
_CONTROL_FLOW = {"If", "Loop", "Scan", "SequenceMap"}


def _may_hold_graphs(node) -> bool:
    return node.op_type in _CONTROL_FLOW or node.domain not in ("", "ai.onnx")


def subgraphs(node) -> Iterator[tuple[str, object]]:
    """(attribute name, GraphProto) of every graph a node holds (If, Loop, Scan, custom ops)."""
    for attr in node.attribute:
        kind = attr.type
        if kind == _GRAPH or (not kind and attr.HasField("g")):  # an untyped attribute (old writers)
            yield attr.name, attr.g
        elif kind == _GRAPHS or (not kind and len(attr.graphs)):
            for index, graph in enumerate(attr.graphs):
                yield f"{attr.name}[{index}]", graph


def _walk(container, where: str, owner, depth: int, is_function: bool) -> Iterator[Scope]:
    yield Scope(container, where, owner, depth, is_function)
    for node in container.node:
        if not _may_hold_graphs(node):
            continue
        for attr_name, graph in subgraphs(node):
            yield from _walk(graph, f"{node.op_type} node {node_name(node)!r} attribute {attr_name}"
                             + (f" (in {where})" if depth or is_function else ""), node, depth + 1, is_function)


def walk_graphs(model, *, functions: bool = True) -> Iterator[Scope]:
    """Every graph of `model` (a ModelProto, or a GraphProto on its own), outer before inner:
    the main graph, then each subgraph at any depth, then each model-local function's body
    and its subgraphs (`functions=False` leaves functions out)."""
    graph = model.graph if hasattr(model, "opset_import") and hasattr(model, "graph") else model
    yield from _walk(graph, "main graph", None, 0, False)
    if functions and hasattr(model, "functions"):
        for function in model.functions:
            label = f"function {function.domain + '.' if function.domain else ''}{function.name}"
            yield from _walk(function, label, None, 0, True)


def walk_nodes(model, *, functions: bool = True) -> Iterator[tuple[object, Scope]]:
    """(node, the scope holding it) for every node of every graph `walk_graphs` visits."""
    for scope in walk_graphs(model, functions=functions):
        for node in scope.nodes:
            yield node, scope


def has_subgraphs(model) -> bool:
    """True when the model has any graph besides its main graph (subgraphs or functions)."""
    return any(scope.depth or scope.is_function for scope in walk_graphs(model))


def all_names(model) -> set[str]:
    """Every node, tensor and value name used anywhere in the model (for fresh names that
    collide with nothing, in any scope)."""
    names: set[str] = set()
    for scope in walk_graphs(model):
        container = scope.container
        for node in container.node:
            names.add(node.name)
            names.update(node.input)
            names.update(node.output)
        if scope.is_function:
            names.update(container.input)
            names.update(container.output)
        else:
            names.update(v.name for v in list(container.input) + list(container.output) + list(container.value_info))
            names.update(i.name for i in container.initializer)
    names.discard("")
    return names
