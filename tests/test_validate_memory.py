"""Validation holds one model's onnxruntime session at a time, apply validates against its
input file instead of a second copy in memory, and structure-only loads drop the weights
(issue 20, memory): validated apply on a 22 MB ViT was 8.9x the file, 5.9x after."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T, helper, numpy_helper

from lvvit_opt.core.errors import UserError
from lvvit_opt.core.onnx_files import load_onnx
from lvvit_opt.passes import apply_file
from lvvit_opt.runtime.ort import OrtRunner
from lvvit_opt.verify import golden
from lvvit_opt.verify.golden import validate_models

from memory import peak_rise

RECIPE = ["fix_shapes", "fold_constants"]


def _mlp(path, layers: int = 24, width: int = 512, batch: str | int = "batch") -> str:
    """x[batch, width] through `layers` MatMul+Relu (1 MB of weights each), dynamic batch."""
    rng = np.random.default_rng(0)
    nodes, inits, last = [], [], "x"
    for i in range(layers):
        inits.append(numpy_helper.from_array((rng.standard_normal((width, width)) / width ** 0.5).astype(np.float32),
                                             f"w{i}"))
        nodes += [helper.make_node("MatMul", [last, f"w{i}"], [f"m{i}"]), helper.make_node("Relu", [f"m{i}"], [f"r{i}"])]
        last = f"r{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", T.FLOAT, [batch, width])],
                              [helper.make_tensor_value_info(last, T.FLOAT, [batch, width])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return str(path)


@pytest.fixture
def live_sessions(monkeypatch) -> list[int]:
    """[most onnxruntime sessions open at once]: OrtRunner opens and closes counted."""
    state = {"live": 0}
    most = [0]
    post_init, close = OrtRunner.__post_init__, OrtRunner.close

    def opening(self):
        post_init(self)
        state["live"] += 1
        most[0] = max(most[0], state["live"])

    def closing(self):
        if self.session is not None:
            state["live"] -= 1
        close(self)

    monkeypatch.setattr(OrtRunner, "__post_init__", opening)
    monkeypatch.setattr(OrtRunner, "close", closing)
    return most


def test_apply_validation_opens_one_session_at_a_time_on_the_file(tmp_path, live_sessions, monkeypatch):
    model = _mlp(tmp_path / "mlp.onnx", layers=3)
    opened = []
    real_open = golden.open_model_runner

    def recording(m, **kwargs):
        opened.append((m, onnx.load(str(m)).SerializeToString()))  # what the file held when opened
        return real_open(m, **kwargs)

    monkeypatch.setattr(golden, "open_model_runner", recording)
    result = apply_file(model, tmp_path / "out.onnx", RECIPE, batch_size=4)
    assert result.validation.passed and (tmp_path / "out.onnx").exists()
    assert live_sessions[0] == 1
    # the reference is the input file itself (onnxruntime reopens it); the candidate is the
    # rewrite's temporary output beside out.onnx, renamed onto it after passing: exactly what was validated
    (ref, _), (cand, cand_bytes) = opened
    assert ref == tmp_path / "mlp.onnx"
    assert cand.parent == tmp_path and cand.name != "out.onnx" and not cand.exists()
    assert cand_bytes == onnx.load(str(tmp_path / "out.onnx")).SerializeToString()
    assert [list(d.dim_value for d in i.type.tensor_type.shape.dim) for i in onnx.load(str(tmp_path / "out.onnx")).graph.input] == [[4, 512]]


def test_validate_of_two_files_opens_one_session_at_a_time(tmp_path, live_sessions):
    ref, cand = _mlp(tmp_path / "a.onnx", layers=2), _mlp(tmp_path / "b.onnx", layers=2, batch=3)
    result = validate_models(ref, cand, inputs=2)
    assert result.passed and result.inputs == {"x": [3, 512]} and live_sessions[0] == 1


def test_a_wrong_spec_guess_refeeds_and_reruns_the_reference(tmp_path, monkeypatch):
    """The candidate's inputs are read from its graph before its session opens; where
    onnxruntime reports otherwise, the feeds follow onnxruntime and the reference runs again."""
    from lvvit_opt.core.tensor_spec import TensorSpec

    ref, cand = _mlp(tmp_path / "a.onnx", layers=2), _mlp(tmp_path / "b.onnx", layers=2, batch=3)
    monkeypatch.setattr(golden, "planned_input_specs", lambda *_a: [TensorSpec("x", (5, 512), "float32")])
    runs = []
    real_run = golden.run_feeds
    monkeypatch.setattr(golden, "run_feeds", lambda r, feeds, desc="": runs.append((desc, len(feeds))) or
                        real_run(r, feeds, desc))
    result = validate_models(ref, cand, inputs=1)
    assert result.passed and result.inputs == {"x": [3, 512]}
    assert [d for d, _ in runs] == ["validate: reference", "validate: reference", "validate: candidate"]


def test_the_planned_specs_are_what_onnxruntime_reports(tmp_path, golden_onnx):
    for model in (golden_onnx, _mlp(tmp_path / "m.onnx", layers=1), _mlp(tmp_path / "s.onnx", layers=1, batch=2)):
        assert golden.planned_input_specs(model, {}) == OrtRunner(model).inputs
        assert golden.planned_input_specs(load_onnx(model), {}) == OrtRunner(model).inputs


def test_an_input_changed_while_apply_ran_is_refused_and_nothing_written(tmp_path, monkeypatch):
    model = _mlp(tmp_path / "mlp.onnx", layers=2)
    import lvvit_opt.passes.apply as apply_module

    real = apply_module.run_pipeline

    def rewriting(*args, **kwargs):  # another process replaces the model meanwhile
        out = real(*args, **kwargs)
        _mlp(tmp_path / "other.onnx", layers=3)
        os.replace(tmp_path / "other.onnx", model)
        return out

    monkeypatch.setattr(apply_module, "run_pipeline", rewriting)
    with pytest.raises(UserError, match=r"mlp\.onnx changed while apply ran; .*nothing written"):
        apply_file(model, tmp_path / "out.onnx", RECIPE, batch_size=2)
    assert not (tmp_path / "out.onnx").exists()


def test_validated_apply_costs_no_more_than_one_session_beside_the_passes(tmp_path):
    """Measured in the same process on a 24 MB graph: the peak of a validated apply stays
    within the passes' own peak plus one onnxruntime session running the model (before: the
    original copied beside its rewrite and two sessions open, ~2 sessions more)."""
    model = _mlp(tmp_path / "mlp.onnx")
    x = np.zeros((4, 512), np.float32)
    apply_file(model, tmp_path / "warm.onnx", RECIPE, batch_size=4)  # one-time costs (imports, schemas, arenas)
    with peak_rise() as session:
        runner = OrtRunner(model)
        runner.run_batch([x])
        runner.close()
        del runner
    with peak_rise() as passes:
        apply_file(model, tmp_path / "nv.onnx", RECIPE, batch_size=4, validate=False)
    with peak_rise() as validated:
        apply_file(model, tmp_path / "v.onnx", RECIPE, batch_size=4)
    size = os.path.getsize(model)
    assert validated.rise <= passes.rise + 1.25 * session.rise, (
        f"validated {validated.rise / size:.2f}x, passes {passes.rise / size:.2f}x, "
        f"one session {session.rise / size:.2f}x the file")


def _with_bad_tensor(path) -> str:
    """A model whose 1 MB initializer holds 4 bytes too few for its dims."""
    _mlp(path, layers=2)
    model = onnx.load(str(path))
    model.graph.initializer[1].raw_data = model.graph.initializer[1].raw_data[:-4]
    onnx.save(model, str(path))
    return str(path)


def test_a_structure_load_keeps_everything_but_the_big_weights(tmp_path, golden_onnx):
    for path in (_mlp(tmp_path / "mlp.onnx", layers=3), golden_onnx):
        full, light = onnx.load(path), load_onnx(path, weights=False)
        assert light.graph.node == full.graph.node and light.graph.input == full.graph.input
        assert light.opset_import == full.opset_import and light.metadata_props == full.metadata_props
        for a, b in zip(light.graph.initializer, full.graph.initializer):
            assert (a.name, a.data_type, list(a.dims)) == (b.name, b.data_type, list(b.dims))
            assert a == b if b.ByteSize() < 64 * 1024 else a.ByteSize() < 200
    assert any(t.ByteSize() >= 64 * 1024 for t in onnx.load(golden_onnx).graph.initializer)


def test_a_structure_load_refuses_a_broken_weight_as_the_full_load_does(tmp_path):
    path = _with_bad_tensor(tmp_path / "bad.onnx")
    with pytest.raises(UserError) as full:
        load_onnx(path)
    from lvvit_opt.core import model_gate

    model_gate._passed.clear()  # the full load's verdict is not remembered (it failed), but be sure
    with pytest.raises(UserError) as light:
        load_onnx(path, weights=False)
    assert str(light.value) == str(full.value) and "invalid model" in str(full.value)


def test_a_structure_load_peaks_at_a_tensor_not_the_model(tmp_path):
    path = _mlp(tmp_path / "mlp.onnx", layers=40)  # 40 MB
    load_onnx(path, weights=False)  # schemas, imports
    with peak_rise() as light:
        load_onnx(path, weights=False)
    with peak_rise() as full:
        load_onnx(path)
    size = os.path.getsize(path)
    assert light.rise <= 0.25 * size < full.rise, (light.rise / size, full.rise / size)


def test_a_wrong_written_rewrite_fails_keeps_the_previous_output_and_leaves_no_temporary(tmp_path, monkeypatch):
    """What is validated is the file written: a writer that got one weight wrong is caught."""
    from lvvit_opt.core import onnx_proto
    from lvvit_opt.passes import ApplyValidationFailed

    model = _mlp(tmp_path / "mlp.onnx", layers=2)
    (tmp_path / "out.onnx").write_bytes(b"previous")
    real = onnx_proto.write_model_streamed

    def off_by_noise(graph_model, handle):
        weight = numpy_helper.to_array(graph_model.graph.initializer[0])
        graph_model.graph.initializer[0].CopyFrom(numpy_helper.from_array(weight * 1.01, weight_name(graph_model)))
        real(graph_model, handle)

    def weight_name(graph_model):
        return graph_model.graph.initializer[0].name

    monkeypatch.setattr(onnx_proto, "write_model_streamed", off_by_noise)
    with pytest.raises(ApplyValidationFailed, match="does not compute the same function"):
        apply_file(model, tmp_path / "out.onnx", RECIPE, batch_size=2)
    assert (tmp_path / "out.onnx").read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.onnx", "out.onnx"]


def test_onnxruntime_refusing_the_written_rewrite_is_our_failure_not_the_users(tmp_path, monkeypatch):
    """The rewrite is validated from its temporary file: a graph onnxruntime (or the gate)
    refuses there is lvvit-opt's fault, exit 1 naming the rewrite, and nothing is written."""
    from lvvit_opt.core import onnx_proto
    from lvvit_opt.core.errors import LvvitOptError

    model = _mlp(tmp_path / "mlp.onnx", layers=2)
    real = onnx_proto.write_model_streamed

    def broken(graph_model, handle):  # our writer emitting a node that reads an undefined tensor
        graph_model.graph.node[0].input[0] = "ghost"
        real(graph_model, handle)

    monkeypatch.setattr(onnx_proto, "write_model_streamed", broken)
    with pytest.raises(LvvitOptError) as failure:
        apply_file(model, tmp_path / "out.onnx", RECIPE, batch_size=2)
    assert not isinstance(failure.value, UserError)
    assert str(failure.value).startswith(f"the rewrite of {model} (fix_shapes, fold_constants): onnxruntime cannot "
                                         "load the graph lvvit-opt built, an internal failure")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.onnx"]
