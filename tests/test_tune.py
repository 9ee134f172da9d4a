"""tune: the gate rejects a faulty candidate, the chosen one is the fastest passing one by the
measured table, resume reuses, the budget holds, bad --space / unavailable targets are refused,
and the ascend target reports per-candidate atc failures (stand-in tools)."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from fakes.ascend_env import fake_ais_bench, fake_tools  # noqa: F401  (fixtures)
from lvvit_opt.tune import search as tune_mod
from lvvit_opt.cli import main
from lvvit_opt.core.errors import UserError
from lvvit_opt.tune.search import (STATE_FILE, Candidate, TuneOptions, load_space, pareto_front, parse_budget,
                                   space_from_mapping, tune)

QUICK = dict(rounds=3, warmup_s=0.05, max_finalists=3)


@pytest.fixture(scope="module")
def lvvit_t_dynamic(tmp_path_factory) -> str:
    """lvvit_t (random init) with a symbolic batch, so every batch size runs."""
    from lvvit_opt.export import export_onnx

    out = tmp_path_factory.mktemp("tune") / "lvvit_t_dyn.onnx"
    export_onnx(out, model="lvvit_t", dynamic_batch=True, log=lambda m: None)
    return str(out)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> str:
    from lvvit_opt.data.synthetic import make_image_dir

    folder = tmp_path_factory.mktemp("tune_images")
    make_image_dir(folder, 6, sizes=((256, 240), (300, 260)))
    return str(folder)


def _space(**lists):
    base = {"batch_sizes": [1, 2], "pass_sets": [[]], "precisions": ["fp32", "fp16"], "threads": [1],
            "graph_opt": ["all"]}
    base.update(lists)
    return space_from_mapping(base, "ort-cpu")


def scale_fp16_logits(candidate: Candidate, model):
    """The injected error: every class of an fp16 candidate's output multiplied by its own random
    factor in [-1, 1], which reorders the classes (argmax changes) but leaves fp32 ones alone."""
    if candidate.precision == "fp32":
        return model
    out = model.graph.output[0]
    producer = next(n for n in model.graph.node if out.name in n.output)
    raw = out.name + "_before_injected_error"
    producer.output[list(producer.output).index(out.name)] = raw
    classes = 1000
    factors = np.random.default_rng(7).uniform(-1, 1, size=classes).astype(np.float32)
    model.graph.initializer.append(numpy_helper.from_array(factors, "injected_factors"))
    model.graph.node.append(helper.make_node("Mul", [raw, "injected_factors"], [out.name], name="injected_error"))
    return model


@pytest.fixture(scope="module")
def first_run(lvvit_t_dynamic, images, tmp_path_factory):
    out = tmp_path_factory.mktemp("tune_out") / "run"
    options = TuneOptions(model=lvvit_t_dynamic, inputs=images, out=str(out), budget_s=25, space=_space(), **QUICK)  # gates 4 lvvit_t builds on a busy 2-core machine
    return options, tune(options, log=lambda m: None, build_hook=scale_fp16_logits)


def test_gate_rejects_the_faulty_fp16_candidates_and_says_why(first_run):
    _, report = first_run
    fp16 = [c for c in report.candidates if c.precision == "fp16"]
    assert fp16 and all(c.status == "rejected" for c in fp16)
    for c in fp16:
        assert c.agreement < 0.995
        assert "top-1 agreement" in c.reason and "< 99.5%" in c.reason
    assert all(c.status in ("measured", "pruned") and c.gate["passed"] for c in report.candidates
               if c.precision == "fp32")
    assert "rejected: top-1 agreement" in report.format_table()


def test_chosen_config_follows_the_statistics_of_the_measured_table(first_run):
    """The best is the simplest tie of the fastest that is measurably faster than the baseline,
    else the baseline itself; ties and the before/after ratio come from measure.stats."""
    from lvvit_opt.measure.stats import compare

    options, report = first_run
    measured = [c for c in report.candidates if c.status == "measured"]
    assert measured and all(c.gate["passed"] for c in measured)
    fastest = max(measured, key=lambda c: c.timing["fps"])
    baseline = report.by_key(report.baseline)
    assert report.baseline == "bs1|none|fp32|graph_opt=all,threads=1"
    assert baseline.status == "measured"  # the default is always measured alongside
    ties = [c for c in measured if c is fastest or compare(c.timing["round_rates"], fastest.timing["round_rates"]).verdict
            == "no measurable difference"]
    winners = [c for c in ties if c is not baseline
               and compare(c.timing["round_rates"], baseline.timing["round_rates"]).verdict == "faster"]
    expected = min(winners, key=lambda c: (c.batch, c.key)) if winners else baseline  # fp32, no passes: by batch
    assert report.best == expected.key
    assert report.verdict["claim"] == bool(winners)
    if winners:
        assert " faster than the baseline" in report.verdict["text"]
    else:
        assert report.verdict["text"].startswith("no configuration measurably faster than the baseline")
    rounds = {len(c.timing["round_fps"]) for c in measured} | {len(c.timing["round_rates"]) for c in measured}
    assert len(rounds) == 1 and rounds.pop() >= 3  # one run, paired round for round
    assert report.rounds["stopped"] in ("precise", "time") and report.rounds["rounds"] >= 3
    for c in measured:
        t = c.timing
        assert t["fps"] == pytest.approx(t["fps_per_batch"] * c.batch)
        assert t["p50_ms"] <= t["p99_ms"]
        assert c.tie == (c in ties and c.key != report.best)
        if c is not baseline:
            assert t["vs_baseline"]["verdict"] == compare(t["round_rates"], baseline.timing["round_rates"]).verdict
    best = report.by_key(report.best)
    out = Path(options.out)
    saved = json.loads((out / "tune.json").read_text())
    assert saved["best"] == report.best and saved["verdict"]["claim"] == report.verdict["claim"]
    assert saved["load"]["cores"] >= 1 and saved["warnings"] == saved["load"]["warnings"]
    assert (out / "tune.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best_model = onnx.load(out / "best.onnx")
    assert "injected_error" not in [n.name for n in best_model.graph.node]
    script = (out / "reproduce.sh").read_text()
    assert f"lvvit-opt bench best.onnx --batch-sizes {best.batch} --threads 1" in script  # relative to out
    assert [r["batch"] for r in report.before_after] == sorted({1, best.batch})
    for row in report.before_after:
        assert row["comparison"] is None or row["comparison"]["verdict"] in ("faster", "slower",
                                                                              "no measurable difference")


def test_rerun_with_the_same_out_reuses_every_candidate(first_run):
    options, report = first_run
    again = tune(options, log=lambda m: None, build_hook=scale_fp16_logits)
    assert all(c.reused for c in again.candidates)
    assert again.measured_s == 0.0  # nothing ran again
    assert again.best == report.best
    assert {c.key: c.timing for c in again.candidates} == {c.key: c.timing for c in report.candidates}
    other = TuneOptions(**{**options.__dict__, "min_agreement": 90.0})
    with pytest.raises(UserError, match="holds a tune of something else \\(min_agreement differ"):
        tune(other, log=lambda m: None)


def test_budget_is_respected(lvvit_t_dynamic, images, tmp_path):
    budget = 8.0
    options = TuneOptions(model=lvvit_t_dynamic, inputs=images, out=str(tmp_path / "b"), budget_s=budget,
                          space=_space(batch_sizes=[1, 2, 3], precisions=["fp32"], threads=[1, 2]), **QUICK)
    report = tune(options, log=lambda m: None)
    assert report.wall_s <= budget + 4.0  # writing the plot and report after the last slot
    assert report.best is not None


def test_space_files_json_and_yaml(tmp_path):
    from lvvit_opt.tune.space import default_space

    (tmp_path / "s.yaml").write_text("batch_sizes: [8, 1]\npass_sets: [none, [softmax_transpose]]\n"
                                     "precisions: [fp32]\ngraph_opt: [disabled]\n")
    space = load_space(tmp_path / "s.yaml", "ort-cpu")
    assert space.batch_sizes == [1, 8] and space.pass_sets == [[], ["softmax_transpose"]]
    assert space.precisions == ["fp32"] and space.graph_opt == ["disabled"]
    (tmp_path / "s.json").write_text(json.dumps({"threads": [1], "op_select_implmodes": ["high_precision"]}))
    assert load_space(tmp_path / "s.json", "ascend").op_select_implmodes == ["high_precision"]
    # precision is its own dimension: the default pass sets leave the precision-lowering to_fp16 out
    pass_sets = default_space("ort-cpu").pass_sets
    assert ["to_fp16"] not in pass_sets and ["softmax_transpose"] in pass_sets


@pytest.mark.parametrize("name, text, message", [
    ("bad.json", '{"batch_size": [1]}', "unknown key(s) batch_size"),
    ("bad.yaml", "batch_sizes: [1, 2\n", "not valid YAML"),
    ("bad2.json", '{"precisions": ["int4"]}', "precisions has 'int4'"),  # int8 is a precision (quantize)
    ("bad3.json", '{"pass_sets": [["no_such_pass"]]}', "unknown pass 'no_such_pass'"),
    ("bad4.json", '{"batch_sizes": [0]}', "batch_sizes has 0: expected a batch size in 1..65536"),
    ("bad5.json", "[1, 2]", "expected a mapping"),
    ("bad6.json", '{"pass_sets": [["softmax_transpose", "to_fp16"]]}', "to_fp16 changes the precision"),
])
def test_bad_space_is_refused_in_one_line(cli_runner, tmp_path, golden_onnx, name, text, message):
    space = tmp_path / name
    space.write_text(text)
    result = cli_runner.invoke(main, ["tune", golden_onnx, "--inputs", "1", "--out", str(tmp_path / "o"),
                                      "--space", str(space)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("target, provider", [("ort-cuda", "CUDAExecutionProvider"),
                                              ("ort-trt", "TensorrtExecutionProvider")])
def test_gpu_targets_refused_where_onnxruntime_lacks_the_provider(cli_runner, tmp_path, golden_onnx, target,
                                                                   provider):
    import onnxruntime

    if provider in onnxruntime.get_available_providers():
        pytest.skip(f"this onnxruntime has {provider}")
    result = cli_runner.invoke(main, ["tune", golden_onnx, "--inputs", "1", "--out", str(tmp_path / "o"),
                                      "--target", target])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and provider in result.output


def test_budget_and_helpers():
    assert parse_budget("10m") == 600 and parse_budget("90s") == 90 and parse_budget("1.5h") == 5400
    assert parse_budget(12) == 12
    for bad in ("soon", "-1m", "0", "nanm"):
        with pytest.raises(UserError):
            parse_budget(bad)
    # (fps, agreement): the third is beaten on both axes by the first
    assert pareto_front([(10, 1.0), (20, 0.9), (9, 0.95), (20, 0.9)]) == [0, 1, 3]


def test_ascend_target_skips_candidates_whose_atc_fails(fake_ais_bench, golden_onnx, images, tmp_path,
                                                        monkeypatch):
    original = tune_mod.AscendTarget.artefact

    def atc_fails_for_high_precision(self, onnx_path, cand, workdir):
        if cand.options["op_select_implmode"] == "high_precision":
            self.env["FAKE_ATC_FAIL"] = "1"  # the stand-in prints a real E19010/EZ3003 failure
        else:
            self.env.pop("FAKE_ATC_FAIL", None)
        return original(self, onnx_path, cand, workdir)

    monkeypatch.setattr(tune_mod.AscendTarget, "artefact", atc_fails_for_high_precision)
    space = space_from_mapping({"batch_sizes": [2], "pass_sets": [[]], "precisions": ["fp32"],
                                "precision_modes": ["force_fp16"],
                                "op_select_implmodes": ["high_performance", "high_precision"],
                                "whitelist": ["unpatched"]}, "ascend")
    options = TuneOptions(model=golden_onnx, inputs=images, out=str(tmp_path / "npu"), target="ascend",
                          budget_s=10, space=space, soc_version="Ascend310", **QUICK)
    report = tune(options, log=lambda m: None)
    by_mode = {c.options["op_select_implmode"]: c for c in report.candidates}
    failed = by_mode["high_precision"]
    assert failed.status == "failed" and "atc failed" in failed.reason and "E19010" in failed.reason
    good = by_mode["high_performance"]
    assert good.status == "measured" and report.best == good.key
    assert good.gate["passed"] and "min_cosine=0.999" in good.gate["metric"]
    assert (Path(options.out) / "best.om").is_file()
    script = (Path(options.out) / "reproduce.sh").read_text()
    assert "--op_select_implmode=high_performance" in script and "--soc_version=Ascend310" in script


@pytest.mark.slow  # the keep-dtype search (debug layers --fp16) runs: ~15 s
def test_fp16_keep_is_built_only_where_plain_fp16_fails(golden_onnx, images, tmp_path):
    space = space_from_mapping({"batch_sizes": [2], "pass_sets": [[]], "precisions": ["fp32", "fp16", "fp16-keep"],
                                "threads": [1], "graph_opt": ["all"]}, "ort-cpu")
    options = TuneOptions(model=golden_onnx, inputs=images, out=str(tmp_path / "a"), budget_s=10, space=space, **QUICK)
    keep = next(c for c in tune(options, log=lambda m: None).candidates if c.precision == "fp16-keep")
    assert keep.status == "skipped" and "plain fp16 already passes" in keep.reason

    def break_plain_fp16(candidate, model):  # the keep-dtype search then runs on the real fp16 conversion
        return scale_fp16_logits(candidate, model) if candidate.precision == "fp16" else model

    options.out = str(tmp_path / "b")
    report = tune(options, log=lambda m: None, build_hook=break_plain_fp16)
    by_precision = {c.precision: c for c in report.candidates}
    assert by_precision["fp16"].status == "rejected"
    keep = by_precision["fp16-keep"]
    # the unbroken fp16 graph agrees everywhere, so debug's search finds nothing to keep
    assert keep.status == "skipped" and "found no node to keep" in keep.reason


def test_cli_end_to_end_json_and_refusals(cli_runner, golden_onnx, images, tmp_path):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"batch_sizes": [2], "pass_sets": [[]], "precisions": ["fp32"], "threads": [1],
                                 "graph_opt": ["all"]}))
    out = tmp_path / "o"
    result = cli_runner.invoke(main, ["tune", golden_onnx, "--inputs", images, "--out", str(out), "--space", str(space),
                                      "--budget", "8s", "--rounds", "2", "--warmup", "0", "--json", "-"])
    assert result.exit_code == 0, result.output
    envelope = json.loads(result.stdout[result.stdout.index("{"):])  # stderr: warnings (a loaded machine)
    assert envelope["ok"] and envelope["result"]["best"] == "bs2|none|fp32|graph_opt=all,threads=1"
    assert envelope["warnings"] == envelope["result"]["warnings"]  # the load warnings reach the envelope too
    assert envelope["result"]["best"] == envelope["result"]["baseline"]  # one candidate: the default itself
    assert (out / "best.onnx").is_file() and (out / STATE_FILE).is_file()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for args, message in ((["--out", str(a_file)], "is a file"),
                          (["--out", str(tmp_path / "p"), "--model", "lvvit_t"], "one of them"),
                          (["--out", str(tmp_path / "p"), "--budget", "soon"],
                           "'--budget': 'soon': expected seconds in [1, 604800]")):
        result = cli_runner.invoke(main, ["tune", golden_onnx, "--inputs", "1", *args])
        assert result.exit_code == 2 and message in result.output, result.output
        assert result.output.strip().count("\n") == 0


def test_a_pass_that_breaks_the_graph_fails_its_candidates_only(golden_onnx, tmp_path):
    from lvvit_opt.passes import GraphPass, registered

    class DropFirstNode(GraphPass):
        """Test pass: deletes the first node, leaving a dangling input."""

        name = "drop_first_node_for_tune"

        def rewrite(self, model, report):
            del model.graph.node[0]

    with registered(DropFirstNode):
        space = space_from_mapping({"batch_sizes": [2], "pass_sets": [[], ["drop_first_node_for_tune"]],
                                    "precisions": ["fp32"], "threads": [1], "graph_opt": ["all"]}, "ort-cpu")
        options = TuneOptions(model=golden_onnx, inputs=1, out=str(tmp_path / "o"), budget_s=8, space=space,
                              **QUICK)
        report = tune(options, log=lambda m: None)
    broken = next(c for c in report.candidates if c.passes)
    assert broken.status == "failed" and "drop_first_node_for_tune" in broken.reason
    assert report.best == "bs2|none|fp32|graph_opt=all,threads=1"
    assert any("RANDOM inputs" in n for n in report.notes)  # --inputs 1: the gate says what it ran on


def _hand_built(path: Path, classes: int) -> str:
    """Not an exporter's graph: Flatten -> MatMul -> Add with a symbolic batch, built with onnx.helper."""
    rng = np.random.default_rng(3)
    weight = numpy_helper.from_array(rng.standard_normal((48, classes)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["mm"]),
         helper.make_node("Add", ["mm", "b"], ["y"])], "hand",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 3, 4, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", classes])], [weight, bias])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return str(path)


