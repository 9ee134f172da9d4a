"""Every Transpose of an ONNX graph with its input shape as atc will see it (`ori_shape`): the
one list behind every "which shapes must I whitelist?" answer (apply's report, run's report.md
and atc_commands.sh, `whitelist shapes`, `whitelist patch --from-model`, `doctor --model`).

Shapes come from onnx shape inference; a Transpose whose input is not fully static (a
symbolic batch, an unknown dim) is reported as such instead of being dropped, because
atc decides its kernel on the static shape and a dynamic one needs a fixed-batch export.
Each entry says whether its Transposes wrap a softmax (`created`: the ones the recipe's
softmax_transpose adds) or were in the model before. Shapes are written one way everywhere:
`format_shape((8, 3, 197, 197))` == "8,3,197,197" (what `--shape` takes).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from lvvit_opt.core.errors import UserError, reason_of
from lvvit_opt.core.tensor_spec import dims_of

Dim = int | str   # an int for a static dim, the symbol name or "?" otherwise

CREATED = "added by softmax_transpose"
BEFORE = "in the model before"


@dataclass
class TransposeUse:
    """One distinct (input shape, perm, origin) among the graph's Transpose nodes."""

    shape: tuple[Dim, ...] | None        # None: rank unknown
    perm: tuple[int, ...] | None         # None: default perm of unknown rank (reverse)
    nodes: list[str] = field(default_factory=list)
    created: bool = False                # wraps a softmax: added by softmax_transpose (or an equal wrap)

    @property
    def count(self) -> int:
        return len(self.nodes)

    @property
    def static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    @property
    def origin(self) -> str:
        return CREATED if self.created else BEFORE

    def to_dict(self) -> dict:
        return {"shape": list(self.shape) if self.shape is not None else None,
                "perm": list(self.perm) if self.perm is not None else None,
                "count": self.count, "static": self.static, "created": self.created, "origin": self.origin,
                "nodes": list(self.nodes)}


def format_shape(shape) -> str:
    """The one way a shape is written: 8,3,197,197 (what `whitelist patch --shape` takes)."""
    return ",".join(str(d) for d in shape) if shape is not None else "rank unknown"


def format_shapes(shapes) -> str:
    return " ".join(format_shape(s) for s in shapes) or "none"


def transpose_table(uses: list[TransposeUse], kernels: dict | None = None) -> list[dict]:
    """Rows of the one table (shape, perm, nodes, origin[, kernel]) as dicts, in list order."""
    rows = []
    for use in uses:
        row = {"input shape": format_shape(use.shape), "perm": format_shape(use.perm) if use.perm else "reverse",
               "nodes": use.count, "origin": use.origin}
        if kernels is not None:
            row["kernel"] = kernels.get(use.shape, "not static") if use.static else "not static"
        rows.append(row)
    return rows


def format_transpose_table(uses: list[TransposeUse], kernels: dict | None = None,
                           extra: dict | None = None) -> str:
    """The one plain-text table of a graph's Transposes (core.table's format). `kernels`:
    shape -> Transpose/TransposeD for a known transpose.py; `extra`: a column name and a
    function of the use (e.g. `whitelist shapes`' static column)."""
    from lvvit_opt.core.table import format_table

    rows = transpose_table(uses, kernels)
    headers = list(rows[0]) if rows else ["input shape", "perm", "nodes", "origin"]
    body = [[row[h] for h in headers] for row in rows]
    if extra:
        (title, fn), = extra.items()
        headers.append(title)
        body = [line + [fn(use)] for line, use in zip(body, uses)]
    return format_table(headers, body, align="llr" + "l" * (len(headers) - 3), rule=False)


