"""Test shim (only on PYTHONPATH in the hostile signal tests): with LVVIT_HOSTILE_PAUSE=SECONDS,
every atomic write pauses after its temporary file is complete and before the rename, so a
test can send SIGINT/SIGTERM exactly while a temporary output exists. Also active in pool
workers (forkserver and spawn start a fresh interpreter, which imports sitecustomize)."""
import os

if os.environ.get("LVVIT_HOSTILE_PAUSE"):
    import contextlib
    import time

    import lvvit_opt.fileio as _fileio

    _pause = float(os.environ["LVVIT_HOSTILE_PAUSE"])
    _real_atomic_path = _fileio.atomic_path

    @contextlib.contextmanager
    def _paused_atomic_path(dest, suffix=None):
        with _real_atomic_path(dest, suffix) as tmp:
            yield tmp
            time.sleep(_pause)  # written, not yet renamed: the moment the signal must arrive

    _fileio.atomic_path = _paused_atomic_path