def test_a_hand_built_graph_and_a_non_classifier_output(tmp_path):
    space = {"batch_sizes": [1, 2], "pass_sets": [[], ["softmax_transpose"]], "precisions": ["fp32", "fp16"],
             "threads": [1], "graph_opt": ["all"]}
    for classes in (10, 1):
        options = TuneOptions(model=_hand_built(tmp_path / f"m{classes}.onnx", classes), inputs=2,
                              out=str(tmp_path / f"o{classes}"), budget_s=4,
                              space=space_from_mapping(space, "ort-cpu"), **QUICK)
        report = tune(options, log=lambda m: None)
        gated = [c for c in report.candidates if c.gate]
        assert gated and report.best is not None
        # no Softmax here: the rewrite changes nothing and is reported as a duplicate, not measured twice
        assert all(c.status == "duplicate" for c in report.candidates if c.passes)
        if classes == 1:
            assert all(c.agreement is None and "top-1 n/a" in c.gate["metric"] for c in gated)
        else:
            assert all(c.agreement == 1.0 and "top-1 agreement >= 99.5%" in c.gate["metric"] for c in gated)


def test_ascend_fp16_keep_compiles_with_a_keep_dtype_file(fake_ais_bench, golden_onnx, images, tmp_path, monkeypatch):
    from lvvit_opt.verify.golden import Tolerance

    first_node = onnx.load(golden_onnx).graph.node[0].name
    monkeypatch.setattr(tune_mod, "suggest_keep_nodes", lambda path, inputs: [first_node])
    # the plain candidate (atc's fp16 of the fp32 ONNX) judged exactly, so it fails and fp16-keep is built
    monkeypatch.setattr(tune_mod.AscendTarget, "tolerance",
                        lambda self, c: Tolerance(atol=0.0, rtol=0.0, min_cosine=None) if c.precision == "fp32"
                        else Tolerance.fp16())
    space = space_from_mapping({"batch_sizes": [2], "pass_sets": [[]], "precisions": ["fp32", "fp16", "fp16-keep"],
                                "precision_modes": ["force_fp16"], "op_select_implmodes": ["high_performance"],
                                "whitelist": ["unpatched"]}, "ascend")
    assert space.precisions == ["fp32", "fp16-keep"] and "precision fp16 ignored" in space.notes[0]
    options = TuneOptions(model=golden_onnx, inputs=images, out=str(tmp_path / "npu"), target="ascend",
                          budget_s=8, space=space, soc_version="Ascend310", **QUICK)
    report = tune(options, log=lambda m: None)
    plain, keep = sorted(report.candidates, key=lambda c: c.precision != "fp32")
    assert plain.status == "rejected" and "atol" in plain.reason
    assert keep.status == "measured" and report.best == keep.key and keep.gate["keep_fp32"] == [first_node]
    out = Path(options.out)
    assert (out / "best.keep_dtype.cfg").read_text() == first_node + "\n"
    script = (out / "reproduce.sh").read_text()
    assert "--keep_dtype=best.keep_dtype.cfg" in script and "to_fp16" not in script


