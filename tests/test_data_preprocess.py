"""preprocess: byte-identical to the seed's timm recipe, parallel, resumable, robust to bad images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lvvit_opt.cli import main
from lvvit_opt.data import EvalTransform, preprocess_dir
from lvvit_opt.data.preprocess import SETTINGS_FILE
from lvvit_opt.data.synthetic import make_image_dir, synthetic_image, val_name
from lvvit_opt.core.errors import UserError

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
BIN_BYTES = 3 * 224 * 224 * 4


def seed_reference(path, img_size: int = 224, crop_pct: float = 0.9, interpolation: str = "bicubic") -> np.ndarray:
    """The seed's LV_Vit_preprocess.py: timm's eval transform (prefetcher layout) + float64 normalisation."""
    from timm.data.transforms_factory import transforms_imagenet_eval

    transform = transforms_imagenet_eval((img_size, img_size), interpolation=interpolation, use_prefetcher=True,
                                         mean=MEAN, std=STD, crop_pct=crop_pct)
    img = transform(Image.open(path).convert("RGB")).numpy().astype(np.float32)
    img = (img - np.array([x * 255 for x in MEAN]).reshape(3, 1, 1)) / np.array([x * 255 for x in STD]).reshape(3, 1, 1)
    return img.astype(np.float32)


def _save(directory: Path, name: str, width: int, height: int, mode: str, seed: int) -> Path:
    path = directory / name
    synthetic_image(width, height, mode, seed=seed).save(path)
    return path


@pytest.fixture(scope="module")
def mixed_images(tmp_path_factory) -> list[Path]:
    """Several sizes (both orientations, odd, exact 248/224, extreme aspect, tiny) and modes."""
    directory = tmp_path_factory.mktemp("mixed")
    cases = [((500, 375), "RGB", ".JPEG"), ((375, 500), "L", ".JPEG"), ((333, 500), "CMYK", ".JPEG"),
             ((249, 248), "RGB", ".JPEG"), ((224, 224), "RGB", ".png"), ((640, 427), "P", ".png"),
             ((300, 260), "RGBA", ".png"), ((1000, 17), "RGB", ".JPEG"), ((31, 45), "L", ".png"),
             ((2400, 1800), "RGB", ".JPEG")]
    return [_save(directory, val_name(i + 1, suffix), w, h, mode, seed=i)
            for i, ((w, h), mode, suffix) in enumerate(cases)]


def test_transform_is_byte_identical_to_the_seed_recipe(mixed_images):
    transform = EvalTransform()
    for path in mixed_images:
        ours = transform(path)
        assert ours.dtype == np.float32 and ours.shape == (3, 224, 224)
        assert ours.tobytes() == seed_reference(path).tobytes(), path.name


@pytest.mark.parametrize("crop_pct,interpolation,img_size", [(1.0, "bicubic", 224), (0.875, "bilinear", 224),
                                                             (0.9, "bicubic", 160)])
def test_other_transform_settings_match_timm(mixed_images, crop_pct, interpolation, img_size):
    transform = EvalTransform(img_size=img_size, crop_pct=crop_pct, interpolation=interpolation)
    for path in mixed_images[:4]:
        assert transform(path).tobytes() == seed_reference(path, img_size, crop_pct, interpolation).tobytes()


def test_geometry_follows_torchvision():
    transform = EvalTransform()
    assert transform.resize_shorter_to == 248
    assert transform.resized_size(500, 375) == (330, 248)   # int(248 * 500 / 375) = 330
    assert transform.resized_size(375, 500) == (248, 330)
    # torchvision's CenterCrop uses round(): (249 - 224) / 2 = 12.5 -> 12 (banker's rounding)
    assert transform.crop_box(249, 248) == (12, 12, 236, 236)
    assert transform.crop_box(251, 248) == (14, 12, 238, 236)


def test_preprocess_dir_writes_seed_bins_and_info_file(mixed_images, tmp_path):
    src = mixed_images[0].parent
    info = tmp_path / "prep.info"
    result = preprocess_dir(src, tmp_path / "bins", workers=2, info_file=info)
    assert (result.images, result.written, result.skipped, result.failed) == (10, 10, 0, {})
    expected_lines = []
    for index, path in enumerate(mixed_images):
        out = tmp_path / "bins" / (path.name.rsplit(".", 1)[0] + ".bin")
        assert out.read_bytes() == seed_reference(path).tobytes(), path.name
        expected_lines.append(f"{index} {out} 224 224\n")
    assert info.read_text() == "".join(expected_lines)
    assert sorted(p.name for p in (tmp_path / "bins").iterdir() if p.name.startswith(".")) == [SETTINGS_FILE]


def test_interrupted_run_resumes_without_partial_files(tmp_path):
    src = tmp_path / "val"
    paths = make_image_dir(src, 24, sizes=((120, 90), (90, 130)))
    out = tmp_path / "bins"
    seen = []

    def interrupt_after_five(done, total):
        seen.append(done)
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        preprocess_dir(src, out, workers=2, progress=interrupt_after_five)
    complete = sorted(p.name for p in out.glob("*.bin"))
    # two workers may finish every image before the interrupt lands (a quiet, fast machine): <= 24
    assert 5 <= len(complete) <= 24 and all((out / n).stat().st_size == BIN_BYTES for n in complete)
    # simulate a kill in the middle of a write: a stray temporary and a short .bin
    (out / f".{val_name(24, '.bin')}.partial-4242").write_bytes(b"\0" * 100)
    (out / val_name(24, ".bin")).write_bytes(b"\0" * 100)
    kept_before = {n: (out / n).stat().st_mtime_ns for n in complete if n != val_name(24, ".bin")}

    result = preprocess_dir(src, out, workers=2)
    assert result.skipped == len(kept_before)
    assert result.written == 24 - len(kept_before)
    assert not list(out.glob(".*.partial-*"))
    for path in paths:
        assert (out / (path.stem + ".bin")).read_bytes() == seed_reference(path).tobytes()
    for name, mtime in kept_before.items():
        assert (out / name).stat().st_mtime_ns == mtime, f"{name} was rewritten"

    again = preprocess_dir(src, out, workers=2)
    assert (again.written, again.skipped) == (0, 24)


def test_corrupt_images_are_reported_and_the_rest_continue(tmp_path, cli_runner):
    src = tmp_path / "val"
    paths = make_image_dir(src, 6, sizes=((150, 100),))
    truncated = paths[2].read_bytes()
    paths[2].write_bytes(truncated[: len(truncated) // 3])
    (src / val_name(7)).write_bytes(b"this is not a JPEG")
    info = tmp_path / "x.info"

    result = preprocess_dir(src, tmp_path / "bins", workers=2, info_file=info)
    assert result.images == 7 and result.written == 5
    assert sorted(result.failed) == [paths[2].name, val_name(7)]
    assert "truncated" in result.failed[paths[2].name]
    assert "UnidentifiedImageError" in result.failed[val_name(7)]
    good = [p for i, p in enumerate(paths) if i != 2]
    assert info.read_text() == "".join(f"{i} {tmp_path / 'bins' / (p.stem + '.bin')} 224 224\n"
                                       for i, p in enumerate(good))
    assert sorted(p.name for p in (tmp_path / "bins").glob("*.bin")) == sorted(p.stem + ".bin" for p in good)

    run = cli_runner.invoke(main, ["preprocess", str(src), str(tmp_path / "cli_bins"), "--workers", "2"])
    assert run.exit_code == 1
    assert f"failed: {paths[2].name}: OSError" in run.output
    assert "error: 2 of 7 images could not be read" in run.output


def test_changed_settings_refuse_to_mix_outputs(tmp_path):
    src = tmp_path / "val"
    make_image_dir(src, 2, sizes=((120, 90),))
    preprocess_dir(src, tmp_path / "bins", workers=1)
    with pytest.raises(UserError, match="other settings"):
        preprocess_dir(src, tmp_path / "bins", workers=1, transform=EvalTransform(crop_pct=1.0))


def test_cli_preprocess_json_and_inputs_untouched(tmp_path, cli_runner):
    src = tmp_path / "val"
    paths = make_image_dir(src, 3, sizes=((130, 97),), modes=("RGB", "L", "P"))
    before = {p.name: p.read_bytes() for p in paths}
    run = cli_runner.invoke(main, ["preprocess", str(src), str(tmp_path / "bins"), "--workers", "2",
                                   "--info", str(tmp_path / "p.info"), "--json", str(tmp_path / "p.json")])
    assert run.exit_code == 0, run.output
    assert "3 written, 0 already complete, 0 failed" in run.output
    import json

    data = json.loads((tmp_path / "p.json").read_text())["result"]
    assert (data["written"], data["output_count"], data["failed"]) == (3, 3, {})
    assert data["transform"] == {"img_size": 224, "crop_pct": 0.9, "interpolation": "bicubic",
                                 "mean": list(MEAN), "std": list(STD)}
    assert {p.name: p.read_bytes() for p in paths} == before
    assert len((tmp_path / "p.info").read_text().splitlines()) == 3


def test_uint8_sources_hold_exactly_the_seed_crop(mixed_images, tmp_path):
    """preprocess --uint8 (static AIPP): a resized square whose centre crop is the seed's crop, byte for byte,
    and whose AIPP-style normalisation in float64 is the seed's tensor."""
    from lvvit_opt.data.transform import AippSource

    source = AippSource(EvalTransform())
    assert (source.src, source.start, source.output_nbytes) == (248, 12, 248 * 248 * 3)
    usable = [p for p in mixed_images if min(Image.open(p).size) >= 17]
    result = preprocess_dir(usable[0].parent, tmp_path / "u8", transform=source, workers=1,
                            info_file=tmp_path / "u8.info")
    assert "uint8 NHWC [248, 248, 3]" in result.summary()
    from lvvit_opt.data.preprocess import read_uint8_bin

    mean = np.array([m * 255 for m in MEAN])
    std = np.array([s * 255 for s in STD])
    for out in result.outputs:
        name = Path(out).stem
        image = next(p for p in mixed_images if p.stem == name)
        square = read_uint8_bin(out, 248)
        assert Path(out).stat().st_size == 248 * 248 * 3
        crop = square[12:236, 12:236].astype(np.float64).transpose(2, 0, 1)
        normalised = ((crop - mean[:, None, None]) / std[:, None, None]).astype(np.float32)
        assert normalised.tobytes() == seed_reference(image).tobytes(), name
    assert all(line.endswith(" 248 248") for line in (tmp_path / "u8.info").read_text().splitlines())
    settings = (tmp_path / "u8" / SETTINGS_FILE).read_text()
    assert '"dtype": "uint8"' in settings and '"layout": "NHWC"' in settings


def test_cli_preprocess_uint8(tmp_path, cli_runner):
    src = tmp_path / "val"
    make_image_dir(src, 2, sizes=((300, 260),))
    run = cli_runner.invoke(main, ["preprocess", str(src), str(tmp_path / "bins"), "--uint8", "--workers", "1"])
    assert run.exit_code == 0, run.output
    assert "uint8 NHWC 248x248x3" in run.output
    assert sorted(p.stat().st_size for p in (tmp_path / "bins").glob("*.bin")) == [248 * 248 * 3] * 2
    again = cli_runner.invoke(main, ["preprocess", str(src), str(tmp_path / "bins"), "--workers", "1"])
    assert again.exit_code == 2 and "other settings" in again.output  # never mixes float32 into a uint8 folder
