"""bench/eval --device: one process per device, the card total measured (not multiplied), eval merged exactly.

The stand-in ais_bench and benchmark binary refuse device ids beyond FAKE_NPU_COUNT and write
under their own device id; FAKE_NPU_SLOW makes one chip slower, so a card total that was only
one chip's figure times four would show.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fakes.ascend_env import FAKES_DIR, VENV_BIN, fake_ais_bench, fake_om, fake_tools, write_tiny_onnx  # noqa: F401
from lvvit_opt.cli import main
from lvvit_opt.measure.evaluate import evaluate
from lvvit_opt.data.synthetic import make_image_dir, write_val_txt
from lvvit_opt.core.errors import ToolFailed, UserError
from lvvit_opt.scale import bench_any, evaluate_any
from lvvit_opt.scale.devices import parse_devices, split_evenly

SLOW_DEVICE, SLOW_MS = 2, 150


@pytest.fixture(scope="module")
def tiny_om(tmp_path_factory) -> str:
    """A one-op model (batch 2) compiled by the stand-in atc: its compute is negligible next to
    FAKE_NPU_SLOW's delay, so the slow chip stays slow however busy this machine is."""
    import subprocess

    folder = tmp_path_factory.mktemp("tiny_om")
    onnx_path = write_tiny_onnx(folder / "tiny.onnx", batch=2)
    env = dict(os.environ, PATH=os.pathsep.join([str(FAKES_DIR), VENV_BIN, os.environ.get("PATH", "")]))
    env.pop("FAKE_ATC_FAIL", None)
    subprocess.run([str(FAKES_DIR / "atc"), "--framework=5", f"--model={onnx_path}", f"--output={folder / 'tiny'}",
                    "--input_format=NCHW", "--input_shape=image:2,3,224,224", "--soc_version=Ascend310"],
                   env=env, check=True, capture_output=True)
    return str(folder / "tiny.om")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("devices")
    paths = make_image_dir(root / "val", 9, sizes=((160, 120), (120, 170), (300, 200)))
    val = write_val_txt(root / "val.txt", {p.name: (7 * i) % 1000 for i, p in enumerate(paths)})
    return root / "val", val


def test_parse_devices():
    assert parse_devices("0,1, 2,3") == [0, 1, 2, 3]
    for text, why in [("", "no device"), ("0,x", "comma-separated"), ("1,1", "device 1 given more than once"),
                      ("-1", "0 or more"), (",".join(map(str, range(65))), "at most 64")]:
        with pytest.raises(UserError, match=why):
            parse_devices(text)
    assert split_evenly(list(range(10)), 4) == [[0, 4, 8], [1, 5, 9], [2, 6], [3, 7]]


def test_bench_measures_each_ais_bench_device_and_the_card_total(fake_ais_bench, tiny_om, monkeypatch):
    monkeypatch.setenv("FAKE_NPU_COUNT", "4")
    monkeypatch.setenv("FAKE_NPU_SLOW", f"{SLOW_DEVICE}:{SLOW_MS}")
    om = tiny_om
    report = bench_any([om], devices=[0, 1, 2, 3], duration=1.2, rounds=2, warmup=0, validate=False,
                       log=lambda _m: None)
    (result,) = report.results
    rows = result.details["per_device"]
    card = result.details["card"]
    assert [r["device"] for r in rows] == [0, 1, 2, 3]
    assert [r["device_id"] for r in rows] == [0, 1, 2, 3]  # each runner opened on its own device
    assert len({r["pid"] for r in rows} | {os.getpid()}) == 5  # one process each, none of them this one
    assert result.fps == pytest.approx(sum(r["fps"] for r in rows)) == pytest.approx(card["measured_fps"])
    assert card["estimate_fps"] == pytest.approx(card["solo_fps"] * 4)
    slow = rows[SLOW_DEVICE]["fps"]
    fast = min(r["fps"] for r in rows if r["device"] != SLOW_DEVICE)
    assert slow < 0.5 * fast  # the slow chip is seen as slow ...
    assert card["measured_fps"] < 0.9 * card["estimate_fps"]  # ... so the measured card is below chip x 4
    assert result.round_fps == pytest.approx([sum(r["round_fps"][i] for r in rows) for i in range(2)])
    table = report.format_table()
    assert "card total measured" in table and "seed-style estimate" in table and "device 3:" in table
    assert report.settings["devices"] == [0, 1, 2, 3]


def test_bench_legacy_benchmark_binary_per_device(fake_tools, tiny_om, monkeypatch, cli_runner, tmp_path):
    monkeypatch.setenv("FAKE_NPU_SLOW", f"3:{SLOW_MS}")
    om = tiny_om
    out = tmp_path / "bench.json"
    run = cli_runner.invoke(main, ["bench", om, "--device", "1,3", "--duration", "0.2", "--rounds", "1",
                                   "--warmup", "0", "--skip-validate", "--json", str(out)])
    assert run.exit_code == 0, run.output
    data = json.loads(out.read_text())
    data = data.get("result", data)
    (result,) = data["results"]
    rows = result["details"]["per_device"]
    assert [(r["device"], r["device_id"], r["backend"]) for r in rows] == [(1, 1, "benchmark"), (3, 3, "benchmark")]
    assert rows[1]["fps"] < 0.5 * rows[0]["fps"]
    assert "chips" not in result["details"] and "card_fps" not in result["details"]
    assert result["fps"] == pytest.approx(rows[0]["fps"] + rows[1]["fps"])
    assert "seed-style estimate" in run.output


