"""preprocess / postprocess / eval / merge under hostile input: impossible sizes, corrupt
resume records, unreadable images and outputs (one rule: listed, the rest processed, exit 1),
BOM label files, labels outside the model's classes, NaN and empty outputs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hostile_helpers import (assert_refused, build_images, diff_snapshots, invoke, snapshot, temp_leftovers)


@pytest.fixture
def data(tmp_path):
    """images/ (3 JPEGs), val.txt, a results/ folder of ais_bench-style outputs, and m.onnx."""
    import shutil

    from hostile_helpers import GOLDEN_DIR

    images, labels = build_images(tmp_path, count=3)
    results = tmp_path / "results"
    results.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        np.save(results / f"ILSVRC2012_val_{i + 1:08d}_0.npy", rng.standard_normal(1000).astype(np.float32))
    shutil.copyfile(GOLDEN_DIR / "lvvit_golden.onnx", tmp_path / "m.onnx")
    return tmp_path


def _unchanged(root, before):
    assert diff_snapshots(before, snapshot(root)) == []
    assert temp_leftovers(root) == []


# -- preprocess ----------------------------------------------------------------------------

PREPROCESS_REFUSED = [
    ("img-size-impossible", ["--img-size", "8192", "--workers", "1024"], "memory"),
    ("out-dir-is-src", [], "OUT_DIR"),  # OUT_DIR replaced by images below
    ("out-dir-is-a-file", [], "is a file"),
    ("out-dir-unwritable", [], "cannot write"),
    ("info-is-an-image", ["--info", "images/ILSVRC2012_val_00000001.JPEG"], "inside the input folder SRC_DIR"),
    ("json-is-an-image", ["--json", "images/ILSVRC2012_val_00000002.JPEG"], "inside the input folder SRC_DIR"),
    ("info-unwritable", ["--info", "/sys/p.info"], "cannot write"),
    ("zero-workers", ["--workers", "0"], "--workers"),
    ("crop-pct-zero", ["--crop-pct", "0"], "--crop-pct"),
    ("crop-pct-nan", ["--crop-pct", "nan"], "expected a fraction in (0, 1]"),
]


@pytest.mark.parametrize("case, extra, words", PREPROCESS_REFUSED, ids=[c[0] for c in PREPROCESS_REFUSED])
def test_preprocess_refuses_before_writing(data, case, extra, words):
    out = {"out-dir-is-src": "images", "out-dir-is-a-file": "val.txt", "out-dir-unwritable": "/sys/prep"}.get(case, "prep")
    before = snapshot(data)
    assert_refused(invoke(["preprocess", "images", out, *extra], data), 2, words)
    _unchanged(data, before)


def test_preprocess_corrupt_resume_record_is_one_line(data):
    (data / "prep").mkdir()
    (data / "prep" / ".lvvit-preprocess.json").write_bytes(b"\xff\xfe{garbage")
    before = snapshot(data)
    assert_refused(invoke(["preprocess", "images", "prep"], data), 2, "corrupt")
    _unchanged(data, before)


def test_preprocess_empty_resume_record_is_one_line(data):
    (data / "prep").mkdir()
    (data / "prep" / ".lvvit-preprocess.json").write_bytes(b"")
    assert_refused(invoke(["preprocess", "images", "prep"], data), 2, "corrupt")


def test_preprocess_sweeps_temps_of_dead_runs_and_keeps_live_ones(data):
    import os

    prep = data / "prep"
    invoke(["preprocess", "images", "prep", "--img-size", "32", "--workers", "1"], data)
    dead = prep / ".ILSVRC2012_val_00000001.bin.lvvit-tmp.999999999.0a0b.bin"
    legacy = prep / ".ILSVRC2012_val_00000002.bin.partial-999999999"
    live = prep / f".ILSVRC2012_val_00000003.bin.lvvit-tmp.{os.getpid()}.0c0d.bin"
    for path in (dead, legacy, live):
        path.write_bytes(b"\0" * 100)
    outcome = invoke(["preprocess", "images", "prep", "--img-size", "32", "--workers", "1"], data)
    assert outcome.exit_code == 0, outcome.stderr
    assert not dead.exists() and not legacy.exists()
    assert live.exists()  # another run, still alive, is writing it


def test_unreadable_image_same_rule_in_preprocess_and_eval(data):
    (data / "images" / "ILSVRC2012_val_00000002.JPEG").write_bytes(b"not a jpeg")
    before = snapshot(data / "images")
    pre = invoke(["preprocess", "images", "prep", "--img-size", "32", "--workers", "1"], data)
    assert_refused(pre, 1, "could not be read")
    assert sorted(p.name for p in (data / "prep").glob("*.bin")) == [
        "ILSVRC2012_val_00000001.bin", "ILSVRC2012_val_00000003.bin"]
    ev = invoke(["eval", "m.onnx", "--data", "images", "--labels", "val.txt", "--workers", "1",
                 "--json", "ev.json"], data)
    assert_refused(ev, 1, "could not be read")
    assert "ILSVRC2012_val_00000002.JPEG" in ev.stdout
    assert json.loads((data / "ev.json").read_text())["result"]["inferred"] == 2  # the rest was scored and written
    assert diff_snapshots(before, snapshot(data / "images")) == []


# -- labels --------------------------------------------------------------------------------

def test_bom_in_the_label_file_keeps_the_first_label(data):
    from lvvit_opt.data import read_labels

    text = (data / "val.txt").read_text()
    (data / "bom.txt").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert read_labels(data / "bom.txt") == read_labels(data / "val.txt")
    outcome = invoke(["postprocess", "results", "--labels", "bom.txt"], data)
    plain = invoke(["postprocess", "results", "--labels", "val.txt"], data)
    assert outcome.exit_code == plain.exit_code == 0, outcome.stderr
    assert outcome.stdout == plain.stdout and "labels without a prediction" not in outcome.stdout


@pytest.mark.parametrize("verb", ["postprocess", "eval"])
def test_label_outside_the_models_classes_is_refused(data, verb):
    (data / "val.txt").write_text("ILSVRC2012_val_00000001.JPEG 0\nILSVRC2012_val_00000002.JPEG 1000\n"
                                  "ILSVRC2012_val_00000003.JPEG 5\n")
    before = snapshot(data)
    argv = (["postprocess", "results", "--labels", "val.txt", "--json", "o.json"] if verb == "postprocess" else
            ["eval", "m.onnx", "--data", "images", "--labels", "val.txt", "--workers", "1", "--json", "o.json"])
    assert_refused(invoke(argv, data), 2, "outside the model's 1000 classes")
    _unchanged(data, before)


@pytest.mark.parametrize("content, why", [
    (b"", "empty"),
    (b"\x93NUMPY\x01\x00", "EOFError|ValueError"),
], ids=["zero-byte-npy", "truncated-npy"])
def test_postprocess_unusable_result_file_is_listed_and_exit_1(data, content, why):
    (data / "results" / "ILSVRC2012_val_00000002_0.npy").write_bytes(content)
    before = snapshot(data)
    outcome = invoke(["postprocess", "results", "--labels", "val.txt"], data)
    assert_refused(outcome, 1, "could not be used")
    assert "ILSVRC2012_val_00000002_0.npy" in outcome.stdout and "Aborted" not in outcome.stderr
    _unchanged(data, before)


def test_postprocess_zero_byte_bin_is_listed(data):
    for npy in (data / "results").glob("*.npy"):
        np.load(npy).tofile(npy.with_suffix(".bin"))
        npy.unlink()
    (data / "results" / "ILSVRC2012_val_00000003_0.bin").write_bytes(b"")
    outcome = invoke(["postprocess", "results", "--labels", "val.txt"], data)
    assert_refused(outcome, 1, "could not be used")
    assert "ILSVRC2012_val_00000003_0.bin" in outcome.stdout


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_postprocess_non_finite_scores_are_not_a_prediction(data, value):
    for npy in (data / "results").glob("*.npy"):
        np.save(npy, np.full(1000, value, dtype=np.float32))
    outcome = invoke(["postprocess", "results", "--labels", "val.txt"], data)
    assert_refused(outcome, 1, "could not be used")
    assert "100.00 %" not in outcome.stdout and "NaN or infinite" in outcome.stdout


@pytest.mark.parametrize("argv, words", [
    (["postprocess", "results", "--labels", "val.txt", "--json", "val.txt"], "--json"),
    (["postprocess", "results", "--labels", "val.txt", "--json", "/sys/o.json"], "cannot write"),
    (["eval", "m.onnx", "--data", "images", "--labels", "val.txt", "--json", "m.onnx"], "is the input MODEL"),
    (["eval", "m.onnx", "--data", "images", "--labels", "val.txt", "--json", "val.txt"], "--labels"),
    (["merge", "a.json", "--json", "a.json"], "is the input"),
    (["postprocess", "results", "--labels", "val.txt", "--json", "results/ILSVRC2012_val_00000001_0.npy"],
     "inside the input folder RESULT_DIR"),
    (["eval", "m.onnx", "--data", "images", "--labels", "val.txt", "--json",
      "images/ILSVRC2012_val_00000003.JPEG"], "inside the input folder --data"),
], ids=["postprocess-json-is-labels", "postprocess-json-unwritable", "eval-json-is-model", "eval-json-is-labels",
        "merge-json-is-input", "postprocess-json-is-a-result", "eval-json-is-an-image"])
def test_data_outputs_aliasing_inputs_are_refused(data, argv, words):
    (data / "a.json").write_text("{}")
    before = snapshot(data)
    assert_refused(invoke(argv, data), 2, words)
    _unchanged(data, before)


@pytest.mark.parametrize("verb", ["postprocess", "eval"])
def test_labels_that_never_end_are_refused(data, verb):
    """/dev/zero (or a FIFO) as --labels: one line, not a hang eating memory."""
    argv = (["postprocess", "results", "--labels", "/dev/zero"] if verb == "postprocess" else
            ["eval", "m.onnx", "--data", "images", "--labels", "/dev/zero", "--workers", "1"])
    assert_refused(invoke(argv, data), 2, "not a regular file")


def test_merge_of_a_result_that_never_ends_is_refused(data):
    assert_refused(invoke(["merge", "/dev/zero"], data), 2, "not a regular file")
