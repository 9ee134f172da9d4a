"""Generated shell (tune's reproduce.sh, run's atc_commands.sh) with hostile names.

Each generator runs on a model and an output folder whose names hold `$( )`, backticks,
quotes, `;`, spaces and a newline, each an injected `touch PWNED_*`. The output folder is then
copied elsewhere (under another hostile name) and the copied script is executed directly (its
shebang, its mode) with stand-ins on PATH that record their argv and working directory: only
the intended commands run, with exactly the intended arguments, in the copy, and no PWNED file
appears anywhere.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from fakes.ascend_env import FAKES_DIR, VENV_BIN, fake_ais_bench, fake_tools, no_tools  # noqa: F401  (fixtures)
from lvvit_opt.core.shell import ShellScript, comment_line, quote_argv

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "lvvit_golden.onnx"
QUICK = dict(rounds=2, warmup_s=0.0, max_finalists=2)


def hostile(tag: str) -> str:
    """A file or folder name holding every shell metacharacter class, each an injection of its own."""
    return (f"{tag} $(touch PWNED_{tag}_dollar) `touch PWNED_{tag}_tick` 'q' \"d\" ; touch PWNED_{tag}_semi ;"
            f"\ntouch PWNED_{tag}_newline \\ $HOME")


RECORDER = """#!{python}
import json, os, sys
with open(os.environ["RECORD_FILE"], "a", encoding="utf-8") as fh:
    fh.write(json.dumps({{"tool": {tool!r}, "argv": sys.argv[1:], "cwd": os.getcwd(),
                          "opp": os.environ.get("ASCEND_OPP_PATH")}}) + "\\n")
target = {target!r}
if {always!r} or sys.argv[1:2] == [os.environ.get("RECORD_EXEC")]:
    os.execv(target, [target] + sys.argv[1:])
