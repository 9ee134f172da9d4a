"""`whitelist patch` / `whitelist restore`: edit CANN's transpose.py safely and reversibly.

The patch inserts text into the literal list and nothing else: every other byte of the
file stays as it was (no re-formatting, the file's own newline style). Before the first
change the original is kept beside the file (`transpose.py.lvvit-opt.orig`) with a small
JSON record (`transpose.py.lvvit-opt.json`) of what was added and the checksums of the
original and the patched file, so `restore` can prove nothing else changed in between.
The change in place is a journaled transaction (journal.py): an interrupted one is finished
or undone by the next patch, check or restore, and a backup or record that does not check
out is refused with the evidence.
"""
from __future__ import annotations

import bisect
import datetime as _dt
import difflib
import errno
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from lvvit_opt import __version__
from lvvit_opt.core.errors import UserError, ValidationFailed, shown
from lvvit_opt.core.fileio import same_path, sweep_stale_temps

from lvvit_opt.whitelist.journal import (BACKUP_SUFFIX, DONE, PENDING, RECORD_SUFFIX, REPLACED_SUFFIX, Journal,
                                         backup_missing_message, backup_path, committed, load_journal, own_files,
                                         real_file, record_json, record_path, remove_journal, replaced_path, settle,
                                         sha256, short, transpose_lock)
from lvvit_opt.whitelist.journal import write_atomic as _write_atomic  # one name in this module: tests make it fail
from lvvit_opt.passes.transposes import format_shape
from lvvit_opt.whitelist.locate import layout_relative_path, locate_transpose_py, opp_root_of
from lvvit_opt.whitelist.source import (BLACK_ERA, Selection, Shape, ShapeList, TransposeSource, byte_line_starts,
                                        normalise_shapes, parse_transpose_source, read_transpose_source,
                                        select_kernel)

__all__ = ["BACKUP_SUFFIX", "RECORD_SUFFIX", "REPLACED_SUFFIX", "PatchResult", "RestoreResult", "patch_file",
           "restore_file", "real_file", "transpose_lock", "settle_journal"]
_RIGHTS = (errno.EACCES, errno.EPERM, errno.EROFS)
logger = logging.getLogger(__name__)


@dataclass
class PatchResult:
    """What `patch_file` found and did."""

    path: Path
    era: str
    era_description: str
    selections: list[Selection]            # before patching
    added: list[Shape] = field(default_factory=list)
    list_name: str | None = None
    blocked: list[Selection] = field(default_factory=list)   # black-listed: left alone
    written: Path | None = None
    dry_run: bool = False
    diff: str = ""
    backup: Path | None = None
    record: Path | None = None
    message: str = ""
    cache_hint: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.added) and self.written is not None

    def to_dict(self) -> dict:
        return {"file": str(self.path), "era": self.era, "era_description": self.era_description,
                "shapes": [s.to_dict() for s in self.selections], "added": [list(s) for s in self.added],
                "list": self.list_name, "blocked": [s.to_dict() for s in self.blocked],
                "written": str(self.written) if self.written else None, "dry_run": self.dry_run,
                "diff": self.diff, "backup": str(self.backup) if self.backup else None,
                "record": str(self.record) if self.record else None, "message": self.message,
                "cache_hint": self.cache_hint}


@dataclass
class RestoreResult:
    """What `restore_file` did."""

    path: Path
    restored: bool
    replaced: Path | None
    message: str

    def to_dict(self) -> dict:
        return {"file": str(self.path), "restored": self.restored,
                "replaced": str(self.replaced) if self.replaced else None, "message": self.message}


# ----------------------------------------------------------------------------------- patch

