"""Static AIPP configs and batch gears (issue 35): the config against real public samples key by key,
atc's command line, the stand-ins, and each refusal."""
from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest

from fakes.ascend_env import FIXTURES_DIR, fake_ais_bench, fake_tools, write_tiny_onnx  # noqa: F401
from lvvit_opt.ascend.aipp import (AippConfig, aipp_for_model, aipp_from_normalize, aipp_numpy, check_aipp_shapes,
                                   parse_aipp_text)
from lvvit_opt.ascend.atc import build_atc_command, onnx_inputs, parse_atc_errors, parse_batch_gears
from lvvit_opt.cli import main
from lvvit_opt.core.errors import UserError
from lvvit_opt.models.metadata import Preprocessing, model_props, set_props

AIPP = FIXTURES_DIR / "aipp"
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _sample(name: str) -> str:
    return "\n".join(line for line in (AIPP / name).read_text(encoding="utf-8").splitlines()
                     if not line.startswith("#"))


def _tiny(path, batch="batch", mean=IMAGENET[0], std=IMAGENET[1], crop_pct=0.9, props=True) -> str:
    write_tiny_onnx(path, batch=batch)
    if props:
        model = onnx.load(str(path))
        prep = Preprocessing(input_size=(3, 224, 224), crop_pct=crop_pct, interpolation="bicubic", mean=mean,
                             std=std, source="test")
        set_props(model, model_props("tiny", "true", None, prep))
        onnx.save(model, str(path))
    return str(path)


# ---- the config against the real samples --------------------------------------------------------------------

def test_every_aipp_sample_is_read_by_a_test():
    assert sorted(p.name for p in AIPP.iterdir()) == sorted(
        ["sam_modelzoo.aippconfig", "det_aipp_visionsdk-ocr.cfg", "cls_aipp_visionsdk-ocr.cfg",
         "msit_07_dynamic_aipp_actual_aipp_conf.config", "ops-cv_aipp_tiling_test_crop256.txt"])


@pytest.mark.parametrize("sample", ["sam_modelzoo.aippconfig", "det_aipp_visionsdk-ocr.cfg"])
def test_imagenet_config_matches_the_real_samples_field_by_field(sample):
    ours = parse_aipp_text(aipp_from_normalize(*IMAGENET, src_size=(1024, 1024), crop_size=(1024, 1024)).text())
    theirs = parse_aipp_text(_sample(sample))
    for key, value in theirs.items():  # every key the sample sets, we set to the same value
        assert key in ours, key
        if key.startswith(("min_chn", "var_reci_chn", "mean_chn")):
            assert float(ours[key]) == pytest.approx(float(value), rel=1e-12, abs=1e-12), key
        elif key.startswith("src_image_size"):
            assert ours[key] == value
        else:
            assert ours[key] == value, key
    assert ours["aipp_mode"] == "static" and ours["input_format"] == "RGB888_U8" and ours["crop"] == "false"
    assert [ours[f"mean_chn_{i}"] for i in range(3)] == ["0", "0", "0"]  # an integer field, as the samples write it


def test_mean_half_std_half_matches_the_visionsdk_classifier():
    ours = parse_aipp_text(aipp_from_normalize((0.5,) * 3, (0.5,) * 3, src_size=(192, 48), crop_size=(192, 48)).text())
    theirs = parse_aipp_text(_sample("cls_aipp_visionsdk-ocr.cfg"))
    for key in theirs:
        if key.startswith(("min_chn", "var_reci_chn", "mean_chn")):
            assert float(ours[key]) == pytest.approx(float(theirs[key]), rel=1e-15)
        else:
            assert ours[key] == theirs[key], key


