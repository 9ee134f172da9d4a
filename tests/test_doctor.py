"""`lvvit-opt doctor`: every check on a reconstructed CANN 8.1 tree (tests/fakes/cann_tree.py,
real install files from tests/fixtures/ascend/cann/), with the stand-in tools, and with nothing."""
from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path

import pytest

from fakes.ascend_env import FAKE_PYTHON, fake_ais_bench, fake_tools, no_tools  # noqa: F401
from fakes.cann_tree import CANN_FIXTURES, build_cann_tree
from lvvit_opt.ascend import doctor
from lvvit_opt.core.cann import build_cann_env, find_cann
from lvvit_opt.ascend.doctor import cann_version, driver_version, read_key_values, run_doctor

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "lvvit_golden.onnx"
GOLDEN_SHAPES = "2,48,196 2,197,3,3,16 2,3,197,16"


def _lines(report) -> list[str]:
    return report.format_lines()


def _disk_line(lines: list[str], workdir) -> str:
    disk = [line for line in lines if " disk space " in line]
    assert len(disk) == 1 and re.fullmatch(rf"\[ok\]   disk space    \d+\.\d GiB free in {re.escape(str(workdir))}",
                                           disk[0]), disk
    return disk[0]


# ---------------------------------------------------------------- version files

def test_cann_version_from_the_real_81_install_files(tmp_path):
    tree = build_cann_tree(tmp_path)
    version = cann_version(tree.latest)
    assert version.version == "8.1.RC1"
    assert version.source == tree.latest / "aarch64-linux" / "ascend_toolkit_install.info"
    assert version.components == {"compiler": "7.7.0.1.238", "opp": "7.7.0.1.238"}
    assert not version.mixed


def test_cann_version_from_version_cfg_of_an_80_image(tmp_path):
    home = tmp_path / "latest"
    home.mkdir()
    (home / "version.cfg").write_text((CANN_FIXTURES / "version-8.0.T63.cfg").read_text())
    version = cann_version(home)
    assert (version.version, version.source.name) == ("8.0.T63", "version.cfg")


def test_cann_version_from_component_version_dir_and_mixed_components(tmp_path):
    home = tmp_path / "8.1.RC1"
    for name, text in (("compiler", "Version=7.7.0.1.238\nversion_dir=8.1.RC1\n"),
                       ("opp", "Version=7.6.0.1.220\r\nversion_dir=8.0.0\r\n")):
        (home / name).mkdir(parents=True)
        (home / name / "version.info").write_text(text)
    version = cann_version(home)
    assert (version.version, version.source) == ("8.1.RC1", home / "compiler" / "version.info")
    assert version.mixed and version.components == {"compiler": "7.7.0.1.238", "opp": "7.6.0.1.220"}
    assert cann_version(tmp_path / "empty") == doctor.CannVersion(None, None, {})


def test_read_key_values_bom_crlf_quotes_comments(tmp_path):
    path = tmp_path / "x.info"
    path.write_bytes(b'\xef\xbb\xbf# comment\r\nVersion=1.2\r\nrequired="7.7"\r\nno equals\r\nVersion=ignored\r\n')
    assert read_key_values(path) == {"version": "1.2", "required": "7.7"}
    assert read_key_values(tmp_path / "missing") == {}


def test_driver_version_of_a_table_without_its_version_line_comes_from_version_info(tmp_path):
    # real table pasted without its first line (tests/fixtures/ascend/npu-smi/info, vllm-ascend issue 2534)
    table = Path(__file__).resolve().parent / "fixtures" / "ascend" / "npu-smi" / "info" / \
        "Ascend910-A3_no-version-line_vllm-ascend-2534.txt"
    tree = build_cann_tree(tmp_path, driver_info="driver-version-24.1.rc1.info")
    assert driver_version(table.read_text(), tree.driver_dir) == ("24.1.rc1", str(tree.driver_dir / "version.info"))
    with_line = table.with_name("Ascend910-A3_25.3.rc1_vllm-ascend-5588.txt")
    assert driver_version(with_line.read_text(), tree.driver_dir) == ("25.3.rc1", "npu-smi info")


