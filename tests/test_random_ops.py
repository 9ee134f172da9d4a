"""validate/debug warn about random nodes (ViTMAE's RandomUniformLike masking, Dropout in
training mode) with their names: a comparison of such a graph judges noise."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
from click.testing import CliRunner
from onnx import TensorProto as T, helper, numpy_helper

from lvvit_opt.cli import main
from lvvit_opt.verify.random_ops import random_nodes


def _noisy_model(training: bool = True) -> onnx.ModelProto:
    nodes = [helper.make_node("RandomUniformLike", ["x"], ["noise"], name="mae_mask_noise"),
             helper.make_node("Add", ["x", "noise"], ["h"]),
             helper.make_node("Dropout", ["h", "ratio", "mode"], ["y"], name="drop")]
    inits = [numpy_helper.from_array(np.array(0.5, np.float32), "ratio"),
             numpy_helper.from_array(np.array(training), "mode")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_random_nodes_found_and_inference_dropout_is_not():
    assert random_nodes(_noisy_model()) == ["mae_mask_noise (RandomUniformLike)", "drop (Dropout) training_mode"]
    assert random_nodes(_noisy_model(training=False)) == ["mae_mask_noise (RandomUniformLike)"]


def test_validate_warns_with_node_names(tmp_path, golden_onnx):
    path = tmp_path / "noisy.onnx"
    onnx.save(_noisy_model(), path)
    result = CliRunner().invoke(main, ["validate", str(path), str(path)])
    assert "random node(s)" in result.output and "mae_mask_noise (RandomUniformLike)" in result.output
    quiet = CliRunner().invoke(main, ["validate", golden_onnx, golden_onnx])
    assert "random node" not in quiet.output


def _noise_only_model() -> onnx.ModelProto:
    """y = x + U(0,1) noise of x's shape: every run differs unless the node is seeded."""
    nodes = [helper.make_node("RandomUniformLike", ["x"], ["noise"], name="mae_mask_noise"),
             helper.make_node("Add", ["x", "noise"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [2, 64])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [2, 64])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_seed_random_nodes_sets_the_attribute_each_op_defines(tmp_path):
    from lvvit_opt.verify.random_ops import node_seed, seed_random_nodes

    model = _noisy_model()
    assert seed_random_nodes(model, seed=3) == ["mae_mask_noise (RandomUniformLike)", "drop (Dropout) training_mode"]
    noise, _, drop = model.graph.node
    assert [(a.name, a.type, a.f) for a in noise.attribute] == [("seed", onnx.AttributeProto.FLOAT,
                                                                  float(node_seed(noise, 3)))]
    assert [(a.name, a.type, a.i) for a in drop.attribute] == [("seed", onnx.AttributeProto.INT, node_seed(drop, 3))]
    onnx.checker.check_model(model, full_check=True)
    seed_random_nodes(model, seed=3)  # again: one seed attribute each, not two
    assert [len(n.attribute) for n in model.graph.node] == [1, 0, 1]


def _run_in_a_process(path) -> str:
    code = ("import sys, numpy as np, onnxruntime as ort; "
            "print(ort.InferenceSession(sys.argv[1]).run(None, {'x': np.zeros((2, 64), np.float32)})[0].tobytes().hex())")
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True).stdout


