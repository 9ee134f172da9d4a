"""`lvvit-opt debug layers`: the first divergent tensor, ONNX vs ONNX, vs fp16, vs an NPU dump."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fakes.ascend_env import FAKE_PYTHON, fake_om  # noqa: F401  (fixture)
from lvvit_opt.cli import main
from lvvit_opt.debug.layers import compare_layers
from lvvit_opt.passes import apply_file

DEEP_NODE = "/blocks.1/mlp/fc1/MatMul"


@pytest.fixture
def perturbed_deep(golden_onnx, tmp_path):
    """The golden LV-ViT with the weight of one node deep inside (block 1's fc1) scaled by 1.01."""
    model = onnx.load(golden_onnx)
    node = next(n for n in model.graph.node if n.name == DEEP_NODE)
    weight = next(i for i in model.graph.initializer if i.name == node.input[1])
    assert sum(weight.name in n.input for n in model.graph.node) == 1
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(1.01), weight.name))
    path = tmp_path / "perturbed.onnx"
    onnx.save(model, str(path))
    return str(path)


def overflow_onnx(path) -> str:
    """embed (Add) -> scores (MatMul, values ~1.6e5 > fp16's 65504) -> softmax -> out."""
    rng = np.random.default_rng(0)
    bias = numpy_helper.from_array(rng.uniform(15.0, 25.0, (8,)).astype(np.float32), "bias")
    weight = numpy_helper.from_array((500.0 + rng.uniform(-0.005, 0.005, (8, 8))).astype(np.float32), "weight")
    nodes = [helper.make_node("Add", ["x", "bias"], ["embedded"], name="embed"),
             helper.make_node("MatMul", ["embedded", "weight"], ["scores_out"], name="scores"),
             helper.make_node("Softmax", ["scores_out"], ["out"], name="softmax", axis=-1)]
    graph = helper.make_graph(nodes, "overflow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 8])], [bias, weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return str(path)


def test_perturbed_weight_deep_inside_is_named_first(cli_runner, golden_onnx, perturbed_deep, tmp_path):
    out = tmp_path / "report.json"
    result = cli_runner.invoke(main, ["debug", "layers", golden_onnx, perturbed_deep, "--json", str(out)])
    assert result.exit_code == 1, result.output
    envelope = json.loads(out.read_text())
    assert envelope["command"] == "debug layers" and envelope["ok"] is False
    report = envelope["result"]
    first = report["first_divergence"]
    assert first["node"] == DEEP_NODE and first["op_type"] == "MatMul" and not first["passed"]
    tensors = report["tensors"]
    position = next(i for i, t in enumerate(tensors) if t["node"] == DEEP_NODE)
    assert position > 50 and all(t["passed"] for t in tensors[:position])  # nothing before it
    assert report["last_passing_before"]["index"] == tensors[position - 1]["index"]
    assert report["broken_nodes"] == [DEEP_NODE]
    assert f"first divergence: #{first['index']} {DEEP_NODE} (MatMul)" in result.output
    assert "last passing before it:" in result.output and "per op type:" in result.output


def test_fp16_overflow_is_named_and_kept_in_fp32(cli_runner, tmp_path):
    model = overflow_onnx(tmp_path / "overflow.onnx")
    keep = tmp_path / "keep.cfg"
    result = cli_runner.invoke(main, ["debug", "layers", model, "--fp16", "--suggest-keep-dtype", str(keep),
                                      "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 1, result.output
    report = json.loads((tmp_path / "r.json").read_text())["result"]
    assert report["mode"] == "fp16" and report["first_divergence"]["node"] == "scores"
    assert report["last_passing_before"]["node"] == "embed"
    assert report["first_divergence"]["failures"][0].startswith("non-finite values (NaN/Inf) on one side only: "
                                                                "0 in the reference, 32 in the candidate (32 overflow")
    assert list(dict.fromkeys(t["node"] for t in report["tensors"] if not t["passed"])) == ["scores", "softmax"]
    assert report["broken_nodes"] == ["scores"]  # the error starts there; softmax only inherits it
    # kept in fp32 alone, scores' output still overflows in the cast back to fp16 for softmax:
    # the re-run finds that and keeps softmax too; with both in fp32 everything agrees
    assert keep.read_text() == "scores\nsoftmax\n"
    suggestion = report["keep_dtype"]
    assert suggestion["nodes"] == ["scores", "softmax"] and suggestion["verified"] is True
    assert suggestion["rounds"] == 2 and suggestion["first_divergence_left"] is None
    assert suggestion["file"] == str(keep) and suggestion["atc_flag"] == f"--keep_dtype={keep}"
    assert f"--keep_dtype={keep}" in result.output and "every tensor agrees" in result.output
    # the same graph agrees with itself in fp32
    assert compare_layers(model, model).first_divergence is None


def test_keep_dtype_needs_an_fp16_candidate_and_never_hits_an_input(cli_runner, golden_onnx, tmp_path):
    result = cli_runner.invoke(main, ["debug", "layers", golden_onnx, golden_onnx, "--suggest-keep-dtype",
                                      str(tmp_path / "k.cfg")])
    assert result.exit_code == 2 and not (tmp_path / "k.cfg").exists()
    before = open(golden_onnx, "rb").read()
    result = cli_runner.invoke(main, ["debug", "layers", golden_onnx, "--fp16", "--suggest-keep-dtype", golden_onnx])
    assert result.exit_code == 2 and "refusing to overwrite an input" in result.output
    assert open(golden_onnx, "rb").read() == before


def test_softmax_transpose_rewrite_agrees_and_is_matched_through(golden_onnx, tmp_path):
    rewritten = tmp_path / "opt.onnx"
    apply_file(golden_onnx, rewritten, "softmax_transpose")
    report = compare_layers(golden_onnx, str(rewritten))
    assert report.first_divergence is None and report.passed
    _assert_transposes_matched_through(report, rewritten, softmaxes=2)


def _assert_transposes_matched_through(report, rewritten, softmaxes: int):
    model = onnx.load(str(rewritten), load_external_data=False)
    added = [n for n in model.graph.node if n.op_type == "Transpose" and "_transpose" in n.name]
    assert len(added) == 2 * softmaxes
    through = {r.match.candidate: r for r in report.results if r.match.via.startswith("through Transpose")}
    # each pre-Transpose output and each wrapped Softmax output is compared against the reference
    assert len(through) == 2 * softmaxes and all(r.passed for r in through.values())
    softmax_outputs = {n.output[0] for n in model.graph.node if n.op_type == "Softmax"}
    assert softmax_outputs <= set(through)
    assert report.unmatched_candidate == [] and report.unmatched_reference == []


@pytest.mark.slow
def test_lvvit_s_softmax_transpose_rewrite_agrees(lvvit_s_bs1_onnx, tmp_path):
    rewritten = tmp_path / "lvvit_s_opt.onnx"
    apply_file(lvvit_s_bs1_onnx, rewritten, "softmax_transpose", validate=False)
    report = compare_layers(lvvit_s_bs1_onnx, str(rewritten), chunk_mb=64)
    assert report.first_divergence is None
    _assert_transposes_matched_through(report, rewritten, softmaxes=16)


def _ais_bench_dump(om: str, inputs: str, out_dir, perturb_op: str | None = None):
    env = dict(os.environ, PYTHONPATH=str(FAKE_PYTHON))
    env.pop("FAKE_ASCEND_PERTURB_OP", None)
    if perturb_op:
        env["FAKE_ASCEND_PERTURB_OP"] = perturb_op
    subprocess.run([sys.executable, "-m", "ais_bench", "--model", om, "--input", inputs, "--output", str(out_dir),
                    "--dump", "1", "--dump_npy", "1", "--outfmt", "NPY"], env=env, check=True, capture_output=True)
    return out_dir / "dump"


def test_npu_dump_is_matched_and_compared(cli_runner, fake_om, tmp_path):
    onnx_path, om_path = fake_om
    image = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    np.save(tmp_path / "image.npy", image)
    dump = _ais_bench_dump(om_path, str(tmp_path / "image.npy"), tmp_path / "clean")
    names = [p.name for p in dump.rglob("*.npy")]
    assert any(n.startswith("MatMul._blocks_1_mlp_fc1_MatMul.") and n.endswith(".output.0.npy") for n in names)
    clean = compare_layers(onnx_path, str(dump), inputs=str(tmp_path / "image.npy"))
    assert clean.mode == "dump" and clean.passed and len(clean.results) == len(clean.results) > 100
    assert clean.unmatched_reference == [] and len(clean.unmatched_candidate) == 1  # atc's TransData
    assert "TransData.trans_TransData_0." in clean.unmatched_candidate[0]

    bad = _ais_bench_dump(om_path, str(tmp_path / "image.npy"), tmp_path / "bad", perturb_op=DEEP_NODE)
    keep = tmp_path / "keep.cfg"
    result = cli_runner.invoke(main, ["debug", "layers", onnx_path, str(bad), "--inputs", str(tmp_path / "image.npy"),
                                      "--suggest-keep-dtype", str(keep), "--json", "-"])
    assert result.exit_code == 1
    report = json.loads(result.output)["result"]
    assert report["first_divergence"]["node"] == DEEP_NODE and keep.read_text() == DEEP_NODE + "\n"
    assert report["keep_dtype"]["verified"] is None and report["keep_dtype"]["rounds"] == 0  # no NPU to re-run


def test_dump_errors_are_one_line(cli_runner, golden_onnx, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "MatMul.some_op.3.0.1675157077183551").write_bytes(b"\x00" * 16)
    result = cli_runner.invoke(main, ["debug", "layers", golden_onnx, str(raw), "--inputs", "1"])
    assert result.exit_code == 2 and "1 raw dump file(s): convert them first" in result.output
    other = tmp_path / "other"
    other.mkdir()
    np.save(other / "Add.not_in_model.3.0.1675157077183551.output.0.npy", np.zeros(2, np.float32))
    result = cli_runner.invoke(main, ["debug", "layers", golden_onnx, str(other)])
    assert result.exit_code == 2 and "matches a node of the reference" in result.output


@pytest.mark.parametrize("args, message", [
    ([], "give a CANDIDATE"),
    (["CAND", "--fp16"], "not both"),
    (["missing.onnx"], "no such file"),
    (["model.om"], "expected an .onnx or an NPU dump directory"),
    (["CAND", "--om-json", "CAND"], "--om-json maps the ops of an NPU dump"),
])
def test_bad_arguments_exit_2(cli_runner, golden_onnx, tmp_path, args, message):
    args = [golden_onnx if a == "CAND" else a for a in args]
    result = cli_runner.invoke(main, ["debug", "layers", golden_onnx, *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_inputs_forms_give_the_same_layers(golden_onnx, perturbed_deep, tmp_path):
    from lvvit_opt.verify.inputs import make_inputs
    from lvvit_opt.runtime.base import TensorSpec

    feed = make_inputs([TensorSpec("image", (2, 3, 224, 224))], count=1, seed=4)[0]
    np.savez(tmp_path / "x.npz", image=feed["image"])
    by_seed = compare_layers(golden_onnx, perturbed_deep, inputs=1, seed=4).to_dict()
    by_file = compare_layers(golden_onnx, perturbed_deep, inputs=str(tmp_path / "x.npz")).to_dict()
    assert by_seed["tensors"] == by_file["tensors"] and by_file["inputs"]["kind"] == "npz"


def test_fused_ops_of_a_dump_match_through_the_om_json(fake_om, tmp_path):
    """atc fuses GELU's Div/Erf/Add/Mul/Mul into one op; its graph JSON names the original output."""
    onnx_path, om_path = fake_om
    np.save(tmp_path / "image.npy", np.random.default_rng(2).standard_normal((2, 3, 224, 224)).astype(np.float32))
    dump = _ais_bench_dump(om_path, str(tmp_path / "image.npy"), tmp_path / "run")
    act = [p for p in dump.rglob("*.npy") if "_blocks_1_mlp_act_" in p.name]
    assert len(act) == 5
    last = next(p for p in act if "._blocks_1_mlp_act_Mul_1." in p.name)
    fused = last.with_name("Gelu._blocks_1_mlp_act_Gelu.999.0.1675157077183551.output.0.npy")
    fused.write_bytes(last.read_bytes())
    for path in act:
        path.unlink()
    om_json = tmp_path / "lvvit_golden.json"  # the shape of `atc --mode=1` output (see lvvit_opt.debug.dump)
    om_json.write_text(json.dumps({"name": "lvvit_golden", "graph": [{"name": "lvvit_golden", "op": [
        {"name": "/blocks.1/mlp/act/Gelu", "type": "Gelu",
         "attr": [{"key": "_datadump_original_op_names", "value": {"list": {"val_type": 1, "s": [
             "/blocks.1/mlp/act/Div", "/blocks.1/mlp/act/Erf", "/blocks.1/mlp/act/Add", "/blocks.1/mlp/act/Mul",
             "/blocks.1/mlp/act/Mul_1"]}}}],
         "output_desc": [{"attr": [{"key": "_datadump_origin_name", "value": {"s": "/blocks.1/mlp/act/Mul_1"}},
                                   {"key": "_datadump_origin_output_index", "value": {"i": 0}}]}]}]}]}))
    plain = compare_layers(onnx_path, str(dump), inputs=str(tmp_path / "image.npy"))
    assert any("Gelu._blocks_1_mlp_act_Gelu" in u for u in plain.unmatched_candidate)
    assert "/blocks.1/mlp/act/Mul_1_output_0" in plain.unmatched_reference
    mapped = compare_layers(onnx_path, str(dump), inputs=str(tmp_path / "image.npy"), om_json=str(om_json))
    gelu = next(r for r in mapped.results if r.tensor.node == "/blocks.1/mlp/act/Mul_1")
    assert gelu.passed and gelu.match.via.startswith("dump of fused op _blocks_1_mlp_act_Gelu output 0")
    assert not any("Gelu" in u for u in mapped.unmatched_candidate) and mapped.passed
    assert sorted(mapped.unmatched_reference) == sorted(
        f"/blocks.1/mlp/act/{n}_output_0" for n in ("Div", "Erf", "Add", "Mul"))


def test_nc1hwc0_dumps_are_read_as_nchw():
    from lvvit_opt.debug.dump import DumpCandidate

    nchw = np.random.default_rng(3).standard_normal((2, 20, 3, 4)).astype(np.float32)
    padded = np.zeros((2, 32, 3, 4), np.float32)
    padded[:, :20] = nchw
    nc1hwc0 = padded.reshape(2, 2, 16, 3, 4).transpose(0, 1, 3, 4, 2)  # C1=2 blocks of C0=16
    assert np.array_equal(DumpCandidate.align(nc1hwc0, nchw.shape), nchw)
    other = np.zeros((2, 197, 384), np.float32)
    assert DumpCandidate.align(other, (2, 197, 384)) is other


# -- the fp16 preview: our conversion failing (exit 1) vs the model being invalid (exit 2) ----

def _one_line_error(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_fp16_conversion_that_raises_is_an_internal_failure_exit_1(cli_runner, golden_onnx, monkeypatch):
    """A converter bug on a valid model: exit 1, one line that says the conversion failed and that
    the model is not at fault (no traceback, not exit 2)."""
    from lvvit_opt.debug import precision

    def broken(*_args, **_kwargs):
        raise KeyError("converter bug")

    monkeypatch.setattr(precision, "to_true_fp16", broken)
    result = cli_runner.invoke(main, ["debug", "layers", golden_onnx, "--fp16"])
    assert result.exit_code == 1, result.output
    line = _one_line_error(result)
    assert "the fp16 conversion failed (KeyError" in line and "internal failure" in line
    assert "not a problem of the model" in line


def test_fp16_conversion_onnxruntime_refuses_is_an_internal_failure_exit_1(cli_runner, golden_onnx, monkeypatch):
    """The converter returns a graph onnxruntime cannot load, of a reference it runs: ours, exit 1."""
    from lvvit_opt.debug import precision

    real = precision.to_true_fp16

    def adds_a_bad_node(model, *args, **kwargs):
        converted, kept = real(model, *args, **kwargs)
        converted.graph.node.append(helper.make_node("NoSuchOp", [converted.graph.input[0].name], ["stray"],
                                                     name="stray"))
        return converted, kept

    monkeypatch.setattr(precision, "to_true_fp16", adds_a_bad_node)
    result = cli_runner.invoke(main, ["debug", "layers", golden_onnx, "--fp16"])
    assert result.exit_code == 1, result.output
    line = _one_line_error(result)
    assert f"{golden_onnx}: onnxruntime runs it but not its fp16 conversion" in line and "NoSuchOp" in line
    assert "internal failure" in line and "<in-memory model>" not in line


def _write_model(path, nodes, opsets=(("", 13),)) -> str:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    onnx.save(model, str(path))
    return str(path)


def test_fp16_preview_of_an_invalid_model_is_bad_input_exit_2(cli_runner, golden_onnx, tmp_path):
    """A truncated file, bytes that are no ONNX, a dangling input, an unknown op, and a model
    onnx accepts but onnxruntime cannot load (its fp16 copy fails too): the input's fault, exit 2,
    one line naming the model, never called an internal failure."""
    data = open(golden_onnx, "rb").read()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx model")
    dangling = _write_model(tmp_path / "dangling.onnx", [helper.make_node("Relu", ["missing"], ["y"], name="r")])
    unknown = _write_model(tmp_path / "unknown.onnx", [helper.make_node("NoSuchOp", ["x"], ["y"], name="r")])
    custom = _write_model(tmp_path / "custom.onnx",
                          [helper.make_node("Foo", ["x"], ["y"], name="r", domain="com.example")],
                          opsets=(("", 13), ("com.example", 1)))
    for path, says in ((truncated, "not a readable ONNX model"), (garbage, "not a readable ONNX model"),
                       (dangling, "'missing' is not defined"), (unknown, "NoSuchOp"),
                       (custom, "onnxruntime cannot load it")):
        result = cli_runner.invoke(main, ["debug", "layers", str(path), "--fp16"])
        assert result.exit_code == 2, (path, result.output)
        line = _one_line_error(result)
        assert str(path) in line and says in line and "internal" not in line, (path, line)
