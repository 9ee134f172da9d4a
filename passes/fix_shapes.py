"""fix_shapes: make input shapes static and every tensor shape concrete."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import onnx

from lvvit_opt.core.errors import UserError
from lvvit_opt.core.tensor_spec import SHAPE_LIMITS, shape_problem
from lvvit_opt.passes.base import GraphPass, PassReport
from lvvit_opt.passes.fold_constants import fold_budget, fold_graph, note_skipped
from lvvit_opt.passes.graph_utils import dims_of
from lvvit_opt.passes.registry import register_pass


def parse_input_shapes(specs: str | list[str] | dict | None) -> dict[str, list[int]]:
    """'image:16,3,224,224' (several joined by ';' or given as a list) -> {'image': [16,3,224,224]}."""
    if not specs:
        return {}
    if isinstance(specs, dict):
        return {str(k): [int(d) for d in v] for k, v in specs.items()}
    items = specs.split(";") if isinstance(specs, str) else [s for spec in specs for s in spec.split(";")]
    shapes = {}
    for item in filter(None, (i.strip() for i in items)):
        name, sep, dims = item.rpartition(":")
        try:
            values = [int(d) for d in dims.replace("x", ",").split(",") if d]
        except ValueError:
            values = []
        problem = shape_problem(values) if values else "no dims"
        if not sep or not name or problem:
            raise UserError(f"bad input shape {item!r}{f' ({problem})' if sep and name else ''}: expected "
                            f"NAME:D1,D2,... with {SHAPE_LIMITS}, e.g. image:16,3,224,224")
        shapes[name] = values
    return shapes


@register_pass
class FixShapes(GraphPass):
    """Make the batch (batch_size=N) or whole input shapes (input_shapes=name:d,d,...) static.

    Then constant-folds, so Shape/Gather/Concat chains that computed Reshape targets from a
    symbolic batch become constants, and runs shape inference so every tensor (value_info
    and outputs) has a concrete shape. Tensors that stay symbolic are listed in the notes.
    """

    name = "fix_shapes"
    shortcuts = {"batch_size": "--batch-size", "input_shapes": "--input-shape"}

    @dataclass
    class Options:
        batch_size: Optional[int] = None
        input_shapes: Optional[str] = None  # "image:16,3,224,224[;other:...]" or a dict

        def __post_init__(self):
            self.input_shapes = parse_input_shapes(self.input_shapes)  # type: ignore[assignment]
            if self.batch_size is not None and int(self.batch_size) <= 0:
                raise ValueError(f"batch_size must be positive, got {self.batch_size}")

    def rewrite(self, model: onnx.ModelProto, report: PassReport) -> onnx.ModelProto:
        shapes: dict = self.options.input_shapes  # type: ignore[assignment]
        if self.options.batch_size is None and not shapes:
            symbolic = _symbolic_inputs(model.graph)
            if symbolic:
                raise UserError(f"fix_shapes: input {symbolic[0]} is not static; give batch_size (--batch-size N) "
                                "or input_shapes (--input-shape NAME:D,...), or leave fix_shapes out of --passes "
                                "(atc and the transpose whitelist need static shapes)")
            report.notes.append("the inputs are already static: kept as they are")
        changed = _set_input_dims(model.graph, shapes, self.options.batch_size)
        symbolic_reshapes = _reshapes_with_computed_target(model.graph)
        del model.graph.value_info[:]
        for output in model.graph.output:
            output.type.tensor_type.ClearField("shape")
        budget = fold_budget(model)
        skipped: list[str] = []
        model, rounds = fold_to_fixed_point(model, budget, skipped)
        note_skipped(report, sorted(set(skipped)), budget)
        _infer_into(model)
        still_computed = _reshapes_with_computed_target(model.graph)
        not_concrete = [v.name for v in list(model.graph.value_info) + list(model.graph.output)
                        if not _concrete(dims_of(v.type))]
        report.matched = len(changed)
        report.details["fold_rounds"] = rounds
        report.details.update({
            "inputs": changed,
            "reshape_targets_made_constant": len(symbolic_reshapes) - len(still_computed),
            "reshape_targets_still_computed": still_computed,
            "outputs": {o.name: list(dims_of(o.type) or ()) for o in model.graph.output},
        })
        if not_concrete:
            report.notes.append(f"{len(not_concrete)} tensor(s) without a concrete shape: {not_concrete[:10]}")
        return model


def fold_to_fixed_point(model: onnx.ModelProto, budget: int, skipped: list[str],
                         max_rounds: int = 8) -> tuple[onnx.ModelProto, int]:
    """Fold, re-infer, fold again: each round can resolve shapes (Expand, Where on shapes, ...)
    that the next round's Shape folding needs. Stops when the node count stops falling."""
    for rounds in range(1, max_rounds + 1):
        count = len(model.graph.node)
        model = fold_graph(model, fold_shapes=True, size_threshold=budget, skipped=skipped, in_place=True)
        if len(model.graph.node) >= count:
            break
    return model, rounds