def test_graph_opt_levels_are_a_dimension_each_candidate_runs_at(golden_onnx, images, tmp_path, opened_levels):
    """--space may ask for onnxruntime's four levels (the default tries all and disabled); each
    candidate's session runs at its own level, and reproduce.sh says which level was tuned."""
    from lvvit_opt.tune.space import GRAPH_OPT_LEVELS, default_space

    assert default_space("ort-cpu").graph_opt == ["all", "disabled"]
    assert GRAPH_OPT_LEVELS == ("all", "extended", "basic", "disabled")
    with pytest.raises(UserError, match="graph_opt has 'fast'"):
        _space(graph_opt=["fast"])
    space = _space(batch_sizes=[2], precisions=["fp32"], graph_opt=["extended", "basic"])
    options = TuneOptions(model=golden_onnx, inputs=images, out=str(tmp_path / "o"), budget_s=10, space=space, **QUICK)
    report = tune(options, log=lambda m: None)
    levels = {c.options["graph_opt"] for c in report.candidates}
    assert levels == {"extended", "basic"}
    import onnxruntime as ort

    expected = {"extended": int(ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED),
                "basic": int(ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)}
    assert {level for level, _ in opened_levels} >= {"extended", "basic"}
    assert all(value == expected[level] for level, value in opened_levels if level in expected)
    best = next(c for c in report.candidates if c.key == report.best)
    script = (tmp_path / "o" / "reproduce.sh").read_text()
    assert f"--threads 1 --graph-opt {best.options['graph_opt']}" in script and "bench uses ALL" not in script


