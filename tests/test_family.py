"""The ViT family: names checked before torch, timm exports with plain attention, the
preprocessing in metadata_props and the verbs that read it back (timm's tiny test_vit:
160 px, crop 0.95, mean/std 0.5, 6 blocks, so every field differs from LV-ViT's)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from fakes.ascend_env import no_tools  # noqa: F401  (fixture)
from lvvit_opt.cli import main
from lvvit_opt.data.synthetic import make_image_dir, write_val_txt
from lvvit_opt.data.transform import EvalTransform, eval_transform_for, transform_from_onnx
from lvvit_opt.core.errors import UserError
from lvvit_opt.export import export_onnx
from lvvit_opt.models.metadata import Preprocessing, read_props, set_props
from lvvit_opt.models.model import create_model, plain_attention
from lvvit_opt.runtime.ort import OrtRunner
from lvvit_opt.models.zoo import check_model_name, committed_timm_models, installed_timm_models

TEST_VIT_PROPS = {
    "lvvit_opt.model": "test_vit",
    "lvvit_opt.random_weights": "true",
    "lvvit_opt.version": "0.1.0",
    "lvvit_opt.preprocess.source": "timm pretrained_cfg test_vit.r160_in1k",
    "lvvit_opt.preprocess.input_size": "3,160,160",
    "lvvit_opt.preprocess.crop_pct": "0.95",
    "lvvit_opt.preprocess.interpolation": "bicubic",
    "lvvit_opt.preprocess.mean": "0.5,0.5,0.5",
    "lvvit_opt.preprocess.std": "0.5,0.5,0.5",
    "lvvit_opt.preprocess.crop_mode": "center",
}
TEST_VIT_TRANSFORM = EvalTransform(img_size=160, crop_pct=0.95, interpolation="bicubic", mean=(0.5,) * 3,
                                   std=(0.5,) * 3)


@pytest.fixture(scope="module")
def test_vit_onnx(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("family") / "test_vit_bs2.onnx"
    export_onnx(out, model="test_vit", batch_size=2, log=lambda m: None)
    return str(out)


# --- names ---------------------------------------------------------------------------------

def test_committed_timm_list_matches_installed_timm():
    """Fails after a timm upgrade until scripts/update_timm_models.py is re-run."""
    version, names = installed_timm_models()
    assert committed_timm_models() == (version, frozenset(names))


@pytest.mark.parametrize("name", ["lvvit_s", "lvvit_golden", "deit_tiny_patch16_224",
                                  "deit_tiny_patch16_224.fb_in1k", "crossvit_tiny_240"])
def test_known_names_pass(name):
    assert check_model_name(name) == name


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UserError, match=r"did you mean vit_base_patch16_224, .*deit_base_patch16_224"):
        check_model_name("vit_bse_patch16_224")
    version, names = committed_timm_models()
    with pytest.raises(UserError, match=rf"unknown model 'qqqqqq'.* {len(names)} timm {re.escape(version)} models$"):
        check_model_name("qqqqqq")


def test_unknown_name_fails_before_torch_is_imported(tmp_path):
    code = ("import sys\nfrom click.testing import CliRunner\nfrom lvvit_opt.cli import main\n"
            f"r = CliRunner().invoke(main, ['export', '--model', 'deit_tiny_patch16_22', '-o', {str(tmp_path / 'x.onnx')!r}])\n"
            "print(r.exit_code, 'torch' in sys.modules, 'timm' in sys.modules)\nprint(r.output)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    first, message = done.stdout.split("\n", 1)
    assert first == "2 False False", done.stdout + done.stderr
    version, names = committed_timm_models()
    assert message.strip().splitlines() == [
        f"error: unknown model 'deit_tiny_patch16_22': not an LV-ViT variant (lvvit_t, lvvit_s, lvvit_m, lvvit_l, "
        f"lvvit_golden) nor one of the {len(names)} timm {version} models; did you mean deit_tiny_patch16_224, "
        "vit_tiny_patch16_224, vit_tiny_patch16_384, deit_tiny_distilled_patch16_224, deit_base_patch16_224?"]
    assert not (tmp_path / "x.onnx").exists()


# --- export --------------------------------------------------------------------------------

def _softmax_neighbours(model: onnx.ModelProto) -> list[tuple[str, list[str]]]:
    """Per Softmax: the op that produced its input and the ops that read its output."""
    producer = {o: n for n in model.graph.node for o in n.output}
    found = []
    for node in model.graph.node:
        if node.op_type == "Softmax":
            readers = [n.op_type for n in model.graph.node if node.output[0] in n.input]
            found.append((producer[node.input[0]].op_type, readers))
    return found


@pytest.mark.parametrize("opset", [13, 17])
def test_timm_export_is_plain_attention_at_the_users_opset(tmp_path, opset):
    out = tmp_path / "vit.onnx"
    result = export_onnx(out, model="test_vit", batch_size=2, opset=opset, log=lambda m: None)
    model = onnx.load(str(out))
    assert model.opset_import[0].version == opset and {o.domain for o in model.opset_import} == {""}
    # q*scale @ k^T -> Softmax(-1) -> @ v, once per block; nothing fused
    assert _softmax_neighbours(model) == [("MatMul", ["MatMul"])] * 6
    assert [a.i for n in model.graph.node if n.op_type == "Softmax" for a in n.attribute] == [-1] * 6
    assert result.img_size == 160 and result.parameters == 371240 and result.random_weights
    # verified against the model as users run it: timm's fused attention on
    net = create_model("test_vit", seed=0)
    assert all(m.fused_attn for m in net.modules() if hasattr(m, "fused_attn"))
    x = np.random.default_rng(3).standard_normal((2, 3, 160, 160), dtype=np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    with OrtRunner(str(out)) as runner:
        np.testing.assert_allclose(runner.infer({"image": x})["features"], expected, atol=1e-4, rtol=0)


def test_plain_attention_switches_fused_attention_off_and_restores_it():
    import timm.layers

    net = create_model("test_vit", seed=0)
    attention = [m for m in net.modules() if hasattr(m, "fused_attn")]
    assert len(attention) == 6 and timm.layers.use_fused_attn()
    with pytest.raises(RuntimeError, match="boom"):
        with plain_attention(net) as switched:
            assert switched == 6 and not any(m.fused_attn for m in attention)
            assert not timm.layers.use_fused_attn()
            raise RuntimeError("boom")
    assert all(m.fused_attn for m in attention) and timm.layers.use_fused_attn()


def test_export_writes_preprocessing_and_provenance_metadata(test_vit_onnx):
    props = read_props(test_vit_onnx)
    assert {k: v for k, v in props.items() if k.startswith("lvvit_opt.")} == TEST_VIT_PROPS


def test_metadata_survives_the_passes(test_vit_onnx, tmp_path):
    from lvvit_opt.passes import apply_file

    out = tmp_path / "opt.onnx"
    apply_file(test_vit_onnx, out, ["softmax_transpose", "cleanup"])
    assert transform_from_onnx(out) == TEST_VIT_TRANSFORM


def test_lvvit_metadata_from_its_config(tmp_path, golden_weights):
    out = tmp_path / "g.onnx"
    export_onnx(out, model="lvvit_golden", checkpoint=golden_weights, batch_size=1, log=lambda m: None)
    props = read_props(out)
    assert props["lvvit_opt.random_weights"] == "false" and props["lvvit_opt.checkpoint"] == "lvvit_golden.pth"
    assert props["lvvit_opt.preprocess.source"] == "LV-ViT config"
    assert transform_from_onnx(out) == EvalTransform(img_size=224, crop_pct=0.9)


def test_lvvit_m_and_l_record_crop_1():
    from lvvit_opt.export import model_preprocessing
    from lvvit_opt.models.zoo import lvvit_pretrained_cfg

    class Fake:
        def __init__(self, name):
            self.pretrained_cfg = lvvit_pretrained_cfg(name)

    assert [model_preprocessing(n, Fake(n)).crop_pct for n in ("lvvit_t", "lvvit_s", "lvvit_m", "lvvit_l")] == [
        0.9, 0.9, 1.0, 1.0]


# --- timm checkpoints ----------------------------------------------------------------------

def test_timm_checkpoint_loads_strictly_in_timm_formats(tmp_path):
    from safetensors.torch import save_file

    source = create_model("test_vit", seed=7)
    state = source.state_dict()
    save_file(state, str(tmp_path / "model.safetensors"))
    torch.save({"model": state, "epoch": 3}, str(tmp_path / "deit_style.pth"))
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((1, 3, 160, 160), dtype=np.float32))
    with torch.no_grad():
        expected = source(x)
        for name in ("model.safetensors", "deit_style.pth"):
            loaded = create_model("test_vit", tmp_path / name, seed=0)
            assert torch.equal(loaded(x), expected), name
    broken = {k: v for k, v in state.items() if k != "blocks.3.attn.qkv.weight"}
    torch.save(broken, str(tmp_path / "broken.pth"))
    with pytest.raises(UserError, match=r"1 missing key\(s\): blocks\.3\.attn\.qkv\.weight"):
        create_model("test_vit", tmp_path / "broken.pth")


def test_official_layout_is_converted_by_timms_filter(tmp_path):
    """An official (big_vision / JAX-converted) style checkpoint: the patch embedding stored as a Linear
    weight, which timm's vision_transformer.checkpoint_filter_fn reshapes to the Conv2d layout."""
    source = create_model("test_vit", seed=5)
    state = source.state_dict()
    conv = state["patch_embed.proj.weight"]
    official = dict(state, **{"patch_embed.proj.weight": conv.reshape(conv.shape[0], -1)})
    torch.save(official, str(tmp_path / "official.pth"))
    messages: list[str] = []
    loaded = create_model("test_vit", tmp_path / "official.pth", log=messages.append)
    assert torch.equal(loaded.patch_embed.proj.weight, conv)
    assert any("converted from the official layout" in m for m in messages)


