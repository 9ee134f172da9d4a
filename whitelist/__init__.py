"""CANN transpose whitelist tools (installed as lvvit_opt.whitelist).

Plain functions, one per `lvvit-opt whitelist` verb; none imports torch, and onnx is
imported only when a graph is read:

    transpose_shapes(model_or_path) -> [TransposeUse]     distinct Transpose input shapes, origin marked
                                                          (the one list: lvvit_opt.passes.transposes)
    format_shape(shape) -> "8,3,197,197"                  the one way a shape is written
    shapes_from_model(model_or_path) -> [shape]           just the static ones
    locate_transpose_py(file=None) -> Path                the transpose.py atc reads
    check_shapes(file, shapes) -> CheckReport             era + kernel per shape, and why
    patch_file(file, shapes, fuzzy=False, dry_run=False, output=None) -> PatchResult
    restore_file(file, force=False) -> RestoreResult
"""
from lvvit_opt.whitelist.check import CheckReport, check_shapes, check_source
from lvvit_opt.whitelist.graph import (TransposeUse, format_shape, format_shapes, format_transpose_table,
                                      shapes_from_model, static_shapes, transpose_shapes)
from lvvit_opt.whitelist.locate import LAYOUTS, locate_transpose_py
from lvvit_opt.whitelist.patch import PatchResult, RestoreResult, atc_cache_hint, patch_file, restore_file
from lvvit_opt.whitelist.source import (BLACK_ERA, FAST_KERNEL, SLOW_KERNEL, WHITE_ERA, Selection, TransposeSource,
                                        UnrecognisedStructure, normalise_shapes, parse_transpose_source,
                                        read_transpose_source, select_kernel)

__all__ = [
    "BLACK_ERA", "FAST_KERNEL", "LAYOUTS", "SLOW_KERNEL", "WHITE_ERA", "CheckReport", "PatchResult",
    "RestoreResult", "Selection", "TransposeSource", "TransposeUse", "UnrecognisedStructure", "atc_cache_hint",
    "check_shapes", "check_source", "format_shape", "format_shapes", "format_transpose_table", "locate_transpose_py", "normalise_shapes", "parse_transpose_source",
    "patch_file", "read_transpose_source", "restore_file", "select_kernel", "shapes_from_model", "static_shapes",
    "transpose_shapes",
]