def patch_file(file: str | os.PathLike | None, shapes: Iterable[Iterable[int]], fuzzy: bool = False,
               dry_run: bool = False, output: str | os.PathLike | None = None,
               environ: Mapping[str, str] | None = None) -> PatchResult:
    """Make atc select the fast Transpose kernel for `shapes`.

    file=None locates transpose.py (see `locate`). Only shapes not already selected are
    added: to `white_list_shape`, or with fuzzy=True as -1-batch entries to
    `white_list_shape_fuzzy`. In a black-list-era file nothing is written (black-listed
    shapes come back in `blocked`). dry_run=True only fills `diff`. output=PATH writes a
    patched copy there and leaves the original (and its directory) alone.
    """
    link = locate_transpose_py(file, environ)
    path = real_file(link)
    wanted = normalise_shapes(shapes)
    if dry_run or output is not None:
        return _patch_locked(link, path, wanted, fuzzy, dry_run, output, environ)
    with transpose_lock(path):
        return _patch_locked(link, path, wanted, fuzzy, dry_run, output, environ)


def _patch_locked(link: Path, path: Path, wanted: list[Shape], fuzzy: bool, dry_run: bool,
                  output: str | os.PathLike | None, environ: Mapping[str, str] | None) -> PatchResult:
    """patch_file's body; the file is read only now, under the lock, so no concurrent patch is lost."""
    journal = None if dry_run or output is not None else settle_journal(path)
    source = read_transpose_source(path)
    selections = [select_kernel(source, s) for s in wanted]
    result = PatchResult(path, source.era, source.era_description, selections, dry_run=dry_run)
    pending = [s.shape for s in selections if not s.fast]

    if source.era == BLACK_ERA:
        result.blocked = [s for s in selections if not s.fast]
        result.message = _black_era_message(result.blocked, len(selections))
        return result
    if not pending:
        result.message = f"all {len(wanted)} shape(s) already select Transpose; nothing to add"
        if output is not None and not dry_run:
            result.written = _write_copy(path, source.data, output, wanted)
        return result

    target = _target_list(source, fuzzy)
    entries = _entries_to_add(pending, fuzzy)
    new_data = apply_insertions(source.data, render_insertions(source.data, target, entries))
    result.added, result.list_name = entries, target.name
    result.diff = unified_diff(source.data, new_data, str(path))
    if dry_run:
        result.message = f"dry run: would add {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} " \
                         f"to {target.name}; nothing written"
        return result
    if output is not None:
        result.written = _write_copy(path, new_data, output, wanted)
        result.message = f"wrote a patched copy to {result.written} ({path} untouched)"
        opp = opp_root_of(result.written)
        if opp is not None:
            result.message += f"; atc uses it after `export ASCEND_OPP_PATH={opp}` (the rest of that opp " \
                              "tree must be a copy of the original)"
    else:
        result.backup, result.record = _patch_in_place(path, source, new_data, target.name, entries, wanted, journal)
        result.written = path
        result.message = f"added {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} to {target.name} in {path}"
    if link != path:
        result.message += f" (followed the symlink {link} -> {path}; the link is unchanged)"
    result.cache_hint = atc_cache_hint(environ)
    return result


def _target_list(source: TransposeSource, fuzzy: bool) -> ShapeList:
    if not fuzzy:
        return source.white
    if source.white_fuzzy is None:
        raise UserError(f"{source.path}: this transpose.py has no white_list_shape_fuzzy (_fuzzy_match); "
                        "patch without --fuzzy to add exact shapes")
    return source.white_fuzzy


def _entries_to_add(pending: list[Shape], fuzzy: bool) -> list[Shape]:
    """Exact shapes, or with fuzzy one -1-batch entry per distinct non-batch tail."""
    if not fuzzy:
        return list(pending)
    entries: list[Shape] = []
    for shape in pending:
        entry = (-1,) + shape[1:] if len(shape) > 1 else shape   # a bare [-1] would match every 1-D shape
        if entry not in entries:
            entries.append(entry)
    return entries


