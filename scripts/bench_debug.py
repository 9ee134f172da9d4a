#!/usr/bin/env python3
"""Benchmark `lvvit-opt debug layers` against a whole-model `lvvit-opt validate`, same run.

Builds lvvit_s batch 1 (random weights; or --model PATH) and its softmax_transpose rewrite,
then runs, as whole processes (start-up included), alternating A B A B:
  * `lvvit-opt validate MODEL REWRITE` (its defaults: 4 random batches, outputs only);
  * `lvvit-opt debug layers MODEL REWRITE` (1 random batch, every intermediate tensor);
each with its own peak RSS (os.wait4 per child). Prints the best wall times, the
debug/validate ratio and peak RSS against the targets (ratio <= 5, peak < 3 GB);
exit 1 when over a target. Under CPU contention absolute times inflate; the ratio is the figure.

    python scripts/bench_debug.py [--repeat 2] [--model lvvit_s_bs1.onnx]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

TARGET_RATIO = 5.0
TARGET_RSS_MB = 3 * 1024.0


def run_measured(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB, the child's own, from wait4) and stdout of one child process."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        proc.returncode = code
        out.seek(0)
        err.seek(0)
        if code != 0:
            raise SystemExit(f"failed ({code}): {' '.join(cmd)}\n{err.read().decode()[-2000:]}")
        return seconds, usage.ru_maxrss / 1024, out.read().decode()  # KiB on Linux


def build(model: str, rewrite: str) -> None:
    """Export in a child (torch must not inflate this process), then the rewrite."""
    start = time.perf_counter()
    if not os.path.exists(model):
        code = ("import sys; from lvvit_opt.export import export_onnx; "
                "export_onnx(sys.argv[1], model='lvvit_s', batch_size=1, simplify=True, log=lambda _m: None)")
        subprocess.run([sys.executable, "-c", code, model], check=True)
    subprocess.run([sys.executable, "-m", "lvvit_opt", "apply", model, "-o", rewrite, "--passes",
                    "softmax_transpose", "--no-validate", "-q"], check=True, stdout=subprocess.DEVNULL)
    print(f"built lvvit_s bs1 (random weights) and its softmax_transpose rewrite in "
          f"{time.perf_counter() - start:.1f} s ({os.path.getsize(model) / 1024**2:.0f} MB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="runs of each, alternating (best is reported)")
    parser.add_argument("--model", default=None, help="use this bs1 graph instead of exporting lvvit_s")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or os.path.join(tmp, "lvvit_s_bs1.onnx")
        rewrite = os.path.join(tmp, "lvvit_s_bs1_opt.onnx")
        build(model, rewrite)
        report = os.path.join(tmp, "debug.json")
        validate_cmd = [sys.executable, "-m", "lvvit_opt", "validate", model, rewrite]
        debug_cmd = [sys.executable, "-m", "lvvit_opt", "debug", "layers", model, rewrite, "--json", report]
        validate_runs, debug_runs = [], []
        for _ in range(args.repeat):
            validate_runs.append(run_measured(validate_cmd))
            debug_runs.append(run_measured(debug_cmd))
        result = json.load(open(report))["result"]
    v_time, v_rss = min(r[0] for r in validate_runs), max(r[1] for r in validate_runs)
    d_time, d_rss = min(r[0] for r in debug_runs), max(r[1] for r in debug_runs)
    ratio = d_time / v_time
    # the ratio's interval from the paired (alternating) runs, through the one statistics module:
    # a time ratio debug/validate is the speed ratio validate/debug
    from lvvit_opt.measure.stats import compare

    paired = compare([1 / r[0] for r in validate_runs], [1 / r[0] for r in debug_runs])
    interval = (f"[{paired.low:.2f}-{paired.high:.2f}], {paired.rounds} paired runs, {paired.method}"
                if paired.low > 0 and paired.high < float("inf") else "no interval (one run)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f} (absolute times inflate under load)")
    print(f"validate (4 random batches, outputs only): {v_time:6.2f} s  peak RSS {v_rss:7.0f} MB")
    print(f"debug layers ({result['tensors_compared']} tensors, {result['matched_through']} matched through "
          f"Transposes; first_divergence={'null' if result['first_divergence'] is None else 'FOUND'}): "
          f"{d_time:6.2f} s  peak RSS {d_rss:7.0f} MB")
    print(f"ratio debug/validate: {ratio:.2f}x best of each, {paired.ratio:.2f}x {interval} "
          f"(target <= {TARGET_RATIO:.0f}x{'; the target lies inside the interval: not settled' if paired.low <= TARGET_RATIO <= paired.high else ''}); "
          f"debug peak RSS {d_rss / 1024:.2f} GB (target < {TARGET_RSS_MB / 1024:.0f} GB)")
    ok = ratio <= TARGET_RATIO and d_rss < TARGET_RSS_MB and result["first_divergence"] is None
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
