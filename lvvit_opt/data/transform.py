"""The seed's ImageNet eval transform, reimplemented with PIL and numpy only.

The seed (`LV_Vit_preprocess.py`) runs timm's `transforms_imagenet_eval` with the
prefetcher layout (uint8 CHW, no normalisation), then normalises in float64 and casts
to float32::

    img = np.array(uint8_chw).astype(np.float32)
    img = (img - mean * 255) / (std * 255)          # float64 arithmetic
    img = img.astype(np.float32)

timm's transform is torchvision's `Resize(shorter side)` + `CenterCrop` on a PIL image,
i.e. `PIL.Image.resize` with the requested filter and `PIL.Image.crop`. We call the same
PIL operations with the same integer geometry, so the pixels are identical, and we do the
normalisation through a 256-entry table per channel that holds exactly the float32 value
the seed's float64 formula gives for each uint8 value. The result is byte-identical to
the seed's `.bin` files (tests compare against timm itself) without importing torch.
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos", "box", "hamming")

# The most pixels an image may declare: 2**27 (134 Mpx, ~400 MB decoded as RGB), far above the
# largest ImageNet image (~ 25 Mpx) and Pillow's own warning level (89 Mpx). A header declaring
# more is refused before decoding (a decompression bomb: a small file that decodes to gigabytes,
# and a truncated one decodes as a black image). It is reported like any unreadable image.
MAX_IMAGE_PIXELS = 1 << 27


@dataclass(frozen=True)
class EvalTransform:
    """Resize the shorter side to floor(img_size / crop_pct), center-crop img_size, normalise.

    Defaults are LV-ViT-S's (crop_pct 0.9 -> resize to 248, crop 224, bicubic).
    """

    img_size: int = 224
    crop_pct: float = 0.9
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self):
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}")
        if not 0 < self.crop_pct <= 1:  # also NaN
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        if self.img_size < 1:
            raise ValueError(f"img_size must be positive, got {self.img_size}")

    @property
    def resize_shorter_to(self) -> int:
        """timm: floor(img_size / crop_pct); 248 for 224 / 0.9."""
        return math.floor(self.img_size / self.crop_pct)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (3, self.img_size, self.img_size)

    @property
    def output_nbytes(self) -> int:
        return 3 * self.img_size * self.img_size * 4

    def memory_per_image(self) -> int:
        """Peak bytes one image needs (resized RGB up to 2:1, its copy, the float32 output
        twice): an estimate to refuse an impossible --img-size before decoding anything."""
        side = self.resize_shorter_to
        return 2 * (3 * side * side * 2) + 2 * self.output_nbytes

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after torchvision's shorter-side Resize (the long side is truncated)."""
        short, long = (width, height) if width <= height else (height, width)
        new_short = self.resize_shorter_to
        new_long = int(new_short * long / short)
        return (new_short, new_long) if width <= height else (new_long, new_short)

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """torchvision CenterCrop's box (left, top, right, bottom); Python's round() included."""
        top = int(round((height - self.img_size) / 2.0))
        left = int(round((width - self.img_size) / 2.0))
        return left, top, left + self.img_size, top + self.img_size

    @cached_property
    def normalize_table(self) -> np.ndarray:
        """(3, 256) float32: the seed's float64 normalisation of every uint8 value, per channel."""
        values = np.arange(256, dtype=np.float32)[None, :]
        mean = np.array([m * 255 for m in self.mean], dtype=np.float64)[:, None]
        std = np.array([s * 255 for s in self.std], dtype=np.float64)[:, None]
        return ((values - mean) / std).astype(np.float32)

    def load_crop(self, path: str | Path) -> np.ndarray:
        """Decode, convert to RGB, resize and crop: uint8 (img_size, img_size, 3)."""
        rgb = self._load_resized(path)
        return np.asarray(rgb.crop(self.crop_box(*rgb.size)), dtype=np.uint8)

    def source_box(self, width: int, height: int, src_size: tuple[int, int],
                   start: tuple[int, int]) -> tuple[int, int, int, int]:
        """The src_size (w, h) box of a resized image whose crop at `start` (x, y) is exactly crop_box's.

        What the host sends an AIPP model: AIPP crops img_size at `start` from it (lvvit_opt.ascend.aipp)."""
        left, top, _, _ = self.crop_box(width, height)
        left, top = left - start[0], top - start[1]
        if left < 0 or top < 0 or left + src_size[0] > width or top + src_size[1] > height:
            raise ValueError(f"a {src_size[0]}x{src_size[1]} source with the crop at {start} does not fit the "
                             f"resized {width}x{height} image")
        return left, top, left + src_size[0], top + src_size[1]

    def load_source(self, path: str | Path, src_size: tuple[int, int], start: tuple[int, int]) -> np.ndarray:
        """Decode, resize, cut the AIPP source square: uint8 (src_h, src_w, 3) (see source_box)."""
        rgb = self._load_resized(path)
        return np.asarray(rgb.crop(self.source_box(*rgb.size, src_size, start)), dtype=np.uint8)

    def _load_resized(self, path: str | Path):
        """Decode, convert to RGB and resize the shorter side: a PIL image."""
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                image = Image.open(path)
            except Image.DecompressionBombError as exc:  # Pillow's own guard, at twice the limit
                declared = re.search(r"\((\d+) pixels\)", str(exc))
                raise ImageTooLarge(f"declares {declared.group(1) if declared else 'more'} pixels, "
                                    f"{TOO_LARGE}") from None
        try:
            _refuse_bomb(image)
            image.load()  # decodes and, for a single-frame file opened by name, closes it
            rgb = image if image.mode == "RGB" else image.convert("RGB")
        except BaseException:
            image.close()
            raise
        if rgb is not image:
            image.close()
        width, height = rgb.size
        new_size = self.resized_size(width, height)
        if new_size != (width, height):
            rgb = rgb.resize(new_size, _pil_filter(self.interpolation))
        if new_size[0] < self.img_size or new_size[1] < self.img_size:  # only reachable for tiny crops
            raise ValueError(f"image too small after resize: {new_size}")
        return rgb

    def normalize(self, crop_hwc: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """uint8 HWC crop -> float32 CHW, exactly the seed's values. Writes into `out` if given."""
        if out is None:
            out = np.empty(self.output_shape, dtype=np.float32)
        table = self.normalize_table
        for channel in range(3):
            np.take(table[channel], crop_hwc[:, :, channel], out=out[channel])
        return out

    def __call__(self, path: str | Path) -> np.ndarray:
        """The whole transform: image file -> float32 (3, img_size, img_size)."""
        return self.normalize(self.load_crop(path))


@dataclass(frozen=True)
class AippSource:
    """The host side of static AIPP: decode, resize (the eval transform's), cut the `src` square whose
    centre crop AIPP takes; uint8 HWC RGB, not normalised. Its centre-cropped pixels are exactly the eval
    transform's crop (EvalTransform.source_box), so the chip's normalisation sees the float pipeline's pixels.
    `dtype`/`layout` are recorded with the preprocessing settings so that the output folder says what it holds."""

    base: EvalTransform
    dtype: str = "uint8"
    layout: str = "NHWC"

    @property
    def src(self) -> int:
        return self.base.resize_shorter_to

    @property
    def start(self) -> int:
        """AIPP's load_start_pos (torchvision CenterCrop's offset inside the square)."""
        return int(round((self.src - self.base.img_size) / 2.0))

    @property
    def img_size(self) -> int:  # what the info file's width/height hold: the size of the image sent
        return self.src

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (self.src, self.src, 3)

    @property
    def output_nbytes(self) -> int:
        return self.src * self.src * 3

    def memory_per_image(self) -> int:
        return self.base.memory_per_image()

    def __call__(self, path: str | Path) -> np.ndarray:
        return self.base.load_source(path, (self.src, self.src), (self.start, self.start))


TOO_LARGE = f"over the limit of {MAX_IMAGE_PIXELS} (2**27): a decompression bomb or too large to decode"


class ImageTooLarge(ValueError):
    """An image whose header declares more than MAX_IMAGE_PIXELS pixels."""


def _refuse_bomb(image) -> None:
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageTooLarge(f"declares {width}x{height} = {width * height} pixels, {TOO_LARGE}")


def _pil_filter(name: str) -> int:
    from PIL import Image

    return {
        "bicubic": Image.Resampling.BICUBIC,
        "bilinear": Image.Resampling.BILINEAR,
        "nearest": Image.Resampling.NEAREST,
        "lanczos": Image.Resampling.LANCZOS,
        "box": Image.Resampling.BOX,
        "hamming": Image.Resampling.HAMMING,
    }[name]


def transform_from_onnx(path: str | Path, *, img_size: int | None = None, crop_pct: float | None = None,
                        interpolation: str | None = None) -> EvalTransform | None:
    """The eval transform `lvvit-opt export` recorded in an ONNX model's metadata_props.

    Returns None when `path` is not an .onnx file (an .om carries no metadata) or the model
    has no preprocessing keys (exported elsewhere, or by an older lvvit-opt). Explicit
    arguments win over the recorded values: pass the user's flags, None when not given.
    Raises UserError when a recorded value is malformed or asks for a crop mode other than
    center. The keys are described in lvvit_opt.models.metadata.

    For `validate --inputs IMAGES` (lvvit_opt/verify/inputs.py `_read_images`, which today builds
    `EvalTransform(img_size=spec.shape[-1])`) and any verb that decodes images for a model:
        transform = transform_from_onnx(model_path, img_size=spec.shape[-1]) or EvalTransform(img_size=...)
        batch = np.stack([transform(image) for image in images])
    so that a CrossViT gets its 240 px crops and mean/std, lvvit_m/l crop 1.0, DeiT 0.875.
    """
    if Path(path).suffix.lower() != ".onnx":
        return None
    from lvvit_opt.core.errors import UserError, shown
    from lvvit_opt.models.metadata import Preprocessing, read_props

    recorded = Preprocessing.from_props(read_props(path), origin=str(path))
    if recorded is None:
        return None
    if recorded.crop_mode != "center":
        raise UserError(f"{shown(path)}: the model's preprocessing uses crop_mode {recorded.crop_mode!r}; only "
                        "center crops are implemented")
    try:
        return EvalTransform(img_size=img_size or recorded.input_size[1],
                             crop_pct=crop_pct if crop_pct is not None else recorded.crop_pct,
                             interpolation=interpolation or recorded.interpolation,
                             mean=recorded.mean, std=recorded.std)
    except ValueError as exc:
        raise UserError(f"{shown(path)}: preprocessing metadata: {exc}") from None


def eval_transform_for(model: str | Path | None, *, img_size: int | None = None, crop_pct: float | None = None,
                       interpolation: str | None = None) -> tuple[EvalTransform, str]:
    """The transform to feed `model`, and where it came from: the model's metadata with the
    explicit arguments on top, else LV-ViT-S's defaults with them on top. An .om carries no
    metadata: the ONNX it was compiled from is used when it lies beside it under the seed's
    naming (x.onnx for x.om or x_linux_<arch>.om)."""
    source = Path(model) if model is not None else None
    if source is not None and source.suffix.lower() == ".om":
        from lvvit_opt.runtime.om import source_onnx

        source = source_onnx(source)
    recorded = transform_from_onnx(source, img_size=img_size, crop_pct=crop_pct, interpolation=interpolation) \
        if source is not None and source.is_file() else None
    if recorded is not None:
        beside = f" (beside {Path(model).name})" if source != Path(model) else ""
        return recorded, f"model metadata of {source.name}{beside}"
    defaults = EvalTransform()
    try:
        transform = EvalTransform(img_size=img_size or defaults.img_size,
                                  crop_pct=crop_pct if crop_pct is not None else defaults.crop_pct,
                                  interpolation=interpolation or defaults.interpolation)
    except ValueError as exc:
        from lvvit_opt.core.errors import UserError

        raise UserError(str(exc)) from None
    return transform, "defaults (LV-ViT-S)"
