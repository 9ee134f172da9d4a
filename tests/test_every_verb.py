"""Every verb of the click group keeps its plan (lvvit_opt.core.plan), today's and tomorrow's.

The verbs are enumerated from the click group. Each must have an entry in VERB_FIXTURES (a
verb added later without one fails `test_every_verb_has_a_fixture`). Each entry runs the verb
on tiny inputs inside a workspace whose every byte is snapshot before and after:

- the verb must start a plan (a verb that writes without declaring fails);
- every path it created or changed must be covered by its plan (a declared output, inside a
  declared folder, or an input it edits as its job);
- no temporary of ours is left in the workspace or in its temporary folder (TMPDIR).

Then the aliasing matrix runs against every declared output option of the entry: the output
given as each input of the plan, as a symlink and a hard link to it, as one of the tool's own
files, and (for folders) as a symlink to an input folder: each must be refused in one line
with exit 2 and nothing in the workspace changed.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import click
import pytest

sys.path.insert(0, str(Path(__file__).parent / "hostile"))
from hostile_helpers import (assert_refused, build_images, build_workspace, diff_snapshots,  # noqa: E402
                             invoke, snapshot, temp_leftovers)

from fakes.ascend_env import fake_om, fake_tools  # noqa: E402,F401  (fixtures)
from lvvit_opt.cli import main  # noqa: E402
from lvvit_opt.core import plan as plan_module  # noqa: E402


def _leaf_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _leaf_commands(command, prefix + (name,))
        else:
            yield " ".join(prefix + (name,))


VERBS = list(_leaf_commands(main))


@dataclass
class VerbFixture:
    """How to run one verb cheaply: `args(ws)` gives its argv (paths relative to the workspace,
    which is the working directory), `outputs` the options whose value is a file it writes,
    `folders` the options whose value is a folder it writes into."""

    args: Callable[[Path], list[str]]
    outputs: tuple[str, ...] = ("--json",)
    folders: tuple[str, ...] = ()
    exit_codes: tuple[int, ...] = (0,)
    slow: bool = False
    notes: dict = field(default_factory=dict)


SPACE = {"batch_sizes": [2], "pass_sets": [[]], "precisions": ["fp32"], "threads": [1], "graph_opt": ["all"]}

VERB_FIXTURES: dict[str, VerbFixture] = {
    "apply": VerbFixture(lambda ws: ["apply", "m.onnx", "-o", "out/a.onnx", "--passes", "softmax_transpose",
                                     "--json", "out/a.json"], outputs=("-o", "--json")),
    "atc": VerbFixture(lambda ws: ["atc", "m.onnx", "--soc-version", "Ascend310", "--output", "out/m",
                                   "--json", "out/atc.json"]),
    "bench": VerbFixture(lambda ws: ["bench", "m.onnx", "--duration", "0.2", "--rounds", "2", "--warmup", "0",
                                     "--threads", "1", "--json", "out/b.json", "--plot", "out/b.png"],
                         outputs=("--json", "--plot")),
    "debug layers": VerbFixture(lambda ws: ["debug", "layers", "m.onnx", "--fp16", "--inputs", "1",
                                            "--suggest-keep-dtype", "out/keep.cfg", "--json", "out/d.json"],
                                outputs=("--suggest-keep-dtype", "--json"), exit_codes=(0, 1)),
    "doctor": VerbFixture(lambda ws: ["doctor", "--model", "m.onnx", "--json", "out/doc.json"], exit_codes=(0, 1)),
    "eval": VerbFixture(lambda ws: ["eval", "m.onnx", "--data", "images", "--labels", "val.txt", "--workers", "1",
                                    "--json", "out/e.json"]),
    "export": VerbFixture(lambda ws: ["export", "--model", "lvvit_golden", "--checkpoint", "c.pth", "--batch-size", "1",
                                      "-o", "out/e.onnx", "--json", "out/e.json"], outputs=("-o", "--json")),
    "golden check": VerbFixture(lambda ws: ["golden", "check", "m.onnx", "g.npz", "--json", "out/gc.json"]),
    "golden make": VerbFixture(lambda ws: ["golden", "make", "m.onnx", "-o", "out/made.npz", "--json", "out/gm.json"],
                               outputs=("-o", "--json")),
    "inspect": VerbFixture(lambda ws: ["inspect", "m.om", "--keep-json", "out/om.json", "--json", "out/i.json"],
                           outputs=("--keep-json", "--json")),
    "merge": VerbFixture(lambda ws: ["merge", "s1.json", "s2.json", "--json", "out/merged.json"]),
    "passes": VerbFixture(lambda ws: ["passes", "--json", "out/p.json"]),
    "postprocess": VerbFixture(lambda ws: ["postprocess", "result", "--labels", "val.txt", "--json", "out/pp.json"]),
    "preprocess": VerbFixture(lambda ws: ["preprocess", "images", "out/prep", "--workers", "1", "--info",
                                          "out/prep.info", "--json", "out/pre.json"],
                              outputs=("--info", "--json"), folders=("OUT_DIR",)),
    "quantize": VerbFixture(lambda ws: ["quantize", "m.onnx", "--calib", "1", "--target", "ascend", "-o", "out/q",
                                        "--json", "out/q.json"], folders=("-o",)),
    "run": VerbFixture(lambda ws: ["run", "--model", "lvvit_golden", "--checkpoint", "c.pth", "--batch-sizes", "2",
                                   "--bench-duration", "0.1", "--bench-rounds", "1", "--out", "out/run",
                                   "--json", "out/run.json"], folders=("--out",), slow=True),
    "tune": VerbFixture(lambda ws: ["tune", "m.onnx", "--inputs", "1", "--space", "space.json", "--rounds", "2",
                                    "--warmup", "0", "--budget", "30s", "--out", "out/tune", "--json", "out/tune.json"],
                        folders=("--out",), exit_codes=(0, 1), slow=True),  # 1: the budget ran out (a busy machine)
    "validate": VerbFixture(lambda ws: ["validate", "m.onnx", "c2.onnx", "--inputs", "1", "--json", "out/v.json"]),
    "whitelist check": VerbFixture(lambda ws: ["whitelist", "check", "--file", "opp/transpose.py", "--shape",
                                               "2,3,197,197", "--json", "out/wc.json"]),
    "whitelist patch": VerbFixture(lambda ws: ["whitelist", "patch", "--file", "opp/transpose.py", "--shape",
                                               "2,3,197,197", "--json", "out/wp.json"]),
    "whitelist restore": VerbFixture(lambda ws: ["whitelist", "restore", "--file", "opp/transpose.py", "--json",
                                                 "out/wr.json"], exit_codes=(0, 2)),
    "whitelist shapes": VerbFixture(lambda ws: ["whitelist", "shapes", "m.onnx", "--json", "out/ws.json"]),
}


def test_every_verb_has_a_fixture():
    missing = [verb for verb in VERBS if verb not in VERB_FIXTURES]
    assert not missing, (f"verbs without an entry in VERB_FIXTURES: {missing}; add one so the plan and "
                         f"aliasing checks cover them")
    assert not [verb for verb in VERB_FIXTURES if verb not in VERBS], "fixtures for verbs that do not exist"


@pytest.fixture
def workspace(tmp_path, fake_tools, fake_om, monkeypatch):
    """The hostile suite's workspace plus images, labels, shard results, an .om and a tune space."""
    ws = build_workspace(tmp_path / "ws")
    images, labels = build_images(ws, 2)
    shutil.copy(fake_om[1], ws / "m.om")
    (ws / "space.json").write_text(json.dumps(SPACE))
    (ws / "result").mkdir()
    for p in sorted(images.iterdir()):  # legacy benchmark outputs: <stem>_1.txt, 1000 scores
        scores = ["0"] * 1000
        scores[0] = "1"
        (ws / "result" / f"{p.stem}_1.txt").write_text(" ".join(scores) + "\n")
    for k in (1, 2):
        outcome = invoke(["eval", "m.onnx", "--data", "images", "--labels", "val.txt", "--workers", "1",
                          "--shard", f"{k}/2", "--json", f"s{k}.json"], ws)
        assert outcome.exit_code == 0, outcome.stderr
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    plan_module.forget_started_plans()
    return ws


