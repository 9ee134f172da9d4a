#!/usr/bin/env python
"""Scale-out benchmark: the same eval as 1 process, as 2 shards in 2 processes, and on a local Ray.

1. Generates an ImageNet-like image set (lvvit_opt.data.synthetic) and exports lvvit_t with a
   dynamic batch, run at --batch (random weights: accuracy is meaningless, throughput is
   real). Dynamic, so that a shard's last partial batch is not padded to a full one.
2. Runs, in alternating rounds (best of each kept, since this machine is shared):
   - one process: `lvvit-opt eval --threads 1 --workers 1` (single-threaded baseline);
   - two shards: `lvvit-opt eval --shard 1/2` and `--shard 2/2` as two processes at once,
     each single-threaded, then `lvvit-opt merge` (checked equal to the baseline);
   - Ray: `evaluate_any(engine="ray")` on a local Ray started with 2 CPUs, 2 actors of 1 CPU.
3. Prints images/s and the ratio to one process for each. images/s is counted the way eval
   counts it: from the first image submitted to the last output, model load and start-up
   excluded (for two shards: all images over the longer of the two, as they run together).
   The end-to-end figure (process launch to exit) is printed beside it, and Ray's start-up
   (ray.init, then actors loading the model) is reported separately.

Targets on 2 cores: two shards >= 1.6x one single-threaded process; Ray within 15 % of the
two-shard figure once Ray has started. The load average is printed before and after: on a
busy machine both figures are distorted.

Usage: python scripts/bench_scale.py [--images 128] [--batch 8] [--onnx MODEL.onnx] [--rounds 2] [--skip-ray]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lvvit_opt.scale import evaluate_any
from lvvit_opt.data.images import default_workers
from lvvit_opt.data.synthetic import make_image_dir, write_val_txt

CLI = [sys.executable, "-m", "lvvit_opt"]


def _eval_command(model: str, data: Path, labels: Path, batch: int, out: Path, shard: str | None = None) -> list[str]:
    cmd = CLI + ["-q", "eval", model, "--data", str(data), "--labels", str(labels), "--threads", "1",
                 "--workers", "1", "--batch-size", str(batch), "--json", str(out)]
    return cmd + (["--shard", shard] if shard else [])


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[2:5])} failed: {proc.stderr[-2000:]}")


def _result(path: Path) -> dict:
    data = json.loads(path.read_text())
    return data.get("result", data)


def one_process(model: str, data: Path, labels: Path, batch: int, work: Path) -> dict:
    out = work / "one.json"
    start = time.perf_counter()
    _run(_eval_command(model, data, labels, batch, out))
    end_to_end = time.perf_counter() - start
    result = _result(out)
    return {"images_per_s": result["inferred"] / result["wall_s"], "end_to_end": result["inferred"] / end_to_end,
            "accuracy": result["accuracy"]}


def two_shards(model: str, data: Path, labels: Path, batch: int, work: Path) -> dict:
    outs = [work / f"shard{k}.json" for k in (1, 2)]
    start = time.perf_counter()
    procs = [subprocess.Popen(_eval_command(model, data, labels, batch, out, f"{k}/2"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for k, out in zip((1, 2), outs)]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"a shard failed: {err[-2000:]}")
    end_to_end = time.perf_counter() - start
    parts = [_result(out) for out in outs]
    merged_out = work / "merged.json"
    _run(CLI + ["-q", "merge", *map(str, outs), "--json", str(merged_out)])
    images = sum(p["inferred"] for p in parts)
    return {"images_per_s": images / max(p["wall_s"] for p in parts), "end_to_end": images / end_to_end,
            "accuracy": _result(merged_out)["accuracy"], "sizes": [p["inferred"] for p in parts]}


def on_ray(model: str, data: Path, labels: Path, batch: int) -> dict:
    result = evaluate_any(model, data, labels, engine="ray", ray_workers=2, runner_options={"threads": 1},
                          batch_size=batch)
    info = result.runner["engine"]
    return {"images_per_s": result.inferred / result.wall_s, "startup_s": info["startup_s"],
            "accuracy": result.accuracy.to_dict(), "sizes": [d["images"] for d in result.workers_detail]}


def _same_accuracy(a: dict, b: dict) -> bool:
    keys = ("evaluated", "top1_correct", "top5_correct")
    return all(a[k] == b[k] for k in keys)


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _load() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--onnx", default=None, help="an ONNX model (default: export lvvit_t, dynamic batch, random weights)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (best of each kept)")
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args(argv)
    print(f"CPUs available: {default_workers()}, load average (1, 5, 15 min): {_load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        work = Path(tmp)
        model, name = args.onnx, Path(args.onnx or "").name
        if model is None:
            name = f"lvvit_t (dynamic batch) at batch {args.batch}"
            from lvvit_opt.export import export_onnx

            print("exporting lvvit_t, dynamic batch (random weights: accuracy is meaningless) ...", flush=True)
            model = str(export_onnx(work / "lvvit_t_dyn.onnx", model="lvvit_t", batch_size=args.batch,
                                    dynamic_batch=True, log=lambda _m: None).path)
        paths = make_image_dir(work / "val", args.images, seed=2)
        labels = write_val_txt(work / "val.txt", {p.name: (31 * i) % 1000 for i, p in enumerate(paths)})

        ray_init_s = None
        if not args.skip_ray:
            try:
                import ray
            except ImportError:
                print("Ray is not installed (pip install 'lvvit-opt[ray]'): the Ray run is skipped")
                args.skip_ray = True
        if not args.skip_ray:
            start = time.perf_counter()
            ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
            ray_init_s = time.perf_counter() - start

        runs: dict[str, list[dict]] = {"one": [], "shards": [], "ray": []}
        for _round in range(args.rounds):  # alternate, so other load hits every configuration alike
            runs["one"].append(one_process(model, work / "val", labels, args.batch, work))
            runs["shards"].append(two_shards(model, work / "val", labels, args.batch, work))
            if not args.skip_ray:
                runs["ray"].append(on_ray(model, work / "val", labels, args.batch))
        if not args.skip_ray:
            ray.shutdown()

    base = max(r["images_per_s"] for r in runs["one"])
    base_e2e = max(r["end_to_end"] for r in runs["one"])
    shards = max(r["images_per_s"] for r in runs["shards"])
    reference = runs["one"][0]["accuracy"]
    print(f"\neval of {args.images} images, {name}, onnxruntime 1 thread per process, "
          f"inline decoding; best of {args.rounds} (images/s: first image submitted to last output)")
    print(f"  1 process:             {base:8.2f} images/s  (runs: {_fmt([r['images_per_s'] for r in runs['one']])}; "
          f"end to end incl. start-up {base_e2e:.2f})")
    print(f"  --shard x2, 2 procs:   {shards:8.2f} images/s  (runs: {_fmt([r['images_per_s'] for r in runs['shards']])}; "
          f"end to end {max(r['end_to_end'] for r in runs['shards']):.2f}; shard sizes {runs['shards'][0]['sizes']})"
          f"   ratio to 1 process: {shards / base:.2f}x (target >= 1.6x)")
    from lvvit_opt.measure.stats import compare

    one_rates = [r["images_per_s"] for r in runs["one"]]
    print("  " + compare([r["images_per_s"] for r in runs["shards"]], one_rates).sentence("--shard x2", "1 process"))
    same = all(_same_accuracy(r["accuracy"], reference) for r in runs["shards"])
    if runs["ray"]:
        ray_ips = max(r["images_per_s"] for r in runs["ray"])
        print(f"  --engine ray, 2 CPUs:  {ray_ips:8.2f} images/s  (runs: {_fmt([r['images_per_s'] for r in runs['ray']])}; "
              f"worker sizes {runs['ray'][0]['sizes']})   ratio to 1 process: {ray_ips / base:.2f}x; "
              f"to two shards: {ray_ips / shards:.2f} (target >= 0.85)")
        print("  " + compare([r["images_per_s"] for r in runs["ray"]], one_rates).sentence("--engine ray", "1 process"))
        print(f"  Ray start-up (not in images/s): ray.init {ray_init_s:.1f} s; actors loading the model "
              f"{_fmt([r['startup_s'] for r in runs['ray']])} s per run")
        same = same and all(_same_accuracy(r["accuracy"], reference) for r in runs["ray"])
    print(f"  top-1/top-5 counts equal to the 1-process run in every configuration: {same}")
    print(f"load average after (1, 5, 15 min): {_load()}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
