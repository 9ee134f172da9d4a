"""The runner registry: selection by suffix and name, errors, and that a backend is one class."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from fakes.ascend_env import fake_ais_bench, fake_om, fake_tools, no_tools  # noqa: F401
from lvvit_opt.measure.bench import BACKENDS
from lvvit_opt.core.errors import UserError
from lvvit_opt.runtime import Runner, open_runner, registry
from lvvit_opt.runtime.ort import OrtRunner


def test_names_and_choices():
    assert {"onnxruntime", "ais_bench", "benchmark", "onnx_reference"} <= set(registry.names())
    choices = registry.backend_choices()
    assert choices[0] == "auto" and {"ort", "om", "onnx"} <= set(choices)
    assert {"ais_bench", "benchmark", "onnxruntime", "trtexec"} <= set(BACKENDS)
    assert registry.canonical_name("ort") == "onnxruntime"
    assert {"threads": None, "providers": None, "optimize": True}.items() <= registry.options("onnxruntime").items()


def test_auto_picks_by_suffix(golden_onnx, fake_om, fake_ais_bench):
    assert registry.runner_for(golden_onnx) is OrtRunner  # onnxruntime outranks onnx_reference
    assert registry.runner_for(fake_om[1]).name == "ais_bench"
    assert registry.runner_for(fake_om[1], "om").name == "ais_bench"
    # an option only the legacy binary takes selects it
    assert registry.runner_for(fake_om[1], "auto", {"chips": 1}).name == "benchmark"


def test_unknown_suffix_is_not_treated_as_om(tmp_path):
    data = tmp_path / "golden.npz"
    data.write_bytes(b"PK")
    with pytest.raises(UserError, match=r"golden.npz: cannot tell how to run a file with suffix \.npz"):
        open_runner(data)


def test_explicit_backend_refuses_a_foreign_suffix(golden_onnx):
    with pytest.raises(UserError, match=r"backend ais_bench opens \.om files, not \.onnx"):
        registry.runner_for(golden_onnx, "ais_bench")
    with pytest.raises(UserError, match="unknown backend 'gpu'"):
        registry.runner_for(golden_onnx, "gpu")


def test_shared_settings_go_to_the_runner_that_declares_them(golden_onnx):
    with open_runner(golden_onnx, shared={"threads": 1, "device_id": 3}) as runner:
        assert runner.threads == 1 and runner.describe()["threads"] == 1


def test_subclasses_cannot_override_infer():
    with pytest.raises(TypeError, match="overrides Runner.infer; implement run_batch"):
        class Sneaky(Runner):  # noqa: F841
            def infer(self, feeds):
                return {}


def test_a_backend_is_one_class(tmp_path):
    @dataclass
    class Doubler(Runner):
        """Doubles its input: a whole backend in a few lines."""

        factor: float = 2.0
        name = "doubler_test"
        suffixes = (".dbl",)
        pads_to_batch = True

        def __post_init__(self):
            from lvvit_opt.core.tensor_spec import TensorSpec

            self.inputs = [TensorSpec("x", (4, 3))]
            self.outputs = [TensorSpec("y", (4, 3))]

        def run_batch(self, arrays):
            assert arrays[0].shape == (4, 3)  # padded to the model's batch by the base class
            return [arrays[0] * self.factor]

    path = tmp_path / "m.dbl"
    path.write_text("")
    registry.register_runner(Doubler)
    try:
        assert "doubler_test" in registry.backend_choices() and "dbl" in registry.backend_choices()
        with pytest.raises(ValueError, match="already taken"):
            registry.register_runner(type("Other", (Doubler,), {"aliases": ("doubler_test",), "name": "other"}))
        with open_runner(path, factor=3.0) as runner:
            out = runner.infer({"x": np.ones((5, 3), np.float32)})
        np.testing.assert_array_equal(out["y"], np.full((5, 3), 3.0, np.float32))
        assert runner.last_infer_s > 0
    finally:
        registry.unregister_runner("doubler_test")


def test_bench_backend_ais_bench_is_selectable(fake_ais_bench, fake_om, cli_runner):
    from lvvit_opt.cli import main

    result = cli_runner.invoke(main, ["bench", fake_om[1], "--backend", "ais_bench", "--duration", "0.2",
                                      "--rounds", "1", "--warmup", "0"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if line.startswith(fake_om[1][-34:]) or "lvvit_golden.om" in line)
    assert row.split()[1:3] == ["2", "ais_bench"]


def test_validate_backend_runs_the_candidate_on_the_named_runner(golden_onnx, cli_runner, tmp_path):
    from lvvit_opt.cli import main

    report = tmp_path / "v.json"
    result = cli_runner.invoke(main, ["validate", golden_onnx, golden_onnx, "--inputs", "1",
                                      "--backend", "onnx_reference", "--json", str(report)])
    assert result.exit_code == 0, result.output
    features = json.loads(report.read_text())["result"]["comparisons"]["candidate vs reference"]["outputs"][0]
    assert 0 < features["max_abs"] < 1e-5  # onnx's evaluator is not onnxruntime: tiny, real differences
    wrong = cli_runner.invoke(main, ["validate", golden_onnx, golden_onnx, "--backend", "ais_bench"])
    assert wrong.exit_code == 2 and "backend ais_bench opens .om files, not .onnx" in wrong.stderr


@pytest.mark.parametrize("level, constant", [("all", "ORT_ENABLE_ALL"), ("extended", "ORT_ENABLE_EXTENDED"),
                                             ("basic", "ORT_ENABLE_BASIC"), ("disabled", "ORT_DISABLE_ALL")])
def test_onnxruntime_graph_opt_levels_set_the_session_and_keep_the_outputs(golden_onnx, golden_io, level, constant):
    """tune's graph_opt dimension: each level is the session's level, and the outputs agree."""
    import onnxruntime as ort

    runner = open_runner(golden_onnx, backend="onnxruntime", graph_opt=level)
    try:
        assert runner.session.get_session_options().graph_optimization_level == \
            getattr(ort.GraphOptimizationLevel, constant)
        feed = {runner.inputs[0].name: golden_io["image"]}
        out = runner.infer(feed)
        reference = OrtRunner(golden_onnx, graph_opt="disabled").infer(feed)
        for name, value in out.items():
            np.testing.assert_allclose(value, reference[name], rtol=1e-4, atol=1e-5)
    finally:
        runner.close()


def test_onnxruntime_unknown_graph_opt_is_one_line(golden_onnx):
    with pytest.raises(UserError, match=r"graph_opt 'fast': one of all, extended, basic, disabled"):
        OrtRunner(golden_onnx, graph_opt="fast")
    # the older switch still wins: optimize=False is no optimisation whatever graph_opt says
    runner = OrtRunner(golden_onnx, optimize=False, graph_opt="extended")
    import onnxruntime as ort

    assert runner.session.get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