def _params(slow_marks: bool):
    for verb in VERBS:
        fixture = VERB_FIXTURES.get(verb)
        marks = [pytest.mark.slow] if fixture is not None and fixture.slow else []
        yield pytest.param(verb, marks=marks, id=verb)


def _relative_changes(before: dict, after: dict) -> list[str]:
    return [change.split(": ", 1)[1] for change in diff_snapshots(before, after) if not change.startswith("gone: ")]


@pytest.mark.parametrize("verb", list(_params(True)))
def test_verb_writes_only_what_its_plan_declares(workspace, verb):
    fixture = VERB_FIXTURES[verb]
    ws = workspace
    before = snapshot(ws)
    outcome = invoke(fixture.args(ws), ws)
    assert outcome.exit_code in fixture.exit_codes, (outcome.exit_code, outcome.stdout, outcome.stderr)
    plans = plan_module.started_plans()
    assert plans, f"{verb} wrote without starting a plan (lvvit_opt.cli.output.start_plan)"
    changed = _relative_changes(before, snapshot(ws))
    old_cwd = os.getcwd()
    os.chdir(ws)
    try:
        undeclared = [path for path in changed if not any(p.covers(path) for p in plans)
                      and not _is_parent_of_covered(path, plans)]
    finally:
        os.chdir(old_cwd)
    assert not undeclared, f"{verb} wrote paths outside its plan: {undeclared}"
    first_start = min(p.started_ns for p in plans)
    early = [path for path in changed if os.lstat(ws / path).st_mtime_ns < first_start]
    assert not early, f"{verb} wrote {early} before it started its plan"
    assert temp_leftovers(ws) == [] or all(".lvvit-opt" in t for t in temp_leftovers(ws))
    # ours only: torch and onnxruntime keep caches of their own there (torchinductor_root, .ses)
    left = [p.name for p in Path(os.environ["TMPDIR"]).iterdir() if "lvvit" in p.name]
    assert left == [], f"{verb} left temporaries in TMPDIR: {left}"
    declared = set().union(*({**p.writes, **p.folders, **p.owned} for p in plans))
    for option in fixture.outputs + fixture.folders:
        assert option in declared, f"{verb}: the fixture's output {option} is not in the plan ({sorted(declared)})"