def test_driver_version_from_npu_smi_header_then_version_info(tmp_path):
    # header line format of `npu-smi info` (issue 11: "Version: 23.0.rc1")
    header = "| npu-smi 23.0.rc1                 Version: 23.0.rc1                                    |"
    assert driver_version(header, tmp_path) == ("23.0.rc1", "npu-smi info")
    tree = build_cann_tree(tmp_path / "a")
    assert driver_version(None, tree.driver_dir) == ("24.1.rc2.2", str(tree.driver_dir / "version.info"))
    tree = build_cann_tree(tmp_path / "b", driver_info="driver-version-24.1.rc1.info")
    assert driver_version("no header here", tree.driver_dir)[0] == "24.1.rc1"  # no package_version line: Version=
    assert driver_version(None, tmp_path / "none") == (None, None)


# ---------------------------------------------------------------- whole reports

def test_nothing_installed(no_tools, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(os.sys.executable).parent), "/usr/bin", "/bin"]))
    none = tmp_path / "none"
    report = run_doctor(default_homes=[none], driver_dir=none, workdir=tmp_path, npu_smi_dirs=[])
    lines = _lines(report)
    disk = _disk_line(lines, tmp_path)
    assert lines == [
        f"[FAIL] CANN toolkit  not found (looked in $ASCEND_TOOLKIT_HOME, $ASCEND_HOME_PATH, $install_path, {none})",
        "                     fix: install the CANN toolkit (Ascend-cann-toolkit_<version>_linux-<arch>.run "
        "--install), or pass --cann-home DIR",
        "[FAIL] set_env.sh    not in effect: ASCEND_TOOLKIT_HOME, ASCEND_OPP_PATH, PYTHONPATH, LD_LIBRARY_PATH "
        "are not set for the toolkit",
        "                     fix: install the CANN toolkit, then: source /usr/local/Ascend/ascend-toolkit/set_env.sh",
        "[FAIL] atc           not found on PATH",
        "                     fix: install the CANN toolkit (atc is in its compiler component), then: "
        "source /usr/local/Ascend/ascend-toolkit/set_env.sh",
        "[FAIL] npu-smi       not found on PATH (no Ascend driver here)",
        "                     fix: install the Ascend driver and firmware (npu-smi comes with the driver); in a "
        "container, mount /usr/local/bin/npu-smi, /usr/local/Ascend/driver and the /dev/davinci* devices",
        f"[FAIL] NPU driver    version unknown (no npu-smi header, no {none}/version.info)",
        "                     fix: install the Ascend NPU driver (Ascend-hdk-<chip>-npu-driver_<version>_linux-<arch>.run)",
        "[FAIL] .om runner    ais_bench not importable (ModuleNotFoundError: No module named 'ais_bench') and "
        "benchmark.x86_64 not found",
        "                     fix: install ais_bench (build the aclruntime and ais_bench wheels from Ascend/msit, "
        "then pip install both), or put benchmark.x86_64 on PATH",
        "[FAIL] transpose.py  no CANN transpose.py found",
        "                     fix: install the CANN toolkit, then: source /usr/local/Ascend/ascend-toolkit/set_env.sh "
        "(or pass --transpose-file PATH)",
        disk,
        "not ready: 7 check(s) failed: CANN toolkit, set_env.sh, atc, npu-smi, NPU driver, .om runner, transpose.py",
        "works here: export, apply, validate, golden, debug layers, whitelist shapes/check/patch (a copied "
        "transpose.py), bench and eval on onnxruntime, tune --target ort-cpu, run (writes atc_commands.sh)",
        "needs the Ascend host: atc (the .om), bench/eval of an .om (ais_bench or benchmark), npu-smi, "
        "patching the installed transpose.py, tune --target ascend",
    ]
    assert report.to_dict()["scope"] == lines[-2:]
    assert not report.ok and [c.key for c in report.failed] == [
        "cann", "environment", "atc", "npu", "driver", "runner", "transpose"]


def _sourced_env(tree, extra_pythonpath: str | None = None) -> dict:
    """The environment after `source <tree>/ascend-toolkit/set_env.sh` (really sourced, in bash)."""
    base = dict(os.environ)
    if extra_pythonpath:
        base["PYTHONPATH"] = extra_pythonpath
    return build_cann_env(find_cann(tree.latest, base), base)


