"""Scaling out: every chip of a card (one process per device) and a Ray cluster.

The scale layer composes bench and evaluate through their public functions and worker entry
points; they never import it. `bench_any` / `evaluate_any` are where the CLI's choice is made:
one process, `--device` (`devices`: local processes, one runner each) or `--engine ray`
(`ray_engine`: Ray actors, one runner each; optional `ray` extra).
Shards of an image set (`--shard K/N`) and merging shard results live in `lvvit_opt.data.shard`.
"""
from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from lvvit_opt.core.errors import UserError
from lvvit_opt.scale.devices import parse_devices

if TYPE_CHECKING:
    from lvvit_opt.measure.bench import BenchReport
    from lvvit_opt.measure.evaluate import EvalJob, EvalResult

__all__ = ["bench_any", "evaluate_any", "parse_devices"]


def bench_any(models: Sequence[str], batch_sizes: Sequence[int] | None = None, *,
              devices: Sequence[int] | None = None, **options: Any) -> BenchReport:
    """`lvvit_opt.measure.bench.bench_models(models, batch_sizes, **options)` in this process, or, with
    `devices`, every batch size on all of them at once (one process and runner each; each
    result's fps is then the measured card total, with every device in its details)."""
    from lvvit_opt.measure import bench  # looked up at call time, like the CLI always did
    from lvvit_opt.scale.devices import DeviceBench

    return bench.bench_models(models, batch_sizes, scale_out=DeviceBench(devices) if devices else None, **options)


def evaluate_any(model: str | os.PathLike, data_dir: str | os.PathLike,
                 labels: str | os.PathLike | Mapping[str, int], *,
                 devices: Sequence[int] | None = None, engine: str = "local", ray_address: str | None = None,
                 ray_workers: int | None = None, **options: Any) -> EvalResult:
    """`lvvit_opt.measure.evaluate.evaluate(model, data_dir, labels, **options)` in this process, or spread out:
    `devices`: one process and runner per device id (the images split evenly across them),
    predictions merged; `engine="ray"`: Ray actors at `ray_address` (None: a local Ray),
    `ray_workers` of them (default: as many as the cluster's CPUs, or NPUs for an .om, allow)."""
    from lvvit_opt.measure.evaluate import evaluate

    scale_out = None
    if engine != "local" or devices:
        scale_out = functools.partial(_scale_out_eval, devices, engine, ray_address, ray_workers)
    return evaluate(model, data_dir, labels, scale_out=scale_out, **options)


def _scale_out_eval(devices: Sequence[int] | None, engine: str, address: str | None, workers: int | None,
                    job: EvalJob) -> EvalResult:
    # checked once evaluate has read the labels and listed the images, in the order it always did
    if engine not in ("local", "ray"):
        raise UserError(f"unknown engine {engine!r} (local or ray)")
    if engine == "local":
        from lvvit_opt.scale.devices import run_eval_on_devices

        return run_eval_on_devices(job, devices)
    if devices:
        raise UserError("--device runs local processes; with --engine ray, Ray picks the chips (NPU resource)")
    if job.runner is not None:
        raise UserError("--engine ray opens its runners in the Ray workers; do not pass an open runner")
    from lvvit_opt.scale.ray_engine import run_eval_on_ray

    return run_eval_on_ray(job, address, workers)