def _black_era_message(blocked: list[Selection], total: int) -> str:
    if not blocked:
        return f"black-list era file: all {total} static shape(s) already get the fast Transpose kernel; " \
               "nothing to patch"
    listed = ", ".join(f"{format_shape(s.shape)} ({s.reason})" for s in blocked)
    return (f"black-list era file: {total - len(blocked)} of {total} shape(s) already get Transpose; "
            f"{len(blocked)} are black-listed and will use TransposeD: {listed}. "
            "Nothing was changed. Huawei black-lists shapes where the new kernel was slower or wrong; "
            "benchmark both kernels first (e.g. compile with and without the shape). To force Transpose "
            "anyway, add the shape by hand to white_list_shape in _by_dynamic_static_union_version(), "
            "which check_supported() consults before the black list")


def _patch_in_place(path: Path, source: TransposeSource, new_data: bytes, list_name: str,
                    entries: list[Shape], wanted: list[Shape], journal: Journal) -> tuple[Path, Path]:
    """The journaled transaction (see journal.py): intent, backup, target, commit; rolled back on any failure."""
    backup, record_file = backup_path(path), record_path(path)
    current = sha256(source.data)
    if journal.record is not None and current != journal.committed_sha:
        raise UserError(f"{path} changed since lvvit-opt patched it (checksum not in {record_file}; a CANN "
                        f"upgrade or a hand edit?). Run `lvvit-opt whitelist restore --force` to put the original "
                        f"back first, or, if the current file is the new original, remove {backup.name} and "
                        f"{record_file.name}")
    _ensure_writable(path)
    base = journal.record or {"tool": "lvvit-opt", "version": __version__, "file": str(path.resolve()),
                              "backup": backup.name, "state": DONE, "original_sha256": current, "patches": []}
    intent = dict(base, state=PENDING, pending={
        "time": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), "list": list_name,
        "entries": [list(e) for e in entries], "patched_sha256": sha256(new_data)})
    steps: list[str] = []   # what has been written, for the roll-back
    try:
        _write_atomic(record_file, record_json(intent).encode())
        steps.append("intent")
        if journal.record is None:
            _write_atomic(backup, source.data)
            steps.append("backup")
        steps.append("target")   # before the write: a failed rename may still have replaced it
        _write_atomic(path, new_data)
        _verify(path, wanted)
        steps.append("commit")
        _write_atomic(record_file, record_json(committed(intent)).encode())
    except BaseException as exc:
        undone = _roll_back(path, source.data, journal.record, steps)
        raise _failure(exc, path, record_file, steps, undone) from None
    return backup, record_file


def _roll_back(path: Path, data: bytes, previous: dict | None, steps: list[str]) -> str | None:
    """Undo the steps done, newest first; None when all were undone, else why not (the
    journal then still holds the intent, and the next verb settles it)."""
    try:
        if "target" in steps and (not path.is_file() or path.read_bytes() != data):
            _write_atomic(path, data)
        if "intent" in steps:
            if previous is None:
                remove_journal(path)
            else:
                _write_atomic(record_path(path), record_json(previous).encode())
    except (OSError, UserError) as exc:
        return str(exc)
    return None


def _failure(exc: BaseException, path: Path, record_file: Path, steps: list[str], undone: str | None) -> BaseException:
    """The one-line error for a failed transaction (interrupts and our own check failures keep their kind)."""
    if undone is not None:
        note = (f"; {path.name} could not be put back ({undone}): {record_file.name} keeps the interrupted patch, "
                "and the next `whitelist patch`, `check` or `restore` finishes or undoes it")
    else:
        note = f"; {path.name} is as it was, nothing changed"
    if isinstance(exc, KeyboardInterrupt):
        if undone is not None:
            logger.warning("interrupted%s", note)
        return exc
    if isinstance(exc, ValidationFailed):
        return ValidationFailed(f"{exc}; the original {path.name} was put back" if undone is None else f"{exc}{note}")
    if "commit" not in steps and (isinstance(exc, PermissionError) or getattr(exc, "errno", None) in _RIGHTS):
        return UserError(read_only_message(path, "the file or its directory") + note)
    if isinstance(exc, (OSError, UserError)):
        reason = str(exc) if isinstance(exc, UserError) else f"{exc.strerror or exc}"
        what = f"cannot write the record {record_file}" if "commit" in steps else f"cannot patch {path}"
        if isinstance(exc, UserError) and str(exc).startswith("cannot write"):
            return UserError(f"{exc}{note}")
        return UserError(f"{what}: {reason}{note}")
    return exc