def test_official_swin_checkpoint_is_converted(tmp_path):
    """microsoft/Swin-Transformer's layout: {'model': ...}, downsample at the end of a stage
    (layers.0.downsample), `head.` for the classifier, persistent relative_position_index buffers."""
    import re as regex

    source = create_model("swin_tiny_patch4_window7_224", seed=3)
    official = {}
    for key, value in source.state_dict().items():
        key = regex.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        official[key.replace("head.fc.", "head.")] = value
    official["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
    assert "layers.0.downsample.reduction.weight" in official
    torch.save({"model": official}, str(tmp_path / "swin_tiny_patch4_window7_224.pth"))
    loaded = create_model("swin_tiny_patch4_window7_224", tmp_path / "swin_tiny_patch4_window7_224.pth")
    x = torch.from_numpy(np.random.default_rng(2).standard_normal((1, 3, 224, 224), dtype=np.float32))
    with torch.no_grad():
        assert torch.equal(loaded(x), source.eval()(x))


# --- metadata readers ----------------------------------------------------------------------

def test_preprocessing_round_trip_and_bad_values():
    pre = Preprocessing((3, 240, 240), 0.875, "bicubic", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "center",
                        "timm pretrained_cfg crossvit_tiny_240.in1k")
    props = pre.to_props()
    assert Preprocessing.from_props(props) == pre
    assert Preprocessing.from_props({"other": "x"}) is None
    for key, value, needle in [("crop_pct", "nan", "not a finite number"), ("std", "0.2,0,0.2", "must be positive"),
                               ("input_size", "3,224", "expected 3"), ("mean", "a,b,c", "could not convert")]:
        with pytest.raises(UserError, match=f"lvvit_opt.preprocess.{key}=.*{needle}"):
            Preprocessing.from_props(dict(props, **{f"lvvit_opt.preprocess.{key}": value}))
    with pytest.raises(UserError, match="lvvit_opt.preprocess.mean is missing"):
        Preprocessing.from_props({k: v for k, v in props.items() if not k.endswith(".mean")})


def test_set_props_replaces_same_keys_and_keeps_others():
    model = onnx.ModelProto()
    set_props(model, {"a": "1", "keep": "k"})
    set_props(model, {"a": "2"})
    assert [(p.key, p.value) for p in model.metadata_props] == [("keep", "k"), ("a", "2")]


def test_transform_from_onnx_flags_win(test_vit_onnx, golden_onnx, tmp_path):
    assert transform_from_onnx(test_vit_onnx) == TEST_VIT_TRANSFORM
    assert transform_from_onnx(test_vit_onnx, crop_pct=1.0, interpolation="bilinear") == EvalTransform(
        160, 1.0, "bilinear", (0.5,) * 3, (0.5,) * 3)
    assert transform_from_onnx(golden_onnx) is None  # no metadata
    assert transform_from_onnx(tmp_path / "model.om") is None
    assert eval_transform_for(golden_onnx, crop_pct=1.0) == (EvalTransform(crop_pct=1.0), "defaults (LV-ViT-S)")
    # an .om has no metadata_props: the ONNX it was compiled from, beside it, speaks for it
    shutil.copyfile(test_vit_onnx, tmp_path / "vit_bs2.onnx")
    for om in ("vit_bs2.om", "vit_bs2_linux_aarch64.om"):
        (tmp_path / om).write_bytes(b"om")
        assert eval_transform_for(tmp_path / om) == (TEST_VIT_TRANSFORM, f"model metadata of vit_bs2.onnx (beside {om})")
    (tmp_path / "other.om").write_bytes(b"om")
    assert eval_transform_for(tmp_path / "other.om") == (EvalTransform(), "defaults (LV-ViT-S)")


def test_bad_crop_mode_is_refused(test_vit_onnx, tmp_path):
    model = onnx.load(test_vit_onnx)
    set_props(model, {"lvvit_opt.preprocess.crop_mode": "squash"})
    onnx.save(model, str(tmp_path / "squash.onnx"))
    with pytest.raises(UserError, match="crop_mode 'squash'"):
        transform_from_onnx(tmp_path / "squash.onnx")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("val")
    make_image_dir(directory, 3, sizes=((200, 150), (150, 210), (300, 300)))
    return directory


def test_cli_preprocess_reads_the_models_metadata(test_vit_onnx, images, tmp_path, cli_runner):
    out = tmp_path / "bins"
    result = cli_runner.invoke(main, ["-v", "preprocess", str(images), str(out), "--workers", "1",
                                      "--model", test_vit_onnx])  # -v: the transform line is logged at info
    assert result.exit_code == 0, result.output
    assert "transform from model metadata of test_vit_bs2.onnx: 160 px, crop_pct 0.95, bicubic" in result.output
    first = sorted(images.iterdir())[0]
    written = np.fromfile(out / f"{first.stem}.bin", dtype=np.float32).reshape(3, 160, 160)
    np.testing.assert_array_equal(written, TEST_VIT_TRANSFORM(first))
    flagged = tmp_path / "flagged"
    result = cli_runner.invoke(main, ["preprocess", str(images), str(flagged), "--workers", "1", "--model",
                                      test_vit_onnx, "--crop-pct", "1.0", "--img-size", "128"])
    assert result.exit_code == 0, result.output
    wanted = EvalTransform(128, 1.0, "bicubic", (0.5,) * 3, (0.5,) * 3)(first)
    np.testing.assert_array_equal(np.fromfile(flagged / f"{first.stem}.bin", dtype=np.float32).reshape(3, 128, 128),
                                  wanted)


def test_cli_preprocess_never_writes_over_the_model(test_vit_onnx, images, tmp_path, cli_runner):
    model = tmp_path / "m.onnx"
    shutil.copyfile(test_vit_onnx, model)
    before = model.read_bytes()
    result = cli_runner.invoke(main, ["preprocess", str(images), str(tmp_path / "bins"), "--model", str(model),
                                      "--info", str(model)])
    assert result.exit_code == 2 and "is the input --model" in result.output
    assert model.read_bytes() == before and not (tmp_path / "bins").exists()


def test_eval_feeds_the_model_its_own_transform(test_vit_onnx, images, tmp_path):
    from lvvit_opt.measure.evaluate import evaluate

    paths = sorted(images.iterdir())
    with OrtRunner(test_vit_onnx) as runner:
        batch = np.stack([TEST_VIT_TRANSFORM(p) for p in paths[:2]])
        top1 = runner.infer({"image": batch})["features"].argmax(axis=1)
    labels = write_val_txt(tmp_path / "val.txt", {paths[0].name: int(top1[0]), paths[1].name: int(top1[1])})
    result = evaluate(test_vit_onnx, images, labels, workers=1, limit=2)
    assert result.accuracy.top1 == 1.0
    assert result.preprocessing == ("160 px, crop_pct 0.95, bicubic, mean (0.5, 0.5, 0.5), std (0.5, 0.5, 0.5) "
                                    "(from model metadata of test_vit_bs2.onnx)")
    assert f"preprocessing: {result.preprocessing}" in result.summary()
    overridden = evaluate(test_vit_onnx, images, labels, workers=1, limit=2, crop_pct=0.5)
    assert overridden.preprocessing.startswith("160 px, crop_pct 0.5, bicubic")


def test_cli_run_with_a_timm_model(tmp_path, cli_runner, no_tools):
    out = tmp_path / "run"
    result = cli_runner.invoke(main, ["run", "--model", "test_vit", "--batch-sizes", "2", "--out", str(out),
                                      "--bench-duration", "0.2", "--bench-rounds", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["whitelist"]["created"] == [[2, 2, 101, 101], [2, 101, 101, 2]]  # 2 heads, 10x10 patches + cls
    assert all(s in report["whitelist"]["shapes"] for s in report["whitelist"]["created"])  # and the model's own
    assert report["applies"]["2"]["validation"]["passed"] is True
    assert "--input_shape=image:2,3,160,160" in (out / "atc_commands.sh").read_text()
    assert transform_from_onnx(out / "test_vit_bs2_opt.onnx") == TEST_VIT_TRANSFORM


def test_family_check_model_row(tmp_path):
    from lvvit_opt.pipeline.family import check_model

    row = check_model("test_vit", tmp_path, batch_size=1)
    assert (row.parameters, row.img_size, row.softmax_found, row.wrapped, row.skipped) == (371240, 160, 6, 6, [])
    assert row.whitelist_shapes == [[1, 2, 101, 101], [1, 101, 101, 2]] and row.whitelist_reported
    assert row.validation_passed and row.max_abs_diff == 0.0 and row.random_weights
    assert row.preprocessing == "160 px, crop 0.95, bicubic, mean 0.5,0.5,0.5"
