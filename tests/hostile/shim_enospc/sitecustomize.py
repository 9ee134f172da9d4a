"""Test shim (only on PYTHONPATH in the disk-full tests): with LVVIT_HOSTILE_ENOSPC=TEXT, every
atomic write whose destination name contains TEXT writes half its bytes and then fails with
ENOSPC, as a full disk does. Active in pool workers too (forkserver and spawn start a fresh
interpreter, which imports sitecustomize)."""
import os

if os.environ.get("LVVIT_HOSTILE_ENOSPC"):
    import contextlib
    import errno

    import lvvit_opt.core.fileio as _fileio

    _marker = os.environ["LVVIT_HOSTILE_ENOSPC"]
    _real_atomic_path = _fileio.atomic_path

    @contextlib.contextmanager
    def _full_disk_atomic_path(dest, suffix=None):
        with _real_atomic_path(dest, suffix) as tmp:
            yield tmp
            if _marker in os.path.basename(str(dest)):
                size = os.path.getsize(tmp)
                with open(tmp, "r+b") as fh:
                    fh.truncate(size // 2)  # what had fitted
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    _fileio.atomic_path = _full_disk_atomic_path