def _write_copy(path: Path, data: bytes, output: str | os.PathLike, wanted: list[Shape]) -> Path:
    dest = Path(output)
    if dest.is_dir():
        dest = dest / path.name
    if dest.exists() and dest.resolve() == path.resolve():
        raise UserError(f"--output {dest} is the file being patched; drop --output to patch it in place")
    for label, own in own_files(path).items():
        if same_path(dest, own):
            raise UserError(f"--output {dest} is the {label} ({own}); refusing to overwrite it, nothing written")
    try:
        _write_atomic(dest, data)
    except OSError as exc:
        _raise_if_permission(exc, dest)
        raise
    try:
        _verify(dest, wanted)
    except ValidationFailed:
        dest.unlink()
        raise
    return dest


def settle_journal(path: Path) -> Journal:
    """Finish or undo an interrupted patch of `path` (journal.settle, lock held), saying which in one log line."""
    try:
        current = path.read_bytes()
    except OSError:
        return Journal(path, None, None)   # the caller reports the missing or unreadable file
    journal, note = settle(path, current, _verify_entries)
    if note:
        logger.warning("whitelist journal: %s", note)
    return journal


def _verify_entries(data: bytes, list_name: str | None, entries: list) -> None:
    """Patched bytes found after an interruption: they must compile and hold the pending entries."""
    try:
        compile(data, "transpose.py", "exec", dont_inherit=True)   # compiles only; nothing is executed
        source = parse_transpose_source(data, None)
    except (SyntaxError, ValueError, UserError) as exc:
        raise UserError(f"the interrupted patch's file fails its check ({type(exc).__name__}: {exc}); "
                        "`whitelist restore` puts the original back") from None
    lists = {s.name: s for s in (source.white, source.white_fuzzy) if s is not None}
    missing = [e for e in entries if tuple(e) not in getattr(lists.get(list_name), "entries", ())]
    if missing:
        raise UserError(f"the interrupted patch's file lacks {missing} in {list_name}; "
                        "`whitelist restore` puts the original back")


def _verify(path: Path, wanted: list[Shape]) -> None:
    data = path.read_bytes()
    try:
        compile(data, str(path), "exec", dont_inherit=True)   # compiles only; nothing is executed
        source = parse_transpose_source(data, path)
    except (SyntaxError, ValueError, UserError) as exc:
        raise ValidationFailed(f"patched {path} failed its check ({type(exc).__name__}: {exc})") from None
    slow = [list(s) for s in wanted if not select_kernel(source, s).fast]
    if slow:
        raise ValidationFailed(f"patched {path} still selects TransposeD for {slow}")


# ------------------------------------------------------------------------- text insertion