def _is_parent_of_covered(path: str, plans) -> bool:
    """A folder created on the way to a declared output (`out/` for `out/a.onnx`)."""
    return any(os.path.abspath(declared).startswith(os.path.abspath(path) + os.sep)
               for p in plans for declared in [*p.writes.values(), *p.folders.values(), *p.owned.values()])


# -- the aliasing matrix -------------------------------------------------------------------

INPUT_FILES = {"MODEL": "m.onnx", "checkpoint": "c.pth", "golden": "g.npz", "transpose.py": "opp/transpose.py",
               "labels": "val.txt", "space": "space.json", "om": "m.om", "shard": "s1.json"}
ALIASES = {  # how the output is given -> the workspace file it must not replace
    "the-input": lambda used: used,
    "symlink-to-input": lambda used: "alias_link",
    "hardlink-to-input": lambda used: "alias_hard",
}
OWN_FILE = "opp/transpose.py.lvvit-opt.orig"


def _alias_cases():
    for verb in VERBS:
        fixture = VERB_FIXTURES.get(verb)
        if fixture is None:
            continue
        marks = [pytest.mark.slow] if fixture.slow else []
        for option in fixture.outputs:
            for kind in list(ALIASES) + ["own-file"]:
                yield pytest.param(verb, option, kind, marks=marks, id=f"{verb}|{option}|{kind}")


