"""bench: interleaved measurement, ratios, JSON, plot, trtexec parsing, wrong batch, .om validation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakes.ascend_env import fake_ais_bench, fake_om, fake_tools  # noqa: F401  (fixtures)
from lvvit_opt.measure.bench import BenchReport, bench_models, parse_trtexec_log, plot_fps, trtexec_command
from lvvit_opt.cli import main
from lvvit_opt.core.errors import ToolFailed, UserError, ValidationFailed
from lvvit_opt.export import export_onnx

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def heavier_onnx(tmp_path_factory) -> str:
    """lvvit_t at batch 2: several times the compute of the golden config."""
    out = tmp_path_factory.mktemp("bench") / "lvvit_t_bs2.onnx"
    export_onnx(out, model="lvvit_t", batch_size=2, log=lambda m: None)
    return str(out)


def test_ratio_lands_on_the_right_side_and_json_and_plot(tmp_path, cli_runner, golden_onnx, heavier_onnx):
    json_out, png_out = tmp_path / "bench.json", tmp_path / "fps.png"
    result = cli_runner.invoke(main, ["bench", golden_onnx, heavier_onnx, "--duration", "3", "--rounds", "3",
                                      "--warmup", "0.2", "--threads", "2", "--json", str(json_out),
                                      "--plot", str(png_out)])
    assert result.exit_code == 0, result.output
    envelope = json.loads(json_out.read_text())
    assert (envelope["command"], envelope["ok"]) == ("bench", True)
    data = envelope["result"]
    assert set(data) == {"machine", "settings", "skipped", "validation", "warnings", "load", "rounds", "cached",
                         "results"}
    assert data["cached"] == {}  # measured now
    assert data["rounds"]["2"]["rounds"] >= 3 and data["rounds"]["2"]["stopped"] in ("precise", "time")
    assert data["load"]["cores"] >= 1 and data["warnings"] == data["load"]["warnings"]
    assert data["settings"]["weights"].endswith("RANDOM weights")  # both exports have random weights
    assert data["settings"]["threads"] == 2 and data["settings"]["providers"] == ["CPUExecutionProvider"]
    first, second = data["results"]
    assert (first["model"], second["model"]) == (golden_onnx, heavier_onnx)
    for r in (first, second):
        assert r["batch_size"] == 2 and r["backend"] == "onnxruntime"
        assert len(r["round_fps"]) == data["rounds"]["2"]["rounds"] and r["iterations"] >= 3
        assert r["latency_p90_ms"] >= r["latency_median_ms"] > 0
        assert r["fps"] == pytest.approx(2 * 1000 / np.mean([2 * 1000 / f for f in r["round_fps"]]), rel=0.5)
    assert first["ratio_to_first"] == 1.0
    assert second["ratio_to_first"] < 0.8  # the heavier model is clearly slower
    low, high = second["ratio_spread"]  # min-max of the per-round fps ratios: stalls may reach past 1.0
    assert low <= high
    judged = second["comparison"]
    assert judged["verdict"] == "slower" and judged["low"] < judged["ratio"] < judged["high"] < 1.0
    assert judged["method"] == "Student t over the paired per-round log-ratios"
    assert first["comparison"] is None
    assert "baseline" in result.output and "x slower than" in result.output
    image = Image.open(png_out)
    assert image.format == "PNG" and image.size[0] >= 500 and image.size[1] >= 300
    assert len(np.unique(np.asarray(image.convert("L")))) > 10  # bars, text and axes, not a blank canvas
    assert png_out.stat().st_size > 10_000


def test_report_round_trips_through_json():
    report = BenchReport([], {"host": "h"}, {"backend": "ort"}, ["x"], {})
    assert BenchReport.from_dict(json.loads(json.dumps(report.to_dict()))).to_dict() == report.to_dict()


def test_fixed_batch_model_cannot_run_at_another_batch(golden_onnx):
    report = bench_models([golden_onnx], [1, 2], duration=0.3, rounds=1, warmup=0, log=lambda m: None)
    assert [r.batch_size for r in report.results] == [2]
    assert len(report.skipped) == 1
    assert "fixed batch of 2" in report.skipped[0] and "batch 1" in report.skipped[0]
    assert "--refix-batch" in report.skipped[0]


def test_refix_batch_fixes_a_dynamic_model_to_each_batch(tmp_path):
    dynamic = tmp_path / "dyn.onnx"
    export_onnx(dynamic, model="lvvit_golden", dynamic_batch=True, log=lambda m: None)
    report = bench_models([str(dynamic)], [1, 3], duration=0.4, rounds=1, warmup=0, refix_batch=True,
                          log=lambda m: None)
    assert [r.batch_size for r in report.results] == [1, 3]
    assert [r.details["model"].endswith(f"dyn_bs{b}.onnx") for r, b in zip(report.results, (1, 3))] == [True, True]
    assert not report.skipped


def test_dynamic_beside_fixed_runs_at_the_fixed_batch_with_a_ratio(tmp_path, golden_onnx):
    """A dynamic-batch graph and its fixed-batch (2) rewrite: both run at batch 2, ratio given."""
    dynamic = tmp_path / "dyn.onnx"
    export_onnx(dynamic, model="lvvit_golden", dynamic_batch=True, log=lambda m: None)
    report = bench_models([str(dynamic), golden_onnx], duration=0.4, rounds=2, warmup=0, log=lambda m: None)
    assert [(r.model, r.batch_size) for r in report.results] == [(str(dynamic), 2), (golden_onnx, 2)]
    assert report.results[1].ratio_to_first is not None and report.results[1].ratio_to_first > 0
    assert not report.skipped


def test_refix_of_a_baked_batch_is_reported_not_faked(golden_onnx):
    report = bench_models([golden_onnx], [1], duration=0.3, rounds=1, warmup=0, refix_batch=True,
                          log=lambda m: None)
    assert not report.results
    assert "cannot re-fix to batch 1" in report.skipped[0] and "static batch 2" in report.skipped[0]


def test_cli_wrong_batch_only_is_an_error_exit(cli_runner, golden_onnx):
    result = cli_runner.invoke(main, ["bench", golden_onnx, "--batch-sizes", "4", "--duration", "0.2"])
    assert result.exit_code == 1
    assert "fixed batch of 2" in result.output


def test_bad_input(cli_runner, tmp_path, golden_onnx):
    result = cli_runner.invoke(main, ["bench", str(tmp_path / "none.onnx")])
    assert result.exit_code == 2 and "no such file" in result.output
    result = cli_runner.invoke(main, ["bench", golden_onnx, "--batch-sizes", "1,x"])
    assert result.exit_code == 2
    with pytest.raises(UserError, match="unknown backend"):
        bench_models([golden_onnx], backend="gpu")


# ---------------------------------------------------------------- trtexec

def test_trtexec_log_parsing_uses_gpu_compute_mean():
    # A log in TensorRT 8.2's trtexec format whose GPU compute mean reproduces the seed's
    # T4 bs16 figure (16 * 1000 / 28.6045 ms = 559.35 fps).
    parsed = parse_trtexec_log((DATA / "trtexec_bs16.log").read_text(), 16)
    assert parsed["source"] == "GPU Compute Time"
    assert parsed["mean_ms"] == 28.6045 and parsed["median_ms"] == 28.5542 and parsed["p90_ms"] == 28.7744
    assert parsed["fps"] == pytest.approx(559.35, abs=0.01)


def test_trtexec_log_without_gpu_line_falls_back_to_latency():
    text = "[I] H2D Latency: min = 1 ms, max = 1 ms, mean = 1 ms, median = 1 ms\n" \
           "[I] Latency: min = 3.1 ms, max = 4 ms, mean = 3.4 ms, median = 3.3 ms, percentile(90%) = 3.6 ms\n"
    parsed = parse_trtexec_log(text, 1)
    assert parsed["source"] == "Latency" and parsed["fps"] == pytest.approx(1000 / 3.4)


def test_trtexec_log_without_summary_fails():
    with pytest.raises(ToolFailed, match="no latency summary"):
        parse_trtexec_log("[E] Engine could not be created\n&&&& FAILED", 16)


def test_trtexec_command_uses_the_models_real_shape():
    assert trtexec_command("m.onnx", 16, "image", [16, 3, 224, 224]) == [
        "trtexec", "--onnx=m.onnx", "--shapes=image:16x3x224x224", "--fp16"]


# ---------------------------------------------------------------- .om through the stand-in tools

def test_om_is_validated_before_fps(fake_ais_bench, fake_om, monkeypatch):
    onnx_path, om_path = fake_om
    report = bench_models([om_path], duration=0.3, rounds=1, warmup=0, log=lambda m: None)
    assert report.validation[om_path]["passed"] is True
    assert report.results[0].backend == "ais_bench" and report.results[0].batch_size == 2
    monkeypatch.setenv("FAKE_ASCEND_PERTURB", "1")
    with pytest.raises(ValidationFailed, match="refusing to report its fps"):
        bench_models([om_path], duration=0.3, rounds=1, warmup=0, log=lambda m: None)
    report = bench_models([om_path], duration=0.3, rounds=1, warmup=0, validate=False, log=lambda m: None)
    assert report.results and not report.validation


def test_om_without_reference_onnx_is_refused(fake_ais_bench, fake_om, tmp_path):
    import shutil

    lone = tmp_path / "lone.om"
    shutil.copy(fake_om[1], lone)
    with pytest.raises(UserError, match="no reference ONNX"):
        bench_models([str(lone)], duration=0.2, log=lambda m: None)


def test_plot_of_empty_report_still_writes_a_png(tmp_path):
    out = plot_fps(BenchReport([], {}, {"backend": "ort"}), tmp_path / "empty.png")
    assert Image.open(out).format == "PNG"


# ---------------------------------------------------------------- --graph-opt (onnxruntime's optimisation level)

ORT_LEVELS = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED", "basic": "ORT_ENABLE_BASIC",
              "disabled": "ORT_DISABLE_ALL"}
QUICK_BENCH = ["--duration", "0.2", "--rounds", "1", "--warmup", "0"]


@pytest.mark.parametrize("level", [None, "all", "extended", "basic", "disabled"])
def test_graph_opt_is_the_level_of_the_session_bench_opens_and_the_json_names_it(
        level, tmp_path, cli_runner, golden_onnx, opened_levels):
    """--graph-opt reaches the onnxruntime session (no option: onnxruntime's default, all), and the
    report's settings, each result's details and the runtime note name the level used."""
    import onnxruntime as ort

    json_out = tmp_path / "bench.json"
    extra = ["--graph-opt", level] if level else []
    result = cli_runner.invoke(main, ["bench", golden_onnx, *QUICK_BENCH, "--threads", "1", *extra,
                                      "--json", str(json_out)])
    assert result.exit_code == 0, result.output
    used = level or "all"
    wanted = int(getattr(ort.GraphOptimizationLevel, ORT_LEVELS[used]))
    assert opened_levels and all(value == wanted for _, value in opened_levels)
    data = json.loads(json_out.read_text())["result"]
    assert data["settings"]["graph_opt"] == used
    assert [r["details"]["graph_opt"] for r in data["results"]] == [used]
    assert f"graph optimisation {used}" in result.output


def test_graph_opt_from_python_and_in_the_bench_worker(golden_onnx, opened_levels):
    """bench_models(graph_opt=...) and BenchWorker (the per-device worker of scale.devices)."""
    import onnxruntime as ort

    from lvvit_opt.measure.bench import BenchWorker

    report = bench_models([golden_onnx], duration=0.2, rounds=1, warmup=0, threads=1, graph_opt="basic",
                          log=lambda m: None)
    assert report.settings["graph_opt"] == "basic" and report.results[0].details["graph_opt"] == "basic"
    with BenchWorker([(golden_onnx, golden_onnx, "onnxruntime", 0)], 2, 1, None, 0, "disabled") as worker:
        assert worker.describe()[0]["graph_opt"] == "disabled"
    assert opened_levels[-1] == ("disabled", int(ort.GraphOptimizationLevel.ORT_DISABLE_ALL))
    assert bench_models([golden_onnx], duration=0.2, rounds=1, warmup=0, threads=1,
                        log=lambda m: None).settings["graph_opt"] == "all"
    with pytest.raises(UserError, match=r"graph_opt 'fast': one of all, extended, basic, disabled"):
        bench_models([golden_onnx], duration=0.2, graph_opt="fast")


def test_graph_opt_reaches_the_device_worker_processes(tmp_path, cli_runner, golden_onnx):
    """bench --device on onnxruntime: every spawned worker opens its session at the asked level
    (each device's own description comes back in the card result)."""
    json_out = tmp_path / "bench.json"
    result = cli_runner.invoke(main, ["bench", golden_onnx, "--device", "0,1", *QUICK_BENCH, "--threads", "2",
                                      "--graph-opt", "extended", "--json", str(json_out)])
    assert result.exit_code == 0, result.output
    data = json.loads(json_out.read_text())["result"]
    assert data["settings"]["graph_opt"] == "extended" and data["settings"]["devices"] == [0, 1]
    (card,) = data["results"]
    assert card["details"]["graph_opt"] == "extended"
    assert [row["device"] for row in card["details"]["per_device"]] == [0, 1]


def test_graph_opt_bad_value_and_backends_without_one_are_exit_2(cli_runner, golden_onnx, fake_ais_bench, fake_om):
    """An unknown level is the parser's exit 2; a level for an .om runner (auto or named), the
    onnx reference runner or trtexec is a one-line refusal, exit 2, not a setting ignored."""
    result = cli_runner.invoke(main, ["bench", golden_onnx, "--graph-opt", "fast"])
    assert result.exit_code == 2 and "'fast' is not one of 'all', 'extended', 'basic', 'disabled'" in result.output
    _, om = fake_om
    for args in ([om], [om, "--backend", "om"], [om, "--backend", "ais_bench"],
                 [golden_onnx, "--backend", "onnx_reference"], [golden_onnx, "--backend", "trtexec"],
                 [golden_onnx, om]):
        result = cli_runner.invoke(main, ["bench", *args, "--graph-opt", "all", "--skip-validate", *QUICK_BENCH])
        assert result.exit_code == 2, (args, result.output)
        message = [line for line in result.output.splitlines() if line.strip()]
        assert len(message) == 1 and "--graph-opt is onnxruntime's graph optimisation level" in message[0], \
            (args, result.output)
    # without --graph-opt an .om benches as before, and its report names no level
    report = bench_models([om], duration=0.2, rounds=1, warmup=0, validate=False, log=lambda m: None)
    assert report.results and report.settings["graph_opt"] is None


def test_graph_opt_levels_are_spelled_once_for_the_parser_runtime_and_tune():
    from lvvit_opt.cli.types import GRAPH_OPT_LEVELS as parsed
    from lvvit_opt.runtime.ort import GRAPH_OPT_LEVELS as runtime
    from lvvit_opt.tune.space import GRAPH_OPT_LEVELS as tuned

    assert parsed == runtime == tuned == tuple(ORT_LEVELS)
