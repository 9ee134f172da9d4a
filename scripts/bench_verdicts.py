#!/usr/bin/env python3
"""How often `bench` claims a difference between two byte-identical models under load.

Copies one model to two paths and benches the pair --runs times with two CPU-bound processes
running beside it (on a 2-core machine: saturated), then counts the runs whose output claims a
difference. With this tree's bench, a claim is a verdict other than `no measurable difference`
(lvvit_opt.measure.stats). With --old-bench FILE (an earlier bench.py, e.g.
`git show <ref>:lvvit_opt/measure/bench.py > old_bench.py`), the same runs go through that
module instead, and a claim is what its table printed: a ratio bracket that excludes 1.0.
Target: at most 1 false claim in 20 runs (the issue's >= 19/20).

    python scripts/bench_verdicts.py [--runs 20] [--duration 2] [--old-bench old_bench.py] [--model M.onnx]
"""
from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "tests" / "data" / "speed" / "matmul.onnx"


def load_bench(path: str | None):
    if path is None:
        from lvvit_opt.measure import bench

        return bench
    spec = importlib.util.spec_from_file_location("old_bench", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def claim(result) -> str:
    """'' when the run claims no difference, else what it claimed."""
    judged = getattr(result, "judged", None)
    if judged is not None and result.comparison is not None:  # this tree: the stats verdict
        verdict = judged()
        return "" if verdict.verdict == "no measurable difference" else verdict.short()
    low, high = result.ratio_spread  # an older bench: the bracket it printed beside the ratio
    return f"{result.ratio_to_first:.3f}x [{low:.2f}-{high:.2f}]" if (low > 1.0 or high < 1.0) else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--duration", type=float, default=2.0, help="bench --duration of each run (s)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--old-bench", default=None, help="an earlier bench.py to judge instead of this tree's")
    parser.add_argument("--busy", type=int, default=2, help="CPU-bound processes beside the measurement")
    args = parser.parse_args()

    bench = load_bench(args.old_bench)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    claims = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-verdicts-") as tmp:
            pair = [str(Path(tmp) / "a.onnx"), str(Path(tmp) / "b.onnx")]
            for path in pair:
                shutil.copyfile(args.model, path)
            for run in range(args.runs):
                report = bench.bench_models(pair, duration=args.duration, rounds=args.rounds, warmup=0.2,
                                            threads=args.threads, log=lambda _m: None)
                said = claim(report.results[1])
                claims.append(said)
                print(f"run {run + 1:2d}: {report.results[1].ratio_to_first:.3f}x  "
                      f"{'FALSE CLAIM ' + said if said else 'no claim'}", flush=True)
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    false = sum(1 for c in claims if c)
    which = args.old_bench or "this tree's bench (measure.stats verdicts)"
    print(f"{which}: {false} false claim(s) in {args.runs} runs of two identical models "
          f"({Path(args.model).name}, {args.duration:g} s, {args.rounds} rounds, {args.busy} busy processes beside); "
          f"target <= {args.runs // 20}")
    return 0 if false <= args.runs // 20 else 1


if __name__ == "__main__":
    sys.exit(main())