"""


@pytest.fixture
def recorders(tmp_path):
    """A bin folder of argv recorders: `lvvit-opt` (RECORD_EXEC=apply lets `lvvit-opt apply` really run)
    and `atc` (always passed on to the stand-in atc of tests/fakes)."""
    folder = tmp_path / "recorders"
    folder.mkdir()
    for tool, target, always in (("lvvit-opt", str(Path(VENV_BIN) / "lvvit-opt"), False),
                                 ("atc", str(FAKES_DIR / "atc"), True)):
        path = folder / tool
        path.write_text(RECORDER.format(python=sys.executable, tool=tool, target=target, always=always))
        path.chmod(0o755)
    return folder


def run_script(script: Path, recorders: Path, tmp_path: Path, **env) -> list[dict]:
    """Execute `script` directly from an unrelated folder; the recorded calls, in order."""
    record = tmp_path / "record.jsonl"
    record.unlink(missing_ok=True)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir(exist_ok=True)
    system = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p).resolve() != FAKES_DIR]
    environ = {k: v for k, v in os.environ.items() if k not in ("ASCEND_OPP_PATH", "RECORD_EXEC")}
    environ.update(RECORD_FILE=str(record), PATH=os.pathsep.join([str(recorders), VENV_BIN] + system), **env)
    done = subprocess.run([str(script)], cwd=elsewhere, env=environ, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def assert_not_injected(root: Path) -> None:
    assert sorted(str(p) for p in root.rglob("PWNED*")) == []


def copy_out(out: Path, tmp_path: Path) -> Path:
    copy = tmp_path / hostile("copy")
    shutil.copytree(out, copy, symlinks=True)
    return copy


def assert_executable_script(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    assert lines[:3] == ["#!/usr/bin/env bash", "set -euo pipefail",
                         'cd -- "$(dirname -- "$0")"  # paths below are relative to this script\'s folder']
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755 & ~mask
    return lines


# ------------------------------------------------------------------------------------- tune's reproduce.sh

@pytest.fixture(scope="module")
def images(tmp_path_factory) -> str:
    from lvvit_opt.data.synthetic import make_image_dir

    folder = tmp_path_factory.mktemp("images")
    make_image_dir(folder, 4, sizes=((256, 240),))
    return str(folder)


def _hostile_model(tmp_path: Path, node_name: str) -> tuple[Path, str]:
    """The golden LV-ViT under a hostile file name, one MatMul renamed `node_name` (softmax_transpose
    leaves MatMuls alone): (path, the renamed node's name)."""
    model = onnx.load(GOLDEN)
    matmul = next(n for n in model.graph.node if n.op_type == "MatMul")
    matmul.name = node_name
    folder = tmp_path / hostile("models")
    folder.mkdir()
    path = folder / (hostile("model") + ".onnx")
    onnx.save(model, path)
    return path, node_name


def test_tune_reproduce_sh_fp16_keep_runs_only_its_commands_and_rebuilds_best(tmp_path, images, recorders,
                                                                             monkeypatch, no_tools):
    from lvvit_opt.tune import search as tune_mod
    from lvvit_opt.tune.search import TuneOptions, space_from_mapping, tune

    model, node = _hostile_model(tmp_path, hostile("node"))
    monkeypatch.setattr(tune_mod, "suggest_keep_nodes", lambda path, inputs: [node])
    space = space_from_mapping({"batch_sizes": [2], "pass_sets": [["softmax_transpose"]], "precisions": ["fp16-keep"],
                                "threads": [1], "graph_opt": ["all"]}, "ort-cpu")
    out = tmp_path / hostile("out")
    report = tune(TuneOptions(model=str(model), inputs=images, out=str(out), budget_s=8, space=space, **QUICK),
                  log=lambda m: None)
    best = report.by_key(report.best)
    assert best.precision == "fp16-keep" and best.gate["keep_fp32"] == [node]
    assert_executable_script(out / "reproduce.sh")
    copy = copy_out(out, tmp_path)
    (copy / "best.onnx").unlink()  # the script must rebuild it

    calls = run_script(copy / "reproduce.sh", recorders, tmp_path, RECORD_EXEC="apply")
    keep = "to_fp16.keep_fp32=" + json.dumps([node])
    assert [c["argv"] for c in calls] == [
        ["apply", str(model), "-o", "best.onnx", "--passes", "softmax_transpose,to_fp16", "-O", keep],
        ["bench", "best.onnx", "--batch-sizes", "2", "--threads", "1", "--graph-opt", "all"]]
    assert {c["cwd"] for c in calls} == {str(copy)}
    # the apply really ran in the copy: the graph tune measured, rebuilt from the commands
    assert onnx.load(copy / "best.onnx").graph == onnx.load(out / "best.onnx").graph
    kept = next(n for n in onnx.load(copy / "best.onnx").graph.node if n.name == node)
    assert kept.op_type == "MatMul"
    assert_not_injected(tmp_path)


def _tune_ascend(tmp_path: Path, images: str, tag: str, whitelist: str, cann_home: str | None = None):
    """tune --target ascend of the hostile model into a hostile --out (one fp32 candidate): (model, out, report)."""
    from lvvit_opt.tune.search import TuneOptions, space_from_mapping, tune

    model, _ = _hostile_model(tmp_path, "plain")
    space = space_from_mapping({"batch_sizes": [2], "pass_sets": [[]], "precisions": ["fp32"],
                                "precision_modes": ["force_fp16"], "op_select_implmodes": ["high_performance"],
                                "whitelist": [whitelist]}, "ascend")
    out = tmp_path / hostile(tag)
    report = tune(TuneOptions(model=str(model), inputs=images, out=str(out), target="ascend", budget_s=8,
                              space=space, soc_version="Ascend310", cann_home=cann_home, **QUICK), log=lambda m: None)
    assert report.best is not None and report.by_key(report.best).options["whitelist"] == whitelist
    return model, out, report


def test_tune_reproduce_sh_ascend_compiles_in_the_copy(tmp_path, images, recorders, fake_ais_bench):
    model, out, _ = _tune_ascend(tmp_path, images, "npu", "unpatched")
    assert_executable_script(out / "reproduce.sh")
    copy = copy_out(out, tmp_path)
    (copy / "best.om").unlink()
    (copy / "best.onnx").unlink()

    calls = run_script(copy / "reproduce.sh", recorders, tmp_path)
    assert [c["tool"] for c in calls] == ["atc", "lvvit-opt"]
    atc = calls[0]["argv"]
    assert atc[:3] == ["--framework=5", "--model=best.onnx", "--output=best"]
    assert "--soc_version=Ascend310" in atc and "--op_select_implmode=high_performance" in atc
    assert calls[1]["argv"] == ["bench", "best.om", "--reference", "best.onnx"]
    assert {c["cwd"] for c in calls} == {str(copy)}
    assert (copy / "best.om").is_file()  # the stand-in atc compiled the copy's best.onnx, in the copy
    # no pass: the script's `cp` took the source model, outside --out and so named absolute
    assert (copy / "best.onnx").read_bytes() == model.read_bytes()
    assert_not_injected(tmp_path)


def test_tune_reproduce_sh_whitelist_patched_builds_its_private_tree_in_the_copy(tmp_path, images, recorders,
                                                                                fake_ais_bench, monkeypatch):
    """The script mirrors the CANN opp tree into the copy, patches the copy's transpose.py with
    `lvvit-opt whitelist patch` (really run) and points atc at it. (The install itself is under a
    plain path: CANN's own set_env.sh, as the fake tree replays it, splits its path at a space.)"""
    from fake_ascend import read_om  # the stand-in's own .om reader (fake_ais_bench puts it on sys.path)

    from fakes.cann_tree import build_cann_tree

    tree = build_cann_tree(tmp_path / "Ascend", era="whitelist")
    installed = tree.transpose.read_bytes()
    monkeypatch.setenv("LVVIT_FAKE_ATC_READ_OPP", "1")  # the stand-in atc picks Transpose by $ASCEND_OPP_PATH
    _, out, _ = _tune_ascend(tmp_path, images, "patched", "patched", cann_home=str(tree.latest))
    assert_executable_script(out / "reproduce.sh")
    copy = copy_out(out, tmp_path)
    shutil.rmtree(copy / "whitelist_opp")
    (copy / "best.om").unlink()

    calls = run_script(copy / "reproduce.sh", recorders, tmp_path, RECORD_EXEC="whitelist",
                       LVVIT_FAKE_ATC_READ_OPP="1")
    assert [(c["tool"], c["argv"][:2]) for c in calls] == [("lvvit-opt", ["whitelist", "patch"]),
                                                           ("atc", ["--framework=5", "--model=best.onnx"]),
                                                           ("lvvit-opt", ["bench", "best.om"])]
    patch = calls[0]["argv"]
    assert Path(patch[patch.index("--file") + 1]).resolve() == tree.transpose.resolve()  # the installed file
    private = Path(calls[1]["opp"])
    assert private.is_absolute() and private.parent == copy / "whitelist_opp"
    assert {c["cwd"] for c in calls} == {str(copy)}
    header, _ = read_om(str(copy / "best.om"))
    assert "Transpose" in header["ge_types"].values()  # atc read the patched copy: the fast kernel
    assert tree.transpose.read_bytes() == installed  # the install is only read
    assert_not_injected(tmp_path)


# ------------------------------------------------------------------------------------- run's atc_commands.sh

def test_run_atc_commands_sh_runs_only_its_commands_in_the_copy(tmp_path, recorders, no_tools):
    from lvvit_opt.pipeline.run import RunOptions, run

    out = tmp_path / hostile("run")
    run(RunOptions(out=str(out), model="lvvit_golden", batch_sizes=(2,), bench_duration=0.2, bench_rounds=1),
        log=lambda m: None)
    assert_executable_script(out / "atc_commands.sh")
    copy = copy_out(out, tmp_path)
    set_env = tmp_path / "set_env.sh"  # what the user's CANN would export; reads an unset variable
    set_env.write_text('export LVVIT_SET_ENV_RAN="yes $UNSET_BY_DESIGN"\n')

    calls = run_script(copy / "atc_commands.sh", recorders, tmp_path, ASCEND_SET_ENV=str(set_env))
    from lvvit_opt.passes.transposes import format_shape, static_shapes, transpose_shapes

    listed = static_shapes(transpose_shapes(out / "lvvit_golden_bs2_opt.onnx"))  # the one list (issue 34)
    assert {"2,3,197,197", "2,197,197,3"} <= {format_shape(s) for s in listed}
    expected = ["whitelist", "patch"] + [w for s in listed for w in ("--shape", format_shape(s))]
    assert [c["argv"] for c in calls[:1]] == [expected]
    atc = [c["argv"] for c in calls[1:]]
    assert [a[1:3] for a in atc] == [["--model=lvvit_golden_bs2.onnx", "--output=lvvit_golden_bs2"],
                                     ["--model=lvvit_golden_bs2_opt.onnx", "--output=lvvit_golden_bs2_opt"]]
    assert [c["tool"] for c in calls] == ["lvvit-opt", "atc", "atc"]
    assert {c["cwd"] for c in calls} == {str(copy)}
    assert (copy / "lvvit_golden_bs2_opt.om").is_file() and not (out / "lvvit_golden_bs2_opt.om").exists()
    assert_not_injected(tmp_path)


def test_atc_commands_sh_without_set_env_stops_with_its_message(tmp_path, recorders, no_tools):
    """No set_env.sh and no atc on PATH: the script says so and runs nothing."""
    script = ShellScript(tmp_path / hostile("bare") / "s.sh")
    script.literal("set +eu")
    script.literal('source "${ASCEND_SET_ENV:-/nonexistent/set_env.sh}" 2>/dev/null')
    script.literal("set -eu")
    script.literal('command -v atc >/dev/null || { echo "atc is not on PATH after sourcing set_env.sh" >&2; exit 1; }')
    script.run(["atc", "--framework=5"])
    script.write()
    record = tmp_path / "record.jsonl"
    done = subprocess.run([str(script.file)], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PATH="/usr/bin:/bin", RECORD_FILE=str(record)))
    assert done.returncode == 1 and "atc is not on PATH" in done.stderr and not record.exists()