def test_reproduce_bench_line_names_the_level_and_runs_as_written(golden_onnx, images, tmp_path, opened_levels,
                                                                   cli_runner, monkeypatch):
    """reproduce.sh's bench line carries --graph-opt LEVEL, and that very line (split as the shell
    would, given to the CLI in this process) measures the best model at the tuned level."""
    import shlex

    import onnxruntime as ort


    space = _space(batch_sizes=[2], precisions=["fp32"], graph_opt=["disabled"])
    out = tmp_path / "tuned dir"  # a space in the path: the line quotes it
    options = TuneOptions(model=golden_onnx, inputs=images, out=str(out), budget_s=10, space=space, **QUICK)
    report = tune(options, log=lambda m: None)
    assert report.best == "bs2|none|fp32|graph_opt=disabled,threads=1"
    (line,) = [line for line in (out / "reproduce.sh").read_text().splitlines() if line.startswith("lvvit-opt bench")]
    argv = shlex.split(line)
    assert argv[:2] == ["lvvit-opt", "bench"] and argv[2] == "best.onnx"  # the script runs in its own folder
    assert argv[argv.index("--graph-opt") + 1] == "disabled" and "#" not in line
    assert line in report.reproduce
    tuned = len(opened_levels)  # the sessions tune opened; the bench line's come after
    json_out = tmp_path / "bench.json"
    # the line as written, in the script's folder; only the measuring time is shortened after it
    monkeypatch.chdir(out)
    result = cli_runner.invoke(main, [*argv[1:], "--duration", "0.3", "--rounds", "1", "--warmup", "0",
                                      "--json", str(json_out)])
    assert result.exit_code == 0, result.output
    benched = [value for _, value in opened_levels[tuned:]]
    assert benched and set(benched) == {int(ort.GraphOptimizationLevel.ORT_DISABLE_ALL)}
    settings = json.loads(json_out.read_text())["result"]["settings"]
    assert (settings["graph_opt"], settings["threads"], settings["batch_sizes"]) == ("disabled", 1, [2])


