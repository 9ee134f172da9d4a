"""File helpers shared by every verb: the output guard, atomic writes, single-open reads.

Every verb calls `guard_outputs` with its inputs and outputs before doing any work, and
writes through `atomic_path` (or the helpers built on it), so that an output never
replaces an input, is never half-written, and leaves no temporary file behind.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator, Mapping, Union

from lvvit_opt.core.errors import OutputRefused, UserError, shown


# Temporary files are `.NAME.lvvit-tmp.PID.RANDOM[SUFFIX]` beside their destination: the
# marker makes them ours, the pid tells a later run whether their writer is still alive.
TEMP_MARKER = ".lvvit-tmp."
_TEMP_NAME = re.compile(r"^\..+" + re.escape(TEMP_MARKER) + r"(\d+)\.[0-9a-f]+")
_swept_dirs: set[str] = set()
NAME_IN_TEMP = 120      # characters of the destination's name kept in its temp name
NAME_MAX = 255          # bytes of one path component on Linux/macOS file systems
# Write failures that are about the destination, not a bug: reported as one line.
_NO_ROOM_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
                   errno.ENAMETOOLONG}

PathArg = Union[str, os.PathLike, None]

# Files the tool itself keeps: never an output of another verb (whitelist/patch.py writes the
# first three beside CANN's transpose.py; pipeline.py keeps its stage cache in --out).
OWNED_SUFFIXES = {".lvvit-opt.orig": "the backup of a patched file",
                  ".lvvit-opt.json": "the record of a patch",
                  ".lvvit-opt.replaced": "a file `whitelist restore --force` kept"}
OWNED_NAMES = {".stages.json": "the stage cache of `lvvit-opt run`"}
# Files of this process that are inputs of every verb (the --log-file): label -> path.
_protected: dict[str, Path] = {}


def protect(label: str, path: PathArg) -> None:
    """Make `path` an input of every later guard_outputs call in this process (the --log-file
    is appended to, so no output may replace it and no input may be it)."""
    if path is None:
        _protected.pop(label, None)
    else:
        _protected[label] = Path(os.fspath(path))


def owned_file_kind(path: str | os.PathLike) -> str | None:
    """What the tool keeps in `path` (a backup, a patch record, ...) judged by its name, or None."""
    name = Path(path).name
    if name in OWNED_NAMES:
        return OWNED_NAMES[name]
    if TEMP_MARKER in name:
        return "a temporary file of a running (or killed) lvvit-opt"
    name = re.sub(r"\.\d+$", "", name)  # `restore --force` numbers its kept copies: .replaced.2, ...
    return next((kind for suffix, kind in OWNED_SUFFIXES.items() if name.endswith(suffix)), None)


def special_kind(path: str | os.PathLike) -> str | None:
    """'character device', 'block device', 'FIFO' or 'socket' for an existing path (through
    symlinks) that is neither a regular file nor a folder; None otherwise."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    for test, kind in ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return kind
    return None


# -- the output guard ----------------------------------------------------------------------