def test_ready_host_with_the_stand_ins(fake_ais_bench, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("LVVIT_FAKE_NPU_SMI", "310P3_24.1.0.1_3chips")  # real table: tests/fixtures/ascend/
    tree = build_cann_tree(tmp_path / "Ascend")
    env = _sourced_env(tree)
    work = tmp_path / "work"
    work.mkdir()
    report = run_doctor(environ=env, default_homes=[], driver_dir=tree.driver_dir, workdir=work, model=GOLDEN)
    lines = _lines(report)
    latest, real = tree.latest, tree.versioned
    fakes = Path(fake_ais_bench).parent
    assert lines[0] == f"[ok]   CANN toolkit  8.1.RC1 at {latest} -> {real} (aarch64-linux/ascend_toolkit_install.info)"
    assert lines[1] == ("[ok]   set_env.sh    ASCEND_TOOLKIT_HOME, ASCEND_OPP_PATH, PYTHONPATH, LD_LIBRARY_PATH "
                        "point at the toolkit")
    assert lines[2] == f"[ok]   atc           {fakes / 'atc'}"
    assert lines[3] == "[ok]   npu-smi       Ascend310P3 (3 NPU(s): 0,32,96)"
    assert re.fullmatch(r"\[ok\]   NPU driver    \S+ \(from npu-smi info\)", lines[4])
    assert lines[5] == "[ok]   .om runner    ais_bench version unknown (importable)"
    assert lines[6] == f"[ok]   transpose.py  {latest}/opp/built-in/op_impl/ai_core/tbe/impl/dynamic/transpose.py " \
                       "(black-list era, writable)"
    assert lines[7] == "[ok]   model shapes  lvvit_golden.onnx: all 3 Transpose shape(s) (0 added by softmax_transpose) get the fast Transpose kernel"
    _disk_line(lines[8:9], work)
    assert lines[9].startswith("[ok]   AIPP, gears   no static AIPP as is: ") and lines[9].endswith(
        "static batch 2: batch gears need `lvvit-opt export --dynamic-batch`")  # informational, never a failure
    assert lines[10:] == ["ready: this host can run the whole pipeline"]
    assert report.ok and report.get("cann").details["components"] == {"compiler": "7.7.0.1.238", "opp": "7.7.0.1.238"}
    assert report.get("npu").details["soc_version"] == "Ascend310P3"


def test_installed_but_set_env_not_sourced(no_tools, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.delenv("PYTHONPATH", raising=False)
    tree = build_cann_tree(tmp_path / "Ascend", with_atc=True)
    report = run_doctor(default_homes=[tree.latest], driver_dir=tree.driver_dir, workdir=tmp_path)
    lines = _lines(report)
    assert lines[:5] == [
        f"[ok]   CANN toolkit  8.1.RC1 at {tree.latest} -> {tree.versioned} (aarch64-linux/ascend_toolkit_install.info)",
        "[FAIL] set_env.sh    not in effect: ASCEND_TOOLKIT_HOME, ASCEND_OPP_PATH, PYTHONPATH, LD_LIBRARY_PATH "
        "are not set for the toolkit",
        f"                     fix: source {tree.set_env}",
        f"[ok]   atc           {tree.latest}/bin/atc (found after sourcing set_env.sh, which lvvit-opt does for atc)",
        "[FAIL] npu-smi       not found on PATH (no Ascend driver here)",
    ]
    assert lines[6] == f"[ok]   NPU driver    24.1.rc2.2 (from {tree.driver_dir}/version.info)"
    assert lines[9] == f"[ok]   transpose.py  {tree.transpose_via_latest} (black-list era, writable)"
    assert report.get("cann").details["set_env"] == str(tree.set_env)


def test_partly_sourced_environment_names_what_is_missing(no_tools, tmp_path):  # noqa: F811
    tree = build_cann_tree(tmp_path / "Ascend")
    env = {"PATH": os.environ["PATH"], "ASCEND_TOOLKIT_HOME": str(tree.latest),
           "ASCEND_OPP_PATH": str(tree.latest / "opp"), "LD_LIBRARY_PATH": f"/usr/lib:{tree.versioned}/lib64"}
    check = doctor.check_environment(find_cann(tree.latest, env), env)
    assert (check.status, check.summary, check.fix) == (
        "fail", "not in effect: PYTHONPATH is not set for the toolkit", f"source {tree.set_env}")


def test_toolkit_without_set_env_gets_the_export_lines(no_tools, tmp_path):  # noqa: F811
    tree = build_cann_tree(tmp_path / "Ascend")
    tree.set_env.unlink()
    check = doctor.check_environment(find_cann(tree.latest, {}), {"PATH": "/usr/bin"})
    home = tree.latest
    assert check.fix == (
        f'this install has no set_env.sh; run: export ASCEND_AICPU_PATH="{home}"; export ASCEND_HOME_PATH="{home}"; '
        f'export ASCEND_OPP_PATH="{home}/opp"; export ASCEND_TOOLKIT_HOME="{home}"; '
        f'export LD_LIBRARY_PATH="{home}/tools/aml/lib64:{home}/tools/aml/lib64/plugin:{home}/lib64:'
        f'{home}/lib64/plugin/opskernel:{home}/lib64/plugin/nnengine:'
        f'{home}/opp/built-in/op_impl/ai_core/tbe/op_tiling/lib/linux/{platform.machine()}:'
        f'$LD_LIBRARY_PATH"; export PATH="{home}/bin:{home}/compiler/ccec_compiler/bin:'
        f'{home}/tools/ccec_compiler/bin:$PATH"; '
        f'export PYTHONPATH="{home}/python/site-packages:{home}/opp/built-in/op_impl/ai_core/tbe:$PYTHONPATH"; '
        f'export TOOLCHAIN_HOME="{home}/toolkit"')


def test_whitelist_era_model_shapes_fail_until_patched(no_tools, tmp_path):  # noqa: F811
    from lvvit_opt.whitelist import patch_file, shapes_from_model

    tree = build_cann_tree(tmp_path / "Ascend", era="whitelist")
    env = {"PATH": os.environ["PATH"], "ASCEND_OPP_PATH": str(tree.latest / "opp")}
    checks = doctor.check_transpose(None, None, env, GOLDEN)
    assert [(c.status, c.summary, c.fix) for c in checks] == [
        ("ok", f"{tree.transpose_via_latest} (white-list era, writable)", None),
        ("fail", f"lvvit_golden.onnx: 3 of 3 Transpose shape(s) (0 added by softmax_transpose) fall back to TransposeD: {GOLDEN_SHAPES}",
         f"lvvit-opt whitelist patch --from-model {GOLDEN}")]
    patch_file(str(tree.transpose), shapes_from_model(str(GOLDEN)))
    checks = doctor.check_transpose(None, None, env, GOLDEN)
    assert checks[1].status == "ok" and checks[1].details["shapes"][0]["rule"] == "exact"


def test_dynamic_batch_model_fails_with_the_fix_shapes_command(no_tools, tmp_path):  # noqa: F811
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, 197, 197])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 197, 197, 6])
    graph = helper.make_graph([helper.make_node("Transpose", ["x"], ["y"], perm=[0, 3, 2, 1])], "g", [x], [y])
    model = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), model)
    tree = build_cann_tree(tmp_path / "Ascend")
    checks = doctor.check_transpose(None, None, {"ASCEND_OPP_PATH": str(tree.latest / "opp")}, model)
    assert (checks[1].status, checks[1].summary, checks[1].fix) == (
        "fail", "dyn.onnx: no Transpose input shape is static (dynamic batch)",
        f"lvvit-opt apply {model} -o dyn_bs16.onnx --passes fix_shapes --batch-size 16 (the batch you will compile)")


