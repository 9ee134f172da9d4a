"""measure.stats: the interval, the verdicts, rotating adaptive rounds, machine load; and the
verdicts on real measurements (identical models under load, a planted slowdown)."""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lvvit_opt.measure import stats
from lvvit_opt.measure.bench import bench_models

SPEED = Path(__file__).parent / "data" / "speed"
QUIET = dict(log=lambda m: None, threads=1, warmup=0.1)


# ---------------------------------------------------------------- the interval and the verdicts

@pytest.mark.parametrize("df, expected", [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262),
                                          (29, 2.045)])
def test_t_quantile_matches_the_table(df, expected):
    assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=0.004)


def test_compare_is_a_t_interval_over_paired_log_ratios():
    base = [100.0, 80.0, 120.0, 90.0, 110.0]  # the machine drifts; the candidate follows it, 10 % faster
    cand = [b * f for b, f in zip(base, (1.11, 1.09, 1.10, 1.12, 1.08))]
    judged = stats.compare(cand, base)
    logs = [math.log(c / b) for c, b in zip(cand, base)]
    mean, sd = sum(logs) / 5, (sum((x - sum(logs) / 5) ** 2 for x in logs) / 4) ** 0.5
    half = 2.776 * sd / 5 ** 0.5
    assert judged.ratio == pytest.approx(math.exp(mean))
    assert (judged.low, judged.high) == (pytest.approx(math.exp(mean - half), rel=1e-3),
                                         pytest.approx(math.exp(mean + half), rel=1e-3))
    assert judged.verdict == "faster" and judged.rounds == 5
    # the same figures unpaired (rounds shuffled) would not be this narrow: pairing is what cancels drift
    assert stats.compare(cand, base[::-1]).half_width > 5 * judged.half_width
    assert stats.compare(base, cand).verdict == "slower"


def test_verdict_needs_the_interval_off_one_and_the_minimum_effect():
    base = [100.0] * 6
    tiny = [101.0, 101.1, 100.9, 101.0, 101.05, 100.95]  # 1 %, interval far from 1.0: below the minimum effect
    judged = stats.compare(tiny, base)
    assert judged.low > 1.0 and judged.verdict == "no measurable difference"
    assert stats.compare(tiny, base, min_effect=0.005).verdict == "faster"
    noisy = [130.0, 75.0, 120.0, 80.0, 125.0, 70.0]  # a large ratio whose interval holds 1.0
    assert stats.compare(noisy, base).verdict == "no measurable difference"


def test_one_round_or_nothing_gives_no_interval_and_no_claim():
    one = stats.compare([200.0], [100.0])
    assert one.verdict == "no measurable difference" and one.half_width == math.inf
    assert "no interval" in one.sentence("b", "a") and "faster" not in one.sentence("b", "a")
    assert stats.compare([], []).verdict == "no measurable difference"
    assert stats.compare([math.nan, 0.0], [1.0, 1.0]).rounds == 0
    data = one.to_dict()
    assert data["high"] is None and stats.Comparison.from_dict(data).high == math.inf


def test_sentences_name_the_interval_and_the_method():
    faster = stats.compare([110.0, 111.0, 109.0, 110.5], [100.0, 100.0, 100.0, 100.0])
    text = faster.sentence("opt.onnx", "base.onnx")
    assert text.startswith("opt.onnx is 1.10x faster than base.onnx (ratio 1.101x, 95% interval ")
    assert "4 paired round(s), Student t over the paired per-round log-ratios; minimum effect 3%" in text
    slower = stats.compare([100.0] * 4, [110.0, 111.0, 109.0, 110.5])
    assert " is 1.10x slower than " in slower.sentence("a", "b")


def test_no_other_module_writes_a_faster_sentence():
    """Only measure.stats forms "x faster" / "x slower" sentences (issue 33)."""
    root = Path(stats.__file__).parents[1]
    pattern = re.compile(r"x (faster|slower)\b")
    offenders = [str(p.relative_to(root.parent)) for p in list(root.rglob("*.py")) + list(
        (root.parent / "scripts").glob("*.py")) if p.name != "stats.py" and pattern.search(p.read_text())]
    assert offenders == []


# ---------------------------------------------------------------- rounds

def test_rotation_moves_every_configuration_through_every_place():
    assert [stats.rotation(3, r) for r in range(4)] == [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]
    firsts = {stats.rotation(2, r)[0] for r in range(2)}
    assert firsts == {0, 1}


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_rounds_stop_when_precise_and_say_so():
    clock = FakeClock()
    order = []

    def slot(i):
        clock.now += 0.1
        order.append(i)
        return 100.0 * (1 + 0.001 * (len(order) % 3))

    done = stats.measure_rounds(2, slot, min_rounds=3, seconds=100, clock=clock)
    assert done.stopped == "precise" and done.count == 3 and order == [0, 1, 1, 0, 0, 1]
    assert "every interval within +-3%" in done.stop_text()


def test_rounds_go_on_while_noisy_until_the_time_is_spent():
    clock = FakeClock()
    values = iter([100.0, 60.0, 100.0, 140.0] * 1000)

    def slot(i):
        clock.now += 0.25
        return next(values)

    done = stats.measure_rounds(2, slot, min_rounds=3, seconds=10, clock=clock)
    assert done.stopped == "time" and 3 < done.count <= 20
    assert done.to_dict()["text"].startswith(f"time ran out after {done.count} round(s)")


# ---------------------------------------------------------------- load