def transpose_shapes(model_or_path) -> list[TransposeUse]:
    """Distinct Transpose input shapes with perm, origin and node names, in graph order.

    Accepts an onnx.ModelProto or a path. Subgraphs (If/Loop/Scan bodies) are included.
    """
    from lvvit_opt.core.shape_inference import infer_shapes_bounded
    from lvvit_opt.passes.graph_utils import weightless_skeleton

    model = _load(model_or_path)
    try:
        # the inference the passes use (apply's report): weight-free skeleton with data
        # propagation, so Reshape targets computed from static shapes resolve (no unk__N)
        inferred = infer_shapes_bounded(weightless_skeleton(model))
    except Exception as exc:  # inference errors are many and varied; report one line
        raise UserError(f"ONNX shape inference failed: {type(exc).__name__}: {reason_of(exc, 200)}") \
            from None
    uses: dict[tuple, TransposeUse] = {}
    _collect(inferred, uses)
    if any(not u.static for u in uses.values()) and _inputs_static(model):
        # shapes computed at run time (Swin's window partition): fold them as fix_shapes does,
        # so these are the shapes `apply` reports (and atc sees); weights are not touched
        from lvvit_opt.passes.fix_shapes import fold_to_fixed_point
        from lvvit_opt.passes.fold_constants import fold_budget

        try:
            folded, _ = fold_to_fixed_point(weightless_skeleton(model), fold_budget(model), [])
            inferred = infer_shapes_bounded(folded)
        except Exception:  # keep the unfolded facts; they say what is not static
            return list(uses.values())
        uses = {}
        _collect(inferred, uses)
    return list(uses.values())


def _inputs_static(model) -> bool:
    initializers = {i.name for i in model.graph.initializer}
    return all(dims is not None and all(isinstance(d, int) for d in dims)
               for dims in (dims_of(v.type) for v in model.graph.input if v.name not in initializers))


def symbolic_input_dims(model_or_path) -> dict[str, str]:
    """Symbol -> 'input NAME dim I' for every named symbolic dim of the graph inputs: what
    to fix (apply --passes fix_shapes --batch-size / --input-shape) for a dim to become static."""
    model = _load(model_or_path)
    initializers = {i.name for i in model.graph.initializer}
    where: dict[str, str] = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        for index, dim in enumerate(dims_of(value.type) or ()):
            if isinstance(dim, str):
                where.setdefault(dim, f"input {value.name} dim {index}")
    return where


def static_shapes(uses: list[TransposeUse]) -> list[tuple[int, ...]]:
    """The shapes to whitelist: the distinct static input shapes (any perm, either origin), in graph
    order. atc picks the kernel per shape, so in the white-list era a Transpose that was in the
    model before needs its entry as much as the softmax wrap's."""
    shapes: list[tuple[int, ...]] = []
    for use in uses:
        if use.static and use.shape not in shapes:
            shapes.append(use.shape)  # type: ignore[arg-type]
    return shapes


def _load(model_or_path):
    if isinstance(model_or_path, (str, os.PathLike)):
        from lvvit_opt.core.onnx_files import load_onnx
        # weights are not needed for shapes; skipping them keeps big models fast
        return load_onnx(model_or_path, load_external_data=False)
    return model_or_path


def _collect(inferred, uses: dict[tuple, TransposeUse]) -> None:
    """Transposes of every graph (the one walker: If/Loop/Scan bodies at any depth, local
    functions, whose tensors have no inferred shape: rank unknown), each marked when it wraps
    a softmax (the recipe's softmax_transpose added it)."""
    from lvvit_opt.core.graph_walk import node_name, walk_graphs, walk_nodes
    from lvvit_opt.passes.softmax_transpose import wrapping_transposes

    shapes: dict[str, tuple[Dim, ...] | None] = {}
    wraps: set[str] = set()
    for scope in walk_graphs(inferred, functions=False):
        graph = scope.container
        for init in graph.initializer:
            shapes[init.name] = tuple(int(d) for d in init.dims)
        for value in list(graph.input) + list(graph.value_info) + list(graph.output):
            shapes[value.name] = _value_shape(value)
        wraps |= wrapping_transposes(graph)
    for node, scope in walk_nodes(inferred):
        if node.op_type == "Transpose" and node.domain in ("", "ai.onnx") and node.input:
            shape = None if scope.is_function else shapes.get(node.input[0])
            perm = _perm(node, shape)
            created = not scope.is_function and bool(node.output) and node.output[0] in wraps
            key = (shape, perm, created)
            uses.setdefault(key, TransposeUse(shape, perm, created=created)).nodes.append(
                node.name if node.name else f"<{node_name(node)}>")


def _value_shape(value) -> tuple[Dim, ...] | None:
    """The shared spec reader's dims, with "?" for a dim the model neither fixes nor names."""
    dims = dims_of(value.type)
    return None if dims is None else tuple("?" if d is None else d for d in dims)


def _perm(node, shape: tuple[Dim, ...] | None) -> tuple[int, ...] | None:
    for attr in node.attribute:
        if attr.name == "perm":
            return tuple(int(p) for p in attr.ints)
    return tuple(reversed(range(len(shape)))) if shape is not None else None
