"""Listing an image directory and decoding images in worker processes.

Shared by `preprocess` (writes .bin files) and `eval` (streams into the model).
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
from pathlib import Path

from lvvit_opt.core.errors import UserError
from lvvit_opt.data.transform import EvalTransform

IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".gif"})


def image_stem(name: str) -> str:
    """The key that pairs an image with its outputs and its label: the file name without
    its last extension ('ILSVRC2012_val_00000001.JPEG' -> 'ILSVRC2012_val_00000001')."""
    base = os.path.basename(name)
    return base.rsplit(".", 1)[0] if "." in base else base


def list_images(src_dir: str | os.PathLike, limit: int | None = None) -> list[Path]:
    """Image files directly in `src_dir`, sorted by name (a deterministic order).

    Raises UserError if the directory is missing, holds no images, or two images share a
    stem (they would write the same output file).
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise UserError(f"{src}: not a directory")
    paths = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise UserError(f"{src}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    seen: dict[str, Path] = {}
    for path in paths:
        stem = image_stem(path.name)
        if stem in seen:
            raise UserError(f"{seen[stem].name} and {path.name} have the same stem {stem!r}; their outputs would collide")
        seen[stem] = path
    return paths[:limit] if limit else paths


def default_workers() -> int:
    """One worker per CPU this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def worker_pool(workers: int, initializer=None, initargs: tuple = ()):
    """A process pool that is safe to start from a process that already runs threads
    (onnxruntime, torch): forkserver where available, else spawn."""
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    return context.Pool(workers, initializer=_init_pool_worker, initargs=(initializer, initargs))


def _init_pool_worker(initializer, initargs: tuple) -> None:
    """Signals of a pool worker, then the caller's initializer.

    Ctrl-C reaches the whole process group: the parent handles it and terminates the pool,
    so workers ignore SIGINT (no KeyboardInterrupt traceback from each). SIGTERM (what
    pool.terminate() sends) keeps its default: the worker ends at once, silently; the
    parent then removes the temporary files of its dead workers (fileio.sweep_stale_temps).
    An exception raised from a handler instead can hit a worker holding a lock and hang
    its exit (and pool.terminate() with it). And a worker dies with its parent
    (PR_SET_PDEATHSIG on Linux) instead of writing on after a kill -9 and failing with
    BrokenPipe tracebacks.
    """
    worker_signals()
    if initializer is not None:
        initializer(*initargs)


def worker_signals() -> None:
    """Call first in any worker process: ignore Ctrl-C (the parent handles it), end at once and
    silently on SIGTERM, and die with the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()
    if hasattr(signal, "pthread_sigmask"):  # started under signals_held(): take signals from now on
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


@contextlib.contextmanager
def signals_held():
    """Hold Ctrl-C and SIGTERM while worker processes start: a worker cut off while reading its
    start-up data from the parent dies with an EOFError traceback. In the parent a signal that
    arrives meanwhile is recorded and raised again when the block ends; workers inherit the
    blocked mask and take signals from worker_signals() on."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    watched = (signal.SIGINT, signal.SIGTERM)
    handlers = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in watched}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(watched)) if hasattr(signal, "pthread_sigmask") else None
    try:
        yield
    finally:
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # pending ones land in `caught`
        for sig, handler in handlers.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if caught:
            signal.raise_signal(caught[0])


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent exits (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent is already gone
        raise SystemExit(0)


# -- worker side -------------------------------------------------------------------------

_TRANSFORM: EvalTransform | None = None


def init_worker(transform: EvalTransform, niceness: int = 0) -> None:
    """Pool initializer: remember the transform for the tasks that follow.

    `niceness` > 0 lowers the worker's CPU priority: eval uses it so that decoding fills
    the gaps of a CPU-bound model instead of preempting its threads.
    """
    global _TRANSFORM
    _TRANSFORM = transform
    if niceness > 0 and hasattr(os, "nice"):
        try:
            os.nice(niceness)
        except OSError:
            pass


def worker_transform() -> EvalTransform:
    """The transform `init_worker` set in this process."""
    if _TRANSFORM is None:
        raise RuntimeError("init_worker was not called in this process")
    return _TRANSFORM


def worker_ready(_index: int) -> bool:
    """No-op task: returns once a worker has started and run its initializer."""
    return _TRANSFORM is not None


def decode_for_eval(path: str) -> tuple[str, object]:
    """Worker task for eval: (path, uint8 HWC crop) or (path, 'error message')."""
    try:
        return path, _TRANSFORM.load_crop(path)
    except Exception as exc:  # corrupt or unreadable image: report, keep going
        return path, describe_error(exc)


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
