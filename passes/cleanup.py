"""cleanup: dead nodes and unused initializers out; nodes in topological order; graph inputs kept."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import onnx

from lvvit_opt.core.errors import UserError
from lvvit_opt.passes.base import GraphPass, PassReport
from lvvit_opt.passes.graph_utils import node_reads, replace_nodes
from lvvit_opt.passes.registry import register_pass


@register_pass
class Cleanup(GraphPass):
    """Remove nodes whose outputs nothing uses and unused initializers, then toposort.

    Graph inputs and outputs are the model's interface and are always kept, read or not
    (a caller feeds them; validation feeds both graphs alike). `keep_unused_inputs=false`
    drops graph inputs no node reads: the rewrite then takes fewer inputs, which `apply`'s
    validation refuses to compare. An initializer listed among the graph inputs (IR < 4) is
    removed from both lists together, so it never turns into a required input.
    """

    name = "cleanup"

    @dataclass
    class Options:
        keep_unused_inputs: bool = True

    def rewrite(self, model: onnx.ModelProto, report: PassReport) -> None:
        graph = model.graph
        live_nodes = _live_nodes(graph)
        dead = len(graph.node) - len(live_nodes)
        ordered = toposort(graph, live_nodes)
        if dead or [id(n) for n in ordered] != [id(n) for n in graph.node]:
            replace_nodes(graph, ordered)
        used = set().union(*(node_reads(n) for n in graph.node)) | {o.name for o in graph.output}
        removed_inits = _delete_where(graph.initializer, lambda t: t.name not in used)
        dropped = set(removed_inits)
        _delete_where(graph.input, lambda v: v.name in dropped)  # IR < 4: the initializer's input entry
        removed_inputs = [] if self.options.keep_unused_inputs else _delete_where(graph.input, lambda v: v.name not in used)
        known = used | {o for n in graph.node for o in n.output}
        removed_vi = _delete_where(graph.value_info, lambda v: v.name not in known)
        report.matched = dead + len(removed_inits) + len(removed_inputs)
        report.details.update({"dead_nodes": dead, "unused_initializers": removed_inits,
                               "unused_inputs": removed_inputs, "stale_value_infos": len(removed_vi)})


def _live_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Nodes that contribute (transitively) to a graph output, in their original order."""
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    live: set[int] = set()
    stack = [producer[o.name] for o in graph.output if o.name in producer]
    while stack:
        index = stack.pop()
        if index in live:
            continue
        live.add(index)
        stack.extend(producer[name] for name in node_reads(graph.node[index]) if name in producer)
    return [node for i, node in enumerate(graph.node) if i in live]


def toposort(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """Kahn's algorithm, stable: among ready nodes the earlier one in `nodes` goes first."""
    producer = {out: i for i, node in enumerate(nodes) for out in node.output if out}
    waiting_on = [0] * len(nodes)
    dependents: list[list[int]] = [[] for _ in nodes]
    for i, node in enumerate(nodes):
        deps = {producer[name] for name in node_reads(node) if name in producer}
        deps.discard(i)
        waiting_on[i] = len(deps)
        for d in deps:
            dependents[d].append(i)
    import heapq

    ready = [i for i, count in enumerate(waiting_on) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in dependents[i]:
            waiting_on[j] -= 1
            if waiting_on[j] == 0:
                heapq.heappush(ready, j)
    if len(order) != len(nodes):
        raise UserError("cleanup: the graph has a cycle; cannot sort it")
    return [nodes[i] for i in order]


def _delete_where(repeated, predicate) -> list[str]:
    """Delete matching entries from a protobuf repeated field without copying the rest."""
    removed = []
    for index in range(len(repeated) - 1, -1, -1):
        if predicate(repeated[index]):
            removed.append(repeated[index].name)
            del repeated[index]
    return removed[::-1]
