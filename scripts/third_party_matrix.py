"""Run onnx's own node test graphs (third-party graphs nobody here wrote) through `apply`.

The graphs come from the installed onnx package (`onnx.backend.test.case.node`, ~1,900 small
graphs of every operator and type: float8, int4, bfloat16, sequences, optionals, maps,
subgraphs, scalars, strings). Each goes through `lvvit-opt apply` twice, in-process (click's
CliRunner), with `--passes fold_constants,cleanup` and `--passes softmax_transpose`, and each
run is put in one class:

  ok         exit 0
  traceback  an uncaught exception (a traceback for the user), or "Traceback" in the output
  refused    exit 2 (the model or its inputs blamed), one error line
  failed     exit 1 "does not compute the same function" (a false failure: these graphs are
             deterministic and the passes exact, unless the graph is random)
  internal   exit 1, any other reason (a pass or our validation at fault)
Besides its class, a run is counted `multiline` when it exits != 0 with more than the one
`error:` line on stderr (a warning logged before it counts too: the error is not alone).

Usage: python scripts/third_party_matrix.py [--limit N] [--every K] [--json OUT] [--show CLASS]
Prints counts per class and pass set, and each non-ok case's first error line with --show.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
from collections import Counter
from pathlib import Path

PASS_SETS = ("fold_constants,cleanup", "softmax_transpose")


def node_models(folder: Path, every: int = 1, limit: int | None = None) -> list[Path]:
    """Write onnx's node test graphs as <folder>/<name>.onnx (every `every`-th, at most `limit`)."""
    from onnx.backend.test.case import node as node_cases

    cases = sorted(node_cases.collect_testcases(), key=lambda c: c.name)[::every]
    if limit:
        cases = cases[:limit]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for case in cases:
        path = folder / f"{case.name}.onnx"
        path.write_bytes(case.model.SerializeToString())
        paths.append(path)
    return paths


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def run_one(model: Path, passes: str, out_dir: Path, timeout: int = 120) -> dict:
    """One `apply` run, classified (see the module docstring)."""
    import traceback

    from click.testing import CliRunner

    from lvvit_opt.cli import main

    out = out_dir / f"{model.stem}.{passes.replace(',', '+')}.onnx"
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout)
    try:
        result = CliRunner().invoke(main, ["apply", str(model), "-o", str(out), "--passes", passes, "-q"],
                                    catch_exceptions=True)
    except _Timeout:
        return {"model": model.stem, "passes": passes, "class": "hang", "error": f"over {timeout}s"}
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    text = (result.stdout or "") + (result.stderr or "")
    errors = [line for line in (result.stderr or "").splitlines() if line.strip()]
    first = next((line for line in errors if line.startswith("error:")), errors[0] if errors else "")
    if isinstance(result.exception, _Timeout):
        kind = "hang"
    elif result.exception is not None and not isinstance(result.exception, SystemExit):
        kind, first = "traceback", "".join(traceback.format_exception(result.exception)[-3:]).strip()
    elif "Traceback" in text:
        kind = "traceback"
    elif result.exit_code == 0:
        kind = "ok"
    elif result.exit_code == 2:
        kind = "refused"
    elif "does not compute the same function" in first:
        kind = "failed"
    else:
        kind = "internal"
    if out.exists():
        out.unlink()
    return {"model": model.stem, "passes": passes, "class": kind, "exit": result.exit_code, "error": first[:400],
            "multiline": result.exit_code != 0 and len(errors) > 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--json", default=None, help="write every run's class here")
    parser.add_argument("--show", action="append", default=[], help="print the cases of this class")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="third-party-") as tmp:
        models = node_models(Path(tmp) / "models", args.every, args.limit)
        out_dir = Path(tmp) / "out"
        out_dir.mkdir()
        rows = []
        for index, model in enumerate(models):
            for passes in PASS_SETS:
                rows.append(run_one(model, passes, out_dir))
            if index % 100 == 0:
                print(f"{index}/{len(models)}", file=sys.stderr, flush=True)
    counts = Counter((r["passes"], r["class"]) for r in rows)
    print(f"{len(models)} graphs, {len(rows)} runs")
    for passes in PASS_SETS:
        line = ", ".join(f"{kind} {counts[(passes, kind)]}" for kind in
                         ("ok", "refused", "failed", "internal", "traceback", "hang"))
        line += f"; multi-line errors {sum(1 for r in rows if r['passes'] == passes and r.get('multiline'))}"
        print(f"{passes}: {line}")
    for row in rows:
        if row["class"] in args.show or ("multiline" in args.show and row.get("multiline")):
            print(f"{row['class']:9} {row['passes']:22} {row['model']}: {row['error'][:300]}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
