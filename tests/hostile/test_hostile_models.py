"""Invalid models (issue 22): every verb that reads an ONNX model runs the model gate first
and refuses, exit 2, one line naming the defect, before any pass runs; external data
outside the model's folder is never opened; onnxruntime failures at run time are one line."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from hostile_helpers import (assert_refused, build_images, diff_snapshots, invoke, snapshot,
                             temp_leftovers)


# -- tiny models --------------------------------------------------------------------------

def _model(nodes, inputs, outputs, initializers=(), opset: int = 17):
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name: str, shape):
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _add_model(opset: int = 17, shape=(1, 4)):
    """y = x + w, w (4,) an initializer: a valid model the defects start from."""
    from onnx import helper, numpy_helper

    w = numpy_helper.from_array(np.ones(shape[-1], np.float32), "w")
    return _model([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [_vi("x", list(shape))],
                  [_vi("y", list(shape))], [w], opset)


def _save_raw(model, path: Path) -> None:
    """Save without onnx.save's checks (they would refuse some of the defects)."""
    path.write_bytes(model.SerializeToString())


def _cycle(ws: Path) -> None:
    from onnx import helper

    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="first"),
             helper.make_node("Relu", ["a"], ["b"], name="second")]
    _save_raw(_model(nodes, [_vi("x", [1, 4])], [_vi("a", [1, 4])]), ws / "bad.onnx")


def _undefined(ws: Path) -> None:
    from onnx import helper

    nodes = [helper.make_node("Add", ["x", "ghost"], ["y"], name="X")]
    _save_raw(_model(nodes, [_vi("x", [1, 4])], [_vi("y", [1, 4])]), ws / "bad.onnx")


def _opset99(ws: Path) -> None:
    _save_raw(_add_model(opset=99), ws / "bad.onnx")


def _external(ws: Path, location: str) -> None:
    """bad.onnx keeping `w` in external data at `location` (relative to ws, as written)."""
    import onnx

    model = _add_model()
    onnx.external_data_helper.convert_model_to_external_data(model, location="inside.bin", size_threshold=0)
    onnx.save(model, ws / "bad.onnx")  # writes ws/inside.bin
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    _save_raw(model, ws / "bad.onnx")


def _outside_fifo(ws: Path) -> Path:
    """A FIFO beside the workspace (outside the model's folder): opening it for reading
    would block, so the watchdog below tells whether anyone did."""
    fifo = ws.parent / "outside.bin"
    if not fifo.exists():
        os.mkfifo(fifo)
    return fifo


def _ext_dotdot(ws: Path) -> None:
    _outside_fifo(ws)
    _external(ws, "../outside.bin")


def _ext_etc_passwd(ws: Path) -> None:
    _external(ws, "../" * 12 + "etc/passwd")


def _ext_absolute(ws: Path) -> None:
    _external(ws, "/etc/passwd")


def _ext_absolute_fifo(ws: Path) -> None:
    _external(ws, str(_outside_fifo(ws)))


def _ext_symlink(ws: Path) -> None:
    os.symlink(_outside_fifo(ws), ws / "data.bin")
    _external(ws, "data.bin")


def _ext_fifo_inside(ws: Path) -> None:
    os.mkfifo(ws / "pipe.bin")
    _external(ws, "pipe.bin")


def _ext_missing(ws: Path) -> None:
    _external(ws, "nosuch.bin")


def _zero_dim(ws: Path) -> None:
    _save_raw(_add_model(shape=(1, 0, 4)), ws / "bad.onnx")


def _negative_dim(ws: Path) -> None:
    _save_raw(_add_model(shape=(1, -3, 4)), ws / "bad.onnx")


def _no_outputs(ws: Path) -> None:
    model = _add_model()
    del model.graph.output[:]
    _save_raw(model, ws / "bad.onnx")


