"""One test per user-facing defect of issue 14 (CLI part)."""
from __future__ import annotations

import json

import onnx
import pytest
import torch

from fakes.ascend_env import fake_ais_bench, fake_om, fake_tools, no_tools  # noqa: F401  (fixtures)
from lvvit_opt.models.checkpoint import save_checkpoint
from lvvit_opt.cli import main
from lvvit_opt.models.model import create_model


def _envelope(result) -> dict:
    data = json.loads(result.stdout)
    assert set(data) == {"command", "version", "ok", "result", "warnings"}
    return data


def test_non_strict_export_names_the_random_tensors(tmp_path, cli_runner):
    source = create_model("lvvit_golden", seed=3)
    state = source.state_dict()
    state.pop("head.bias")
    state["aux_head.weight"] = torch.zeros(2, 2)  # wrong shape: not loaded either
    ckpt = tmp_path / "partial.pth"
    torch.save({"state_dict": state}, ckpt)
    result = cli_runner.invoke(main, ["export", "--model", "lvvit_golden", "--checkpoint", str(ckpt),
                                      "--non-strict", "-o", str(tmp_path / "m.onnx"), "--json", "-"])
    assert result.exit_code == 0, result.output
    data = _envelope(result)
    assert data["result"]["random_tensors"] == ["head.bias", "aux_head.weight"]
    assert data["result"]["random_weights"] is False
    banner = [w for w in data["warnings"] if "partly RANDOM" in w]
    assert len(banner) == 1 and banner[0].endswith("(seed 0): head.bias, aux_head.weight")
    assert "warning: the exported model is partly RANDOM" in result.stderr


def test_strict_export_has_no_random_banner(tmp_path, cli_runner):
    ckpt = tmp_path / "w.pth"
    save_checkpoint(create_model("lvvit_golden", seed=3), ckpt)
    result = cli_runner.invoke(main, ["export", "--model", "lvvit_golden", "--checkpoint", str(ckpt),
                                      "-o", str(tmp_path / "m.onnx"), "--json", "-"])
    data = _envelope(result)
    assert data["warnings"] == [] and data["result"]["random_tensors"] == []
    assert "RANDOM" not in result.stderr


def test_dynamic_batch_with_batch_size_traces_and_verifies_at_that_batch(tmp_path, cli_runner):
    out = tmp_path / "dyn.onnx"
    result = cli_runner.invoke(main, ["-v", "export", "--model", "lvvit_golden", "--dynamic-batch", "--batch-size", "3",
                                      "-o", str(out), "--json", str(tmp_path / "e.json")])
    assert result.exit_code == 0, result.output
    assert "batch dynamic, traced and verified at batch 3" in result.stderr
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["result"]["batch_size"] is None
    assert "dynamic batch; traced and verified at batch 3" in data["result"]["notes"]
    assert data["warnings"][0].startswith("RANDOM weights (no --checkpoint: a deterministic init, seed 0)")
    dim = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "batch"


def test_validate_with_a_golden_file_as_candidate_says_what_to_do(cli_runner, golden_onnx, repo_root):
    golden = str(repo_root / "golden" / "lvvit_golden.npz")
    result = cli_runner.invoke(main, ["validate", golden_onnx, golden])
    assert result.exit_code == 2
    assert "not a model file (expected .om or .onnx)" in result.stderr
    assert "lvvit-opt golden check MODEL GOLDEN.npz" in result.stderr
    assert "ais_bench" not in result.output and "Traceback" not in result.output


def _verdict_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.split(" ")[0] in ("PASS", "FAIL", "overall:")]


def test_validate_prints_its_verdict_once(cli_runner, golden_onnx):
    result = cli_runner.invoke(main, ["validate", golden_onnx, golden_onnx, "--inputs", "1"])
    assert result.exit_code == 0
    assert _verdict_lines(result.stdout) == ["PASS (atol=0.0001, rtol=0.001, min_cosine=0.99999)"]


def test_validate_with_golden_prints_each_verdict_and_one_overall(cli_runner, golden_onnx, tmp_path):
    golden = tmp_path / "g.npz"
    assert cli_runner.invoke(main, ["golden", "make", golden_onnx, "-o", str(golden)]).exit_code == 0
    result = cli_runner.invoke(main, ["validate", golden_onnx, golden_onnx, "--golden", str(golden)])
    assert _verdict_lines(result.stdout) == ["PASS (atol=0.0001, rtol=0.001, min_cosine=0.99999)"] * 2 + [
        "overall: PASS"]


def test_apply_prints_pass_once(cli_runner, golden_onnx, tmp_path):
    result = cli_runner.invoke(main, ["apply", golden_onnx, "-o", str(tmp_path / "o.onnx")])
    assert result.exit_code == 0, result.output
    assert _verdict_lines(result.stdout) == ["PASS (atol=0.0001, rtol=0.001, min_cosine=0.99999)"]


