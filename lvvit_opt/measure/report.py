"""report.md / report.json / fps.png for `lvvit-opt run`."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from lvvit_opt.measure.bench import BenchReport, BenchResult, plot_fps
from lvvit_opt.core.fileio import write_text_atomic
from lvvit_opt.whitelist import format_shape

logger = logging.getLogger(__name__)


def merged_bench(summary) -> BenchReport | None:
    """All batch sizes' bench reports as one (for the table and the plot)."""
    reports = [BenchReport.from_dict(r) for r in summary.bench.get("reports", {}).values()]
    if not reports:
        return None
    results: list[BenchResult] = [res for r in reports for res in r.results]
    settings = dict(reports[0].settings, batch_sizes=sorted({r.batch_size for r in results}))
    cached = [r.cached for r in reports if r.cached]
    rounds = {k: v for r in reports for k, v in r.rounds.items()}
    return BenchReport(results, reports[0].machine, settings, [s for r in reports for s in r.skipped],
                       {k: v for r in reports for k, v in r.validation.items()},
                       list(dict.fromkeys(w for r in reports for w in r.warnings)),
                       reports[0].load, rounds, cached[0] if cached else {})


def write_reports(summary, options) -> None:
    out = Path(summary.out)
    bench = merged_bench(summary)
    data = summary.to_dict()
    data["options"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(options).items()}
    plotted = False
    if bench is not None and bench.results:
        # the stages before are cached: a plot that fails must not cost report.md on every re-run
        try:
            plot_fps(bench, out / "fps.png", title=f"{options.model}: before / after ({summary.bench.get('backend')})",
                     labels={0: "before (exported + onnxsim)", 1: f"after ({','.join(options.passes)})"})
            data["fps_plot"] = str(out / "fps.png")
            plotted = True
        except Exception as exc:  # matplotlib's errors are many; the numbers are in the tables anyway
            data["fps_plot_error"] = f"{type(exc).__name__}: {exc}"
            logger.warning(f"fps.png not drawn ({type(exc).__name__}: {exc}); report.md has the numbers")
    write_text_atomic(out / "report.json", json.dumps(data, indent=2, default=str) + "\n")
    write_text_atomic(out / "report.md", render_markdown(summary, options, bench, plotted=plotted))


def render_markdown(summary, options, bench: BenchReport | None, plotted: bool = True) -> str:
    lines = [f"# lvvit-opt run: {options.model}", ""]
    random_tensors = sorted({t for e in summary.exports.values() for t in e.get("random_tensors", [])})
    if summary.random_weights:
        lines += [f"> **Weights were RANDOM** (no `--checkpoint`; seed {options.seed}). Graph structure, "
                  "validation and fps are real measurements; accuracy is meaningless.", ""]
    else:
        lines += [f"Weights: `{options.checkpoint}`" + (" (EMA)" if options.ema else ""), ""]
    if random_tensors:
        lines += [f"> **Weights were partly RANDOM** (`--non-strict`): {len(random_tensors)} tensor(s) were not in "
                  f"the checkpoint and keep their seeded random init (seed {options.seed}): "
                  + ", ".join(f"`{t}`" for t in random_tensors) + ". Accuracy is not the checkpoint's.", ""]
    lines += ["## What was done", ""]
    for stage in summary.stages:
        status = "skipped (unchanged)" if stage["status"] == "skipped" else f"{stage['seconds']:.1f} s"
        lines.append(f"- {stage['name']}: {status}")
    lines += ["", f"Passes: {_passes_text(options.passes)}", "", "## Validation (onnxruntime, original vs rewritten)", "",
              "| batch | result | max abs | cosine | top-1 agreement |", "|---:|---|---:|---:|---:|"]
    for batch, applied in summary.applies.items():
        lines.append(_validation_row(batch, applied.get("validation")))
    lines += ["", "## CANN transpose whitelist", ""]
    shapes = summary.whitelist.get("shapes", [])
    listed = " ".join(f"`{format_shape(s)}`" for s in shapes) or "none"
    patched = summary.whitelist.get("patched")
    lines.append(f"Transpose input shapes to whitelist on a white-list-era CANN: {listed}.")
    lines += _transpose_rows(summary.whitelist.get("transposes") or {})
    if patched:
        lines.append(f"\nPatched: {patched.get('message')}")
    else:
        if summary.whitelist.get("note"):
            lines.append(f"\n{summary.whitelist['note'][:1].upper()}{summary.whitelist['note'][1:]}.")
    lines += ["", "## atc", ""]
    if summary.atc.get("compiled"):
        for name, info in summary.atc.get("models", {}).items():
            lines.append(f"- `{name}` -> `{info.get('om')}` ({info.get('seconds')} s)")
        for batch, table in summary.atc.get("kernels", {}).items():  # `lvvit-opt inspect` of both .om files
            lines += ["", f"Kernels atc compiled, batch {batch} (`atc --mode=1`):", "", "```", *table, "```"]
    else:
        lines.append(f"atc not found on this machine; the exact commands are in `{summary.atc.get('commands_file')}`.")
    lines += ["", "## Throughput before / after", ""]
    lines += _fps_table(bench, summary, plotted)
    lines += _deploy_lines(getattr(summary, "deploy", None) or {})
    return "\n".join(lines) + "\n"


