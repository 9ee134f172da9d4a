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
                "outputs": self.outputs, "reproduce": self.reproduce,
                "candidates": [c.to_dict() for c in self.candidates]}

    def format_table(self) -> str:
        from lvvit_opt.core.table import format_table

        order = {"measured": 0, "pruned": 1, "passed": 1, "unmeasured": 2, "rejected": 3, "failed": 4,
                 "duplicate": 5, "skipped": 6}
        rows, notes = [], []
        ranked = sorted(self.candidates, key=lambda c: (order.get(c.status, 9), -(c.fps or 0.0)))
        for i, c in enumerate(ranked, 1):
            t = c.timing or {}
            mark = "BEST" if c.key == self.best else ("tie" if c.tie else "")
            if c.key == self.baseline:
                mark = (mark + " baseline").strip()
            top1 = "" if c.agreement is None else f"{c.agreement * 100:.1f}%"
            fps = "" if c.fps is None else f"{c.fps:.1f}" + ("" if c.timing else " (screen)")
            opts = " ".join(f"{k}={v}" for k, v in sorted(c.options.items()))
            rows.append([i, c.batch, "+".join(c.passes) or "-", c.precision, opts, top1, c.status + ("*" if c.reused else ""),
                         fps, f"{t['fps_per_batch']:.2f}" if t else "", f"{t['p50_ms']:.2f}" if t else "",
                         f"{t['p99_ms']:.2f}" if t else "", f"{t['spread_pct']:.1f}%" if t else "", mark])
            if c.reason and c.status not in ("measured",):
                notes.append(f"  #{i} {c.status}: {c.reason}")
        table = format_table(["#", "bs", "passes", "prec", "options", "top-1", "status", "fps", "batch/s", "p50 ms",
                              "p99 ms", "spread", ""], rows, align="rrllllrrrrrrl")
        lines = [table]
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
                 _fmt(r["after_fps"], r["after_source"]),
                 "" if not (r["before_fps"] and r["after_fps"]) else f"{r['after_fps'] / r['before_fps']:.2f}x"]
                for r in self.before_after]
        return format_table(["bs", "before (no passes, fp32)", "fps", "after (tuned)", "fps", "ratio"], rows,
                            align="rlrlrr")


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
    """fps vs top-1 agreement for every gated candidate; the Pareto front of those that pass joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lvvit_opt.core.fileio import write_figure

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=90)
    shown = [c for c in report.candidates if c.fps is not None and c.agreement is not None]
    good = [c for c in shown if c.status in ("measured", "pruned", "passed", "unmeasured")]
    bad = [c for c in shown if c not in good]
    if good:
        ax.scatter([c.agreement * 100 for c in good], [c.fps for c in good], c="tab:blue", s=22,
                   label="passes the gate")
    if bad:
        ax.scatter([c.agreement * 100 for c in bad], [c.fps for c in bad], c="tab:red", marker="x", s=30,
                   label="rejected by the gate")
    front = [good[i] for i in pareto_front([(c.fps, c.agreement) for c in good])]
    front.sort(key=lambda c: c.agreement)
    if front:
        ax.plot([c.agreement * 100 for c in front], [c.fps for c in front], "-o", c="tab:green", ms=11, mfc="none",
                mew=2, label="Pareto front (fps, agreement)")
    for c in shown:  # which candidate is which: batch, passes, precision
        ax.annotate(f"bs{c.batch} {'+'.join(p[:8] for p in c.passes) or '-'} {c.precision}", (c.agreement * 100, c.fps),
                    xytext=(6, -3), textcoords="offset points", fontsize=6, color="dimgrey")
    best = report.by_key(report.best)
    if best is not None and best.agreement is not None:
        ax.scatter([best.agreement * 100], [best.fps], marker="*", s=220, c="gold", edgecolors="black", zorder=5,
                   label=f"chosen: {best.label()}")
    threshold = report.settings.get("min_agreement")
    if threshold is not None:
        ax.axvline(threshold, ls="--", c="grey", lw=1, label=f"gate {threshold:g}%")
    lowest = min([c.agreement * 100 for c in shown] + [threshold or 100.0])
    ax.set_xlim(lowest - max(0.5, (100 - lowest) * 0.1), 100 + max(0.5, (100 - lowest) * 0.35))
    ax.set_xlabel("top-1 agreement with the fp32 original (%)")
    ax.set_ylabel("images / s (higher is better)")
    ax.set_title(printable(f"tune {report.target}: {len(shown)} candidates ({report.settings.get('model_name', '')})"),
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return write_figure(fig, out)