# ---------------------------------------------------------------- eval/preprocess transform from the model

@pytest.mark.parametrize("crop, interp, name, path, expected", [
    (None, None, None, "runs/x/lvvit_m_bs16_opt.onnx", (1.0, "bicubic", "lvvit_m configuration (from the model's file name)")),
    (None, None, None, "lvvit_s_bs1.onnx", (0.9, "bicubic", "lvvit_s configuration (from the model's file name)")),
    (None, None, "lvvit_l", "model.onnx", (1.0, "bicubic", "lvvit_l configuration (from --model-name)")),
    (None, None, None, "model.onnx", (0.9, "bicubic", "default (LV-ViT-S)")),
    (None, None, None, "lvvit_mega.onnx", (0.9, "bicubic", "default (LV-ViT-S)")),
    (0.95, "bilinear", None, "lvvit_m.onnx", (0.95, "bilinear", "given")),
    (0.95, None, None, "lvvit_m.onnx", (0.95, "bicubic", "lvvit_m configuration (from the model's file name)")),
])
def test_transform_comes_from_the_model_configuration(crop, interp, name, path, expected):
    from lvvit_opt.cli.data_cmd import resolve_transform

    assert resolve_transform(crop, interp, name, path) == expected


def test_transform_of_an_unknown_model_name_is_an_error():
    from lvvit_opt.cli.data_cmd import resolve_transform
    from lvvit_opt.core.errors import UserError

    with pytest.raises(UserError, match="no eval configuration known for it"):
        resolve_transform(None, None, "vit_base_patch16_224", None)


def test_eval_of_an_lvvit_m_file_uses_crop_pct_1(cli_runner, golden_onnx, tmp_path):
    import shutil

    from lvvit_opt.data.synthetic import make_image_dir, write_val_txt

    images = make_image_dir(tmp_path / "val", 2, sizes=((300, 200),))
    labels = write_val_txt(tmp_path / "val.txt", {p.name: 1 for p in images})
    model = tmp_path / "lvvit_m_bs2.onnx"
    shutil.copyfile(golden_onnx, model)
    result = cli_runner.invoke(main, ["eval", str(model), "--data", str(tmp_path / "val"), "--labels", str(labels),
                                      "--workers", "1", "--json", "-", "-v"])
    assert result.exit_code == 0, result.output
    assert _envelope(result)["result"]["transform"] == {
        "crop_pct": 1.0, "interpolation": "bicubic", "source": "lvvit_m configuration (from the model's file name)"}
    assert "eval transform: crop_pct 1, bicubic (lvvit_m configuration" in result.stderr


# ---------------------------------------------------------------- bench

