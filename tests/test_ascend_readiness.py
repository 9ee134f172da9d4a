"""atc readiness: documented CANN opset range and ONNX operator list (data with sources), static
inputs; and target_opset, the pass it points to."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto as T, helper

from pass_check import check_pass
from lvvit_opt.ascend.readiness import DATA, check_readiness, support_for
from lvvit_opt.cli import main
from lvvit_opt.core.errors import UserError
from lvvit_opt.passes import run_pipeline


def _gelu_model(approximate: str = "none", opset: int = 20, batch="batch") -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Gelu", ["x"], ["y"], name="gelu", approximate=approximate)], "g",
                              [helper.make_tensor_value_info("x", T.FLOAT, [batch, 8])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [batch, 8])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_data_file_names_its_public_sources():
    data = json.loads(DATA.read_text())
    for entry in data["versions"]:
        assert entry["operators_source"].startswith("https://www.hiascend.com/")
        assert all(url.startswith("https://www.hiascend.com/") for url in entry["opset_source"])
    assert (support_for("5.0.4")["opset_max"], support_for("8.0.RC1")["opset_max"], support_for(None)["opset_max"]) \
        == (13, 18, 18)
    with pytest.raises(UserError):
        support_for("latest")


def test_golden_lvvit_is_ready_for_both_documented_versions(golden_onnx):
    for version in ("5.0.4", "8.0.RC2"):
        report = check_readiness(golden_onnx, version)
        assert report.ok, report.problems


def test_opset20_gelu_dynamic_names_opset_op_and_inputs(tmp_path):
    path = tmp_path / "g.onnx"
    onnx.save(_gelu_model(), path)
    report = check_readiness(path, "8.0")
    assert not report.ok and report.unsupported == {"Gelu": ["gelu"]} and report.dynamic_inputs == ["x"]
    assert "opset 20 is outside CANN 8.0's documented v9-v18" in report.problems[0]
    assert "target_opset" in report.problems[1]


def test_atc_dry_run_refuses_with_exit_2_and_passes_after_target_opset(tmp_path):
    src, fixed = tmp_path / "g.onnx", tmp_path / "g18.onnx"
    onnx.save(_gelu_model(batch=2), src)
    args = ["--dry-run", "--soc-version", "Ascend310", "--cann-version", "8.0.RC1"]
    refused = CliRunner().invoke(main, ["atc", str(src), *args])
    assert refused.exit_code == 2 and "opset 20 is outside" in refused.output and "Gelu" in refused.output
    onnx.save(run_pipeline(_gelu_model(batch=2), ["target_opset"]).model, fixed)
    ready = CliRunner().invoke(main, ["atc", str(fixed), *args])
    assert ready.exit_code == 0, ready.output
    assert "atc --framework=5" in ready.output
    old = CliRunner().invoke(main, ["atc", str(fixed), *args[:-1], "5.0.4"])
    assert old.exit_code == 2 and "v9-v13" in old.output


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_target_opset_lowers_gelu_equal_on_onnxruntime(approximate):
    feeds = {"x": np.linspace(-4, 4, 16, dtype=np.float32).reshape(2, 8)}
    result = check_pass(_gelu_model(approximate), ["target_opset"], {"target_opset": {"opset": 18}}, feeds=feeds,
                        atol=1e-6)
    assert result.model.opset_import[0].version == 18
    assert result.reports[0].details["gelu_lowered"] == ["gelu"]
    assert "Gelu" not in {n.op_type for n in result.model.graph.node}


def test_target_opset_refuses_attention_before_lowering():
    graph = helper.make_graph([helper.make_node("Attention", ["q", "q", "q"], ["y"], name="attn")], "g",
                              [helper.make_tensor_value_info("q", T.FLOAT, [1, 2, 4, 8])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, 2, 4, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    with pytest.raises(UserError, match="run lower_attention before target_opset"):
        run_pipeline(model, ["target_opset"])
    assert run_pipeline(model, ["lower_attention", "target_opset"]).model.opset_import[0].version == 18