def test_a_device_that_fails_is_named_and_stops_the_others(fake_ais_bench, tiny_om, monkeypatch, cli_runner):
    monkeypatch.setenv("FAKE_NPU_COUNT", "2")
    om = tiny_om
    with pytest.raises(ToolFailed, match=r"^device 5: ais_bench cannot load .* device 5"):
        bench_any([om], devices=[0, 5], duration=0.2, rounds=1, warmup=0, validate=False, log=lambda _m: None)
    run = cli_runner.invoke(main, ["bench", om, "--device", "0,0", "--skip-validate"])
    assert run.exit_code == 2 and "device 0 given more than once" in run.output


def test_eval_on_four_npus_equals_one(fake_ais_bench, fake_om, images, monkeypatch):
    monkeypatch.setenv("FAKE_NPU_COUNT", "4")
    monkeypatch.setenv("FAKE_NPU_SLOW", f"{SLOW_DEVICE}:20")
    _, om = fake_om
    data, val = images
    one = evaluate(om, data, val, workers=1)
    four = evaluate_any(om, data, val, workers=1, devices=[0, 1, 2, 3])
    assert four.predictions == one.predictions and len(one.predictions) == 9
    assert four.accuracy.to_dict() == one.accuracy.to_dict()
    assert [d["runner"]["device_id"] for d in four.workers_detail] == [0, 1, 2, 3]
    assert [d["images"] for d in four.workers_detail] == [3, 2, 2, 2]


def test_cli_eval_device_on_cpu_equals_plain_eval(golden_onnx, images, cli_runner, tmp_path):
    data, val = images
    outs = {}
    for name, extra in (("plain", []), ("devices", ["--device", "0,1"])):
        outs[name] = tmp_path / f"{name}.json"
        run = cli_runner.invoke(main, ["eval", golden_onnx, "--data", str(data), "--labels", str(val), "--workers", "1",
                                       *extra, "--json", str(outs[name])])
        assert run.exit_code == 0, run.output
    plain, devices = (json.loads(outs[k].read_text()) for k in ("plain", "devices"))
    plain, devices = plain.get("result", plain), devices.get("result", devices)
    for key in ("evaluated", "top1_correct", "top5_correct", "missing_predictions", "unmatched_predictions"):
        assert devices["accuracy"][key] == plain["accuracy"][key]
    assert [d["worker"] for d in devices["workers_detail"]] == ["device 0", "device 1"]


def test_eval_with_the_legacy_benchmark_binary_on_two_devices(fake_tools, fake_om, images, monkeypatch):
    _, om = fake_om
    data, val = images
    one = evaluate(om, data, val, workers=1, limit=5)
    two = evaluate_any(om, data, val, workers=1, limit=5, devices=[1, 3])
    assert two.predictions == one.predictions and len(one.predictions) == 5
    assert [(d["runner"]["backend"], d["runner"]["device_id"]) for d in two.workers_detail] == \
        [("benchmark", 1), ("benchmark", 3)]


def test_labels_outside_the_models_classes_are_refused_on_devices_too(golden_onnx, images):
    data, _ = images
    labels = {p.name: 4321 for p in sorted(data.iterdir())}
    with pytest.raises(UserError, match=r"^device [01]: labels: 9 label\(s\) outside the model's 1000 classes"):
        evaluate_any(golden_onnx, data, labels, workers=1, devices=[0, 1])


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pids) -> list[int]:
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()
            and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
@pytest.mark.parametrize("signame, exit_code", [("SIGTERM", 143), ("SIGKILL", -9)])
def test_a_stopped_bench_stops_every_device_process(tiny_om, tmp_path, signame, exit_code):
    """SIGTERM: the children are stopped at once (not after a grace period each); kill -9 of
    the parent: they die with it (PR_SET_PDEATHSIG) instead of measuring on for minutes."""
    import signal
    import subprocess
    import sys
    import time

    env = dict(os.environ, PATH=os.pathsep.join([str(FAKES_DIR), VENV_BIN, os.environ.get("PATH", "")]),
               PYTHONPATH=str(FAKES_DIR / "python"), FAKE_NPU_COUNT="2", FAKE_NPU_SLOW="0:50,1:50",
               TMPDIR=str(tmp_path))  # kill -9 leaves bench's temporary folder behind: in tmp_path, not /tmp
    proc = subprocess.Popen([sys.executable, "-m", "lvvit_opt", "bench", tiny_om, "--device", "0,1", "--duration", "300",
                             "--warmup", "0", "--skip-validate"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while len(_children(proc.pid)) < 2 and time.monotonic() < deadline:  # the device processes (+ a tracker)
        time.sleep(0.2)
    time.sleep(3)  # into the measurement
    children = _children(proc.pid)
    sent = time.monotonic()
    proc.send_signal(getattr(signal, signame))
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == exit_code, output
    assert time.monotonic() - sent < 8, output  # no 10 s grace per child: a measurement is worthless once stopped
    deadline = time.monotonic() + 8
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(children), output
    assert "Traceback" not in output, output
