"""`lvvit-opt inspect`: reading atc --mode=1 JSON (fixture: tests/fixtures/ascend/om_json/, structure from
Ascend/metadef ge_ir.proto + msit's om_parser.py + the CANN atc --json docs) and .om files through the
stand-in atc, which implements --mode=1 (tests/fakes/python/fake_om_json.py)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fakes.ascend_env import FAKES_DIR, VENV_BIN, fake_ais_bench, fake_tools, no_tools  # noqa: F401
from lvvit_opt.core.cann import ToolNotFound
from lvvit_opt.ascend.om_graph import format_comparison, format_model, inspect_om, parse_om_json, read_om_json
from lvvit_opt.core.errors import ToolFailed, UserError

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "ascend" / "om_json" / "lvvit_s_bs16_block0.json"
GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "lvvit_golden.onnx"


def test_fixture_json_op_types_kernels_and_verdict():
    model = read_om_json(FIXTURE)
    assert (model.name, model.soc_version, model.graphs) == ("lvvit_s_bs16_block0", "Ascend310", ["lvvit_s_bs16_block0"])
    assert model.attrs["atc_cmdline"].startswith("xxx/atc.bin --framework=5 --model=./model/model_best_bs16_sim.onnx")
    assert dict(model.op_counts()) == {"Data": 1, "BatchMatMulV2": 3, "Reshape": 2, "TransposeD": 3, "Transpose": 2,
                                       "SoftmaxV2": 1, "NetOutput": 1}
    assert [k.to_dict() for k in model.attention_kernels()] == [
        {"type": "TransposeD", "input_shape": [16, 197, 3, 6, 64], "setting": "perm 2,0,3,1,4", "count": 1,
         "verdict": "slow (TransposeD)", "ops": ["/blocks.0/attn/Transpose"]},
        {"type": "TransposeD", "input_shape": [16, 6, 197, 64], "setting": "perm 0,1,3,2", "count": 1,
         "verdict": "slow (TransposeD)", "ops": ["/blocks.0/attn/Transpose_1"]},
        {"type": "Transpose", "input_shape": [16, 6, 197, 197], "setting": "", "count": 1, "verdict": "fast",
         "ops": ["/blocks.0/attn/softmax_transpose/pre"]},
        {"type": "SoftmaxV2", "input_shape": [16, 197, 197, 6], "setting": "axes 1", "count": 1, "verdict": "",
         "ops": ["/blocks.0/attn/Softmax"]},   # origin_shape, not the NC1HWC0 device shape
        {"type": "Transpose", "input_shape": [16, 197, 197, 6], "setting": "", "count": 1, "verdict": "fast",
         "ops": ["/blocks.0/attn/softmax_transpose/post"]},
        {"type": "TransposeD", "input_shape": [16, 6, 197, 64], "setting": "perm 0,2,1,3", "count": 1,
         "verdict": "slow (TransposeD)", "ops": ["/blocks.0/attn/Transpose_2"]},
    ]
    assert model.attention_summary() == {"transpose_fast": 2, "transpose_slow": 3, "softmax": 1,
                                         "softmax_last_axis": 0, "softmax_other_axis": 1}
    assert model.verdict() == ("1 of 1 softmax(es) run on a non-last axis (softmax_transpose rewrite present); "
                               "3 Transpose(s) compiled as slow TransposeD: whitelist their shapes")
    assert format_model(model, top=3) == [
        f"model: {FIXTURE}  (soc_version Ascend310)",
        "ops: 13 in 1 graph(s), the 3 most frequent types:",
        "op type        count",
        "-------------  -----",
        "BatchMatMulV2      3",
        "TransposeD         3",
        "Reshape            2",
        "attention kernels:",
        "kernel      input shape    setting         ops  verdict",
        "----------  -------------  --------------  ---  -----------------",
        "TransposeD  16,197,3,6,64  perm 2,0,3,1,4    1  slow (TransposeD)",
        "TransposeD  16,6,197,64    perm 0,1,3,2      1  slow (TransposeD)",
        "Transpose   16,6,197,197                     1  fast",
        "SoftmaxV2   16,197,197,6   axes 1            1",     # origin_shape, not the NC1HWC0 device shape
        "Transpose   16,197,197,6                     1  fast",
        "TransposeD  16,6,197,64    perm 0,2,1,3      1  slow (TransposeD)",
        "verdict: 1 of 1 softmax(es) run on a non-last axis (softmax_transpose rewrite present); "
        "3 Transpose(s) compiled as slow TransposeD: whitelist their shapes",
        "next: lvvit-opt whitelist patch --shape 16,197,3,6,64 --shape 16,6,197,64, then run atc again",
    ]
    assert model.to_dict()["slow_transpose_shapes"] == [[16, 197, 3, 6, 64], [16, 6, 197, 64]]


def test_attr_maps_as_objects_and_missing_fields_are_tolerated():
    model = parse_om_json({"graph": [{"op": [{"type": "SoftmaxV2", "attr": {"axes": {"list": {"i": [-1]}}}},
                                             {"name": "t", "type": "TransposeD"}]}]})
    assert model.attention_summary() == {"transpose_fast": 0, "transpose_slow": 1, "softmax": 1,
                                         "softmax_last_axis": 1, "softmax_other_axis": 0}
    assert model.verdict() == ("all 1 softmax(es) run on the last axis (no softmax_transpose rewrite); "
                               "1 Transpose(s) compiled as slow TransposeD: whitelist their shapes")


def test_int64_dims_written_as_strings_and_junk_dims():
    op = {"type": "TransposeD", "attr": [{"key": "perm", "value": {"list": {"i": ["0", "2", "1"]}}}],
          "input_desc": [{"shape": {"dim": ["16", "197", "384"]}}, {"shape": {"dim": ["x"]}}, "junk"]}
    model = parse_om_json({"graph": [{"op": [op]}]})
    assert model.ops[0].input_shapes == ((16, 197, 384), None, None)
    assert model.attention_kernels()[0].to_dict()["input_shape"] == [16, 197, 384]


@pytest.mark.parametrize("data, message", [
    ([], "no graph list"), ({"graph": "x"}, "no graph list"), ({"graph": [3]}, "graph 0 is not an object"),
    ({"graph": [{"name": "g", "op": [{"name": "x"}]}]}, "an op of graph 'g' has no type"),
])
def test_not_an_om_json(data, message):
    with pytest.raises(UserError, match=message):
        parse_om_json(data, "x.json")


def test_unreadable_json_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe{")
    with pytest.raises(UserError, match=r"bad.json: not UTF-8 text \(byte 0\)"):  # core.readers' wording
        read_om_json(bad)
    bad.write_text('{"graph": [')
    with pytest.raises(UserError, match=r"bad.json: not valid JSON \(Expecting value"):
        read_om_json(bad)
    with pytest.raises(UserError, match="no such file"):
        inspect_om(tmp_path / "none.om")


# ---------------------------------------------------------------- through the stand-in atc

def _compile(folder: Path, onnx_path: Path, name: str, fast_shapes: str | None = None) -> Path:
    env = dict(os.environ, PATH=os.pathsep.join([str(FAKES_DIR), VENV_BIN, os.environ.get("PATH", "")]))
    env.pop("FAKE_ATC_FAIL", None)
    if fast_shapes is not None:
        env["FAKE_ATC_FAST_TRANSPOSE_SHAPES"] = fast_shapes
    subprocess.run([str(FAKES_DIR / "atc"), "--framework=5", f"--model={onnx_path}", f"--output={folder / name}",
                    "--input_format=NCHW", "--input_shape=image:2,3,224,224", "--soc_version=Ascend310"],
                   env=env, check=True, capture_output=True)
    return folder / f"{name}.om"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """original and softmax_transpose-rewritten golden LV-ViT, compiled by the stand-in atc; the rewritten one
    as on a white-list-era CANN where only the softmax wrapper's shapes were listed."""
    from lvvit_opt.passes import apply_file

    folder = tmp_path_factory.mktemp("inspect")
    original, rewritten = folder / "golden.onnx", folder / "golden_opt.onnx"
    shutil.copy(GOLDEN, original)
    apply_file(original, rewritten, ["softmax_transpose"])
    return (_compile(folder, original, "golden"),
            _compile(folder, rewritten, "golden_opt", fast_shapes="2,3,197,197;2,197,197,3"))