# ------------------------------------------------------------------ ascend: the transpose whitelist dimension

def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def whitelist_era_cann(fake_ais_bench, tmp_path, monkeypatch):
    """A CANN 8.1 tree whose transpose.py is a white-list-era one (golden's shapes not listed), and the
    stand-in atc choosing Transpose / TransposeD by the transpose.py of $ASCEND_OPP_PATH, as real atc does."""
    from fakes.cann_tree import build_cann_tree

    tree = build_cann_tree(tmp_path / "Ascend", era="whitelist")
    monkeypatch.setenv("LVVIT_FAKE_ATC_READ_OPP", "1")
    return tree


def _record_atc(monkeypatch) -> list[dict]:
    """Every atc run of tune: the ASCEND_OPP_PATH it was given and the kernels the stand-in compiled into the .om."""
    import lvvit_opt.ascend.atc as atc_mod
    from fake_ascend import read_om  # the stand-in's own .om reader (fake_ais_bench puts it on sys.path)

    runs = []
    real_run_atc = atc_mod.run_atc

    def recording(command, **kwargs):
        result = real_run_atc(command, **kwargs)
        header, _ = read_om(str(result.om_path))
        runs.append({"opp": kwargs["env"].get("ASCEND_OPP_PATH"), "command": list(command),
                     "transpose_kernels": sorted({v for v in header["ge_types"].values() if v.startswith("Transpose")})})
        return result

    monkeypatch.setattr(atc_mod, "run_atc", recording)
    return runs


