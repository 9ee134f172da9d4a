"""Checkpoint -> ONNX (opset 13, input `image`, output `features`) -> onnxsim, verified.

Any LV-ViT variant or timm model by name. Verification is part of export: the ONNX runs
on onnxruntime and must match torch (the model as it normally runs, fused attention
included) on a seeded input within 1e-4, or the file is not written. The model's
preprocessing and provenance go into the file's metadata_props (lvvit_opt.models.metadata).
"""
from __future__ import annotations

import io
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lvvit_opt.core.errors import UserError, ValidationFailed, reason_of, shown
from lvvit_opt.core.onnx_files import save_onnx
from lvvit_opt.core.logs import LogCallback, reporter
from lvvit_opt.core.progress import task
from lvvit_opt.core.resources import require_memory

logger = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "features"
EXPORT_ATOL = 1e-4

def random_init_warning(seed: int) -> str:
    """The random-weights caveat (models.metadata's one wording) for a model made without a checkpoint."""
    from lvvit_opt.models.metadata import random_weights_warning

    return random_weights_warning(f"no --checkpoint: a deterministic init, seed {seed}")


@dataclass
class ExportResult:
    path: str
    model: str
    batch_size: int | None  # None for a dynamic batch
    opset: int
    simplified: bool
    random_weights: bool
    max_abs_diff: float
    seconds: float
    node_count: int
    notes: list[str] = field(default_factory=list)
    random_tensors: list[str] = field(default_factory=list)  # left at their random init by a non-strict load
    img_size: int = 224
    parameters: int = 0
    metadata: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def export_onnx(
    out: str | os.PathLike,
    model: str = "lvvit_s",
    checkpoint: str | os.PathLike | None = None,
    batch_size: int = 1,
    dynamic_batch: bool = False,
    img_size: int | None = None,
    opset: int = 13,
    simplify: bool = True,
    seed: int = 0,
    ema: bool = False,
    strict: bool = True,
    log: LogCallback = None,
) -> ExportResult:
    """Export an LV-ViT variant or any timm model to ONNX, simplify it and verify it against torch.

    `img_size` None keeps the model's own input size (its pretrained_cfg). Without
    `checkpoint` the weights are a deterministic random init from `seed`, and the log says
    so loudly (a WARNING). An unknown name fails before torch is imported. Progress and
    messages go to `logging` (and to `log` when given). Raises ValidationFailed if
    onnxruntime and torch disagree.
    """
    from lvvit_opt.models.zoo import check_model_name

    start = time.perf_counter()
    log = reporter(logger, log)
    check_model_name(model)
    if batch_size < 1:
        raise UserError(f"--batch-size must be positive, got {batch_size}")
    if img_size is not None and img_size < 1:
        raise UserError(f"--img-size must be positive, got {img_size}")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise UserError(f"{shown(checkpoint)}: no such checkpoint file")
    check_opset(opset)
    require_memory(export_memory_estimate(model, batch_size, img_size or 224),
                   f"exporting {model} at batch {batch_size}, {img_size or 'its own'}px")

    import onnx
    import torch

    from lvvit_opt.models.metadata import model_props, set_props
    from lvvit_opt.models.model import create_model, parameter_count, plain_attention

    if checkpoint is None:
        log.warning(random_init_warning(seed))
    with task(f"load {model}"):
        net = create_model(model, checkpoint, ema=ema, strict=strict, seed=seed, img_size=img_size, log=log)
    random_tensors = list(getattr(net, "random_tensors", []))
    if random_tensors:
        log.warning(f"the exported model is partly RANDOM: {len(random_tensors)} tensor(s) were not loaded from "
                    f"{checkpoint} and keep their seeded random init (seed {seed}): {', '.join(random_tensors)}")
    preprocessing = model_preprocessing(model, net, img_size)
    size = preprocessing.input_size[1]

    example = torch.from_numpy(seeded_input(batch_size, size, seed))
    batch_text = f"dynamic, traced and verified at batch {batch_size}" if dynamic_batch else batch_size
    log(f"exporting {model} (batch {batch_text}, {size}px, opset {opset})")
    buffer = io.BytesIO()
    with torch.no_grad(), task("torch.onnx.export"):
        expected = net(example).numpy()  # the model as users run it, fused attention and all
        with plain_attention(net), warnings.catch_warnings():
            # timm's shape asserts are traced as constants, as intended for a fixed-shape export
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            try:
                torch.onnx.export(
                    net, (example,), buffer, dynamo=False, opset_version=opset,
                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None,
                )
            except Exception as exc:  # an op this exporter/opset cannot write: one line, not pages of IR
                reason = reason_of(exc, 300)
                raise UserError(f"torch.onnx.export cannot export {model} at opset {opset}: {reason}") from None
    onnx_model = onnx.load_from_string(buffer.getvalue())
    del buffer
    notes = []
    if dynamic_batch:
        notes.append(f"dynamic batch; traced and verified at batch {batch_size}")
    if random_tensors:
        notes.append(f"partly RANDOM: {len(random_tensors)} tensor(s) not in the checkpoint: {', '.join(random_tensors)}")
    if simplify:
        with task("onnxsim"):
            onnx_model = simplify_model(onnx_model, None if dynamic_batch else (batch_size, 3, size, size))
    else:
        notes.append("not simplified (--no-simplify)")
    if not dynamic_batch:
        onnx_model = onnx.shape_inference.infer_shapes(onnx_model, strict_mode=True)
    props = model_props(model, "true" if checkpoint is None else "partly" if random_tensors else "false",
                        checkpoint, preprocessing)
    set_props(onnx_model, props)
    onnx.checker.check_model(onnx_model)

    with task("verify on onnxruntime"):
        diff = _verify(onnx_model, example.numpy(), expected)
    log(f"verification: onnxruntime vs torch max abs diff {diff:.3g} (limit {EXPORT_ATOL:g})")
    if not diff <= EXPORT_ATOL:
        raise ValidationFailed(f"exported graph disagrees with torch: max abs diff {diff:.3g} > {EXPORT_ATOL:g}; "
                               f"nothing written to {out}")
    save_onnx(onnx_model, out)
    seconds = time.perf_counter() - start
    log(f"wrote {out} ({len(onnx_model.graph.node)} nodes) in {seconds:.1f} s")
    return ExportResult(str(out), model, None if dynamic_batch else batch_size, opset, simplify,
                        checkpoint is None, diff, seconds, len(onnx_model.graph.node), notes, random_tensors,
                        img_size=size, parameters=parameter_count(net), metadata=props)