# ------------------------------------------------------------------------------------- the writer itself

def test_shell_script_quotes_every_word_and_names_paths_from_its_folder(tmp_path, recorders):
    folder = tmp_path / hostile("folder")
    script = ShellScript(folder / "s.sh", description=hostile("description"))
    inside, outside = folder / "sub" / hostile("in"), tmp_path / hostile("outside")
    assert script.path(inside) == os.path.join("sub", hostile("in"))
    assert script.path(outside) == str(outside)
    assert script.path(folder / "-rf") == "./-rf"  # never read as an option
    assert script.path(folder / ".." / folder.name / "x") == "x"
    argv = ["show", script.path(inside), script.path(outside), "-O", 'k=["a, b", "c\\nd"]', "", "$HOME", "*"]
    script.run(["lvvit-opt", *argv], comment=hostile("comment"))
    script.export("LVVIT_DEMO", [inside, outside])
    script.export("PATH", [tmp_path / "nothing"], append_existing=True)
    script.literal('lvvit-opt env "$LVVIT_DEMO"')
    with pytest.raises(ValueError):
        script.literal("a\nb")
    with pytest.raises(ValueError):
        script.export("NOT A NAME", [inside])
    script.write()
    assert comment_line("a\nb\rc\x00") == "# a\\nb\\rc\\x00"
    assert quote_argv(["a b", "$(x)"]) == "'a b' '$(x)'"

    calls = run_script(script.file, recorders, tmp_path)
    assert calls[0]["argv"] == argv and calls[0]["cwd"] == str(folder)
    assert calls[1]["argv"] == ["env", f"{folder / 'sub' / hostile('in')}:{outside}"]  # absolute at run time
    assert_not_injected(tmp_path)