def test_ascend_whitelist_patched_compiles_against_a_private_opp_tree(whitelist_era_cann, golden_onnx, images,
                                                                        tmp_path, monkeypatch):
    from lvvit_opt.tune.opp import OPP_DIR
    from lvvit_opt.tune.space import default_space
    from lvvit_opt.whitelist import check_shapes, shapes_from_model

    assert default_space("ascend").whitelist == ["unpatched", "patched"] and default_space("ort-cpu").whitelist == []
    tree = whitelist_era_cann
    installed_sha = _sha256(tree.transpose)
    installed_listing = sorted(str(p.relative_to(tree.root)) for p in tree.root.rglob("*"))
    runs = _record_atc(monkeypatch)
    space = space_from_mapping({"batch_sizes": [2], "pass_sets": [[]], "precisions": ["fp32"],
                                "precision_modes": ["force_fp16"], "op_select_implmodes": ["high_performance"]},
                               "ascend")
    out = tmp_path / "npu"
    options = TuneOptions(model=golden_onnx, inputs=images, out=str(out), target="ascend", budget_s=12, space=space,
                          soc_version="Ascend310", cann_home=str(tree.latest), **QUICK)
    report = tune(options, log=lambda m: None)
    by_choice = {c.options["whitelist"]: c for c in report.candidates}
    assert set(by_choice) == {"unpatched", "patched"}
    assert all(c.status == "measured" for c in by_choice.values()), [(c.status, c.reason) for c in report.candidates]
    assert "whitelist=patched" in report.format_table()
    # what the stand-in atc saw: the installed opp tree and the slow kernel, or a private tree inside --out
    # whose transpose.py sends every Transpose of the model to the fast kernel
    assert len(runs) == 2
    unpatched, patched = sorted(runs, key=lambda r: OPP_DIR in (r["opp"] or ""))
    assert Path(unpatched["opp"]).resolve() == (tree.versioned / "opp").resolve()
    assert unpatched["transpose_kernels"] == ["TransposeD"]
    private = Path(patched["opp"])
    assert private.resolve().is_relative_to(out.resolve()) and private.parent.name == OPP_DIR
    assert patched["transpose_kernels"] == ["Transpose"]
    # the private copy is patched for the model's shapes (whitelist's own checker); the rest of the tree is
    # the installed one, through symlinks
    copy = private / tree.transpose.relative_to(tree.versioned / "opp")
    assert copy.is_file() and not copy.is_symlink()
    assert check_shapes(copy, shapes_from_model(golden_onnx)).all_fast
    assert not check_shapes(tree.transpose, shapes_from_model(golden_onnx)).all_fast
    assert (private / "version.info").is_symlink()
    # the user's CANN install is untouched: same transpose.py bytes, no file added or removed
    assert _sha256(tree.transpose) == installed_sha
    assert sorted(str(p.relative_to(tree.root)) for p in tree.root.rglob("*")) == installed_listing


