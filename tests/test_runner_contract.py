"""The Runner contract, run over EVERY registered runner (runtime.registry.names()).

A new backend must add an entry to SETUPS (how to get a model it opens, stand-ins under
tests/fakes/ for tools that exist only on Ascend hosts); the test fails until it does.
"""
from __future__ import annotations

import numpy as np
import pytest

from fakes.ascend_env import fake_ais_bench, fake_om, fake_tools, ort_reference  # noqa: F401
from lvvit_opt.core.errors import UserError
from lvvit_opt.verify.golden import Tolerance, compare_outputs
from lvvit_opt.runtime import open_runner, registry
from lvvit_opt.core.tensor_spec import TensorSpec

# runner name -> (environment fixture or None, which file of fake_om it opens, tolerance vs onnxruntime)
SETUPS = {
    "onnxruntime": (None, 0, Tolerance.onnx()),
    "onnx_reference": (None, 0, Tolerance.onnx()),
    "ais_bench": ("fake_ais_bench", 1, Tolerance.fp16()),  # stand-in runs the .onnx in fp16
    "benchmark": ("fake_tools", 1, Tolerance.fp16()),
}


@pytest.fixture(params=registry.names())
def contract(request, fake_om):
    name = request.param
    assert name in SETUPS, f"runner {name!r} is registered but tests/test_runner_contract.py has no setup for it"
    env_fixture, which, tolerance = SETUPS[name]
    if env_fixture:
        request.getfixturevalue(env_fixture)
    return name, fake_om[which], fake_om[0], tolerance


def _image(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 3, 224, 224)).astype(np.float32)


def test_registration(contract):
    name, path, _, _ = contract
    cls = registry.get_runner(name)
    assert cls.name == name and name in registry.backend_choices()
    assert cls.suffixes and all(s.startswith(".") for s in cls.suffixes)
    assert "infer" not in cls.__dict__  # the base class's infer checks feeds and sets last_infer_s
    assert set(registry.options(name)) == set(cls.option_names())
    assert registry.runner_for(path, name) is cls


def test_infer_matches_onnxruntime_and_is_timed(contract):
    name, path, onnx_path, tolerance = contract
    with open_runner(path, backend=name) as runner:
        assert runner.backend == name
        assert all(isinstance(s, TensorSpec) for s in runner.inputs + runner.outputs)
        assert [(s.name, s.dtype) for s in runner.inputs] == [("image", "float32")]
        assert [s.name for s in runner.outputs] == ["features"]
        batch = runner.inputs[0].batch or 2
        image = _image(batch)
        got = runner.infer({"image": image})
        assert set(got) == {"features"} and got["features"].shape == (batch, 1000)
        assert runner.last_infer_s > 0
        runner.last_infer_s = -1.0
        again = runner.infer({"image": image.astype(np.float64)})  # same-kind cast is done for the caller
        assert runner.last_infer_s > 0  # set by the base class on every call
    np.testing.assert_allclose(again["features"], got["features"], rtol=0, atol=1e-6)
    assert compare_outputs(ort_reference(onnx_path, image), got, tolerance).passed


def test_any_number_of_rows_on_fixed_batch_models(contract):
    name, path, onnx_path, tolerance = contract
    with open_runner(path, backend=name) as runner:
        if not runner.pads_to_batch:
            pytest.skip(f"{name} runs the batch it is given")
        rows = runner.model_batch * 2 + 1  # two full chunks and one zero-padded
        image = _image(rows, seed=1)
        got = runner.infer({"image": image})
    assert got["features"].shape == (rows, 1000)
    assert compare_outputs(ort_reference(onnx_path, image), got, tolerance).passed


@pytest.mark.parametrize("feeds,message", [
    ({}, r"takes inputs \['image'\]; got \[\] \(missing 'image'\)"),
    ({"image": _image(2), "mask": np.zeros(2)}, r"got \['image', 'mask'\] \(unexpected 'mask'\)"),
    ({"image": _image(2)[:, :, :112, :112]}, r"input 'image': the (\.om|model) expects \((N|2), 3, 224, 224\), "
                                             r"got \(2, 3, 112, 112\)"),
    ({"image": _image(2)[0]}, r"input 'image': the (\.om|model) expects .*got \(3, 224, 224\)"),
    ({"image": _image(2).astype(np.complex64)}, r"input 'image': the (\.om|model) takes float32, got complex64"),
])
def test_bad_feeds_are_user_errors(contract, feeds, message):
    name, path, _, _ = contract
    with open_runner(path, backend=name) as runner:
        with pytest.raises(UserError, match=message):
            runner.infer(feeds)


def test_unknown_option_and_close_twice(contract):
    name, path, _, _ = contract
    with pytest.raises(UserError, match=r"does not take option\(s\) no_such_option"):
        open_runner(path, backend=name, no_such_option=1)
    runner = open_runner(path, backend=name)
    runner.close()
    runner.close()