def test_inspect_om_through_the_stand_in_atc(fake_tools, compiled, tmp_path):  # noqa: F811
    original, rewritten = compiled
    before = inspect_om(original)
    after = inspect_om(rewritten, keep_json=tmp_path / "kept.json")
    assert before.source == str(original) and before.soc_version == "Ascend310"
    assert before.attention_summary() == {"transpose_fast": 7, "transpose_slow": 0, "softmax": 2,
                                          "softmax_last_axis": 2, "softmax_other_axis": 0}
    assert after.attention_summary() == {"transpose_fast": 4, "transpose_slow": 7, "softmax": 2,
                                         "softmax_last_axis": 0, "softmax_other_axis": 2}
    assert after.attrs["atc_cmdline"].startswith("atc --framework=5 --model=")
    kept = json.loads((tmp_path / "kept.json").read_text())
    assert [op["type"] for op in kept["graph"][0]["op"]][0] == "Data"
    assert format_comparison([before, after]) == [
        "compiled kernels     golden.om  golden_opt.om",
        "-------------------  ---------  -------------",
        "Transpose (fast)             7              4",
        "TransposeD (slow)            0              7",
        "Softmax, last axis           2              0",
        "Softmax, other axis          0              2",
        f"ops in total               {len(before.ops):>3}            {len(after.ops):>3}",
    ]
    counts_before, counts_after = before.op_counts(), after.op_counts()
    assert (counts_before["Transpose"], counts_before["TransposeD"], counts_before["SoftmaxV2"]) == (7, 0, 2)
    assert (counts_after["Transpose"], counts_after["TransposeD"], counts_after["SoftmaxV2"]) == (4, 7, 2)
    assert counts_after["Const"] - counts_before["Const"] == 4 - 7  # a fast Transpose's perm is a Const input


