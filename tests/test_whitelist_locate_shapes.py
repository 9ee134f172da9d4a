"""Locating transpose.py from the environment, and Transpose shapes from ONNX graphs."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from lvvit_opt.cli import main
from lvvit_opt.core.errors import UserError
from lvvit_opt.whitelist import check_shapes, locate_transpose_py, shapes_from_model, transpose_shapes

FIXTURE = Path(__file__).parent / "fixtures" / "transpose" / "transpose_whitelist_era.py"
OLD = "op_impl/built-in/ai_core/tbe/impl/dynamic/transpose.py"
NEW = "built-in/op_impl/ai_core/tbe/impl/dynamic/transpose.py"


def _install(opp: Path, layout: str) -> Path:
    path = opp / layout
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FIXTURE, path)
    return path


def test_explicit_file_wins(tmp_path):
    path = _install(tmp_path / "opp", OLD)
    assert locate_transpose_py(path, environ={}, default_toolkit=None) == path
    with pytest.raises(UserError, match="no such file"):
        locate_transpose_py(tmp_path / "nope.py", environ={}, default_toolkit=None)


@pytest.mark.parametrize("layout", [OLD, NEW])
def test_ascend_opp_path_both_layouts(tmp_path, layout):
    path = _install(tmp_path / "opp", layout)
    assert locate_transpose_py(environ={"ASCEND_OPP_PATH": str(tmp_path / "opp")}, default_toolkit=None) == path


@pytest.mark.parametrize("variable", ["ASCEND_TOOLKIT_HOME", "install_path"])
@pytest.mark.parametrize("arch", ["", "x86_64-linux", "aarch64-linux", "arm64-linux"])
def test_toolkit_roots_and_arch_subroots(tmp_path, variable, arch):
    root = tmp_path / "ascend-toolkit" / "5.0.2"
    path = _install(root / arch / "opp", OLD)
    assert locate_transpose_py(environ={variable: str(root)}, default_toolkit=None) == path


def test_default_toolkit_root(tmp_path):
    path = _install(tmp_path / "latest" / "x86_64-linux" / "opp", OLD)
    assert locate_transpose_py(environ={}, default_toolkit=tmp_path / "latest") == path


def test_ascend_opp_path_beats_toolkit_roots(tmp_path):
    """atc reads $ASCEND_OPP_PATH, so a patched copy placed there is the one to check."""
    _install(tmp_path / "toolkit" / "opp", OLD)
    mine = _install(tmp_path / "copy" / "opp", NEW)
    env = {"ASCEND_OPP_PATH": str(tmp_path / "copy" / "opp"), "ASCEND_TOOLKIT_HOME": str(tmp_path / "toolkit")}
    assert locate_transpose_py(environ=env, default_toolkit=None) == mine


def test_symlinked_latest_is_one_candidate(tmp_path):
    path = _install(tmp_path / "5.0.2" / "opp", OLD)
    (tmp_path / "latest").symlink_to(tmp_path / "5.0.2")
    env = {"ASCEND_TOOLKIT_HOME": str(tmp_path / "latest"), "install_path": str(tmp_path / "5.0.2")}
    assert locate_transpose_py(environ=env, default_toolkit=None).resolve() == path.resolve()


def test_several_candidates_are_listed(tmp_path):
    a = _install(tmp_path / "tk" / "x86_64-linux" / "opp", OLD)
    b = _install(tmp_path / "tk" / "aarch64-linux" / "opp", OLD)
    with pytest.raises(UserError) as info:
        locate_transpose_py(environ={"ASCEND_TOOLKIT_HOME": str(tmp_path / "tk")}, default_toolkit=None)
    assert str(info.value) == ("several CANN transpose.py files found; pick one with --file:\n"
                               f"  {a}   ($ASCEND_TOOLKIT_HOME)\n  {b}   ($ASCEND_TOOLKIT_HOME)")


def test_none_found_says_where_it_looked(tmp_path):
    with pytest.raises(UserError) as info:
        locate_transpose_py(environ={"ASCEND_OPP_PATH": str(tmp_path / "opp")}, default_toolkit=tmp_path / "tk")
    lines = str(info.value).splitlines()
    assert lines[0] == ("no CANN transpose.py found; pass --file PATH or set ASCEND_OPP_PATH (source set_env.sh). "
                        "Looked in:")
    assert lines[1:4] == [f"  {tmp_path}/opp/{OLD}", f"  {tmp_path}/opp/{NEW}", f"  {tmp_path}/tk/opp/{OLD}"]
    assert f"  {tmp_path}/tk/arm64-linux/opp/{NEW}" in lines
    assert len(lines) == 1 + 2 + 8


def test_cli_check_finds_file_from_environment(tmp_path, monkeypatch):
    _install(tmp_path / "opp", NEW)
    monkeypatch.setenv("ASCEND_OPP_PATH", str(tmp_path / "opp"))
    result = CliRunner().invoke(main, ["whitelist", "check", "--shape", "768,197,197", "--json", "-"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["result"]["file"] == str(tmp_path / "opp" / NEW)


# ------------------------------------------------------------------------------ graph shapes

def _softmax_graph(batch, heads=6, tokens=197, with_perm=True) -> onnx.ModelProto:
    """x -> Transpose(0,3,2,1) -> Softmax(axis=1) -> Transpose(0,3,2,1) -> Transpose(default) -> y."""
    shape = [batch, heads, tokens, tokens]
    perm = {"perm": [0, 3, 2, 1]} if with_perm else {}
    nodes = [helper.make_node("Transpose", ["x"], ["t"], name="attn0_pre", **perm),
             helper.make_node("Softmax", ["t"], ["s"], axis=1),
             helper.make_node("Transpose", ["s"], ["u"], name="attn0_post", **perm),
             helper.make_node("Transpose", ["u"], ["y"], name="reverse")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_shapes_after_inference_with_perm_and_count(tmp_path):
    model = _softmax_graph(16)
    uses = transpose_shapes(model)
    assert [u.to_dict() for u in uses] == [
        {"shape": [16, 6, 197, 197], "perm": [0, 3, 2, 1], "count": 1, "static": True, "created": True,
         "origin": "added by softmax_transpose", "nodes": ["attn0_pre"]},
        {"shape": [16, 197, 197, 6], "perm": [0, 3, 2, 1], "count": 1, "static": True, "created": True,
         "origin": "added by softmax_transpose", "nodes": ["attn0_post"]},
        {"shape": [16, 6, 197, 197], "perm": [3, 2, 1, 0], "count": 1, "static": True, "created": False,
         "origin": "in the model before", "nodes": ["reverse"]},
    ]
    assert shapes_from_model(model) == [(16, 6, 197, 197), (16, 197, 197, 6)]


def test_repeated_blocks_are_counted(tmp_path):
    model = _softmax_graph(1)
    extra = [helper.make_node("Transpose", ["u"], [f"z{i}"], name=f"again{i}", perm=[3, 2, 1, 0]) for i in range(3)]
    model.graph.node.extend(extra)
    uses = {(u.shape, u.perm): u.nodes for u in transpose_shapes(model)}
    # an explicit perm equal to the default one is the same use as "reverse"
    assert uses[((1, 6, 197, 197), (3, 2, 1, 0))] == ["reverse", "again0", "again1", "again2"]


def test_dynamic_batch_is_reported_not_skipped(tmp_path):
    path = tmp_path / "dyn.onnx"
    onnx.save(_softmax_graph("N"), path)
    uses = transpose_shapes(path)
    assert [(u.shape, u.static) for u in uses] == [(("N", 6, 197, 197), False), (("N", 197, 197, 6), False),
                                                   (("N", 6, 197, 197), False)]
    with pytest.raises(UserError, match=r"no Transpose input shape is static \(3 dynamic\)"):
        shapes_from_model(path)
    result = CliRunner().invoke(main, ["whitelist", "shapes", str(path)])
    assert result.exit_code == 0
    assert result.output.splitlines()[1] == ("N,6,197,197  0,3,2,1      1  added by softmax_transpose  NO ('N' is "
                                             "input x dim 0: fix it with apply --passes fix_shapes)")


def test_cli_shapes_json_and_table(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_softmax_graph(16), path)
    result = CliRunner().invoke(main, ["whitelist", "shapes", str(path), "--json", "-"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)["result"]
    assert [(t["shape"], t["perm"], t["count"]) for t in data["transposes"]] == [
        ([16, 6, 197, 197], [0, 3, 2, 1], 1), ([16, 197, 197, 6], [0, 3, 2, 1], 1), ([16, 6, 197, 197], [3, 2, 1, 0], 1)]
    table = CliRunner().invoke(main, ["whitelist", "shapes", str(path)]).output.splitlines()
    assert table[0] == "input shape   perm     nodes  origin                      static"
    assert table[1] == "16,6,197,197  0,3,2,1      1  added by softmax_transpose  yes"
    assert table[3] == "16,6,197,197  3,2,1,0      1  in the model before         yes"
    assert table[4] == "to whitelist: 16,6,197,197 16,197,197,6"
    assert data["whitelist_shapes"] == [[16, 6, 197, 197], [16, 197, 197, 6]]


def test_cli_shapes_bad_model_exits_2(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    result = CliRunner().invoke(main, ["whitelist", "shapes", str(bad)])
    assert result.exit_code == 2 and result.output.startswith(f"error: {bad}: not a readable ONNX model")


def test_from_model_patch_and_check(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_softmax_graph(16), path)
    target = _install(tmp_path / "opp", OLD)
    runner = CliRunner()
    assert runner.invoke(main, ["whitelist", "patch", "--file", str(target), "--from-model", str(path)]).exit_code == 0
    assert all(s.fast for s in check_shapes(target, [(16, 6, 197, 197), (16, 197, 197, 6)]).selections)


def test_whitelist_cli_does_not_import_torch():
    code = ("import sys; from lvvit_opt.cli import main; import lvvit_opt.whitelist; "
            "from lvvit_opt.whitelist import patch, check, locate, source; "
            "print(sorted(m for m in ('torch', 'timm', 'onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "torch" not in out and "timm" not in out