def test_bench_bogus_provider_is_exit_2_naming_the_available_ones(cli_runner, golden_onnx):
    import onnxruntime as ort

    result = cli_runner.invoke(main, ["bench", golden_onnx, "--providers", "bogus", "--duration", "0.1"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: unknown onnxruntime provider(s) bogus; available here: "
                                    + ", ".join(ort.get_available_providers()))
    assert result.stdout == ""


def test_bench_unavailable_provider_alone_is_exit_2_and_with_a_fallback_a_warning(cli_runner, golden_onnx):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build has CUDA")
    alone = cli_runner.invoke(main, ["bench", golden_onnx, "--providers", "cuda", "--duration", "0.1"])
    assert alone.exit_code == 2 and "none of the providers CUDAExecutionProvider is available" in alone.stderr
    fallback = cli_runner.invoke(main, ["bench", golden_onnx, "--providers", "cuda,cpu", "--duration", "0.2",
                                        "--rounds", "1", "--warmup", "0", "--json", "-"])
    assert fallback.exit_code == 0, fallback.output
    data = _envelope(fallback)
    assert data["warnings"][0] == ("provider(s) CUDAExecutionProvider not available in this onnxruntime build; "
                                   "running on CPUExecutionProvider")
    # the rest, if any, are the load warnings of a busy machine (measure.stats), also in the result
    assert data["warnings"][1:] == data["result"]["warnings"]
    assert data["result"]["results"][0]["details"]["providers"] == ["CPUExecutionProvider"]


def test_bench_footer_names_the_providers_actually_used(cli_runner, golden_onnx):
    result = cli_runner.invoke(main, ["bench", golden_onnx, "--duration", "0.2", "--rounds", "1", "--warmup", "0",
                                      "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "onnxruntime: threads 1; graph optimisation all; providers used: CPUExecutionProvider" in result.stdout.splitlines()


def test_bench_of_an_om_shows_no_onnxruntime_providers(cli_runner, fake_ais_bench, fake_om):
    result = cli_runner.invoke(main, ["bench", fake_om[1], "--duration", "0.2", "--rounds", "1", "--warmup", "0",
                                      "--skip-validate"])
    assert result.exit_code == 0, result.output
    assert "providers" not in result.stdout and "ExecutionProvider" not in result.stdout
    assert "ais_bench: device_id 0; timing ais_bench exec_time_list (device)" in result.stdout.splitlines()


def test_plot_with_one_round_whose_fps_is_a_rounding_error_above_it(tmp_path):
    from PIL import Image

    from lvvit_opt.measure.bench import BenchReport, BenchResult, plot_fps

    result = BenchResult(model="m.onnx", batch_size=1, backend="onnxruntime", fps=100.00000000000001,
                         latency_median_ms=10.0, latency_p90_ms=10.0, round_fps=[100.0], iterations=10,
                         fps_spread_pct=0.0)
    assert result.fps - min(result.round_fps) > 0 and max(result.round_fps) - result.fps < 0
    plot_fps(BenchReport([result], {}, {"backend": "onnxruntime"}), tmp_path / "fps.png")
    assert Image.open(tmp_path / "fps.png").format == "PNG"


# ---------------------------------------------------------------- run

def _run_args(out) -> list[str]:
    return ["run", "--model", "lvvit_golden", "--batch-sizes", "2", "--out", str(out), "--bench-duration", "0.2",
            "--bench-rounds", "1", "--threads", "1"]


def test_run_with_one_bench_round_writes_the_report_and_plot(cli_runner, tmp_path, no_tools):
    from PIL import Image

    out = tmp_path / "run"
    result = cli_runner.invoke(main, _run_args(out) + ["--json", str(tmp_path / "run.json")])
    assert result.exit_code == 0, result.output
    assert Image.open(out / "fps.png").format == "PNG"
    markdown = (out / "report.md").read_text()
    assert "![fps](fps.png)" in markdown
    # the whitelist section no longer claims "(whitelisted)" for shapes it then says were not patched
    assert "(whitelisted)" not in markdown
    assert ("Transpose input shapes to whitelist on a white-list-era CANN: `2,48,196` `2,197,3,3,16` `2,3,197,16` "
            "`2,3,197,197` `2,197,197,3`.") in markdown
    assert "| lvvit_golden_bs2_opt.onnx | 2,3,197,197 | 0,3,2,1 | 2 | added by softmax_transpose |" in markdown
    assert "Passes: `ascend310` (= `fix_shapes,softmax_transpose,cleanup`)" in markdown  # the recipe, by its name
    assert "Not patched (pass --patch-whitelist to patch CANN's transpose.py)." in markdown
    envelope = json.loads((tmp_path / "run.json").read_text())
    assert envelope["command"] == "run" and envelope["ok"] is True
    random = [w for w in envelope["warnings"] if w.startswith("RANDOM weights")]
    assert random == ["RANDOM weights (no --checkpoint: a deterministic init, seed 0): graphs, timings and "
                      "validation are real; accuracy is meaningless"]  # once, though every export says it
    assert f"report: {out / 'report.md'}" in result.stdout


def test_cached_rerun_writes_report_md_even_when_the_plot_fails(cli_runner, tmp_path, no_tools, monkeypatch):
    out = tmp_path / "run"
    assert cli_runner.invoke(main, _run_args(out)).exit_code == 0
    (out / "report.md").unlink()

    def broken_plot(*args, **kwargs):
        raise ValueError("'yerr' must not contain negative values")

    monkeypatch.setattr("lvvit_opt.measure.report.plot_fps", broken_plot)
    again = cli_runner.invoke(main, _run_args(out) + ["--json", "-"])
    assert again.exit_code == 0, again.output
    data = _envelope(again)
    assert {s["status"] for s in data["result"]["stages"]} == {"skipped"}
    assert "fps.png not drawn (ValueError: 'yerr' must not contain negative values)" in data["warnings"][-1]
    markdown = (out / "report.md").read_text()
    assert "(fps.png could not be drawn; see report.json `fps_plot_error`)" in markdown
    assert "| 2 | PASS |" in markdown
    report = json.loads((out / "report.json").read_text())
    assert report["fps_plot_error"] == "ValueError: 'yerr' must not contain negative values"


def test_report_of_a_non_strict_run_names_the_random_tensors():
    from types import SimpleNamespace

    from lvvit_opt.measure.report import render_markdown

    summary = SimpleNamespace(random_weights=False, exports={2: {"random_tensors": ["head.bias"]}}, stages=[],
                              applies={}, whitelist={}, atc={}, bench={})
    options = SimpleNamespace(model="lvvit_s", checkpoint="w.pth", ema=False, seed=0, passes=("cleanup",))
    markdown = render_markdown(summary, options, None)
    assert ("> **Weights were partly RANDOM** (`--non-strict`): 1 tensor(s) were not in the checkpoint and keep "
            "their seeded random init (seed 0): `head.bias`.") in markdown
