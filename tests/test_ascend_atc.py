"""atc: the seed's command lines token for token, the verb, runs and failures with the stand-in atc."""
from __future__ import annotations

import json
import os
import time

import pytest

from fakes.ascend_env import fake_tools, no_tools, write_tiny_onnx  # noqa: F401
from lvvit_opt.ascend import build_atc_command, compile_onnx, parse_atc_errors, run_atc
from lvvit_opt.core.cann import ToolNotFound
from lvvit_opt.cli import main
from lvvit_opt.core.errors import ToolFailed, UserError

SEED_BS1 = ("atc --framework=5 --model=./model/model_best_bs1_sim.onnx --output=./model/model_best_bs1_sim "
            "--input_format=NCHW --input_shape=image:1,3,224,224 --log=debug --soc_version=Ascend310")
SEED_BS16 = ("atc --framework=5 --model=./model/model_best_bs16_sim.onnx --output=./model/model_best_bs16_sim "
             "--input_format=NCHW --input_shape=image:16,3,224,224 --log=debug --soc_version=Ascend310")


@pytest.fixture
def seed_dir(tmp_path, monkeypatch):
    """A working directory laid out like the seed's: ./model/model_best_bs{1,16}_sim.onnx."""
    monkeypatch.chdir(tmp_path)
    write_tiny_onnx(tmp_path / "model" / "model_best_bs1_sim.onnx", batch=1)
    write_tiny_onnx(tmp_path / "model" / "model_best_bs16_sim.onnx", batch=16)
    return tmp_path


@pytest.mark.parametrize("batch,expected", [(1, SEED_BS1), (16, SEED_BS16)])
def test_build_command_is_the_seeds(seed_dir, batch, expected):
    command = build_atc_command(f"./model/model_best_bs{batch}_sim.onnx", soc_version="Ascend310", log="debug")
    assert command == expected.split()


