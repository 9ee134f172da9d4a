"""The one entry point to onnx shape inference: data propagation with a bound on what it holds.

onnx's data propagation keeps the values of 0-D and 1-D integer tensors as one protobuf dim
per element, and ops such as Add, Mul, Cast, Concat, Gather, Slice, Unsqueeze or Size build
such a list for a 1-D input of known length even when its values are unknown. A model under
1 KB whose `Range(0, 1e9, 1)` (or a 1-D input declared [1000000000], a ConstantOfShape, Tile
or Expand of a huge shape) feeds one of them drove `whitelist shapes` to 4 GB and `apply` to
a MemoryError (issue 32). Every structure reader goes through `infer_shapes_bounded`:

1. inference without propagation (it holds no values) gives every tensor's static shape;
2. a 0-D/1-D tensor of more than `PROPAGATION_BOUND` elements is a hazard; so is the output
   of an op whose size comes from input values (Range, ConstantOfShape, Expand, Tile, ...)
   that (1) leaves unknown: such outputs are cut first, and propagation (with every hazard
   found so far cut) tells their lengths; those within the bound are let through again;
3. the final inference runs with data propagation, every reader of a hazard reading an
   opaque stand-in instead (same element type, unknown length): shapes are inferred
   everywhere, values are not propagated through the hazard. The returned model has the
   original wiring; `last_hazards()` lists what was cut (tensor, producer, elements).
Imports nothing of lvvit_opt outside core.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from lvvit_opt.core.graph_walk import node_name, walk_graphs

logger = logging.getLogger(__name__)

# Elements of one 0-D/1-D tensor data propagation may hold (about 100 bytes each): shape
# vectors have a handful; 262,144 elements cost at most ~30 MB per propagating reader.
PROPAGATION_BOUND = 1 << 18

# Ops whose output size is read from input values: propagation may resolve it to anything.
VALUE_SIZED_OPS = {"Range", "ConstantOfShape", "Expand", "Tile", "Resize", "Upsample", "Pad", "OneHot",
                   "CenterCropPad", "Col2Im", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Split",
                   "TopK", "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd"}

_MAX_ROUNDS = 4  # propagation runs spent proving value-sized outputs small (chains of them)


@dataclass(frozen=True)
class Hazard:
    """A tensor whose values are not propagated: its name, the node that makes it (or
    'graph input' / 'initializer'), and its element count (None: not known to be small)."""

    tensor: str
    producer: str
    elements: int | None

    def describe(self) -> str:
        size = f"{self.elements:,} elements" if self.elements is not None else "a length propagation could not bound"
        return f"{self.tensor} ({self.producer}, {size})"


_last: list[Hazard] = []


def last_hazards() -> list[Hazard]:
    """The hazards the latest `infer_shapes_bounded` call cut (for reports and tests)."""
    return list(_last)


def infer_shapes_bounded(model, *, data_prop: bool = True, strict_mode: bool = False, check_type: bool = False,
                         bound: int = PROPAGATION_BOUND):
    """onnx.shape_inference.infer_shapes(model, ...) with data propagation bounded (see the
    module docstring). Errors of strict_mode/check_type are raised as onnx raises them."""
    import onnx

    global _last
    _last = []
    infer = onnx.shape_inference.infer_shapes
    if not data_prop:
        return infer(model, check_type=check_type, strict_mode=strict_mode, data_prop=False)
    try:
        plain = infer(model, check_type=False, strict_mode=False, data_prop=False)
    except Exception:  # the final run reports the defect as the caller asked
        plain = model
    shapes, producers, types = _shapes(plain), _producers(plain), _elem_types(plain)
    cut = {name: Hazard(name, producers.get(name, "graph input or initializer"), count)
           for name, count in _large_vectors(shapes, bound).items() if name in _read_names(model)}
    suspects = _value_sized_unknowns(plain, shapes, bound) - set(cut)
    settled = not suspects
    for _ in range(_MAX_ROUNDS):
        if not suspects:
            settled = True
            break
        try:
            trial = _shapes(infer(_with_cuts(model, set(cut) | suspects, shapes, types, producers)[0], check_type=False,
                                  strict_mode=False, data_prop=True), only=suspects)
        except Exception:
            break
        resolved = {}
        for name in suspects:
            count = _elements(trial.get(name, None))
            if count is not None and count > bound:
                cut[name] = Hazard(name, producers.get(name, "?"), count)
            elif count is not None:
                resolved[name] = count
        if not resolved:
            # a fixed point: what propagation leaves unknown it never spells out, so it is safe
            settled = True
            break
        suspects -= set(resolved) | set(cut)
    if not settled:  # out of rounds (or inference failed): what was never shown small stays cut
        for name in suspects - set(cut):
            cut[name] = Hazard(name, producers.get(name, "?"), None)
    _last = sorted(cut.values(), key=lambda h: h.tensor)
    for hazard in _last:
        logger.info(f"shape inference: values of {hazard.describe()} are not propagated")
    if not cut:
        return infer(model, check_type=check_type, strict_mode=strict_mode, data_prop=True)
    cut_model, stand_ins = _with_cuts(model, set(cut), shapes, types, producers)
    inferred = infer(cut_model, check_type=check_type, strict_mode=strict_mode, data_prop=True)
    return _restore(inferred, stand_ins)


# -- reading shapes ----------------------------------------------------------------------------

def _dims(type_proto):
    """Dims (int, or None for an unknown one) of a tensor type; None when the rank is unknown."""
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.dim_value or d.HasField("dim_value") else None
                 for d in type_proto.tensor_type.shape.dim)


def _shapes(model, only: set[str] | None = None) -> dict[str, tuple | None]:
    """Tensor name -> dims over every graph (functions hold no shapes); `only`: just these names."""
    shapes: dict[str, tuple | None] = {}
    for scope in walk_graphs(model, functions=False):
        graph = scope.container
        if only is not None:
            for value in list(graph.value_info) + list(graph.output):
                if value.name in only:
                    shapes[value.name] = _dims(value.type)
            continue
        for init in graph.initializer:
            shapes[init.name] = tuple(int(d) for d in init.dims)
        for value in list(graph.input) + list(graph.value_info) + list(graph.output):
            dims = _dims(value.type)
            if dims is not None or value.name not in shapes:
                shapes[value.name] = dims
        for node in graph.node:
            if node.op_type == "Constant" and node.output:
                for attr in node.attribute:
                    if attr.name == "value" and attr.HasField("t"):
                        shapes[node.output[0]] = tuple(int(d) for d in attr.t.dims)
    return shapes


def _elements(dims) -> int | None:
    if dims is None or any(d is None for d in dims):
        return None
    count = 1
    for d in dims:
        count *= d
    return count


def _producers(model) -> dict[str, str]:
    return {out: f"{node.op_type} node {node_name(node)!r}" for scope in walk_graphs(model, functions=False)
            for node in scope.nodes for out in node.output if out}


def _read_names(model) -> set[str]:
    return {name for scope in walk_graphs(model, functions=False) for node in scope.nodes for name in node.input}


def _large_vectors(shapes, bound: int) -> dict[str, int]:
    """0-D/1-D tensors with more than `bound` elements: what propagation would spell out."""
    return {name: dims[0] for name, dims in shapes.items()
            if dims is not None and len(dims) == 1 and dims[0] is not None and dims[0] > bound}


def _value_sized_unknowns(model, shapes, bound: int) -> set[str]:
    """Outputs of value-sized ops that inference without values leaves of unknown rank or of
    rank <= 1 with an unknown length: propagation may make them any size."""
    found = set()
    for scope in walk_graphs(model, functions=False):
        for node in scope.nodes:
            if node.op_type not in VALUE_SIZED_OPS or node.domain not in ("", "ai.onnx"):
                continue
            if node.op_type in ("Reshape", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Split", "TopK") \
                    or node.op_type.startswith("Reduce"):
                # no bigger than their data input: a hazard only where that input may be large
                size = _elements(shapes.get(node.input[0])) if node.input else None
                if size is not None and size <= bound:
                    continue
            if _least_rank(node, shapes) >= 2:  # propagation only spells out 0-D/1-D tensors
                continue
            for out in node.output:
                dims = shapes.get(out)
                if out and (dims is None or (len(dims) <= 1 and _elements(dims) is None)):
                    found.add(out)
    return found


def _rank(shapes, name: str) -> int | None:
    dims = shapes.get(name) if name else None
    return None if dims is None else len(dims)


def _vector_length(shapes, name: str) -> int | None:
    """The length of a 1-D (shape, axes, repeats) input, when inference without values knows it."""
    dims = shapes.get(name) if name else None
    return dims[0] if dims is not None and len(dims) == 1 else None


def _least_rank(node, shapes) -> int:
    """A lower bound on the rank of `node`'s first output that needs no values (0: unknown)."""
    op, inputs = node.op_type, list(node.input) + [""] * 2
    data = _rank(shapes, inputs[0]) or 0
    if op == "Range":
        return 1
    if op in ("ConstantOfShape",):
        return _vector_length(shapes, inputs[0]) or 0
    if op == "Reshape":
        return _vector_length(shapes, inputs[1]) or 0
    if op == "Expand":
        return max(data, _vector_length(shapes, inputs[1]) or 0)
    if op == "Flatten":
        return 2
    if op == "Unsqueeze":
        return data + 1 if data else 0
    if op == "OneHot":
        return (_rank(shapes, inputs[0]) or 0) + 1
    if op in ("Tile", "Resize", "Upsample", "Pad", "Slice", "Split", "TopK", "CenterCropPad"):
        return data
    if op.startswith("Reduce"):
        keep = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
        return data if keep else 0
    return 0  # Squeeze, Col2Im, ...: no bound without values


