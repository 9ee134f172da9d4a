"""One recipe, named once (issue 34): the ascend310 preset, accepted wherever --passes is, the
default of apply and run; run checks its whole pass plan before --out exists."""
from __future__ import annotations

import json

import onnx
import pytest

from lvvit_opt.cli import main
from lvvit_opt.core.errors import UserError
from lvvit_opt.passes import DEFAULT_PRESET, PRESETS, check_pass_plan, parse_pass_list


def test_the_preset_expands_where_it_stands():
    assert DEFAULT_PRESET == "ascend310"
    assert PRESETS["ascend310"] == ("fix_shapes", "softmax_transpose", "cleanup")
    assert parse_pass_list("ascend310") == ["fix_shapes", "softmax_transpose", "cleanup"]
    assert parse_pass_list("lower_attention,ascend310") == ["lower_attention", "fix_shapes", "softmax_transpose",
                                                             "cleanup"]
    with pytest.raises(UserError, match="presets: ascend310"):
        parse_pass_list("ascend999")


def test_tune_takes_the_preset_and_searches_it_by_default():
    from lvvit_opt.tune.space import default_space, space_from_mapping

    assert space_from_mapping({"pass_sets": ["ascend310", "none"]}, "ort-cpu").pass_sets == [
        ["softmax_transpose", "cleanup"], []]  # fix_shapes: tune exports each batch itself
    assert default_space("ort-cpu").pass_sets[:2] == [[], ["softmax_transpose", "cleanup"]]


def test_passes_lists_presets_with_their_expansion(cli_runner, tmp_path):
    result = cli_runner.invoke(main, ["passes", "--json", str(tmp_path / "p.json")])
    assert result.exit_code == 0, result.output
    assert "ascend310          = fix_shapes,softmax_transpose,cleanup (the default of apply and run)" in result.output
    presets = json.loads((tmp_path / "p.json").read_text())["result"]["presets"]
    assert presets == [{"name": "ascend310", "passes": ["fix_shapes", "softmax_transpose", "cleanup"],
                        "summary": presets[0]["summary"], "default": True}]


def test_apply_and_run_default_to_the_preset():
    from lvvit_opt.cli.passes_cmd import apply_command
    from lvvit_opt.cli.run_cmd import run_command

    for command in (apply_command, run_command):
        default = next(p for p in command.params if p.name in ("pass_names", "passes")).default
        assert default() == "ascend310", command.name  # resolved when needed: parsing imports no onnx


def test_apply_default_on_a_static_export(golden_onnx, tmp_path, cli_runner):
    out = tmp_path / "opt.onnx"
    result = cli_runner.invoke(main, ["apply", golden_onnx, "-o", str(out), "--json", str(tmp_path / "a.json")])
    assert result.exit_code == 0, result.output
    passes = [p["name"] for p in json.loads((tmp_path / "a.json").read_text())["result"]["passes"]]
    assert passes == ["fix_shapes", "softmax_transpose", "cleanup"]
    assert [n.op_type for n in onnx.load(out).graph.node].count("Softmax") == 2


def test_check_pass_plan_catches_every_defect_without_a_model():
    assert check_pass_plan("ascend310", None, {"batch_size": 4}) == (
        ["fix_shapes", "softmax_transpose", "cleanup"], {"fix_shapes": {"batch_size": 4}})
    for names, options, shortcuts, message in [
        ("softmax_transpose", {"fix_shapes": {"batch_size": "2"}}, {}, "not in --passes"),
        ("ascend310", {"softmax_transpose": {"nope": "1"}}, {}, "has no option 'nope'"),
        ("ascend310", {"fix_shapes": {"batch_size": "x"}}, {}, "fix_shapes.batch_size"),
        ("ascend310", {"fix_shapes": {"batch_size": "2"}}, {"batch_size": 3}, "disagree"),
        ("softmax_transpose", None, {"input_shapes": "image:1,3,224,224"}, "add it to --passes"),
    ]:
        with pytest.raises(UserError, match=message):
            check_pass_plan(names, options, shortcuts)


INVALID_RUN_PLANS = [
    (["--passes", "nope"], "unknown pass 'nope'"),
    (["--passes", "fix_shapes,nope"], "unknown pass 'nope'"),
    (["--batch-size", "8", "--batch-sizes", "1,16"], "disagree"),
    (["-O", "fix_shapes.batch_size=8"], "contradicts --batch-sizes 1,16"),
    (["-O", "fold_constants.fold_shapes=false"], "not in --passes"),
    (["-O", "softmax_transpose.nope=1"], "has no option 'nope'"),
    (["-O", "softmax_transpose.perm=1,2"], "perm must be a permutation"),
    (["-O", "softmax_transpose.upgrade_opset=maybe"], "softmax_transpose.upgrade_opset"),
    (["-O", "bad"], "expected PASS.OPTION=VALUE"),
    (["--input-shape", "image:1,3,224"], "expected 4 dims"),
    (["--input-shape", "image:2,3,224,224", "--batch-size", "1"], "expected 4 dims starting with the one"),
    (["--input-shape", "pixels:1,3,224,224", "--batch-size", "1"], "input is 'image'"),
    (["--passes", "softmax_transpose", "--input-shape", "image:1,3,224,224"], "add it to --passes"),
    (["--soc-version", "Intel"], "--soc-version"),
    (["--model", "no_such_model_xyz"], "no_such_model_xyz"),
    (["--whitelist-file", "transpose.py"], "only used with --patch-whitelist"),
]


@pytest.mark.parametrize("args, message", INVALID_RUN_PLANS, ids=[" ".join(a) for a, _ in INVALID_RUN_PLANS])
def test_every_invalid_run_plan_exits_2_before_out_exists(args, message, tmp_path, cli_runner):
    out = tmp_path / "run"
    result = cli_runner.invoke(main, ["run", "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert result.output.count("error:") == 1
    assert not out.exists()
