"""Measuring a deployment in one process: throughput and latency (`bench`), its reports
(`report`), top-1/top-5 on an image set (`evaluate`). Each exposes a per-device worker entry
point that lvvit_opt.scale composes; nothing here imports scale."""
