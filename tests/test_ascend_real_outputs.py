"""Parsers and stand-ins against real, public Ascend tool output (tests/fixtures/ascend/, see SOURCES.md).

Each case names the fixture, whose header comment (or SOURCES.md for JSON) names the public source.
"""
from __future__ import annotations

import logging
import os
import platform
from pathlib import Path

import pytest

from fakes.ascend_env import (FIXTURES_DIR, fake_ais_bench, fake_om, fake_tools, no_tools,  # noqa: F401
                              write_tiny_onnx)
from lvvit_opt.ascend.atc import (SUCCESS_MARKER, build_atc_command, compile_onnx, find_om, parse_atc_errors,
                                  parse_atc_messages, parse_atc_warnings, run_atc)
from lvvit_opt.ascend.npu_smi import (SocVersionUnknown, detect_soc_version, parse_board_info, parse_npu_smi_mapping,
                                      parse_npu_smi_table, select_chip, soc_from_board, soc_from_name,
                                      soc_version_from_table)
from lvvit_opt.cli import main
from lvvit_opt.core.errors import ToolFailed, UserError
from lvvit_opt.runtime.ais_bench_summary import (exec_time_ms, find_summary_json, parse_console_summaries,
                                                 parse_summary_json)
from lvvit_opt.runtime.benchmark import parse_perf_file

NPU_SMI = FIXTURES_DIR / "npu-smi"
ATC = FIXTURES_DIR / "atc"
AIS = FIXTURES_DIR / "ais_bench"


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# ---- npu-smi info --------------------------------------------------------------------------------------------

# fixture -> (npu-smi version, chip header, chips, (npu, name, health, chip, device, bus) of the first, soc)
INFO_CASES = {
    "310_20.2.2_atlas300-5cards-20chips": ("20.2.2", "Chip Device", 20, (2048, "310", "OK", 0, 0, "0000:81:00.0"),
                                           "Ascend310"),
    "310_21.0.3.1_atlas200dk-1chip": ("21.0.3.1", "Chip Device", 1, (0, "310", "OK", 0, 0, None), "Ascend310"),
    "310_hugepages-column_2chips": (None, "Chip Device", 2, (112, "310", "OK", 0, 0, "0000:07:00.0"), "Ascend310"),
    "310P3_23.0.0_1chip_no-processes": ("23.0.0", "Chip Device", 1, (24, "310P3", "OK", 0, 0, "0000:04:00.0"),
                                        "Ascend310P3"),
    "310P3_24.1.0.1_3chips": ("24.1.0.1", "Chip Device", 3, (0, "310P3", "OK", 0, 0, "0000:01:00.0"),
                              "Ascend310P3"),
    "310P3_25.5.1_duo-2chips-per-npu": ("25.5.1", "Chip Device", 3, (1, "310P3", "OK", 0, 0, "0000:01:00.0"),
                                        "Ascend310P3"),
    "910B1_24.1.0_vllm-ascend-3403": ("24.1.0", "Chip", 2, (0, "910B1", "OK", 0, None, "0000:C1:00.0"),
                                      "Ascend910B1"),
    "910B2_24.1.0_vllm-ascend-5707": ("24.1.0", "Chip", 1, (0, "910B2", "OK", 0, None, "0000:C1:00.0"),
                                      "Ascend910B2"),
    "910B3_23.0.3_llama-box": ("23.0.3", "Chip", 1, (0, "910B3", "OK", 0, None, "0000:C1:00.0"), "Ascend910B3"),
    "910B3_25.5.1_with-process": ("25.5.1", "Chip", 2, (0, "910B3", "OK", 0, None, "0000:C1:00.0"),
                                  "Ascend910B3"),
    "910B4_24.1.1_1panel": ("24.1.1", "Chip", 2, (0, "910B4", "OK", 0, None, "0000:C1:00.0"), "Ascend910B4"),
    "910ProB_24.1.0_vllm-ascend-1047": ("24.1.0", "Chip", 2, (0, "910ProB", "OK", 0, None, "0000:C1:00.0"),
                                        "Ascend910ProB"),
    "910B_24.1.0_vllm-ascend-3010_truncated": ("24.1.0", "Chip", 1, (0, "910B", "OK", 0, None, "0000:C1:00.0"),
                                               None),
    "Ascend910-A3_24.1.rc3.7_vllm-ascend-2035": ("24.1.rc3.7", "Chip Phy-ID", 2,
                                                 (0, "Ascend910", "OK", 0, 0, "0000:9D:00.0"), None),
    "Ascend910-A3_25.3.rc1_vllm-ascend-5588": ("25.3.rc1", "Chip Phy-ID", 2,
                                               (0, "Ascend910", "OK", 0, 0, "0000:9D:00.0"), None),
    "Ascend910-A3_26.0.rc2_vllm-ascend-12980": ("26.0.rc2", "Chip Phy-ID", 2,
                                                (0, "Ascend910", "OK", 0, 0, "0000:9D:00.0"), None),
    "Ascend910-A3_no-version-line_vllm-ascend-2534": (None, "Chip Phy-ID", 3,
                                                      (0, "Ascend910", "OK", 0, 0, "0000:9D:00.0"), None),
    "redacted-xxx_25.5.0_hiascend-doc": ("25.5.0", "Chip Device", 1, (0, "xxx", "OK", 0, 0, None), None),
    "910A_readme-example_tdnn": (None, "Chip Device", 2, (0, "910A", "OK", 0, 0, "0000:82:00.0"), "Ascend910A"),
}


