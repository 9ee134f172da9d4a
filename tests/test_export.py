"""Export: onnxruntime equals torch; names, shapes, dynamic batch; CLI behaviour."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from lvvit_opt import export as export_mod
from lvvit_opt.models.checkpoint import save_checkpoint
from lvvit_opt.cli import main
from lvvit_opt.core.errors import ValidationFailed
from lvvit_opt.export import export_onnx
from lvvit_opt.models.model import create_model
from lvvit_opt.core.tensor_spec import dims_of


def _dims(value_info) -> list:
    return list(dims_of(value_info.type))


def _run(path: str, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(["features"], {"image": x})[0]


def _assert_fully_shaped(model: onnx.ModelProto) -> None:
    known = {v.name: v for v in [*model.graph.value_info, *model.graph.output, *model.graph.input]}
    for node in model.graph.node:
        for name in node.output:
            assert name in known, f"{name} has no value_info"
            assert all(isinstance(d, int) and d > 0 for d in _dims(known[name])), f"{name}: {_dims(known[name])}"


def _check_export(path: str, model_name: str, batch: int, checkpoint=None) -> None:
    model = onnx.load(path)
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == 13
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["features"]
    assert _dims(model.graph.input[0]) == [batch, 3, 224, 224]
    assert _dims(model.graph.output[0]) == [batch, 1000]
    _assert_fully_shaped(model)
    net = create_model(model_name, checkpoint, seed=0)
    x = np.random.default_rng(5).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_run(path, x), expected, atol=1e-4, rtol=0)


def test_golden_config_export_matches_torch_and_stored_golden(tmp_path, golden_weights, golden_io):
    out = tmp_path / "golden.onnx"
    result = export_onnx(out, model="lvvit_golden", checkpoint=golden_weights, batch_size=2, log=lambda m: None)
    assert result.random_weights is False and result.max_abs_diff <= 1e-4
    _check_export(str(out), "lvvit_golden", 2, golden_weights)
    np.testing.assert_allclose(_run(str(out), golden_io["image"]), golden_io["features"], atol=1e-5, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 2])
def test_lvvit_s_export_matches_torch(tmp_path, batch):
    out = tmp_path / f"lvvit_s_bs{batch}.onnx"
    messages: list[str] = []
    result = export_onnx(out, model="lvvit_s", batch_size=batch, log=messages.append)
    assert result.random_weights and any("RANDOM" in m for m in messages)
    _check_export(str(out), "lvvit_s", batch)
    softmaxes = [n for n in onnx.load(str(out)).graph.node if n.op_type == "Softmax"]
    assert len(softmaxes) == 16


def test_dynamic_batch_runs_at_two_batch_sizes(tmp_path):
    out = tmp_path / "dyn.onnx"
    export_onnx(out, model="lvvit_golden", dynamic_batch=True, seed=4, log=lambda m: None)
    model = onnx.load(str(out))
    assert _dims(model.graph.input[0])[0] == "batch"
    net = create_model("lvvit_golden", seed=4)
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 224, 224), dtype=np.float32)
        with torch.no_grad():
            expected = net(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(_run(str(out), x), expected, atol=1e-4, rtol=0)


def test_no_simplify_keeps_raw_export_and_still_verifies(tmp_path):
    raw, sim = tmp_path / "raw.onnx", tmp_path / "sim.onnx"
    export_onnx(raw, model="lvvit_golden", batch_size=1, simplify=False, log=lambda m: None)
    export_onnx(sim, model="lvvit_golden", batch_size=1, simplify=True, log=lambda m: None)
    raw_nodes, sim_nodes = len(onnx.load(str(raw)).graph.node), len(onnx.load(str(sim)).graph.node)
    assert sim_nodes < raw_nodes


def test_disagreeing_export_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(export_mod, "_verify", lambda *a: 0.5)
    out = tmp_path / "bad.onnx"
    with pytest.raises(ValidationFailed, match="0.5"):
        export_onnx(out, model="lvvit_golden", batch_size=1, log=lambda m: None)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_export_with_checkpoint(tmp_path, cli_runner):
    ckpt = tmp_path / "w.pth.tar"
    save_checkpoint(create_model("lvvit_golden", seed=9), ckpt, module_prefix=True)
    out = tmp_path / "m.onnx"
    result = cli_runner.invoke(main, ["export", "--model", "lvvit_golden", "--checkpoint", str(ckpt),
                                      "--batch-size", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "RANDOM" not in result.output
    assert "max abs diff" in result.output
    _check_export(str(out), "lvvit_golden", 2, str(ckpt))


def test_cli_export_random_weights_says_so(tmp_path, cli_runner):
    result = cli_runner.invoke(main, ["export", "--model", "lvvit_golden", "-o", str(tmp_path / "r.onnx")])
    assert result.exit_code == 0
    assert "RANDOM weights (no --checkpoint: a deterministic init, seed 0)" in result.output


@pytest.mark.parametrize("args, needle", [
    (["--checkpoint", "{junk}"], "not a PyTorch checkpoint"),
    (["--checkpoint", "{missing}"], "no such checkpoint file"),
    (["--model", "vit_bse_patch16_224"], "did you mean vit_base_patch16_224"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, cli_runner, args, needle):
    junk = tmp_path / "junk.pth"
    junk.write_text("hello")
    args = [a.format(junk=junk, missing=tmp_path / "nope.pth") for a in args]
    out = tmp_path / "x.onnx"
    result = cli_runner.invoke(main, ["export", "--model", "lvvit_golden", *args, "-o", str(out)])
    assert result.exit_code == 2
    assert needle in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_cli_wrong_checkpoint_names_the_keys(tmp_path, cli_runner):
    ckpt = tmp_path / "small.pth"
    save_checkpoint(create_model("lvvit_golden"), ckpt)
    result = cli_runner.invoke(main, ["export", "--model", "lvvit_t", "--checkpoint", str(ckpt), "-o",
                                      str(tmp_path / "t.onnx")])
    assert result.exit_code == 2
    assert "shape mismatch" in result.output and "blocks.11.attn.qkv.weight" in result.output