def test_crop_256_to_224_matches_msit_and_the_ops_cv_kernel_test():
    ours = parse_aipp_text(aipp_from_normalize(*IMAGENET, src_size=(256, 256), crop_size=(224, 224)).text())
    msit = {k: v for k, v in (line.split(":", 1) for line in _sample("msit_07_dynamic_aipp_actual_aipp_conf.config")
                                                                   .splitlines()[1:] if ":" in line)}
    msit = {k.strip(): v.strip() for k, v in msit.items()}
    for key in ("src_image_size_w", "src_image_size_h", "load_start_pos_h", "load_start_pos_w", "crop_size_w",
                "crop_size_h", "input_format"):
        assert ours[key] == msit[key], key
    assert msit["crop"] == "1" and ours["crop"] == "true"
    for key in [f"{p}_{i}" for p in ("min_chn", "var_reci_chn") for i in range(3)]:
        assert float(ours[key]) == pytest.approx(float(msit[key]), rel=1e-12), key
    kernel = json.loads(_sample("ops-cv_aipp_tiling_test_crop256.txt").splitlines()[0])
    for key, value in kernel.items():
        if isinstance(value, float):  # the kernel holds float32: our values round to the same float32
            assert np.float32(float(ours[key])) == np.float32(value), key
        elif isinstance(value, bool):
            assert ours[key] == ("true" if value else "false")
        else:
            assert ours[key] == str(value), key


def test_a_wrong_mapping_would_not_match_the_samples():
    wrong = {f"var_reci_chn_{i}": 1 / s for i, s in enumerate(IMAGENET[1])}  # 1/std without the 255
    theirs = parse_aipp_text(_sample("sam_modelzoo.aippconfig"))
    assert all(not math.isclose(wrong[k], float(theirs[k]), rel_tol=1e-3) for k in wrong)


def test_parse_refuses_a_repeated_key():
    with pytest.raises(UserError, match="given twice"):
        parse_aipp_text("aipp_op {\n min_chn_0 : 1\n min_chn_0 : 2\n}")


# ---- from the model's metadata -----------------------------------------------------------------------------

def test_config_from_lvvit_s_metadata(tmp_path):
    config = aipp_for_model(_tiny(tmp_path / "m.onnx"))
    assert (config.src_image_size_w, config.src_image_size_h) == (248, 248)  # floor(224 / 0.9)
    assert (config.crop_size_w, config.load_start_pos_w, config.load_start_pos_h) == (224, 12, 12)
    assert config.min_chn == pytest.approx((123.675, 116.28, 103.53))
    assert config.var_reci_chn == pytest.approx(tuple(1 / (255 * s) for s in IMAGENET[1]))
    assert config.to_dict()["input"] == {"layout": "NHWC", "dtype": "uint8", "shape": [248, 248, 3],
                                         "channel_order": "RGB"}


def test_explicit_values_override_the_metadata(tmp_path):
    config = aipp_for_model(_tiny(tmp_path / "m.onnx"), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), src_size=256)
    assert config.min_chn == (127.5,) * 3 and config.src_image_size_w == 256 and config.load_start_pos_w == 16


def test_model_without_metadata_is_refused_naming_the_options(tmp_path):
    with pytest.raises(UserError) as info:
        aipp_for_model(_tiny(tmp_path / "m.onnx", props=False))
    assert "--aipp-mean" in str(info.value) and "--aipp-std" in str(info.value) and "\n" not in str(info.value)
    config = aipp_for_model(tmp_path / "m.onnx", mean=IMAGENET[0], std=IMAGENET[1], crop_size=224)
    assert config.crop is False and config.src_image_size_w == 224


def test_fully_dynamic_shape_is_refused(tmp_path):
    path = tmp_path / "dyn.onnx"
    from onnx import TensorProto, helper

    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, "h", "w"])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, 1, 1])
    graph = helper.make_graph([helper.make_node("GlobalAveragePool", ["image"], ["y"])], "g", [image], [out])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    config = aipp_from_normalize(*IMAGENET, src_size=(248, 248), crop_size=(224, 224))
    with pytest.raises(UserError, match="fully dynamic shape"):
        check_aipp_shapes(config, onnx_inputs(path))
    with pytest.raises(UserError, match="input_shape_range"):
        check_aipp_shapes(config, onnx_inputs(_tiny(tmp_path / "m.onnx")), ["--input_shape_range=image:[1~4],3,224,224"])