def test_every_npu_smi_fixture_has_a_case():
    assert sorted(p.stem for p in (NPU_SMI / "info").glob("*.txt")) == sorted(INFO_CASES)


@pytest.mark.parametrize("name", sorted(INFO_CASES))
def test_npu_smi_info_fixture(name):
    version, header, count, first, soc = INFO_CASES[name]
    table = parse_npu_smi_table(_text(NPU_SMI / "info" / f"{name}.txt"))
    assert (table.version, table.chip_header, len(table.chips)) == (version, header, count)
    chip = table.chips[0]
    assert (chip.npu_id, chip.name, chip.health, chip.chip_id, chip.device_id, chip.bus_id) == first
    assert chip.soc_version == soc
    if soc:
        assert soc_version_from_table(_text(NPU_SMI / "info" / f"{name}.txt")) == soc
    else:  # a real table never reads as "no NPU": it says which name it cannot map
        with pytest.raises(SocVersionUnknown, match=rf"NPU 0's name '{chip.name}'.*--soc-version"):
            soc_version_from_table(_text(NPU_SMI / "info" / f"{name}.txt"))


def test_atlas300_chips_and_devices_follow_the_table():
    chips = parse_npu_smi_table(_text(NPU_SMI / "info" / "310_20.2.2_atlas300-5cards-20chips.txt")).chips
    assert [(c.npu_id, c.chip_id, c.device_id) for c in chips[3:6]] == [(2048, 3, 3), (2049, 0, 4), (2049, 1, 5)]
    assert chips[-1].bus_id == "0000:94:00.0" and {c.npu_id for c in chips} == {2048, 2049, 2050, 2051, 2052}


def test_a3_table_lists_both_chips_of_an_npu_and_ignores_the_process_table():
    chips = parse_npu_smi_table(_text(NPU_SMI / "info" / "Ascend910-A3_no-version-line_vllm-ascend-2534.txt")).chips
    assert [(c.npu_id, c.chip_id, c.device_id) for c in chips] == [(0, 0, 0), (0, 1, 1), (1, 0, 2)]
    with_process = parse_npu_smi_table(_text(NPU_SMI / "info" / "910B3_25.5.1_with-process.txt")).chips
    assert [c.npu_id for c in with_process] == [0, 5]  # the "| 5  0 | 2290156 | VLLMEngineCore" row is no chip
    no_procs = parse_npu_smi_table(_text(NPU_SMI / "info" / "310P3_23.0.0_1chip_no-processes.txt")).chips
    assert [c.npu_id for c in no_procs] == [24]


