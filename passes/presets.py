"""Named recipes: a preset is a name that `--passes` expands to a list of passes.

`ascend310` is the one recipe of the original manual guide (LV-ViT on an Ascend 310), as
passes. The guide exported at a static batch, ran onnxsim, wrapped every attention softmax
in two Transposes in the model's source code, whitelisted the Transposes' shapes in CANN's
transpose.py and compiled with atc. Here:

  fix_shapes         atc and the transpose whitelist need static shapes. Makes a symbolic
                     batch static (--batch-size) and keeps one that already is; then folds
                     the shape arithmetic (what onnxsim did) so every tensor shape is concrete.
  softmax_transpose  the guide's source patch as a graph pass: Transpose -> Softmax(axis=1)
                     -> Transpose, so atc runs the softmax over an axis its kernel is fast on.
  cleanup            drops what the rewrite left unused and sorts the graph.

fold_constants is not in it: fix_shapes already folds every constant subgraph (the same
fold), so it would find nothing. `lvvit-opt passes` lists every preset and its expansion.
"""
from __future__ import annotations

PRESETS: dict[str, tuple[str, ...]] = {
    "ascend310": ("fix_shapes", "softmax_transpose", "cleanup"),
}
PRESET_SUMMARIES: dict[str, str] = {
    "ascend310": "the original manual recipe for LV-ViT on Ascend 310: static shapes, softmax wrapped, cleaned",
}
DEFAULT_PRESET = "ascend310"


def expand_presets(names: list[str]) -> list[str]:
    """Replace every preset name by its passes, in place in the list."""
    expanded: list[str] = []
    for name in names:
        expanded += list(PRESETS.get(name, (name,)))
    return expanded