DEFECTS = {  # id -> (builder, words the one error line must contain)
    "cycle": (_cycle, "cycle"),
    "undefined-input": (_undefined, "node 'X' input 'ghost' is not defined"),
    "opset-99": (_opset99, "opset 99 is unknown"),
    "ext-dotdot": (_ext_dotdot, "outside the model's folder"),
    "ext-etc-passwd": (_ext_etc_passwd, "outside the model's folder"),
    "ext-absolute": (_ext_absolute, "absolute path"),
    "ext-absolute-fifo": (_ext_absolute_fifo, "absolute path"),
    "ext-symlink-out": (_ext_symlink, "outside the model's folder"),
    "ext-fifo-inside": (_ext_fifo_inside, "not a regular file"),
    "ext-missing": (_ext_missing, "no such file"),
    "no-outputs": (_no_outputs, "the graph has no outputs"),
}

# (verb id, argv with MODEL standing for the model). Every verb that reads an ONNX model.
VERBS = {
    "apply": ["apply", "MODEL", "-o", "out.onnx"],
    "validate-ref": ["validate", "MODEL", "c2.onnx"],
    "validate-cand": ["validate", "m.onnx", "MODEL"],
    "golden-make": ["golden", "make", "MODEL", "-o", "out.npz"],
    "golden-check": ["golden", "check", "MODEL", "g.npz"],
    "bench": ["bench", "MODEL", "--duration", "0.1", "--rounds", "1"],
    "debug-layers": ["debug", "layers", "MODEL", "--fp16"],
    "debug-layers-cand": ["debug", "layers", "m.onnx", "MODEL"],
    "bench-pair": ["bench", "m.onnx", "MODEL", "--duration", "0.1", "--rounds", "1"],
    "atc": ["atc", "MODEL", "--soc-version", "Ascend310"],
    "inspect": ["inspect", "MODEL"],
    "whitelist-shapes": ["whitelist", "shapes", "MODEL"],
    "whitelist-from-model": ["whitelist", "patch", "--file", "opp/transpose.py", "--from-model", "MODEL"],
    "atc-dry-run": ["atc", "MODEL", "--soc-version", "Ascend310", "--dry-run"],
    "doctor": ["doctor", "--model", "MODEL"],
    "tune": ["tune", "MODEL", "--inputs", "1", "--out", "tune_out", "--budget", "10s"],
    "eval": ["eval", "MODEL", "--data", "images", "--labels", "val.txt"],
}


class OpenWatch:
    """Tells whether anyone opened the FIFO `path` for reading: a non-blocking open for
    writing succeeds only while a reader holds it (and then lets that reader go on)."""

    def __init__(self, *paths: Path):
        self.paths, self.opened, self._stop = [p for p in paths if p.is_fifo()], [], threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for path in self.paths:
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:  # ENXIO: no reader
                    continue
                self.opened.append(path.name)
                os.close(fd)
            time.sleep(0.005)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _prepare(ws: Path, defect: str) -> None:
    DEFECTS[defect][0](ws)
    build_images(ws, count=2)


def _argv(verb: str) -> list[str]:
    return ["bad.onnx" if a == "MODEL" else a for a in VERBS[verb]]


@pytest.mark.parametrize("verb", list(VERBS))
@pytest.mark.parametrize("defect", list(DEFECTS))
def test_every_model_verb_refuses_an_invalid_model(ws, defect, verb):
    _prepare(ws, defect)
    before = snapshot_without_fifo(ws)
    with OpenWatch(ws.parent / "outside.bin", ws / "pipe.bin") as watch:
        outcome = invoke(_argv(verb), ws)
    assert_refused(outcome, 2, "bad.onnx: invalid model: ")
    assert DEFECTS[defect][1] in outcome.stderr, outcome.stderr
    assert diff_snapshots(before, snapshot_without_fifo(ws)) == []
    assert temp_leftovers(ws) == []
    assert watch.opened == [], "a FIFO named as external data was opened"


# -- zero and negative dims: unknown dims (tensor_spec's policy), refused where they must be fixed