def test_unhealthy_npu_is_skipped_and_named(caplog):
    # No public table with a non-OK Health cell was found (SOURCES.md); npu-smi documents OK, Warning, Alarm,
    # Critical, UNKNOWN. This case takes the real 910B3 table and sets NPU 0's Health cell to "Alarm".
    text = _text(NPU_SMI / "info" / "910B3_25.5.1_with-process.txt").replace(
        "| 0     910B3               | OK   ", "| 0     910B3               | Alarm", 1)
    chips = parse_npu_smi_table(text).chips
    assert [(c.npu_id, c.health, c.healthy) for c in chips] == [(0, "Alarm", False), (5, "OK", True)]
    with caplog.at_level(logging.WARNING, logger="lvvit_opt.ascend.npu_smi"):
        assert select_chip(chips).npu_id == 5
    assert "NPU 0 chip 0 reports health 'Alarm'" in caplog.text
    assert select_chip(chips, npu_id=0).npu_id == 0  # asked for explicitly: still allowed (with the warning)


def test_npu_id_not_in_table_lists_the_ids():
    text = _text(NPU_SMI / "info" / "910B3_25.5.1_with-process.txt")
    assert soc_version_from_table(text, npu_id=5) == "Ascend910B3"
    with pytest.raises(SocVersionUnknown, match=r"no NPU with id 3 .*\(it lists 0, 5\); pass --soc-version"):
        soc_version_from_table(text, npu_id=3)


def test_output_without_rows_asks_for_soc_version():
    with pytest.raises(SocVersionUnknown, match="printed no NPU rows .*pass --soc-version"):
        soc_version_from_table("dcmi model initialized failed\n")


@pytest.mark.parametrize("name,soc", [
    ("310", "Ascend310"), ("310P3", "Ascend310P3"), ("310P1", "Ascend310P1"), ("310B1", "Ascend310B1"),
    ("910B1", "Ascend910B1"), ("910B3", "Ascend910B3"), ("910ProB", "Ascend910ProB"), ("Ascend 910B3", "Ascend910B3"),
    ("Ascend910B4", "Ascend910B4"), ("Ascend910_9392", "Ascend910_9392"),
    ("Ascend910", None), ("910B", None), ("xxx", None), ("Mcu", None), ("", None),
])
def test_soc_from_name(name, soc):
    assert soc_from_name(name) == soc


# ---- npu-smi info -t board / -m -------------------------------------------------------------------------------

@pytest.mark.parametrize("name,soc,chip_name", [
    ("A2_910B4_chip0", "Ascend910B4", "910B4"),
    ("A3_Ascend910_9392_chip0", "Ascend910_9392", "Ascend910"),
    ("310B1_23.0.RC3_chip0", "Ascend310B1", "310B1"),
    ("310B1_23.0.RC3_chip1-mcu", None, "MCU"),
    ("redacted-xxx_25.5.0_chip0", None, "xxx"),
])
def test_npu_smi_board_fixture(name, soc, chip_name):
    fields = parse_board_info(_text(NPU_SMI / "board" / f"{name}.txt"))
    assert fields["Chip Name"] == chip_name and fields["NPU ID"] == "0"
    assert soc_from_board(fields) == soc


def test_board_fields_keep_values_with_spaces_and_commas():
    fields = parse_board_info(_text(NPU_SMI / "board" / "310B1_23.0.RC3_chip0.txt"))
    assert fields["Die ID"] == "V1,010A88C4 00A1A210 00000000 00000000 00180000"
    assert fields["Module Board ID"] == "0x42"


@pytest.mark.parametrize("name,chip", [("910B3_25.5.1", "Ascend 910B3"), ("910B4_doc", "Ascend 910B4")])
def test_npu_smi_mapping_fixture(name, chip):
    rows = parse_npu_smi_mapping(_text(NPU_SMI / "mapping" / f"{name}.txt"))
    assert [(r.npu_id, r.chip_id, r.logic_id, r.name) for r in rows] == [
        (0, 0, 0, chip), (0, 1, None, "Mcu"), (1, 0, 1, chip), (1, 1, None, "Mcu")]
    assert soc_from_name(rows[0].name) == "Ascend" + chip.split()[1]


def test_mapping_with_a_phy_id_column():
    # Layout of `npu-smi info -m` on A3 hosts as vllm-ascend's cpu_binding test feeds it (Chip Phy-ID column).
    text = "NPU ID  Chip ID  Chip Logic ID  Chip Phy-ID Chip Name\n0 0 0 0 Ascend\n0 1 1 1 Ascend\n0 2 - - Mcu"
    assert [(r.chip_id, r.logic_id, r.name) for r in parse_npu_smi_mapping(text)] == [
        (0, 0, "Ascend"), (1, 1, "Ascend"), (2, None, "Mcu")]


