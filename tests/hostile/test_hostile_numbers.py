"""Impossible numbers and late failures: opsets, memory, mismatched models, perf files that
cannot be right, a failing or interrupted atc, stale temporaries, outputs through symlinks."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from fakes.ascend_env import DATA_DIR, fake_tools, write_tiny_onnx  # noqa: F401  (fixtures)
from hostile_helpers import assert_refused, diff_snapshots, invoke, snapshot, temp_leftovers

SEED_PERF = DATA_DIR / "seed_baseline" / "perf_vision_batchsize_1_device_0.txt"

REFUSED = [
    ("export-opset-99", ["export", "--model", "lvvit_golden", "--opset", "99", "-o", "e.onnx"], "--opset 99"),
    ("export-opset-5", ["export", "--model", "lvvit_golden", "--opset", "5", "-o", "e.onnx"], "--opset 5"),
    ("export-img-size-huge", ["export", "--model", "lvvit_golden", "--img-size", "8192", "-o", "e.onnx"],
     "memory"),
    ("export-batch-huge", ["export", "--model", "lvvit_golden", "--batch-size", "65536", "-o", "e.onnx"],
     "memory"),
    ("export-garbage-checkpoint", ["export", "--model", "lvvit_golden", "--checkpoint", "keep.cfg", "-o", "e.onnx"],
     "not a PyTorch checkpoint"),
    ("export-unknown-model", ["export", "--model", "nosuch_vit_xyz", "-o", "e.onnx"], "nosuch_vit_xyz"),
    ("validate-inputs-huge", ["validate", "m.onnx", "m.onnx", "--inputs", "100000"], "memory"),
    ("golden-make-inputs-huge", ["golden", "make", "m.onnx", "-o", "g2.npz", "--inputs", "100000"], "memory"),
    ("validate-different-inputs", ["validate", "m.onnx", "renamed.onnx"], "different inputs"),
    ("validate-different-batch", ["validate", "m.onnx", "bs3.onnx"], "cannot run on the same feeds"),
    ("validate-not-onnx", ["validate", "m.onnx", "keep.cfg"], "keep.cfg"),
    ("golden-check-garbage", ["golden", "check", "m.onnx", "keep.cfg"], "keep.cfg"),
    ("apply-unknown-pass", ["apply", "m.onnx", "-o", "o.onnx", "--passes", "nosuchpass"], "nosuchpass"),
    ("apply-not-onnx", ["apply", "keep.cfg", "-o", "o.onnx"], "keep.cfg"),
    ("bench-not-a-model", ["bench", "keep.cfg", "--duration", "0.1", "--rounds", "1"], "keep.cfg"),
    ("atc-bad-soc", ["atc", "m.onnx", "--soc-version", "Ascend-x;rm", "--dry-run"], "soc"),
    ("whitelist-shape-zero", ["whitelist", "check", "--file", "opp/transpose.py", "--shape", "0,6,197,197"],
     "--shape"),
    ("whitelist-restore-unpatched", ["whitelist", "restore", "--file", "opp/transpose.py"], "nothing to restore"),
]


def _variants(ws: Path) -> None:
    """renamed.onnx (input `pixels`) and bs3.onnx (batch 3) beside m.onnx."""
    import onnx

    model = onnx.load(ws / "m.onnx")
    old = model.graph.input[0].name
    model.graph.input[0].name = "pixels"
    for node in model.graph.node:
        node.input[:] = ["pixels" if name == old else name for name in node.input]
    onnx.save(model, ws / "renamed.onnx")
    # a valid model with m.onnx's input at batch 3 (editing m.onnx's batch would contradict its
    # batch-2 constants, which the model gate refuses as an invalid model)
    from onnx import TensorProto, helper

    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [3, 3, 224, 224])
    features = helper.make_tensor_value_info("features", TensorProto.FLOAT, [3, 3, 224, 224])
    graph = helper.make_graph([helper.make_node("Relu", ["image"], ["features"])], "bs3", [image], [features])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), ws / "bs3.onnx")


@pytest.mark.parametrize("argv, words", [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_impossible_requests_are_one_line_exit_2(ws, argv, words):
    _variants(ws)
    before = snapshot(ws)
    outcome = invoke(argv, ws)
    assert_refused(outcome, 2, words)
    assert outcome.stdout == ""  # e.g. no TorchScript IR for --opset 99
    assert diff_snapshots(before, snapshot(ws)) == []


# -- perf files ----------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["-37.941", "nan", "inf", "0"])
def test_perf_file_with_impossible_throughput_is_an_error(tmp_path, value):
    from lvvit_opt.core.errors import ToolFailed
    from lvvit_opt.runtime.benchmark import parse_perf_file

    text = SEED_PERF.read_text().replace("Interface throughputRate: 37.941", f"Interface throughputRate: {value}")
    assert value in text
    path = tmp_path / "perf_vision_batchsize_1_device_0.txt"
    path.write_text(text)
    with pytest.raises(ToolFailed, match="cannot be a throughput"):
        parse_perf_file(path)


def test_perf_file_with_negative_stage_rate_is_an_error(tmp_path):
    from lvvit_opt.core.errors import ToolFailed
    from lvvit_opt.runtime.benchmark import parse_perf_text

    text = SEED_PERF.read_text().replace("[e2e] throughputRate: 35.5884", "[e2e] throughputRate: -35.5884")
    with pytest.raises(ToolFailed, match=r"\[e2e\] throughputRate is -35.5884"):
        parse_perf_text(text, "perf")


def test_real_perf_file_still_parses():
    from lvvit_opt.runtime.benchmark import parse_perf_file

    assert parse_perf_file(SEED_PERF).interface_throughput == pytest.approx(37.941)


# -- atc -----------------------------------------------------------------------------------

def test_failed_atc_leaves_no_half_written_om_and_keeps_the_old_one(tmp_path, fake_tools, monkeypatch):
    write_tiny_onnx(tmp_path / "m.onnx", batch=1)
    (tmp_path / "m.om").write_bytes(b"previous good model")
    monkeypatch.setenv("FAKE_ATC_PARTIAL", "1")
    monkeypatch.setenv("FAKE_ATC_FAIL", "1")
    outcome = invoke(["atc", "m.onnx", "--soc-version", "Ascend310"], tmp_path)
    assert_refused(outcome, 1, "atc failed")
    assert (tmp_path / "m.om").read_bytes() == b"previous good model"
    assert temp_leftovers(tmp_path) == [] and not list(tmp_path.glob("m_linux_*.om"))


def test_failed_atc_without_an_old_om_leaves_none(tmp_path, fake_tools, monkeypatch):
    write_tiny_onnx(tmp_path / "m.onnx", batch=1)
    monkeypatch.setenv("FAKE_ATC_PARTIAL", "1")
    monkeypatch.setenv("FAKE_ATC_FAIL", "1")
    assert_refused(invoke(["atc", "m.onnx", "--soc-version", "Ascend310"], tmp_path), 1, "atc failed")
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".om") == []


def test_successful_atc_replaces_the_old_om(tmp_path, fake_tools):
    write_tiny_onnx(tmp_path / "m.onnx", batch=1)
    (tmp_path / "m.om").write_bytes(b"previous good model")
    outcome = invoke(["atc", "m.onnx", "--soc-version", "Ascend310"], tmp_path)
    assert outcome.exit_code == 0, outcome.stderr
    oms = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".om")
    assert len(oms) == 1 and (tmp_path / oms[0]).read_bytes() != b"previous good model"
    assert temp_leftovers(tmp_path) == []


# -- temporaries and symlinked outputs -------------------------------------------------------

def test_stale_temps_of_dead_runs_are_swept_and_live_ones_kept(ws):
    dead = ws / "out" / ".o.onnx.lvvit-tmp.999999999.ab12.onnx"
    live = ws / "out" / f".o.onnx.lvvit-tmp.{os.getppid()}.cd34.onnx"
    foreign = ws / "out" / ".o.onnx.tmp"   # not our naming: never touched
    dead.parent.mkdir()
    for path in (dead, live, foreign):
        path.write_bytes(b"\0" * 1000)
    from lvvit_opt.core import fileio

    fileio._swept_dirs.discard(os.path.abspath(ws / "out"))
    outcome = invoke(["apply", "m.onnx", "-o", "out/o.onnx", "--passes", "cleanup", "-q"], ws)
    assert outcome.exit_code == 0, outcome.stderr
    assert not dead.exists() and live.exists() and foreign.exists()


def test_output_through_a_symlink_writes_the_target_and_keeps_the_link(ws):
    (ws / "target_dir").mkdir()
    os.symlink("target_dir/result.onnx", ws / "result_link.onnx")   # dangling until written
    outcome = invoke(["apply", "m.onnx", "-o", "result_link.onnx", "--passes", "cleanup", "-q"], ws)
    assert outcome.exit_code == 0, outcome.stderr
    assert os.path.islink(ws / "result_link.onnx")
    assert (ws / "target_dir" / "result.onnx").stat().st_size > 1000


def test_apply_validation_failure_writes_neither_output_nor_temp(ws, monkeypatch):
    """A rewritten graph that does not compute the same function: nothing at -o, no temp."""
    from lvvit_opt.verify import golden

    real = golden.compare_outputs

    def disagree(reference, candidate, tolerance=None):
        return real(reference, {k: v + 1.0 for k, v in candidate.items()}, tolerance)

    monkeypatch.setattr(golden, "compare_outputs", disagree)
    before = snapshot(ws)
    outcome = invoke(["apply", "m.onnx", "-o", "o.onnx", "--passes", "cleanup"], ws)
    assert outcome.exit_code == 1
    assert "Traceback" not in outcome.stderr
    assert diff_snapshots(before, snapshot(ws)) == []


@pytest.mark.parametrize("reported", [-0.01, float("nan"), 0.0])
def test_bench_refuses_an_impossible_inference_time(reported):
    from lvvit_opt.measure.bench import _timed_slot
    from lvvit_opt.core.errors import ToolFailed

    class Liar:
        last_infer_s = reported

        def infer(self, feed):
            return {}

        def describe(self):
            return {"backend": "ais_bench"}

    with pytest.raises(ToolFailed, match="cannot be right"):
        _timed_slot(Liar(), {}, 0.01, [])


@pytest.mark.parametrize("extra, words", [
    (["--extra-args", '"unbalanced'], "--extra-args"),
    (["--fusion-switch", "nosuch.cfg"], "nosuch.cfg"),
    (["--log", "loud"], "--log"),
], ids=["bad-extra-args", "missing-fusion-switch", "bad-log-level"])
def test_atc_checks_every_option_before_writing_the_keep_dtype_file(ws, extra, words):
    before = snapshot(ws)
    outcome = invoke(["atc", "m.onnx", "--soc-version", "Ascend310", "--keep-dtype-op", "Softmax", *extra], ws)
    assert_refused(outcome, 2, words)
    assert diff_snapshots(before, snapshot(ws)) == []


def test_external_data_save_failing_midway_leaves_neither_file(ws, monkeypatch):
    """A >2 GB model goes to NAME + NAME.data; a failure while writing them leaves the old
    pair (or nothing) in place and no temporary folder."""
    import onnx

    from lvvit_opt.core import onnx_files

    model = onnx.load(ws / "m.onnx")
    monkeypatch.setattr(onnx_files, "needs_external_data", lambda m: True)
    onnx_files.save_onnx(model, ws / "big.onnx")   # a first, good pair
    good = {name: (ws / name).read_bytes() for name in ("big.onnx", "big.onnx.data")}
    real_save = onnx.save_model

    def fail_after_data(proto, path, **kwargs):
        real_save(proto, path, **kwargs)
        raise KeyboardInterrupt  # e.g. Ctrl-C once the tensors are written

    monkeypatch.setattr(onnx, "save_model", fail_after_data)
    with pytest.raises(KeyboardInterrupt):
        onnx_files.save_onnx(model, ws / "big.onnx")
    assert {name: (ws / name).read_bytes() for name in good} == good
    assert temp_leftovers(ws) == []
    monkeypatch.setattr(onnx, "save_model", real_save)
    reloaded = onnx.load(ws / "big.onnx", load_external_data=False)
    assert reloaded.graph.initializer[0].data_location == onnx.TensorProto.EXTERNAL


def test_a_name_longer_than_the_file_system_allows_is_refused(ws):
    before = snapshot(ws)
    assert_refused(invoke(["apply", "m.onnx", "-o", "a" * 260 + ".onnx"], ws), 2, "longer than 255 bytes")
    assert diff_snapshots(before, snapshot(ws)) == []


def test_the_longest_legal_name_is_written_and_leaves_no_temp(ws):
    name = "a" * 250 + ".onnx"   # 255 bytes: our temp name must stay legal too
    outcome = invoke(["apply", "m.onnx", "-o", name, "--passes", "cleanup", "-q"], ws)
    assert outcome.exit_code == 0, outcome.stderr
    assert (ws / name).is_file() and temp_leftovers(ws) == []
