"""eval: streaming accuracy on the golden LV-ViT and tiny ONNX models, fixed and dynamic batch."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lvvit_opt.cli import main
from lvvit_opt.data import EvalTransform, postprocess, preprocess_dir, read_bin, top_k
from lvvit_opt.measure.evaluate import evaluate
from lvvit_opt.data.synthetic import make_image_dir, write_val_txt
from lvvit_opt.runtime import open_runner

IMAGES = 5


@pytest.fixture(scope="module")
def val_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("val")
    make_image_dir(directory, IMAGES, sizes=((160, 120), (120, 170), (300, 200)), modes=("RGB", "RGB", "L"))
    return directory


def _export_tiny(path: Path, batch: int | None) -> str:
    """conv + pool + linear, input `image` (N,3,224,224) -> `features` (N,1000); N fixed or dynamic."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 8, stride=8), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                                torch.nn.Flatten(), torch.nn.Linear(32, 1000)).eval()
    dynamic = {"image": {0: "N"}, "features": {0: "N"}} if batch is None else None
    torch.onnx.export(model, torch.zeros(batch or 1, 3, 224, 224), str(path), input_names=["image"],
                      output_names=["features"], dynamic_axes=dynamic, opset_version=13, dynamo=False)
    return str(path)


def _scores_by_batches(model: str, paths: list[Path], batch: int) -> list[np.ndarray]:
    """Reference: the model on the seed-identical tensors, in order, last batch zero-padded."""
    runner = open_runner(model)
    tensors = [EvalTransform()(p) for p in paths]
    rows = []
    for start in range(0, len(tensors), batch):
        chunk = tensors[start:start + batch]
        feed = np.zeros((batch, 3, 224, 224), np.float32)
        feed[:len(chunk)] = np.stack(chunk)
        rows += list(runner.infer_array(feed)["features"][:len(chunk)])
    return rows


def _labels_from_predictions(paths: list[Path], rows: list[np.ndarray]) -> dict[str, int]:
    """Images 1-3: the top-1 class; image 4: the 3rd best; image 5: the worst -> top-1 3/5, top-5 4/5."""
    picks = [0, 0, 0, 2, -1]
    return {p.name: int(np.argsort(-row, kind="stable")[pick]) for p, row, pick in zip(paths, rows, picks)}


def test_golden_eval_matches_postprocess_on_the_same_predictions(golden_onnx, val_dir, tmp_path):
    paths = sorted(val_dir.iterdir())
    rows = _scores_by_batches(golden_onnx, paths, batch=2)
    labels = _labels_from_predictions(paths, rows)
    val = write_val_txt(tmp_path / "val.txt", labels)

    result = evaluate(golden_onnx, val_dir, val, batch_size=16, workers=2)
    assert (result.accuracy.evaluated, result.accuracy.top1_correct, result.accuracy.top5_correct) == (5, 3, 4)
    assert (result.batch_size, result.batches, result.inferred, result.failed) == (2, 3, 5, {})
    assert result.notes == ["the model has a fixed batch of 2; --batch-size 16 does not apply"]
    assert result.predictions == {p.stem: [int(i) for i in top_k(r)] for p, r in zip(paths, rows)}
    assert result.images_per_s > 0 and result.infer_images_per_s >= result.images_per_s

    # the offline route on the same model: preprocess -> .bin -> ais_bench-style outputs -> postprocess
    prep = preprocess_dir(val_dir, tmp_path / "bins", workers=2)
    runner = open_runner(golden_onnx)
    run_dir = tmp_path / "out" / "2024_05_01-10_00_00"
    run_dir.mkdir(parents=True)
    bins = [Path(b) for b in prep.outputs]
    for start in range(0, len(bins), 2):
        feed = np.zeros((2, 3, 224, 224), np.float32)
        for slot, path in enumerate(bins[start:start + 2]):
            feed[slot] = read_bin(path)
        features = runner.infer_array(feed)["features"]
        for slot, path in enumerate(bins[start:start + 2]):
            features[slot].tofile(run_dir / f"{path.stem}_0.bin")
    offline = postprocess(tmp_path / "out", val)
    assert offline.to_dict() | {"source": "", "notes": []} == result.accuracy.to_dict() | {"source": "", "notes": []}


