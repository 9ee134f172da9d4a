"""CLI conventions: --json envelope, -v/-q/--log-file, progress, parameter types, tables."""
from __future__ import annotations

import json
import logging

import click
import pytest

from lvvit_opt import __version__
from lvvit_opt.core import progress
from lvvit_opt.cli import main
from lvvit_opt.cli import output
from lvvit_opt.cli.types import PASS_LIST, SOC_VERSION, ModelName
from lvvit_opt.core.table import format_table

ENVELOPE_KEYS = {"command", "version", "ok", "result", "warnings"}


@pytest.fixture
def scratch_command():
    """A throwaway verb using the helpers the way every verb does (removed afterwards)."""
    log = logging.getLogger("lvvit_opt.scratch")

    @main.command("scratch-verb")
    @click.option("--fail", type=click.Choice(["no", "check", "input"]), default="no")
    @click.option("--steps", type=int, default=0)
    @output.json_option
    @__import__("lvvit_opt.cli._base", fromlist=["handle_errors"]).handle_errors
    def scratch(fail, steps, json_out):
        from lvvit_opt.core.errors import UserError

        log.info("working")
        log.debug("detail")
        log.warning("careful: %s", "random weights")
        if fail == "input":
            raise UserError("bad thing")
        with progress.task("steps", total=steps or None, unit="step") as bar:
            for _ in range(steps):
                bar.update(1)
        output.echo("human result")
        output.emit_result({"value": 1.5, "nan": float("nan")}, ok=fail == "no")
        if fail == "check":
            raise SystemExit(1)

    yield "scratch-verb"
    main.commands.pop("scratch-verb")