def guard_outputs(outputs: Mapping[str, PathArg], inputs: Mapping[str, PathArg] | None = None, *,
                  output_dirs: Mapping[str, PathArg] | None = None) -> None:
    """Refuse (UserError, exit 2) before any work when an output would hit an input or another output.

    `outputs` / `inputs` / `output_dirs` map a label for the message (`-o`, `--report`,
    `MODEL`) to a path; None values are skipped. Two paths collide when they are the same
    after resolving symlinks and `..` (os.path.realpath) or, for existing files, the same
    inode (st_dev, st_ino: hard links). Also refused: an existing file inside an input
    folder (an image of SRC_DIR given as --info), an output that is a directory, an output
    directory that is a file, and a destination whose folder cannot be written.
    """
    files = _present(outputs)
    dirs = _present(output_dirs or {})
    sources = _present(inputs or {}) + list(_protected.items())
    for label, path in list(_protected.items()):
        for in_label, source in _present(inputs or {}):
            if same_path(path, source) and not _both_char_devices(path, source):
                raise OutputRefused(f"{label} {shown(path)} is the input {in_label}; appending the log "
                                    f"to it would change it, nothing written", [])
    for label, path in files + dirs:
        if any(len(os.fsencode(part)) > NAME_MAX for part in path.parts):
            raise OutputRefused(f"{label} {str(path)[:80]}...: a name in this path is longer than {NAME_MAX} bytes",
                                [path])
    for label, path in files:
        if path.is_dir():
            raise OutputRefused(f"{label} {shown(path)}: is a directory; give a file name", [path])
        for in_label, source in sources:
            if same_path(path, source) and not _both_char_devices(path, source):
                raise OutputRefused(f"{label} {shown(path)} is the input {in_label} ({shown(source)}); "
                                    f"refusing to overwrite an input, nothing written", [path])
            if path.exists() and source.is_dir() and _inside(path, source):
                raise OutputRefused(f"{label} {shown(path)} is a file inside the input folder {in_label} "
                                    f"({shown(source)}); refusing to overwrite it, nothing written", [path])
    for label, path in files:  # after the inputs: a verb that names its own files says which
        kind = owned_file_kind(path) or owned_file_kind(os.path.realpath(path))  # also through a symlink
        if kind is not None:
            raise OutputRefused(f"{label} {shown(path)} is {kind}, which lvvit-opt keeps; "
                                f"refusing to overwrite it, nothing written", [path])
    for label, path in dirs:
        if path.exists() and not path.is_dir():
            raise OutputRefused(f"{label} {shown(path)}: exists and is not a directory", [path])
        for in_label, source in sources:
            if same_path(path, source):
                raise OutputRefused(f"{label} {shown(path)} is the input {in_label} ({shown(source)}); "
                                    f"give another folder", [path])
    targets = files + dirs
    for i, (label, path) in enumerate(targets):
        for other_label, other in targets[i + 1:]:
            if same_path(path, other) and not _both_char_devices(path, other):
                raise OutputRefused(f"{label} {shown(path)} and {other_label} {shown(other)} are the same file; "
                                    f"give each output its own path", [path, other])
    for label, path in files + dirs:
        if (label, path) in files and special_kind(path) is not None:
            _require_writable_special(path, label)  # written through, never renamed over: its folder is not ours
            continue
        try:
            require_writable_dir(path if (label, path) in dirs else path.parent, f"{label} {shown(path)}")
        except UserError as exc:
            raise OutputRefused(str(exc), [path]) from None


def _both_char_devices(a: Path, b: Path) -> bool:
    """Two outputs on /dev/null (or a terminal) do not collide: a device keeps no content to lose."""
    return special_kind(a) == "character device" and special_kind(b) == "character device"


def _require_writable_special(path: Path, label: str) -> None:
    kind = special_kind(path)
    if kind in ("socket", "block device"):
        raise OutputRefused(f"{label} {shown(path)} is a {kind}; give a file, a character device or a FIFO",
                            [path])
    if not os.access(path, os.W_OK):
        raise OutputRefused(f"{label} {shown(path)}: cannot write to this {kind} (permission denied)", [path])


def _present(paths: Mapping[str, PathArg]) -> list[tuple[str, Path]]:
    """(label, Path) of the given paths; None, "", "-" (stdout) and numbers (`--inputs 4`) are not paths."""
    return [(label, Path(os.fspath(p))) for label, p in paths.items()
            if p is not None and not isinstance(p, int) and os.fspath(p) not in ("", "-")]


def _inside(path: Path, folder: Path) -> bool:
    """True when `path` (resolved) lies somewhere under `folder` (resolved)."""
    return os.path.realpath(path).startswith(os.path.realpath(folder).rstrip(os.sep) + os.sep)


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when a and b name the same file: equal after realpath, or the same inode."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def require_writable_dir(directory: str | os.PathLike, what: str) -> None:
    """UserError unless `directory` exists and is writable, or could be created.

    Checked on the nearest existing ancestor; root passes os.access everywhere, so that case
    is settled by creating (and removing) a probe file of our temp naming there.
    """
    directory = Path(os.path.abspath(directory))
    existing = directory
    while not existing.exists():
        if existing.is_symlink():  # a dangling symlink in the path
            raise UserError(f"{what}: {existing} is a broken symlink")
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{what}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{what}: cannot write to {existing} (permission denied)")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        probe = existing / f".probe{TEMP_MARKER}{os.getpid()}.{secrets.token_hex(4)}"
        try:  # created inside the try: a SIGTERM right after the creation still removes it
            try:
                os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except OSError as exc:
                raise UserError(f"{what}: cannot write to {existing} ({exc.strerror})") from None
        finally:  # also on Ctrl-C/SIGTERM (a probe of a killed run is swept later: its pid is dead)
            with contextlib.suppress(OSError):
                os.unlink(probe)


