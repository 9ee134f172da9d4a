"""Legacy benchmark binary: perf files with the seed's own numbers, and the runner over the stand-in."""
from __future__ import annotations

import numpy as np
import pytest

from fakes.ascend_env import DATA_DIR, fake_om, fake_tools, no_tools, ort_reference  # noqa: F401
from lvvit_opt.core.errors import UserError
from lvvit_opt.verify.golden import Tolerance, compare_outputs
from lvvit_opt.runtime import open_runner
from lvvit_opt.runtime.benchmark import BenchmarkRunner, parse_perf_file, parse_perf_text


def test_seed_bs16_optimized_perf_file():
    perf = parse_perf_file(DATA_DIR / "seed_optimized" / "perf_vision_batchsize_16_device_0.txt")
    assert (perf.batch_size, perf.device_id) == (16, 0)
    assert perf.interface_throughput == 57.8179
    assert round(perf.card_fps(), 2) == 231.27
    assert perf.card_fps() == pytest.approx(231.2716, abs=1e-9)
    assert perf.card_fps(chips=1) == 57.8179
    assert perf.stages == {
        "e2e": {"throughputRate": 51.2825, "latency": 974992.0},
        "data read": {"throughputRate": 54.323, "moduleLatency": 18.4084},
        "preprocess": {"throughputRate": 54.1712, "moduleLatency": 18.46},
        "infer": {"throughputRate": 51.3613, "Interface throughputRate": 57.8179, "moduleLatency": 18.6629},
        "post": {"throughputRate": 3.21005, "moduleLatency": 311.521},
    }


@pytest.mark.parametrize("folder,batch,fps", [
    ("seed_baseline", 1, 151.764), ("seed_baseline", 16, 147.6996),
    ("seed_optimized", 1, 176.0752), ("seed_optimized", 16, 231.2716),
])
def test_seed_fps_table(folder, batch, fps):
    perf = parse_perf_file(DATA_DIR / folder / f"perf_vision_batchsize_{batch}_device_0.txt")
    assert perf.card_fps(4) == pytest.approx(fps, abs=1e-9)


def test_seed_line_quirks_missing_comma_and_space():
    perf = parse_perf_file(DATA_DIR / "seed_baseline" / "perf_vision_batchsize_1_device_0.txt")
    assert perf.stages["infer"] == {"throughputRate": 35.6308, "Interface throughputRate": 37.941,
                                    "moduleLatency": 27.3942}
    assert perf.stages["data read"]["moduleLatency"] == 26.5491
    assert perf.stages["e2e"]["latency"] == 1.40495e06


def test_not_a_perf_file(tmp_path):
    with pytest.raises(UserError, match="x: not a benchmark perf file"):
        parse_perf_text("[e2e] throughputRate: 1\n", "x")
    with pytest.raises(UserError, match="no such perf file"):
        parse_perf_file(tmp_path / "perf_vision_batchsize_1_device_0.txt")


@pytest.fixture
def golden_feed(fake_om):
    onnx_path, _ = fake_om
    rng = np.random.default_rng(0)
    image = rng.standard_normal((3, 3, 224, 224)).astype(np.float32)
    return image, ort_reference(onnx_path, image)["features"]


@pytest.mark.parametrize("binary", [True, False])
def test_runner_matches_onnxruntime(fake_om, fake_tools, golden_feed, binary):
    _, om = fake_om
    image, expected = golden_feed
    with open_runner(om, backend="benchmark", output_binary=binary) as runner:
        assert runner.inputs[0].name == "image" and runner.inputs[0].shape == (2, 3, 224, 224)
        assert [(o.name, o.shape) for o in runner.outputs] == [("features", (2, 1000))]
        got = runner.infer({"image": image})  # 3 rows on a batch-2 .om: padded to 4 by the runner
        perf = runner.last_perf
        assert got["features"].shape == (3, 1000)
        assert runner.last_infer_s == pytest.approx(4 / perf.interface_throughput)
        assert runner.card_fps() == pytest.approx(perf.interface_throughput * 4)
        assert runner.describe()["timing"] == "perf file Interface throughputRate (device)"
    report = compare_outputs({"features": expected}, got, Tolerance.fp16())
    assert report.passed, report.format()
    assert report.outputs[0].top1_agreement == 1.0
    assert report.outputs[0].max_abs < 1e-2


def test_perturbed_om_fails_validation(fake_om, fake_tools, golden_feed, monkeypatch):
    monkeypatch.setenv("FAKE_ASCEND_PERTURB", "1")
    image, expected = golden_feed
    with open_runner(fake_om[1], backend="benchmark") as runner:
        got = runner.infer({"image": image})
    report = compare_outputs({"features": expected}, got, Tolerance.fp16())
    assert not report.passed
    assert report.outputs[0].failures[0].startswith("cosine ")


def test_missing_binary_is_a_clear_error(fake_om, no_tools):
    with pytest.raises(UserError) as failure:
        BenchmarkRunner(fake_om[1])
    assert str(failure.value).startswith("benchmark.x86_64 not found on PATH") or \
        str(failure.value).startswith("benchmark.aarch64 not found on PATH")
    assert "install ais_bench" in str(failure.value)


def test_specs_need_the_onnx(tmp_path, fake_om, fake_tools):
    lonely = tmp_path / "other.om"
    lonely.write_bytes(open(fake_om[1], "rb").read())
    with pytest.raises(UserError, match="put the source .onnx beside the .om or pass onnx_path"):
        BenchmarkRunner(str(lonely))
    with BenchmarkRunner(str(lonely), onnx_path=fake_om[0]) as runner:
        assert runner.batch_size == 2


def test_binary_failure_is_reported(fake_om, fake_tools, golden_feed):
    with open_runner(fake_om[1], backend="benchmark", device_id=7) as runner:
        with pytest.raises(Exception) as failure:
            runner.infer({"image": golden_feed[0]})
    assert type(failure.value).__name__ == "ToolFailed"
    assert "failed (exit 1): [ERROR] acl.rt.set_device failed, device id 7 is invalid, ret 107001" in str(failure.value)
