"""The journal of `whitelist patch`: the backup and record beside transpose.py, checked and
settled before any verb relies on them.

A patch in place is a transaction of four atomic writes, in this order:
  1. the record, state "pending": the original's sha256 and the sha256 the patch will write;
  2. the backup (first patch only);
  3. the patched transpose.py;
  4. the record, state "done".
So the target is rewritten only when both journal files exist, and a kill between any two
steps leaves a state the checksums explain: the target is still the file before the patch
(undo: drop the intent) or the pending patch's bytes (finish: commit). Anything else, and
any backup or record that does not check out, is refused with the evidence.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lvvit_opt.core.errors import UserError
from lvvit_opt.core.fileio import atomic_path, sweep_stale_temps

BACKUP_SUFFIX = ".lvvit-opt.orig"
RECORD_SUFFIX = ".lvvit-opt.json"
REPLACED_SUFFIX = ".lvvit-opt.replaced"
PENDING, DONE = "pending", "done"
_SHA = re.compile(r"^[0-9a-f]{64}$")
logger = logging.getLogger(__name__)


def backup_path(file: Path) -> Path:
    return file.with_name(file.name + BACKUP_SUFFIX)


def record_path(file: Path) -> Path:
    return file.with_name(file.name + RECORD_SUFFIX)


def replaced_path(file: Path) -> Path:
    """A free name for a changed file that `restore --force` keeps (never over an earlier one)."""
    first = file.with_name(file.name + REPLACED_SUFFIX)
    candidate, n = first, 1
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = first.with_name(f"{first.name}.{n}")
    return candidate


def own_files(file: Path) -> dict[str, Path]:
    """transpose.py and the files the tool keeps beside it: inputs for the output guard."""
    files = {"transpose.py": file, "lvvit-opt backup": backup_path(file), "lvvit-opt record": record_path(file)}
    try:
        kept = sorted(p for p in file.parent.iterdir() if p.name.startswith(file.name + REPLACED_SUFFIX))
    except OSError:   # an unlistable folder: nothing of ours can be found in it either
        kept = []
    files.update((f"lvvit-opt kept copy {n}", p) for n, p in enumerate(kept, 1))
    return files


def real_file(path: Path) -> Path:
    """The file a (chain of) symlink(s) points at: atc reads the target, so that is what we patch,
    with the backup and record beside it (a patch of the link would replace the link)."""
    return Path(os.path.realpath(path)) if Path(path).is_symlink() else Path(path)


@contextlib.contextmanager
def transpose_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive fcntl lock on the folder of `path` while it is read, patched and recorded.

    Two patches at once (two terminals, two CI jobs) then run one after the other and the
    second sees the first's shapes. The folder, not the file, is locked: the file is replaced
    by rename, so a lock on it would be on a stale inode. A waiting patch says so (log warning).
    """
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.warning("waiting for another lvvit-opt whitelist patch/restore of %s to finish (lock on %s)",
                           path, path.parent)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def short(digest: str | None) -> str:
    return f"{digest[:12]}…" if digest else "none"


# ------------------------------------------------------------------------------ reading

@dataclass
class Journal:
    """The record (None: absent) and the backup's bytes (None: absent) of one transpose.py."""

    path: Path
    record: dict | None
    backup: bytes | None

    @property
    def record_file(self) -> Path:
        return record_path(self.path)

    @property
    def backup_file(self) -> Path:
        return backup_path(self.path)

    @property
    def original_sha(self) -> str | None:
        return self.record["original_sha256"] if self.record else None

    @property
    def committed_sha(self) -> str | None:
        """sha256 of the file after the last committed patch (None before the first commit)."""
        return self.record.get("patched_sha256") if self.record else None

    @property
    def pending(self) -> dict | None:
        return self.record.get("pending") if self.record and self.record.get("state") == PENDING else None

    def explains(self, digest: str) -> bool:
        """True when `digest` is a state our record accounts for (original, committed, pending)."""
        pending = self.pending or {}
        return digest in {self.original_sha, self.committed_sha, pending.get("patched_sha256")} - {None}


