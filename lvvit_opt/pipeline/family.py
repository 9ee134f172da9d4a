"""One model of the ViT family through export -> softmax_transpose -> validate -> whitelist shapes.

`check_model` is what scripts/model_matrix.py prints a row of and what the slow family test
asserts on: how many attention softmaxes the export has, how many the pass wrapped, which
it skipped and why, the Transpose input shapes the CANN whitelist needs (as
`lvvit-opt whitelist shapes` reports them), and the rewrite's max abs diff on onnxruntime.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

# The models the matrix covers by default: one per architecture of the family.
FAMILY = ("lvvit_t", "deit_tiny_patch16_224", "vit_tiny_patch16_224", "swin_tiny_patch4_window7_224",
          "cait_xxs24_224", "pit_ti_224", "twins_svt_small", "crossvit_tiny_240")


@dataclass
class FamilyRow:
    model: str
    batch_size: int
    img_size: int
    parameters: int
    random_weights: bool
    softmax_found: int
    wrapped: int
    skipped: list[dict] = field(default_factory=list)  # {"node", "reason"}
    whitelist_shapes: list[list[int]] = field(default_factory=list)
    whitelist_reported: bool = False  # every created shape is a static shape of `whitelist shapes`
    validation_passed: bool = False
    max_abs_diff: float = float("nan")
    export_s: float = 0.0
    apply_s: float = 0.0
    preprocessing: str = ""  # what export recorded in the metadata: "240 px, crop 0.875, bicubic, mean ..."

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def skip_reasons(self) -> dict[str, int]:
        """reason -> how many softmaxes were skipped for it."""
        counts: dict[str, int] = {}
        for entry in self.skipped:
            counts[entry["reason"]] = counts.get(entry["reason"], 0) + 1
        return counts


def check_model(name: str, workdir: str | os.PathLike, batch_size: int = 1, seed: int = 0,
                checkpoint: str | os.PathLike | None = None,
                log: Callable[[str], None] = lambda _m: None) -> FamilyRow:
    """Export `name`, apply softmax_transpose (validated), derive the whitelist shapes."""
    from lvvit_opt.export import export_onnx
    from lvvit_opt.core.onnx_files import load_onnx
    from lvvit_opt.passes import apply_file
    from lvvit_opt.whitelist import static_shapes, transpose_shapes

    workdir = Path(workdir)
    original = workdir / f"{name}_bs{batch_size}.onnx"
    rewritten = workdir / f"{name}_bs{batch_size}_softmax_transpose.onnx"
    start = time.perf_counter()
    exported = export_onnx(original, model=name, checkpoint=checkpoint, batch_size=batch_size, seed=seed, log=log)
    export_s = time.perf_counter() - start
    from lvvit_opt.core.graph_walk import walk_nodes

    softmaxes = sum(n.op_type == "Softmax" for n, _ in walk_nodes(load_onnx(original, weights=False)))
    start = time.perf_counter()
    applied = apply_file(original, rewritten, ["softmax_transpose"], seed=seed)
    apply_s = time.perf_counter() - start
    details = applied.passes[0].details
    created = applied.transpose_input_shapes()
    reported = static_shapes(transpose_shapes(str(rewritten)))
    comparisons = applied.validation.comparisons.values() if applied.validation else []
    diff = max((o.max_abs for c in comparisons for o in c.outputs), default=float("nan"))
    return FamilyRow(
        model=name, batch_size=batch_size, img_size=exported.img_size, parameters=exported.parameters,
        random_weights=exported.random_weights, softmax_found=softmaxes, wrapped=len(details["wrapped"]),
        skipped=list(details["skipped"]), whitelist_shapes=created,
        whitelist_reported=all(tuple(s) in reported for s in created),
        validation_passed=bool(applied.validation and applied.validation.passed), max_abs_diff=diff,
        export_s=export_s, apply_s=apply_s, preprocessing=_describe(exported.metadata))


def _describe(props: dict[str, str]) -> str:
    from lvvit_opt.models.metadata import Preprocessing

    pre = Preprocessing.from_props(props)
    if pre is None:
        return "-"
    return (f"{pre.input_size[1]} px, crop {pre.crop_pct:g}, {pre.interpolation}, "
            f"mean {','.join(f'{m:g}' for m in pre.mean)}")
