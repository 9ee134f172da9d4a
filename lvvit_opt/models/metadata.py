"""The model's preprocessing and provenance, kept in the ONNX file's `metadata_props`.

`export` writes these keys (all strings); `preprocess`, `eval` and `validate --inputs`
read the transform back, so a CrossViT is fed 240 px crops and lvvit_m crop 1.0 without
the user repeating them. The graph passes keep metadata_props, so the rewritten model
carries them too.

    lvvit_opt.model                     deit_tiny_patch16_224
    lvvit_opt.random_weights            true | false | partly (a --non-strict load left tensors random)
    lvvit_opt.checkpoint                file name of the checkpoint (absent for random weights)
    lvvit_opt.version                   the lvvit-opt version that exported it
    lvvit_opt.preprocess.source         where the values came from (timm pretrained_cfg NAME / LV-ViT config)
    lvvit_opt.preprocess.input_size     3,224,224   (C,H,W of the exported graph)
    lvvit_opt.preprocess.crop_pct       0.875
    lvvit_opt.preprocess.interpolation  bicubic
    lvvit_opt.preprocess.mean           0.485,0.456,0.406
    lvvit_opt.preprocess.std            0.229,0.224,0.225
    lvvit_opt.preprocess.crop_mode      center

A model whose `random_weights` is true or partly gets one warning per command in one wording
(`random_weights_caveat`) and a subtitle on every plot (`PLOT_CAVEAT`).

No torch here; onnx is imported only to read a file.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

from lvvit_opt.core.errors import UserError

PREFIX = "lvvit_opt."
PREPROCESS = PREFIX + "preprocess."


@dataclass(frozen=True)
class Preprocessing:
    """A model's eval transform, as timm's pretrained_cfg states it."""

    input_size: tuple[int, int, int]
    crop_pct: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_mode: str = "center"
    source: str = ""

    @classmethod
    def from_pretrained_cfg(cls, cfg: dict, source: str, input_size: tuple[int, int, int] | None = None
                            ) -> "Preprocessing":
        """timm's pretrained_cfg dict -> Preprocessing (timm's defaults for missing keys)."""
        size = input_size or tuple(cfg.get("input_size", (3, 224, 224)))
        return cls(input_size=tuple(int(d) for d in size), crop_pct=float(cfg.get("crop_pct") or 0.875),
                   interpolation=str(cfg.get("interpolation") or "bilinear"),
                   mean=tuple(float(m) for m in cfg.get("mean", (0.485, 0.456, 0.406))),
                   std=tuple(float(s) for s in cfg.get("std", (0.229, 0.224, 0.225))),
                   crop_mode=str(cfg.get("crop_mode") or "center"), source=source)

    def to_props(self) -> dict[str, str]:
        return {
            PREPROCESS + "source": self.source,
            PREPROCESS + "input_size": _join(self.input_size),
            PREPROCESS + "crop_pct": repr(self.crop_pct),
            PREPROCESS + "interpolation": self.interpolation,
            PREPROCESS + "mean": _join(self.mean),
            PREPROCESS + "std": _join(self.std),
            PREPROCESS + "crop_mode": self.crop_mode,
        }

    @classmethod
    def from_props(cls, props: dict[str, str], origin: str = "the model") -> "Preprocessing | None":
        """Parse the keys above; None if the model has none; UserError naming a bad key."""
        if not any(k.startswith(PREPROCESS) for k in props):
            return None

        def field(name: str, parse):
            key = PREPROCESS + name
            if key not in props:
                raise UserError(f"{origin}: metadata key {key} is missing (re-export the model)")
            try:
                return parse(props[key])
            except ValueError as exc:
                raise UserError(f"{origin}: metadata key {key}={props[key]!r} is invalid ({exc})") from None

        return cls(input_size=field("input_size", lambda v: _numbers(v, int, 3, positive=True)),
                   crop_pct=field("crop_pct", lambda v: _numbers(v, float, 1, positive=True)[0]),
                   interpolation=field("interpolation", str),
                   mean=field("mean", lambda v: _numbers(v, float, 3)),
                   std=field("std", lambda v: _numbers(v, float, 3, positive=True)),
                   crop_mode=props.get(PREPROCESS + "crop_mode", "center"),
                   source=props.get(PREPROCESS + "source", ""))


def model_props(name: str, random_weights: str, checkpoint: str | os.PathLike | None,
                preprocessing: Preprocessing) -> dict[str, str]:
    """Every key export writes. `random_weights`: "true", "false" or "partly" (a non-strict load)."""
    from lvvit_opt import __version__

    props = {PREFIX + "model": name, PREFIX + "random_weights": random_weights,
             PREFIX + "version": __version__}
    if checkpoint is not None:
        props[PREFIX + "checkpoint"] = os.path.basename(os.fspath(checkpoint))
    props.update(preprocessing.to_props())
    return props


def set_props(model, props: dict[str, str]) -> None:
    """Write `props` into an onnx.ModelProto's metadata_props, replacing keys of the same name."""
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    for key, value in kept + list(props.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


RANDOM_WEIGHTS = "RANDOM weights"  # every random-weights warning starts so (one per command: cli.output)
PLOT_CAVEAT = "RANDOM weights: timings are real, accuracy is meaningless"  # the subtitle of every plot


def random_weights_warning(reason: str) -> str:
    """The one wording of the random-weights caveat; `reason` says where it comes from."""
    return f"{RANDOM_WEIGHTS} ({reason}): graphs, timings and validation are real; accuracy is meaningless"


def random_weights_caveat(paths) -> str | None:
    """The warning for the first model among `paths` whose metadata says its weights are random
    (`lvvit_opt.random_weights` true or partly), else None. A file that is not an ONNX model we
    can read (an .om, a missing file) says nothing here: its own reader reports it."""
    for path in paths:
        if path is None or not os.fspath(path).lower().endswith(".onnx"):
            continue
        try:
            flag = read_props(path).get(PREFIX + "random_weights")
        except Exception:  # noqa: BLE001 - the verb's own reader gives the error
            continue
        if flag == "true":
            return random_weights_warning(f"{os.path.basename(os.fspath(path))} was exported without a checkpoint")
        if flag == "partly":
            return random_weights_warning(f"{os.path.basename(os.fspath(path))}: partly, a --non-strict load "
                                          "left tensors at their init")
    return None


def read_props(path: str | os.PathLike) -> dict[str, str]:
    """metadata_props of an ONNX file ({} for a file with none). Weights stay on disk."""
    from lvvit_opt.core.onnx_files import load_onnx

    return {p.key: p.value for p in load_onnx(path, weights=False).metadata_props}


def _join(values) -> str:
    return ",".join(repr(v) if isinstance(v, float) else str(v) for v in values)


def _numbers(text: str, kind, count: int, positive: bool = False) -> tuple:
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != count:
        raise ValueError(f"expected {count} comma-separated numbers")
    values = tuple(kind(p) for p in parts)
    if not all(math.isfinite(v) for v in values):
        raise ValueError("not a finite number")
    if positive and not all(v > 0 for v in values):
        raise ValueError("must be positive")
    return values
