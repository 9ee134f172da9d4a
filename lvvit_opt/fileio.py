"""File helpers shared by every verb: atomic writes and safe ONNX load/save."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import UserError

# protobuf cannot serialise a single message above 2 GiB; past this we use external data.
ONNX_PROTO_LIMIT = 2 * 1024**3 - 1024**2


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; rename it onto `dest` only if the block succeeds.

    A crash or exception leaves `dest` untouched (either absent or the old file) and
    removes the temporary file, so outputs are never half-written.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix or ".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if dest.exists():
            with contextlib.suppress(OSError):
                os.chmod(tmp_path, dest.stat().st_mode & 0o7777)
        else:
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(dest: str | os.PathLike, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(dest: str | os.PathLike, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def load_onnx(path: str | os.PathLike, load_external_data: bool = True):
    """Load an ONNX model, turning every kind of bad file into a one-line UserError."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=load_external_data)
    except Exception as exc:  # protobuf DecodeError, missing external data, ...
        raise UserError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {_first_line(exc)})") from None
    if not model.graph.node and not model.graph.output:
        raise UserError(f"{path}: not an ONNX model (empty graph)")
    return model


def weights_nbytes(model) -> int:
    """Bytes held by the initializers (cheap; no full serialisation)."""
    return sum(len(t.raw_data) + 4 * len(t.float_data) + 8 * (len(t.int64_data) + len(t.double_data))
               + 4 * len(t.int32_data) for t in model.graph.initializer)


def needs_external_data(model) -> bool:
    """True when the model cannot be one protobuf message (over 2 GB), or already keeps
    its tensors outside. The weights dominate the size, so they decide, with a margin."""
    import onnx

    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        return True
    return weights_nbytes(model) > ONNX_PROTO_LIMIT - 64 * 1024**2


def save_onnx(model, dest: str | os.PathLike) -> Path:
    """Save atomically; models over 2 GB go to `<name>.data` beside the file.

    The caller's model is never modified (onnx's external-data save strips the tensors
    of the model it is given, so that path works on a copy)."""
    import onnx

    dest = Path(dest)
    with atomic_path(dest, suffix=".onnx") as tmp:
        if needs_external_data(model):
            clone = onnx.ModelProto()
            clone.CopyFrom(model)
            onnx.save_model(clone, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=dest.name + ".data", size_threshold=1024)
        else:
            tmp.write_bytes(model.SerializeToString())
    return dest


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else "no details"
