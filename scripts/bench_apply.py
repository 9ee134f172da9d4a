#!/usr/bin/env python3
"""Benchmark `lvvit-opt apply --passes softmax_transpose,cleanup --no-validate` against onnxsim.

Builds the lvvit_s batch-16 simplified graph (random weights; or --model PATH), then on
that same graph, in the same run:
  * as whole processes (start-up included): `python -m lvvit_opt apply ...` and
    `python -m onnxsim IN OUT`, each with its own peak RSS (os.wait4 per child);
  * in-process: `lvvit_opt.passes.apply_file(...)` and `onnxsim.simplify(...)`.
Prints wall times, the apply/onnxsim ratio and peak RSS against the targets
(apply <= 1.0 s and <= 600 MB; process ratio <= 0.35). Exit 1 when over a target.

Then the memory bound of issue 20: peak RSS of `apply` with the seed recipe
(fix_shapes,fold_constants,softmax_transpose) above the bare process (python with onnx and
onnxruntime imported), divided by the model file size, on lvvit_s bs16 and on a
timm vit_tiny_patch16_224 dynamo (opset 18, dynamic batch) export fixed to batch 4, with
apply/onnxsim wall ratio for each (target: RSS/model <= 2.0, passes with --no-validate; the
same with apply's default validation, two onnxruntime sessions run one after the other, is
printed beside it as '+valid.').

    python scripts/bench_apply.py [--repeat 3] [--model lvvit_s_bs16.onnx] [--skip-dynamo]
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
TARGET_RSS_PER_MODEL = 2.0
SEED_RECIPE = "fix_shapes,fold_constants,softmax_transpose"


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


def build_dynamo_graph(path: str) -> None:
    """timm vit_tiny_patch16_224 (random weights) through torch.onnx.export(dynamo=True), dynamic batch."""
    code = ("import sys, torch, timm; m = timm.create_model('vit_tiny_patch16_224', pretrained=False).eval(); "
            "torch.onnx.export(m, (torch.randn(2, 3, 224, 224),), sys.argv[1], dynamo=True, opset_version=18, "
            "dynamic_shapes=({0: torch.export.Dim('batch', min=1, max=64)},), verbose=False, external_data=False)")
    subprocess.run([sys.executable, "-c", code, path], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def memory_rows(label: str, model: str, batch: int, tmp: str, bare_mb: float) -> tuple[str, bool]:
    """One line: seed-recipe apply RSS above the bare process / model size (passes only, the
    target; and with apply's default validation on onnxruntime, reported), apply/onnxsim wall."""
    out = os.path.join(tmp, f"{label}_seed.onnx")
    apply = [sys.executable, "-m", "lvvit_opt", "apply", model, "-o", out, "--passes", SEED_RECIPE,
             "--batch-size", str(batch), "-q"]
    seconds, rss = run_child(apply + ["--no-validate"])
    _, validated_rss = run_child(apply)
    sim_seconds, sim_rss = run_child([sys.executable, "-m", "onnxsim", model, os.path.join(tmp, f"{label}_sim.onnx")])
    size_mb = os.path.getsize(model) / 1024**2
    ratio = (rss - bare_mb) / size_mb
    ok = ratio <= TARGET_RSS_PER_MODEL
    return (f"{label:28}{size_mb:>8.1f}{rss:>9.0f}{ratio:>9.2f}{(validated_rss - bare_mb) / size_mb:>9.2f}"
            f"{seconds:>9.2f}{sim_seconds:>9.2f}{seconds / sim_seconds:>8.2f}  {'ok' if ok else 'OVER'}"), ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (best wall time is reported)")
    parser.add_argument("--model", default=None, help="use this graph instead of exporting lvvit_s bs16")
    parser.add_argument("--skip-dynamo", action="store_true", help="skip the dynamo vit_tiny memory row")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or os.path.join(tmp, "lvvit_s_bs16.onnx")
        if not args.model:
            build_graph(model)
        out_apply, out_sim = os.path.join(tmp, "apply.onnx"), os.path.join(tmp, "sim.onnx")
        apply_cmd = [sys.executable, "-m", "lvvit_opt", "apply", model, "-o", out_apply,
                     "--passes", "softmax_transpose,cleanup", "--no-validate", "-q"]
        sim_cmd = [sys.executable, "-m", "onnxsim", model, out_sim]

        apply_runs, sim_runs = [], []
        for _ in range(args.repeat):  # alternating: paired runs for the ratio's interval
            apply_runs.append(run_child(apply_cmd))
            sim_runs.append(run_child(sim_cmd))
        # children before anything heavy is imported here: a forked child's peak RSS starts at ours
        _, bare_mb = run_child([sys.executable, "-c", "import onnx, onnxruntime"])
        rows = [memory_rows("lvvit_s bs16", model, 16, tmp, bare_mb)]
        if not args.skip_dynamo:
            dynamo = os.path.join(tmp, "vit_tiny_dynamo18_dyn.onnx")
            build_dynamo_graph(dynamo)
            rows.append(memory_rows("vit_tiny dynamo18 dyn -> bs4", dynamo, 4, tmp, bare_mb))

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
    # the interval of apply/onnxsim from the paired runs, through the one statistics module (a time
    # ratio apply/onnxsim is the speed ratio onnxsim/apply)
    from lvvit_opt.measure.stats import compare

    paired = compare([1 / t for t, _ in sim_runs], [1 / t for t, _ in apply_runs])
    interval = (f"{paired.ratio:.2f}x [{paired.low:.2f}-{paired.high:.2f}] over {paired.rounds} paired runs "
                f"({paired.method})" if paired.low > 0 and paired.high < float("inf") else "no interval (one run)")
    print(f"graph: lvvit_s bs16, {wrapped} softmaxes wrapped, Transpose input shapes {shapes}; "
          f"{os.cpu_count()} cores, best of {args.repeat}")
    print(f"{'':24}{'apply':>10}{'onnxsim':>10}{'ratio':>8}")
    print(f"{'process wall (s)':24}{p_apply:>10.2f}{p_sim:>10.2f}{ratio:>8.2f}   target ratio <= {TARGET_PROCESS_RATIO}; "
          f"paired: {interval}"
          + ("; the target lies inside the interval: not settled" if paired.low <= TARGET_PROCESS_RATIO <= paired.high
             else ""))
    print(f"{'in-process wall (s)':24}{i_apply:>10.2f}{i_sim:>10.2f}{i_apply / i_sim:>8.2f}   "
          f"target apply <= {TARGET_APPLY_SECONDS} s")
    print(f"{'process peak RSS (MB)':24}{rss_apply:>10.0f}{rss_sim:>10.0f}{rss_apply / rss_sim:>8.2f}   "
          f"target apply <= {TARGET_APPLY_RSS_MB:.0f} MB")
    ok = ratio <= TARGET_PROCESS_RATIO and i_apply <= TARGET_APPLY_SECONDS and rss_apply <= TARGET_APPLY_RSS_MB
    print(f"\nseed recipe ({SEED_RECIPE}, --no-validate); bare process (onnx + onnxruntime imported) "
          f"{bare_mb:.0f} MB; target (RSS - bare) / model <= {TARGET_RSS_PER_MODEL}")
    print(f"{'graph':28}{'model MB':>8}{'RSS MB':>9}{'RSS/mdl':>9}{'+valid.':>9}{'apply s':>9}{'sim s':>9}"
          f"{'ratio':>8}")
    for line, row_ok in rows:
        print(line)
        ok = ok and row_ok
    print("within targets" if ok else "OVER TARGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
