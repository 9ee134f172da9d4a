"""CANN discovery and environment building; npu-smi parsing and SoC detection."""
from __future__ import annotations

import os
import shutil

import pytest

from fakes.ascend_env import FAKES_DIR, fake_tools, no_tools, write_tiny_onnx  # noqa: F401
from lvvit_opt.ascend import (build_cann_env, detect_soc_version, find_cann, find_tool,
                              seed_exports, soc_version_from_table)
from lvvit_opt.cli import main
from lvvit_opt.errors import UserError


def _toolkit(root, with_set_env: bool):
    home = root / "ascend-toolkit" / "latest"
    (home / "bin").mkdir(parents=True)
    if with_set_env:
        (root / "ascend-toolkit" / "set_env.sh").write_text(
            f'export ASCEND_TOOLKIT_HOME={home}\nexport ASCEND_OPP_PATH={home}/opp\n'
            f'export PATH={home}/bin:$PATH\n')
    return home


def test_find_cann_search_order(tmp_path):
    a, b, c = (tmp_path / n for n in "abc")
    for folder in (a, b, c):
        folder.mkdir()
    env = {"ASCEND_TOOLKIT_HOME": str(a), "install_path": str(b)}
    assert find_cann(c, env, default_home=None).home == c
    assert (find_cann(None, env, default_home=None).home, find_cann(None, env).source) == (a, "$ASCEND_TOOLKIT_HOME")
    assert find_cann(None, {"install_path": str(b)}, default_home=c).source == "$install_path"
    assert find_cann(None, {}, default_home=c).home == c
    assert find_cann(None, {"ASCEND_TOOLKIT_HOME": str(tmp_path / "gone")}, default_home=tmp_path / "no") is None
    with pytest.raises(UserError, match="--cann-home .*gone: no such directory"):
        find_cann(tmp_path / "gone", {})


def test_set_env_sh_is_sourced_in_a_child_shell(tmp_path):
    home = _toolkit(tmp_path, with_set_env=True)
    toolkit = find_cann(home, {})
    assert toolkit.set_env == tmp_path / "ascend-toolkit" / "set_env.sh"
    before = dict(os.environ)
    env = build_cann_env(toolkit, {"PATH": "/usr/bin:/bin", "KEEP": "me"})
    assert env["ASCEND_OPP_PATH"] == f"{home}/opp"
    assert env["PATH"].split(os.pathsep)[:2] == [f"{home}/bin", "/usr/bin"]
    assert env["KEEP"] == "me"
    assert dict(os.environ) == before


def test_seed_exports_without_set_env(tmp_path):
    home = _toolkit(tmp_path, with_set_env=False)
    toolkit = find_cann(None, {"install_path": str(home)}, default_home=None)
    assert toolkit.set_env is None
    env = build_cann_env(toolkit, {"PATH": "/usr/bin", "PYTHONPATH": "/p"})
    assert env == seed_exports(home, {"PATH": "/usr/bin", "PYTHONPATH": "/p"})
    assert env["PATH"] == f"{home}/atc/ccec_compiler/bin:{home}/atc/bin:/usr/bin"
    assert env["PYTHONPATH"] == f"{home}/atc/python/site-packages:/p"
    assert env["LD_LIBRARY_PATH"] == f"{home}/atc/lib64:{home}/acllib/lib64"
    assert (env["ASCEND_OPP_PATH"], env["ASCEND_AICPU_PATH"]) == (f"{home}/opp", str(home))


def test_find_tool_uses_the_given_path_then_extra_dirs(tmp_path):
    assert find_tool("atc", {"PATH": str(FAKES_DIR)}) == FAKES_DIR / "atc"
    assert find_tool("atc", {"PATH": str(tmp_path)}) is None
    assert find_tool("benchmark.x86_64", {"PATH": ""}, extra_dirs=[FAKES_DIR]) == FAKES_DIR / "benchmark.x86_64"


def test_atc_verb_finds_atc_through_cann_home_only(tmp_path, cli_runner, no_tools, monkeypatch):
    home = _toolkit(tmp_path, with_set_env=True)
    shutil.copy(FAKES_DIR / "atc", home / "bin" / "atc")
    shutil.copytree(FAKES_DIR / "python", home / "bin" / "python")
    model = write_tiny_onnx(tmp_path / "m.onnx", batch=1)
    result = cli_runner.invoke(main, ["atc", model, "--soc-version", "Ascend310", "--cann-home", str(home)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.om").is_file()
    assert "ascend-toolkit" not in os.environ["PATH"]


# ---- npu-smi -------------------------------------------------------------------------------

# Parsing of real npu-smi tables: tests/test_ascend_real_outputs.py.

def test_detect_from_the_stand_in_npu_smi(fake_tools, monkeypatch):
    assert detect_soc_version() == "Ascend310"
    monkeypatch.setenv("FAKE_NPU_NAME", "910B3")
    assert detect_soc_version() == "Ascend910B3"


def test_detect_reports_a_broken_driver(fake_tools, monkeypatch):
    monkeypatch.setenv("FAKE_NPU_SMI_FAIL", "1")
    with pytest.raises(UserError) as failure:
        detect_soc_version()
    assert str(failure.value) == ("cannot detect the SoC: `npu-smi info` failed (dcmi module initialize failed. "
                                  "ret is -8005); pass --soc-version, e.g. --soc-version Ascend310")


def test_empty_table_asks_for_soc_version():
    with pytest.raises(UserError, match="`npu-smi info` printed no NPU rows .*; pass --soc-version"):
        soc_version_from_table("+----+\n| NPU Name | Health |\n+====+\n")
