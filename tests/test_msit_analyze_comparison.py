"""Our atc readiness check (lvvit_opt/ascend/readiness.py) against msit's `analyze`, case by case.

What msit's analyze does (msit 8.2.0 sdist from PyPI, components/analyze/model_evaluation; read, not run
here, no code taken): it runs `atc --mode=1` to list the model's ops, then atc itself (no --input_shape), and
writes `result.csv` in its -o folder, one row per op: ori_op_name, ori_op_type, op_name, op_type, soc_type,
engine, is_supported, details ("Op is unsupported." for an op it marks). It reads atc's stdout only, picks the
first of EZ0501/EZ3002/EZ3003/EZ9010/E19010 found in it and marks the ops those lines name; any other code
(E10001, E40000, ...) it treats as "other error". Its op-name pattern admits letters, digits and `-_/.:`
only, so a node name with a space is not read. Then it maps ONNX ops ('ai.onnx::<opset>::<op>') through
map_conf/onnx.yaml, which the sdist does not ship, and queries the installed operator library per SoC
(ms_fast_query over $ASCEND_OPP_PATH); it also runs onnx's node checker, skipping "No Op registered" errors.

Both directions are tested against the real atc outputs in tests/fixtures/ascend/atc/ (SOURCES.md): what
atc (and so msit) learns after a failed compile, ours says before atc runs, with the fix; what only the
installed operator library knows (a kernel missing for a SoC), ours learns from atc like msit does.
"""
from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto as T, helper

from fakes.ascend_env import FIXTURES_DIR, fake_tools  # noqa: F401
from lvvit_opt.ascend.atc import parse_atc_errors
from lvvit_opt.ascend.readiness import check_readiness
from lvvit_opt.cli import main
from lvvit_opt.core.errors import UserError
from lvvit_opt.passes import run_pipeline

ATC = FIXTURES_DIR / "atc"
# the codes msit's analyze reads unsupported ops from (model_evaluation/common/enum/atc_err.py)
MSIT_OP_CODES = {"EZ0501", "EZ3002", "EZ3003", "EZ9010", "E19010"}
# fixture -> {op name: op type} msit would mark is_supported=False from it. E19010's node name
# "model1 div node" has spaces, which msit's op pattern does not admit: it marks nothing there.
MSIT_MARKS = {
    "fail_E19010_opset-quoted": {},
    "fail_EZ3003_AddDsl_310P3_cann-6.0.1": {"AddDsl": "AddDsl"},
}


def _errors(name: str):
    return parse_atc_errors((ATC / f"{name}.log").read_text(encoding="utf-8"))


def _model(op: str, opset: int, name: str) -> onnx.ModelProto:
    names = ["a", "b"]
    graph = helper.make_graph([helper.make_node(op, names, ["y"], name=name)], "g",
                              [helper.make_tensor_value_info(n, T.FLOAT, [1, 8]) for n in names],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, 8])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _atc(cli_runner, model, *extra: str, soc: str = "Ascend310"):
    return cli_runner.invoke(main, ["atc", str(model), "--soc-version", soc, *extra])


def test_msit_cases_cover_every_failure_with_an_op_code_msit_reads():
    for path in ATC.glob("fail_*.log"):
        codes = {e.code for e in _errors(path.stem)}
        assert bool(codes & MSIT_OP_CODES) == (path.stem in MSIT_MARKS), path.stem


@pytest.mark.parametrize("name", sorted(MSIT_MARKS))
def test_we_read_every_op_msit_reads_from_atc_and_more(name):
    ours = {(e.op_name, e.op_type) for e in _errors(name) if e.code in MSIT_OP_CODES}
    assert set(MSIT_MARKS[name].items()) <= ours
    if name.startswith("fail_E19010"):  # the op msit's pattern misses
        assert ours == {("model1 div node", "ai.onnx::23::Div")}


# ---- what atc refuses and msit learns only by running it: ours refuses before atc runs ----------------

def test_opset23_div_refused_before_atc_naming_atcs_op_and_the_pass(tmp_path, cli_runner, fake_tools, monkeypatch):
    # fail_E19010_opset-quoted (OrangePi AIpro FAQ): "No parser is registered for Op [model1 div node,
    # optype [ai.onnx::23::Div]]"; checked against CANN 8.0's documented v9-v18
    (error,) = _errors("fail_E19010_opset-quoted")
    monkeypatch.setenv("LVVIT_FAKE_ATC_FAIL", "fail_E19010_opset-quoted")  # what atc would say, had it run
    src = tmp_path / "div.onnx"
    onnx.save(_model("Div", 23, error.op_name), src)
    refused = _atc(cli_runner, src, "--cann-version", "8.0.RC1")
    assert refused.exit_code == 2, refused.output
    assert "opset 23 is outside CANN 8.0's documented v9-v18" in refused.output
    assert f"no parser for {error.op_type} (node {error.op_name})" in refused.output
    assert "--passes target_opset -O target_opset.opset=18" in refused.output
    assert "E19010: No parser" not in refused.output  # atc did not run ...
    assert not (tmp_path / "div.atc.log").exists() and not list(tmp_path.glob("div*.om"))  # ... nor wrote
    fixed = tmp_path / "fixed.onnx"
    onnx.save(run_pipeline(onnx.load(src), ["target_opset"]).model, fixed)
    assert check_readiness(fixed, "8.0").ok
    monkeypatch.delenv("LVVIT_FAKE_ATC_FAIL")
    ready = _atc(cli_runner, fixed, "--cann-version", "8.0.RC1")
    assert ready.exit_code == 0, ready.output
    assert (tmp_path / "fixed.om").is_file()


