#!/usr/bin/env python3
"""Benchmark `lvvit-opt tune` on lvvit_s (ort-cpu): default config vs tuned config, and tune's overhead.

Exports lvvit_s with a dynamic batch (random weights; or --model PATH) in a child process and
makes a folder of generated images, then runs tune in this process with --budget. Both figures
come from that one run:
  * default-config fps (batch 1, fp32, no passes, all cores) vs the tuned config's fps: the
    baseline is always among tune's finalists, so the two are measured interleaved (same rounds);
  * overhead = tune's wall time / the sum of the candidates' measuring time (gate/screen runs,
    warm-up and timed slots); target <= 1.3. Building candidates, sessions and reports is the rest.
The tuned-vs-default verdict is tune's own (measure.stats: paired rounds, 95% interval; when no
candidate is measurably faster, the default stays the tuned config and the ratio is 1.0).
Exit 1 when tuned < default or the overhead is over target. Under CPU contention absolute fps
inflate and deflate; read the ratio.

    python scripts/bench_tune.py [--budget 5m] [--model lvvit_s_dyn.onnx] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

TARGET_OVERHEAD = 1.3
SPACE = {"batch_sizes": [1, 4, 8, 16], "pass_sets": [[]], "precisions": ["fp32", "fp16"],
         "graph_opt": ["all", "disabled"]}


def export(model: str) -> None:
    """In a child: torch must not inflate (or share threads with) the measuring process."""
    code = ("import sys; from lvvit_opt.export import export_onnx; "
            "export_onnx(sys.argv[1], model='lvvit_s', dynamic_batch=True, log=lambda _m: None)")
    subprocess.run([sys.executable, "-c", code, model], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="5m", help="tune --budget (default 5m)")
    parser.add_argument("--model", default=None, help="a dynamic-batch lvvit_s ONNX (default: export one)")
    parser.add_argument("--images", type=int, default=16, help="generated images the gate runs on")
    parser.add_argument("--out", default=None, help="tune --out (default: a temporary folder)")
    args = parser.parse_args()

    from lvvit_opt.data.synthetic import make_image_dir
    from lvvit_opt.tune.search import TuneOptions, parse_budget, space_from_mapping, tune

    with tempfile.TemporaryDirectory(prefix="bench-tune-") as tmp:
        model = args.model or os.path.join(tmp, "lvvit_s_dyn.onnx")
        if not os.path.exists(model):
            start = time.perf_counter()
            export(model)
            print(f"exported lvvit_s (dynamic batch, RANDOM weights) in {time.perf_counter() - start:.0f} s")
        images = os.path.join(tmp, "images")
        make_image_dir(images, args.images)
        out = args.out or os.path.join(tmp, "tune")
        options = TuneOptions(model=model, inputs=images, out=out, budget_s=parse_budget(args.budget),
                              space=space_from_mapping(SPACE, "ort-cpu"), model_name="lvvit_s")
        start = time.perf_counter()
        report = tune(options, log=lambda m: print(f"  {m}", flush=True))
        wall = time.perf_counter() - start
    print(report.format_table())
    base, best = report.by_key(report.baseline), report.by_key(report.best)
    if best is None or base is None or not base.timing:
        print("no tuned or no default figure measured")
        return 1
    ratio = best.timing["fps"] / base.timing["fps"]
    overhead = wall / report.measured_s
    cores = os.cpu_count()
    print(f"\nmachine: {cores} cores (shared with other work: figures move with its load)")
    print(f"default (bs1, fp32, no passes): {base.timing['fps']:.1f} fps  [rounds "
          f"{min(base.timing['round_fps']):.1f}-{max(base.timing['round_fps']):.1f}]")
    print(f"tuned ({best.label()}): {best.timing['fps']:.1f} fps  [rounds "
          f"{min(best.timing['round_fps']):.1f}-{max(best.timing['round_fps']):.1f}]")
    print(f"tuned / default = {ratio:.2f}x fps (measured interleaved in the same run)")
    print(report.verdict.get("text", ""))  # measure.stats' judgement (interval, verdict), as tune made it
    for warning in report.warnings:
        print(f"warning: {warning}")
    print(f"overhead = tune wall {wall:.1f} s / candidates' measuring time {report.measured_s:.1f} s = "
          f"{overhead:.2f} (target <= {TARGET_OVERHEAD})")
    print(json.dumps({"default_fps": base.timing["fps"], "tuned_fps": best.timing["fps"], "ratio": ratio,
                      "verdict": report.verdict, "warnings": report.warnings, "tuned": best.key, "wall_s": wall, "measured_s": report.measured_s,
                      "overhead": overhead, "budget_s": options.budget_s, "cpu_count": cores}))
    return 0 if ratio >= 1.0 and overhead <= TARGET_OVERHEAD else 1


if __name__ == "__main__":
    sys.exit(main())