def require_regular_file(path: str | os.PathLike) -> Path:
    """UserError unless `path` is a regular file (or absent: the caller's "no such file" then):
    reading /dev/zero or a FIFO as a text input would never end and eat the memory."""
    path = Path(path)
    if path.exists() and not path.is_file():
        kind = special_kind(path) or "folder"
        raise UserError(f"{shown(path)}: not a regular file (a {kind})")
    return path


# -- atomic writes ------------------------------------------------------------------------

def temp_path_for(dest: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """The temporary name `atomic_path` uses for `dest` in this process (unique per call)."""
    dest = Path(dest)
    name = dest.name[:NAME_IN_TEMP]  # a long (legal) name must not give an illegal temp name
    return dest.parent / f".{name}{TEMP_MARKER}{os.getpid()}.{secrets.token_hex(4)}{suffix}"


def is_stale_temp(name: str) -> bool:
    """True for one of our temporary names whose writing process is gone."""
    match = _TEMP_NAME.match(name)
    return bool(match) and not pid_alive(int(match.group(1)))


def sweep_stale_temps(directory: str | os.PathLike) -> int:
    """Remove our temporary files in `directory` left by killed runs (their pid is dead).

    A temp of a live process (another run writing now) is left alone. Returns the count.
    """
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        if entry.name.startswith(".") and TEMP_MARKER in entry.name and is_stale_temp(entry.name):
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):  # save_onnx's folder for a model and its .data
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed += 1
    return removed