def render_insertions(data: bytes, shape_list: ShapeList, entries: list[Shape]) -> list[tuple[int, bytes]]:
    """(byte offset, text) pairs that append `entries` to `shape_list` in the file's own style.

    Multi-line lists get a new line after the last entry (indented like it, comments on
    that line stay put); one-line lists are extended in place. A trailing comma style is kept.
    """
    text = ", ".join("[" + ", ".join(str(d) for d in e) + "]" for e in entries).encode()
    if shape_list.last_entry_end is None:
        return [(shape_list.open_offset + 1, text)]
    starts = byte_line_starts(data)
    last_end = shape_list.last_entry_end
    comma = _comma_between(data, last_end, shape_list.close_offset)
    insertions = [] if comma is not None else [(last_end, b",")]
    anchor = comma + 1 if comma is not None else last_end
    trailing = b"," if comma is not None else b""
    anchor_line = bisect.bisect_right(starts, anchor) - 1
    close_line = bisect.bisect_right(starts, shape_list.close_offset) - 1
    if anchor_line == close_line:
        insertions.append((anchor, b" " + text + trailing))
        return insertions
    eol = starts[anchor_line] + len(data[starts[anchor_line]:starts[anchor_line + 1]].rstrip(b"\r\n"))
    newline = data[eol:starts[anchor_line + 1]] or b"\n"
    insertions.append((eol, newline + _indent(data, starts, shape_list, last_end) + text + trailing))
    return insertions


def apply_insertions(data: bytes, insertions: list[tuple[int, bytes]]) -> bytes:
    """Insert each text at its offset (offsets refer to the original bytes)."""
    out, position = [], 0
    for offset, text in sorted(insertions, key=lambda item: item[0]):
        out += [data[position:offset], text]
        position = offset
    out.append(data[position:])
    return b"".join(out)


def _comma_between(data: bytes, start: int, end: int) -> int | None:
    """Offset of a comma between the last entry and ']', skipping comments."""
    position = start
    while position < end:
        char = data[position:position + 1]
        if char == b"#":
            newline = data.find(b"\n", position, end)
            position = end if newline < 0 else newline
        elif char == b",":
            return position
        position += 1
    return None


def _indent(data: bytes, starts: list[int], shape_list: ShapeList, last_end: int) -> bytes:
    """Whitespace that lines a new row up with the last entry's row."""
    line = bisect.bisect_right(starts, last_end - 1) - 1
    open_line = bisect.bisect_right(starts, shape_list.open_offset) - 1
    if line == open_line:   # entries start on the '[' line: align under the first entry
        return b" " * (shape_list.open_offset + 1 - starts[open_line])
    row = data[starts[line]:starts[line + 1]]
    return row[:len(row) - len(row.lstrip(b" \t"))]



def unified_diff(old: bytes, new: bytes, name: str) -> str:
    """A unified diff for display (undecodable bytes shown as replacement characters)."""
    old_lines = old.decode("utf-8", "replace").splitlines(keepends=True)
    new_lines = new.decode("utf-8", "replace").splitlines(keepends=True)
    return "".join(difflib.unified_diff(old_lines, new_lines, name, name))


# --------------------------------------------------------------------------------- restore

def restore_file(file: str | os.PathLike | None, force: bool = False,
                 environ: Mapping[str, str] | None = None) -> RestoreResult:
    """Put the original transpose.py back, byte for byte, and drop our backup and record.

    Refuses (unless force=True) when the file changed since our patch in a way the record
    does not explain; with force the unexplained file is kept as `*.lvvit-opt.replaced`.
    """
    link = locate_transpose_py(file, environ)
    path = real_file(link)
    with transpose_lock(path):
        result = _restore_locked(path, force)
    if link != path:
        result.message += f" (followed the symlink {link} -> {path}; the link is unchanged)"
    return result