def _set_input_dims(graph: onnx.GraphProto, shapes: dict[str, list[int]], batch: int | None) -> dict[str, list]:
    initializers = {i.name for i in graph.initializer}
    real_inputs = [i for i in graph.input if i.name not in initializers]
    unknown = set(shapes) - {i.name for i in real_inputs}
    if unknown:
        raise UserError(f"fix_shapes: no input named {', '.join(sorted(unknown))}; "
                        f"inputs are {', '.join(i.name for i in real_inputs)}")
    changed = {}
    for value in real_inputs:
        dims = dims_of(value.type)
        if value.name in shapes:
            new = shapes[value.name]
            if dims is not None and len(dims) != len(new):
                raise UserError(f"fix_shapes: input {value.name} has rank {len(dims)}, given shape {new}")
        elif batch is not None and dims:
            if isinstance(dims[0], int) and dims[0] != batch:
                raise UserError(f"fix_shapes: input {value.name} already has a static batch {dims[0]}; "
                                f"re-export with a dynamic batch, or give its whole shape with input_shapes")
            if any(not isinstance(d, int) for d in dims[1:]):
                raise UserError(f"fix_shapes: input {value.name} {list(dims)} has symbolic dims besides the batch; "
                                "give its whole shape with input_shapes")
            new = [batch, *dims[1:]]
        else:
            continue
        shape = value.type.tensor_type.shape
        shape.ClearField("dim")
        for d in new:
            shape.dim.add().dim_value = d
        changed[value.name] = list(new)
    return changed


def _symbolic_inputs(graph: onnx.GraphProto) -> list[str]:
    """'NAME [dims]' for each graph input whose shape is not fully static."""
    initializers = {i.name for i in graph.initializer}
    found = []
    for value in graph.input:
        dims = dims_of(value.type)
        if value.name not in initializers and (dims is None or not _concrete(dims)):
            found.append(f"{value.name} {list(dims) if dims is not None else '(rank unknown)'}")
    return found


def _reshapes_with_computed_target(graph: onnx.GraphProto) -> list[str]:
    """Reshape nodes whose target shape is computed by the graph, not a constant."""
    constants = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name or n.output[0] for n in graph.node
            if n.op_type == "Reshape" and len(n.input) > 1 and n.input[1] not in constants]


def _concrete(dims) -> bool:
    return dims is not None and all(isinstance(d, int) and d > 0 for d in dims)


def _infer_into(model: onnx.ModelProto) -> None:
    """Shape inference on the weight-free skeleton, its value_info and outputs copied into
    `model` (inferring on the model itself copies every weight twice)."""
    from lvvit_opt.core.shape_inference import infer_shapes_bounded
    from lvvit_opt.passes.graph_utils import weightless_skeleton

    inferred = infer_shapes_bounded(weightless_skeleton(model))
    weights = {i.name for i in model.graph.initializer}
    del model.graph.value_info[:]
    model.graph.value_info.extend(v for v in inferred.graph.value_info if v.name not in weights)
    shapes = {o.name: o for o in inferred.graph.output}
    for output in model.graph.output:
        if output.name in shapes:
            output.type.CopyFrom(shapes[output.name].type)
