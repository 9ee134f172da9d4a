"""tune's result: the table, the seed-style before/after table, JSON and the fps-vs-agreement
plot with its Pareto front. See lvvit_opt.tune.search."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from lvvit_opt.core.errors import printable
from lvvit_opt.tune.space import Candidate

@dataclass
class TuneReport:
    candidates: list[Candidate]
    best: str | None
    baseline: str | None
    target: str
    settings: dict[str, Any]
    space: dict[str, Any]
    machine: dict[str, Any]
    wall_s: float
    notes: list[str] = field(default_factory=list)
    before_after: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    reproduce: list[str] = field(default_factory=list)
    verdict: dict[str, Any] = field(default_factory=dict)  # tune.search.choose_best: claim, text, comparison
    load: dict[str, Any] = field(default_factory=dict)  # measure.stats.merge_load of the measurement
    warnings: list[str] = field(default_factory=list)  # the machine was not quiet
    rounds: dict[str, Any] = field(default_factory=dict)  # how the finalists' rounds went and why they stopped

    def by_key(self, key: str | None) -> Candidate | None:
        return next((c for c in self.candidates if c.key == key), None)

    @property
    def measured_s(self) -> float:
        return sum(c.measured_s for c in self.candidates if not c.reused)

    @property
    def overhead(self) -> float | None:
        return self.wall_s / self.measured_s if self.measured_s > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "best": self.best, "baseline": self.baseline, "settings": self.settings,
                "space": self.space, "machine": self.machine, "wall_s": self.wall_s, "measured_s": self.measured_s,
                "overhead": self.overhead, "notes": self.notes, "before_after": self.before_after,
                "outputs": self.outputs, "reproduce": self.reproduce, "verdict": self.verdict,
                "warnings": self.warnings, "load": self.load, "rounds": self.rounds,
                "candidates": [c.to_dict() for c in self.candidates]}

    def format_table(self, full: bool = True) -> str:
        """Every candidate with the reason of each that was not measured (full), or only the
        measured ones with their ratio to the baseline (the console without -v)."""
        from lvvit_opt.core.table import format_table

        order = {"measured": 0, "pruned": 1, "passed": 1, "unmeasured": 2, "rejected": 3, "failed": 4,
                 "duplicate": 5, "skipped": 6}
        rows, notes = [], []
        ranked = sorted(self.candidates, key=lambda c: (order.get(c.status, 9), -(c.fps or 0.0)))
        if not full:
            ranked = [c for c in ranked if c.status == "measured"]
        for i, c in enumerate(ranked, 1):
            t = c.timing or {}
            mark = "BEST" if c.key == self.best else ("tie" if c.tie else "")
            if c.key == self.baseline:
                mark = (mark + " baseline").strip()
            top1 = "" if c.agreement is None else f"{c.agreement * 100:.1f}%"
            fps = "" if c.fps is None else f"{c.fps:.1f}" + ("" if c.timing else " (screen)")
            opts = " ".join(f"{k}={v}" for k, v in sorted(c.options.items()))
            versus = t.get("vs_baseline")
            from lvvit_opt.measure.stats import Comparison

            ratio = Comparison.from_dict(versus).short() if versus else ("" if c.key != self.baseline or not t
                                                                          else "baseline")
            rows.append([i, c.batch, "+".join(c.passes) or "-", c.precision, opts, top1, c.status + ("*" if c.reused else ""),
                         fps, f"{t['p50_ms']:.2f}" if t else "", f"{t['spread_pct']:.1f}%" if t else "", ratio, mark])
            if c.reason and c.status not in ("measured",):
                notes.append(f"  #{i} {c.status}: {c.reason}")
        table = format_table(["#", "bs", "passes", "prec", "options", "top-1", "status", "fps", "p50 ms",
                              "spread", "vs baseline [95% interval] verdict", ""], rows, align="rrllllrrrrll")
        lines = [table]
        if not full:
            hidden = len(self.candidates) - len(ranked)
            if hidden:
                lines.append(f"({hidden} candidate(s) not measured: rejected, pruned, duplicates or skipped; "
                             f"all of them with -v and in --json)")
            notes = []
        if notes:
            lines += ["why:"] + notes
        if any(c.reused for c in self.candidates):
            lines.append("* reused from an earlier run with this --out")
        return "\n".join(lines)

    def format_before_after(self) -> str:
        from lvvit_opt.core.table import format_table

        if not self.before_after:
            return ""
        rows = [[r["batch"], r["before_label"], _fmt(r["before_fps"], r["before_source"]), r["after_label"],
                 _fmt(r["after_fps"], r["after_source"]), _versus(r)] for r in self.before_after]
        return format_table(["bs", "before (no passes, fp32)", "fps", "after (tuned)", "fps",
                             "after vs before [95% interval] verdict"], rows, align="rlrlrl")


def _versus(row: dict) -> str:
    """The after/before comparison (measure.stats) when both were measured in the same rounds."""
    from lvvit_opt.measure.stats import Comparison

    if row.get("comparison"):
        return Comparison.from_dict(row["comparison"]).short()
    if row.get("before_label") == row.get("after_label"):
        return "the same configuration"
    return "not compared (not measured in the same rounds)"


def _fmt(value, source: str | None = None) -> str:
    if value is None:
        return "not measured"
    return f"{value:.1f}" + (" (screen)" if source == "screen" else "")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both (higher is better on both axes)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((ox >= x and oy >= y) and (ox > x or oy > y) for j, (ox, oy) in enumerate(points) if j != i):
            front.append(i)
    return front


def plot_tune(report: TuneReport, out: str | os.PathLike) -> Path:
    """The measured candidates as horizontal bars sorted by fps, each with the 95% interval of its
    own per-round fps (measure.stats, t over the log fps of its rounds), coloured by the statistics'
    verdict against the baseline, the baseline marked; below them, in red, the fastest candidates
    the gate rejected (their screen fps, no interval). The caveats (backend, machine, weights,
    what the bars are) are written under the plot."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lvvit_opt.core.fileio import write_figure
    from lvvit_opt.measure.stats import relative_half_width

    measured = sorted((c for c in report.candidates if c.status == "measured" and c.timing),
                      key=lambda c: c.timing["fps"])
    rejected = sorted((c for c in report.candidates if c.status == "rejected" and c.fps), key=lambda c: c.fps)[-8:]
    shown = rejected + measured
    colours = {"faster": "tab:green", "slower": "tab:orange", "no measurable difference": "tab:blue"}
    import textwrap

    caveats = [part for line in tune_caveats(report) for part in textwrap.wrap(line, 170)]
    height = 1.9 + 0.32 * max(3, len(shown)) + 0.14 * len(caveats)
    fig, ax = plt.subplots(figsize=(10, height), dpi=90)
    for y, c in enumerate(shown):
        if c in rejected:
            ax.barh(y, c.fps, color="tab:red", alpha=0.45, hatch="//")
            continue
        rounds = c.timing["round_fps"]
        half = relative_half_width(rounds)
        err = None
        if math.isfinite(half):
            centre = math.exp(sum(math.log(r) for r in rounds) / len(rounds))
            err = [[max(0.0, c.timing["fps"] - centre / (1 + half))], [max(0.0, centre * (1 + half) - c.timing["fps"])]]
        verdict = (c.timing.get("vs_baseline") or {}).get("verdict")
        colour = "tab:grey" if c.key == report.baseline else colours.get(verdict, "tab:blue")
        ax.barh(y, c.timing["fps"], xerr=err, color=colour, capsize=3,
                edgecolor="black" if c.key == report.best else colour, linewidth=2 if c.key == report.best else 0)
    labels = []
    for c in shown:
        text = c.label()
        if c.key == report.best:
            text = "BEST  " + text
        if c.key == report.baseline:
            text += "  (baseline)"
        if c in rejected:
            text += "  (rejected by the gate; screen fps)"
        labels.append(text)
    ax.set_yticks(range(len(shown)), ["\n".join(textwrap.wrap(printable(text), 60)) for text in labels], fontsize=7)
    base = report.by_key(report.baseline)
    if base is not None and base.timing:
        ax.axvline(base.timing["fps"], ls="--", c="black", lw=1)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color="tab:grey", label="baseline (dashed line: its fps)"),
                       Patch(color="tab:green", label="measurably faster than the baseline"),
                       Patch(color="tab:blue", label="no measurable difference"),
                       Patch(color="tab:orange", label="measurably slower"),
                       Patch(color="tab:red", alpha=0.45, label="rejected by the accuracy gate")],
              fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    if not shown:
        ax.text(0.5, 0.5, "no candidate measured", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("images / s (higher is better)")
    ax.set_title(printable(f"tune {report.target}: {len(measured)} measured candidate(s) "
                           f"({report.settings.get('model_name', '')})"), fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.text(0.01, 0.01, "\n".join(caveats), fontsize=6.5, color="dimgrey", va="bottom", ha="left")
    fig.tight_layout(rect=(0, (0.15 + 0.14 * len(caveats)) / height, 1, 1))
    from lvvit_opt.models.metadata import PLOT_CAVEAT, random_weights_caveat

    caveat = PLOT_CAVEAT if random_weights_caveat([report.settings.get("model")]) else None
    return write_figure(fig, out, caveat=caveat)


def tune_caveats(report: TuneReport) -> list[str]:
    """What a reader of tune.png must know."""
    machine = report.machine
    backend = {"ort-cpu": "onnxruntime CPUExecutionProvider", "ort-cuda": "onnxruntime CUDAExecutionProvider",
               "ort-trt": "onnxruntime TensorrtExecutionProvider", "ascend": "Ascend .om (ais_bench/benchmark)"}
    lines = [f"backend used: {backend.get(report.target, report.target)}; machine: {machine.get('host', '?')} "
             f"({machine.get('processor', '?')}, {machine.get('cpu_count', '?')} cores)",
             "error bars: 95% interval of each candidate's per-round fps (t over log fps); colours: paired "
             "95% interval of the ratio to the baseline"]
    if any("RANDOM" in note for note in report.notes) or report.settings.get("weights"):
        lines.append("gate on random inputs or random weights: agreement says little about accuracy")
    if report.warnings:
        lines.append("measured under load: " + report.warnings[0].replace("machine not quiet: ", ""))
    return lines