DIM_CASES = [  # (id, builder, argv, words)
    ("zero-validate", _zero_dim, ["validate", "bad.onnx", "bad.onnx"], "symbolic dim besides the batch"),
    ("zero-golden-make", _zero_dim, ["golden", "make", "bad.onnx", "-o", "out.npz"], "symbolic dim besides the batch"),
    ("zero-bench", _zero_dim, ["bench", "bad.onnx", "--duration", "0.1", "--rounds", "1", "--json", "out.json"],
     "onnxruntime cannot run it on 'x' float32[1, 1, 4]"),
    ("negative-validate", _negative_dim, ["validate", "bad.onnx", "bad.onnx"], "symbolic dim besides the batch"),
    ("negative-golden-make", _negative_dim, ["golden", "make", "bad.onnx", "-o", "out.npz"],
     "symbolic dim besides the batch"),
    ("zero-atc-dry-run", _zero_dim, ["atc", "bad.onnx", "--soc-version", "Ascend310", "--dry-run"], "input 'x'"),
]


@pytest.mark.parametrize("build, argv, words", [c[1:] for c in DIM_CASES], ids=[c[0] for c in DIM_CASES])
def test_zero_or_negative_dims_are_one_line_exit_2(ws, build, argv, words):
    build(ws)
    before = snapshot(ws)
    outcome = invoke(argv, ws)
    assert_refused(outcome, 2, words)
    assert diff_snapshots(before, snapshot(ws)) == []
    assert temp_leftovers(ws) == []


# -- not a regular file ---------------------------------------------------------------------

NOT_REGULAR_VERBS = ["apply", "validate-ref", "golden-make", "bench", "whitelist-shapes", "atc-dry-run", "doctor",
                     "tune"]


@pytest.mark.parametrize("verb", NOT_REGULAR_VERBS)
def test_a_fifo_given_as_model_is_not_a_regular_file_and_never_opened(ws, verb):
    os.mkfifo(ws / "bad.onnx")
    build_images(ws, count=2)
    before = snapshot_without_fifo(ws)
    with OpenWatch(ws / "bad.onnx") as watch:
        outcome = invoke(_argv(verb), ws)
    assert_refused(outcome, 2, "bad.onnx: not a regular file")
    assert watch.opened == []
    assert diff_snapshots(before, snapshot_without_fifo(ws)) == []
    assert (ws / "bad.onnx").is_fifo()