def test_json_to_stdout_carries_only_the_envelope(cli_runner, scratch_command):
    result = cli_runner.invoke(main, [scratch_command, "--json", "-"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # nothing but JSON on stdout
    assert set(data) == ENVELOPE_KEYS
    assert data == {"command": "scratch-verb", "version": __version__, "ok": True,
                    "result": {"value": 1.5, "nan": None}, "warnings": ["careful: random weights"]}
    assert "human result" not in result.stdout
    assert result.stderr == "warning: careful: random weights\n"  # info only with -v


def test_json_file_is_written_and_human_output_stays(cli_runner, scratch_command, tmp_path):
    target = tmp_path / "sub" / "out.json"
    result = cli_runner.invoke(main, [scratch_command, "--json", str(target)])
    assert result.exit_code == 0
    assert result.stdout == "human result\n"
    assert json.loads(target.read_text())["result"]["value"] == 1.5
    assert not [p for p in target.parent.iterdir() if p.name != "out.json"]  # no temp file left


def test_failed_check_writes_ok_false_and_exits_1(cli_runner, scratch_command):
    result = cli_runner.invoke(main, [scratch_command, "--fail", "check", "--json", "-"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["ok"] is False


def test_bad_input_is_one_line_and_writes_no_json_file(cli_runner, scratch_command, tmp_path):
    target = tmp_path / "err.json"
    result = cli_runner.invoke(main, [scratch_command, "--fail", "input", "--json", str(target)])
    assert result.exit_code == 2
    assert result.stderr == "warning: careful: random weights\nerror: bad thing\n"
    assert not target.exists()  # a refused input writes nothing
    to_stdout = cli_runner.invoke(main, [scratch_command, "--fail", "input", "--json", "-"])
    data = json.loads(to_stdout.stdout)
    assert data["ok"] is False and data["result"] == {"error": "bad thing", "exit_code": 2}


@pytest.mark.parametrize("args", [["-q", "scratch-verb"], ["scratch-verb", "-q"]])
def test_quiet_silences_stdout_and_info_but_not_warnings(cli_runner, scratch_command, args):
    result = cli_runner.invoke(main, args)
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr == "warning: careful: random weights\n"


def test_verbose_shows_info_and_twice_debug_with_logger_names(cli_runner, scratch_command):
    once = cli_runner.invoke(main, ["-v", scratch_command])
    assert once.stderr == "working\nwarning: careful: random weights\n"
    twice = cli_runner.invoke(main, [scratch_command, "-vv"])
    assert "[lvvit_opt.scratch] detail" in twice.stderr and "[lvvit_opt.scratch] working" in twice.stderr


def test_quiet_and_verbose_together_is_a_usage_error(cli_runner, scratch_command):
    result = cli_runner.invoke(main, ["-q", "-v", scratch_command])
    assert result.exit_code == 2 and "either -v or -q" in result.stderr


def test_log_file_gets_debug_lines_appended(cli_runner, scratch_command, tmp_path):
    log_file = tmp_path / "run.log"
    log_file.write_text("earlier\n")
    assert cli_runner.invoke(main, ["-q", "--log-file", str(log_file), scratch_command]).exit_code == 0
    lines = log_file.read_text().splitlines()
    assert lines[0] == "earlier"
    assert any(line.endswith("DEBUG lvvit_opt.scratch: detail") for line in lines)
    assert any(line.endswith("WARNING lvvit_opt.scratch: careful: random weights") for line in lines)


def test_handlers_are_removed_after_each_invocation(cli_runner, scratch_command):
    before = list(logging.getLogger("lvvit_opt").handlers)
    cli_runner.invoke(main, [scratch_command])
    assert logging.getLogger("lvvit_opt").handlers == before


def test_progress_draws_on_a_tty_only_and_never_with_quiet(cli_runner, scratch_command, monkeypatch):
    not_tty = cli_runner.invoke(main, [scratch_command, "--steps", "3"])
    assert "steps" not in not_tty.stderr  # CliRunner's stderr is not a terminal
    monkeypatch.setattr(output, "_isatty", lambda stream: True)
    tty = cli_runner.invoke(main, [scratch_command, "--steps", "3"])
    assert "steps:" in tty.stderr and "/3 [" in tty.stderr
    quiet = cli_runner.invoke(main, ["-q", scratch_command, "--steps", "3"])
    assert "steps" not in quiet.stderr


def test_progress_task_is_silent_outside_the_cli():
    with progress.task("anything", total=2) as bar:
        bar.update(2)
    seen = []
    callback = progress.counter("x")
    previous = progress.install(lambda desc, total, unit: _Recorder(seen, desc, total))
    try:
        for done in (1, 3, 3, 4):
            callback(done, 4)
        callback.close()
    finally:
        progress.install(previous)
    assert seen == [("x", 4), ("update", 1), ("update", 2), ("update", 1), ("close",)]


class _Recorder:
    def __init__(self, seen, desc, total):
        self.seen = seen
        seen.append((desc, total))

    def update(self, n=1):
        self.seen.append(("update", n))

    def set_postfix_str(self, text):
        pass

    def close(self):
        self.seen.append(("close",))


@pytest.mark.parametrize("soc", ["auto", "Ascend310", "Ascend310P3", "Ascend910B3", "Ascend910_9391", "Ascend310B1",
                                 "Ascend910B4-1"])
def test_soc_version_accepts_real_names(soc):
    assert SOC_VERSION.convert(soc, None, None) == soc


@pytest.mark.parametrize("soc,hint", [("ascend310", "did you mean Ascend310"), ("Ascend", "a name like Ascend310"),
                                      ("310P3", "a name like Ascend310"), ("Ascend310;rm", "a name like")])
def test_soc_version_rejects_non_soc_text(soc, hint):
    with pytest.raises(click.BadParameter, match=hint):
        SOC_VERSION.convert(soc, None, None)


def test_soc_version_completes_known_names():
    names = [c.value for c in SOC_VERSION.shell_complete(None, None, "Ascend310P")]
    assert names == ["Ascend310P1", "Ascend310P3", "Ascend310P5", "Ascend310P7"]


def test_pass_list_checks_names_and_completes_the_last_item():
    assert PASS_LIST.convert("softmax_transpose,cleanup", None, None) == ["softmax_transpose", "cleanup"]
    with pytest.raises(click.BadParameter, match="unknown pass 'softmax_transpos'.*valid passes: softmax_transpose"):
        PASS_LIST.convert("softmax_transpos", None, None)
    assert [c.value for c in PASS_LIST.shell_complete(None, None, "softmax_transpose,cl")] == [
        "softmax_transpose,cleanup"]


def test_model_name_completes_lvvit_but_accepts_any_name():
    assert [c.value for c in ModelName().shell_complete(None, None, "lvvit_")][:4] == [
        "lvvit_t", "lvvit_s", "lvvit_m", "lvvit_l"]
    assert ModelName().convert("vit_small_patch16_224", None, None) == "vit_small_patch16_224"


def test_format_table_aligns_numbers_right_and_text_left():
    text = format_table(["op", "before", "after"], [["Softmax", 12, 12], ["Transpose", 0, 24]],
                        footer=["total", 12, 36])
    assert text.splitlines() == [
        "op         before  after",
        "---------  ------  -----",
        "Softmax        12     12",
        "Transpose       0     24",
        "---------  ------  -----",
        "total          12     36",
    ]
    assert format_table(["model", "fps"], [], align="lr").splitlines() == ["model  fps", "-----  ---"]
    with pytest.raises(ValueError, match="2 cells"):
        format_table(["a", "b", "c"], [[1, 2]])
