"""The one place a speed comparison is judged: paired rounds, an interval, a verdict.

Every comparison of speeds in the tool (bench, tune, run, scale, scripts/bench_*.py) goes
through this module, and only this module writes a sentence that says one thing is faster
than another.

* Rounds are paired and interleaved: in each round every configuration runs one slot, and
  the order rotates from round to round (A B, B A, A B ...), so none always runs first.
* A round's rate of one configuration is its batch over the median call time of its slot
  (slot_rate): a call stalled because another process took the CPU (a heavy tail of seconds on
  a loaded machine) cannot swing a round, yet a model that is slower on every call is slower.
* The ratio of a candidate to its baseline is the geometric mean of the per-round ratios
  (candidate fps / baseline fps in the same round). Its confidence interval is Student's t
  over the paired per-round log-ratios (METHOD): drift of the machine that hits both members
  of a round alike cancels, and only what differs within rounds widens the interval.
* The verdict is `faster` or `slower` only when the interval excludes 1.0 *and* the ratio
  differs from 1.0 by at least the stated minimum effect (MIN_EFFECT, 3 %); otherwise it is
  `no measurable difference`. One round (or one figure per model) gives no interval at all,
  and so no claim.
* Measuring is adaptive (measure_rounds): after a minimum number of rounds it goes on until
  every interval is narrow enough (half-width within the target precision) or the time is
  spent, and says which happened.
* Load awareness (LoadMonitor): the load average against the cores before measuring, and
  during it the share of the CPUs that other processes kept busy and the time stolen by a
  hypervisor, from /proc. A machine that was not quiet gives warnings that the callers print
  and put in their JSON beside the intervals.
"""
from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

FASTER, SLOWER, NO_DIFFERENCE = "faster", "slower", "no measurable difference"
VERDICTS = (FASTER, SLOWER, NO_DIFFERENCE)
CONFIDENCE = 0.95
MIN_EFFECT = 0.03  # a ratio within 3 % of 1.0 is never called a difference, whatever its interval
PRECISION = 0.03  # adaptive rounds stop once every interval's half-width is within +-3 %
METHOD = "Student t over the paired per-round log-ratios"


# ---------------------------------------------------------------- the interval

def t_quantile(p: float, df: int) -> float:
    """Student's t quantile (no scipy here): exact for 1 and 2 degrees of freedom, the
    Cornish-Fisher expansion around the normal quantile above (within 0.2 % for df >= 3 at
    the 0.975 quantile)."""
    if df < 1:
        raise ValueError(f"degrees of freedom {df}: expected >= 1")
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = statistics.NormalDist().inv_cdf(p)
    v = float(df)
    return (z + (z ** 3 + z) / (4 * v) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * v ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * v ** 3)
            + (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / (92160 * v ** 4))