def fake_proc(tmp_path, loadavg: float, cores: int = 2) -> Path:
    """A /proc with the files proc(5) documents (loadavg, stat, self/stat)."""
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "loadavg").write_text(f"{loadavg:.2f} {loadavg:.2f} {loadavg:.2f} 3/412 9876\n")
    cpus = "".join(f"cpu{i} 100 0 50 1000 5 0 1 0 0 0\n" for i in range(cores))
    (proc / "stat").write_text(f"cpu  {100 * cores} 0 {50 * cores} {1000 * cores} 5 0 1 0 0 0\n{cpus}"
                               "intr 1\nctxt 1\nbtime 1\nprocesses 1\nprocs_running 1\nprocs_blocked 0\n")
    (proc / "self" / "stat").write_text("4242 (python (x)) R 1 4242 4242 0 -1 4194304 100 0 0 0 "
                                        "30 5 0 0 20 0 1 0 100 1000 100 18446744073709551615\n")
    return proc


def test_a_load_of_twice_the_cores_warns(tmp_path):
    report = stats.LoadMonitor(fake_proc(tmp_path, 4.0)).start().stop()
    assert report.cores == 2 and report.loadavg_before == 4.0
    assert report.warnings[0] == ("machine not quiet: load average 4.00 on 2 core(s) before measuring "
                                  "(above 0.5 per core)")
    assert not report.quiet and report.to_dict()["quiet"] is False
    quiet = stats.LoadMonitor(fake_proc(tmp_path / "q", 0.2)).start().stop()
    assert quiet.quiet and quiet.warnings == []


def test_cpu_times_parse_proc_stat(tmp_path):
    times = stats.read_cpu_times(fake_proc(tmp_path, 1.0))
    assert (times.total, times.busy, times.steal, times.own) == (2306, 301, 0, 35)
    assert stats.read_cpu_times(tmp_path / "nowhere") is None


@pytest.fixture
def two_busy_processes():
    """Two CPU-bound processes beside the test (on 2 cores: the machine is saturated)."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_busy_processes_beside_the_measurement_warn(two_busy_processes):
    import time

    with stats.LoadMonitor() as load:
        time.sleep(1.0)
    assert load.report.others_busy > 0.5
    assert any("other processes kept" in w for w in load.report.warnings)


# ---------------------------------------------------------------- verdicts on real measurements

@pytest.mark.slow  # about 30 s on 2 cores
def test_identical_models_under_load_show_no_measurable_difference(tmp_path, two_busy_processes):
    """Two byte-identical models, two busy processes beside them: `no measurable difference`
    in at least 19 of 20 benches, and every one of them carries the load warning."""
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    shutil.copyfile(SPEED / "matmul.onnx", first)
    shutil.copyfile(SPEED / "matmul.onnx", second)
    verdicts = []
    for _ in range(20):
        report = bench_models([str(first), str(second)], duration=0.8, rounds=4, **QUIET)
        verdicts.append(report.results[1].judged().verdict)
        assert any("other processes kept" in w for w in report.warnings)
    assert verdicts.count("no measurable difference") >= 19, verdicts


def test_a_planted_slowdown_is_slower_with_an_interval_below_one():
    report = bench_models([str(SPEED / "matmul.onnx"), str(SPEED / "matmul_planted.onnx")], duration=1.0,
                          rounds=4, **QUIET)
    judged = report.results[1].judged()
    assert judged.verdict == "slower" and judged.high < 1.0, judged
    assert any(" is " in line and "x slower than " in line for line in report.verdicts())


def test_the_planted_model_computes_the_same_output():
    import numpy as np
    import onnxruntime as ort

    x = np.random.default_rng(1).standard_normal((32, 128)).astype(np.float32)
    outs = [ort.InferenceSession(str(SPEED / name), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
            for name in ("matmul.onnx", "matmul_planted.onnx")]
    np.testing.assert_array_equal(outs[0], outs[1])


def test_bench_cli_under_load_prints_the_warning_and_puts_it_in_the_json(tmp_path, cli_runner, monkeypatch):
    """A load average of twice the cores before measuring: the console and --json say so, and
    the ratio still comes with its interval and verdict."""
    from lvvit_opt.cli import main

    monkeypatch.setattr(stats, "read_loadavg", lambda proc="/proc": 2.0 * stats.cpu_count())
    json_out = tmp_path / "bench.json"
    model = str(SPEED / "matmul.onnx")
    result = cli_runner.invoke(main, ["bench", model, str(SPEED / "matmul_planted.onnx"), "--duration", "0.6",
                                      "--rounds", "3", "--warmup", "0.1", "--threads", "1", "--json", str(json_out)])
    assert result.exit_code == 0, result.output
    data = json.loads(json_out.read_text())["result"]
    expected = f"load average {2.0 * stats.cpu_count():.2f} on {stats.cpu_count()} core(s) before measuring"
    assert any(expected in w for w in data["warnings"]) and data["load"]["quiet"] is False
    assert expected in result.output
    assert "x slower than" in result.output and data["results"][1]["comparison"]["verdict"] == "slower"


def test_the_minimum_rounds_hold_unless_the_time_is_a_hard_budget():
    values = iter([100.0, 60.0, 100.0, 140.0] * 100)

    def rounds(hard: bool) -> stats.Rounds:
        clock = FakeClock()

        def slot(i):
            clock.now += 1.0  # every slot longer than planned
            return next(values)

        return stats.measure_rounds(2, slot, min_rounds=5, seconds=2, hard_limit=hard, clock=clock)

    assert (rounds(False).count, rounds(False).stopped) == (5, "time")  # bench: --rounds is a floor
    assert (rounds(True).count, rounds(True).stopped) == (2, "time")  # tune: --budget is a ceiling
