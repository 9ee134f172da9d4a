"""Static AIPP: the `--insert_op_conf` file that moves crop and normalisation onto the chip.

The config is written from the model's own recorded preprocessing (lvvit_opt.models.metadata):
the host resizes (bicubic, shorter side to floor(img_size / crop_pct)) and cuts a square of that
side, sent as uint8 NHWC RGB; AIPP crops img_size from it and normalises.

Documented (ATC AIPP guide, "数据类型转换"; real configs in tests/fixtures/ascend/aipp/, SOURCES.md):
  * per channel the conversion computes (pixel - mean_chn_i - min_chn_i) * var_reci_chn_i,
  * a Normalize(mean, std) applied after /255 is therefore min_chn_i = 255*mean_i,
    var_reci_chn_i = 1 / (255*std_i), mean_chn_i = 0 (ModelZoo SAM, VisionSDK OCR, msit 07_dynamic_aipp),
  * crop: load_start_pos_w/h + crop_size_w/h inside src_image_size_w/h (msit 07: 256 -> 224 at 16),
  * the input becomes uint8 NHWC of src_image_size; the output of AIPP is fp16 NCHW (ops-cv tiling test),
  * no resize on the 310/310P, and no static AIPP with a fully dynamic shape (--input_shape_range).
Assumed (not documented; what the CPU preview `aipp_numpy` / debug.layers models):
  * the parameters are held in fp16 and every step (subtract, multiply) rounds to fp16.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import numpy as np

from lvvit_opt.core.errors import UserError

INPUT_FORMAT = "RGB888_U8"
AIPP_MODE = "static"
# the options `atc --aipp` takes to override (or replace) the model's recorded preprocessing
OVERRIDE_OPTIONS = "--aipp-mean, --aipp-std, --aipp-src-size, --aipp-crop-size"
KEY_ORDER = ("aipp_mode", "related_input_rank", "input_format", "csc_switch", "rbuv_swap_switch",
             "src_image_size_w", "src_image_size_h", "crop", "load_start_pos_w", "load_start_pos_h",
             "crop_size_w", "crop_size_h", "mean_chn_0", "mean_chn_1", "mean_chn_2", "min_chn_0", "min_chn_1",
             "min_chn_2", "var_reci_chn_0", "var_reci_chn_1", "var_reci_chn_2")
FP16_MAX = 65504.0


@dataclass(frozen=True)
class AippConfig:
    """One static AIPP op for input 0: RGB888_U8 of src_size, crop, then the data-type conversion."""

    src_image_size_w: int
    src_image_size_h: int
    crop_size_w: int
    crop_size_h: int
    load_start_pos_w: int
    load_start_pos_h: int
    min_chn: tuple[float, float, float]
    var_reci_chn: tuple[float, float, float]
    mean_chn: tuple[int, int, int] = (0, 0, 0)  # an integer field (msit reads it with getint); we leave it 0

    def __post_init__(self):
        for name in ("src_image_size_w", "src_image_size_h", "crop_size_w", "crop_size_h"):
            if getattr(self, name) < 1:
                raise UserError(f"AIPP {name} {getattr(self, name)}: must be positive")
        if (self.load_start_pos_w < 0 or self.load_start_pos_h < 0
                or self.load_start_pos_w + self.crop_size_w > self.src_image_size_w
                or self.load_start_pos_h + self.crop_size_h > self.src_image_size_h):
            raise UserError(f"AIPP crop {self.crop_size_w}x{self.crop_size_h} at ({self.load_start_pos_w}, "
                            f"{self.load_start_pos_h}) does not fit the source {self.src_image_size_w}x"
                            f"{self.src_image_size_h}")
        values = self.min_chn + self.var_reci_chn + self.mean_chn
        if len(values) != 9 or not all(math.isfinite(v) for v in values):
            raise UserError("AIPP min_chn, var_reci_chn, mean_chn: three finite numbers each")
        if not all(isinstance(v, int) for v in self.mean_chn):
            raise UserError(f"AIPP mean_chn {self.mean_chn}: integers (atc's field is an integer)")
        if not all(0 <= v <= 255 for v in self.min_chn + self.mean_chn):
            raise UserError(f"AIPP min_chn {self.min_chn}: each must be in [0, 255] (255 x mean; a mean outside "
                            f"[0, 1] cannot be done by AIPP)")
        if not all(0 < abs(v) <= FP16_MAX for v in self.var_reci_chn):
            raise UserError(f"AIPP var_reci_chn {self.var_reci_chn}: each must be non-zero and within fp16 range")

    @property
    def crop(self) -> bool:
        return (self.crop_size_w, self.crop_size_h) != (self.src_image_size_w, self.src_image_size_h)

    def fields(self) -> dict[str, object]:
        """The atc keys in the order they are written (bools as atc's true/false)."""
        values: dict[str, object] = {
            "aipp_mode": AIPP_MODE, "related_input_rank": 0, "input_format": INPUT_FORMAT,
            "csc_switch": False, "rbuv_swap_switch": False,
            "src_image_size_w": self.src_image_size_w, "src_image_size_h": self.src_image_size_h,
            "crop": self.crop,
        }
        if self.crop:
            values.update(load_start_pos_w=self.load_start_pos_w, load_start_pos_h=self.load_start_pos_h,
                          crop_size_w=self.crop_size_w, crop_size_h=self.crop_size_h)
        for i in range(3):
            values[f"mean_chn_{i}"] = self.mean_chn[i]
        for i in range(3):
            values[f"min_chn_{i}"] = self.min_chn[i]
        for i in range(3):
            values[f"var_reci_chn_{i}"] = self.var_reci_chn[i]
        return values

    def text(self) -> str:
        """The `--insert_op_conf` file: `aipp_op { key : value ... }` (the VisionSDK samples' syntax)."""
        lines = ["aipp_op {"]
        for key, value in self.fields().items():
            lines.append(f"    {key} : {_format_value(value)}")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def input_shape(self, batch: int | None = None) -> list[int | None]:
        """The .om's input: uint8 NHWC of the source size."""
        return [batch, self.src_image_size_h, self.src_image_size_w, 3]

    def input_bytes(self, batch: int = 1) -> int:
        return batch * self.src_image_size_h * self.src_image_size_w * 3

    def to_dict(self) -> dict:
        data = {key: value for key, value in self.fields().items()}
        data["input"] = {"layout": "NHWC", "dtype": "uint8", "shape": self.input_shape(None)[1:],
                         "channel_order": "RGB"}
        return data


def _format_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def aipp_from_normalize(mean, std, *, src_size: tuple[int, int], crop_size: tuple[int, int],
                        start: tuple[int, int] | None = None) -> AippConfig:
    """Normalize(mean, std) after /255 on a crop of src_size: min_chn = 255*mean, var_reci = 1/(255*std).

    Sizes are (width, height); `start` defaults to torchvision CenterCrop's offset (Python round).
    """
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) != 3 or len(std) != 3:
        raise UserError("AIPP mean and std: three numbers each (R,G,B)")
    if not all(math.isfinite(s) and s > 0 for s in std):
        raise UserError(f"AIPP std {std}: each must be a positive number")
    if start is None:
        start = (center_offset(src_size[0], crop_size[0]), center_offset(src_size[1], crop_size[1]))
    return AippConfig(src_image_size_w=src_size[0], src_image_size_h=src_size[1], crop_size_w=crop_size[0],
                      crop_size_h=crop_size[1], load_start_pos_w=start[0], load_start_pos_h=start[1],
                      min_chn=tuple(255.0 * m for m in mean), var_reci_chn=tuple(1.0 / (255.0 * s) for s in std))


