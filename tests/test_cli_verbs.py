"""Every verb follows the CLI conventions (docs/cli-contract.md).

The verbs are enumerated from the click group, so a verb added later is checked too:
its --help must work and explain, offer `--json PATH` and -q/-v. Verbs with a cheap
invocation below are also run: `--json -` must give exactly the envelope on stdout, and
-q must leave stdout empty and draw no progress, even on a terminal.
"""
from __future__ import annotations

import json
import shutil

import click
import pytest

from fakes.ascend_env import fake_tools, no_tools  # noqa: F401  (fixtures)
from lvvit_opt import __version__
from lvvit_opt.cli import main, output

ENVELOPE_KEYS = {"command", "version", "ok", "result", "warnings"}
# verbs that print a result without producing one (none today); add a reason with each entry
NO_RESULT: dict[str, str] = {}


def _leaf_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _leaf_commands(command, prefix + (name,))
        else:
            yield prefix + (name,), command


VERBS = list(_leaf_commands(main))


def test_the_walk_finds_nested_verbs():
    names = {" ".join(path) for path, _ in VERBS}
    assert {"export", "apply", "golden check", "whitelist patch", "bench", "run"} <= names


@pytest.mark.parametrize("path, command", VERBS, ids=[" ".join(p) for p, _ in VERBS])
def test_help_explains_and_offers_json_and_quiet(cli_runner, path, command):
    result = cli_runner.invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert (command.help or "").strip(), f"{' '.join(path)} has no help text"
    assert result.stdout.startswith(f"Usage: main {' '.join(path)} ")
    options = {opt: param for param in command.params for opt in getattr(param, "opts", [])}
    assert "-q" in options and "-v" in options and "--quiet" in options
    name = " ".join(path)
    if name in NO_RESULT:
        return
    assert "--json" in options, f"{name}: a verb that produces a result takes --json PATH (output.json_option)"
    json_param = options["--json"]
    assert json_param.name == "json_out" and not json_param.is_flag
    assert json_param.type.convert("-", json_param, None) == "-"  # '-' means stdout
    assert "--json PATH" in result.stdout
    undocumented = [p.opts[0] for p in command.params if isinstance(p, click.Option) and not p.hidden and not p.help]
    assert not undocumented or set(undocumented) <= {"--seed", "--ema", "--img-size", "--opset", "--bench-rounds",
                                                     "--device-id", "--batch-size"}, undocumented


# ---------------------------------------------------------------- cheap invocations

@pytest.fixture(scope="module")
def workspace(tmp_path_factory, golden_onnx, repo_root):
    """Small inputs for the verbs that are cheap to run."""
    from lvvit_opt.data.synthetic import make_image_dir, write_val_txt

    root = tmp_path_factory.mktemp("verbs")
    shutil.copy(golden_onnx, root / "m.onnx")
    shutil.copy(repo_root / "golden" / "lvvit_golden.npz", root / "g.npz")
    images = make_image_dir(root / "val", 2, sizes=((160, 120),))
    write_val_txt(root / "val.txt", {p.name: 3 for p in images})
    (root / "result").mkdir()
    import numpy as np

    for p in images:  # legacy benchmark outputs: <stem>_1.txt, 1000 scores
        scores = np.zeros(1000, np.float32)
        scores[3] = 1.0
        (root / "result" / f"{p.stem}_1.txt").write_text(" ".join(f"{v:g}" for v in scores) + "\n")
    whitelist = repo_root / "tests" / "fixtures" / "transpose" / "transpose_whitelist_era.py"
    shutil.copy(whitelist, root / "transpose.py")
    return root


def _invocations(ws) -> dict[str, list[str]]:
    m = str(ws / "m.onnx")
    return {
        "passes": ["passes"],
        "validate": ["validate", m, m, "--inputs", "1"],
        "golden check": ["golden", "check", m, str(ws / "g.npz")],
        "golden make": ["golden", "make", m, "-o", str(ws / "made.npz")],
        "apply": ["apply", m, "-o", str(ws / "opt.onnx")],
        "whitelist shapes": ["whitelist", "shapes", m],
        "whitelist check": ["whitelist", "check", "--file", str(ws / "transpose.py"), "--shape", "2,3,197,197"],
        "whitelist patch": ["whitelist", "patch", "--file", str(ws / "transpose.py"), "--shape", "2,3,197,197",
                            "--dry-run"],
        "atc": ["atc", m, "--soc-version", "Ascend310", "--dry-run"],
        "bench": ["bench", m, "--duration", "0.2", "--rounds", "2", "--warmup", "0", "--threads", "1"],
        "preprocess": ["preprocess", str(ws / "val"), str(ws / "prep"), "--workers", "1"],
        "postprocess": ["postprocess", str(ws / "result"), "--labels", str(ws / "val.txt")],
        "eval": ["eval", m, "--data", str(ws / "val"), "--labels", str(ws / "val.txt"), "--workers", "1"],
    }


CHEAP = ["passes", "validate", "golden check", "golden make", "apply", "whitelist shapes", "whitelist check",
         "whitelist patch", "atc", "bench", "preprocess", "postprocess", "eval"]


@pytest.mark.parametrize("verb", CHEAP)
def test_json_dash_is_exactly_the_envelope(cli_runner, workspace, verb, no_tools):
    result = cli_runner.invoke(main, _invocations(workspace)[verb] + ["--json", "-"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # stdout is nothing but the JSON
    assert set(data) == ENVELOPE_KEYS
    assert (data["command"], data["version"], data["ok"]) == (verb, __version__, True)
    assert isinstance(data["result"], dict) and isinstance(data["warnings"], list)


@pytest.mark.parametrize("verb", CHEAP)
def test_quiet_leaves_stdout_empty_and_draws_no_progress_even_on_a_terminal(cli_runner, workspace, verb, no_tools,
                                                                            monkeypatch):
    monkeypatch.setattr(output, "_isatty", lambda stream: True)
    result = cli_runner.invoke(main, ["-q", *_invocations(workspace)[verb]])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "\r" not in result.stderr and "it/s" not in result.stderr
    assert all(line.startswith(("warning:", "error:")) for line in result.stderr.splitlines()), result.stderr


def test_every_cheap_verb_exists():
    names = {" ".join(path) for path, _ in VERBS}
    assert set(CHEAP) <= names
