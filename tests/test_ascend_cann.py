"""CANN discovery and environment building; npu-smi parsing and SoC detection."""
from __future__ import annotations

import os
import shutil

import pytest

from fakes.ascend_env import FAKES_DIR, fake_tools, no_tools, write_tiny_onnx  # noqa: F401
from lvvit_opt.ascend import (build_cann_env, detect_soc_version, find_cann, find_tool, seed_exports,
                              soc_version_from_table)
from lvvit_opt.cli import main
from lvvit_opt.core.errors import UserError


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


def test_set_env_that_stops_early_still_gives_what_it_exported(tmp_path, caplog):
    # One CANN release's set_env.sh runs under its own `set -e` and stops midway on an empty
    # /etc/ascend_install.info (reported in a public vLLM launcher script); others may `exit`.
    script = tmp_path / "set_env.sh"
    script.write_text("set -e\nexport ASCEND_TOOLKIT_HOME=/opt/cann\nfalse\nexport AFTER=1\n")
    from lvvit_opt.core.cann import source_set_env

    env = source_set_env(script, {"PATH": "/usr/bin:/bin"})
    # sourced as `source ... || true`, its own `set -e` no longer ends the shell: the rest of it runs too
    assert (env["ASCEND_TOOLKIT_HOME"], env["AFTER"]) == ("/opt/cann", "1")
    script.write_text("export ASCEND_OPP_PATH=/opt/cann/opp\nexit 3\n")
    env = source_set_env(script, {"PATH": "/usr/bin:/bin"})
    assert env["ASCEND_OPP_PATH"] == "/opt/cann/opp"
    assert "stopped with exit 3" in caplog.text


def test_set_env_referencing_unset_variables_under_nounset(tmp_path):
    script = tmp_path / "set_env.sh"
    script.write_text("set -u\nexport LD_LIBRARY_PATH=/opt/cann/lib64:$LD_LIBRARY_PATH\nexport DONE=1\n")
    from lvvit_opt.core.cann import source_set_env

    env = source_set_env(script, {"PATH": "/usr/bin:/bin"})
    assert "DONE" not in env  # bash stops at the unset variable; what came before is kept, nothing invented


def test_exports_for_an_8x_tree_match_the_real_set_env(tmp_path):
    # what sourcing the real 8.1.RC1 set_env.sh (tests/fixtures/ascend/cann/) gives, for a tree without one
    from fakes.ascend_env import FIXTURES_DIR
    from lvvit_opt.core.cann import source_set_env, toolkit_exports

    home = tmp_path / "ascend-toolkit" / "latest"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "atc").write_text("#!/bin/sh\n")
    script = tmp_path / "set_env.sh"
    script.write_text((FIXTURES_DIR / "cann" / "set_env-8.1.RC1.sh").read_text().replace(
        "/usr/local/Ascend/ascend-toolkit/latest", str(home)))
    base = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": "/l", "PYTHONPATH": "/p"}
    sourced, ours = source_set_env(script, base), toolkit_exports(home, base)
    for name in ("PATH", "LD_LIBRARY_PATH", "PYTHONPATH", "ASCEND_TOOLKIT_HOME", "ASCEND_OPP_PATH",
                 "ASCEND_AICPU_PATH", "TOOLCHAIN_HOME", "ASCEND_HOME_PATH"):
        assert ours[name] == sourced[name], name


def test_exports_for_an_8x_tree_without_set_env(tmp_path):
    home = tmp_path / "ascend-toolkit" / "8.1.RC1"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "atc").write_text("#!/bin/sh\n")
    (home / "compiler").mkdir()
    from lvvit_opt.core.cann import toolkit_exports

    env = toolkit_exports(home, {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/l"})
    assert env["PATH"] == f"{home}/bin:{home}/compiler/ccec_compiler/bin:{home}/tools/ccec_compiler/bin:/usr/bin"
    assert env["ASCEND_OPP_PATH"] == f"{home}/opp" and env["ASCEND_HOME_PATH"] == str(home)
    assert env["LD_LIBRARY_PATH"].split(":")[:3] == [f"{home}/tools/aml/lib64", f"{home}/tools/aml/lib64/plugin",
                                                     f"{home}/lib64"] and env["LD_LIBRARY_PATH"].endswith(":/l")
    assert env["PYTHONPATH"] == f"{home}/python/site-packages:{home}/opp/built-in/op_impl/ai_core/tbe"


def test_non_root_install_under_home_is_found(tmp_path, monkeypatch):
    home = tmp_path / "Ascend" / "ascend-toolkit" / "latest"
    (home / "bin").mkdir(parents=True)
    (tmp_path / "Ascend" / "ascend-toolkit" / "set_env.sh").write_text(f"export ASCEND_TOOLKIT_HOME={home}\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    from lvvit_opt.core.cann import cann_environment

    base = {"PATH": "/usr/bin:/bin"}
    assert cann_environment(None, base)["ASCEND_TOOLKIT_HOME"] == str(home)
    assert find_cann(None, {"ASCEND_HOME_PATH": str(home)}, default_home=None).source == "$ASCEND_HOME_PATH"