def test_crop_outside_the_source_is_refused():
    with pytest.raises(UserError, match="does not fit"):
        AippConfig(224, 224, 224, 224, 12, 12, (0, 0, 0), (1, 1, 1))
    with pytest.raises(UserError, match=r"\[0, 255\]"):
        aipp_from_normalize((1.5, 0, 0), (1, 1, 1), src_size=(224, 224), crop_size=(224, 224))


def test_aipp_numpy_is_the_float_pipeline_within_fp16():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 248, 248, 3), dtype=np.uint8)
    config = aipp_from_normalize(*IMAGENET, src_size=(248, 248), crop_size=(224, 224))
    got = aipp_numpy(config, images).astype(np.float32)
    crop = images[:, 12:236, 12:236, :].astype(np.float64).transpose(0, 3, 1, 2)
    want = (crop - 255 * np.array(IMAGENET[0])[:, None, None]) / (255 * np.array(IMAGENET[1])[:, None, None])
    assert got.shape == (2, 3, 224, 224) and np.abs(got - want).max() < 2e-2  # fp16: ~3 significant digits


# ---- batch gears -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, why", [("1", "2 to 100"), ("1,1", "repeated"), ("0,4", "1..2048"),
                                       ("1,x", "positive integers"), (",".join(map(str, range(1, 102))), "2 to 100"),
                                       ("1,4096", "1..2048")])
def test_gear_lists_are_checked(text, why):
    with pytest.raises(UserError, match=why):
        parse_batch_gears(text)


def test_gears_command_has_minus_one_batch(tmp_path):
    model = _tiny(tmp_path / "m.onnx")
    command = build_atc_command(model, soc_version="Ascend310", batch_gears="16,1,4,8", insert_op_conf="a.cfg")
    assert "--input_shape=image:-1,3,224,224" in command and "--input_format=NCHW" in command
    assert "--dynamic_batch_size=1,4,8,16" in command and command[-1] == "--insert_op_conf=a.cfg"


def test_static_batch_onnx_is_refused_naming_the_fix(tmp_path):
    model = _tiny(tmp_path / "m.onnx", batch=16)
    with pytest.raises(UserError, match="export --dynamic-batch"):
        build_atc_command(model, soc_version="Ascend310", batch_gears="1,16")


# ---- the CLI with the stand-in atc and ais_bench --------------------------------------------------------------