# ---- detection through the stand-in npu-smi (which replays these fixtures) -------------------------------------

def test_detect_default_stand_in_is_the_atlas300(fake_tools):
    assert detect_soc_version() == "Ascend310"


@pytest.mark.parametrize("info,board,mapping,soc", [
    ("310P3_24.1.0.1_3chips", None, None, "Ascend310P3"),
    ("910B4_24.1.1_1panel", None, None, "Ascend910B4"),
    ("Ascend910-A3_25.3.rc1_vllm-ascend-5588", "A3_Ascend910_9392_chip0", None, "Ascend910_9392"),
    ("Ascend910-A3_26.0.rc2_vllm-ascend-12980", "A3_Ascend910_9392_chip0", None, "Ascend910_9392"),
    # a bare "910B" table: the board answer (Chip Type + Chip Name) names the SoC
    ("910B_24.1.0_vllm-ascend-3010_truncated", "A2_910B4_chip0", None, "Ascend910B4"),
    # no board answer: the mapping's Chip Name does
    ("910B_24.1.0_vllm-ascend-3010_truncated", None, "910B3_25.5.1", "Ascend910B3"),
])
def test_detect_asks_npu_smi_the_documented_way(fake_tools, monkeypatch, info, board, mapping, soc):
    monkeypatch.setenv("LVVIT_FAKE_NPU_SMI", info)
    if board:
        monkeypatch.setenv("LVVIT_FAKE_NPU_BOARD", board)
    if mapping:
        monkeypatch.setenv("LVVIT_FAKE_NPU_MAP", mapping)
    assert detect_soc_version() == soc


def test_detect_still_ambiguous_names_what_it_asked_and_the_flag(fake_tools, monkeypatch):
    monkeypatch.setenv("LVVIT_FAKE_NPU_SMI", "redacted-xxx_25.5.0_hiascend-doc")
    monkeypatch.setenv("LVVIT_FAKE_NPU_BOARD", "redacted-xxx_25.5.0_chip0")
    with pytest.raises(SocVersionUnknown) as failure:
        detect_soc_version()
    assert str(failure.value) == (
        "cannot tell atc's --soc_version from NPU 0's name 'xxx' in `npu-smi info`; also asked: "
        "`npu-smi info -t board -i 0 -c 0` (Chip Type: Ascend, Chip Name: xxx); pass --soc-version with the right "
        "one, e.g. --soc-version Ascend310P3 (`npu-smi info -t board -i N -c 0`: A2 -> Ascend{Chip Name}, "
        "A3 -> {Chip Name}_{NPU Name})")


