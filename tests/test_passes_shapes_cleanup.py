"""fold_constants, fix_shapes and cleanup (through tests/pass_check.py): structure, equality, golden outputs."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from lvvit_opt.core.errors import UserError
from lvvit_opt.passes import run_pipeline
from lvvit_opt.core.tensor_spec import dims_of
from pass_check import check_pass


def _constants(graph):
    return {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}


@pytest.fixture(scope="module")
def dynamic_golden_onnx(tmp_path_factory, golden_weights):
    """The golden LV-ViT exported with a symbolic batch and NOT simplified: Reshape targets
    are computed from Shape(image)."""
    from lvvit_opt.export import export_onnx

    out = tmp_path_factory.mktemp("dyn") / "lvvit_golden_dyn.onnx"
    export_onnx(out, model="lvvit_golden", checkpoint=golden_weights, dynamic_batch=True, simplify=False,
                log=lambda _m: None)
    return str(out)


@pytest.mark.parametrize("names", [["fold_constants"], ["cleanup"], ["fold_constants", "cleanup"]])
def test_golden_graph_unchanged_numerically(golden_onnx, golden_io, names):
    check_pass(onnx.load(golden_onnx), names, feeds={"image": golden_io["image"]},
               reference={"features": golden_io["features"]})


def test_fold_constants_turns_constant_nodes_into_initializers(golden_onnx, golden_io):
    model = onnx.load(golden_onnx)
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["Constant"]
    result = check_pass(model, ["fold_constants"], ops={op: n for op, n in ops.items() if op != "Constant"},
                        feeds={"image": golden_io["image"]})
    assert result.reports[0].details["ops_folded"] == {"Constant": ops["Constant"]}


def test_fix_shapes_dynamic_batch_equals_fixed_batch_export(dynamic_golden_onnx, golden_onnx, golden_io):
    dynamic = onnx.load(dynamic_golden_onnx)
    assert dims_of(dynamic.graph.input[0].type)[0] != 2  # symbolic
    computed = [n for n in dynamic.graph.node if n.op_type == "Reshape" and n.input[1] not in _constants(dynamic.graph)]
    assert computed, "the unsimplified dynamic export should compute Reshape targets"

    result = check_pass(dynamic, ["fix_shapes", "cleanup"], {"fix_shapes": {"batch_size": "2"}},
                        feeds={"image": golden_io["image"]}, reference={"features": golden_io["features"]})
    fixed = result.model
    report = result.reports[0]
    assert report.details["inputs"] == {"image": [2, 3, 224, 224]}
    assert report.details["reshape_targets_made_constant"] == len(computed)
    assert report.details["reshape_targets_still_computed"] == []
    assert report.details["outputs"] == {"features": [2, 1000]}
    assert not any(n.op_type == "Shape" for n in fixed.graph.node)
    assert all(n.input[1] in _constants(fixed.graph) for n in fixed.graph.node if n.op_type == "Reshape")
    for value in list(fixed.graph.value_info) + list(fixed.graph.output):
        dims = dims_of(value.type)
        assert dims is not None and all(isinstance(d, int) for d in dims), value.name


def test_fix_shapes_whole_input_shape_and_errors(dynamic_golden_onnx, golden_onnx):
    dynamic = onnx.load(dynamic_golden_onnx)
    image = np.random.default_rng(0).standard_normal((3, 3, 224, 224)).astype(np.float32)
    result = check_pass(dynamic, ["fix_shapes"], {"fix_shapes": {"input_shapes": "image:3,3,224,224"}},
                        feeds={"image": image})
    assert dims_of(result.model.graph.output[0].type) == (3, 1000)
    with pytest.raises(UserError, match="no input named"):
        run_pipeline(dynamic, ["fix_shapes"], {"fix_shapes": {"input_shapes": "pixels:1,3,224,224"}})
    with pytest.raises(UserError, match="NAME:D1"):
        run_pipeline(dynamic, ["fix_shapes"], {"fix_shapes": {"input_shapes": "image:a,b"}})
    with pytest.raises(UserError, match=r"input image \['batch', 3, 224, 224\] is not static; give batch_size"):
        run_pipeline(dynamic, ["fix_shapes"])
    with pytest.raises(UserError, match="already has a static batch 2"):
        run_pipeline(onnx.load(golden_onnx), ["fix_shapes"], {"fix_shapes": {"batch_size": 16}})


def test_fix_shapes_keeps_a_batch_that_is_already_static(golden_onnx, golden_io):
    """The ascend310 preset starts with fix_shapes: on a static export it keeps the shapes, folds
    and infers, and says so, instead of asking for --batch-size."""
    result = check_pass(onnx.load(golden_onnx), ["fix_shapes"], feeds={"image": golden_io["image"]},
                        reference={"features": golden_io["features"]})
    report = result.reports[0]
    assert report.details["inputs"] == {} and report.matched == 0
    assert report.notes[0] == "the inputs are already static: kept as they are"
    assert dims_of(result.model.graph.input[0].type) == (2, 3, 224, 224)
    assert dims_of(result.model.graph.output[0].type) == (2, 1000)


def _messy_model():
    """y = Relu(x) written out of order, plus a dead branch, an unused initializer and an unused input."""
    nodes = [
        helper.make_node("Relu", ["h"], ["y"], name="relu"),          # consumer first: needs toposort
        helper.make_node("Add", ["x", "bias"], ["h"], name="add"),
        helper.make_node("Neg", ["h"], ["dead1"], name="dead_neg"),    # nothing reads dead1 ...
        helper.make_node("Exp", ["dead1"], ["dead2"], name="dead_exp"),  # ... nor dead2
    ]
    inits = [helper.make_tensor("bias", TensorProto.FLOAT, [3], [1.0, -2.0, 0.5]),
             helper.make_tensor("unused_w", TensorProto.FLOAT, [2], [1.0, 2.0])]
    graph = helper.make_graph(nodes, "messy",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
                               helper.make_tensor_value_info("unused_in", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], inits,
                              value_info=[helper.make_tensor_value_info("dead2", TensorProto.FLOAT, [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_cleanup_removes_dead_code_and_toposorts():
    x = np.array([1.0, 1.0, -3.0], np.float32)
    result = check_pass(_messy_model(), ["cleanup"], ops=["Add", "Relu"],
                        feeds={"x": x, "unused_in": np.zeros(3, np.float32)}, reference={"y": [2.0, 0.0, 0.0]})
    graph = result.model.graph
    assert [n.name for n in graph.node] == ["add", "relu"]
    assert [i.name for i in graph.initializer] == ["bias"]
    assert [i.name for i in graph.input] == ["x", "unused_in"]  # the interface is kept
    assert list(graph.value_info) == []
    details = result.reports[0].details
    assert details == {"dead_nodes": 2, "unused_initializers": ["unused_w"], "unused_inputs": [],
                       "stale_value_infos": 1}


def test_cleanup_can_drop_unused_inputs_when_asked():
    result = check_pass(_messy_model(), ["cleanup"], {"cleanup": {"keep_unused_inputs": "false"}}, ops=["Add", "Relu"])
    assert [i.name for i in result.model.graph.input] == ["x"]
    assert result.reports[0].details["unused_inputs"] == ["unused_in"]


def test_cleanup_removes_an_unused_ir3_initializer_from_the_inputs_too():
    """IR < 4 lists initializers among the inputs: dropping only the initializer would leave a
    required input nobody feeds."""
    model = _messy_model()
    model.ir_version = 3
    model.opset_import[0].version = 8
    model.graph.input.extend([helper.make_tensor_value_info("bias", TensorProto.FLOAT, [3]),
                              helper.make_tensor_value_info("unused_w", TensorProto.FLOAT, [2])])
    result = check_pass(model, ["cleanup"], ops=["Add", "Relu"])
    assert [i.name for i in result.model.graph.input] == ["x", "unused_in", "bias"]
