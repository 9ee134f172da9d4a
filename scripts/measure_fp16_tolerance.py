"""Measure how far honest fp16 drifts from fp32, tensor by tensor, to choose the fp16 tolerance.

For each model (RANDOM seeded weights: no checkpoint is available offline), export batch 1,
build the true-fp16 preview (debug layers --fp16, force_fp16) and compare every tensor with
fp32 on two kinds of input: seeded standard-normal noise, and an image-like input (a
synthetic picture: smooth gradients, edges and texture in [0, 255], ImageNet-normalised; no
image data set is available offline). Prints, per model and input, the distribution of each
metric over all tensors (median, p99, worst) as a Markdown table, then the worst over all.

    python scripts/measure_fp16_tolerance.py [--models lvvit_s,vit_tiny_patch16_224,cait_xxs24_224]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

METRICS = ("cosine", "range_rel", "max_rel", "mean_rel", "rmse")


def image_like(shape, seed: int = 0) -> np.ndarray:
    """A synthetic natural-statistics image batch, ImageNet-normalised (float32, NCHW)."""
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    images = []
    for _ in range(n):
        channels = []
        for k in range(c):
            base = 128 + 80 * np.sin(2 * np.pi * (xx * rng.uniform(0.5, 2) + yy * rng.uniform(0.5, 2)) + k)
            box = ((xx > rng.uniform(0.1, 0.5)) & (xx < rng.uniform(0.6, 0.9)) &
                   (yy > rng.uniform(0.1, 0.5)) & (yy < rng.uniform(0.6, 0.9))) * rng.uniform(-60, 60)
            channels.append(np.clip(base + box + rng.normal(0, 12, (h, w)), 0, 255))
        images.append(np.stack(channels))
    pixels = np.stack(images) / 255.0
    mean = np.array([0.485, 0.456, 0.406])[:c].reshape(1, c, 1, 1)
    std = np.array([0.229, 0.224, 0.225])[:c].reshape(1, c, 1, 1)
    return ((pixels - mean) / std).astype(np.float32)


def measure(model_path: str, inputs) -> dict[str, np.ndarray]:
    from lvvit_opt.debug.layers import compare_layers
    from lvvit_opt.verify.golden import Tolerance

    off = Tolerance(atol=None, rtol=None, min_cosine=None)  # measure, do not judge
    report = compare_layers(model_path, fp16=True, inputs=inputs, tolerance=off)
    primary = [r.comparison for r in report.results if r.match.primary]
    # left out: tensors fp16 cannot hold (Inf, or more than 0.1% of the values below its smallest
    # normal going to 0): not rounding noise, the errors the tolerance must catch; counted in the table
    honest = [c for c in primary if c.overflow == 0 and c.nonfinite_candidate == 0
              and c.underflow <= 1e-3 * int(np.prod(c.shape))]
    values = {m: np.array([getattr(c, m) for c in honest]) for m in METRICS}
    values["left_out"] = len(primary) - len(honest)
    return values


def row(label: str, values: dict[str, np.ndarray]) -> str:
    cos = values["cosine"]
    cells = [f"{np.median(cos):.7f} / {np.percentile(cos, 1):.7f} / {cos.min():.7f}"]
    for m in METRICS[1:]:
        v = values[m]
        cells.append(f"{np.median(v):.2g} / {np.percentile(v, 99):.2g} / {v.max():.2g}")
    return f"| {label} | {len(cos)} | {values['left_out']} | " + " | ".join(cells) + " |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lvvit_s,vit_tiny_patch16_224,cait_xxs24_224")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from lvvit_opt.export import export_onnx

    print("| model, input | tensors | left out (overflow/underflow) | cosine median / p1 / worst | range_rel median / p99 / worst "
          "| max_rel median / p99 / worst | mean_rel median / p99 / worst | rmse median / p99 / worst |")
    print("|---|---|---|---|---|---|---|---|")
    everything: dict[str, list] = {m: [] for m in METRICS}
    left_out = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            path = os.path.join(tmp, f"{name}.onnx")
            export_onnx(path, model=name, batch_size=1, seed=args.seed, log=lambda _m: None)
            import onnx

            dims = [d.dim_value for d in onnx.load(path, load_external_data=False).graph.input[0].type.tensor_type.shape.dim]
            image = os.path.join(tmp, f"{name}_image.npy")
            np.save(image, image_like(dims, args.seed))
            for label, inputs in (("random", 1), ("image-like", image)):
                values = measure(path, inputs)
                print(row(f"{name}, {label}", values), flush=True)
                for m in METRICS:
                    everything[m].append(values[m])
                left_out += values["left_out"]
    print(row("all", {**{m: np.concatenate(v) for m, v in everything.items()}, "left_out": left_out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
