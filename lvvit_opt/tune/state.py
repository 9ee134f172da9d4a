"""tune's state file (OUT/tune_state.json): its schema and its reader.

A state that parses but has another structure (edited by hand, written by another version,
another file under that name) is one line naming the first field that differs and the way out,
never a traceback halfway through the search.
"""
from __future__ import annotations

import os
from typing import Any

from lvvit_opt.core.readers import Fields, Is, ListOf, MapOf, Nullable, read_state

STATUSES = ("pending", "passed", "rejected", "failed", "duplicate", "skipped", "pruned", "measured", "unmeasured")

# What the search reads back from a stored candidate (Candidate.to_dict); other fields are allowed.
GATE = Fields({"passed": Is("bool"), "reasons": ListOf(Is("str"))},
              {"top1_agreement": Nullable(Is("number")), "keep_fp32": ListOf(Is("str")), "metric": Is("str")})
SCREEN = Fields({"fps": Is("number")}, {"spread_pct": Is("number"), "calls": Is("int")})
TIMING = Fields({"fps": Is("number"), "round_fps": ListOf(Is("number"))}, {"spread_pct": Is("number")})
CANDIDATE = Fields({"batch": Is("int"), "passes": ListOf(Is("str")), "precision": Is("str"), "options": Is("dict"),
                    "status": Is("str")},
                   {"reason": Is("str"), "gate": Nullable(GATE), "screen": Nullable(SCREEN),
                    "timing": Nullable(TIMING), "measured_s": Is("number"), "tie": Is("bool"),
                    "reused": Is("bool"), "artefact": Nullable(Is("str")), "key": Is("str")})
STATE = Fields({"version": Is("int"), "fingerprint": Is("dict"), "candidates": MapOf(CANDIDATE)})


def read_tune_state(path: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """The parsed state, checked against STATE (and every status against STATUSES)."""
    from lvvit_opt.core.errors import UserError, shown

    way_out = f"remove it or give a fresh --out (not {shown(out)})"
    data = read_state(path, "--out", STATE, way_out)
    for key, entry in data["candidates"].items():
        if entry["status"] not in STATUSES:
            raise UserError(f"--out {shown(path)}: not in the expected format ($.candidates[{key!r}].status is "
                            f"{entry['status']!r}); {way_out}")
    return data


# -- the exports `tune --model NAME` keeps in OUT/models, reused only with their provenance ----------

PROVENANCE_SUFFIX = ".provenance.json"
PROVENANCE = Fields({"model": Is("str"), "checkpoint_sha256": Nullable(Is("str")), "batch": Is("int"),
                     "seed": Is("int"), "tool_version": Is("str"), "onnx_sha256": Is("str")})


def stored_export(model_name: str, checkpoint: str | os.PathLike | None, out: str | os.PathLike, batch: int,
                  seed: int = 0, log=None, check_only: bool = False):
    """OUT/models/NAME_bsB.onnx exported from `checkpoint` (None: seeded random weights), reused only
    when its provenance record (beside it) names the same model, weights (the checkpoint's SHA-256),
    batch, seed and lvvit-opt version, and the file is the one exported. A record of other weights is
    refused in one line before anything is written (the tune state in OUT was measured on them); a
    missing or stale record (another version, an interrupted run) means exporting again. With
    `check_only` nothing is exported (a caller checks every batch before exporting any)."""
    from pathlib import Path

    from lvvit_opt import __version__
    from lvvit_opt.core.errors import UserError, shown
    from lvvit_opt.core.fileio import write_text_atomic
    from lvvit_opt.core.readers import CHECKPOINT, check_loadable, file_sha256

    if checkpoint is not None:  # hashed below: a FIFO, a device or more than the memory is refused first
        check_loadable(checkpoint, "--checkpoint", CHECKPOINT)
    path = Path(out) / "models" / f"{model_name}_bs{batch}.onnx"
    record_path = Path(str(path) + PROVENANCE_SUFFIX)
    wanted = {"model": model_name, "batch": int(batch), "seed": int(seed), "tool_version": __version__,
              "checkpoint_sha256": None if checkpoint is None else file_sha256(checkpoint, "--checkpoint", CHECKPOINT)}

    def weights(sha: str | None, seed_used: int) -> str:
        return f"random weights (seed {seed_used})" if sha is None else f"checkpoint sha256 {sha[:12]}"

    if os.path.lexists(record_path) and os.path.lexists(path):
        try:
            record = read_state(record_path, "", PROVENANCE, "")
        except UserError:
            if not os.path.isfile(record_path):  # a FIFO, device or folder there: not ours to replace
                raise UserError(f"{shown(record_path)}: not a regular file; give a fresh --out") from None
            record = None
        if record is not None and (record["model"], record["checkpoint_sha256"]) != (model_name,
                                                                                      wanted["checkpoint_sha256"]):
            had = weights(record["checkpoint_sha256"], record["seed"])
            now = weights(None, seed) if checkpoint is None else f"--checkpoint {shown(checkpoint)}"
            raise UserError(f"--out {shown(out)} holds {path.name} exported from {had}, not from {now}; "
                            f"its tune was measured on those weights: give a fresh --out")
        if record is not None and all(record[k] == v for k, v in wanted.items()) \
                and file_sha256(path, "--out") == record["onnx_sha256"]:
            return path
    if check_only:
        return path
    from lvvit_opt.export import export_onnx

    if os.path.lexists(path) and log is not None:
        log(f"{shown(path)}: no matching provenance record; exporting it again")
    export_onnx(path, model=model_name, checkpoint=checkpoint, batch_size=batch, seed=seed)
    record = dict(wanted, onnx_sha256=file_sha256(path, "--out"))
    import json

    write_text_atomic(record_path, json.dumps(record, indent=1) + "\n")
    return path