def _passes_text(passes) -> str:
    """`fix_shapes,softmax_transpose,cleanup` named by its preset when it is one: `ascend310` (= ...)."""
    from lvvit_opt.passes import PRESETS

    listed = ",".join(passes)
    named = [name for name, expansion in PRESETS.items() if tuple(passes) == tuple(expansion)]
    return f"`{named[0]}` (= `{listed}`)" if named else f"`{listed}`"


def _transpose_rows(transposes: dict) -> list[str]:
    """The one list (passes.transposes) as a markdown table: model, shape, perm, nodes, origin."""
    if not any(transposes.values()):
        return []
    rows = ["", "| model | input shape | perm | nodes | origin |", "|---|---|---|---:|---|"]
    for model, uses in transposes.items():
        for use in uses:
            perm = format_shape(use["perm"]) if use.get("perm") else "reverse"
            rows.append(f"| {model} | {format_shape(use['shape'])} | {perm} | {use['count']} | {use['origin']} |")
    return rows


def _validation_row(batch, validation: dict | None) -> str:
    if not validation:
        return f"| {batch} | not validated | | | |"
    outputs = [o for c in validation.get("comparisons", {}).values() for o in c.get("outputs", [])]
    worst = max((o["max_abs"] for o in outputs), default=float("nan"))
    cosine = min((o["cosine"] for o in outputs), default=float("nan"))
    top1 = [o["top1_agreement"] for o in outputs if o.get("top1_agreement") is not None]
    agree = f"{min(top1) * 100:.1f}%" if top1 else "n/a"
    return f"| {batch} | {'PASS' if validation.get('passed') else 'FAIL'} | {worst:.3g} | {cosine:.8f} | {agree} |"


def _fps_table(bench: BenchReport | None, summary, plotted: bool = True) -> list[str]:
    if bench is None or not bench.results:
        return ["No measurement."]
    machine = bench.machine
    settings = bench.settings
    lines = [f"Measured on `{machine.get('host')}` ({machine.get('processor')}, {machine.get('cpu_count')} cores), "
             f"backend **{summary.bench.get('backend')}**"
             + (f", providers {', '.join(settings.get('providers', []))}, threads {settings.get('threads')}"
                if summary.bench.get("backend") == "onnxruntime" else "")
             + f"; at least {settings.get('rounds')} interleaved rounds (order rotating), up to "
               f"{settings.get('duration_s')} s per batch size.", ""]
    if bench.cached:
        lines += [f"> **Cached figures**: measured {bench.cached.get('measured_at')} on `{bench.cached.get('host')}`, "
                  "not in this run (`--rebench` measures again).", ""]
    for warning in bench.warnings:
        lines += [f"> Warning: {warning}", ""]
    lines += ["| batch | before fps | after fps | after / before [95% interval] verdict | before p50 ms | after p50 ms |",
              "|---:|---:|---:|---|---:|---:|"]
    for batch in sorted({r.batch_size for r in bench.results}):
        pair = sorted((r for r in bench.results if r.batch_size == batch), key=lambda r: r.position)
        if len(pair) < 2:
            continue
        before, after = pair[0], pair[1]
        judged = after.judged()
        versus = judged.short() if judged else f"{after.ratio_to_first:.3f}x (no paired rounds)"
        lines.append(f"| {batch} | {before.fps:.1f} | {after.fps:.1f} | {versus} | "
                     f"{before.latency_median_ms:.2f} | {after.latency_median_ms:.2f} |")
    lines += [""] + [f"- {line}" for line in bench.verdicts()]
    lines += ["", "![fps](fps.png)" if plotted else "(fps.png could not be drawn; see report.json `fps_plot_error`)"]
    if summary.bench.get("backend") == "onnxruntime":
        lines += ["", "Note: onnxruntime on this machine's CPU, not an Ascend NPU. The softmax rewrite targets "
                  "Ascend's softmax kernel; on a CPU no gain is expected: this table proves the rewrite costs nothing here, not its NPU speed-up."]
    return lines


def _deploy_lines(deploy: dict) -> list[str]:
    """`run --aipp` / `--batch-gears`: the deployment .om, its AIPP config and preview, one row per gear."""
    if not deploy:
        return []
    lines = ["", "## Deployment .om (--aipp / --batch-gears)", "", f"atc: `{deploy.get('command')}`"
             + ("" if deploy.get("compiled") else " (not run: atc not found)")]
    if deploy.get("note"):
        lines.append(f"\nNote: {deploy['note']}.")
    aipp = deploy.get("aipp")
    if aipp:
        preview = aipp.get("preview") or {}
        lines += ["", f"Static AIPP `{aipp['config']}`: the .om takes uint8 NHWC {aipp['input']['shape']} RGB; "
                  f"min_chn {[aipp[f'min_chn_{i}'] for i in range(3)]}, var_reci_chn "
                  f"{[round(aipp[f'var_reci_chn_{i}'], 9) for i in range(3)]}.",
                  f"CPU preview vs the float pipeline ({preview.get('images')}): error AIPP adds to the input "
                  f"max_abs {preview.get('input_max_abs', float('nan')):.3g}, cosine "
                  f"{preview.get('input_cosine', float('nan')):.8f}; "
                  f"{'PASS' if preview.get('passed') else 'FAIL'} ({preview.get('tolerance')})."]
    lines += ["", "| batch | input | bytes to the device per inference | fps |", "|---:|---|---:|---|"]
    for row in deploy.get("rows", []):
        lines.append(f"| {row['batch']} | {row['input']} | {row['bytes_to_device']} | not measured |")
    return lines