def _replace_option(args: list[str], option: str, value: str) -> list[str]:
    args = list(args)
    if option in args:
        args[args.index(option) + 1] = value
    else:
        raise AssertionError(f"{option} is not in the fixture's args {args}")
    return args


def _an_input_of(args: list[str]) -> str | None:
    """The first argument that names a workspace file the verb reads (None: it reads none)."""
    return next((value for value in args if value in INPUT_FILES.values()), None)


@pytest.mark.parametrize("verb, option, kind", list(_alias_cases()))
def test_aliased_output_is_refused_and_nothing_changes(workspace, verb, option, kind):
    ws = workspace
    fixture = VERB_FIXTURES[verb]
    args = fixture.args(ws)
    victim = _an_input_of(args)
    if victim is None and kind != "own-file":
        pytest.skip(f"{verb} reads no file given on the command line")
    if kind == "own-file":
        (ws / OWN_FILE).write_text("a backup lvvit-opt keeps\n")
        target = OWN_FILE
    else:
        os.symlink(os.path.abspath(ws / victim), ws / "alias_link")
        os.link(ws / victim, ws / "alias_hard")
        target = ALIASES[kind](victim)
    before = snapshot(ws)
    outcome = invoke(_replace_option(args, option, target), ws)
    assert_refused(outcome, 2)
    assert diff_snapshots(before, snapshot(ws)) == [], f"{verb} {option}={target} changed the workspace"


def _folder_cases():
    for verb in VERBS:
        fixture = VERB_FIXTURES.get(verb)
        if fixture is None:
            continue
        for option in fixture.folders:
            for kind in ("input-folder", "symlink-to-input-folder", "holds-unrelated-files", "input-inside"):
                yield pytest.param(verb, option, kind, id=f"{verb}|{option}|{kind}")


def _replace_folder(args: list[str], option: str, value: str) -> list[str]:
    if option.startswith("-"):
        return _replace_option(args, option, value)
    args = list(args)  # a positional folder (preprocess OUT_DIR): the one under out/
    index = next(i for i, a in enumerate(args) if a.startswith("out/") and "." not in Path(a).name)
    args[index] = value
    return args


@pytest.mark.parametrize("verb, option, kind", list(_folder_cases()))
def test_output_folder_cases(workspace, verb, option, kind):
    ws = workspace
    fixture = VERB_FIXTURES[verb]
    args = fixture.args(ws)
    if kind == "input-folder":  # a folder the verb reads (preprocess's images), else one holding a user's file
        target = next((a for a in args if a in ("images", "result", "opp")), "opp")
    elif kind == "symlink-to-input-folder":
        os.symlink(next((a for a in args if a in ("images", "result", "opp")), "opp"), ws / "opp_link")
        target = "opp_link"
    elif kind == "holds-unrelated-files":
        (ws / "mine").mkdir()
        for name in ("best.onnx", "report.md", "tune_report.json", "notes.txt"):
            (ws / "mine" / name).write_text("the user's own file\n")
        target = "mine"
    else:  # an input the verb reads lies in the folder it owns
        (ws / "outdir").mkdir()
        shutil.copy(ws / "m.onnx", ws / "outdir" / "m.onnx")
        args = [a.replace("m.onnx", "outdir/m.onnx") if a == "m.onnx" else a for a in args]
        if "outdir/m.onnx" not in args:
            pytest.skip(f"{verb} reads no model file given on the command line")
        target = "outdir"
    before = snapshot(ws)
    outcome = invoke(_replace_folder(args, option, target), ws)
    if kind == "holds-unrelated-files" and option == "OUT_DIR":
        pytest.skip("preprocess writes named .bin files into OUT_DIR and leaves other files alone")
    assert_refused(outcome, 2)
    assert diff_snapshots(before, snapshot(ws)) == [], f"{verb} {option}={target} changed the workspace"