def test_read_only_whitelist_era_file_is_a_warning_with_the_way_out(no_tools, tmp_path, monkeypatch):  # noqa: F811
    tree = build_cann_tree(tmp_path / "Ascend", era="whitelist")
    monkeypatch.setattr(doctor, "_writable", lambda path: False)  # tests run as root: chmod would not bite
    env = {"ASCEND_OPP_PATH": str(tree.latest / "opp")}
    checks = doctor.check_transpose(None, None, env, GOLDEN)
    assert (checks[0].status, checks[0].summary) == ("warn", f"{tree.transpose_via_latest} (white-list era, read-only)")
    assert checks[0].fix == ("white-list era: `lvvit-opt whitelist patch` must write this file as its owner (e.g. "
                             "sudo), or patch a copy with --output and point ASCEND_OPP_PATH at it")
    assert checks[1].fix.startswith(f"lvvit-opt whitelist patch --from-model {GOLDEN} as its owner")
    tree2 = build_cann_tree(tmp_path / "Ascend2")  # black-list era: read-only does not matter
    assert doctor.check_transpose(None, None, {"ASCEND_OPP_PATH": str(tree2.latest / "opp")}, None)[0].status == "ok"


def test_unrecognised_transpose_py_is_a_warning(no_tools, tmp_path):  # noqa: F811
    tree = build_cann_tree(tmp_path / "Ascend")
    tree.transpose.write_text("def something_else():\n    return 1\n")
    checks = doctor.check_transpose(None, None, {"ASCEND_OPP_PATH": str(tree.latest / "opp")}, GOLDEN)
    assert [c.status for c in checks] == ["warn", "warn"]
    assert "lvvit-opt inspect MODEL.om" in checks[0].fix


