"""A small synthetic dataset in the ImageNet val layout, for tests, demos and benchmarks.

A flat directory of `ILSVRC2012_val_00000001.JPEG`-style files and a `val.txt` of
`<file name> <class index>` lines. Pixels are smooth random blobs (upsampled noise) so that
JPEG sizes and decode times resemble photographs more than white noise does.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from lvvit_opt.core.fileio import write_text_atomic

# typical ImageNet val sizes (width, height)
TYPICAL_SIZES = ((500, 375), (375, 500), (500, 333), (500, 400), (333, 500), (640, 480))


def val_name(index: int, suffix: str = ".JPEG") -> str:
    """ImageNet's val file name for a 1-based index."""
    return f"ILSVRC2012_val_{index:08d}{suffix}"


def synthetic_image(width: int, height: int, mode: str = "RGB", seed: int = 0):
    """A PIL image of smooth random colour blobs, converted to `mode`."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(max(2, height // 24), max(2, width // 24), 3), dtype=np.uint8)
    image = Image.fromarray(coarse, "RGB").resize((width, height), Image.Resampling.BILINEAR)
    noise = rng.integers(-12, 13, size=(height, width, 3))
    pixels = np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    return image if mode == "RGB" else image.convert(mode)


def make_image_dir(directory: str | os.PathLike, count: int, *, sizes: Sequence[tuple[int, int]] = TYPICAL_SIZES,
                   modes: Sequence[str] = ("RGB",), seed: int = 0, quality: int = 90,
                   start: int = 1) -> list[Path]:
    """Write `count` JPEGs named like ImageNet val (sizes and modes cycle); returns their paths.

    Mode "P" images are written as PNG (with a .png suffix), everything else as JPEG.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for offset in range(count):
        width, height = sizes[offset % len(sizes)]
        mode = modes[offset % len(modes)]
        suffix = ".png" if mode in ("P", "RGBA", "LA") else ".JPEG"
        path = directory / val_name(start + offset, suffix)
        image = synthetic_image(width, height, mode, seed=seed * 100003 + offset)
        if suffix == ".png":
            image.save(path)
        else:
            image.save(path, quality=quality)
        paths.append(path)
    return paths


def write_val_txt(path: str | os.PathLike, labels: Mapping[str, int]) -> Path:
    """Write `<file name> <label>` lines (in the mapping's order)."""
    write_text_atomic(path, "".join(f"{name} {label}\n" for name, label in labels.items()))
    return Path(path)
