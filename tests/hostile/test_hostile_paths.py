"""Outputs that alias an input or another output are refused (exit 2) before any work:
same name, symlink, `..`, hard link; also directories and unwritable destinations."""
from __future__ import annotations

import os

import pytest

from hostile_helpers import assert_refused, diff_snapshots, invoke, snapshot, temp_leftovers

# (case id, argv, words the one error line must contain). Every case runs in the workspace
# (hostile_helpers.build_workspace) and must leave every byte of it as it was.
ALIAS_CASES = [
    ("apply-o-is-input", ["apply", "m.onnx", "-o", "m.onnx"], "is the input MODEL"),
    ("apply-o-symlink-to-input", ["apply", "m.onnx", "-o", "link.onnx"], "is the input MODEL"),
    ("apply-o-hardlink-to-input", ["apply", "m.onnx", "-o", "hard.onnx"], "is the input MODEL"),
    ("apply-o-dotdot-input", ["apply", "m.onnx", "-o", "sub/../m.onnx"], "is the input MODEL"),
    ("apply-input-is-symlink-o-target", ["apply", "link.onnx", "-o", "m.onnx"], "is the input MODEL"),
    ("apply-report-is-input", ["apply", "m.onnx", "-o", "out.onnx", "--report", "m.onnx"], "--report m.onnx"),
    ("apply-report-is-output", ["apply", "m.onnx", "-o", "out.onnx", "--report", "out.onnx"], "same file"),
    ("apply-report-hardlink-input", ["apply", "m.onnx", "-o", "out.onnx", "--report", "hard.onnx"], "--report"),
    ("apply-o-is-directory", ["apply", "m.onnx", "-o", "sub"], "is a directory"),
    ("apply-o-under-a-file", ["apply", "m.onnx", "-o", "not_a_dir/out.onnx"], "not a directory"),
    ("apply-o-unwritable", ["apply", "m.onnx", "-o", "/sys/lvvit_out.onnx"], "cannot write"),
    ("apply-report-unwritable", ["apply", "m.onnx", "-o", "out.onnx", "--report", "/sys/r.json"], "cannot write"),
    ("export-o-is-checkpoint", ["export", "--model", "lvvit_golden", "--checkpoint", "c.pth", "-o", "c.pth"],
     "is the input --checkpoint"),
    ("export-o-symlink-checkpoint", ["export", "--model", "lvvit_golden", "--checkpoint", "c.pth", "-o",
                                     "link.pth"], "is the input --checkpoint"),
    ("export-o-unwritable", ["export", "--model", "lvvit_golden", "-o", "/sys/e.onnx"], "cannot write"),
    ("golden-make-o-is-model", ["golden", "make", "m.onnx", "-o", "m.onnx"], "is the input MODEL"),
    ("golden-make-o-symlink-model", ["golden", "make", "m.onnx", "-o", "link.onnx"], "is the input MODEL"),
    ("golden-make-o-hardlink", ["golden", "make", "link.onnx", "-o", "hard.onnx"], "is the input MODEL"),
    ("golden-make-unwritable", ["golden", "make", "m.onnx", "-o", "/sys/g.npz"], "cannot write"),
    ("bench-json-is-model", ["bench", "m.onnx", "--json", "m.onnx", "--duration", "0.1"], "is the input"),
    ("bench-plot-is-model", ["bench", "m.onnx", "--plot", "hard.onnx", "--duration", "0.1"], "is the input"),
    ("bench-json-is-plot", ["bench", "m.onnx", "--json", "r.out", "--plot", "r.out", "--duration", "0.1"],
     "same file"),
    ("bench-json-is-reference", ["bench", "m.onnx", "--reference", "g.npz", "--json", "g.npz"], "--reference"),
    ("atc-log-is-model", ["atc", "m.onnx", "--soc-version", "Ascend310", "--log-file", "m.onnx", "--dry-run"],
     "is the input MODEL"),
    ("atc-output-is-model", ["atc", "m.onnx", "--soc-version", "Ascend310", "--output", "m", "--log-file",
                             "m.om"], "same file"),
    ("atc-keep-dtype-is-output", ["atc", "m.onnx", "--soc-version", "Ascend310", "--keep-dtype", "keep.cfg",
                                  "--log-file", "keep.cfg", "--dry-run"], "--keep-dtype"),
    ("atc-log-unwritable", ["atc", "m.onnx", "--soc-version", "Ascend310", "--log-file", "/sys/a.log"],
     "cannot write"),
    ("whitelist-output-is-file", ["whitelist", "patch", "--file", "opp/transpose.py", "--shape", "1,2,3,4",
                                  "--output", "transpose_link.py"], "is the input --file"),
    ("whitelist-output-is-model", ["whitelist", "patch", "--file", "opp/transpose.py", "--from-model", "m.onnx",
                                   "--output", "hard.onnx"], "--from-model"),
    ("run-out-is-checkpoint", ["run", "--model", "lvvit_golden", "--checkpoint", "c.pth", "--out", "c.pth"],
     "--out"),
    ("run-out-is-a-file", ["run", "--model", "lvvit_golden", "--out", "not_a_dir"], "is a file"),
    ("run-out-unwritable", ["run", "--model", "lvvit_golden", "--out", "/sys/lvvit_run"], "cannot write"),
    # --json PATH of every verb (the envelope) is an output like any other
    ("apply-json-is-report", ["apply", "m.onnx", "-o", "o.onnx", "--report", "r.json", "--json", "r.json"],
     "same file"),
    ("apply-json-is-input", ["apply", "m.onnx", "-o", "o.onnx", "--json", "link.onnx"], "is the input MODEL"),
    ("export-json-is-output", ["export", "--model", "lvvit_golden", "-o", "e.onnx", "--json", "e.onnx"],
     "same file"),
    ("validate-json-is-candidate", ["validate", "m.onnx", "c2.onnx", "--json", "c2.onnx"], "CANDIDATE"),
    ("validate-json-is-golden", ["validate", "m.onnx", "m.onnx", "--golden", "g.npz", "--json", "g.npz"],
     "--golden"),
    ("golden-make-json-is-output", ["golden", "make", "m.onnx", "-o", "x.npz", "--json", "x.npz"], "same file"),
    ("golden-make-o-is-inputs", ["golden", "make", "m.onnx", "-o", "g.npz", "--inputs", "g.npz"], "--inputs"),
    ("golden-check-json-is-golden", ["golden", "check", "m.onnx", "g.npz", "--json", "g.npz"], "GOLDEN"),
    ("apply-o-is-inputs", ["apply", "m.onnx", "-o", "g.npz", "--inputs", "g.npz"], "--inputs"),
    ("debug-json-is-reference", ["debug", "layers", "m.onnx", "--fp16", "--json", "m.onnx"], "REFERENCE"),
    ("debug-keep-dtype-is-reference", ["debug", "layers", "m.onnx", "--fp16", "--suggest-keep-dtype", "hard.onnx"],
     "REFERENCE"),
    ("inspect-keep-json-is-model", ["inspect", "m.onnx", "--keep-json", "link.onnx"], "MODEL"),
    ("doctor-json-is-model", ["doctor", "--model", "m.onnx", "--json", "m.onnx"], "--model"),
    ("whitelist-shapes-json-is-model", ["whitelist", "shapes", "m.onnx", "--json", "hard.onnx"], "MODEL"),
    ("whitelist-check-json-is-file", ["whitelist", "check", "--file", "opp/transpose.py", "--shape", "1,2,3,4",
                                      "--json", "transpose_link.py"], "--file"),
    ("whitelist-patch-json-is-file", ["whitelist", "patch", "--file", "opp/transpose.py", "--shape", "1,2,3,4",
                                      "--json", "opp/transpose.py"], "--file"),
    ("whitelist-restore-json-is-file", ["whitelist", "restore", "--file", "opp/transpose.py", "--json",
                                        "opp/transpose.py"], "--file"),
    ("passes-json-unwritable", ["passes", "--json", "/sys/p.json"], "cannot write"),
    ("preprocess-out-is-src", ["preprocess", "sub", "sub"], "OUT_DIR"),
]