def test_cli_atc_aipp_and_gears(tmp_path, cli_runner, fake_tools):
    model = _tiny(tmp_path / "m.onnx")
    result = cli_runner.invoke(main, ["atc", model, "--soc-version", "Ascend310", "--aipp", "--batch-gears",
                                      "1,4", "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())["result"]
    assert f"--insert_op_conf={tmp_path / 'm.aipp.cfg'}" in report["command"]
    assert "--dynamic_batch_size=1,4" in report["command"] and "--input_shape=image:-1,3,224,224" in report["command"]
    assert report["aipp"]["input"] == {"layout": "NHWC", "dtype": "uint8", "shape": [248, 248, 3],
                                       "channel_order": "RGB"}
    assert report["batch_gears"] == [1, 4]
    written = parse_aipp_text((tmp_path / "m.aipp.cfg").read_text())
    assert written["min_chn_0"] == "123.675" and written["load_start_pos_w"] == "12"


def test_cli_atc_aipp_without_metadata_exits_2_in_one_line(tmp_path, cli_runner, fake_tools):
    model = _tiny(tmp_path / "m.onnx", props=False)
    result = cli_runner.invoke(main, ["atc", model, "--soc-version", "Ascend310", "--aipp", "--batch-size", "1"])
    assert result.exit_code == 2 and "--aipp-mean" in result.output
    assert not (tmp_path / "m.aipp.cfg").exists() and not (tmp_path / "m.om").exists()


def test_cli_aipp_override_needs_aipp(tmp_path, cli_runner, fake_tools):
    result = cli_runner.invoke(main, ["atc", _tiny(tmp_path / "m.onnx"), "--aipp-mean", "0.5,0.5,0.5"])
    assert result.exit_code == 2 and "needs --aipp" in result.output


def test_cli_gears_on_a_static_onnx_exits_2(tmp_path, cli_runner, fake_tools):
    result = cli_runner.invoke(main, ["atc", _tiny(tmp_path / "m.onnx", batch=4), "--soc-version", "Ascend310",
                                      "--batch-gears", "1,4"])
    assert result.exit_code == 2 and "export --dynamic-batch" in result.output


def test_stand_in_atc_replays_the_documented_e10003(tmp_path, fake_tools):
    import subprocess

    model = _tiny(tmp_path / "m.onnx")
    run = subprocess.run(["atc", "--framework=5", f"--model={model}", f"--output={tmp_path / 'm'}",
                          "--input_shape=image:-1,3,224,224", "--dynamic_batch_size=1.1,2,4,8",
                          "--soc_version=Ascend310"], capture_output=True, text=True)
    assert run.returncode == 1
    assert [e.code for e in parse_atc_errors(run.stdout)] == ["E10003"]


def test_ais_bench_stand_in_runs_gears_on_uint8(tmp_path, fake_ais_bench, cli_runner):
    model = _tiny(tmp_path / "m.onnx")
    assert cli_runner.invoke(main, ["atc", model, "--soc-version", "Ascend310", "--aipp",
                                    "--batch-gears", "1,4"]).exit_code == 0
    from ais_bench.infer.interface import InferSession

    session = InferSession(0, str(tmp_path / "m.om"))
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(4, 248, 248, 3), dtype=np.uint8)
    session.set_dynamic_batchsize("4")
    (out,) = session.infer([images])
    config = aipp_for_model(model)
    want = aipp_numpy(config, images).astype(np.float32).mean(axis=(2, 3), keepdims=True)
    assert out.shape == (4, 3, 1, 1) and np.abs(out - want).max() < 1e-2
    with pytest.raises(RuntimeError, match="gears"):
        session.set_dynamic_batchsize("3")
    with pytest.raises(RuntimeError, match="not equal to model input size"):  # float32 is 4x the bytes
        session.infer([images.astype(np.float32)])
    session.set_dynamic_batchsize("1")
    assert session.infer([images[:1]])[0].shape == (1, 3, 1, 1)


def test_ais_bench_runner_runs_a_gear_of_an_aipp_om(tmp_path, fake_ais_bench, cli_runner):
    from lvvit_opt.runtime.ais_bench import AisBenchRunner

    model = _tiny(tmp_path / "m.onnx")
    assert cli_runner.invoke(main, ["atc", model, "--soc-version", "Ascend310", "--aipp",
                                    "--batch-gears", "1,4"]).exit_code == 0
    images = np.random.default_rng(2).integers(0, 256, size=(1, 248, 248, 3), dtype=np.uint8)
    with AisBenchRunner(str(tmp_path / "m.om"), dym_batch=1) as runner:
        assert runner.inputs[0].dtype == "uint8" and runner.inputs[0].shape == (1, 248, 248, 3)
        (out,) = runner.infer({runner.inputs[0].name: images}).values()
    assert out.shape == (1, 3, 1, 1)
    assert runner.describe()["dym_batch"] == 1


def test_ais_bench_cli_stand_in_takes_dymbatch_and_uint8_bins(tmp_path, fake_ais_bench, cli_runner):
    import subprocess
    import sys

    model = _tiny(tmp_path / "m.onnx")
    assert cli_runner.invoke(main, ["atc", model, "--soc-version", "Ascend310", "--aipp",
                                    "--batch-gears", "1,4"]).exit_code == 0
    (tmp_path / "in").mkdir()
    np.random.default_rng(4).integers(0, 256, size=(4, 248, 248, 3), dtype=np.uint8).tofile(tmp_path / "in/a.bin")
    base = [sys.executable, "-m", "ais_bench", "--model", str(tmp_path / "m.om"), "--input", str(tmp_path / "in"),
            "--output", str(tmp_path / "out"), "--output_dirname", "r"]
    env = {**__import__("os").environ, "PYTHONPATH": str(fake_ais_bench)}
    assert subprocess.run(base + ["--dymBatch", "4"], env=env, capture_output=True).returncode == 0
    assert np.fromfile(tmp_path / "out/r/a_0.bin", dtype=np.float32).size == 4 * 3
    missing = subprocess.run(base, env=env, capture_output=True, text=True)
    assert missing.returncode == 1 and "--dymBatch" in missing.stderr


# ---- the CPU preview ---------------------------------------------------------------------------------------------

def _conv_model(path, batch="batch"):
    """A small conv net with preprocessing metadata: a model whose output depends on every pixel and channel."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    weight = numpy_helper.from_array(rng.normal(0, 0.1, (8, 3, 16, 16)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.normal(0, 0.1, (8, 10)).astype(np.float32), "fc")
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, 224, 224])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])
    nodes = [helper.make_node("Conv", ["image", "w"], ["c"], strides=[16, 16]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("MatMul", ["f", "fc"], ["logits"])]
    model = helper.make_model(helper.make_graph(nodes, "conv", [image], [logits], [weight, fc]),
                              opset_imports=[helper.make_opsetid("", 13)])
    prep = Preprocessing(input_size=(3, 224, 224), crop_pct=0.9, interpolation="bicubic", mean=IMAGENET[0],
                         std=IMAGENET[1], source="test")
    set_props(model, model_props("conv", "true", None, prep))
    onnx.save(model, str(path))
    return str(path)


def test_preview_prepends_the_documented_ops(tmp_path):
    from lvvit_opt.debug.aipp_preview import AIPP_INPUT, prepend_aipp

    model = onnx.load(_conv_model(tmp_path / "m.onnx"))
    aipp = prepend_aipp(model, aipp_for_model(tmp_path / "m.onnx"))
    ops = [n.op_type for n in aipp.graph.node[:9]]
    assert ops == ["Cast", "Slice", "Sub", "Cast", "Cast", "Mul", "Cast", "Cast", "Transpose"]
    assert [aipp.graph.node[i].attribute[0].i for i in (3, 6)] == [onnx.TensorProto.FLOAT16] * 2  # fp16 rounding
    (new_input,) = aipp.graph.input
    assert new_input.name == AIPP_INPUT and new_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in new_input.type.tensor_type.shape.dim][1:] == [248, 248, 3]
    onnx.checker.check_model(aipp)


@pytest.mark.parametrize("mean, std", [IMAGENET, ((0.5,) * 3, (0.5,) * 3)])
def test_preview_graph_is_fp16_arithmetic_bit_for_bit(mean, std):
    """onnxruntime lifts fp16 Sub/Mul to fp32 and drops the rounding; the preview's explicit Cast pairs keep it:
    its AIPP output equals numpy's fp16 arithmetic exactly, and differs from the exact value by fp16 rounding."""
    from onnx import TensorProto, helper

    from lvvit_opt.debug.aipp_preview import AIPP_INPUT, prepend_aipp
    from lvvit_opt.runtime.ort import OrtRunner

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, 224, 224])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, 224, 224])
    identity = helper.make_model(helper.make_graph([helper.make_node("Identity", ["image"], ["y"])], "g", [x], [y]),
                                 opset_imports=[helper.make_opsetid("", 13)])
    config = aipp_from_normalize(mean, std, src_size=(248, 248), crop_size=(224, 224))
    sources = np.random.default_rng(0).integers(0, 256, (2, 248, 248, 3), dtype=np.uint8)
    with OrtRunner.from_model(prepend_aipp(identity, config)) as runner:
        got = runner.infer({AIPP_INPUT: sources})["y"]
    assert np.array_equal(got, aipp_numpy(config, sources).astype(np.float32))
    exact = (sources[:, 12:236, 12:236].astype(np.float64).transpose(0, 3, 1, 2)
             - 255 * np.array(mean)[:, None, None]) / (255 * np.array(std)[:, None, None])
    assert 1e-4 < np.abs(got - exact).max() < 4e-3  # fp16: visible, and small


