#!/usr/bin/env python3
"""Regenerate golden/: the tiny LV-ViT config's weights, a seeded input batch, torch's
outputs and the simplified batch-2 ONNX that pass tests compare onnxruntime runs against.

    python scripts/make_golden.py [--out golden]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from lvvit_opt.models.checkpoint import save_checkpoint
from lvvit_opt.export import export_onnx, seeded_input
from lvvit_opt.models.model import create_model

MODEL = "lvvit_golden"
BATCH = 2
SEED = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "golden"))
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)

    model = create_model(MODEL, seed=SEED)
    # Random BN statistics so the stem's BatchNorms are not identities.
    generator = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    weights = out / f"{MODEL}.pth"
    save_checkpoint(model, weights, wrapper=None)

    image = seeded_input(BATCH, 224, SEED)
    with torch.no_grad():
        features = model(torch.from_numpy(image)).numpy()
    np.savez(out / f"{MODEL}.npz", image=image, features=features)
    export_onnx(out / f"{MODEL}.onnx", model=MODEL, checkpoint=str(weights), batch_size=BATCH, seed=SEED)
    print(f"golden data written to {out}")


if __name__ == "__main__":
    main()
