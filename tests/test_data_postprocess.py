"""postprocess: both tools' output formats, pairing by stem (never by order), exact counts."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from lvvit_opt.cli import main
from lvvit_opt.data import postprocess, read_labels
from lvvit_opt.data.synthetic import val_name, write_val_txt
from lvvit_opt.core.errors import UserError

IMAGES = 30
CLASSES = 1000


@pytest.fixture(scope="module")
def scores() -> dict[str, np.ndarray]:
    """Distinct, well-separated scores per image (stable under the legacy '%f' text format)."""
    rng = np.random.default_rng(7)
    return {val_name(i + 1).rsplit(".", 1)[0]: (rng.permutation(CLASSES) * 0.01 - 3).astype(np.float32)
            for i in range(IMAGES)}


@pytest.fixture(scope="module")
def labels(scores) -> dict[str, int]:
    """Built from the predictions: 18 right at top-1, 6 more in the top 5 (3rd best), 6 wrong.

    Expected: top-1 18/30, top-5 24/30.
    """
    labelled = {}
    for i, (stem, row) in enumerate(scores.items()):
        order = np.argsort(-row)
        labelled[stem + ".JPEG"] = int(order[0] if i < 18 else order[2] if i < 24 else order[-1])
    return labelled


def _write_val(path: Path, labels: dict[str, int], extra: dict[str, int] | None = None) -> Path:
    items = list(labels.items()) + list((extra or {}).items())
    random.Random(3).shuffle(items)  # val.txt order must not matter either
    return write_val_txt(path, dict(items))


def _write_outputs(directory: Path, scores: dict[str, np.ndarray], fmt: str) -> None:
    """Write outputs in a shuffled creation order (directory listing order is then arbitrary)."""
    directory.mkdir(parents=True)
    stems = list(scores)
    random.Random(5).shuffle(stems)
    for stem in stems:
        row = scores[stem]
        if fmt == "legacy_txt":
            (directory / f"{stem}_1.txt").write_text("".join(f"{v:f} " for v in row))
        elif fmt == "legacy_bin":
            row.tofile(directory / f"{stem}_1.bin")
        elif fmt == "ais_bin":
            row.reshape(1, -1).tofile(directory / f"{stem}_0.bin")
        elif fmt == "ais_npy":
            np.save(directory / f"{stem}_0.npy", row.reshape(1, -1))


@pytest.mark.parametrize("fmt", ["legacy_txt", "legacy_bin", "ais_bin", "ais_npy"])
def test_known_accuracy_in_every_format(tmp_path, scores, labels, fmt):
    result_dir = tmp_path / "result"
    if fmt.startswith("ais"):
        _write_outputs(result_dir / "2024_05_01-10_00_00", scores, fmt)
        (result_dir / "2024_05_01-10_00_00_summary.json").write_text("{}")
    else:
        _write_outputs(result_dir, scores, fmt)
    result = postprocess(result_dir, _write_val(tmp_path / "val.txt", labels))
    assert (result.evaluated, result.top1_correct, result.top5_correct) == (30, 18, 24)
    assert result.top1 == 0.6 and result.top5 == 0.8
    assert (result.unmatched_predictions, result.missing_predictions, result.unreadable) == (0, 0, {})


def test_unmatched_and_missing_are_counted_not_shifted(tmp_path, scores, labels):
    """The seed paired sorted outputs with val.txt lines: one missing output shifts every later pair."""
    present = dict(list(scores.items())[3:])          # outputs for images 1..3 are missing
    extra_scores = {"ILSVRC2012_val_00009999": scores[next(iter(scores))],
                    "ILSVRC2012_val_00009998": scores[next(iter(scores))]}
    _write_outputs(tmp_path / "result", {**present, **extra_scores}, "legacy_txt")
    result = postprocess(tmp_path / "result", _write_val(tmp_path / "val.txt", labels))
    # images 4..18 right (15), 19..24 top-5 only (6), 25..30 wrong (6)
    assert (result.evaluated, result.top1_correct, result.top5_correct) == (27, 15, 21)
    assert (result.predictions, result.labels) == (29, 30)
    assert result.unmatched_predictions == 2
    assert result.unmatched_examples == ["ILSVRC2012_val_00009998", "ILSVRC2012_val_00009999"]
    assert result.missing_predictions == 3
    assert result.missing_examples == [val_name(i).rsplit(".", 1)[0] for i in (1, 2, 3)]
    text = result.summary()
    assert "top-1: 55.56 % (15/27)" in text and "labels without a prediction: 3" in text


def test_wrong_sized_output_is_reported(tmp_path, scores, labels):
    _write_outputs(tmp_path / "result", scores, "legacy_bin")
    bad = next(iter(scores))
    (tmp_path / "result" / f"{bad}_1.bin").write_bytes(b"\0" * 12)
    result = postprocess(tmp_path / "result", _write_val(tmp_path / "val.txt", labels))
    assert result.unreadable == {f"{bad}_1.bin": "3 values, expected 1000"}
    assert (result.evaluated, result.missing_predictions) == (29, 1)


@pytest.mark.parametrize("line,why", [("ILSVRC2012_val_00000003.JPEG", "expected '<image name> <class index>'"),
                                      ("ILSVRC2012_val_00000003.JPEG cat", "expected"),
                                      ("ILSVRC2012_val_00000001.JPEG 5", "labelled twice")])
def test_malformed_val_txt_names_the_line(tmp_path, line, why):
    path = tmp_path / "val.txt"
    path.write_text(f"ILSVRC2012_val_00000001.JPEG 65\n\nILSVRC2012_val_00000002.JPEG 970\n{line}\n")
    with pytest.raises(UserError, match=rf"val\.txt:4: .*{why}"):
        read_labels(path)


def test_several_ais_bench_runs_must_be_chosen(tmp_path, scores, labels):
    for run in ("2024_05_01-10_00_00", "2024_05_02-10_00_00"):
        _write_outputs(tmp_path / "out" / run, dict(list(scores.items())[:2]), "ais_bin")
    with pytest.raises(UserError, match="several runs inside"):
        postprocess(tmp_path / "out", labels)


def test_cli_postprocess_prints_and_writes_json(tmp_path, scores, labels, cli_runner):
    _write_outputs(tmp_path / "result", scores, "ais_npy")
    val = _write_val(tmp_path / "val.txt", labels)
    run = cli_runner.invoke(main, ["postprocess", str(tmp_path / "result"), "--labels", str(val),
                                   "--json", str(tmp_path / "acc.json")])
    assert run.exit_code == 0, run.output
    assert "top-1: 60.00 % (18/30)" in run.output and "top-5: 80.00 % (24/30)" in run.output
    data = json.loads((tmp_path / "acc.json").read_text())["result"]
    assert (data["top1_correct"], data["top5_correct"], data["evaluated"], data["top1"]) == (18, 24, 30, 0.6)

    bad = tmp_path / "bad.txt"
    bad.write_text("ILSVRC2012_val_00000001.JPEG\n")
    run = cli_runner.invoke(main, ["postprocess", str(tmp_path / "result"), "--labels", str(bad)])
    assert run.exit_code == 2
    assert run.output.startswith(f"error: {bad}:1: expected")