@pytest.mark.parametrize("batch,expected", [(1, SEED_BS1), (16, SEED_BS16)])
def test_dry_run_prints_the_seeds_command(seed_dir, cli_runner, no_tools, batch, expected):
    result = cli_runner.invoke(main, ["atc", f"./model/model_best_bs{batch}_sim.onnx", "--soc-version",
                                      "Ascend310", "--log", "debug", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.stdout == expected + "\n"
    assert not (seed_dir / "model" / f"model_best_bs{batch}_sim.om").exists()


def test_extra_options_follow_the_seed_flags_in_order(seed_dir, cli_runner, no_tools):
    (seed_dir / "fusion.cfg").write_text("{}\n")
    result = cli_runner.invoke(main, [
        "atc", "./model/model_best_bs16_sim.onnx", "--soc-version", "Ascend310P3", "--output", "out/m16",
        "--precision-mode", "allow_mix_precision", "--keep-dtype-op", "Softmax", "--keep-dtype-op", "Transpose",
        "--fusion-switch", "fusion.cfg", "--extra-args", "--op_select_implmode=high_performance", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [
        "atc", "--framework=5", "--model=./model/model_best_bs16_sim.onnx", "--output=out/m16",
        "--input_format=NCHW", "--input_shape=image:16,3,224,224", "--soc_version=Ascend310P3",
        "--precision_mode=allow_mix_precision", "--keep_dtype=out/m16.keep_dtype.cfg",
        "--fusion_switch_file=fusion.cfg", "--op_select_implmode=high_performance"]
    assert (seed_dir / "out" / "m16.keep_dtype.cfg").read_text() == "OpType::Softmax\nOpType::Transpose\n"


def test_dynamic_batch_needs_batch_size(tmp_path, cli_runner, no_tools):
    model = write_tiny_onnx(tmp_path / "dyn.onnx", batch="N")
    missing = cli_runner.invoke(main, ["atc", model, "--soc-version", "Ascend310", "--dry-run"])
    assert missing.exit_code == 2
    assert "dynamic batch dimension (N); pass --batch-size N" in missing.stderr
    given = cli_runner.invoke(main, ["atc", model, "--soc-version", "Ascend310", "--batch-size", "8", "--dry-run"])
    assert given.exit_code == 0
    assert "--input_shape=image:8,3,224,224" in given.stdout.split()


def test_static_batch_must_agree_with_batch_size(seed_dir, cli_runner, no_tools):
    result = cli_runner.invoke(main, ["atc", "./model/model_best_bs16_sim.onnx", "--soc-version", "Ascend310",
                                      "--batch-size", "8", "--dry-run"])
    assert result.exit_code == 2
    assert "static batch of 16; --batch-size 8 does not match" in result.stderr


def test_bad_inputs_exit_2_without_traceback(seed_dir, cli_runner, no_tools):
    both = cli_runner.invoke(main, ["atc", "./model/model_best_bs1_sim.onnx", "--soc-version", "Ascend310",
                                    "--keep-dtype", "x.cfg", "--keep-dtype-op", "Softmax", "--dry-run"])
    assert both.exit_code == 2 and "either --keep-dtype FILE or --keep-dtype-op" in both.stderr
    soc = cli_runner.invoke(main, ["atc", "./model/model_best_bs1_sim.onnx", "--soc-version", "310", "--dry-run"])
    assert soc.exit_code == 2 and "'310'" in soc.stderr and "soc-version" in soc.stderr and "Ascend310" in soc.stderr
    missing = cli_runner.invoke(main, ["atc", "nope.onnx", "--soc-version", "Ascend310", "--dry-run"])
    assert missing.exit_code == 2 and missing.stderr == "error: nope.onnx: no such file\n"
    assert "Traceback" not in both.output + soc.output + missing.output


def test_soc_version_auto_reads_npu_smi(seed_dir, cli_runner, fake_tools, monkeypatch):
    monkeypatch.setenv("FAKE_NPU_NAME", "310P3")
    result = cli_runner.invoke(main, ["atc", "./model/model_best_bs1_sim.onnx", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.stdout.split()[-1] == "--soc_version=Ascend310P3"


def test_soc_version_auto_without_npu_smi_asks_for_it(seed_dir, cli_runner, no_tools):
    result = cli_runner.invoke(main, ["atc", "./model/model_best_bs1_sim.onnx", "--dry-run"])
    assert result.exit_code == 2
    assert result.stderr == ("error: cannot detect the SoC: npu-smi not found (no Ascend driver here); "
                             "pass --soc-version, e.g. --soc-version Ascend310\n")


def test_run_writes_om_and_log(seed_dir, cli_runner, fake_tools):
    result = cli_runner.invoke(main, ["atc", "./model/model_best_bs16_sim.onnx", "--soc-version", "Ascend310",
                                      "--log", "debug"])
    assert result.exit_code == 0, result.output
    om = seed_dir / "model" / "model_best_bs16_sim.om"
    assert om.read_bytes().startswith(b"LVVIT-FAKE-OM v1\n")
    assert result.stdout.startswith("wrote model/model_best_bs16_sim.om (atc ")
    assert result.stdout.endswith("s, log model/model_best_bs16_sim.atc.log)\n")
    log = (seed_dir / "model" / "model_best_bs16_sim.atc.log").read_text()
    assert log.splitlines()[0].endswith(" " + SEED_BS16.split(" ", 1)[1])
    assert "ATC run success, welcome to the next use." in log


def test_failing_atc_reports_codes_ops_and_log(seed_dir, cli_runner, fake_tools, monkeypatch):
    monkeypatch.setenv("FAKE_ATC_FAIL", "1")
    result = cli_runner.invoke(main, ["atc", "./model/model_best_bs1_sim.onnx", "--soc-version", "Ascend310"])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("error: atc failed"))
    assert lines[start].startswith("error: atc failed (exit 1, no 'ATC run success' line) after ")
    assert lines[start + 1:] == []  # an error is one line: atc's codes follow, joined with '; '
    assert lines[start].endswith(
        "; E19010: No parser is registered for Op [Softmax_67, optype [ai.onnx::13::Softmax]]. "
        "[op Softmax_67, type ai.onnx::13::Softmax]"
        "; EZ3003: No supported Ops kernel and engine are found for [Transpose_66], optype [Transpose]. "
        "[op Transpose_66, type Transpose]"
        "; full log: model/model_best_bs1_sim.atc.log")
    assert not (seed_dir / "model" / "model_best_bs1_sim.om").exists()


def test_atc_rejects_unknown_flags(seed_dir, fake_tools):
    command = build_atc_command("./model/model_best_bs1_sim.onnx", soc_version="Ascend310", extra_args="--bogus=1")
    with pytest.raises(ToolFailed) as failure:
        run_atc(command)
    assert "ERROR: unknown command line flag 'bogus'" in str(failure.value)


def test_stale_om_does_not_count_as_success(seed_dir, fake_tools, monkeypatch):
    stale = seed_dir / "model" / "model_best_bs1_sim.om"
    stale.write_bytes(b"old")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    monkeypatch.setenv("FAKE_ATC_FAIL", "1")
    command = build_atc_command("./model/model_best_bs1_sim.onnx", soc_version="Ascend310")
    result = run_atc(command, check=False)
    assert (result.succeeded, result.om_path, result.returncode) == (False, None, 1)
    assert [e.code for e in result.errors] == ["E19010", "EZ3003"]


def test_progress_reports_elapsed_time(seed_dir, fake_tools, monkeypatch):
    monkeypatch.setenv("FAKE_ATC_SLEEP", "1.5")
    calls = []
    command = build_atc_command("./model/model_best_bs1_sim.onnx", soc_version="Ascend310", log="info")
    result = run_atc(command, progress=lambda elapsed, line: calls.append((elapsed, line)))
    assert result.succeeded and result.om_path.name == "model_best_bs1_sim.om"
    assert calls[0][0] >= 0.9 and calls[-1][0] >= 1.5
    assert calls[-1][1] == "ATC run success, welcome to the next use."


def test_missing_atc_prints_the_command_for_an_ascend_host(seed_dir, cli_runner, no_tools):
    result = cli_runner.invoke(main, ["atc", "./model/model_best_bs16_sim.onnx", "--soc-version", "Ascend310",
                                      "--log", "debug"])
    assert result.exit_code == 2
    assert result.stderr == ("error: atc not found (no CANN toolkit on this machine). On an Ascend host with CANN "
                             "installed, run: source /usr/local/Ascend/ascend-toolkit/set_env.sh; "
                             f"{SEED_BS16}\n")  # one line, and a shell command line as it stands
    with pytest.raises(ToolNotFound):
        run_atc(SEED_BS16.split())


@pytest.mark.parametrize("line,name,op_type", [
    ("E19010: Check op[Softmax_3]'s type[Softmax] failed, the type is unsupported.", "Softmax_3", "Softmax"),
    ("EZ3002: Optype [TransData] of Ops kernel [AIcoreEngine] is unsupported.", None, "TransData"),
    ("E10001: Value [x] for parameter [--log] is invalid.", None, None),
])
def test_parse_error_variants(line, name, op_type):
    (error,) = parse_atc_errors("ATC run failed\n" + line)
    assert (error.op_name, error.op_type) == (name, op_type)


def test_keep_dtype_file_must_exist(seed_dir):
    with pytest.raises(UserError, match="--keep-dtype missing.cfg: no such file"):
        build_atc_command("./model/model_best_bs1_sim.onnx", soc_version="Ascend310", keep_dtype="missing.cfg")


def test_compile_onnx_detects_the_soc_and_compiles(seed_dir, fake_tools, monkeypatch):
    monkeypatch.setenv("FAKE_NPU_NAME", "310P3")
    result = compile_onnx("./model/model_best_bs1_sim.onnx", soc_version="auto", log="error")
    assert result.succeeded and result.command[-1] == "--soc_version=Ascend310P3"
    header = result.om_path.read_bytes().split(b"\n")[1]
    expected = {"input_names": ["image"], "input_shapes": [[1, 3, 224, 224]], "precision_mode": "force_fp16",
                "soc_version": "Ascend310P3"}
    assert {k: v for k, v in json.loads(header).items() if k in expected} == expected