def test_preview_measures_the_error_aipp_adds_and_passes(tmp_path):
    from lvvit_opt.debug.aipp_preview import preview_aipp

    report = preview_aipp(_conv_model(tmp_path / "m.onnx"), count=3)
    worst = report.input_error.outputs[0]
    assert report.passed and 0 < worst.max_abs < 2e-2  # fp16: not zero, and small
    assert report.outputs.outputs[0].cosine > 0.9999


def test_preview_fails_a_planted_wrong_mapping(tmp_path):
    from lvvit_opt.debug.aipp_preview import preview_aipp

    path = _conv_model(tmp_path / "m.onnx")
    right = aipp_for_model(path)
    wrong = AippConfig(248, 248, 224, 224, 12, 12, right.min_chn, tuple(1 / s for s in IMAGENET[1]))  # no 255
    report = preview_aipp(path, wrong, count=2)
    assert not report.passed and not report.input_error.passed
    shifted = AippConfig(248, 248, 224, 224, 11, 12, right.min_chn, right.var_reci_chn)  # crop one pixel off
    assert not preview_aipp(path, shifted, count=2).input_error.passed


def test_preview_on_image_files_matches_the_eval_transform_crop(tmp_path):
    from PIL import Image

    from lvvit_opt.data.transform import EvalTransform
    from lvvit_opt.debug.aipp_preview import preview_aipp

    rng = np.random.default_rng(5)
    paths = []
    for i, size in enumerate([(300, 240), (240, 333), (251, 251)]):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        paths.append(path)
    transform = EvalTransform()
    for path in paths:  # the host's source square, cropped by AIPP, is exactly the eval transform's crop
        source = transform.load_source(path, (248, 248), (12, 12))
        assert np.array_equal(source[12:236, 12:236], transform.load_crop(path))
    report = preview_aipp(_conv_model(tmp_path / "m.onnx"), images=paths)
    assert report.passed and report.batch == 3


