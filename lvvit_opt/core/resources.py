"""Host resources: refuse work whose memory cannot be had, before allocating it (one line, exit 2),
and share the cores out over processes; imports only errors and numpy."""
from __future__ import annotations

import math
import os
from typing import Iterable

import numpy as np

from lvvit_opt.core.errors import UserError

# Leave this share of the available memory to the rest (runtime, copies, the OS).
USABLE_SHARE = 0.9


def available_memory() -> int | None:
    """Bytes of memory this process can still get (MemAvailable + free swap, and no more than
    its address-space limit, `ulimit -v`, leaves), None if unknown."""
    host = _host_available()
    room = _address_space_left()
    if room is None:
        return host
    return room if host is None else min(host, room)


def _address_space_left() -> int | None:
    """RLIMIT_AS minus the address space already mapped (VmSize), None without a limit."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY:
            return None
        with open("/proc/self/status", encoding="ascii") as fh:
            size = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
    except (ImportError, OSError, ValueError, StopIteration):
        return None
    return max(0, soft - size)


def _host_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh if line.split()[1:2]}
    except (OSError, ValueError, IndexError):
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    if "MemAvailable" not in fields:
        return None
    return fields["MemAvailable"] + fields.get("SwapFree", 0)


def tensor_nbytes(shape: Iterable[int], dtype="float32") -> int:
    """Bytes of one dense array of this shape and dtype (Python ints: no overflow)."""
    return math.prod(int(d) for d in shape) * np.dtype(dtype).itemsize


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def require_memory(nbytes: int, what: str, available: int | None = None) -> None:
    """UserError when `what` needs more than the memory left (estimated before allocating)."""
    available = available_memory() if available is None else available
    if available is not None and nbytes > available * USABLE_SHARE:
        raise UserError(f"{what} needs about {format_bytes(nbytes)} of memory but only "
                        f"{format_bytes(available)} is available; use a smaller batch or size")


def threads_per_process(threads: int | None, processes: int) -> int:
    """onnxruntime threads for each of `processes` CPU processes: `threads` if given, else the
    cores shared out, at least 1."""
    return threads or max(1, (os.cpu_count() or 1) // processes)