def test_a_second_process_on_an_owned_folder_is_refused(tmp_path):
    from lvvit_opt.core.errors import UserError
    from lvvit_opt.core.plan import Plan

    first = Plan.of("tune", owned={"--out": tmp_path / "o"}).start()
    try:
        with pytest.raises(UserError, match="is writing there now"):
            Plan.of("tune", owned={"--out": tmp_path / "o"}).start()
    finally:
        first.release()
    Plan.of("tune", owned={"--out": tmp_path / "o"}).start().release()  # free again once released


def test_a_symlink_inside_an_owned_folder_is_refused(tmp_path):
    from lvvit_opt.core.errors import UserError
    from lvvit_opt.core.plan import Plan

    out = tmp_path / "o"
    plan = Plan.of("tune", owned={"--out": out}).start()
    try:
        (tmp_path / "elsewhere").mkdir()
        os.symlink(tmp_path / "elsewhere", out / "whitelist_opp")
        with pytest.raises(UserError, match="is a symlink"):
            plan.inside("--out", "whitelist_opp/abc/transpose.py")
        assert plan.inside("--out", "models/m.onnx") == out / "models" / "m.onnx"
    finally:
        plan.release()


def test_a_killed_runs_temporary_folder_is_swept_when_the_folder_is_owned_again(tmp_path):
    import subprocess

    from lvvit_opt.core.plan import Plan

    out = tmp_path / "o"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / f".work.lvvit-tmp.{dead.pid}.0a1b2c3d"
    stale.mkdir()
    (stale / "candidate.onnx").write_bytes(b"x")
    Plan.of("tune", owned={"--out": out}).start().release()
    assert not stale.exists()


def _file_option_cases():
    """Every file-valued option of every verb that the fixture does not use as an output."""
    for verb in VERBS:
        fixture = VERB_FIXTURES.get(verb)
        if fixture is None:
            continue
        command = main
        for part in verb.split():
            command = command.commands[part]
        for param in command.params:
            opts = [o for o in getattr(param, "opts", []) if o.startswith("--")]
            if not opts or opts[0] in fixture.outputs + fixture.folders + ("--log-file",):
                continue
            kind = param.type
            if (isinstance(kind, click.Path) and kind.file_okay) or type(kind).__name__ in ("ModelFile", "InputsParam"):
                marks = [pytest.mark.slow] if fixture.slow else []
                yield pytest.param(verb, opts[0], marks=marks, id=f"{verb}|{opts[0]}")


@pytest.mark.parametrize("verb, option", list(_file_option_cases()))
def test_json_onto_any_file_option_is_refused(workspace, verb, option):
    """`--json F` with F given to any other file option of the verb (declared by the verb or not:
    start_plan adds every file-valued option it was not told about as an input) is refused."""
    ws = workspace
    args = VERB_FIXTURES[verb].args(ws)
    if option in args:
        args = _replace_option(args, option, "keep.cfg")
    else:
        args = args + [option, "keep.cfg"]
    before = snapshot(ws)
    outcome = invoke(_replace_option(args, "--json", "keep.cfg"), ws)
    assert_refused(outcome, 2)
    assert diff_snapshots(before, snapshot(ws)) == [], f"{verb} {option} keep.cfg --json keep.cfg changed the workspace"


def test_a_verb_refused_after_its_plan_started_leaves_no_folder(tmp_path):
    from lvvit_opt.core.plan import Plan

    Plan.of("tune", owned={"--out": tmp_path / "new"}).start().release()
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    Plan.of("tune", owned={"--out": tmp_path / "mine"}).start().release()
    assert (tmp_path / "mine").is_dir() and list((tmp_path / "mine").iterdir()) == []
    plan = Plan.of("tune", owned={"--out": tmp_path / "used"}).start()
    (tmp_path / "used" / "tune.json").write_text("{}")
    plan.release()
    assert sorted(p.name for p in (tmp_path / "used").iterdir()) == [".lvvit-opt-owner", "tune.json"]
