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