def load_journal(path: Path, lenient: bool = False) -> Journal:
    """Read and check the backup and record of `path`; UserError naming what does not match.

    lenient=True (restore --force) keeps going where the record is unreadable (record=None)
    or the backup's checksum is off: the caller then trusts the backup as it is.
    """
    record_file, backup_file = record_path(path), backup_path(path)
    backup = _read_ours(backup_file, "backup")
    try:
        record = _read_record(path) if record_file.exists() or record_file.is_symlink() else None
    except UserError:
        if not lenient:
            raise
        record = None
    if record is not None and backup is not None and sha256(backup) != record["original_sha256"] and not lenient:
        raise UserError(f"backup {backup_file}: sha256 {short(sha256(backup))} does not match the record's "
                        f"{short(record['original_sha256'])} ({record_file.name}): truncated or edited; refusing to "
                        f"use it (`whitelist restore --force` puts it back anyway)")
    return Journal(path, record, backup)


def _read_ours(file: Path, what: str) -> bytes | None:
    if not (file.exists() or file.is_symlink()):
        return None
    if not file.is_file():
        raise UserError(f"{what} {file}: not a regular file; refusing to touch it")
    try:
        return file.read_bytes()
    except OSError as exc:
        raise UserError(f"{what} {file}: cannot read ({exc.strerror or exc})") from None


def _read_record(path: Path) -> dict:
    record_file = record_path(path)
    text = _read_ours(record_file, "record")
    try:
        record = json.loads(text.decode("utf-8"))
    except ValueError as exc:
        raise UserError(f"record {record_file}: not valid JSON ({exc}); refusing to patch or restore from it "
                        f"(`whitelist restore --force` puts {backup_path(path).name} back)") from None
    problem = _record_problem(record, path)
    if problem:
        raise UserError(f"record {record_file}: {problem}; refusing to patch or restore from it")
    record.setdefault("patches", [])
    record.setdefault("state", DONE)   # records written before the journal have no state
    return record


def _record_problem(record: object, path: Path) -> str | None:
    """What makes `record` not a record of `path`, or None."""
    if not isinstance(record, dict) or record.get("tool", "lvvit-opt") != "lvvit-opt":
        return "not an lvvit-opt record"
    if not _SHA.match(str(record.get("original_sha256", ""))):
        return "no valid original_sha256"
    if record.get("file") not in (None, str(path.resolve())):
        return (f"it is the record of {record['file']}, not of {path.resolve()} (a copied opp tree? "
                "`whitelist restore --force` here puts this folder's backup back)")
    if record.get("backup") not in (None, backup_path(path).name):
        return f"it names the backup {record['backup']!r}, not {backup_path(path).name!r}"
    state = record.get("state", DONE)
    if state not in (PENDING, DONE):
        return f"unknown state {state!r}"
    if "patched_sha256" in record and not _SHA.match(str(record["patched_sha256"])):
        return "patched_sha256 is not a sha256"
    if state == DONE and "patched_sha256" not in record:
        return "state done without patched_sha256"
    pending = record.get("pending")
    if state == PENDING and not (isinstance(pending, dict) and _SHA.match(str(pending.get("patched_sha256", "")))
                                 and isinstance(pending.get("entries"), list)):
        return "state pending without a valid pending patch"
    if not isinstance(record.get("patches", []), list):
        return "patches is not a list"
    return None


# ------------------------------------------------------------------------------ writing