def test_script_is_executable_whatever_was_there_and_honours_the_umask(tmp_path):
    path = tmp_path / "s.sh"
    path.write_text("old")
    path.chmod(0o600)  # an earlier, non-executable file of that name
    old = os.umask(0o027)
    try:
        ShellScript(path).run(["true"]).write()
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o750
    assert subprocess.run([str(path)], timeout=30).returncode == 0
    assert path.read_text().splitlines()[3:] == ["true"]


NAME_CLASSES = {
    "dollar-paren": "m$(touch PWNED_x).onnx",
    "backticks": "m`touch PWNED_x`.onnx",
    "single-quote": "m'; touch PWNED_x; '.onnx",
    "double-quote": 'm"; touch PWNED_x; ".onnx',
    "semicolon": "m; touch PWNED_x",
    "ampersand-pipe": "m & touch PWNED_x | cat",
    "space": "my model.onnx",
    "newline": "m\ntouch PWNED_x\n.onnx",
    "carriage-return": "m\rtouch PWNED_x",
    "tab": "m\ttouch PWNED_x",
    "variable": "m$HOME${PATH}",
    "glob": "m*?[ab].onnx",
    "backslash": "m\\\\n\\",
    "leading-dash": "-rf",
    "tilde": "~",
    "history-bang": "m!!x!-1",
    "redirect": "m > PWNED_x < /dev/null",
    "brace": "m{a,b}",
    "unicode": "m\u00e9\u4e2d\u200b.onnx",
    "hash": "#m # touch PWNED_x",
}


@pytest.mark.parametrize("name", list(NAME_CLASSES.values()), ids=list(NAME_CLASSES))
def test_each_metacharacter_class_is_one_word_in_a_path_an_argument_and_a_comment(tmp_path, recorders, name):
    """Every class alone, as a folder (the script's own), a file inside it, an outside file, a
    plain argument, a `--flag=PATH` word and a comment: each arrives as exactly one argv word."""
    folder = tmp_path / name.replace("/", "_")
    script = ShellScript(folder / "s.sh", description=name)
    inside, outside = folder / name, tmp_path / "out" / name
    argv = ["probe", script.path(inside), script.path(outside), name,
            *script.path_flags([f"--model={inside}"], ("--model=",))]
    script.comment(name)
    script.run(["lvvit-opt", *argv], comment=name)
    script.write()
    assert all(line.startswith("#") or line.startswith(("set ", "cd ", "lvvit-opt"))
               for line in script.text().split("\n")[:5] if line)
    calls = run_script(script.file, recorders, tmp_path)
    expected_inside = name if not name.startswith("-") else "./" + name
    assert calls == [{"tool": "lvvit-opt", "argv": ["probe", expected_inside, str(outside), name,
                                                    f"--model={expected_inside}"],
                      "cwd": str(folder), "opp": None}]
    assert_not_injected(tmp_path)
