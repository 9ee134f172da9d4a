"""softmax_transpose: move the attention softmax off the unaligned last axis (Ascend)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import onnx
from onnx import helper

from lvvit_opt.core.errors import UserError
from lvvit_opt.core.graph_walk import walk_graphs, walk_nodes
from lvvit_opt.passes.base import GraphPass, PassReport
from lvvit_opt.passes.graph_utils import (NameAllocator, consumers, default_opset, infer_shapes_light,
                                          is_fused_attention, producers, replace_nodes, scoped_label)
from lvvit_opt.passes.registry import register_pass

SEED_PERM = [0, 3, 2, 1]  # the seed's attn.transpose(1, -1): self-inverse, softmax on axis 1
SWIN_PERM = [0, 3, 1, 2]  # channels-first style; its inverse is [0, 2, 3, 1]
_UNKNOWN_RANK = "input rank unknown (simplify the graph with onnxsim first)"
_UNKNOWN_IN_FUNCTION = ("inside a model-local function, where shape inference gives no shapes "
                        "(inline the functions first, e.g. onnx.inliner.inline_local_functions)")


def inverse_perm(perm: list[int]) -> list[int]:
    inverse = [0] * len(perm)
    for position, axis in enumerate(perm):
        inverse[axis] = position
    return inverse


@register_pass
class SoftmaxTranspose(GraphPass):
    """Wrap each last-axis softmax of a rank-4 tensor as Transpose(perm) -> Softmax(axis) -> Transpose(inverse).

    Defaults reproduce the seed's source patch (perm [0,3,2,1], softmax axis 1). `style=swin`
    uses perm [0,3,1,2] (inverse [0,2,3,1]); any `perm` can be given, its inverse is computed
    and the softmax axis is where the last axis lands. Already-wrapped softmaxes are left
    alone. Before opset 13 Softmax flattens to 2-D from `axis` on, so the wrapped form would
    mean something else: such models are refused unless `upgrade_opset=true`, which converts
    the model to opset 13 first. The report lists the input shapes of the created Transposes
    (the CANN transpose whitelist needs them).
    """

    name = "softmax_transpose"

    @dataclass
    class Options:
        perm: Optional[list[int]] = None  # default: the seed's [0,3,2,1] (or Swin's with style=swin)
        axis: Optional[int] = None  # softmax axis after the transpose; derived from perm, checked if given
        style: str = "seed"  # "seed" or "swin": picks the default perm
        upgrade_opset: bool = False  # convert an opset < 13 model to 13 instead of refusing

        def __post_init__(self):
            if self.style not in ("seed", "swin"):
                raise ValueError(f"style must be 'seed' or 'swin', got {self.style!r}")
            if self.perm is None:
                self.perm = list(SWIN_PERM if self.style == "swin" else SEED_PERM)
            self.perm = [int(p) for p in self.perm]
            if sorted(self.perm) != [0, 1, 2, 3]:
                raise ValueError(f"perm must be a permutation of 0,1,2,3, got {self.perm}")
            landed = self.perm.index(3)
            if self.axis is None:
                self.axis = landed
            elif self.axis % 4 != landed:
                raise ValueError(f"axis {self.axis} does not match perm {self.perm}: "
                                 f"the last axis lands on axis {landed}")
            self.axis %= 4

    def rewrite(self, model: onnx.ModelProto, report: PassReport) -> onnx.ModelProto:
        model = self._ensure_opset13(model, report)
        perm, inverse, axis = self.options.perm, inverse_perm(self.options.perm), self.options.axis
        shapes = infer_shapes_light(model)
        names = NameAllocator(model)
        created_shapes: list[list] = []
        wrapped, already, skipped = [], [], []
        for scope in walk_graphs(model):  # If/Loop/Scan bodies at any depth, local functions
            graph = scope.container
            producer_of, readers = producers(graph), consumers(graph)
            new_nodes = []
            for node in graph.node:
                if node.op_type != "Softmax" or node.domain not in ("", "ai.onnx"):
                    new_nodes.append(node)
                    continue
                label = node.name or node.output[0]
                if scope.depth or scope.is_function:
                    label += f" in {scope.where}"
                dims = None if scope.is_function else (
                    shapes.get(node.input[0]) or _rank_from_reshape(node.input[0], producer_of, shapes))
                if _is_wrapped(node, producer_of, readers):
                    already.append(label)
                elif dims is None or len(dims) != 4:
                    skipped.append((label, _UNKNOWN_IN_FUNCTION if scope.is_function and dims is None else
                                    _UNKNOWN_RANK if dims is None else f"input rank {len(dims)}, not 4"))
                elif _softmax_axis(node) % 4 != 3:
                    skipped.append((label, f"softmax over axis {_softmax_axis(node)}, not the last"))
                else:
                    new_nodes.extend(_wrap(node, perm, inverse, axis, names))
                    transposed = [dims[p] for p in perm]
                    created_shapes += [list(dims), transposed]
                    wrapped.append(label)
                    continue
                new_nodes.append(node)
            replace_nodes(graph, new_nodes)
        report.matched = len(wrapped)
        # attention blocks it could not wrap: softmaxes of unknown rank and fused attention ops
        unseen = [label for label, reason in skipped if reason in (_UNKNOWN_RANK, _UNKNOWN_IN_FUNCTION)]
        fused = [scoped_label(node, scope) for node, scope in walk_nodes(model) if is_fused_attention(node)]
        report.details["attention_blocks"] = len(wrapped) + len(already) + len(unseen) + len(fused)
        report.details["attention_not_wrapped"] = unseen + fused
        if fused:
            report.notes.append(f"{len(fused)} fused attention node(s) hide their softmax: {', '.join(fused[:6])}"
                                f"{' ...' if len(fused) > 6 else ''}; run lower_attention first")
        report.details.update({
            "perm": perm, "inverse_perm": inverse, "softmax_axis": axis,
            "wrapped": wrapped, "already_wrapped": already,
            "skipped": [{"node": label, "reason": reason} for label, reason in skipped],
            "transpose_input_shapes": _unique(created_shapes),
        })
        report.notes += [f"skipped {label}: {reason}" for label, reason in skipped]
        if any(not isinstance(d, int) for shape in created_shapes for d in shape):
            report.notes.append("some Transpose input shapes are not static (null in the report); "
                                "run fix_shapes or fold_constants first for concrete whitelist shapes")
        if already:
            report.notes.append(f"{len(already)} softmax(es) already wrapped, left alone")
        return model

    def _ensure_opset13(self, model: onnx.ModelProto, report: PassReport) -> onnx.ModelProto:
        opset = default_opset(model)
        if opset >= 13 or not any(n.op_type == "Softmax" for n, _ in walk_nodes(model)):
            return model
        if not self.options.upgrade_opset:
            raise UserError(
                f"softmax_transpose: the model is opset {opset}; before opset 13 Softmax flattens the input "
                "to 2-D from `axis` on, so Softmax(axis=1) on a 4-D tensor would normalise over three axes. "
                "Re-export with opset >= 13, or pass the option upgrade_opset=true to convert the model first.")
        from onnx import version_converter

        try:
            upgraded = version_converter.convert_version(model, 13)
        except Exception as exc:
            raise UserError(f"softmax_transpose: could not convert opset {opset} to 13 ({str(exc).splitlines()[0]})") from None
        report.notes.append(f"converted the model from opset {opset} to 13 before wrapping")
        report.details["upgraded_opset_from"] = opset
        return upgraded


def _rank_from_reshape(name: str, producer_of, shapes) -> tuple | None:
    """Unknown dims but a known rank: a Reshape whose (computed) target has a known length.
    Unsimplified exports (e.g. Swin's window attention) compute targets with Shape/Concat."""
    node = producer_of.get(name)
    if node is None or node.op_type != "Reshape" or len(node.input) < 2:
        return None
    target = shapes.get(node.input[1])
    if target is None or len(target) != 1 or not isinstance(target[0], int):
        return None
    return (None,) * target[0]


def _softmax_axis(node: onnx.NodeProto) -> int:
    for attr in node.attribute:
        if attr.name == "axis":
            return attr.i
    return -1  # opset-13 default


def wrapping_transposes(graph: onnx.GraphProto) -> set[str]:
    """First output names of the Transposes that wrap a softmax (this pass's pre and post
    Transpose, or an equivalent wrap made by hand): the Transposes the recipe adds."""
    producer_of, readers = producers(graph), consumers(graph)
    found: set[str] = set()
    for node in graph.node:
        if node.op_type == "Softmax" and node.domain in ("", "ai.onnx") and node.input \
                and _is_wrapped(node, producer_of, readers):
            found.add(producer_of[node.input[0]].output[0])
            found.add(readers[node.output[0]][0].output[0])
    return found


def _is_wrapped(node, producer_of, readers) -> bool:
    """Transpose(p) -> Softmax -> single Transpose(inverse of p), where the softmax normalises
    what was the last axis before the first Transpose: our own output, or an equivalent.
    CaiT's talking-heads attention also has inverse Transposes around its softmax, but there
    the softmax runs over another axis of the original tensor: not wrapped."""
    before = producer_of.get(node.input[0])
    after = readers.get(node.output[0], [])
    if before is None or before.op_type != "Transpose" or len(after) != 1 or after[0].op_type != "Transpose":
        return False
    perm_before, perm_after = _perm(before), _perm(after[0])
    if perm_before is None or perm_after != inverse_perm(perm_before):
        return False
    axis = _softmax_axis(node) % len(perm_before)
    return perm_before[axis] == len(perm_before) - 1


def _perm(node: onnx.NodeProto) -> list[int] | None:
    for attr in node.attribute:
        if attr.name == "perm":
            return list(attr.ints)
    return None


def _wrap(node, perm, inverse, axis, names: NameAllocator) -> list[onnx.NodeProto]:
    base = node.name or node.output[0]
    x, y = node.input[0], node.output[0]
    x_t = names.fresh(f"{x}_transposed")
    y_t = names.fresh(f"{y}_transposed")
    pre = helper.make_node("Transpose", [x], [x_t], name=names.fresh(f"{base}/pre_transpose"), perm=perm)
    softmax = helper.make_node("Softmax", [x_t], [y_t], name=node.name or names.fresh(f"{base}/softmax"), axis=axis)
    post = helper.make_node("Transpose", [y_t], [y], name=names.fresh(f"{base}/post_transpose"), perm=inverse)
    return [pre, softmax, post]


def _unique(shapes: list[list]) -> list[list]:
    seen, out = set(), []
    for shape in shapes:
        key = tuple(shape)
        if key not in seen:
            seen.add(key)
            out.append(list(shape))
    return out
