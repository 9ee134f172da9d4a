"""A verb's plan: every file and folder it reads, writes or owns, declared before it writes anything.

Every verb builds one `Plan` and starts it before its first write. Starting it

- checks the whole plan with the output guard (`fileio.guard_outputs`): no output is an input,
  one of the tool's own files (a backup, a patch record, a stage cache, a lock), another
  output, a folder, a socket; outputs on devices and FIFOs are written through;
- refuses a symlink in any component of a path the verb writes under a folder it owns (a
  symlinked `OUT/whitelist_opp` would otherwise lead a delete or a write out of `--out`);
- refuses an owned folder that already holds files some other program wrote: an owned folder
  is new, empty, or marked by an earlier run of the same verb (`.lvvit-opt-owner`);
- locks every owned folder (`fcntl.flock` on the folder itself): a second process on the same
  folder is refused in one line instead of interleaving its writes;
- sweeps temporary files and folders of killed runs inside the owned folders.

A started plan is recorded (`started_plans`), so a test that walks every verb can check
that nothing outside the plan was written (`Plan.covers`). The CLI layer starts plans
through `lvvit_opt.cli.output.start_plan`, which adds --json and --log-file.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Union

from lvvit_opt.core.errors import OutputRefused, UserError, shown
from lvvit_opt.core.fileio import (
    OWNED_NAMES, TEMP_MARKER, guard_outputs, owned_file_kind, special_kind, sweep_stale_temps)

PathArg = Union[str, os.PathLike, None]
OWNER_NAME = ".lvvit-opt-owner"
OWNED_NAMES.setdefault(OWNER_NAME, "the record of which lvvit-opt verb owns this folder")

_started: list["Plan"] = []
_held: dict[str, int] = {}  # realpath of an owned folder -> how many started plans of this process lock it


def _paths(mapping: Mapping[str, PathArg] | None) -> dict[str, Path]:
    """label -> Path for the given paths; None, "", "-" (stdout) and numbers are not paths."""
    return {label: Path(os.fspath(p)) for label, p in (mapping or {}).items()
            if p is not None and not isinstance(p, (int, float)) and os.fspath(p) not in ("", "-")}


@dataclass
class Plan:
    """What one verb reads, writes and owns; labels name the option or argument (`MODEL`, `-o`)."""

    verb: str
    reads: dict[str, Path] = field(default_factory=dict)
    writes: dict[str, Path] = field(default_factory=dict)
    folders: dict[str, Path] = field(default_factory=dict)   # written into; everything inside is the verb's
    owned: dict[str, Path] = field(default_factory=dict)     # folders locked for the verb alone
    edits: dict[str, Path] = field(default_factory=dict)     # inputs changed in place (the verb's job), with
                                                              # the records kept beside them (OWNED_SUFFIXES)
    compatible: tuple[str, ...] = ()                          # other owner marks an owned folder may carry
    started_ns: int | None = None                            # time.time_ns() when start() checked it
    _locks: list[int] = field(default_factory=list, repr=False)
    _held: list[str] = field(default_factory=list, repr=False)
    _made: list[tuple[Path, bool, bool]] = field(default_factory=list, repr=False)  # (folder, created, marked)

    @classmethod
    def of(cls, verb: str, *, reads: Mapping[str, PathArg] | None = None, writes: Mapping[str, PathArg] | None = None,
           folders: Mapping[str, PathArg] | None = None, owned: Mapping[str, PathArg] | None = None,
           edits: Mapping[str, PathArg] | None = None, compatible: tuple[str, ...] = ()) -> "Plan":
        return cls(verb, _paths(reads), _paths(writes), _paths(folders), _paths(owned), _paths(edits), compatible)

    # -- declaring -------------------------------------------------------------------------

    def read(self, label: str, path: PathArg) -> "Plan":
        self.reads.update(_paths({label: path}))
        return self

    def write(self, label: str, path: PathArg) -> "Plan":
        self.writes.update(_paths({label: path}))
        return self

    def folder(self, label: str, path: PathArg, *, owned: bool = False) -> "Plan":
        target = self.owned if owned else self.folders
        target.update(_paths({label: path}))
        return self

    # -- checking --------------------------------------------------------------------------

    def check(self) -> None:
        """Refuse (exit 2, nothing written) a plan whose outputs would hit an input, each other,
        the tool's own files, or leave their folder through a symlink."""
        dirs = {**self.folders, **self.owned}
        guard_outputs(self.writes, self.reads, output_dirs=dirs)
        for label, folder in self.owned.items():
            _refuse_foreign_folder(label, folder, self.verb, self.compatible)
            for in_label, source in self.reads.items():
                if os.path.lexists(source) and _inside(source, folder):
                    raise OutputRefused(f"{in_label} {shown(source)} lies inside {label} {shown(folder)}, which "
                                        f"{self.verb} writes and may replace; move it out or give another "
                                        f"folder (nothing written)", [folder])
        for label, path in self.writes.items():
            for folder_label, folder in dirs.items():
                if _inside(path, folder):
                    refuse_symlinked_components(label, folder, path)
            for folder_label, folder in self.owned.items():  # its subfolders hold files the verb names itself
                if _inside(path, folder) and os.path.realpath(path.parent) != os.path.realpath(folder):
                    raise OutputRefused(f"{label} {shown(path)} lies in a subfolder of {folder_label} "
                                        f"{shown(folder)}, whose files {self.verb} writes; put it elsewhere "
                                        f"(nothing written)", [path])

    def covers(self, path: str | os.PathLike) -> bool:
        """True when writing `path` is in this plan: a declared output, or inside a declared folder."""
        path = os.path.abspath(path)
        for edited in self.edits.values():
            if os.path.realpath(path) == os.path.realpath(edited) or _is_record_of(path, edited):
                return True
        for declared in self.writes.values():
            if os.path.abspath(declared) == path or os.path.realpath(declared) == os.path.realpath(path):
                return True
        return any(os.path.abspath(folder) == path or _inside(path, folder, resolve=False) or _inside(path, folder)
                   for folder in {**self.folders, **self.owned}.values())

    # -- running ---------------------------------------------------------------------------

    def start(self) -> "Plan":
        """check(), then lock the owned folders, mark them, sweep their stale temporaries, record."""
        self.started_ns = time.time_ns()
        self.check()
        try:
            for label, folder in self.owned.items():
                self._lock(label, folder)
        except BaseException:
            self.release()
            raise
        _started.append(self)
        return self

    def release(self) -> None:
        """Unlock the owned folders."""
        while self._locks:
            with contextlib.suppress(OSError):
                os.close(self._locks.pop())
        while self._held:
            folder = self._held.pop()
            _held[folder] -= 1
            if not _held[folder]:
                del _held[folder]
        while self._made:  # a verb refused after start() leaves no trace: no empty marked folder
            _remove_if_bare(*self._made.pop())

    @contextlib.contextmanager
    def held(self) -> Iterator["Plan"]:
        self.start()
        try:
            yield self
        finally:
            self.release()

    def inside(self, label: str, relative: str | os.PathLike) -> Path:
        """The path `relative` under the declared folder `label`, refused (UserError) when one of
        its components below the folder is a symlink, a device or a FIFO: a write or a delete
        there must stay inside the folder."""
        folders = {**self.folders, **self.owned}
        if label not in folders:
            raise ValueError(f"{label} is not a folder of the {self.verb} plan")
        path = folders[label] / relative
        refuse_symlinked_components(label, folders[label], path)
        return path

    def temp_dir(self, label: str, name: str = "work") -> Path:
        """A new temporary folder inside the declared folder `label`, named as our temporaries are
        (`.NAME.lvvit-tmp.PID.RANDOM`): a later run sweeps it when this process was killed."""
        folders = {**self.folders, **self.owned}
        folder = folders[label]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f".{name}{TEMP_MARKER}{os.getpid()}.{secrets.token_hex(4)}"
        path.mkdir()
        return path

    def _lock(self, label: str, folder: Path) -> None:
        import fcntl

        created = not folder.exists()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{label} {shown(folder)}: cannot create it ({exc.strerror})") from None
        # the folder itself is flock'd: no lock file to leave behind or to race on; the lock dies
        # with its process
        try:
            fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise UserError(f"{label} {shown(folder)}: cannot open it ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f"`lvvit-opt {read_owner(folder)}`" if read_owner(folder) else "lvvit-opt"
                raise UserError(f"{label} {shown(folder)}: another {who} is writing there now; wait for it "
                                f"to finish or give another {label}") from None
            raise UserError(f"{label} {shown(folder)}: cannot lock it ({exc.strerror})") from None
        _held[os.path.realpath(folder)] = _held.get(os.path.realpath(folder), 0) + 1
        self._held.append(os.path.realpath(folder))
        self._locks.append(fd)
        marked = _mark_owner(folder, self.verb)
        self._made.append((folder, created, marked))
        sweep_stale_temps(folder)


def holds(folder: str | os.PathLike) -> bool:
    """True when a started plan of this process has `folder` locked (a library that locks it
    itself must not lock it twice: two flocks of one process on one folder conflict)."""
    return os.path.realpath(folder) in _held


def started_plans() -> list[Plan]:
    """The plans started in this process, oldest first (for the every-verb test)."""
    return list(_started)


def forget_started_plans() -> None:
    _started.clear()


def _is_record_of(path: str, edited: Path) -> bool:
    """A backup or patch record the tool keeps beside an edited file (`transpose.py.lvvit-opt.orig`)."""
    for candidate in {os.path.abspath(edited), os.path.realpath(edited)}:
        head = candidate + "."
        if path.startswith(head) and owned_file_kind(path) is not None:
            return True
    return False


def _inside(path: str | os.PathLike, folder: str | os.PathLike, *, resolve: bool = True) -> bool:
    norm = os.path.realpath if resolve else os.path.abspath
    return norm(path).startswith(norm(folder).rstrip(os.sep) + os.sep)


def refuse_symlinked_components(label: str, folder: str | os.PathLike, path: str | os.PathLike) -> None:
    """OutputRefused (exit 2) when a component of `path` below `folder` is a symlink: a write or
    a delete there would leave the folder (a symlinked OUT/whitelist_opp leading into CANN)."""
    try:
        relative = Path(os.path.abspath(path)).relative_to(os.path.abspath(folder))
    except ValueError:
        return
    current = Path(os.path.abspath(folder))
    for part in relative.parts:
        current = current / part
        if current.is_symlink():
            raise OutputRefused(f"{label}: {shown(current)} is a symlink; lvvit-opt writes only inside "
                                f"{shown(folder)}, remove the link or give another folder", [current])


def _refuse_foreign_folder(label: str, folder: Path, verb: str, compatible: tuple[str, ...]) -> None:
    """An owned folder is new, empty, or was written by an earlier run of this verb: a verb that
    replaces files by name must not replace a user's unrelated files there."""
    if not folder.is_dir():
        return
    try:
        entries = [e for e in os.listdir(folder) if TEMP_MARKER not in e]
    except OSError as exc:
        raise UserError(f"{label} {shown(folder)}: cannot list it ({exc.strerror})") from None
    if not entries:
        return
    owner = read_owner(folder)
    if owner == verb or (owner is not None and owner in compatible):
        return
    if owner is None and any(name in OWNED_NAMES and name != OWNER_NAME for name in entries):
        return  # an earlier version's cache file (.stages.json) marks its folder
    who = f"`lvvit-opt {owner}`" if owner else "something other than lvvit-opt"
    raise OutputRefused(f"{label} {shown(folder)} already holds files written by {who}; "
                        f"give a new or empty folder (nothing written)", [folder])


def read_owner(folder: Path) -> str | None:
    """The verb recorded in `folder`'s owner mark, or None (no mark, or not ours)."""
    mark = folder / OWNER_NAME
    if mark.is_symlink() or not mark.is_file():
        return None
    try:
        with open(mark, "rb") as handle:
            data = json.loads(handle.read(4096).decode("utf-8"))
        return str(data["verb"]) if isinstance(data, dict) and isinstance(data.get("verb"), str) else None
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _mark_owner(folder: Path, verb: str) -> bool:
    """Write the owner mark unless one is there; True when it was written now."""
    mark = folder / OWNER_NAME
    if read_owner(folder) is not None:
        return False
    from lvvit_opt.core.fileio import write_text_atomic

    write_text_atomic(mark, json.dumps({"verb": verb}) + "\n")
    return True


def _remove_if_bare(folder: Path, created: bool, marked: bool) -> None:
    """Remove the lock and mark this run left in a folder that holds nothing else, and the folder
    when this run created it: a verb that stopped before writing anything leaves it as it was."""
    if not (created or marked):
        return
    try:
        entries = set(os.listdir(folder))
    except OSError:
        return
    if not entries <= {OWNER_NAME}:
        return
    for name in entries:
        with contextlib.suppress(OSError):
            os.unlink(folder / name)
    if created:
        with contextlib.suppress(OSError):
            folder.rmdir()
