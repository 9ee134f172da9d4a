"""Issue 22: a file replaced between its check and its use. A model is opened once; the model
gate judges those bytes and onnxruntime runs those bytes, so a swap after the check changes
nothing that runs, and a swap to a FIFO or device is refused without blocking."""
from __future__ import annotations

import os
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from hostile_helpers import assert_refused, invoke

import lvvit_opt.core.fileio as fileio
import lvvit_opt.core.onnx_files as onnx_files


def _invalid_model(path) -> None:
    """A model whose node reads a tensor nothing defines (the gate refuses it)."""
    node = helper.make_node("Relu", ["ghost"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [2, 3, 224, 224])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.fixture
def swap_after_read(monkeypatch):
    """Replace the file with `replacement(path)` right after it was read and judged (once):
    after fileio read its bytes, or after the model gate judged a streamed read."""
    real_read, real_gate = fileio.read_regular_file, onnx_files.gate_loaded
    plan = {}

    def swap_now(path):
        swap = plan.pop(os.fspath(path), None)
        if swap is not None:
            swap(path)

    def reading(path):
        result = real_read(path)
        swap_now(path)
        return result

    def gating(model, path, *args, **kwargs):
        real_gate(model, path, *args, **kwargs)
        swap_now(path)

    monkeypatch.setattr(fileio, "read_regular_file", reading)
    monkeypatch.setattr(onnx_files, "gate_loaded", gating)
    return plan


def _replaced(path) -> None:
    """Another model moved in under the same name (a new inode, as `mv` or an atomic save)."""
    _invalid_model(str(path) + ".new")
    os.replace(str(path) + ".new", path)


def test_a_model_replaced_after_the_check_is_not_what_runs(ws, swap_after_read):
    from lvvit_opt.runtime import open_runner

    model = ws / "m.onnx"
    golden = np.load(ws / "g.npz")
    swap_after_read[str(model)] = _replaced
    runner = open_runner(model, backend="onnxruntime")
    (out,) = runner.run_batch([golden["image"]])
    np.testing.assert_allclose(out, golden["features"], rtol=1e-3, atol=1e-4)  # the checked model ran
    with pytest.raises(Exception, match="is not defined"):  # and what lies there now is refused
        open_runner(model, backend="onnxruntime")


def test_a_model_rewritten_in_place_after_the_check_is_refused_not_run(ws, swap_after_read):
    """The same inode rewritten (onnx.save, cp over it): onnxruntime reads the open file, so
    what it read may not be what was checked; refused in one line, never run."""
    from lvvit_opt.core.errors import UserError
    from lvvit_opt.runtime import open_runner

    model = ws / "m.onnx"
    swap_after_read[str(model)] = _invalid_model
    with pytest.raises(UserError, match=r"m\.onnx: changed while it was being opened"):
        open_runner(model, backend="onnxruntime")


def test_golden_check_runs_the_checked_model_even_if_swapped(ws, swap_after_read):
    swap_after_read[str(ws / "m.onnx")] = lambda p: shutil.copyfile(ws / "c2.onnx", p)
    outcome = invoke(["golden", "check", "m.onnx", "g.npz"], ws)
    assert outcome.exit_code == 0, outcome.stderr


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])  # (a folder: click refuses it first)
def test_a_symlink_swapped_to_a_non_file_is_refused_without_blocking(ws, kind):
    target = {"fifo": ws / "pipe", "dev-zero": "/dev/zero"}[kind]
    if kind == "fifo":
        os.mkfifo(target)
    os.unlink(ws / "link.onnx")
    os.symlink(target, ws / "link.onnx")
    outcome = invoke(["golden", "check", "link.onnx", "g.npz"], ws)
    assert_refused(outcome, 2, "not a regular file")


def test_read_regular_file_refuses_a_folder_it_opened(ws):
    from lvvit_opt.core.errors import UserError

    with pytest.raises(UserError, match=r"not a regular file \(a folder\)"):
        fileio.read_regular_file(ws / "sub")


def test_read_regular_file_reports_the_descriptors_identity(ws):
    data, identity = fileio.read_regular_file(ws / "m.onnx")
    st = os.stat(ws / "m.onnx")
    assert data == (ws / "m.onnx").read_bytes()
    assert identity == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def test_the_gate_cache_follows_the_bytes_not_the_name(ws):
    """A model that passed, then replaced by an invalid one under the same name, is checked anew."""
    from lvvit_opt.core.errors import UserError

    onnx_files.load_onnx(ws / "c2.onnx")
    _invalid_model(ws / "c2.onnx")
    with pytest.raises(UserError, match="is not defined"):
        onnx_files.load_onnx(ws / "c2.onnx")