def test_cli_debug_layers_and_validate_aipp(tmp_path, cli_runner):
    model = _conv_model(tmp_path / "m.onnx")
    result = cli_runner.invoke(main, ["debug", "layers", model, "--aipp", "--inputs", "2",
                                      "--json", str(tmp_path / "p.json")])
    assert result.exit_code == 0, result.output
    assert "error AIPP adds to the normalised input: max_abs=" in result.output
    report = json.loads((tmp_path / "p.json").read_text())["result"]
    assert report["passed"] and 0 < report["input_error"]["outputs"][0]["max_abs"] < 2e-2
    result = cli_runner.invoke(main, ["validate", model, "--aipp", "--inputs", "2"])
    assert result.exit_code == 0, result.output
    assert cli_runner.invoke(main, ["validate", model]).exit_code == 2
    assert cli_runner.invoke(main, ["debug", "layers", model, model, "--aipp"]).exit_code == 2


def test_legacy_benchmark_runner_passes_the_gear(tmp_path, fake_tools, cli_runner):
    from lvvit_opt.runtime.benchmark import BenchmarkRunner

    model = _tiny(tmp_path / "m.onnx")
    assert cli_runner.invoke(main, ["atc", model, "--soc-version", "Ascend310", "--batch-gears", "1,4"]).exit_code == 0
    images = np.random.default_rng(6).normal(size=(4, 3, 224, 224)).astype(np.float32)
    with BenchmarkRunner(str(tmp_path / "m.om"), dym_batch=4) as runner:
        assert "-dym_batch=4" in runner.command("x.info", 224, 224)
        (out,) = runner.infer({"image": images}).values()
    assert out.shape == (4, 3, 1, 1)
    np.testing.assert_allclose(out, images.mean(axis=(2, 3), keepdims=True), atol=1e-2)
    with pytest.raises(Exception, match="dym_batch"):
        with BenchmarkRunner(str(tmp_path / "m.om"), batch_size=4) as runner:
            runner.infer({"image": images})


def test_doctor_knows_the_aipp_and_gear_limits(tmp_path, fake_tools):
    from lvvit_opt.ascend.doctor import check_aipp_and_gears

    check = check_aipp_and_gears(_tiny(tmp_path / "dyn.onnx"))
    assert check.status == "ok" and "uint8 NHWC [248, 248, 3]" in check.summary
    assert "batch gears possible" in check.summary and "host" in check.details["resize"]
    check = check_aipp_and_gears(_tiny(tmp_path / "bare.onnx", batch=4, props=False))
    assert check.status == "ok" and "--aipp-mean" in check.summary and "export --dynamic-batch" in check.summary
