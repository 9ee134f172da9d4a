#!/usr/bin/env python3
"""fp32 against INT8 (onnxruntime static QDQ, `lvvit-opt quantize --target ort-cpu`) on this CPU.

For each batch size: export lvvit_s (RANDOM weights, lvvit_opt.export; or --model NAME), quantize
it with `lvvit_opt.quantize.run.quantize` (calibration on seeded random batches, the gate and the
rollback as the verb runs them), then time fp32 and INT8 in interleaved rounds in one process
(`lvvit_opt.measure.bench.bench_models`) and print the INT8/fp32 throughput ratio with a 95%
paired interval over the rounds (log-ratio t interval). A ratio whose interval holds 1.0 is
reported as "no measurable difference".

    python scripts/bench_int8.py [--model lvvit_s] [--batch-sizes 1 16] [--rounds 7] [--seconds 21]
                                 [--threads N] [--work DIR]

Random weights: the speed is real, the accuracy figures are optimistic (a trained ViT has
outlier channels a random init lacks).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lvvit_s")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=21.0, help="timed seconds per model and batch (all rounds)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: its own)")
    parser.add_argument("--calib-batches", type=int, default=2)
    parser.add_argument("--work", default=None, help="folder for the exports and INT8 models (default: a temp dir)")
    args = parser.parse_args(argv)

    from lvvit_opt.export import export_onnx
    from lvvit_opt.measure.bench import bench_models
    from lvvit_opt.measure.stats import compare
    from lvvit_opt.quantize.run import quantize

    work = Path(args.work or tempfile.mkdtemp(prefix="bench_int8_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpu(s); "
          f"threads {args.threads or 'onnxruntime default'}; {args.rounds} rounds, {args.seconds:g} s per model")
    rows = []
    for batch in args.batch_sizes:
        fp32 = work / f"{args.model}_bs{batch}.onnx"
        if not fp32.is_file():
            export_onnx(fp32, model=args.model, batch_size=batch, log=lambda _m: None)
        report = quantize(fp32, args.calib_batches, work / f"q_bs{batch}", "ort-cpu", bench_seconds=0)
        if not report.passed:
            print(f"bs{batch}: the INT8 model failed the gate even rolled back: {report.rollback.before.line()}")
            rows.append((batch, None))
            continue
        int8 = report.outputs["model"]
        gate = report.rollback.after.line()
        kept = len(report.kept_float)
        bench = bench_models([str(fp32), int8], duration=args.seconds, rounds=args.rounds, warmup=2.0,
                             threads=args.threads, validate=False)
        base, cand = bench.results
        judged = (compare(cand.round_rates, base.round_rates) if cand.round_rates and base.round_rates
                  else compare(cand.round_fps, base.round_fps))  # measure.stats: the one verdict
        ratio, lo, hi, verdict = judged.ratio, judged.low, judged.high, judged.verdict
        rows.append((batch, (base.fps, cand.fps, ratio, lo, hi, verdict, gate, kept)))
        print(f"bs{batch}: fp32 {base.fps:.1f} img/s, INT8 {cand.fps:.1f} img/s, INT8/fp32 {ratio:.2f}x "
              f"(95% paired interval {lo:.2f}..{hi:.2f}): {verdict}; gate {gate}; {kept} layer(s) rolled back",
              flush=True)
    print("\n| batch | fp32 img/s | INT8 img/s | INT8/fp32 (95% interval) | verdict |")
    print("|---|---|---|---|---|")
    for batch, row in rows:
        if row is None:
            print(f"| {batch} | - | - | - | gate failed |")
        else:
            print(f"| {batch} | {row[0]:.1f} | {row[1]:.1f} | {row[2]:.2f}x ({row[3]:.2f}..{row[4]:.2f}) | {row[5]} |")
    print("RANDOM weights: speed is real; the gate's agreement figures are optimistic.")
    return 0 if all(row is not None for _, row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
