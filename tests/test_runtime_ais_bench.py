"""ais_bench runner over the stand-in package; backend choice; `lvvit-opt validate ONNX OM` end to end."""
from __future__ import annotations

import numpy as np
import pytest

from fakes.ascend_env import fake_ais_bench, fake_om, fake_tools, no_tools, ort_reference  # noqa: F401
from lvvit_opt.core.cann import ToolNotFound
from lvvit_opt.cli import main
from lvvit_opt.core.errors import UserError
from lvvit_opt.verify.golden import Tolerance, compare_outputs
from lvvit_opt.runtime import open_runner


@pytest.fixture
def feeds_and_reference(fake_om):
    image = np.random.default_rng(1).standard_normal((5, 3, 224, 224)).astype(np.float32)
    return image, ort_reference(fake_om[0], image)


def test_ais_bench_runner_matches_onnxruntime(fake_om, fake_ais_bench, feeds_and_reference):
    image, reference = feeds_and_reference
    with open_runner(fake_om[1]) as runner:
        assert runner.backend == "ais_bench"
        assert [(s.name, s.shape, s.dtype) for s in runner.inputs] == [("image", (2, 3, 224, 224), "float32")]
        assert [(s.name, s.shape) for s in runner.outputs] == [("features", (2, 1000))]
        got = runner.infer({"image": image})  # 5 rows -> 3 calls of the batch-2 model
        times = runner.session.sumary().exec_time_list  # default stand-in generation: durations in ms
        assert runner.calls == 3 and len(times) == 3
        assert runner.last_infer_s == pytest.approx(sum(times) / 1000.0)
    assert got["features"].shape == (5, 1000)
    report = compare_outputs(reference, got, Tolerance.fp16())
    assert report.passed and report.outputs[0].top1_agreement == 1.0
    assert report.outputs[0].cosine > 0.99999


def test_wrong_input_shape_is_a_user_error(fake_om, fake_ais_bench):
    with open_runner(fake_om[1], backend="ais_bench") as runner:
        with pytest.raises(UserError, match=r"the .om expects \(N, 3, 224, 224\), got \(2, 3, 112, 112\)"):
            runner.infer({"image": np.zeros((2, 3, 112, 112), np.float32)})


def test_unknown_option_is_a_user_error(fake_om, fake_ais_bench):
    with pytest.raises(UserError, match="AisBenchRunner does not take option\\(s\\) threads; it takes device_id"):
        open_runner(fake_om[1], backend="ais_bench", threads=2)


def test_bad_device_is_reported(fake_om, fake_ais_bench):
    with pytest.raises(Exception) as failure:
        open_runner(fake_om[1], backend="ais_bench", device_id=3)
    assert str(failure.value).endswith("on device 3: [ERROR] acl init failed: device id 3 is invalid, ret[107001]")


def test_auto_backend_falls_back_to_the_legacy_binary(fake_om, fake_tools):
    with open_runner(fake_om[1]) as runner:
        assert runner.backend == "benchmark"


def test_no_runtime_at_all(fake_om, no_tools):
    with pytest.raises(ToolNotFound) as failure:
        open_runner(fake_om[1])
    assert str(failure.value).startswith("no way to run an .om here: the ais_bench Python package is not importable")
    with pytest.raises(ToolNotFound, match="ais_bench is not importable"):
        open_runner(fake_om[1], backend="ais_bench")


def test_missing_om_file(tmp_path, fake_ais_bench):
    with pytest.raises(UserError, match="nope.om: no such file"):
        open_runner(str(tmp_path / "nope.om"))


@pytest.mark.parametrize("backend_fixture", ["fake_ais_bench", "fake_tools"])
def test_validate_onnx_against_om(fake_om, cli_runner, request, backend_fixture):
    request.getfixturevalue(backend_fixture)
    result = cli_runner.invoke(main, ["validate", fake_om[0], fake_om[1], "--inputs", "1"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "inputs: image (2, 3, 224, 224) x 1 set(s) from 1 seeded random batch(es) (seed 0)"
    assert "cosine=0.9999" in lines[2] and "top1_agree=100.00% -> PASS" in lines[2]
    assert lines[-1] == "PASS (atol=None, rtol=None, min_cosine=0.999, max_range_rel=0.01)"  # the verdict once


@pytest.mark.parametrize("backend_fixture", ["fake_ais_bench", "fake_tools"])
def test_validate_catches_a_perturbed_om(fake_om, cli_runner, request, backend_fixture, monkeypatch):
    request.getfixturevalue(backend_fixture)
    monkeypatch.setenv("FAKE_ASCEND_PERTURB", "1")
    result = cli_runner.invoke(main, ["validate", fake_om[0], fake_om[1], "--inputs", "1"])
    assert result.exit_code == 1
    assert "-> FAIL" in result.stdout and "  cosine 0." in result.stdout
    assert result.stdout.splitlines()[-1].startswith("FAIL (atol=None")


def test_validate_without_runtime_exits_2(fake_om, cli_runner, no_tools):
    result = cli_runner.invoke(main, ["validate", fake_om[0], fake_om[1]])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no way to run an .om here")
