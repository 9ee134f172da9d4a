"""ONNX model files: the one reader (each model read once, through the model gate) and the one
atomic writer (external data beside the file past 2 GB). Imports fileio, model_gate, onnx_proto."""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

from lvvit_opt.core.errors import UserError, shown
from lvvit_opt.core import fileio  # by attribute: tests and the hostile shims replace fileio.atomic_path & co
from lvvit_opt.core.model_gate import gate_loaded, strip_weight
from lvvit_opt.core.onnx_proto import needs_external_data, read_model_streamed, write_model_streamed


def load_onnx_bytes(path: str | os.PathLike):
    """(model, bytes): the ONNX file read once and parsed WITHOUT its external data, after the
    model gate (lvvit_opt.core.model_gate) passed it. A runner given these bytes runs what was checked."""
    import onnx

    path = Path(path)
    data, identity = fileio.read_regular_file(path)
    model = _checked_parse(path, lambda: onnx.load_model_from_string(data))
    gate_loaded(model, path, identity)
    return model, data


def load_onnx(path: str | os.PathLike, load_external_data: bool = True, weights: bool = True):
    """Load an ONNX model, turning every kind of bad file into a one-line UserError. The
    model gate runs on it before its external data is read. The file is parsed as it is read
    (onnx_proto.read_model_streamed), so its bytes never sit beside the parsed model.

    weights=False: a structure-only load for readers of nodes, inputs, opsets and metadata.
    Each big embedded initializer is checked as it is parsed and its data dropped (name,
    type and dims stay); external data is not read. Its peak is one tensor, not the model."""
    import onnx

    path = Path(path)
    with fileio.open_regular_file(path, buffering=1024**2) as (handle, identity):
        model = _read_gated(handle, path, identity, weights)
    if load_external_data and weights:
        try:
            onnx.load_external_data_for_model(model, str(path.parent))
        except Exception as exc:
            raise UserError(f"{shown(path)}: cannot read its external data "
                            f"({type(exc).__name__}: {_first_line(exc)})") from None
    return model


def _read_gated(handle, path: Path, identity, weights: bool):
    """Parse the open file `handle` as it is read (without its weights' data unless `weights`)
    and run the model gate on it."""
    stripped: set[str] = set()

    def strip(tensor) -> None:
        if strip_weight(tensor, path):
            stripped.add(tensor.name)

    model = _checked_parse(path, lambda: read_model_streamed(handle, None if weights else strip))
    gate_loaded(model, path, identity, frozenset(stripped))
    return model


@contextlib.contextmanager
def checked_model_path(path: str | os.PathLike) -> Iterator[str]:
    """The model gate run on ONE open of the ONNX file at `path` (parsed without holding its
    weights), then a path that names that same open file, /proc/self/fd/N, for a reader such as
    onnxruntime that takes a path: it reads exactly what was checked (a file swapped at `path`
    meanwhile is not what runs) and we never hold the model's bytes beside its session (issue
    20: a session opened from bytes peaked at 4x the file). A model with external data gets
    `path` itself (its reader resolves the .data files beside it; their locations were checked).
    Where /proc/self/fd is missing, the checked bytes (as gate_model_file). A file rewritten in
    place while the reader opened it (same inode, new size or mtime) is a UserError after it."""
    path = Path(path)
    with fileio.open_regular_file(path, buffering=1024**2) as (handle, identity):
        model = _read_gated(handle, path, identity, weights=False)
        if needs_external_data(model):
            yield str(path)
            return
        named = f"/proc/self/fd/{handle.fileno()}"
        if not os.path.exists(named):
            handle.seek(0)
            yield handle.read()
            return
        try:
            yield named
        except Exception:
            _refuse_if_rewritten(handle, identity, path)  # the reader's error is about other bytes
            raise
        _refuse_if_rewritten(handle, identity, path)


def _refuse_if_rewritten(handle, identity, path: Path) -> None:
    """The same inode, rewritten in place while a reader read it: not the model that was checked."""
    st = os.fstat(handle.fileno())
    if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != identity:
        raise UserError(f"{shown(path)}: changed while it was being opened, so what was read is not the "
                        "model that was checked; run again once it is written") from None


def _checked_parse(path: Path, parse):
    """parse() -> a ModelProto; a malformed or empty one is a one-line UserError naming `path`."""
    try:
        model = parse()
    except UserError:  # a defect the reader named (model_gate.strip_weight)
        raise
    except Exception as exc:  # protobuf DecodeError, TruncatedModel, ...
        raise UserError(f"{shown(path)}: not a readable ONNX model ({type(exc).__name__}: {_first_line(exc)})") from None
    if not model.graph.node and not model.graph.output:
        raise UserError(f"{shown(path)}: not an ONNX model (empty graph)")
    return model


def gate_model_file(path: str | os.PathLike) -> bytes | None:
    """Run the whole gate on the ONNX file at `path` (for readers that do not go through
    load_onnx, such as onnxruntime sessions). Returns the bytes that were checked, read
    from one open of the file, for the reader to use instead of the path (a file swapped after
    the check cannot be what runs); None when the model keeps its weights in external data, which
    its reader must resolve from the path (the locations were checked just now)."""
    model, data = load_onnx_bytes(path)  # runs gate_loaded on it
    return None if needs_external_data(model) else data


def save_onnx(model, dest: str | os.PathLike) -> Path:
    """Save atomically; models over 2 GB go to `<name>.data` beside the file.

    The caller's model is never modified (onnx's external-data save strips the tensors
    of the model it is given, so that path works on a copy)."""
    import onnx

    dest = Path(dest)
    if needs_external_data(model) and fileio.special_kind(dest) is not None:
        raise UserError(f"cannot write {shown(dest)}: a model with external data needs a folder for its "
                        f".data file, not a {fileio.special_kind(dest)}")
    if not needs_external_data(model):
        with fileio.atomic_path(dest, suffix=".onnx") as tmp:
            with open(tmp, "wb") as handle:
                write_model_streamed(model, handle)
        return dest
    # The .onnx names its .data file; both are written in a temporary folder beside `dest`
    # and renamed into place (.data first), so neither is ever half-written under its name.
    dest = fileio.resolve_output(dest)
    data_name = dest.name + ".data"
    with fileio.atomic_path(dest, suffix=".tmp") as anchor:  # the folder's checks, sweep and clean-up
        tmp = anchor.with_suffix(".d")
        try:
            tmp.mkdir()
            clone = onnx.ModelProto()
            clone.CopyFrom(model)
            onnx.save_model(clone, str(tmp / dest.name), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)
            os.replace(tmp / data_name, dest.parent / data_name)
            os.replace(tmp / dest.name, anchor)  # atomic_path renames it onto dest
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else "no details"