def test_ascend_whitelist_patched_best_reproduces_with_the_whitelist_command(whitelist_era_cann, cli_runner,
                                                                              golden_onnx, images, tmp_path):
    import subprocess

    from lvvit_opt.whitelist import check_shapes, shapes_from_model

    tree = whitelist_era_cann
    installed_sha = _sha256(tree.transpose)
    space = tmp_path / "space.yaml"
    space.write_text("batch_sizes: [2]\npass_sets: [none]\nprecisions: [fp32]\nprecision_modes: [force_fp16]\n"
                     "op_select_implmodes: [high_performance]\nwhitelist: [patched]\n")
    out = tmp_path / "o"
    result = cli_runner.invoke(main, ["tune", golden_onnx, "--inputs", images, "--out", str(out), "--space",
                                      str(space), "--target", "ascend", "--soc-version", "Ascend310",
                                      "--cann-home", str(tree.latest), "--budget", "10s", "--rounds", "2",
                                      "--warmup", "0"])
    assert result.exit_code == 0, result.output
    assert "whitelist=patched" in result.output
    script = (out / "reproduce.sh").read_text()
    lines = script.splitlines()
    mirror_line = next(i for i, line in enumerate(lines) if line.startswith("rm -rf -- "))
    patch_line = next(i for i, line in enumerate(lines) if line.startswith("lvvit-opt whitelist patch "))
    export_line = next(i for i, line in enumerate(lines) if line.startswith("export ASCEND_OPP_PATH="))
    atc_line = next(i for i, line in enumerate(lines) if line.startswith("atc "))
    assert patch_line < export_line < atc_line
    words = shlex.split(lines[patch_line])
    assert Path(words[words.index("--file") + 1]).resolve() == tree.transpose.resolve()  # the installed file
    assert "--output" in words
    for shape in shapes_from_model(golden_onnx):
        assert f"--shape {','.join(map(str, shape))}" in lines[patch_line]
    # the lines up to the export rebuild the tree by hand, in the script's folder; whitelist's checker
    # finds the shapes fast there
    setup = "\n".join(["set -e"] + lines[mirror_line:export_line + 1] + ['echo "$ASCEND_OPP_PATH"'])
    done = subprocess.run(["bash", "-c", setup], capture_output=True, text=True, timeout=120, cwd=out)
    assert done.returncode == 0, done.stdout + done.stderr
    private = done.stdout.strip().splitlines()[-1]
    assert Path(private).is_absolute() and Path(private).resolve().is_relative_to(out.resolve())
    copy = Path(private) / tree.transpose.relative_to(tree.versioned / "opp")
    assert check_shapes(copy, shapes_from_model(golden_onnx)).all_fast
    assert _sha256(tree.transpose) == installed_sha


def test_ascend_whitelist_already_listed_or_missing_is_a_note(fake_ais_bench, golden_onnx, images, tmp_path,
                                                               monkeypatch):
    """A transpose.py that already selects Transpose (black-list era: every static shape) makes the dimension
    moot: the patched candidate is a duplicate, said in the notes. No transpose.py at all: patched is left out."""
    from fakes.cann_tree import build_cann_tree

    tree = build_cann_tree(tmp_path / "Ascend", era="blacklist")
    space = {"batch_sizes": [2], "pass_sets": [[]], "precisions": ["fp32"], "precision_modes": ["force_fp16"],
             "op_select_implmodes": ["high_performance"]}
    options = TuneOptions(model=golden_onnx, inputs=images, out=str(tmp_path / "a"), target="ascend", budget_s=10,
                          space=space_from_mapping(space, "ascend"), soc_version="Ascend310",
                          cann_home=str(tree.latest), **QUICK)
    report = tune(options, log=lambda m: None)
    patched = next(c for c in report.candidates if c.options["whitelist"] == "patched")
    assert patched.status == "duplicate" and "whitelist patched changes nothing" in patched.reason
    assert any("whitelist patched changes nothing" in n for n in report.notes)
    assert any("whitelist patched changes nothing" in n for n in report.space["notes"])
    from lvvit_opt.whitelist.locate import DEFAULT_TOOLKIT

    if Path(DEFAULT_TOOLKIT).exists():
        return  # a host with CANN installed: there is a transpose.py to find
    options = TuneOptions(**{**options.__dict__, "out": str(tmp_path / "b"), "cann_home": None,
                             "space": space_from_mapping(space, "ascend")})
    report = tune(options, log=lambda m: None)
    assert [c.options["whitelist"] for c in report.candidates] == ["unpatched"]
    assert any("whitelist patched left out: no CANN transpose.py found" in n for n in report.notes)


