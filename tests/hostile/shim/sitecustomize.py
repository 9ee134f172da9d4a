"""Test shim (only on PYTHONPATH in the hostile signal tests): with LVVIT_HOSTILE_PAUSE=SECONDS,
every atomic write pauses after its temporary file is complete and before the rename, so a
test can send SIGINT/SIGTERM exactly while a temporary output exists. Also active in pool
workers (forkserver and spawn start a fresh interpreter, which imports sitecustomize).

LVVIT_HOSTILE_PAUSE_AT=NAME[#N] pauses only the Nth (default first) atomic write whose
destination's file name is NAME, and then creates the file LVVIT_HOSTILE_PAUSE_FLAG (when
set), so a test can kill the process at one chosen step of a sequence of writes."""
import os

if os.environ.get("LVVIT_HOSTILE_PAUSE"):
    import contextlib
    import time
    from pathlib import Path

    import lvvit_opt.core.fileio as _fileio

    _pause = float(os.environ["LVVIT_HOSTILE_PAUSE"])
    _at_name, _, _at_count = os.environ.get("LVVIT_HOSTILE_PAUSE_AT", "").partition("#")
    _seen = {"count": 0}
    _real_atomic_path = _fileio.atomic_path

    def _should_pause(dest) -> bool:
        if not _at_name:
            return True
        if Path(dest).name != _at_name:
            return False
        _seen["count"] += 1
        return _seen["count"] == int(_at_count or 1)

    @contextlib.contextmanager
    def _paused_atomic_path(dest, suffix=None):
        pause = _should_pause(dest)
        with _real_atomic_path(dest, suffix) as tmp:
            yield tmp
            if pause:
                if os.environ.get("LVVIT_HOSTILE_PAUSE_FLAG"):
                    Path(os.environ["LVVIT_HOSTILE_PAUSE_FLAG"]).touch()
                time.sleep(_pause)  # written, not yet renamed: the moment the signal must arrive

    _fileio.atomic_path = _paused_atomic_path