def _log_interval(logs: Sequence[float], confidence: float) -> tuple[float, float, float]:
    """(mean, low, high) of the mean of `logs` (t interval); infinite bounds below 2 values."""
    mean = statistics.fmean(logs)
    if len(logs) < 2:
        return mean, -math.inf, math.inf
    half = t_quantile(0.5 + confidence / 2, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return mean, mean - half, mean + half


@dataclass
class Comparison:
    """A candidate against its baseline, judged on paired rounds."""

    ratio: float  # candidate / baseline speed: geometric mean of the per-round ratios
    low: float  # the confidence interval of the ratio (0 and inf when there is none)
    high: float
    rounds: int
    verdict: str
    confidence: float = CONFIDENCE
    min_effect: float = MIN_EFFECT
    method: str = METHOD

    @property
    def half_width(self) -> float:
        """The interval's relative half-width (0.03 = +-3 %); inf without an interval."""
        if not (self.low > 0 and math.isfinite(self.high)):
            return math.inf
        return math.sqrt(self.high / self.low) - 1.0

    def interval_text(self) -> str:
        if not math.isfinite(self.half_width):
            return "no interval (fewer than 2 paired rounds)"
        return f"{self.low:.3f}-{self.high:.3f}"

    def short(self) -> str:
        """For a table cell: `1.012x [0.981-1.044] no measurable difference`."""
        bracket = f"[{self.low:.2f}-{self.high:.2f}]" if math.isfinite(self.half_width) else "[no interval]"
        return f"{self.ratio:.3f}x {bracket} {self.verdict}"

    def sentence(self, subject: str, baseline: str) -> str:
        """The only sentence in the tool that says something is faster or slower."""
        how = (f"ratio {self.ratio:.3f}x, {self.confidence * 100:.0f}% interval {self.interval_text()}, "
               f"{self.rounds} paired round(s), {self.method}; minimum effect {self.min_effect * 100:g}%")
        if self.verdict == FASTER:
            return f"{subject} is {self.ratio:.2f}x faster than {baseline} ({how})"
        if self.verdict == SLOWER:
            return f"{subject} is {1 / self.ratio:.2f}x slower than {baseline} ({how})"
        return f"{subject}: no measurable difference from {baseline} ({how})"

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("low", "high"):  # JSON has no infinity
            data[key] = data[key] if math.isfinite(data[key]) else None
        data["half_width"] = self.half_width if math.isfinite(self.half_width) else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Comparison":
        names = set(cls.__dataclass_fields__)
        values = {k: v for k, v in data.items() if k in names}
        values["low"] = 0.0 if values.get("low") is None else values["low"]
        values["high"] = math.inf if values.get("high") is None else values["high"]
        return cls(**values)


def verdict_for(ratio: float, low: float, high: float, min_effect: float = MIN_EFFECT) -> str:
    if low > 1.0 and ratio >= 1.0 + min_effect:
        return FASTER
    if high < 1.0 and ratio <= 1.0 / (1.0 + min_effect):
        return SLOWER
    return NO_DIFFERENCE


def compare(candidate: Sequence[float], baseline: Sequence[float], *, confidence: float = CONFIDENCE,
            min_effect: float = MIN_EFFECT) -> Comparison:
    """Candidate vs baseline from paired per-round speeds (fps, or any higher-is-better rate;
    round i of one is paired with round i of the other). Rounds where either is not a positive
    finite number are dropped."""
    pairs = [(c, b) for c, b in zip(candidate, baseline)
             if c > 0 and b > 0 and math.isfinite(c) and math.isfinite(b)]
    if not pairs:
        return Comparison(math.nan, 0.0, math.inf, 0, NO_DIFFERENCE, confidence, min_effect)
    mean, low, high = _log_interval([math.log(c / b) for c, b in pairs], confidence)
    ratio = math.exp(mean)
    low_r, high_r = (math.exp(low) if math.isfinite(low) else 0.0), (math.exp(high) if math.isfinite(high)
                                                                     else math.inf)
    return Comparison(ratio, low_r, high_r, len(pairs), verdict_for(ratio, low_r, high_r, min_effect),
                      confidence, min_effect)


def within_noise(a: Sequence[float], b: Sequence[float], **kwargs) -> bool:
    """True when paired rounds of a and b show no measurable difference (a tie)."""
    return compare(a, b, **kwargs).verdict == NO_DIFFERENCE


def relative_half_width(rates: Sequence[float], confidence: float = CONFIDENCE) -> float:
    """The half-width of one configuration's own rate (log t interval over its rounds)."""
    logs = [math.log(r) for r in rates if r > 0 and math.isfinite(r)]
    if len(logs) < 2:
        return math.inf
    mean, low, high = _log_interval(logs, confidence)
    return math.exp((high - low) / 2) - 1.0


# ---------------------------------------------------------------- interleaved, adaptive rounds

def slot_rate(batch: int, call_seconds: Sequence[float]) -> float:
    """A slot's rate (images/s): batch over the median call time, robust to preemption stalls."""
    times = [t for t in call_seconds if t > 0 and math.isfinite(t)]
    return batch / statistics.median(times) if times else math.nan


def rotation(count: int, round_index: int) -> list[int]:
    """The order of `count` configurations in a round: rotated by one each round."""
    shift = round_index % count if count else 0
    return list(range(shift, count)) + list(range(shift))


@dataclass
class Rounds:
    """What measure_rounds did: per configuration its rate in each round, and why it stopped."""

    rates: list[list[float]]
    stopped: str  # "precise" | "time" | "max_rounds"
    precision: float
    seconds: float

    @property
    def count(self) -> int:
        return len(self.rates[0]) if self.rates else 0

    def stop_text(self) -> str:
        widest = self.widest()
        width = f"+-{widest * 100:.1f}%" if math.isfinite(widest) else "no interval"
        if self.stopped == "precise":
            return (f"stopped after {self.count} round(s): every interval within +-{self.precision * 100:g}% "
                    f"(widest {width})")
        if self.stopped == "time":
            return (f"time ran out after {self.count} round(s) ({self.seconds:.1f} s) before every interval was "
                    f"within +-{self.precision * 100:g}% (widest {width})")
        return f"stopped at the most rounds allowed ({self.count}); widest interval {width}"

    def widest(self) -> float:
        return widest_interval(self.rates)

    def to_dict(self) -> dict:
        widest = self.widest()
        return {"rounds": self.count, "stopped": self.stopped, "precision": self.precision,
                "seconds": round(self.seconds, 3), "widest_half_width": widest if math.isfinite(widest) else None,
                "order": "rotated each round", "text": self.stop_text()}


def widest_interval(rates: Sequence[Sequence[float]]) -> float:
    """The widest relative half-width among the comparisons of each configuration with the
    first (with one configuration, its own rate's)."""
    if len(rates) == 1:
        return relative_half_width(rates[0])
    return max(compare(r, rates[0]).half_width for r in rates[1:])


def measure_rounds(count: int, slot: Callable[[int], float], *, min_rounds: int, seconds: float,
                   precision: float = PRECISION, max_rounds: int | None = None, hard_limit: bool = False,
                   on_slot: Callable[[int, int], None] | None = None,
                   clock: Callable[[], float] = time.perf_counter) -> Rounds:
    """Run interleaved rounds of `count` configurations: slot(i) measures configuration i once
    and returns its rate. At least `min_rounds` rounds, then more until every interval is within
    `precision` or `seconds` have passed. hard_limit (a budget, as tune's): `seconds` may cut
    the minimum short, after two rounds. on_slot(round, i) is called after each slot (progress)."""
    if count < 1:
        return Rounds([], "precise", precision, 0.0)
    rates: list[list[float]] = [[] for _ in range(count)]
    start = clock()
    per_round = 0.0
    done = 0
    while True:
        round_start = clock()
        for i in rotation(count, done):
            rates[i].append(float(slot(i)))
            if on_slot is not None:
                on_slot(done, i)
        done += 1
        per_round = max(per_round, clock() - round_start)
        elapsed = clock() - start
        if max_rounds is not None and done >= max_rounds:
            stopped = "max_rounds"
            break
        if done >= min_rounds and widest_interval(rates) <= precision:
            stopped = "precise"
            break
        if elapsed + per_round > seconds and done >= (min(2, min_rounds) if hard_limit else min_rounds):
            stopped = "precise" if widest_interval(rates) <= precision else "time"
            break
    return Rounds(rates, stopped, precision, clock() - start)


def slot_seconds(duration: float, min_rounds: int, count: int) -> float:
    """The length of one slot: the minimum rounds take half of `duration`, leaving the other
    half for the rounds the interval may still need."""
    return duration / (2 * max(1, min_rounds) * max(1, count))


# ---------------------------------------------------------------- machine load

@dataclass
class CpuTimes:
    total: int  # jiffies of every CPU, idle included
    busy: int  # not idle, not iowait, not steal
    steal: int
    own: int  # this process (all its threads) and its waited-for children


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def read_cpu_times(proc: str | os.PathLike = "/proc") -> CpuTimes | None:
    """The aggregate `cpu` line of /proc/stat and this process's times from /proc/self/stat
    (proc(5)); None where /proc is not there."""
    stat = _read_text(Path(proc) / "stat")
    if stat is None:
        return None
    fields = next((line.split()[1:] for line in stat.splitlines() if line.startswith("cpu ")), None)
    if not fields:
        return None
    values = [int(v) for v in fields[:10]] + [0] * (10 - len(fields[:10]))
    user, nice, system, idle, iowait, irq, softirq, steal = values[:8]  # guest is inside user
    busy = user + nice + system + irq + softirq
    own = 0
    self_stat = _read_text(Path(proc) / "self" / "stat")
    if self_stat and ")" in self_stat:
        rest = self_stat.rsplit(")", 1)[1].split()
        own = sum(int(v) for v in rest[11:15])  # utime stime cutime cstime (fields 14-17)
    return CpuTimes(user + nice + system + idle + iowait + irq + softirq + steal, busy, steal, own)


def cpu_count(proc: str | os.PathLike = "/proc") -> int:
    """CPUs this process may run on (affinity), else the cpuN lines of /proc/stat."""
    if str(proc) == "/proc" and hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    stat = _read_text(Path(proc) / "stat") or ""
    return sum(1 for line in stat.splitlines() if line.startswith("cpu") and line[3:4].isdigit()) or (
        os.cpu_count() or 1)


def read_loadavg(proc: str | os.PathLike = "/proc") -> float | None:
    text = _read_text(Path(proc) / "loadavg")
    try:
        return float(text.split()[0]) if text else None
    except ValueError:
        return None


LOAD_PER_CORE = 0.5  # a 1-minute load average above half the cores before measuring: not quiet
OTHERS_SHARE = 0.25  # other processes kept more than a quarter of the CPUs busy while measuring
STEAL_SHARE = 0.05  # a hypervisor took more than 5 % of the CPU time


@dataclass
class LoadReport:
    cores: int
    loadavg_before: float | None = None
    others_busy: float | None = None  # share of all CPUs other processes used while measuring (0-1)
    steal: float | None = None  # share of CPU time stolen while measuring
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def quiet(self) -> bool:
        return not self.warnings

    def to_dict(self) -> dict:
        return {**asdict(self), "quiet": self.quiet}


class LoadMonitor:
    """Reads the machine's load before measuring (start) and over the measurement (stop).

    with LoadMonitor() as load: ...measure...   then load.report.warnings
    """

    def __init__(self, proc: str | os.PathLike = "/proc"):
        self.proc = proc
        self.report = LoadReport(cpu_count(proc))
        self._start: CpuTimes | None = None
        self._t0 = 0.0

    def start(self) -> "LoadMonitor":
        self.report.loadavg_before = read_loadavg(self.proc)
        self._start = read_cpu_times(self.proc)
        self._t0 = time.perf_counter()
        return self

    def stop(self) -> LoadReport:
        end = read_cpu_times(self.proc)
        self.report.seconds = time.perf_counter() - self._t0
        if self._start is not None and end is not None and end.total > self._start.total:
            total = end.total - self._start.total
            others = (end.busy - self._start.busy) - (end.own - self._start.own)
            self.report.others_busy = min(1.0, max(0.0, others / total))
            self.report.steal = max(0.0, (end.steal - self._start.steal) / total)
        self.report.warnings = load_warnings(self.report)
        return self.report

    def __enter__(self) -> "LoadMonitor":
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()


def load_warnings(report: LoadReport) -> list[str]:
    out = []
    cores = report.cores
    if report.loadavg_before is not None and report.loadavg_before > LOAD_PER_CORE * cores:
        out.append(f"machine not quiet: load average {report.loadavg_before:.2f} on {cores} core(s) before "
                   f"measuring (above {LOAD_PER_CORE:g} per core)")
    if report.others_busy is not None and report.others_busy > OTHERS_SHARE:
        out.append(f"machine not quiet: other processes kept {report.others_busy * 100:.0f}% of the {cores} "
                   f"core(s) busy while measuring")
    if report.steal is not None and report.steal > STEAL_SHARE:
        out.append(f"machine not quiet: {report.steal * 100:.0f}% of the CPU time was stolen by the hypervisor "
                   f"while measuring")
    if out:
        out.append("figures measured under load: trust the intervals and verdicts, not the raw ratios")
    return out


def merge_load(reports: Sequence[LoadReport]) -> dict:
    """Several measurements' load readings as one JSON block (the worst of each)."""
    if not reports:
        return {}
    pick = [v for v in (r.others_busy for r in reports) if v is not None]
    steal = [v for v in (r.steal for r in reports) if v is not None]
    before = [v for v in (r.loadavg_before for r in reports) if v is not None]
    warnings = list(dict.fromkeys(w for r in reports for w in r.warnings))
    return {"cores": reports[0].cores, "loadavg_before": max(before) if before else None,
            "others_busy": max(pick) if pick else None, "steal": max(steal) if steal else None,
            "quiet": not warnings, "warnings": warnings}