def pid_alive(pid: int) -> bool:
    """False only when no process has this pid (the writer of a temp file is gone)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's live process (or a pid we cannot judge): keep its file
    return True


def resolve_output(dest: str | os.PathLike) -> Path:
    """Where writing `dest` really goes: through a symlink to its target (the link stays a link)."""
    dest = Path(dest)
    return Path(os.path.realpath(dest)) if dest.is_symlink() else dest


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; rename it onto `dest` only if the block succeeds.

    A crash, exception, Ctrl-C or SIGTERM (the CLI turns it into an exception) leaves `dest`
    untouched (either absent or the old file) and removes the temporary file, so outputs are
    never half-written. A `dest` that is a symlink is written through to its target. Stale
    temporaries of killed runs in the same folder are removed first (once per process).
    An unwritable destination is a UserError naming it.
    """
    if special_kind(dest) is not None:  # /dev/null, /dev/stdout, a FIFO: written through, never replaced
        yield from _through_special(Path(dest), suffix or ".tmp")
        return
    dest = resolve_output(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the folder of {shown(dest)}: {exc.strerror or exc}") from None
    _sweep_once(os.path.abspath(dest.parent))
    tmp_path = temp_path_for(dest, suffix or ".tmp")
    try:  # created inside the try: a signal right after the creation still removes it
        try:
            os.close(os.open(tmp_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except OSError as exc:
            raise UserError(f"cannot write {shown(dest)}: {exc.strerror or exc}") from None
        with _no_room_as_user_error(dest):
            yield tmp_path
        if dest.exists():
            with contextlib.suppress(OSError):
                os.chmod(tmp_path, dest.stat().st_mode & 0o7777)
        else:
            os.chmod(tmp_path, 0o666 & ~_umask())
        with _no_room_as_user_error(dest):
            os.replace(tmp_path, dest)
    finally:
        with contextlib.suppress(OSError):
            tmp_path.unlink()


def _sweep_once(folder: str) -> None:
    """Remove stale temporaries of killed runs from `folder`, once per process."""
    if folder not in _swept_dirs:
        _swept_dirs.add(folder)
        sweep_stale_temps(folder)


@contextlib.contextmanager
def _no_room_as_user_error(dest: Path) -> Iterator[None]:
    """A full disk, a read-only or forbidden destination is the user's to fix: one line naming it."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _NO_ROOM_ERRNOS:
            raise UserError(f"cannot write {shown(dest)}: {exc.strerror}") from None
        raise


def _through_special(dest: Path, suffix: str) -> Iterator[Path]:
    """atomic_path for a device or FIFO: the block writes a temporary file in the system's temp
    folder, which is streamed into `dest` only when the block succeeded (so a reader never gets
    half an output); `dest` itself is opened for writing, never renamed over or removed."""
    folder = tempfile.gettempdir()
    _sweep_once(folder)
    tmp_path = temp_path_for(Path(folder) / dest.name, suffix)
    try:
        os.close(os.open(tmp_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        with _no_room_as_user_error(dest):
            yield tmp_path
        copy_into_special(tmp_path, dest)
    finally:
        with contextlib.suppress(OSError):
            tmp_path.unlink()


def copy_into_special(source: Path, dest: Path) -> None:
    """Write the bytes of `source` into the device or FIFO `dest`. A FIFO is opened without
    blocking: with no reader that is ENXIO, said in one line instead of hanging forever."""
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise UserError(f"cannot write {shown(dest)}: a FIFO with no reader (start its reader first)") from None
        raise UserError(f"cannot write {shown(dest)}: {exc.strerror}") from None
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        with open(source, "rb") as handle:
            while chunk := handle.read(1 << 20):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
    except OSError as exc:
        reason = "its reader went away" if exc.errno == errno.EPIPE else exc.strerror
        raise UserError(f"cannot write {shown(dest)}: {reason}") from None
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(dest: str | os.PathLike, text: str) -> None:
    """UTF-8; a path that is not UTF-8 (its undecodable bytes are surrogates in Python's
    str) is written back as its own bytes, so a generated script names the real file."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8", errors="surrogateescape")


def write_bytes_atomic(dest: str | os.PathLike, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_figure(fig, dest: str | os.PathLike, caveat: str | None = None) -> Path:
    """Save a matplotlib figure as PNG through atomic_path, then close it (pyplot keeps every
    open figure's memory until it is closed). `caveat` (e.g. random weights) becomes a red
    subtitle above the plot, so the picture never travels without it."""
    import matplotlib.pyplot as plt

    if caveat:  # above the plot, the layout the caller chose kept: the axes move down a little
        fig.suptitle(caveat, color="tab:red", fontsize=9, y=0.995)
        fig.subplots_adjust(top=fig.subplotpars.top - 0.06)
    dest = Path(dest)
    with atomic_path(dest, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return dest


def read_regular_file(path: str | os.PathLike) -> tuple[bytes, tuple[int, int, int, int]]:
    """The bytes of a regular file and its identity (st_dev, st_ino, st_size, st_mtime_ns), from
    ONE open: the type is checked on the descriptor, so a file replaced between a check and its
    use (a symlink swapped for a FIFO, another model moved in) cannot slip through, and the
    checks that follow judge exactly the bytes that are used. A FIFO or device is refused
    without blocking (O_NONBLOCK)."""
    with open_regular_file(path) as (handle, identity):
        return handle.read(), identity


def stat_regular_file(path: str | os.PathLike) -> os.stat_result:
    """The stat of `path` (through symlinks) when it is a regular file, else a one-line UserError
    decided on the stat alone: a FIFO or device is never opened."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{shown(path)}: no such file") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{shown(path)}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "folder" if stat.S_ISDIR(st.st_mode) else (special_kind(path) or "special file")
        raise UserError(f"{shown(path)}: not a regular file (a {kind})")
    return st


@contextlib.contextmanager
def open_regular_file(path: str | os.PathLike, buffering: int = -1):
    """(binary handle, identity) of ONE open of a regular file, checked as read_regular_file
    checks it; for readers that parse as they read instead of holding all the bytes. The path
    is stat'ed first: a FIFO or device is refused without being opened at all (an open, even
    non-blocking, is seen by a FIFO's writer); the descriptor is checked again after the open."""
    stat_regular_file(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UserError(f"{shown(path)}: no such file") from None
    except OSError as exc:
        raise UserError(f"{shown(path)}: cannot read it ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "folder" if stat.S_ISDIR(st.st_mode) else (special_kind(f"/proc/self/fd/{fd}") or "special file")
            raise UserError(f"{shown(path)}: not a regular file (a {kind})")
        os.set_blocking(fd, True)
        handle = os.fdopen(os.dup(fd), "rb", buffering=buffering)
    finally:
        os.close(fd)
    with handle:
        yield handle, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