# -- cutting and restoring ---------------------------------------------------------------------

_STAND_IN = "__lvvit_unpropagated__"


def _with_cuts(model, names: set[str], shapes, elem_types, known):
    """A copy of `model` whose readers of `names` read opaque stand-in graph inputs, and the
    map tensor name -> its stand-in's name."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    used = set(shapes) | set(known)  # every tensor name (a stand-in's name must be new)
    stand_in = {}
    for name in sorted(names):
        fresh, k = f"{_STAND_IN}{name}", 1
        while fresh in used:
            fresh, k = f"{_STAND_IN}{name}_{k}", k + 1
        used.add(fresh)
        stand_in[name] = fresh
    for scope in walk_graphs(copy, functions=False):
        for node in scope.nodes:
            if node.op_type == "Shape" and node.domain in ("", "ai.onnx"):
                continue  # reads the shape alone, never the values: it keeps the real one
            for index, name in enumerate(node.input):
                if name in stand_in:
                    node.input[index] = stand_in[name]
    for name, fresh in stand_in.items():
        value = copy.graph.input.add()
        value.name = fresh
        value.type.tensor_type.elem_type = elem_types.get(name, onnx.TensorProto.FLOAT)
        dims = shapes.get(name)
        if dims is not None and len(dims) <= 1:  # the rank stays known, the length becomes a symbol
            value.type.tensor_type.shape.dim.add().dim_param = f"{fresh}_length"
    return copy, stand_in


def _elem_types(model) -> dict[str, int]:
    types = {}
    for scope in walk_graphs(model, functions=False):
        graph = scope.container
        types.update({i.name: i.data_type for i in graph.initializer})
        for value in list(graph.input) + list(graph.value_info) + list(graph.output):
            if value.type.HasField("tensor_type"):
                types.setdefault(value.name, value.type.tensor_type.elem_type)
    return types


def _restore(inferred, stand_ins: dict[str, str]):
    """Undo _with_cuts on the inferred model: the original wiring, no stand-in inputs."""
    original = {fresh: name for name, fresh in stand_ins.items()}
    kept = [value for value in inferred.graph.input if value.name not in original]
    for scope in walk_graphs(inferred, functions=False):
        for node in scope.nodes:
            for index, name in enumerate(node.input):
                if name in original:
                    node.input[index] = original[name]
    del inferred.graph.input[:]
    inferred.graph.input.extend(kept)
    return inferred
