"""Read what ais_bench (ais_infer, `ait/msit benchmark`) reports: its console summary and summary JSON.

Console, one block per device (three wordings of the throughput line exist in the wild):

    [INFO] -----------------Performance Summary------------------
    [INFO] H2D_latency (ms): min = ..., max = ..., mean = ..., median = ..., percentile(99%) = ...   (optional)
    [INFO] NPU_compute_time (ms): min = 2.456, max = 2.456, mean = 2.456, median = 2.456, percentile(99%) = 2.456
    [INFO] throughput 1000*batchsize.mean(1)/NPU_compute_time.mean(2.456): 407.166       (msit / ait)
    [INFO] throughput 1000*batchsize(16)/NPU_compute_time.mean(21.94): 729.25            (ais_infer, 2022)
    [INFO] throughput (1000*batchsize/NPU_compute_time): 171.569                         (ais_infer, early 2022)

JSON (`--output DIR` writes `DIR/<timestamp>_summary.json`; ais_infer wrote `DIR/<timestamp>/sumary.json`):
`NPU_compute_time`, `H2D_latency`, `D2H_latency` as {min, max, mean, median, percentile(99%)[, count]} and
`throughput`. One ait release spells the percentile key with 36 spaces before `)`; any `percentile(` key is
accepted. Times are milliseconds; throughput is 1000 * batch / mean NPU_compute_time (images/s).
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from lvvit_opt.core.errors import UserError

_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_STATS = re.compile(rf"(H2D_latency|NPU_compute_time|D2H_latency)\s*\(ms\)\s*:\s*min\s*=\s*{_NUM},\s*max\s*=\s*{_NUM},"
                    rf"\s*mean\s*=\s*{_NUM},\s*median\s*=\s*{_NUM},\s*percentile\((\d+)%\)\s*=\s*{_NUM}")
_THROUGHPUT = re.compile(rf"throughput\s*\(?1000\*batchsize(?:\.mean)?(?:\({_NUM}\))?/NPU_compute_time"
                         rf"(?:\.mean\([^)]*\))?\)?\s*:\s*{_NUM}")
_BLOCK_START = "Performance Summary"


@dataclass(frozen=True)
class TimeStats:
    """Milliseconds: min, max, mean, median and the percentile ais_bench prints (99 %)."""

    min: float
    max: float
    mean: float
    median: float
    percentile: float
    percentile_rank: int = 99
    count: int | None = None


@dataclass(frozen=True)
class AisBenchSummary:
    npu_compute_time: TimeStats
    throughput: float  # images (samples) per second, as ais_bench computed it
    batch_size: float | None = None  # from the throughput line when printed; None in the JSON
    h2d_latency: TimeStats | None = None
    d2h_latency: TimeStats | None = None

    @property
    def fps_from_mean(self) -> float | None:
        """1000 * batch / mean NPU_compute_time: recomputed, to cross-check `throughput`."""
        if not self.batch_size or self.npu_compute_time.mean <= 0:
            return None
        return 1000.0 * self.batch_size / self.npu_compute_time.mean

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_console_summaries(text: str) -> list[AisBenchSummary]:
    """Every `Performance Summary` block of ais_bench's console output, in order (one per device)."""
    summaries = []
    for block in text.split(_BLOCK_START)[1:]:
        stats = {m.group(1): _stats_from_match(m) for m in _STATS.finditer(block)}
        throughput = _THROUGHPUT.search(block)
        if "NPU_compute_time" not in stats or throughput is None:
            continue
        batch = float(throughput.group(1)) if throughput.group(1) is not None else None
        summaries.append(_checked(AisBenchSummary(stats["NPU_compute_time"], float(throughput.group(2)), batch,
                                                  stats.get("H2D_latency"), stats.get("D2H_latency")),
                                  "ais_bench summary"))
    if not summaries:
        raise UserError("no ais_bench 'Performance Summary' block with NPU_compute_time and throughput found")
    return summaries


def parse_summary_json(source: str | os.PathLike | dict) -> AisBenchSummary:
    """An ais_bench `*_summary.json` / ais_infer `sumary.json` (a path, its text, or the loaded dict)."""
    if isinstance(source, dict):
        data, where = source, "summary"
    else:
        path = Path(source) if not str(source).lstrip().startswith("{") else None
        where = str(path) if path else "summary JSON"
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig") if path else str(source))
        except FileNotFoundError:
            raise UserError(f"{where}: no such file") from None
        except (OSError, ValueError) as exc:
            raise UserError(f"{where}: not readable JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("NPU_compute_time"), dict):
        raise UserError(f"{where}: not an ais_bench summary (no NPU_compute_time)")
    try:
        throughput = float(data["throughput"])
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{where}: no numeric 'throughput'") from None
    return _checked(AisBenchSummary(_stats_from_dict(data["NPU_compute_time"], where), throughput, None,
                                    _optional_stats(data.get("H2D_latency"), where),
                                    _optional_stats(data.get("D2H_latency"), where)), where)


def find_summary_json(output_dir: str | os.PathLike) -> Path | None:
    """The newest summary ais_bench wrote under --output: `*_summary.json`, or ais_infer's `*/sumary.json`."""
    root = Path(output_dir)
    found = list(root.glob("*_summary.json")) + list(root.glob("*/sumary.json")) + list(root.glob("sumary.json"))
    found = [p for p in found if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def exec_time_ms(entry: float | Sequence[float]) -> float:
    """One item of `session.summary().exec_time_list` in ms.

    Newer ais_bench keeps (start_ms, end_ms) pairs (msit: `[end - start for start, end in exec_time_list]`);
    the older `session.sumary()` keeps plain durations.
    """
    if isinstance(entry, (tuple, list)):
        if len(entry) != 2:
            raise ValueError(f"exec_time_list item {entry!r}: expected a duration or a (start, end) pair")
        return float(entry[1]) - float(entry[0])
    return float(entry)


def _checked(summary: AisBenchSummary, where: str) -> AisBenchSummary:
    """Refuse impossible numbers (NaN, infinite, negative times, min > max) instead of reporting them."""
    compute = summary.npu_compute_time
    values = [summary.throughput, compute.min, compute.max, compute.mean, compute.median]
    if not all(math.isfinite(v) and v >= 0 for v in values) or compute.min > compute.max:
        raise UserError(f"{where}: impossible timing (throughput {summary.throughput}, NPU_compute_time "
                        f"min {compute.min} / mean {compute.mean} / max {compute.max} ms)")
    if summary.throughput > 0 and compute.mean == 0:
        raise UserError(f"{where}: throughput {summary.throughput} with a mean compute time of 0 ms")
    return summary


def _stats_from_match(match: re.Match) -> TimeStats:
    low, high, mean, median, rank, pct = match.group(2, 3, 4, 5, 6, 7)
    return TimeStats(float(low), float(high), float(mean), float(median), float(pct), int(rank))


def _stats_from_dict(values: dict, where: str) -> TimeStats:
    pct_key = next((k for k in values if re.sub(r"\s+", "", str(k)).startswith("percentile(")), None)
    try:
        rank = int(re.sub(r"\D", "", pct_key)) if pct_key else 99
        count = values.get("count")
        return TimeStats(float(values["min"]), float(values["max"]), float(values["mean"]),
                         float(values["median"]), float(values[pct_key]) if pct_key else float("nan"), rank,
                         int(count) if count is not None else None)
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{where}: timing entry {values!r} lacks min/max/mean/median") from None


def _optional_stats(values: Any, where: str) -> TimeStats | None:
    return _stats_from_dict(values, where) if isinstance(values, dict) else None
