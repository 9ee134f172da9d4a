"""Caveats travel with the result (issue 34): random weights (from the model's metadata) give one
warning per command in one wording, on the console and in the JSON `warnings`, and a subtitle on
every plot; atc --dry-run says which CANN it checked against (doctor without CANN saying what
works here: tests/test_doctor.py test_nothing_installed); ais_bench's and msit's spellings of the dump flag are each named right."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fakes.ascend_env import no_tools  # noqa: F401
from lvvit_opt.cli import main
from lvvit_opt.models.metadata import PLOT_CAVEAT, RANDOM_WEIGHTS

WORDING = ("RANDOM weights (r.onnx was exported without a checkpoint): graphs, timings and validation are real; "
           "accuracy is meaningless")


@pytest.fixture(scope="module")
def random_onnx(tmp_path_factory) -> str:
    from lvvit_opt.export import export_onnx

    out = tmp_path_factory.mktemp("random") / "r.onnx"
    export_onnx(out, model="lvvit_golden", batch_size=1, log=lambda _m: None)
    return str(out)


@pytest.mark.parametrize("verb", [
    ["validate", "{m}", "{m}"],
    ["bench", "{m}", "{m}", "--duration", "0.1", "--rounds", "1", "--warmup", "0"],
    ["debug", "layers", "{m}", "{m}"],
    ["apply", "{m}", "-o", "{out}/o.onnx", "--no-validate"],
    ["golden", "make", "{m}", "-o", "{out}/g.npz"],
    ["atc", "{m}", "--soc-version", "Ascend310", "--dry-run"],
], ids=lambda v: " ".join(v[:2]))
def test_one_warning_one_wording_console_and_json(verb, random_onnx, tmp_path, cli_runner, no_tools):
    args = [a.format(m=random_onnx, out=tmp_path) for a in verb]
    result = cli_runner.invoke(main, [*args, "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    console = [line for line in result.stderr.splitlines() if RANDOM_WEIGHTS in line]
    assert console == [f"warning: {WORDING}"]
    warnings = json.loads((tmp_path / "r.json").read_text())["warnings"]
    assert [w for w in warnings if RANDOM_WEIGHTS in w] == [WORDING]


def test_a_checkpoint_model_gets_no_warning(golden_onnx, tmp_path, cli_runner):
    result = cli_runner.invoke(main, ["validate", golden_onnx, golden_onnx])
    assert result.exit_code == 0, result.output
    assert "RANDOM" not in result.stderr


def test_every_plot_carries_the_subtitle(random_onnx, golden_onnx, tmp_path, monkeypatch):
    import lvvit_opt.core.fileio as fileio
    from lvvit_opt.measure.bench import bench_models, plot_fps
    from lvvit_opt.tune.report import TuneReport, plot_tune

    captions = []
    real = fileio.write_figure

    def recording(fig, dest, caveat=None):
        captions.append(caveat)
        return real(fig, dest, caveat=caveat)

    monkeypatch.setattr(fileio, "write_figure", recording)
    report = bench_models([random_onnx], [1], duration=0.1, rounds=1, warmup=0)
    plot_fps(report, tmp_path / "fps.png")
    plot_tune(TuneReport([], None, None, "ort-cpu", {"model": random_onnx}, {}, {}, 0.0), tmp_path / "tune.png")
    checked = bench_models([golden_onnx], [2], duration=0.1, rounds=1, warmup=0)
    plot_fps(checked, tmp_path / "fps2.png")
    assert captions == [PLOT_CAVEAT, PLOT_CAVEAT, None]
    assert (tmp_path / "fps.png").read_bytes()[:4] == b"\x89PNG"


def test_write_figure_draws_the_caveat(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lvvit_opt.core.fileio import write_figure

    fig, _ = plt.subplots()
    texts = []
    fig.savefig = lambda *a, **k: texts.append(fig._suptitle.get_text() if fig._suptitle else None) or \
        Path(a[0]).write_bytes(b"png")
    write_figure(fig, tmp_path / "p.png", caveat=PLOT_CAVEAT)
    assert texts == [PLOT_CAVEAT]


def test_atc_dry_run_names_the_cann_it_checked_against(random_onnx, tmp_path, cli_runner, no_tools):
    assumed = cli_runner.invoke(main, ["atc", random_onnx, "--soc-version", "Ascend310", "--dry-run"])
    assert assumed.exit_code == 0
    assert assumed.stdout.startswith("atc ")  # stdout stays the command alone
    assert ("warning: readiness checked against CANN 8.0 (no CANN toolkit found here: assumed the newest "
            "documented); give --cann-version") in assumed.stderr
    given = cli_runner.invoke(main, ["atc", random_onnx, "--soc-version", "Ascend310", "--dry-run",
                                     "--cann-version", "5.0.4"])
    assert given.exit_code == 0
    assert "readiness checked against CANN 5.0 (--cann-version)" in given.stderr


def test_the_dump_flag_is_spelled_as_each_tool_spells_it(cli_runner):
    import lvvit_opt.debug.dump as dump

    help_text = cli_runner.invoke(main, ["debug", "layers", "--help"]).output
    assert "--dump_npy 1" in help_text and "msit benchmark spells it --dump-npy 1" in help_text
    assert "python -m ais_bench ... --dump_npy 1, msit benchmark ... --dump-npy 1" in Path(dump.__file__).read_text()