@pytest.mark.parametrize("argv, words", [c[1:] for c in ALIAS_CASES], ids=[c[0] for c in ALIAS_CASES])
def test_output_aliasing_an_input_is_refused_before_any_work(ws, ws_before, argv, words):
    outcome = invoke(argv, ws)
    assert_refused(outcome, 2, words)
    assert diff_snapshots(ws_before, snapshot(ws)) == []
    assert temp_leftovers(ws) == []


def test_guard_accepts_distinct_paths_and_a_fresh_folder(ws):
    from lvvit_opt.core.fileio import guard_outputs

    guard_outputs({"-o": ws / "new" / "deeper" / "out.onnx", "--report": ws / "r.json", "--json": None},
                  {"MODEL": ws / "m.onnx", "--checkpoint": None})
    assert not (ws / "new").exists()  # the guard creates nothing


def test_same_path_sees_symlinked_folders(ws):
    from lvvit_opt.core.fileio import same_path

    os.symlink("sub", ws / "sublink")
    (ws / "sub" / "x").write_text("x")
    assert same_path(ws / "sublink" / "x", ws / "sub" / "x")
    assert same_path(ws / "sublink" / "new", ws / "sub" / "new")  # neither exists yet
    assert not same_path(ws / "sub" / "x", ws / "m.onnx")