def test_unknown_whitelist_value_in_space_is_refused(cli_runner, tmp_path, golden_onnx):
    with pytest.raises(UserError, match="whitelist has 'maybe'; valid: unpatched, patched"):
        space_from_mapping({"whitelist": ["patched", "maybe"]}, "ascend")
    assert space_from_mapping({"whitelist": ["patched"]}, "ascend").whitelist == ["patched"]
    space = tmp_path / "s.json"
    space.write_text('{"whitelist": ["yes"]}')
    result = cli_runner.invoke(main, ["tune", golden_onnx, "--inputs", "1", "--out", str(tmp_path / "o"),
                                      "--target", "ascend", "--space", str(space)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "whitelist has 'yes'" in lines[0]
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- honest choice (issue 33)

def _timed(batch, passes, precision, rounds, threads=2, graph_opt="all", run="r1"):
    c = Candidate(batch, list(passes), precision, {"threads": threads, "graph_opt": graph_opt}, status="measured")
    c.timing = {"fps": sum(rounds) / len(rounds), "round_fps": list(rounds), "run": run}
    return c


DEFAULT_OPTS = {"threads": 2, "graph_opt": "all"}


def test_choose_best_keeps_the_baseline_when_nothing_is_measurably_faster():
    from lvvit_opt.tune.search import choose_best

    base = _timed(1, [], "fp32", [100, 90, 110, 95, 105])
    fused = _timed(1, ["softmax_transpose"], "fp32", [104, 92, 113, 97, 109])  # +2-3 %: within noise
    fp16 = _timed(1, [], "fp16", [160, 60, 150, 70, 140])  # fast on average, all over the place
    best, verdict = choose_best([base, fused, fp16], base, DEFAULT_OPTS)
    assert best is base and verdict["claim"] is False
    assert verdict["text"].startswith("no configuration measurably faster than the baseline")
    assert fused.tie and fp16.tie and not base.tie
    assert fused.timing["vs_baseline"]["verdict"] == "no measurable difference"


def test_choose_best_takes_the_simplest_tie_that_is_measurably_faster():
    from lvvit_opt.tune.search import choose_best

    base = _timed(1, [], "fp32", [100, 90, 110, 95, 105])
    plain = _timed(8, [], "fp32", [150, 136, 164, 143, 158])  # +50 %
    fused = _timed(8, ["softmax_transpose"], "fp32", [152, 137, 166, 145, 159])  # ties with plain
    fp16 = _timed(8, [], "fp16", [153, 135, 167, 144, 160])  # ties too
    threads1 = _timed(8, [], "fp32", [151, 137, 165, 142, 160], threads=1)  # a changed option: ties
    best, verdict = choose_best([base, fused, fp16, threads1, plain], base, DEFAULT_OPTS)
    assert best is plain and verdict["claim"] is True
    assert verdict["text"].startswith("bs8 no passes fp32 graph_opt=all threads=2 is 1.50x faster than the baseline")
    assert fused.tie and fp16.tie and threads1.tie and not plain.tie


def test_choose_best_never_pairs_figures_of_different_runs():
    from lvvit_opt.tune.search import choose_best

    base = _timed(1, [], "fp32", [100, 100, 100], run="r1")
    old = _timed(8, [], "fp32", [300, 300, 300], run="r0")  # another run's rounds: not paired with these
    best, verdict = choose_best([base, old], base, DEFAULT_OPTS)
    assert best is base and verdict["claim"] is False and "vs_baseline" not in old.timing


def test_tune_picks_no_pass_when_a_rewrite_and_no_pass_tie(golden_onnx, images, tmp_path):
    """softmax_transpose on CPU is no faster than the original graph: tune keeps no passes and
    says that no configuration is measurably faster."""
    space = _space(batch_sizes=[2], precisions=["fp32"], pass_sets=[[], ["softmax_transpose"]])
    options = TuneOptions(model=golden_onnx, inputs=images, out=str(tmp_path / "o"), budget_s=12, space=space,
                          **QUICK)
    report = tune(options, log=lambda m: None)
    fused = next(c for c in report.candidates if c.passes)
    assert fused.status == "measured", (fused.status, fused.reason)
    assert report.best == report.baseline == "bs2|none|fp32|graph_opt=all,threads=1"
    assert report.verdict["claim"] is False
    assert "no configuration measurably faster than the baseline" in report.verdict["text"]
