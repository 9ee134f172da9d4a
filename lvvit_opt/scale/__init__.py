"""Scaling out: every chip of a card (one process per device) and a Ray cluster.

The scale layer composes bench and evaluate through their public functions and worker entry
points; they never import it. `bench_any` / `evaluate_any` are where the CLI's choice is made:
one process, `--device` (`devices`: local processes, one runner each) or `--engine ray`
(`ray_engine`: Ray actors, one runner each; optional `ray` extra).
Shards of an image set (`--shard K/N`) and merging shard results live in `lvvit_opt.data.shard`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from .devices import parse_devices

if TYPE_CHECKING:
    from ..bench import BenchReport

__all__ = ["bench_any", "parse_devices"]


def bench_any(models: Sequence[str], batch_sizes: Sequence[int] | None = None, *,
              devices: Sequence[int] | None = None, **options: Any) -> BenchReport:
    """`lvvit_opt.bench.bench_models(models, batch_sizes, **options)` in this process, or, with
    `devices`, every batch size on all of them at once (one process and runner each; each
    result's fps is then the measured card total, with every device in its details)."""
    from .. import bench  # looked up at call time, like the CLI always did
    from .devices import DeviceBench

    return bench.bench_models(models, batch_sizes, scale_out=DeviceBench(devices) if devices else None, **options)
