"""`--inputs`: one reader (lvvit_opt.verify.inputs) for validate, golden make, apply and debug layers.

Every form must give exactly the result of the equivalent numpy array.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from lvvit_opt.cli import main
from lvvit_opt.data import EvalTransform, preprocess_dir, write_info_for_dir
from lvvit_opt.core.errors import UserError
from lvvit_opt.verify.golden import validate_models
from lvvit_opt.verify.inputs import make_inputs
from lvvit_opt.verify.inputs import load_inputs
from lvvit_opt.runtime.base import TensorSpec

SPEC = [TensorSpec("image", (2, 3, 224, 224), "float32")]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two photos-to-be (odd sizes, RGB and greyscale) and their eval-transformed array."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 256, (260, 300, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (320, 240), dtype=np.uint8)).save(folder / "b.jpg", quality=95)
    transform = EvalTransform()
    array = np.stack([transform(folder / "a.png"), transform(folder / "b.jpg")])
    return folder, array


@pytest.fixture(scope="module")
def prep_dir(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep")
    preprocess_dir(images[0], out, workers=1)
    write_info_for_dir(out, out / "prep.info")
    return out


@pytest.fixture(scope="module")
def perturbed(golden_onnx, tmp_path_factory):
    model = onnx.load(golden_onnx)
    bias = next(i for i in model.graph.initializer if list(i.dims) == [1000])
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + np.float32(1e-3), bias.name))
    path = tmp_path_factory.mktemp("perturbed") / "perturbed.onnx"
    onnx.save(model, str(path))
    return str(path)


def _metrics(result):
    return result.to_dict()["comparisons"]


def test_every_real_form_equals_its_numpy_array(golden_onnx, perturbed, images, prep_dir, tmp_path):
    folder, array = images
    np.save(tmp_path / "x.npy", array)
    np.savez(tmp_path / "x.npz", image=array)
    baseline = validate_models(golden_onnx, perturbed, inputs=str(tmp_path / "x.npy"))
    assert baseline.input_source["kind"] == "npy" and baseline.input_sets == 1
    forms = {"npz": tmp_path / "x.npz", "preprocessed": prep_dir, "images": folder}
    for kind, path in forms.items():
        result = validate_models(golden_onnx, perturbed, inputs=str(path))
        assert result.input_source["kind"] == kind
        assert _metrics(result) == _metrics(baseline), kind
    info = validate_models(golden_onnx, perturbed, inputs=str(prep_dir / "prep.info"))
    assert info.input_source["kind"] == "preprocessed" and _metrics(info) == _metrics(baseline)
    assert load_inputs(folder, SPEC).feeds[0]["image"].tobytes() == array.tobytes()


def test_random_count_equals_its_array(golden_onnx, perturbed, tmp_path):
    feeds = make_inputs(SPEC, count=2, seed=3)
    np.savez(tmp_path / "r.npz", image=np.concatenate([f["image"] for f in feeds]))
    random = validate_models(golden_onnx, perturbed, inputs=2, seed=3)
    stored = validate_models(golden_onnx, perturbed, inputs=str(tmp_path / "r.npz"))
    assert random.input_source["source"] == "2 seeded random batch(es) (seed 3)" and random.seed == 3
    assert stored.input_sets == 2 and _metrics(stored) == _metrics(random)


def test_golden_make_and_apply_take_real_inputs(cli_runner, golden_onnx, images, prep_dir, tmp_path):
    folder, array = images
    made = cli_runner.invoke(main, ["golden", "make", golden_onnx, "-o", str(tmp_path / "g.npz"),
                                    "--inputs", str(prep_dir)])
    assert made.exit_code == 0, made.output
    with np.load(tmp_path / "g.npz") as data:
        assert data["image"].tobytes() == array.tobytes() and data["features"].shape == (2, 1000)
    # a golden file is itself a valid --inputs
    check = cli_runner.invoke(main, ["validate", golden_onnx, golden_onnx, "--inputs", str(tmp_path / "g.npz"),
                                     "--json", "-"])
    assert check.exit_code == 0, check.output
    assert json.loads(check.stdout)["result"]["input_source"]["source"] == str(tmp_path / "g.npz")
    applied = cli_runner.invoke(main, ["apply", golden_onnx, "-o", str(tmp_path / "o.onnx"), "--inputs", str(folder),
                                       "--report", str(tmp_path / "r.json")])
    assert applied.exit_code == 0, applied.output
    assert ("2 image(s), eval transform from defaults (LV-ViT-S): resize 248, center crop 224, bicubic"
            in applied.output)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["validation"]["input_source"]["kind"] == "images"


def test_validate_output_names_the_inputs(cli_runner, golden_onnx):
    result = cli_runner.invoke(main, ["validate", golden_onnx, golden_onnx, "--inputs", "1", "--seed", "5"])
    assert result.exit_code == 0
    assert "image (2, 3, 224, 224) x 1 set(s) from 1 seeded random batch(es) (seed 5)" in result.output


@pytest.mark.parametrize("make, message", [
    (lambda d: None, "neither a number of random batches nor an existing file"),
    (lambda d: np.save(d / "x.npy", np.zeros((3, 3, 224, 224), np.float32)), "3 row(s) is not a multiple of the model's batch 2"),
    (lambda d: np.save(d / "x.npy", np.zeros((2, 3, 112, 112), np.float32)), "the model expects (N, 3, 224, 224), got (2, 3, 112, 112)"),
    (lambda d: np.save(d / "x.npy", np.full((2, 3, 224, 224), np.nan, np.float32)), "holds NaN or Inf"),
    (lambda d: np.savez(d / "x.npz", a=np.zeros(1), b=np.zeros(1)), "lacks input(s) image (has a, b)"),
    (lambda d: (d / "x.npy").write_bytes(b"not numpy"), "not a readable .npy file"),
    (lambda d: (d / "x.info").write_text("0 a.bin 224\n"), "expected `index path width height`"),
])
def test_bad_inputs_exit_2_in_one_line(cli_runner, golden_onnx, tmp_path, make, message):
    make(tmp_path)
    target = next((p for p in tmp_path.iterdir()), tmp_path / "missing.npy")
    result = cli_runner.invoke(main, ["validate", golden_onnx, golden_onnx, "--inputs", str(target)])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output


def test_bin_of_the_wrong_size_is_refused(tmp_path):
    np.zeros((3, 100, 100), np.float32).tofile(tmp_path / "a.bin")
    with pytest.raises(UserError, match=r"a.bin holds 120000 bytes, not a float32 \(3, 224, 224\)"):
        load_inputs(tmp_path, SPEC)


def test_zero_or_negative_count_is_refused():
    with pytest.raises(UserError, match="at least 1"):
        load_inputs(0, SPEC)


def test_more_images_than_memory_is_refused_before_reading(images, monkeypatch):
    monkeypatch.setattr("lvvit_opt.core.resources.available_memory", lambda: 1024 * 1024)
    with pytest.raises(UserError, match=r"2 image\(s\) from .* needs about .* of memory"):
        load_inputs(images[0], SPEC)


def test_image_folders_follow_the_preprocessing_the_model_records(golden_onnx, images, tmp_path):
    """A model exported with other preprocessing (metadata_props): its images are cut its way."""
    from lvvit_opt.models.metadata import Preprocessing, set_props

    model = onnx.load(golden_onnx)
    recorded = Preprocessing((3, 224, 224), 1.0, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), source="test")
    set_props(model, recorded.to_props())
    path = tmp_path / "other_preprocessing.onnx"
    onnx.save(model, str(path))
    expected = EvalTransform(224, 1.0, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    array = np.stack([expected(images[0] / "a.png"), expected(images[0] / "b.jpg")])
    result = validate_models(str(path), str(path), inputs=str(images[0]))
    assert result.input_source["transform_from"] == "model metadata of other_preprocessing.onnx"
    assert load_inputs(images[0], SPEC, model=str(path)).feeds[0]["image"].tobytes() == array.tobytes()
    assert not np.array_equal(array, images[1])  # LV-ViT's defaults would have given other pixels