def snapshot_without_fifo(root: Path) -> dict:
    """snapshot() would block reading the FIFO: it is recorded as ('fifo',) instead."""
    state = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_fifo():
            state[rel] = ("fifo",)
        elif path.is_symlink():
            state[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            state[rel] = "dir"
        else:
            state[rel] = path.read_bytes()
    return state


@pytest.mark.parametrize("argv", [["whitelist", "shapes", "/dev/zero"], ["doctor", "--model", "/dev/zero"]],
                         ids=["whitelist-shapes", "doctor"])
def test_dev_zero_as_model_is_not_a_regular_file(ws, ws_before, argv):
    assert_refused(invoke(argv, ws), 2, "/dev/zero: not a regular file")
    assert diff_snapshots(ws_before, snapshot(ws)) == []


# -- onnxruntime failures at run time --------------------------------------------------------

def _reshape_fails(ws: Path, image: bool = False) -> None:
    """A valid model onnxruntime cannot run: Reshape of the input to 3 elements."""
    from onnx import helper, numpy_helper

    shape = ["N", 3, 224, 224] if image else ["N", 4]
    target = numpy_helper.from_array(np.array([3], np.int64), "target")
    model = _model([helper.make_node("Reshape", ["x", "target"], ["y"], name="rs")], [_vi("x", shape)],
                   [_vi("y", [3])], [target])
    _save_raw(model, ws / "bad.onnx")


RUNTIME_VERBS = {
    "validate": ["validate", "MODEL", "MODEL"],
    "golden-make": ["golden", "make", "MODEL", "-o", "out.npz"],
    "bench": ["bench", "MODEL", "--duration", "0.1", "--rounds", "1"],
    "bench-json": ["bench", "MODEL", "--duration", "0.1", "--rounds", "1", "--json", "out.json"],
    "eval": ["eval", "MODEL", "--data", "images", "--labels", "val.txt", "--json", "out.json"],
}


@pytest.mark.parametrize("verb", list(RUNTIME_VERBS))
def test_onnxruntime_failing_at_run_time_is_one_line_naming_the_input(ws, verb):
    _reshape_fails(ws, image=verb == "eval")
    build_images(ws, count=2)
    before = snapshot(ws)
    outcome = invoke(["bad.onnx" if a == "MODEL" else a for a in RUNTIME_VERBS[verb]], ws)
    assert_refused(outcome, 2, "bad.onnx: onnxruntime cannot run it on 'x' float32[")
    assert "cannot be reshaped" in outcome.stderr and "onnxruntime_src" not in outcome.stderr
    assert diff_snapshots(before, snapshot(ws)) == []
    assert temp_leftovers(ws) == []


def test_golden_check_on_a_model_ort_cannot_run(ws):
    _reshape_fails(ws)
    np.savez(ws / "gx.npz", x=np.ones((1, 4), np.float32), y=np.ones(3, np.float32))
    before = snapshot(ws)
    outcome = invoke(["golden", "check", "bad.onnx", "gx.npz"], ws)
    assert_refused(outcome, 2, "onnxruntime cannot run it on 'x' float32[1, 4]")
    assert diff_snapshots(before, snapshot(ws)) == []


def test_an_in_memory_model_ort_cannot_run_is_our_failure_exit_1(ws):
    """A model our passes built (in memory) that onnxruntime refuses is our bug, not the user's."""
    import onnx

    from lvvit_opt.core.errors import LvvitOptError, UserError
    from lvvit_opt.runtime.ort import OrtRunner

    _reshape_fails(ws)
    with OrtRunner.from_model(onnx.load(ws / "bad.onnx")) as runner:
        with pytest.raises(LvvitOptError) as caught:
            runner.infer({"x": np.ones((2, 4), np.float32)})
    assert not isinstance(caught.value, UserError) and caught.value.exit_code == 1
    assert "'x' float32[2, 4]" in str(caught.value)


def test_a_python_error_in_run_batch_is_not_disguised_as_the_users(ws):
    from lvvit_opt.runtime.ort import OrtRunner

    from lvvit_opt.core.errors import UserError

    runner = OrtRunner(str(ws / "m.onnx"))
    with pytest.raises(RuntimeError) as caught:  # pybind's builtin RuntimeError: a feed we built wrong
        runner.run_batch([object()])
    assert not isinstance(caught.value, UserError)


def test_bench_refuses_a_huge_batch_before_allocating(ws, ws_before, monkeypatch):
    import onnx

    import lvvit_opt.core.resources as resources

    monkeypatch.setattr(resources, "available_memory", lambda: 8 * 1024**3)  # the same on every machine

    model = onnx.load(ws / "m.onnx")
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.save(model, ws / "dyn.onnx")
    before = snapshot(ws)
    outcome = invoke(["bench", "dyn.onnx", "--batch-sizes", "65536", "--duration", "0.1",  # the largest allowed
                      "--json", "out.json"], ws)
    assert_refused(outcome, 2, "bench inputs image [65536, 3, 224, 224] needs about")
    assert "GiB of memory" in outcome.stderr
    assert diff_snapshots(before, snapshot(ws)) == []


# -- the gate itself ------------------------------------------------------------------------

def test_the_gate_accepts_the_golden_and_an_external_data_model_and_loads_its_weights(ws):
    import onnx

    from lvvit_opt.core.onnx_files import load_onnx

    assert load_onnx(ws / "m.onnx").graph.node
    model = _add_model()
    (ws / "ext").mkdir()
    onnx.save(model, ws / "ext" / "ok.onnx", save_as_external_data=True, location="w.bin", size_threshold=0)
    loaded = load_onnx(ws / "ext" / "ok.onnx")
    assert onnx.numpy_helper.to_array(loaded.graph.initializer[0]).tolist() == [1, 1, 1, 1]
    assert invoke(["validate", "ext/ok.onnx", "ext/ok.onnx"], ws).exit_code == 0


@pytest.mark.parametrize("defect", ["cycle", "undefined-input", "opset-99", "no-outputs"])
def test_the_skeleton_check_of_big_models_refuses_the_same_defects(ws, monkeypatch, defect):
    """Above SKELETON_ABOVE the checker sees initializers as typed inputs: same verdicts."""
    from lvvit_opt.core import model_gate
    from lvvit_opt.core.errors import UserError
    from lvvit_opt.core.onnx_files import load_onnx

    monkeypatch.setattr(model_gate, "SKELETON_ABOVE", 0)
    monkeypatch.setattr(model_gate, "_BIG_TENSOR", 0)
    monkeypatch.setattr(model_gate, "_passed", {})
    assert load_onnx(ws / "m.onnx").graph.node  # the golden model passes the skeleton check
    DEFECTS[defect][0](ws)
    with pytest.raises(UserError, match="invalid model"):
        load_onnx(ws / "bad.onnx")


def test_the_skeleton_keeps_no_big_weights(ws, monkeypatch):
    import onnx

    from lvvit_opt.core import model_gate

    monkeypatch.setattr(model_gate, "_BIG_TENSOR", 1024)
    model = onnx.load(ws / "m.onnx")
    skel = model_gate.skeleton(model)
    assert all(t.ByteSize() < 1024 for t in skel.graph.initializer)
    assert len(skel.graph.initializer) < len(model.graph.initializer)
    onnx.checker.check_model(skel, full_check=True)


def test_an_edited_file_is_gated_again(ws):
    """The pass cache is keyed by inode, size and mtime: a model rewritten in place is checked anew."""
    from lvvit_opt.core.errors import UserError
    from lvvit_opt.core.onnx_files import load_onnx

    _save_raw(_add_model(), ws / "bad.onnx")
    load_onnx(ws / "bad.onnx")
    _undefined(ws)
    os.utime(ws / "bad.onnx", ns=(1, 1))
    with pytest.raises(UserError, match="not defined"):
        load_onnx(ws / "bad.onnx")


def test_a_cycle_names_its_nodes(ws):
    from lvvit_opt.core.errors import UserError
    from lvvit_opt.core.onnx_files import load_onnx

    _cycle(ws)
    with pytest.raises(UserError) as caught:
        load_onnx(ws / "bad.onnx", load_external_data=False)
    assert "'first'" in str(caught.value) and "'second'" in str(caught.value)


def test_a_graph_output_without_a_shape_is_accepted(ws):
    """onnx.checker wants a shape on graph outputs; the IR leaves it optional and onnxruntime
    runs the graph, so the gate does not refuse it (model_gate.with_io_shapes)."""
    from onnx import TensorProto, helper

    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    _save_raw(_model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [1, 4])], [out]), ws / "ok.onnx")
    outcome = invoke(["golden", "make", "ok.onnx", "-o", "ok.npz"], ws)
    assert outcome.exit_code == 0, outcome.stderr
    assert (ws / "ok.npz").is_file()


def test_a_location_swapped_for_a_symlink_out_after_passing_is_refused(ws):
    """The pass cache keeps the graph checks, never the location check: a data file replaced by
    a symlink leaving the folder after the model passed is refused on the next use."""
    import onnx

    from lvvit_opt.core.errors import UserError
    from lvvit_opt.core.onnx_files import load_onnx
    from lvvit_opt.runtime.ort import OrtRunner

    (ws / "ext").mkdir()
    onnx.save(_add_model(), ws / "ext" / "ok.onnx", save_as_external_data=True, location="w.bin", size_threshold=0)
    load_onnx(ws / "ext" / "ok.onnx")
    fifo = _outside_fifo(ws)
    (ws / "ext" / "w.bin").unlink()
    os.symlink(fifo, ws / "ext" / "w.bin")
    with OpenWatch(fifo) as watch:
        with pytest.raises(UserError, match="outside the model's folder"):
            load_onnx(ws / "ext" / "ok.onnx")
        with pytest.raises(UserError, match="outside the model's folder"):
            OrtRunner(str(ws / "ext" / "ok.onnx"))
    assert watch.opened == []
