#!/usr/bin/env python3
"""Benchmark `lvvit-opt export --model lvvit_s --batch-size 16` (with onnxsim).

Runs the real CLI as a child process, so start-up, torch import, tracing, onnxsim,
verification and the write are all counted. Prints wall seconds and the child's peak RSS
against the targets (15 s, 2 GB on a 2-core machine).

    python scripts/bench_export.py [--repeat 1]
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

TARGET_SECONDS = 15.0
TARGET_RSS_GB = 2.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs to take (best wall time is reported)")
    args = parser.parse_args()
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "lvvit_s_bs16.onnx")
        cmd = [sys.executable, "-m", "lvvit_opt", "export", "--model", "lvvit_s", "--batch-size", "16", "-o", out]
        for _ in range(args.repeat):
            start = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times.append(time.perf_counter() - start)
            os.remove(out)
    # ru_maxrss of children is the peak of the largest child (KiB on Linux).
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    best = min(times)
    print(f"export lvvit_s bs16 (+onnxsim, +verification), {os.cpu_count()} cores")
    print(f"  wall time : {best:.2f} s (runs: {', '.join(f'{t:.2f}' for t in times)}; target <= {TARGET_SECONDS:g} s)")
    print(f"  peak RSS  : {peak_gb:.2f} GB (target <= {TARGET_RSS_GB:g} GB)")
    ok = best <= TARGET_SECONDS and peak_gb <= TARGET_RSS_GB
    print(f"  {'within target' if ok else 'OVER TARGET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