def center_offset(size: int, crop: int) -> int:
    """torchvision CenterCrop's offset along one side."""
    return int(round((size - crop) / 2.0))


def aipp_for_model(model_path: str | os.PathLike, *, mean=None, std=None, src_size: int | None = None,
                   crop_size: int | None = None) -> AippConfig:
    """The AIPP config from MODEL's recorded preprocessing; explicit values override it.

    Without recorded preprocessing every value must be given, else a one-line UserError naming the options.
    """
    from lvvit_opt.core.errors import shown
    from lvvit_opt.models.metadata import Preprocessing, read_props

    recorded = None
    if str(model_path).lower().endswith(".onnx"):
        recorded = Preprocessing.from_props(read_props(model_path), origin=str(model_path))
    if recorded is not None and recorded.crop_mode != "center":
        raise UserError(f"{shown(model_path)}: crop_mode {recorded.crop_mode!r}; AIPP here does center crops only")
    if recorded is None and None in (mean, std, crop_size):
        raise UserError(f"{shown(model_path)} records no preprocessing (not exported by lvvit-opt): give "
                        f"{OVERRIDE_OPTIONS} for --aipp")
    crop = crop_size or recorded.input_size[-1]
    if src_size is None:
        src_size = math.floor(crop / recorded.crop_pct) if recorded is not None else crop
    return aipp_from_normalize(mean or recorded.mean, std or recorded.std, src_size=(src_size, src_size),
                               crop_size=(crop, crop))