def _restore_locked(path: Path, force: bool) -> RestoreResult:
    sweep_stale_temps(path.parent)
    journal = load_journal(path, lenient=force)
    backup, record_file = journal.backup_file, journal.record_file
    if not path.is_file():
        raise UserError(f"{shown(path)}: no such file")
    current = path.read_bytes()
    digest = sha256(current)
    if journal.backup is None:
        if journal.record is not None and digest == journal.original_sha:
            remove_journal(path)
            return RestoreResult(path, False, None, f"{path} is already the original; removed the stale "
                                                    f"{record_file.name} (its backup was already gone)")
        if journal.record is not None:
            raise UserError(backup_missing_message(journal, digest))
        unread = f" ({record_file.name} is there but unreadable)" if record_file.exists() else ""
        raise UserError(f"{shown(path)}: no lvvit-opt backup beside it ({backup.name} with {record_file.name}){unread}; "
                        "nothing to restore")
    original = journal.backup
    if current == original:
        remove_journal(path)
        return RestoreResult(path, False, None, f"{path} is already the original; removed {backup.name} "
                                                f"and {record_file.name}")
    if journal.record is None and not force:
        raise UserError(f"backup {backup} exists without its record {record_file.name} and differs from {path.name} "
                        f"(sha256 {short(sha256(original))} vs {short(digest)}); refusing to restore from it unchecked "
                        f"(--force puts it back and keeps {path.name} as {path.name}{REPLACED_SUFFIX})")
    replaced = None
    if not (journal.record is not None and sha256(original) == journal.original_sha and journal.explains(digest)):
        if not force:
            raise UserError(f"{path} (sha256 {short(digest)}) changed since lvvit-opt patched it, in a way "
                            f"{record_file.name} does not "
                            "explain (a CANN upgrade or a hand edit?); refusing to overwrite it. "
                            "Use --force to put the backup back anyway (the current file is kept as "
                            f"{path.name}{REPLACED_SUFFIX})")
        replaced = replaced_path(path)
    _ensure_writable(path)
    try:
        if replaced is not None:
            _write_atomic(replaced, current)
        _write_atomic(path, original)
    except OSError as exc:
        _raise_if_permission(exc, path)
        raise
    if path.read_bytes() != original:
        raise ValidationFailed(f"{path}: re-reading after restore did not give the original bytes; "
                               f"{backup.name} is kept")
    remove_journal(path)
    note = f" (the changed file was kept as {replaced.name})" if replaced else ""
    return RestoreResult(path, True, replaced, f"restored the original {path}{note}")


# ------------------------------------------------------------------------ files and rights

def _ensure_writable(path: Path) -> None:
    """Fail early, before any write, when the file or its directory is read-only for us.

    os.access is right for ordinary users; root passes it, so real write errors are still
    turned into the same message by `_raise_if_permission`.
    """
    if not os.access(path, os.W_OK):
        raise UserError(read_only_message(path, "the file"))
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise UserError(read_only_message(path, f"its directory {path.parent}"))


def _raise_if_permission(exc: OSError, path: Path) -> None:
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        raise UserError(read_only_message(path, "the file or its directory")) from None


def read_only_message(path: Path, what: str) -> str:
    """A one-paragraph error that says how to get on: rights, or a patched copy via --output."""
    layout = layout_relative_path(path) or path.name
    opp = opp_root_of(path)
    copy = (f"cp -r {opp} ~/opp && lvvit-opt whitelist patch --file {path} --output ~/opp/{layout} ... && "
            "export ASCEND_OPP_PATH=~/opp") if opp else \
        f"lvvit-opt whitelist patch --file {path} --output <copied opp tree>/{layout} ... and point " \
        "ASCEND_OPP_PATH at that opp tree"
    return (f"cannot write {path}: {what} is read-only for this user. Run with the needed rights "
            f"(e.g. sudo, or as the CANN install owner), or write a patched copy elsewhere with "
            f"--output PATH; atc reads operators from $ASCEND_OPP_PATH, so copy the opp tree: {copy}")


def atc_cache_hint(environ: Mapping[str, str] | None = None) -> str:
    """Where atc caches compiled kernels, and what to do when a stale cache hides the change."""
    environ = os.environ if environ is None else environ
    cache = environ.get("ASCEND_CACHE_PATH") or str(Path(environ.get("HOME", "~")) / "atc_data")
    return (f"atc caches compiled kernels in {cache} ($ASCEND_CACHE_PATH, default ~/atc_data); if the "
            f"Transpose kernel choice does not change, move that cache aside (mv {cache} {cache}.old) or "
            "point ASCEND_CACHE_PATH at an empty directory, then run atc again")