def test_opset23_div_for_cann5_the_pass_refuses_and_re_export_is_the_fix(tmp_path):
    # CANN 5.x/6.0 document v9-v13; onnx's version_converter has no Div adapter below opset 14: readiness
    # tries the conversion on the graph's structure and names re-exporting (with the converter's reason),
    # not the pass, which indeed refuses it (exit 2)
    src = tmp_path / "div.onnx"
    onnx.save(_model("Div", 23, "model1 div node"), src)
    (problem,) = check_readiness(src, "5.0.4").problems
    assert "re-export with opset <= 13 (onnx cannot convert opset 23 to 13" in problem and "for Div" in problem
    assert "target_opset" not in problem  # never the pass that would refuse it
    assert "no parser for ai.onnx::23::Div (node model1 div node)" in problem
    with pytest.raises(UserError) as refused:
        run_pipeline(onnx.load(src), ["target_opset"], {"target_opset": {"opset": 13}})
    assert "onnx cannot convert opset 23 to 13" in str(refused.value) and "for Div" in str(refused.value)
    onnx.save(_model("Div", 13, "model1 div node"), src)  # the re-exported graph
    assert check_readiness(src, "5.0.4").ok


def test_op_newer_than_the_declared_opset_refused_before_atc(tmp_path, cli_runner, fake_tools):
    # a public report (find_string excerpt id 60073073257, PI05 quantization): a tool re-declared opset 11 over
    # opset-17 LayerNormalization nodes and atc refused them, quoted as "No parser is registered for Op
    # [.../post_layernorm/LayerNormalization, optype [ai.onnx::11::LayerNormalization]]" (no atc log is stored:
    # the quote elides the name and drops the code). msit would learn it from atc (a name without spaces); its
    # own onnx check skips "No Op registered". Ours: the model gate's onnx checker refuses it (exit 2) naming
    # op and opset; no lvvit-opt pass fixes it (onnx cannot convert an op from before it existed); the
    # report's fix, declaring opset 17 again, makes it pass.
    model = _model("LayerNormalization", 11, "/post_layernorm/LayerNormalization")
    src = tmp_path / "ln.onnx"
    onnx.save(model, src)
    refused = _atc(cli_runner, src, "--cann-version", "8.0.RC1")
    assert refused.exit_code == 2, refused.output
    assert "No Op registered for LayerNormalization with domain_version of 11" in refused.output
    assert "Name: /post_layernorm/LayerNormalization" in refused.output
    assert not (tmp_path / "ln.atc.log").exists()
    model.opset_import[0].version = 17
    onnx.save(model, src)
    assert check_readiness(src, "8.0").ok
    assert _atc(cli_runner, src, "--cann-version", "8.0.RC1").exit_code == 0


# ---- what only the installed operator library knows: ours passes, atc refuses, we report what it named --

def test_missing_soc_kernel_passes_ours_then_atc_names_the_op_like_msit(tmp_path, cli_runner, fake_tools, monkeypatch):
    # fail_EZ3003_AddDsl_310P3_cann-6.0.1: atc on a 310P3 found no kernel for AddDsl (an Ascend IR op, there
    # compiled with --singleop). No ONNX graph names AddDsl; the closest honest case is an ONNX Add, which is
    # in CANN's ONNX operator list, so ours (a per-CANN-version list) cannot know a SoC's kernel is missing.
    src = tmp_path / "add.onnx"
    onnx.save(_model("Add", 13, "add"), src)
    assert check_readiness(src, "6.0.1").ok and check_readiness(src, "8.0").ok
    monkeypatch.setenv("LVVIT_FAKE_ATC_FAIL", "fail_EZ3003_AddDsl_310P3_cann-6.0.1")
    monkeypatch.setenv("FAKE_ATC_PARTIAL", "1")  # atc first leaves a half-written add.om
    failed = _atc(cli_runner, src, "--cann-version", "6.0.1", soc="Ascend310P3")
    assert failed.exit_code == 1, failed.output
    for op_name, op_type in MSIT_MARKS["fail_EZ3003_AddDsl_310P3_cann-6.0.1"].items():
        # the error is one line with its whitespace folded (core.errors.one_line)
        assert f"EZ3003: No supported Ops kernel and engine are found for [{op_name}], optype [{op_type}]." \
               f" [op {op_name}, type {op_type}]" in " ".join(failed.output.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["add.atc.log", "add.onnx"]  # the half-written .om gone
    previous = tmp_path / "add.om"
    previous.write_bytes(b"the previous good .om")
    assert _atc(cli_runner, src, "--cann-version", "6.0.1", soc="Ascend310P3").exit_code == 1
    assert previous.read_bytes() == b"the previous good .om"
