"""Impossible values (issue 22): durations, counts, thread numbers, sizes and seeds outside their
range are refused at parse time with the range named (no hang, no numpy traceback); shapes a
user types are held to tensor limits; merge refuses shards of different models; a
decompression-bomb image is listed, not counted black; integer weights are not cast into a
float model; a disk that fills during preprocess is one line, nothing half-written."""
from __future__ import annotations

import errno
import importlib.util
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from hostile_helpers import (REPO_ROOT, assert_refused, build_images, diff_snapshots, invoke,
                             snapshot, temp_leftovers)

SHIM_ENOSPC = Path(__file__).parent / "shim_enospc"

SECONDS = "expected seconds in [0.1, 86400]"
ROUNDS = "expected a number of rounds in 1..1000"
THREADS = "expected a number of threads in 1..1024"
PROCESSES = "expected a number of processes in 1..1024"
SEED = "expected a seed in 0..4294967295"
BATCH = "expected a batch size in 1..65536"
MB = "expected megabytes in [1, 1048576]"

# (id, argv, option, value, the range the message must name)
OUT_OF_RANGE = [
    ("bench-duration-inf", ["bench", "m.onnx"], "--duration", "inf", SECONDS),
    ("bench-duration-1e308", ["bench", "m.onnx"], "--duration", "1e308", SECONDS),
    ("bench-duration-nan", ["bench", "m.onnx"], "--duration", "nan", SECONDS),
    ("bench-duration-negative", ["bench", "m.onnx"], "--duration", "-1", SECONDS),
    ("bench-duration-two-days", ["bench", "m.onnx"], "--duration", "48h", SECONDS),
    ("bench-rounds-1e9", ["bench", "m.onnx"], "--rounds", "1e9", ROUNDS),
    ("bench-rounds-billion", ["bench", "m.onnx"], "--rounds", "1000000000", ROUNDS),
    ("bench-rounds-float", ["bench", "m.onnx"], "--rounds", "1.5", ROUNDS),
    ("bench-rounds-negative", ["bench", "m.onnx"], "--rounds", "-3", ROUNDS),
    ("bench-warmup-inf", ["bench", "m.onnx"], "--warmup", "inf", "expected seconds in [0, 3600]"),
    ("bench-warmup-negative", ["bench", "m.onnx"], "--warmup", "-0.5", "expected seconds in [0, 3600]"),
    ("bench-threads-huge", ["bench", "m.onnx"], "--threads", "100000", THREADS),
    ("bench-device-id-negative", ["bench", "m.onnx"], "--device-id", "-1", "expected a device id in 0..1023"),
    ("eval-threads-huge", ["eval", "m.onnx", "--data", "images", "--labels", "val.txt"], "--threads", "100000",
     THREADS),
    ("eval-workers-huge", ["eval", "m.onnx", "--data", "images", "--labels", "val.txt"], "--workers", "100000",
     PROCESSES),
    ("eval-batch-1e9", ["eval", "m.onnx", "--data", "images", "--labels", "val.txt"], "--batch-size", "1e9", BATCH),
    ("eval-limit-negative", ["eval", "m.onnx", "--data", "images", "--labels", "val.txt"], "--limit", "-5",
     "expected a number of images in 1..100000000"),
    ("eval-ray-workers-zero", ["eval", "m.onnx", "--data", "images", "--labels", "val.txt"], "--ray-workers", "0",
     PROCESSES),
    ("run-bench-duration-inf", ["run", "--out", "r"], "--bench-duration", "inf", SECONDS),
    ("run-bench-rounds-1e9", ["run", "--out", "r"], "--bench-rounds", "1e9", ROUNDS),
    ("run-seed-negative", ["run", "--out", "r"], "--seed", "-1", SEED),
    ("run-threads-zero", ["run", "--out", "r"], "--threads", "0", THREADS),
    ("export-seed-negative", ["export", "--model", "lvvit_golden", "-o", "e.onnx"], "--seed", "-1", SEED),
    ("export-seed-2-32", ["export", "--model", "lvvit_golden", "-o", "e.onnx"], "--seed", "4294967296", SEED),
    ("export-img-size-huge", ["export", "--model", "lvvit_golden", "-o", "e.onnx"], "--img-size", "100000",
     "expected pixels in 16..8192"),
    ("export-batch-huge", ["export", "--model", "lvvit_golden", "-o", "e.onnx"], "--batch-size", "1000000", BATCH),
    ("validate-seed-negative", ["validate", "m.onnx", "c2.onnx"], "--seed", "-1", SEED),
    ("golden-make-seed-negative", ["golden", "make", "m.onnx", "-o", "g2.npz"], "--seed", "-1", SEED),
    ("apply-seed-negative", ["apply", "m.onnx", "-o", "o.onnx"], "--seed", "-1", SEED),
    ("apply-batch-zero", ["apply", "m.onnx", "-o", "o.onnx"], "--batch-size", "0", BATCH),
    ("debug-chunk-mb-nan", ["debug", "layers", "m.onnx", "c2.onnx"], "--chunk-mb", "nan", MB),
    ("debug-chunk-mb-inf", ["debug", "layers", "m.onnx", "c2.onnx"], "--chunk-mb", "inf", MB),
    ("debug-chunk-mb-zero", ["debug", "layers", "m.onnx", "c2.onnx"], "--chunk-mb", "0", MB),
    ("debug-chunk-mb-negative", ["debug", "layers", "m.onnx", "c2.onnx"], "--chunk-mb", "-384", MB),
    ("debug-seed-negative", ["debug", "layers", "m.onnx", "c2.onnx"], "--seed", "-1", SEED),
    ("debug-top-1e9", ["debug", "layers", "m.onnx", "c2.onnx"], "--top", "1e9", "expected a count in 1..1000000"),
    ("tune-budget-inf", ["tune", "m.onnx", "--inputs", "1", "--out", "t"], "--budget", "inf",
     "expected seconds in [1, 604800]"),
    ("tune-budget-1e308", ["tune", "m.onnx", "--inputs", "1", "--out", "t"], "--budget", "1e308",
     "expected seconds in [1, 604800]"),
    ("tune-rounds-1e9", ["tune", "m.onnx", "--inputs", "1", "--out", "t"], "--rounds", "1e9", ROUNDS),
    ("tune-min-agreement-nan", ["tune", "m.onnx", "--inputs", "1", "--out", "t"], "--min-agreement", "nan",
     "expected a percentage in (0, 100]"),
    ("tune-warmup-negative", ["tune", "m.onnx", "--inputs", "1", "--out", "t"], "--warmup", "-1",
     "expected seconds in [0, 3600]"),
    ("preprocess-workers-huge", ["preprocess", "images", "prep"], "--workers", "100000", PROCESSES),
    ("preprocess-img-size-zero", ["preprocess", "images", "prep"], "--img-size", "0", "expected pixels in 1..8192"),
    ("preprocess-crop-pct-inf", ["preprocess", "images", "prep"], "--crop-pct", "inf",
     "expected a fraction in (0, 1]"),
    ("doctor-min-free-gb-nan", ["doctor"], "--min-free-gb", "nan", "expected gigabytes in [0, 1048576]"),
    ("doctor-min-free-gb-negative", ["doctor"], "--min-free-gb", "-2", "expected gigabytes in [0, 1048576]"),
    ("atc-batch-1e9", ["atc", "m.onnx", "--soc-version", "Ascend310", "--dry-run"], "--batch-size", "1e9", BATCH),
    ("inspect-top-zero", ["inspect", "m.onnx"], "--top", "0", "expected a count in 1..1000000"),
]