def write_atomic(dest: Path, data: bytes) -> None:
    """Atomic write that keeps an existing file's mode (the single writer tests can fail)."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_record(path: Path, record: dict) -> None:
    write_atomic(record_path(path), record_json(record).encode())


def record_json(record: dict) -> str:
    """Indented JSON with each shape kept on one line."""
    text = json.dumps(record, indent=2)
    return re.sub(r"\[\s+(-?\d+(?:,\s+-?\d+)*)\s+\]",
                  lambda m: "[" + ", ".join(re.split(r",\s+", m.group(1))) + "]", text) + "\n"


def committed(record: dict) -> dict:
    """The pending patch of `record` made part of it (state done)."""
    pending = record["pending"]
    done = {k: v for k, v in record.items() if k != "pending"}
    done["state"] = DONE
    done["patched_sha256"] = pending["patched_sha256"]
    done["patches"] = list(record.get("patches", [])) + [
        {k: pending[k] for k in ("time", "list", "entries") if k in pending}]
    return done


def without_pending(record: dict) -> dict:
    """`record` as it was before its pending patch (state done)."""
    return dict({k: v for k, v in record.items() if k != "pending"}, state=DONE)


def remove_journal(path: Path) -> None:
    """Drop the record first (the transaction is over), then the backup; a kill in between
    leaves a backup equal to the file, which `settle` removes."""
    for file in (record_path(path), backup_path(path)):
        file.unlink(missing_ok=True)


# ------------------------------------------------------------------------------ settling

def settle(path: Path, current: bytes, verify) -> tuple[Journal, str | None]:
    """Finish or undo an interrupted patch and drop stale journal files; the journal after it
    and what was done (one line for the log, None when nothing was).

    `verify(data, list_name, entries)` raises when patched bytes are not sound. Called with
    the lock held. UserError (touching nothing) when the files tell an unexplained story.
    """
    sweep_stale_temps(path.parent)
    journal = load_journal(path)
    digest = sha256(current)
    record, backup = journal.record, journal.backup
    if record is None:
        if backup is None:
            return journal, None
        if backup == current:
            remove_journal(path)
            return Journal(path, None, None), (f"removed the stale backup {journal.backup_file} (no record, and "
                                               f"identical to {path.name}: an interrupted restore)")
        raise UserError(f"backup {journal.backup_file} exists without its record {journal.record_file.name} and "
                        f"differs from {path.name} (sha256 {short(sha256(backup))} vs {short(digest)}); "
                        f"`whitelist restore --force` puts it back, or remove it if {path.name} is the original")
    if journal.pending:
        return _settle_pending(journal, current, digest, verify)
    if digest == journal.original_sha:
        remove_journal(path)
        return Journal(path, None, None), (f"{path} is already the original; removed the stale "
                                           f"{journal.record_file.name} and {journal.backup_file.name}")
    if backup is None:
        raise UserError(backup_missing_message(journal, digest))
    return journal, None


def _settle_pending(journal: Journal, current: bytes, digest: str, verify) -> tuple[Journal, str]:
    path, record, pending = journal.path, journal.record, journal.pending
    before = journal.committed_sha or journal.original_sha
    entries = len(pending["entries"])
    if digest == before:
        if journal.committed_sha is None:
            remove_journal(path)
            done: Journal = Journal(path, None, None)
        else:
            write_record(path, without_pending(record))
            done = Journal(path, without_pending(record), journal.backup)
        return done, (f"undid an interrupted patch of {path} ({entries} entr{'y' if entries == 1 else 'ies'} "
                      "not yet written; the file is as before it)")
    if digest == pending["patched_sha256"]:
        if journal.backup is None:
            raise UserError(backup_missing_message(journal, digest))
        verify(current, pending.get("list"), pending["entries"])
        write_record(path, committed(record))
        return Journal(path, committed(record), journal.backup), (
            f"finished an interrupted patch of {path} (the file was written, its record was not): "
            f"committed {entries} entr{'y' if entries == 1 else 'ies'} to {pending.get('list')}")
    raise UserError(f"{path} (sha256 {short(digest)}) is neither the file before the interrupted patch in "
                    f"{journal.record_file.name} ({short(before)}) nor its result ({short(pending['patched_sha256'])}); "
                    f"refusing to guess (`whitelist restore --force` puts the original back and keeps this file)")


def backup_missing_message(journal: Journal, digest: str) -> str:
    return (f"record {journal.record_file} is present but its backup {journal.backup_file.name} is missing, and "
            f"{journal.path.name} (sha256 {short(digest)}) is not the original ({short(journal.original_sha)}): "
            "cannot undo the patch; reinstall the original transpose.py, then remove the record")