def test_npu_smi_that_cannot_reach_the_driver(fake_tools, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("FAKE_NPU_SMI_FAIL", "1")
    check, text = doctor.check_npu(dict(os.environ))
    assert (check.status, check.summary, text) == (
        "fail", "`npu-smi info` failed: dcmi module initialize failed. ret is -8005", None)
    assert "/dev/davinci_manager" in check.fix


def test_npu_smi_in_sbin_but_not_on_path_is_a_warning(no_tools, tmp_path, monkeypatch):  # noqa: F811
    from fakes.ascend_env import FAKES_DIR

    monkeypatch.setenv("FAKE_NPU_NAME", "310P3")
    sbin = tmp_path / "sbin"
    sbin.mkdir()
    (sbin / "npu-smi").symlink_to(FAKES_DIR / "npu-smi")
    check, text = doctor.check_npu(dict(os.environ), [sbin])
    assert (check.status, check.summary, check.fix) == (
        "warn", f"Ascend310P3 (1 NPU(s): 24); {sbin}/npu-smi is not on PATH (--soc-version auto needs it)",
        f"export PATH={sbin}:$PATH")
    assert "Version:" in text


def test_seed_style_exports_count_as_set_env(no_tools, tmp_path):  # noqa: F811
    from lvvit_opt.core.cann import seed_exports

    tree = build_cann_tree(tmp_path / "Ascend")
    (tree.versioned / "atc" / "python" / "site-packages").mkdir(parents=True)
    env = seed_exports(tree.latest, {"PATH": "/usr/bin"})
    env["ASCEND_TOOLKIT_HOME"] = str(tree.latest)
    assert doctor.check_environment(find_cann(None, env, default_home=None), env).status == "ok"


def test_ambiguous_910_name_fails_with_the_candidates(fake_tools, monkeypatch):  # noqa: F811
    # real 910-A3 table (tests/fixtures/ascend/npu-smi/info, vllm-ascend issue 5588) whose Name is `Ascend910`;
    # the stand-in has no board / mapping answer, so the SoC stays ambiguous
    monkeypatch.setenv("LVVIT_FAKE_NPU_SMI", "Ascend910-A3_25.3.rc1_vllm-ascend-5588")
    check, text = doctor.check_npu(dict(os.environ), [])
    assert check.status == "fail"
    assert check.summary == ("1 NPU(s) listed, but no SoC for atc: cannot tell atc's --soc_version from NPU 0's name "
                             "'Ascend910' in `npu-smi info`; candidates: Ascend910_9392 (or another "
                             "Ascend910_<NPU Name>)")
    assert check.fix.startswith("pass --soc-version with the right one, e.g. --soc-version Ascend910_9392")
    assert doctor.check_driver(text, "/nonexistent").summary == "25.3.rc1 (from npu-smi info)"


def test_atc_that_cannot_load_its_libraries(no_tools, tmp_path):  # noqa: F811
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    atc = bin_dir / "atc"
    atc.write_text("#!/bin/sh\necho 'atc.bin: error while loading shared libraries: libge_common.so: cannot open "
                   "shared object file: No such file or directory' >&2\nexit 127\n")
    atc.chmod(0o755)
    check = doctor.check_atc(None, {"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert check.status == "fail"
    assert check.summary == (f"{atc} does not run: atc.bin: error while loading shared libraries: libge_common.so: "
                             "cannot open shared object file: No such file or directory")
    assert check.fix == "install the CANN toolkit, then: source /usr/local/Ascend/ascend-toolkit/set_env.sh"


def test_legacy_benchmark_binary_counts_as_a_runner(fake_tools, tmp_path):  # noqa: F811
    check = doctor.check_runner(None, dict(os.environ), tmp_path)
    assert check.status == "ok" and re.fullmatch(r"benchmark\.\w+ at .*fakes/benchmark\.\w+ \(ais_bench not "
                                                 r"importable\)", check.summary)


def test_disk_space_too_small_and_missing_workdir(tmp_path):
    check = doctor.check_disk(tmp_path / "not" / "yet", 1e9)
    assert check.status == "fail"
    assert re.fullmatch(rf"\d+\.\d GiB free in {re.escape(str(tmp_path))} \(atc needs about 1e\+09 GiB\)", check.summary)
    assert check.fix == "free space there, or run from (pass --workdir) a larger disk"


def test_workdir_that_is_a_file(tmp_path):
    afile = tmp_path / "f"
    afile.write_text("x")
    check = doctor.check_disk(afile, 0)
    assert (check.status, check.summary) == ("fail", f"{afile} is not a directory")


def test_missing_model_is_bad_input(tmp_path):
    from lvvit_opt.core.errors import UserError

    with pytest.raises(UserError, match="--model .*nope.onnx: no such file"):
        run_doctor(model=tmp_path / "nope.onnx", default_homes=[], driver_dir=tmp_path)


# ---------------------------------------------------------------- the CLI

@pytest.mark.skipif(Path("/usr/local/Ascend").exists(), reason="an Ascend host: the defaults find the real install")
def test_cli_doctor_on_a_bare_machine(no_tools, cli_runner, tmp_path, monkeypatch):  # noqa: F811
    from lvvit_opt.cli import main

    monkeypatch.chdir(tmp_path)
    result = cli_runner.invoke(main, ["doctor"])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith("[FAIL] CANN toolkit  not found (looked in $ASCEND_TOOLKIT_HOME, $ASCEND_HOME_PATH, $install_path, "
                               "/usr/local/Ascend/ascend-toolkit/latest, ")
    assert lines[-3] == ("not ready: 7 check(s) failed: CANN toolkit, set_env.sh, atc, npu-smi, NPU driver, "
                         ".om runner, transpose.py")
    assert lines[-2].startswith("works here: export, apply, validate") and lines[-1].startswith("needs the Ascend host")
    result = cli_runner.invoke(main, ["doctor", "--json", "-"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert (data["command"], data["ok"], data["result"]["ready"]) == ("doctor", False, False)
    assert [(c["key"], c["status"]) for c in data["result"]["checks"]] == [
        ("cann", "fail"), ("environment", "fail"), ("atc", "fail"), ("npu", "fail"), ("driver", "fail"),
        ("runner", "fail"), ("transpose", "fail"), ("disk", "ok")]
    assert data["result"]["checks"][2]["fix"].endswith("source /usr/local/Ascend/ascend-toolkit/set_env.sh")


def test_cli_doctor_ready_host_exits_0(fake_ais_bench, cli_runner, tmp_path, monkeypatch):  # noqa: F811
    from lvvit_opt.cli import main

    tree = build_cann_tree(tmp_path / "Ascend")
    for key, value in _sourced_env(tree).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    result = cli_runner.invoke(main, ["doctor", "--model", str(GOLDEN), "--json", str(tmp_path / "d.json")])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "ready: this host can run the whole pipeline"
    data = json.loads((tmp_path / "d.json").read_text())
    assert data["ok"] is True and all(c["status"] == "ok" for c in data["result"]["checks"])
    assert data["result"]["checks"][0]["details"]["version"] == "8.1.RC1"


@pytest.mark.parametrize("args, message", [
    (["--min-free-gb", "nan"], "error: Invalid value for '--min-free-gb': 'nan': expected gigabytes in [0, 1048576] "
                               "(see 'main doctor --help')"),
    (["--min-free-gb", "-1"], "error: Invalid value for '--min-free-gb': '-1': expected gigabytes in [0, 1048576] "
                              "(see 'main doctor --help')"),
    (["--cann-home", "/nonexistent/cann"], "error: --cann-home /nonexistent/cann: no such directory"),
    (["--model", "/nonexistent/m.onnx"], "error: --model /nonexistent/m.onnx: no such file"),
])
def test_cli_doctor_bad_input_exits_2(no_tools, cli_runner, args, message):  # noqa: F811
    from lvvit_opt.cli import main

    result = cli_runner.invoke(main, ["doctor"] + args)
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1] == message


def test_cli_doctor_json_may_not_overwrite_the_model(no_tools, cli_runner, tmp_path):  # noqa: F811
    from lvvit_opt.cli import main

    model = tmp_path / "m.onnx"
    model.write_bytes(GOLDEN.read_bytes())
    result = cli_runner.invoke(main, ["doctor", "--model", str(model), "--json", str(model)])
    assert result.exit_code == 2 and "refusing to overwrite an input" in result.output
    assert model.read_bytes() == GOLDEN.read_bytes()