def test_dynamic_batch_runs_a_short_last_batch(tmp_path, val_dir):
    model = _export_tiny(tmp_path / "tiny_dyn.onnx", batch=None)
    paths = sorted(val_dir.iterdir())
    singles = _scores_by_batches(model, paths, batch=1)
    labels = _labels_from_predictions(paths, singles)
    result = evaluate(model, val_dir, labels, batch_size=2, workers=1)
    assert (result.batch_size, result.batches, result.notes) == (2, 3, [])
    assert (result.accuracy.top1_correct, result.accuracy.top5_correct) == (3, 4)
    assert result.predictions == {p.stem: [int(i) for i in top_k(r)] for p, r in zip(paths, singles)}


def test_fixed_batch_pads_and_drops_and_a_corrupt_image_is_skipped(tmp_path, val_dir):
    data = tmp_path / "val"
    data.mkdir()
    for path in sorted(val_dir.iterdir()):
        (data / path.name).write_bytes(path.read_bytes())
    (data / "ILSVRC2012_val_00000006.JPEG").write_bytes(b"\xff\xd8 broken")
    model = _export_tiny(tmp_path / "tiny_b4.onnx", batch=4)
    paths = sorted(val_dir.iterdir())
    rows = _scores_by_batches(model, paths, batch=4)
    labels = _labels_from_predictions(paths, rows) | {"ILSVRC2012_val_00000006.JPEG": 1}
    result = evaluate(model, data, labels, batch_size=3, workers=2)
    assert (result.batch_size, result.batches, result.images, result.inferred) == (4, 2, 6, 5)
    assert list(result.failed) == ["ILSVRC2012_val_00000006.JPEG"]
    assert (result.accuracy.evaluated, result.accuracy.top1_correct, result.accuracy.top5_correct) == (5, 3, 4)
    assert result.accuracy.missing_predictions == 1


def test_cli_eval_limit_and_json(golden_onnx, val_dir, tmp_path, cli_runner):
    paths = sorted(val_dir.iterdir())
    rows = _scores_by_batches(golden_onnx, paths[:3], batch=2)
    labels = _labels_from_predictions(paths[:3], rows) | {paths[4].name: 7}
    val = write_val_txt(tmp_path / "val.txt", labels)
    run = cli_runner.invoke(main, ["eval", golden_onnx, "--data", str(val_dir), "--labels", str(val),
                                   "--limit", "3", "--workers", "2", "--json", str(tmp_path / "eval.json")])
    assert run.exit_code == 0, run.output
    assert "top-1: 100.00 % (3/3)" in run.output and "inference only:" in run.output
    assert "note: the model has a fixed batch of 2; --batch-size 16 does not apply" in run.output
    assert "labels without a prediction" not in run.output  # --limit scores only the listed images
    data = json.loads((tmp_path / "eval.json").read_text())["result"]
    assert (data["images"], data["inferred"], data["batches"]) == (3, 3, 2)
    assert (data["accuracy"]["top1_correct"], data["accuracy"]["evaluated"]) == (3, 3)
    assert (data["accuracy"]["labels"], data["accuracy"]["missing_predictions"]) == (3, 0)
    assert "predictions" not in data


def test_cli_eval_backend_from_the_registry(golden_onnx, val_dir, tmp_path, cli_runner):
    """--backend picks a registered runner: onnx's reference evaluator scores exactly as onnxruntime;
    a runner that cannot open the file is refused in one line before any image is decoded."""
    paths = sorted(val_dir.iterdir())
    rows = _scores_by_batches(golden_onnx, paths[:3], batch=2)
    val = write_val_txt(tmp_path / "val.txt", _labels_from_predictions(paths[:3], rows))
    args = ["eval", golden_onnx, "--data", str(val_dir), "--labels", str(val), "--limit", "3", "--workers", "1"]
    run = cli_runner.invoke(main, args + ["--backend", "onnx_reference", "--json", str(tmp_path / "ref.json")])
    assert run.exit_code == 0, run.output
    data = json.loads((tmp_path / "ref.json").read_text())["result"]
    assert (data["accuracy"]["top1_correct"], data["accuracy"]["top5_correct"], data["inferred"]) == (3, 3, 3)
    refused = cli_runner.invoke(main, args + ["--backend", "ais_bench"])
    assert refused.exit_code == 2
    assert refused.output.count("\n") == 1 and refused.output.startswith("error:") and "ais_bench" in refused.output
    assert "Traceback" not in refused.output