@pytest.fixture
def vws(ws):
    """The hostile workspace plus an image folder and its val.txt."""
    build_images(ws, count=3)
    return ws


@pytest.mark.parametrize("argv, option, value, expected", [c[1:] for c in OUT_OF_RANGE],
                         ids=[c[0] for c in OUT_OF_RANGE])
def test_out_of_range_values_are_refused_at_parse_time_with_the_range(vws, argv, option, value, expected):
    before = snapshot(vws)
    outcome = invoke([*argv, option, value], vws)
    assert_refused(outcome, 2, f"Invalid value for '{option}': '{value}': {expected}")
    assert outcome.stdout == ""
    assert diff_snapshots(before, snapshot(vws)) == [] and temp_leftovers(vws) == []


@pytest.mark.parametrize("argv", [
    ["bench", "m.onnx", "--duration", "1m", "--rounds", "1", "--warmup", "0", "--batch-sizes", "1", "-q"],
], ids=["duration-in-minutes"])
def test_values_inside_the_range_still_run(vws, argv, monkeypatch):
    """`--duration 1m` is 60 s (units s/m/h), here cut short: the parsed value reaches bench."""
    from lvvit_opt.measure import bench

    seen = {}

    def fake(models, batch_sizes, **kwargs):
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(bench, "bench_models", fake)
    outcome = invoke(argv, vws)
    assert outcome.exit_code == 0, outcome.stderr
    assert (seen["duration"], seen["rounds"], seen["warmup"]) == (60.0, 1, 0.0)


