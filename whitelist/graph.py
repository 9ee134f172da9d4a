"""Transpose input shapes of an ONNX graph, as atc will see them: the one list lives in
lvvit_opt.passes.transposes (apply reports it too); this module adds what the whitelist verbs
need on top of it."""
from __future__ import annotations

import os

from lvvit_opt.core.errors import UserError
from lvvit_opt.passes.transposes import (BEFORE, CREATED, TransposeUse, format_shape, format_shapes,
                                         format_transpose_table, static_shapes, symbolic_input_dims,
                                         transpose_shapes, transpose_table)

__all__ = ["BEFORE", "CREATED", "TransposeUse", "format_shape", "format_shapes", "format_transpose_table",
           "shapes_from_model", "static_shapes", "symbolic_input_dims", "transpose_shapes", "transpose_table"]


def shapes_from_model(model_or_path) -> list[tuple[int, ...]]:
    """Static Transpose input shapes of a model; UserError if it has Transposes but none static."""
    uses = transpose_shapes(model_or_path)
    shapes = static_shapes(uses)
    if not shapes:
        label = model_or_path if isinstance(model_or_path, (str, os.PathLike)) else "the model"
        if not uses:
            raise UserError(f"{label}: no Transpose nodes, nothing to whitelist")
        raise UserError(f"{label}: no Transpose input shape is static ({len(uses)} dynamic); export with a "
                        "fixed batch size (atc needs static shapes) or pass --shape")
    return shapes
