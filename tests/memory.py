"""Peak RSS of a block of code inside the test process (Linux): malloc_trim returns the free
heap to the system first, then /proc/self/clear_refs resets the high-water mark (VmHWM), so
the rise counts what the block itself touched, not what an earlier test left in malloc's free
lists (which the block could otherwise reuse unseen)."""
from __future__ import annotations

import contextlib
import ctypes
import os

import pytest


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _reset_peak() -> int:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # 5: reset the peak RSS to the current RSS (Linux >= 4.0)
    return _status_kb("VmRSS") * 1024


def peak_available() -> bool:
    try:
        _reset_peak()
        return True
    except (OSError, KeyError, AttributeError):
        return False


class Peak:
    """`rise`: bytes the peak RSS rose above the RSS at the start of the block."""

    rise: int = 0


@contextlib.contextmanager
def peak_rise():
    if not peak_available():
        pytest.skip("this kernel cannot reset the peak RSS (/proc/self/clear_refs)")
    peak = Peak()
    start = _reset_peak()
    yield peak
    peak.rise = _status_kb("VmHWM") * 1024 - start


def file_bytes(path: str | os.PathLike) -> int:
    """The model file plus its external .data files beside it (what 'the model file' weighs)."""
    import onnx

    size = os.path.getsize(path)
    model = onnx.load(str(path), load_external_data=False)
    seen = set()
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location" and entry.value not in seen:
                seen.add(entry.value)
                size += os.path.getsize(os.path.join(os.path.dirname(path), entry.value))
    return size
