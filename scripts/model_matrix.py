#!/usr/bin/env python3
"""The ViT family matrix: export -> softmax_transpose -> validate -> whitelist shapes, per model.

    .venv/bin/python scripts/model_matrix.py                       # the 8 family models, batch 1
    .venv/bin/python scripts/model_matrix.py --models deit_tiny_patch16_224 --batch-size 16

Prints one row per model: parameters, attention softmaxes found / wrapped / skipped (with
the reason), the Transpose input shapes the CANN whitelist needs, the max abs diff of the
rewritten graph against the exported one on onnxruntime, and export / apply seconds.
Weights are RANDOM (no checkpoints here): graphs, shapes and diffs are real, accuracy is
not measured. Heavy: 8 full exports; run it once, not in a loop.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def format_table(rows) -> str:
    header = ["model", "params", "softmax found", "wrapped", "skipped (reason)", "whitelist shapes",
              "max abs diff", "valid", "export s", "apply s", "preprocessing (metadata)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        skipped = "; ".join(f"{n} ({reason})" for reason, n in row.skip_reasons.items()) or "0"
        shapes = " ".join("(" + ",".join(map(str, s)) + ")" for s in row.whitelist_shapes) or "-"
        lines.append("| " + " | ".join([
            row.model, f"{row.parameters / 1e6:.1f} M", str(row.softmax_found), str(row.wrapped), skipped, shapes,
            f"{row.max_abs_diff:.2g}", "PASS" if row.validation_passed else "FAIL",
            f"{row.export_s:.1f}", f"{row.apply_s:.1f}", row.preprocessing]) + " |")
    return "\n".join(lines)


def main() -> int:
    from lvvit_opt.pipeline.family import FAMILY, check_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(FAMILY), help="comma-separated model names")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--json", dest="json_out", help="also write the rows as JSON")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="model_matrix_") as workdir:
        for name in [m for m in args.models.split(",") if m]:
            print(f"{name} ...", file=sys.stderr, flush=True)
            rows.append(check_model(name, workdir, batch_size=args.batch_size))
            for path in Path(workdir).glob("*.onnx"):  # keep the disk footprint to one model
                path.unlink()
    print(f"RANDOM weights; batch {args.batch_size}; {os.cpu_count()} CPU cores; "
          f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(format_table(rows))
    if args.json_out:
        from lvvit_opt.core.fileio import write_text_atomic

        write_text_atomic(args.json_out, json.dumps([r.to_dict() for r in rows], indent=2) + "\n")
    return 0 if all(r.validation_passed and r.whitelist_reported for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