@pytest.mark.parametrize("argv", [
    ["bench", "m.onnx", "--duration", "inf"],
    ["eval", "m.onnx", "--data", "images", "--labels", "val.txt", "--threads", "100000"],
    ["export", "--model", "lvvit_golden", "-o", "e.onnx", "--seed", "-1"],
    ["debug", "layers", "m.onnx", "c2.onnx", "--chunk-mb", "nan"],
], ids=["bench", "eval", "export", "debug"])
def test_parse_time_refusals_import_neither_torch_nor_onnx(vws, argv):
    code = ("import sys\nfrom lvvit_opt.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit as exc:\n    code = exc.code\n"
            "heavy = sorted(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules)\n"
            "print(code, heavy)\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=vws, capture_output=True, text=True, timeout=120)
    assert run.stdout.strip() == "2 []", (run.stdout, run.stderr)
    assert "Invalid value for" in run.stderr


def test_bench_models_from_python_refuses_non_finite_timing(vws):
    from lvvit_opt.measure.bench import bench_models
    from lvvit_opt.core.errors import UserError

    for kwargs, words in [({"duration": float("inf")}, "duration inf"), ({"duration": float("nan")}, "duration nan"),
                          ({"warmup": -1.0}, "warmup -1.0"), ({"rounds": 0}, "rounds 0")]:
        with pytest.raises(UserError, match=words):
            bench_models([str(vws / "m.onnx")], [1], **kwargs)


# -- shapes a user types -------------------------------------------------------------------

SHAPES = "1 to 8 dims, each in 1..1048576, at most 2**32 elements in all"
SHAPE_REFUSED = [
    ("zero-dim", "0,6,197,197", "dim 0"),
    ("negative-dim", "16,-6,197,197", "dim -6"),
    ("rank-9", "1,1,1,1,1,1,1,1,1", "rank 9"),
    ("dim-over-2-20", "1,2097152", "dim 2097152"),
    ("elements-over-2-32", "65536,65536,2", "8589934592 elements"),
    ("absurd", "99999999999999999999,1", "dim 99999999999999999999"),
]


@pytest.mark.parametrize("verb", ["check", "patch"])
@pytest.mark.parametrize("shape, why", [c[1:] for c in SHAPE_REFUSED], ids=[c[0] for c in SHAPE_REFUSED])
def test_whitelist_shape_outside_tensor_limits_is_refused(ws, verb, shape, why):
    before = snapshot(ws)
    outcome = invoke(["whitelist", verb, "--file", "opp/transpose.py", "--shape", shape], ws)
    assert_refused(outcome, 2, f"Invalid value for '--shape': '{shape}': {why}; expected {SHAPES}")
    assert diff_snapshots(before, snapshot(ws)) == [] and temp_leftovers(ws) == []


def test_whitelist_shape_not_integers_names_the_limits(ws):
    outcome = invoke(["whitelist", "check", "--file", "opp/transpose.py", "--shape", "1.5,2"], ws)
    assert_refused(outcome, 2, f"expected comma-separated integers for --shape, got '1.5,2' ({SHAPES})")


@pytest.mark.parametrize("spec, why", [("image:0,3,224,224", "dim 0"),
                                       ("image:100000,3,224,224", "15052800000 elements"),
                                       ("image:1,1,1,1,1,1,1,1,1", "rank 9")],
                         ids=["zero-dim", "elements", "rank-9"])
def test_apply_input_shape_outside_tensor_limits_is_refused(ws, spec, why):
    before = snapshot(ws)
    outcome = invoke(["apply", "m.onnx", "-o", "o.onnx", "--passes", "fix_shapes", "--input-shape", spec], ws)
    assert_refused(outcome, 2, f"bad input shape '{spec}' ({why}): expected NAME:D1,D2,... with {SHAPES}")
    assert diff_snapshots(before, snapshot(ws)) == []


@pytest.mark.parametrize("argv", [["bench", "m.onnx", "--batch-sizes", "1,1000000"],
                                  ["run", "--out", "r", "--batch-sizes", "0,16"]], ids=["bench", "run"])
def test_batch_size_lists_are_held_to_the_batch_range(ws, argv):
    before = snapshot(ws)
    assert_refused(invoke(argv, ws), 2, "expected integers in 1..65536 for --batch-sizes")
    assert diff_snapshots(before, snapshot(ws)) == []


# -- merge of shards of different models ---------------------------------------------------

@pytest.fixture
def shards(vws):
    """eval shards 1/2 (m.onnx) and 2/2 (c2.onnx, the same bytes under another name)."""
    for k, model in ((1, "m.onnx"), (2, "c2.onnx")):
        run = invoke(["eval", model, "--data", "images", "--labels", "val.txt", "--workers", "1",
                      "--shard", f"{k}/2", "--json", f"s{k}.json", "-q"], vws)
        assert run.exit_code == 0, run.stderr
    return vws


def test_merge_of_the_same_model_under_two_names_is_fine(shards):
    outcome = invoke(["merge", "s1.json", "s2.json"], shards)
    assert outcome.exit_code == 0, outcome.stderr
    assert "different model" not in outcome.stdout + outcome.stderr


def test_merge_of_shards_of_different_models_is_refused(shards):
    import onnx

    model = onnx.load(shards / "c2.onnx")
    model.doc_string = "another model"
    onnx.save(model, shards / "other.onnx")
    run = invoke(["eval", "other.onnx", "--data", "images", "--labels", "val.txt", "--workers", "1",
                  "--shard", "2/2", "--json", "s2.json", "-q"], shards)
    assert run.exit_code == 0, run.stderr
    digests = [json.loads((shards / f"s{k}.json").read_text())["result"]["shard"]["model_sha256"] for k in (1, 2)]
    before = snapshot(shards)
    outcome = invoke(["merge", "s1.json", "s2.json", "--json", "merged.json"], shards)
    assert_refused(outcome, 2, f"the shards ran different models: s1.json ran m.onnx (sha256 {digests[0][:16]}), "
                               f"s2.json ran other.onnx (sha256 {digests[1][:16]})")
    assert diff_snapshots(before, snapshot(shards)) == []  # a refusal writes no --json file


@pytest.mark.parametrize("damage", ["drop", "null", "short"])
def test_merge_refuses_an_eval_shard_without_a_model_hash(shards, damage):
    path = shards / "s2.json"
    data = json.loads(path.read_text())
    shard = data["result"]["shard"]
    if damage == "drop":
        shard.pop("model_sha256")
    else:
        shard["model_sha256"] = None if damage == "null" else "abc123"
    path.write_text(json.dumps(data))
    before = snapshot(shards)
    outcome = invoke(["merge", "s1.json", "s2.json"], shards)
    assert_refused(outcome, 2, "s2.json: its shard record does not say which model it ran (no model_sha256")
    assert "rerun `lvvit-opt eval" in outcome.stderr
    assert diff_snapshots(before, snapshot(shards)) == []


# -- decompression bombs -------------------------------------------------------------------

def _png_header_bomb(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header declares width x height (grayscale, 8 bit): a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


BOMBS = [("100000x100000", 100000, 100000), ("40000x40000", 40000, 40000), ("12000x12000", 12000, 12000)]


@pytest.mark.parametrize("width, height", [b[1:] for b in BOMBS], ids=[b[0] for b in BOMBS])
def test_preprocess_lists_a_decompression_bomb_and_exits_1(vws, width, height):
    bomb = vws / "images" / "ILSVRC2012_val_00000004.png"
    _png_header_bomb(bomb, width, height)
    with open(vws / "val.txt", "a") as fh:
        fh.write("ILSVRC2012_val_00000004.png 3\n")
    before = snapshot(vws / "images")
    outcome = invoke(["preprocess", "images", "prep", "--img-size", "32", "--workers", "1"], vws)
    assert_refused(outcome, 1, "1 of 4 images could not be read")
    declared = f"{width}x{height} = {width * height}" if width * height <= 2 * 2**27 else f"{width * height}"
    assert (f"failed: ILSVRC2012_val_00000004.png: ImageTooLarge: declares {declared} pixels, over the limit of "
            f"134217728 (2**27): a decompression bomb") in outcome.stdout
    assert sorted(p.name for p in (vws / "prep").glob("*.bin")) == [f"ILSVRC2012_val_0000000{i}.bin" for i in (1, 2, 3)]
    assert diff_snapshots(before, snapshot(vws / "images")) == [] and temp_leftovers(vws) == []


def test_eval_lists_a_decompression_bomb_and_does_not_score_it(vws):
    _png_header_bomb(vws / "images" / "ILSVRC2012_val_00000004.png", 40000, 40000)
    with open(vws / "val.txt", "a") as fh:
        fh.write("ILSVRC2012_val_00000004.png 3\n")
    outcome = invoke(["eval", "m.onnx", "--data", "images", "--labels", "val.txt", "--workers", "1",
                      "--json", "ev.json"], vws)
    assert_refused(outcome, 1, "could not be read")
    assert "ILSVRC2012_val_00000004.png: ImageTooLarge" in outcome.stdout
    assert json.loads((vws / "ev.json").read_text())["result"]["inferred"] == 3


def test_a_decompression_bomb_as_validation_inputs_is_refused(vws):
    _png_header_bomb(vws / "images" / "ILSVRC2012_val_00000002.JPEG", 100000, 100000)
    before = snapshot(vws)
    outcome = invoke(["validate", "m.onnx", "c2.onnx", "--inputs", "images"], vws)
    assert_refused(outcome, 2, "ILSVRC2012_val_00000002.JPEG: cannot read this image (ImageTooLarge: declares")
    assert diff_snapshots(before, snapshot(vws)) == []


def test_pillow_limit_is_the_sane_one():
    from lvvit_opt.data.transform import MAX_IMAGE_PIXELS

    assert MAX_IMAGE_PIXELS == 2**27


# -- checkpoints with integer weights ------------------------------------------------------

@pytest.mark.parametrize("dtype, strict", [("int64", True), ("int32", True), ("bool", True), ("int64", False)],
                         ids=["int64", "int32", "bool", "int64-non-strict"])
def test_integer_weights_for_float_parameters_are_refused(ws, dtype, strict):
    import torch

    state = torch.load(ws / "c.pth", map_location="cpu", weights_only=True)
    weights = state.get("state_dict", state)
    key = next(k for k, v in weights.items() if v.is_floating_point())
    weights[key] = weights[key].round().to(getattr(torch, dtype))
    torch.save(state, ws / "int.pth")
    before = snapshot(ws)
    argv = ["export", "--model", "lvvit_golden", "--checkpoint", "int.pth", "-o", "e.onnx"]
    outcome = invoke(argv + ([] if strict else ["--non-strict"]), ws)
    assert_refused(outcome, 2, f"int.pth: {key} holds {dtype} values where the model has float32 weights "
                               f"(1 such tensor(s)); not a float checkpoint of this model")
    assert outcome.stdout == ""
    assert diff_snapshots(before, snapshot(ws)) == [] and temp_leftovers(ws) == []


def test_float64_weights_still_load(ws):
    import torch

    from lvvit_opt.models.model import create_model

    state = torch.load(ws / "c.pth", map_location="cpu", weights_only=True)
    weights = state.get("state_dict", state)
    weights.update({k: v.double() for k, v in weights.items() if v.is_floating_point()})
    key = next(k for k, v in weights.items() if v.is_floating_point())
    torch.save(state, ws / "f64.pth")
    model = create_model("lvvit_golden", str(ws / "f64.pth"))
    assert model.random_tensors == []
    assert model.state_dict()[key].dtype == torch.float32 and torch.equal(model.state_dict()[key], weights[key].float())


# -- disk full during preprocess -----------------------------------------------------------

def _fill_the_disk_at(monkeypatch, marker: str) -> None:
    """In this process: atomic writes to names containing `marker` fail with ENOSPC (the shim)."""
    from lvvit_opt.core import fileio

    monkeypatch.setattr(fileio, "atomic_path", fileio.atomic_path)  # restored after the test
    monkeypatch.setenv("LVVIT_HOSTILE_ENOSPC", marker)
    spec = importlib.util.spec_from_file_location("_shim_enospc", SHIM_ENOSPC / "sitecustomize.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


def _complete_bins(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in folder.glob("*.bin")}


@pytest.mark.parametrize("marker, written", [("00000002.bin", 1), ("00000001.bin", 0)], ids=["midway", "first"])
def test_disk_full_during_preprocess_is_one_line_and_nothing_half_written(vws, monkeypatch, marker, written):
    _fill_the_disk_at(monkeypatch, marker)
    before = snapshot(vws / "images")
    outcome = invoke(["preprocess", "images", "prep", "--img-size", "32", "--workers", "1", "--info", "p.info"], vws)
    assert_refused(outcome, 2, f"No space left on device ({written} of 3 images written before it")
    assert "rerun to resume" in outcome.stderr
    bins = _complete_bins(vws / "prep")
    assert len(bins) == written and set(bins.values()) <= {3 * 32 * 32 * 4}  # only complete files
    assert not (vws / "p.info").exists() and temp_leftovers(vws) == []
    assert diff_snapshots(before, snapshot(vws / "images")) == []


def test_disk_full_in_a_worker_pool_is_one_line_and_leaves_no_temp(tmp_path):
    build_images(tmp_path, count=8)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SHIM_ENOSPC), str(REPO_ROOT)]),
               LVVIT_HOSTILE_ENOSPC="00000005.bin")
    run = subprocess.run([sys.executable, "-m", "lvvit_opt", "preprocess", "images", "prep", "--img-size", "32",
                          "--workers", "2", "--info", "p.info"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert run.returncode == 2, run.stderr
    assert len(errors) == 1 and "No space left on device" in errors[0] and "Traceback" not in run.stderr
    bins = _complete_bins(tmp_path / "prep")
    assert "ILSVRC2012_val_00000005.bin" not in bins and set(bins.values()) <= {3 * 32 * 32 * 4}
    assert not (tmp_path / "p.info").exists() and temp_leftovers(tmp_path) == []
    # once there is room, a rerun resumes and completes
    del env["LVVIT_HOSTILE_ENOSPC"]
    again = subprocess.run([sys.executable, "-m", "lvvit_opt", "preprocess", "images", "prep", "--img-size", "32",
                            "--workers", "2", "-q"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert len(_complete_bins(tmp_path / "prep")) == 8


def test_disk_full_writing_the_info_file_keeps_no_half_info(vws, monkeypatch):
    (vws / "p.info").write_text("an older info file\n")
    _fill_the_disk_at(monkeypatch, "p.info")
    outcome = invoke(["preprocess", "images", "prep", "--img-size", "32", "--workers", "1", "--info", "p.info"], vws)
    assert_refused(outcome, 2, "No space left on device")
    assert (vws / "p.info").read_text() == "an older info file\n" and temp_leftovers(vws) == []