def test_inspect_without_atc_says_the_command_to_run(no_tools, compiled):  # noqa: F811
    with pytest.raises(ToolNotFound) as info:
        inspect_om(compiled[0])
    assert f"atc --mode=1 --om={compiled[0]} --json=" in str(info.value)


def test_atc_mode1_failure_is_reported_with_its_error_code(fake_tools, tmp_path):  # noqa: F811
    bogus = tmp_path / "bogus.om"
    bogus.write_bytes(b"not an om")
    with pytest.raises(ToolFailed) as info:
        inspect_om(bogus, keep_json=tmp_path / "out.json")
    assert "atc --mode=1 failed (exit 1)" in str(info.value)
    assert "E10001: Value [" in str(info.value) and "for parameter [--om] is invalid" in str(info.value)
    assert not (tmp_path / "out.json").exists()


def test_keep_json_may_not_be_the_model(fake_tools, compiled, tmp_path):  # noqa: F811
    om = tmp_path / "m.om"
    shutil.copy(compiled[0], om)
    with pytest.raises(UserError, match="is the model itself"):
        inspect_om(om, keep_json=om)
    assert om.read_bytes() == Path(compiled[0]).read_bytes()


# ---------------------------------------------------------------- the CLI

def test_cli_inspect_fixture_text_and_json(cli_runner):
    from lvvit_opt.cli import main

    result = cli_runner.invoke(main, ["inspect", str(FIXTURE), "--top", "3"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == format_model(read_om_json(FIXTURE), top=3)
    result = cli_runner.invoke(main, ["inspect", str(FIXTURE), "--json", "-"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["command"], data["ok"]) == ("inspect", True) and set(data) == {"command", "version", "ok", "result",
                                                                                 "warnings"}
    model = data["result"]["models"][0]
    assert model["op_types"]["TransposeD"] == 3 and model["attention"]["softmax_other_axis"] == 1
    assert model["atc_cmdline"].endswith("--soc_version=Ascend310") and model["soc_version"] == "Ascend310"


def test_cli_inspect_two_om_files_compares_them(fake_tools, compiled, cli_runner, tmp_path):  # noqa: F811
    from lvvit_opt.cli import main

    result = cli_runner.invoke(main, ["inspect", str(compiled[0]), str(compiled[1]), "--json", str(tmp_path / "i.json")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[-7:-1] == ["compiled kernels     golden.om  golden_opt.om",
                            "-------------------  ---------  -------------",
                            "Transpose (fast)             7              4",
                            "TransposeD (slow)            0              7",
                            "Softmax, last axis           2              0",
                            "Softmax, other axis          0              2"]
    assert [m["source"] for m in json.loads((tmp_path / "i.json").read_text())["result"]["models"]] == \
        [str(compiled[0]), str(compiled[1])]


def test_cli_inspect_bad_input_exits_2(fake_tools, compiled, cli_runner, tmp_path):  # noqa: F811
    from lvvit_opt.cli import main

    om = tmp_path / "m.om"
    shutil.copy(compiled[0], om)
    result = cli_runner.invoke(main, ["inspect", str(om), "--keep-json", str(om)])
    assert result.exit_code == 2 and "error: --keep-json" in result.output and om.read_bytes().startswith(b"LVVIT")
    before = om.read_bytes()
    result = cli_runner.invoke(main, ["inspect", str(om), "--json", str(om)])  # the error envelope must not land there
    assert result.exit_code == 2 and "refusing to overwrite an input" in result.output and om.read_bytes() == before
    result = cli_runner.invoke(main, ["inspect", str(tmp_path / "none.om")])
    assert result.exit_code == 2 and result.output.strip().endswith("none.om: no such file")


def test_cli_inspect_without_atc_prints_the_command(no_tools, compiled, cli_runner):  # noqa: F811
    from lvvit_opt.cli import main

    result = cli_runner.invoke(main, ["inspect", str(compiled[0])])
    assert result.exit_code == 2
    assert "atc not found" in result.output and f"atc --mode=1 --om={compiled[0]} --json=" in result.output


def test_bench_of_two_om_files_prints_the_kernel_comparison(fake_ais_bench, compiled, cli_runner):  # noqa: F811
    from lvvit_opt.cli import main

    result = cli_runner.invoke(main, ["bench", str(compiled[0]), str(compiled[1]), "--duration", "0.2", "--rounds", "1",
                                      "--warmup", "0"])
    assert result.exit_code == 0, result.output
    assert "TransposeD (slow)            0              7" in result.output.splitlines()
