#!/usr/bin/env python3
"""Benchmark `lvvit-opt apply --passes softmax_transpose,cleanup --no-validate` against onnxsim.

Builds the lvvit_s batch-16 simplified graph (random weights; or --model PATH), then on
that same graph, in the same run:
  * as whole processes (start-up included): `python -m lvvit_opt apply ...` and
    `python -m onnxsim IN OUT`, each with its own peak RSS (os.wait4 per child);
  * in-process: `lvvit_opt.passes.apply_file(...)` and `onnxsim.simplify(...)`.
Prints wall times, the apply/onnxsim ratio and peak RSS against the targets
(apply <= 1.0 s and <= 600 MB; process ratio <= 0.35). Exit 1 when over a target.

    python scripts/bench_apply.py [--repeat 3] [--model lvvit_s_bs16.onnx]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

TARGET_APPLY_SECONDS = 1.0
TARGET_APPLY_RSS_MB = 600.0
TARGET_PROCESS_RATIO = 0.35


def run_child(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.read().decode()[-2000:]}")
    proc.stderr.close()
    return seconds, usage.ru_maxrss / 1024  # KiB on Linux


def build_graph(path: str) -> None:
    """Export in a child: torch must not inflate this process, whose RSS children inherit."""
    start = time.perf_counter()
    code = ("import sys; from lvvit_opt.export import export_onnx; "
            "export_onnx(sys.argv[1], model='lvvit_s', batch_size=16, simplify=True, log=lambda _m: None)")
    subprocess.run([sys.executable, "-c", code, path], check=True)
    print(f"built lvvit_s bs16 simplified graph in {time.perf_counter() - start:.1f} s "
          f"({os.path.getsize(path) / 1024**2:.0f} MB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (best wall time is reported)")
    parser.add_argument("--model", default=None, help="use this graph instead of exporting lvvit_s bs16")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or os.path.join(tmp, "lvvit_s_bs16.onnx")
        if not args.model:
            build_graph(model)
        out_apply, out_sim = os.path.join(tmp, "apply.onnx"), os.path.join(tmp, "sim.onnx")
        apply_cmd = [sys.executable, "-m", "lvvit_opt", "apply", model, "-o", out_apply,
                     "--passes", "softmax_transpose,cleanup", "--no-validate", "-q"]
        sim_cmd = [sys.executable, "-m", "onnxsim", model, out_sim]

        apply_runs = [run_child(apply_cmd) for _ in range(args.repeat)]
        sim_runs = [run_child(sim_cmd) for _ in range(args.repeat)]

        from lvvit_opt.passes import apply_file

        in_apply = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            result = apply_file(model, out_apply, "softmax_transpose,cleanup", validate=False)
            in_apply.append(time.perf_counter() - start)
        import onnx
        import onnxsim

        in_sim = []
        for _ in range(max(1, args.repeat - 1)):
            start = time.perf_counter()
            onnxsim.simplify(onnx.load(model))
            in_sim.append(time.perf_counter() - start)

    wrapped = result.passes[0].matched
    shapes = ", ".join(str(tuple(s)) for s in result.transpose_input_shapes())
    p_apply, p_sim = min(t for t, _ in apply_runs), min(t for t, _ in sim_runs)
    rss_apply, rss_sim = max(r for _, r in apply_runs), max(r for _, r in sim_runs)
    i_apply, i_sim = min(in_apply), min(in_sim)
    ratio = p_apply / p_sim
    print(f"graph: lvvit_s bs16, {wrapped} softmaxes wrapped, Transpose input shapes {shapes}; "
          f"{os.cpu_count()} cores, best of {args.repeat}")
    print(f"{'':24}{'apply':>10}{'onnxsim':>10}{'ratio':>8}")
    print(f"{'process wall (s)':24}{p_apply:>10.2f}{p_sim:>10.2f}{ratio:>8.2f}   target ratio <= {TARGET_PROCESS_RATIO}")
    print(f"{'in-process wall (s)':24}{i_apply:>10.2f}{i_sim:>10.2f}{i_apply / i_sim:>8.2f}   "
          f"target apply <= {TARGET_APPLY_SECONDS} s")
    print(f"{'process peak RSS (MB)':24}{rss_apply:>10.0f}{rss_sim:>10.0f}{rss_apply / rss_sim:>8.2f}   "
          f"target apply <= {TARGET_APPLY_RSS_MB:.0f} MB")
    ok = ratio <= TARGET_PROCESS_RATIO and i_apply <= TARGET_APPLY_SECONDS and rss_apply <= TARGET_APPLY_RSS_MB
    print("within targets" if ok else "OVER TARGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