def model_preprocessing(name: str, net, img_size: int | None = None):
    """The eval transform of `net` (LV-ViT config or timm pretrained_cfg) at the size it is exported."""
    from lvvit_opt.models.metadata import Preprocessing
    from lvvit_opt.models.zoo import is_lvvit

    cfg = dict(getattr(net, "pretrained_cfg", None) or getattr(net, "default_cfg", None) or {})
    channels, height, width = tuple(cfg.get("input_size", (3, 224, 224)))
    if img_size is not None:
        height = width = img_size
    elif height != width:
        raise UserError(f"{name} takes {height}x{width} images; only square inputs are supported "
                        f"(pass --img-size to pick one)")
    tag = cfg.get("tag")
    source = "LV-ViT config" if is_lvvit(name) else f"timm pretrained_cfg {cfg.get('architecture', name)}" + (
        f".{tag}" if tag else "")
    return Preprocessing.from_pretrained_cfg(cfg, source, (int(channels), int(height), int(width)))


def max_export_opset() -> int:
    """Highest opset both torch's TorchScript exporter and the installed onnx support."""
    import onnx
    from torch.onnx import _constants

    torch_max = getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", None) or _constants.ONNX_MAX_OPSET
    return min(int(torch_max), onnx.defs.onnx_opset_version())


def check_opset(opset: int) -> None:
    """UserError (before torch prints pages of IR) for an opset the exporter cannot write."""
    highest = max_export_opset()
    if opset < 7:
        raise UserError(f"--opset {opset} is too old (LV-ViT needs at least opset 7; 13 is recommended)")
    if opset > highest:
        raise UserError(f"--opset {opset} is not supported by this torch/onnx (highest {highest}; 13 is recommended)")


def export_memory_estimate(model: str, batch_size: int, img_size: int) -> int:
    """A lower-bound estimate of the bytes export needs (torch forward, kept three times over
    by tracing, the check run and onnxruntime), from the config: conv stem maps, attention
    maps and token tensors per sample, plus the position embedding."""
    from lvvit_opt.models.zoo import CONFIGS  # no torch yet

    cfg = CONFIGS.get(model)
    dim, heads, stem = (cfg.embed_dim, cfg.num_heads, cfg.stem_channels) if cfg else (768, 12, 64)
    tokens = (img_size // 16) ** 2 + 1
    per_sample = 4 * (2 * stem * (img_size // 2) ** 2 + 2 * heads * tokens * tokens + 8 * tokens * dim)
    return 3 * batch_size * per_sample + 4 * tokens * dim


def seeded_input(batch_size: int, img_size: int = 224, seed: int = 0) -> np.ndarray:
    """The verification input: standard-normal, like a normalised image batch."""
    return np.random.default_rng(seed).standard_normal((batch_size, 3, img_size, img_size), dtype=np.float32)


def simplify_model(model, input_shape: tuple[int, ...] | None):
    """Run onnxsim (with the fixed input shape when given); refuse a result it cannot check."""
    import onnxsim

    kwargs = {"overwrite_input_shapes": {INPUT_NAME: list(input_shape)}} if input_shape else {}
    simplified, ok = onnxsim.simplify(model, **kwargs)
    if not ok:
        raise ValidationFailed("onnxsim could not validate the simplified model; retry with --no-simplify")
    return simplified


def _verify(onnx_model, example: np.ndarray, expected: np.ndarray) -> float:
    from lvvit_opt.runtime.ort import OrtRunner

    with OrtRunner.from_model(onnx_model) as runner:
        actual = runner.infer({INPUT_NAME: example})[OUTPUT_NAME]
    return float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))
