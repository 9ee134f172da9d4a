"""Scaling out: every chip of a card (one process per device) and a Ray cluster.

`devices`: `bench --device 0,1,2,3` and `eval --device ...` (local processes, one runner each);
`ray_engine`: `eval --engine ray` (Ray actors, one runner each; optional `ray` extra).
Shards of an image set (`--shard K/N`) and merging shard results live in `lvvit_opt.data.shard`.
"""
from .devices import parse_devices

__all__ = ["parse_devices"]