def test_validate_of_a_random_graph_against_itself_passes_once_seeded(tmp_path):
    """validate seeds both sides alike, says so, passes exactly, and leaves the file as it was."""
    import hashlib
    import json

    from lvvit_opt.verify.random_ops import seed_random_nodes

    path = tmp_path / "noisy.onnx"
    onnx.save(_noise_only_model(), path)
    seeded = _noise_only_model()
    seed_random_nodes(seeded)
    onnx.save(seeded, tmp_path / "seeded.onnx")
    # the premise: onnxruntime draws one seed per process, so unseeded runs in two processes differ
    # (in one process they happen to agree) and seeded ones agree
    assert _run_in_a_process(path) != _run_in_a_process(path)
    assert _run_in_a_process(tmp_path / "seeded.onnx") == _run_in_a_process(tmp_path / "seeded.onnx")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    result = CliRunner().invoke(main, ["validate", str(path), str(path), "--json", str(tmp_path / "v.json")])
    assert result.exit_code == 0, result.output
    assert "1 in the reference seeded alike" in result.output and "1 in the candidate seeded alike" in result.output
    report = json.loads((tmp_path / "v.json").read_text())["result"]
    assert report["random_nodes"] == {side: {"seeded": ["mae_mask_noise (RandomUniformLike)"], "unseeded": []}
                                      for side in ("reference", "candidate")}
    assert [(o["name"], o["max_abs"]) for o in report["comparisons"]["candidate vs reference"]["outputs"]] == [("y", 0.0)]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_seeded_validate_still_catches_a_wrong_candidate(tmp_path):
    """Seeding must not hide a real error: the candidate adds 0.01 after the noise."""
    ref, cand = tmp_path / "ref.onnx", tmp_path / "cand.onnx"
    onnx.save(_noise_only_model(), ref)
    wrong = _noise_only_model()
    wrong.graph.node[1].output[0] = "y0"
    wrong.graph.node.append(helper.make_node("Add", ["y0", "bias"], ["y"], name="bias_add"))
    wrong.graph.initializer.append(numpy_helper.from_array(np.full((1,), 0.01, np.float32), "bias"))
    onnx.save(wrong, cand)
    result = CliRunner().invoke(main, ["validate", str(ref), str(cand)])
    assert result.exit_code == 1, result.output
    assert "seeded alike" in result.output and "FAIL" in result.output


def test_another_backend_leaves_random_nodes_unseeded_and_says_so(tmp_path):
    from lvvit_opt.verify.golden import with_seeded_random_nodes

    path = tmp_path / "noisy.onnx"
    onnx.save(_noise_only_model(), path)
    model, found = with_seeded_random_nodes(path, {"backend": "onnx_reference"})
    assert model == path and found == {"seeded": [], "unseeded": ["mae_mask_noise (RandomUniformLike)"]}
    proto = _noise_only_model()
    copy, found = with_seeded_random_nodes(proto)
    assert found["seeded"] == ["mae_mask_noise (RandomUniformLike)"] and not proto.graph.node[0].attribute


def test_golden_made_in_one_process_checks_in_another(tmp_path):
    """golden make and golden check run in different processes: seeded, the noise is the same in both."""
    path, golden = tmp_path / "noisy.onnx", tmp_path / "g.npz"
    onnx.save(_noise_only_model(), path)
    made = subprocess.run([sys.executable, "-m", "lvvit_opt", "golden", "make", str(path), "-o", str(golden)],
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    checked = subprocess.run([sys.executable, "-m", "lvvit_opt", "golden", "check", str(path), str(golden)],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "random nodes: 1 in the model seeded alike" in checked.stdout


def test_vitmae_from_transformers_checks_against_its_golden_across_processes(tmp_path):
    """Another exporter's graph: HF ViTMAE (random masking, RandomUniformLike) through torch.onnx.
    Before seeding, `golden check` in a second process failed (cosine 0.76); now it passes exactly."""
    import torch
    from transformers import ViTMAEConfig, ViTMAEModel

    config = ViTMAEConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                          image_size=32, patch_size=8, mask_ratio=0.5)
    torch.manual_seed(0)
    path, golden = tmp_path / "mae.onnx", tmp_path / "mae.npz"
    torch.onnx.export(ViTMAEModel(config).eval(), (torch.randn(1, 3, 32, 32),), str(path), opset_version=17,
                      input_names=["pixel_values"], output_names=["last_hidden_state"], dynamo=False)
    assert any("RandomUniformLike" in label for label in random_nodes(onnx.load(path)))
    for verb in (["make", str(path), "-o", str(golden)], ["check", str(path), str(golden)]):
        run = subprocess.run([sys.executable, "-m", "lvvit_opt", "golden", *verb], capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
    assert "max_abs=0 " in run.stdout and "seeded alike" in run.stdout
