"""`lvvit-opt run` end to end on the tiny config: with and without the stand-in Ascend tools."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from fakes.ascend_env import fake_ais_bench, fake_tools, no_tools  # noqa: F401  (fixtures)
from lvvit_opt.cli import main
from lvvit_opt.pipeline.run import RunOptions, run

FIXTURES = Path(__file__).parent / "fixtures" / "transpose"


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def _options(out, **kw) -> RunOptions:
    return RunOptions(out=str(out), model="lvvit_golden", batch_sizes=(2,), bench_duration=0.4, bench_rounds=2,
                      **kw)


def test_run_without_ascend_tools_writes_commands_and_benches_on_onnxruntime(tmp_path, no_tools):
    out = tmp_path / "run"
    messages: list[str] = []
    summary = run(_options(out), log=messages.append)
    assert summary.random_weights and any("RANDOM" in m for m in messages)
    for name in ("lvvit_golden_bs2.onnx", "lvvit_golden_bs2_opt.onnx", "report.md", "report.json", "fps.png",
                 "atc_commands.sh"):
        assert (out / name).is_file(), name
    commands = (out / "atc_commands.sh").read_text().splitlines()
    # paths relative to the script's own folder, which it enters first
    assert commands[:3] == ["#!/usr/bin/env bash", "set -euo pipefail",
                            'cd -- "$(dirname -- "$0")"  # paths below are relative to this script\'s folder']
    assert "atc --framework=5 --model=lvvit_golden_bs2_opt.onnx --output=lvvit_golden_bs2_opt " \
           "--input_format=NCHW --input_shape=image:2,3,224,224 --log=error --soc_version=Ascend310" in commands
    assert ("lvvit-opt whitelist patch --shape 2,48,196 --shape 2,197,3,3,16 --shape 2,3,197,16 "
            "--shape 2,3,197,197 --shape 2,197,197,3") in commands  # the one list: `whitelist shapes` gives it too
    # set_env.sh reads unset variables: it is sourced with strict mode off
    source = commands.index('source "${ASCEND_SET_ENV:-/usr/local/Ascend/ascend-toolkit/set_env.sh}"')
    assert commands[source - 1:source + 2:2] == ["set +eu", "set -eu"]
    assert (out / "atc_commands.sh").stat().st_mode & 0o777 == 0o755 & ~_umask()
    assert any(line.startswith("# soc version: Ascend310 (assumed") for line in commands)
    import subprocess

    assert subprocess.run(["bash", "-n", str(out / "atc_commands.sh")]).returncode == 0
    report = json.loads((out / "report.json").read_text())
    assert report["random_weights"] is True
    assert report["whitelist"]["shapes"] == [[2, 48, 196], [2, 197, 3, 3, 16], [2, 3, 197, 16], [2, 3, 197, 197], [2, 197, 197, 3]]
    assert report["whitelist"]["created"] == [[2, 3, 197, 197], [2, 197, 197, 3]]
    assert report["applies"]["2"]["validation"]["passed"] is True
    results = report["bench"]["reports"]["2"]["results"]
    assert [Path(r["model"]).name for r in results] == ["lvvit_golden_bs2.onnx", "lvvit_golden_bs2_opt.onnx"]
    assert report["bench"]["backend"] == "onnxruntime"
    markdown = (out / "report.md").read_text()
    assert "Weights were RANDOM" in markdown
    assert "| 2 | PASS |" in markdown
    assert "after / before [95% interval] verdict" in markdown and f"{results[1]['ratio_to_first']:.3f}x [" in markdown
    assert results[1]["comparison"]["verdict"] in ("faster", "slower", "no measurable difference")
    assert "Cached figures" not in markdown and not report["bench"]["reports"]["2"]["cached"]
    assert Image.open(out / "fps.png").format == "PNG"
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != ".stages.json"]


def test_rerun_skips_unchanged_stages_and_redoes_changed_ones(tmp_path, no_tools):
    out = tmp_path / "run"
    run(_options(out), log=lambda m: None)
    exported = (out / "lvvit_golden_bs2.onnx").stat().st_mtime_ns
    measured = json.loads((out / "report.json").read_text())["bench"]["reports"]["2"]
    messages: list[str] = []
    second = run(_options(out), log=messages.append)
    assert {s["name"]: s["status"] for s in second.stages} == {
        "export bs2": "skipped", "apply bs2": "skipped", "bench bs2": "skipped"}
    assert (out / "lvvit_golden_bs2.onnx").stat().st_mtime_ns == exported
    # the re-run's fps are the first run's, and everything says so: when, on which machine
    cached = json.loads((out / "report.json").read_text())["bench"]["reports"]["2"]
    assert cached["results"] == measured["results"]
    assert cached["cached"]["host"] == measured["machine"]["host"] and cached["cached"]["measured_at"]
    assert any("not measured again (--rebench to measure)" in m for m in messages)
    assert f"**Cached figures**: measured {cached['cached']['measured_at']}" in (out / "report.md").read_text()
    forced = run(_options(out, rebench=True), log=lambda m: None)
    assert {s["name"]: s["status"] for s in forced.stages}["bench bs2"] == "ran"
    fresh = json.loads((out / "report.json").read_text())["bench"]["reports"]["2"]
    assert not fresh["cached"] and fresh["results"] != measured["results"]
    third = run(_options(out, passes=("softmax_transpose",)), log=lambda m: None)
    assert {s["name"]: s["status"] for s in third.stages} == {
        "export bs2": "skipped", "apply bs2": "ran", "bench bs2": "ran"}


def test_run_with_stand_in_ascend_tools_compiles_validates_and_benches_om(tmp_path, fake_ais_bench):
    out = tmp_path / "run"
    opp = tmp_path / "opp"
    target = opp / "built-in/op_impl/ai_core/tbe/impl/dynamic/transpose.py"
    target.parent.mkdir(parents=True)
    shutil.copy(FIXTURES / "transpose_whitelist_era.py", target)
    summary = run(_options(out, soc_version="auto", patch_whitelist=True, whitelist_file=str(target)),
                  log=lambda m: None)
    assert summary.atc["compiled"] is True
    assert (out / "lvvit_golden_bs2.om").is_file() and (out / "lvvit_golden_bs2_opt.om").is_file()
    assert not (out / "atc_commands.sh").exists()
    command = summary.atc["models"]["lvvit_golden_bs2_opt.onnx"]["command"]
    assert "--soc_version=Ascend310" in command  # from the stand-in npu-smi's table
    assert summary.whitelist["patched"]["added"] == [[2, 48, 196], [2, 197, 3, 3, 16], [2, 3, 197, 16], [2, 3, 197, 197], [2, 197, 197, 3]]
    assert "[2, 3, 197, 197]" in target.read_text()
    bench = summary.bench
    assert bench["backend"] == "om"
    report = bench["reports"]["2"]
    assert [r["backend"] for r in report["results"]] == ["ais_bench", "ais_bench"]
    assert all(v["passed"] for v in report["validation"].values()) and len(report["validation"]) == 2
    markdown = (out / "report.md").read_text()
    assert "backend **om**" in markdown
    kernels = summary.atc["kernels"]["2"]  # the rewrite reached the compiled model (lvvit-opt inspect)
    assert kernels[0].split() == ["compiled", "kernels", "lvvit_golden_bs2.om", "lvvit_golden_bs2_opt.om"]
    assert kernels[4].split() == ["Softmax,", "last", "axis", "2", "0"]
    assert kernels[5].split() == ["Softmax,", "other", "axis", "0", "2"]
    assert "Kernels atc compiled, batch 2 (`atc --mode=1`):\n\n```\n" + "\n".join(kernels) + "\n```" in markdown


def test_cli_run_bad_input(tmp_path, cli_runner, no_tools):
    result = cli_runner.invoke(main, ["run", "--model", "lvvit_golden", "--passes", "softmax_transpose,nope",
                                      "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "nope" in result.output and "Traceback" not in result.output
    result = cli_runner.invoke(main, ["run", "--checkpoint", str(tmp_path / "missing.pth"), "--out",
                                      str(tmp_path / "r")])
    assert result.exit_code == 2 and "no such checkpoint" in result.output


def test_run_benches_the_om_atc_really_wrote_with_newer_naming(tmp_path, fake_ais_bench, monkeypatch):
    """CANN 8-style atc writes PREFIX_linux_<arch>.om: the atc stage records it, bench and the cache use it."""
    import platform

    monkeypatch.setenv("LVVIT_FAKE_CANN", "8.0")
    monkeypatch.setenv("LVVIT_FAKE_ATC_ARTEFACTS", "1")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    out = tmp_path / "run"
    summary = run(_options(out, soc_version="Ascend310"), log=lambda m: None)
    # atc's working files (fusion_result.json, kernel_meta/) land in --out, not where run was started
    assert (out / "fusion_result.json").is_file() and (out / "kernel_meta").is_dir()
    assert list(elsewhere.iterdir()) == []
    written = {name: Path(entry["om"]) for name, entry in summary.atc["models"].items()}
    suffix = f"_linux_{platform.machine()}.om"
    assert written == {"lvvit_golden_bs2.onnx": out / f"lvvit_golden_bs2{suffix}",
                       "lvvit_golden_bs2_opt.onnx": out / f"lvvit_golden_bs2_opt{suffix}"}
    assert all(p.is_file() for p in written.values()) and not list(out.glob("*_opt.om"))
    results = summary.bench["reports"]["2"]["results"]
    assert [Path(r["model"]) for r in results] == list(written.values())
    again = run(_options(out, soc_version="Ascend310"), log=lambda m: None)
    assert {s["name"]: s["status"] for s in again.stages}["atc lvvit_golden_bs2_opt.onnx"] == "skipped"
    written["lvvit_golden_bs2_opt.onnx"].unlink()  # a missing .om re-runs its atc stage
    third = run(_options(out, soc_version="Ascend310"), log=lambda m: None)
    statuses = {s["name"]: s["status"] for s in third.stages}
    assert statuses["atc lvvit_golden_bs2_opt.onnx"] == "ran" and statuses["atc lvvit_golden_bs2.onnx"] == "skipped"
    assert written["lvvit_golden_bs2_opt.onnx"].is_file()


def test_run_aipp_and_gears_build_one_deployment_om(tmp_path, fake_ais_bench):
    """run --aipp --batch-gears: one .om command line with both flags, aipp.cfg, uint8 .bin files and the
    AIPP preview validated against the float pipeline with its measured error."""
    import numpy as np

    from lvvit_opt.ascend.aipp import parse_aipp_text

    out = tmp_path / "run"
    summary = run(_options(out, soc_version="Ascend310", aipp=True, batch_gears=(1, 16)), log=lambda m: None)
    deploy = summary.deploy
    assert deploy["compiled"] is True and Path(deploy["om"]).is_file()
    command = deploy["command"]
    assert "--dynamic_batch_size=1,16" in command and f"--insert_op_conf={(out / 'aipp.cfg').resolve()}" in command
    assert "--input_shape=image:-1,3,224,224" in command
    config = parse_aipp_text((out / "aipp.cfg").read_text())
    assert config["src_image_size_w"] == "248" and config["load_start_pos_w"] == "12"  # lvvit crop_pct 0.9
    bins = sorted((out / "aipp_bins").glob("*.bin"))
    assert len(bins) == 4 and {b.stat().st_size for b in bins} == {248 * 248 * 3}
    preview = deploy["aipp"]["preview"]
    assert preview["passed"] and 0 < preview["input_max_abs"] < 2e-2
    assert [r["batch"] for r in deploy["rows"]] == [1, 16]
    assert [r["bytes_to_device"] for r in deploy["rows"]] == [248 * 248 * 3, 16 * 248 * 248 * 3]
    markdown = (out / "report.md").read_text()
    assert "## Deployment .om" in markdown and "| 16 | uint8 NHWC |" in markdown and "not measured" in markdown
    # the geared .om runs each gear on uint8 input
    from lvvit_opt.runtime.ais_bench import AisBenchRunner

    image = np.fromfile(bins[0], dtype=np.uint8).reshape(1, 248, 248, 3)
    with AisBenchRunner(deploy["om"], dym_batch=1) as runner:
        assert runner.infer({runner.inputs[0].name: image})


def test_run_aipp_without_atc_lists_the_command(tmp_path, no_tools):
    out = tmp_path / "run"
    summary = run(_options(out, aipp=True, batch_gears=(1, 2)), log=lambda m: None)
    assert summary.deploy["compiled"] is False
    script = (out / "atc_commands.sh").read_text()
    assert "--dynamic_batch_size=1,2" in script and "--insert_op_conf=" in script