def parse_aipp_text(text: str) -> dict[str, str]:
    """The `key : value` pairs of an `aipp_op { ... }` file (real samples use both `key: v` and `key : v`).

    One op only; `#` comments dropped. Values stay text. UserError for a repeated key (atc refuses that:
    "The parameter var_reci_chn_0 can not be configed repeatedly").
    """
    body = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    match = re.search(r"aipp_op\s*\{(.*)\}", body, re.S)
    if not match:
        raise UserError("no aipp_op { ... } block")
    pairs: dict[str, str] = {}
    for line in match.group(1).splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise UserError(f"aipp line {line.strip()!r}: expected key : value")
        key = key.strip()
        if key in pairs:
            raise UserError(f"aipp key {key} is given twice")
        pairs[key] = value.strip()
    return pairs


def aipp_numpy(config: AippConfig, images_nhwc: np.ndarray) -> np.ndarray:
    """What the AIPP op computes, on the CPU: uint8 NHWC -> fp16 NCHW (crop, then fp16 arithmetic).

    The crop and the formula are documented; fp16 parameters and fp16 rounding of each step are assumed.
    """
    if images_nhwc.dtype != np.uint8 or images_nhwc.ndim != 4 or images_nhwc.shape[-1] != 3:
        raise UserError(f"AIPP input must be uint8 NHWC with 3 channels, got {images_nhwc.dtype} "
                        f"{tuple(images_nhwc.shape)}")
    y, x = config.load_start_pos_h, config.load_start_pos_w
    crop = images_nhwc[:, y:y + config.crop_size_h, x:x + config.crop_size_w, :].astype(np.float16)
    mean = np.asarray(config.mean_chn, dtype=np.float16) + np.asarray(config.min_chn, dtype=np.float16)
    out = (crop - mean.astype(np.float16)) * np.asarray(config.var_reci_chn, dtype=np.float16)
    return np.ascontiguousarray(out.astype(np.float16).transpose(0, 3, 1, 2))


def write_aipp_config(path: str | os.PathLike, config: AippConfig) -> str:
    """Write the config atomically; returns its text."""
    from lvvit_opt.core.fileio import write_text_atomic

    text = config.text()
    write_text_atomic(path, text)
    return text



def check_aipp_shapes(config: AippConfig, model_inputs, extra_args=()) -> None:
    """Refuse what atc documents AIPP cannot do: a fully dynamic shape, or a crop that is not the model's H x W."""
    for flag in ("--input_shape_range", "--dynamic_image_size", "--dynamic_dims"):
        if any(str(arg).startswith(flag) for arg in extra_args):
            raise UserError(f"--aipp: static AIPP cannot be combined with {flag} (a dynamic input shape); "
                            "compile without it, or without --aipp")
    if len(model_inputs) != 1:
        raise UserError(f"--aipp: the model has {len(model_inputs)} inputs; AIPP here feeds one image input")
    spec = model_inputs[0]
    dims = list(spec.shape or ())
    if len(dims) != 4 or not all(isinstance(d, int) for d in dims[1:]):
        raise UserError(f"--aipp: input {spec.name!r} has shape {spec.shape}: static AIPP cannot be combined with "
                        "a fully dynamic shape (only the batch may be dynamic; re-export with fixed C, H, W)")
    if dims[1] != 3 or (dims[2], dims[3]) != (config.crop_size_h, config.crop_size_w):
        raise UserError(f"--aipp: input {spec.name!r} is {dims[1:]} but the AIPP crop gives 3x{config.crop_size_h}x"
                        f"{config.crop_size_w} (pass --aipp-crop-size {dims[3]})")
