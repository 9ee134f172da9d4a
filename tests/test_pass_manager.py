"""The pass manager (passes/pipeline.py): structural check after each pass, option shortcuts."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from lvvit_opt.cli import main
from lvvit_opt.core.errors import UserError
from lvvit_opt.passes import (GraphPass, PassBrokeStructure, apply_file, apply_shortcuts, registered, run_pipeline,
                              structural_problem)
from pass_check import check_pass


class DropFirstNode(GraphPass):
    """Test-only: delete the first node, leaving its output dangling (an invalid graph)."""

    name = "drop_first_node"

    @dataclass
    class Options:
        pass

    def rewrite(self, model, report):
        del model.graph.node[0]
        report.matched = 1


class ReluToSoftmaxRank(GraphPass):
    """Test-only: give Softmax an axis beyond the rank (checker passes, strict shape inference fails)."""

    name = "bad_softmax_axis"

    @dataclass
    class Options:
        pass

    def rewrite(self, model, report):
        node = next(n for n in model.graph.node if n.op_type == "Softmax")
        del node.attribute[:]
        node.attribute.append(helper.make_attribute("axis", 7))
        report.matched = 1


def _model():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="relu"),
             helper.make_node("Softmax", ["h"], ["y"], name="softmax", axis=-1)]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("broken, problem", [(DropFirstNode, "ValidationError"), (ReluToSoftmaxRank, "axis")])
def test_structural_check_names_the_pass_that_broke_the_graph(broken, problem):
    assert structural_problem(_model()) is None
    with registered(broken):
        with pytest.raises(PassBrokeStructure, match=rf"pass '{broken.name}' left an invalid graph: .*{problem}.*"
                                                     r"\(passes before it: cleanup\)") as failure:
            run_pipeline(_model(), ["cleanup", broken.name, "fold_constants"])
    assert failure.value.pass_name == broken.name and [r.name for r in failure.value.reports] == ["cleanup", broken.name]
    assert failure.value.exit_code == 1


def test_structural_check_comes_before_the_numeric_check(golden_onnx, tmp_path, cli_runner):
    with registered(DropFirstNode):
        result = cli_runner.invoke(main, ["apply", golden_onnx, "-o", str(tmp_path / "o.onnx"), "--check-each",
                                          "--passes", "softmax_transpose,drop_first_node"])
    assert result.exit_code == 1 and not (tmp_path / "o.onnx").exists()
    assert "pass 'drop_first_node' left an invalid graph" in result.output
    assert "broke equivalence" not in result.output and "Traceback" not in result.output


def test_shortcuts_map_onto_pass_options():
    names = ["fix_shapes", "cleanup"]
    assert apply_shortcuts(names, None, {"batch_size": 16, "input_shapes": None}) == {"fix_shapes": {"batch_size": 16}}
    assert apply_shortcuts(names, {"fix_shapes": {"batch_size": "16"}}, {"batch_size": 16}) == \
        {"fix_shapes": {"batch_size": 16}}
    with pytest.raises(UserError, match=r"-O fix_shapes.batch_size=8 and --batch-size 16 disagree"):
        apply_shortcuts(names, {"fix_shapes": {"batch_size": "8"}}, {"batch_size": 16})
    with pytest.raises(UserError, match="--input-shape only applies to the fix_shapes pass; add it to --passes"):
        apply_shortcuts(["cleanup"], None, {"input_shapes": "image:1,3,224,224"})
    # --batch-size is also the validation batch: no pass needs to take it
    assert apply_shortcuts(["cleanup"], None, {"batch_size": 4}, optional={"batch_size"}) == {}


def test_batch_size_shortcut_equals_the_generic_option(tmp_path, cli_runner):
    """`--batch-size 3` and `-O fix_shapes.batch_size=3` write the same model and report the same options."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    source = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(source))
    outputs = []
    for flags, name in ((["--batch-size", "3"], "a"), (["-O", "fix_shapes.batch_size=3"], "b")):
        out = tmp_path / f"{name}.onnx"
        result = cli_runner.invoke(main, ["apply", str(source), "-o", str(out), "--passes", "fix_shapes",
                                          "--json", str(tmp_path / f"{name}.json"), *flags])
        assert result.exit_code == 0, result.output
        outputs.append(out.read_bytes())
        report = json.loads((tmp_path / f"{name}.json").read_text())["result"]
        assert report["passes"][0]["options"]["batch_size"] == 3
    assert outputs[0] == outputs[1]
    assert [d.dim_value for d in onnx.load_from_string(outputs[0]).graph.input[0].type.tensor_type.shape.dim] == [3, 4]


def test_pass_check_helper_catches_a_pass_that_changes_results():
    class Negate(GraphPass):
        """Test-only: Relu -> Neg (a structurally fine but wrong rewrite)."""

        name = "negate_test"

        @dataclass
        class Options:
            pass

        def rewrite(self, model, report):
            model.graph.node[0].op_type = "Neg"

    with registered(Negate):
        with pytest.raises(AssertionError, match="output y"):
            check_pass(_model(), ["negate_test"], feeds={"x": np.arange(6, dtype=np.float32).reshape(2, 3)})
        with pytest.raises(AssertionError):
            check_pass(_model(), ["negate_test"], ops=["Relu", "Softmax"])