def test_cli_atc_on_an_a3_host_without_board_answer_exits_2(tmp_path, cli_runner, fake_tools, monkeypatch):
    monkeypatch.setenv("LVVIT_FAKE_NPU_SMI", "Ascend910-A3_24.1.rc3.7_vllm-ascend-2035")
    model = write_tiny_onnx(tmp_path / "m.onnx", batch=1)
    result = cli_runner.invoke(main, ["atc", model, "--soc-version", "auto"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: cannot tell atc's --soc_version from NPU 0's name 'Ascend910'")
    assert "candidates: Ascend910_9392 (or another Ascend910_<NPU Name>)" in result.stderr
    assert "--soc-version Ascend910_9392" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "m.om").exists()


# ---- atc output ------------------------------------------------------------------------------------------------

# fixture -> coded errors (code, op name, op type) in order
ATC_FAILURES = {
    "fail_E10054_no-model": [("E10054", None, None)],
    "fail_E10007_pid-stamped_cann-8.0.0": [("E10007", None, None)],
    "fail_E10007_cann-7.0.RC1": [("E10007", None, None)],
    "fail_EC0010_python-module_cann-8.0.0": [("EC0010", None, None)],
    "fail_EZ3003_AddDsl_310P3_cann-6.0.1": [("EZ3003", "AddDsl", "AddDsl")],
    "fail_E40000_atlas200dk-20.1": [("E40000", None, None)],
    "fail_E10001_input-shape-quoted": [("E10001", None, None), ("E10001", None, None)],
    "fail_E19010_opset-quoted": [("E19010", "model1 div node", "ai.onnx::23::Div")],
    "fail_E10003_dynamic-batch-size-doc": [("E10003", None, None)],
}
ATC_SUCCESSES = {  # fixture -> W11001 ops
    "success_W11001_yolox-310": ["Slice_30", "Slice_10", "Slice_40", "Slice_20"],
    "success_W11001_high-priority-service_icnet": ["PartitionedCall_AvgPool_45_2", "PartitionedCall_AvgPool_52_6"],
    "success_pid-stamped_310B4_2025": ["/model.23/Mod", "/model.23/Div"],
    "success_aipp_layout-visionsdk": [],
}


def test_every_atc_fixture_has_a_case():
    assert sorted(p.stem for p in ATC.glob("*.log")) == sorted(list(ATC_FAILURES) + list(ATC_SUCCESSES))


@pytest.mark.parametrize("name", sorted(ATC_FAILURES))
def test_atc_failure_fixture(name):
    text = _text(ATC / f"{name}.log")
    errors = parse_atc_errors(text)
    assert [(e.code, e.op_name, e.op_type) for e in errors] == ATC_FAILURES[name]
    assert SUCCESS_MARKER not in text and not parse_atc_warnings(text)
    assert all("[PID:" not in e.message for e in errors)


@pytest.mark.parametrize("name", sorted(ATC_SUCCESSES))
def test_atc_success_fixture(name):
    text = _text(ATC / f"{name}.log")
    assert SUCCESS_MARKER in text and parse_atc_errors(text) == []
    warnings = parse_atc_warnings(text)
    assert [(w.code, w.op_name) for w in warnings] == [("W11001", op) for op in ATC_SUCCESSES[name]]


def test_atc_messages_keep_their_details_and_drop_the_pid_stamp():
    (error,) = parse_atc_errors(_text(ATC / "fail_EC0010_python-module_cann-8.0.0.log"))
    assert error.message == "Failed to import Python module [ModuleNotFoundError: No module named 'decorator'.]."
    assert error.details[0].startswith("Solution: Check that all required components are properly installed")
    assert error.details[-1] == "Failed to initialize TeConfigInfo."
    (stamped,) = parse_atc_errors(_text(ATC / "fail_E10007_pid-stamped_cann-8.0.0.log"))
    (bare,) = parse_atc_errors(_text(ATC / "fail_E10007_cann-7.0.RC1.log"))
    assert stamped == bare


def test_inner_error_shows_its_cause():
    # ais_bench/ait load failure of an .om built for another SoC: "E19999: Inner Error!" says nothing itself
    text = _text(AIS / "console" / "ait-benchmark_load-failure_E19999.txt")
    (error,) = parse_atc_messages(text)
    assert error.format() == ("E19999: Inner Error! (E19999 index:0 > stream_list.size(): O, check invalid"
                              "[FUNC:SetStream][FILE:task info.cc][LINE:26])")
    with pytest.raises(UserError, match="no ais_bench 'Performance Summary' block"):
        parse_console_summaries(text)


@pytest.mark.parametrize("listed", ["pi05-part1.om", "pi05-part2_linux_x86_64.om"])
def test_find_om_finds_both_names_atc_writes(tmp_path, listed):
    # files_written_pi05.txt: one atc environment wrote part1.om and part2_linux_x86_64.om
    assert listed in _text(ATC / "files_written_pi05.txt")
    (tmp_path / listed).write_bytes(b"om")
    prefix = listed.split("_linux_")[0].removesuffix(".om")
    assert find_om(str(tmp_path / prefix)) == tmp_path / listed


def test_find_om_prefers_the_fresh_file_and_escapes_glob_characters(tmp_path):
    stale = tmp_path / "m[1].om"
    stale.write_bytes(b"old")
    os.utime(stale, (1, 1))
    fresh = tmp_path / "m[1]_linux_aarch64.om"
    fresh.write_bytes(b"new")
    assert find_om(str(tmp_path / "m[1]")) == fresh
    assert find_om(str(tmp_path / "m[1]"), since=10.0) == fresh
    (tmp_path / "m1_linux_x86_64.om").write_bytes(b"other model")  # "[1]" must not match "1"
    fresh.unlink()
    assert find_om(str(tmp_path / "m[1]"), since=10.0) is None


@pytest.mark.parametrize("generation,suffix", [("5.0", ".om"), ("6.3", ".om"),
                                               ("8.0", f"_linux_{platform.machine()}.om")])
def test_stand_in_atc_generations(tmp_path, fake_tools, monkeypatch, generation, suffix):
    monkeypatch.setenv("LVVIT_FAKE_CANN", generation)
    model = write_tiny_onnx(tmp_path / "m.onnx", batch=1)
    result = compile_onnx(model, soc_version="Ascend310")
    assert result.om_path == tmp_path / f"m{suffix}" and result.succeeded
    monkeypatch.setenv("FAKE_ATC_FAIL", "1")
    failed = run_atc(build_atc_command(model, soc_version="Ascend310"), check=False)
    assert [e.code for e in failed.errors] == ["E19010", "EZ3003"]
    assert [(e.op_name, e.op_type) for e in failed.errors] == [("Softmax_67", "ai.onnx::13::Softmax"),
                                                                 ("Transpose_66", "Transpose")]
    assert ("[PID:" in failed.log_path.read_text()) == (generation == "8.0")


def test_stand_in_replays_a_real_failure(tmp_path, fake_tools, monkeypatch):
    monkeypatch.setenv("LVVIT_FAKE_ATC_FAIL", "fail_EZ3003_AddDsl_310P3_cann-6.0.1")
    model = write_tiny_onnx(tmp_path / "m.onnx", batch=1)
    with pytest.raises(ToolFailed) as failure:
        compile_onnx(model, soc_version="Ascend310P3")
    message = str(failure.value)
    assert "EZ3003: No supported Ops kernel and engine are found for [AddDsl], optype [AddDsl].  " \
           "[op AddDsl, type AddDsl]" in message


# ---- ais_bench -------------------------------------------------------------------------------------------------

# fixture -> per block (NPU_compute_time mean, median, p99, throughput, batch from the throughput line, has H2D)
CONSOLE_CASES = {
    "ais_infer-2022_bs1_h2d-d2h_old-throughput": [(5.828554630279541, 5.828554630279541, 5.828554630279541,
                                                   171.5691219234638, None, True)],
    "ais_infer_bs16_batchsize-n": [(21.94005001068115, 21.921500205993652, 22.326120758056643, 729.2599603105127,
                                    16.0, True)],
    "ais_bench_bs1024": [(511.8491110229492, 512.0014953613281, 516.9628411865235, 2000.589583819924, 1024.0, True)],
    "msit-benchmark_static-bs1": [(2.4560000896453857, 2.4560000896453857, 2.4560000896453857, 407.16610891670894,
                                   1.0, False)],
    "ais_bench_multi-device_1-2": [(3.5538000106811523, 3.7230000495910645, 3.936680030822754, 281.38893494131406,
                                    1.0, False),
                                   (3.616000032424927, 3.555000066757202, 3.9134000968933105, 276.54867008654026,
                                    1.0, False)],
    "ais_bench_310B1_vgg16_loop100": [(13.685129957199097, 13.670999526977539, 13.990400457382204, 73.07201342826471,
                                       1.0, False)],
    "msit-benchmark_energy": [(3.5538000106811523, 3.7230000495910645, 3.936680030822754, 281.38893494131406, 1.0,
                               False)],
}


def test_every_console_fixture_has_a_case():
    names = sorted(p.stem for p in (AIS / "console").glob("*.txt"))
    assert names == sorted(list(CONSOLE_CASES) + ["ait-benchmark_load-failure_E19999"])


@pytest.mark.parametrize("name", sorted(CONSOLE_CASES))
def test_ais_bench_console_fixture(name):
    summaries = parse_console_summaries(_text(AIS / "console" / f"{name}.txt"))
    got = [(s.npu_compute_time.mean, s.npu_compute_time.median, s.npu_compute_time.percentile, s.throughput,
            s.batch_size, s.h2d_latency is not None) for s in summaries]
    assert got == CONSOLE_CASES[name]
    for summary in summaries:
        assert summary.npu_compute_time.percentile_rank == 99
        assert summary.npu_compute_time.min <= summary.npu_compute_time.mean <= summary.npu_compute_time.max
        if summary.batch_size:  # ais_bench's throughput is 1000 * batch / mean compute time
            assert summary.fps_from_mean == pytest.approx(summary.throughput, rel=1e-12)


@pytest.mark.parametrize("name,mean,p99,throughput,batch,count", [
    ("ais_infer-2022_ghostnet_bs16_sumary", 4.652794558563232, 9.564919853210439, 3438.7935677393734, 16, None),
    ("ais_bench_nasfpn_bs1_sumary", 16.08246865272522, 17.815630435943604, 62.17950873049252, 1, None),
    ("CONSTRUCTED_ait-2023-layout_resnet50_bs1_summary", 2.4560000896453857, 2.4560000896453857, 407.16610891670894,
     1, 1),
])
def test_ais_bench_summary_json_fixture(name, mean, p99, throughput, batch, count):
    summary = parse_summary_json(AIS / "summary" / f"{name}.json")
    assert (summary.npu_compute_time.mean, summary.npu_compute_time.percentile, summary.throughput) == \
        (mean, p99, throughput)
    assert summary.npu_compute_time.count == count
    assert 1000.0 * batch / mean == pytest.approx(throughput, rel=1e-12)  # the README's batch size
    assert summary.h2d_latency is not None and summary.d2h_latency is not None


def test_summary_json_refuses_what_is_not_a_summary(tmp_path):
    bad = tmp_path / "x_summary.json"
    bad.write_text('{"throughput": 1}')
    with pytest.raises(UserError, match="not an ais_bench summary"):
        parse_summary_json(bad)
    bad.write_text("{half")
    with pytest.raises(UserError, match="not readable JSON"):
        parse_summary_json(bad)
    with pytest.raises(UserError, match="no such file"):
        parse_summary_json(tmp_path / "missing.json")


def test_find_summary_json_both_layouts(tmp_path):
    assert find_summary_json(tmp_path) is None
    old = tmp_path / "2022_07_09-18_23_06" / "sumary.json"
    old.parent.mkdir()
    old.write_text("{}")
    os.utime(old, (1, 1))
    assert find_summary_json(tmp_path) == old
    new = tmp_path / "2023_05_27-12_05_31_summary.json"
    new.write_text("{}")
    assert find_summary_json(tmp_path) == new


@pytest.mark.parametrize("entry,ms", [(2.5, 2.5), ((100.0, 102.5), 2.5), ([7, 9], 2.0)])
def test_exec_time_list_items(entry, ms):
    assert exec_time_ms(entry) == ms


@pytest.mark.parametrize("generation,api", [("6.3", "sumary"), ("8.0", "summary")])
def test_ais_bench_runner_times_both_summary_apis(fake_om, fake_ais_bench, monkeypatch, generation, api):
    import numpy as np

    from lvvit_opt.runtime import open_runner

    monkeypatch.setenv("LVVIT_FAKE_CANN", generation)
    onnx_path, om_path = fake_om
    with open_runner(om_path, backend="ais_bench") as runner:
        assert hasattr(runner.session, api) and not hasattr(runner.session, {"sumary": "summary",
                                                                              "summary": "sumary"}[api])
        runner.infer({"image": np.zeros((2, 3, 224, 224), np.float32)})
        device = runner.device_seconds()
        assert device is not None and 0 < device < 60 and runner.last_infer_s == device


# ---- benchmark.x86_64 perf files -------------------------------------------------------------------------------

@pytest.mark.parametrize("batch,interface,card_fps", [(4, 40.477, 161.908), (8, 38.3992, 153.5968),
                                                       (32, 36.1795, 144.718)])
def test_seed_guide_perf_files(batch, interface, card_fps):
    perf = parse_perf_file(FIXTURES_DIR / "benchmark" / f"seed_baseline_perf_vision_batchsize_{batch}_device_0.txt")
    assert (perf.batch_size, perf.device_id, perf.interface_throughput) == (batch, 0, interface)
    assert perf.card_fps() == pytest.approx(card_fps, abs=1e-9)  # the guide's own "x 4" figure


@pytest.mark.parametrize("om,onnx", [("out/m.om", "out/m.onnx"), ("out/m_linux_x86_64.om", "out/m.onnx"),
                                     ("out/m_linux_aarch64.om", "out/m.onnx"),
                                     ("out/my_linux_model.om", "out/my_linux_model.onnx")])
def test_source_onnx_of_either_om_name(om, onnx):
    from lvvit_opt.runtime.om import source_onnx

    assert source_onnx(om) == Path(onnx)


@pytest.mark.parametrize("generation", ["6.3", "8.0"])
def test_cli_atc_reports_w11001_warnings_after_success(tmp_path, cli_runner, fake_tools, monkeypatch, generation):
    from fakes.ascend_env import GOLDEN_ONNX

    monkeypatch.setenv("LVVIT_FAKE_CANN", generation)
    monkeypatch.setenv("LVVIT_FAKE_ATC_WARN", "1")
    result = cli_runner.invoke(main, ["atc", str(GOLDEN_ONNX), "--soc-version", "Ascend310", "--batch-size", "2",
                                      "--output", str(tmp_path / "g"), "--json", "-"])
    assert result.exit_code == 0, result.output
    import json

    envelope = json.loads(result.stdout[result.stdout.index("{"):])
    warnings = envelope["result"]["warnings"]
    assert warnings and all(w.startswith("W11001: Op [") and "high-priority operator information library" in w
                            and "[PID:" not in w for w in warnings)
    assert f"atc {warnings[0]}" in result.stderr


@pytest.mark.parametrize("change", [
    lambda d: d["NPU_compute_time"].update(mean=float("nan")),
    lambda d: d.update(throughput=float("inf")),
    lambda d: d["NPU_compute_time"].update(min=-1.0),
    lambda d: d["NPU_compute_time"].update(min=99.0),  # min > max
])
def test_summary_json_with_impossible_numbers_is_refused(tmp_path, change):
    import json

    data = json.loads(_text(AIS / "summary" / "ais_bench_nasfpn_bs1_sumary.json"))
    change(data)
    path = tmp_path / "x_summary.json"
    path.write_text(json.dumps(data))  # json writes NaN/Infinity, which Python's reader accepts
    with pytest.raises(UserError, match="impossible timing"):
        parse_summary_json(path)


def test_summary_json_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom_summary.json"
    path.write_bytes(b"\xef\xbb\xbf" + (AIS / "summary" / "ais_bench_nasfpn_bs1_sumary.json").read_bytes())
    assert parse_summary_json(path).throughput == 62.17950873049252


def test_console_with_nan_is_refused():
    text = _text(AIS / "console" / "msit-benchmark_static-bs1.txt").replace("mean = 2.4560000896453857", "mean = nan")
    with pytest.raises(UserError):
        parse_console_summaries(text)


def test_run_stops_on_an_ambiguous_soc_before_exporting(tmp_path, fake_tools, monkeypatch):
    from lvvit_opt.pipeline.run import RunOptions, run

    monkeypatch.setenv("LVVIT_FAKE_NPU_SMI", "Ascend910-A3_26.0.rc2_vllm-ascend-12980")
    out = tmp_path / "run"
    with pytest.raises(SocVersionUnknown, match="candidates: Ascend910_9392"):
        run(RunOptions(out=str(out), model="lvvit_golden", batch_sizes=(2,), soc_version="auto"), log=lambda m: None)
    assert not out.exists()
    monkeypatch.setenv("LVVIT_FAKE_NPU_BOARD", "A3_Ascend910_9392_chip0")  # the documented board query answers
    from lvvit_opt.pipeline.run import _resolve_soc_early

    assert _resolve_soc_early(RunOptions(soc_version="auto")).soc_version == "Ascend910_9392"


def test_compile_on_an_a3_host_through_the_board_query(tmp_path, fake_tools, monkeypatch):
    monkeypatch.setenv("LVVIT_FAKE_NPU_SMI", "Ascend910-A3_25.3.rc1_vllm-ascend-5588")
    monkeypatch.setenv("LVVIT_FAKE_NPU_BOARD", "A3_Ascend910_9392_chip0")
    model = write_tiny_onnx(tmp_path / "m.onnx", batch=1)
    result = compile_onnx(model, soc_version="auto")
    assert result.succeeded and result.command[-1] == "--soc_version=Ascend910_9392"
