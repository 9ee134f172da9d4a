"""`whitelist patch` as a journaled transaction, and the tool's own files as inputs.

The backup (`transpose.py.lvvit-opt.orig`) and the record (`transpose.py.lvvit-opt.json`)
are the only way back to a root-owned CANN file: no output may overwrite them, a corrupt one
is refused with the evidence, and a patch interrupted at any step (SIGTERM: rolled back at
once; SIGKILL: settled by the next patch, check or restore) loses nothing."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hostile_helpers import (TRANSPOSE_FIXTURES, assert_refused, diff_snapshots, invoke, snapshot, temp_leftovers,
                             wait_for)

ORIGINAL = (TRANSPOSE_FIXTURES / "transpose_whitelist_era.py").read_bytes()
SHIM = Path(__file__).parent / "shim"
SHAPE, SHAPE2 = "16,6,197,197", "16,197,197,6"
BACKUP, RECORD = "transpose.py.lvvit-opt.orig", "transpose.py.lvvit-opt.json"
LAYOUT = "op_impl/built-in/ai_core/tbe/impl/dynamic/transpose.py"


def _opp(ws: Path) -> Path:
    return ws / "opp"


def _patched(ws: Path, *shapes: str) -> None:
    for shape in shapes or (SHAPE,):
        outcome = invoke(["whitelist", "patch", "--file", "opp/transpose.py", "--shape", shape], ws)
        assert outcome.exit_code == 0, outcome.stderr


def _record(ws: Path) -> dict:
    return json.loads((_opp(ws) / RECORD).read_text())


def _siblings(ws: Path) -> list[str]:
    return sorted(p.name for p in _opp(ws).iterdir())


def _entry(shape: str) -> bytes:
    return ("[" + ", ".join(shape.split(",")) + "]").encode()


def _refused_touching_nothing(ws: Path, args: list, match: str, code: int = 2) -> None:
    before = snapshot(ws)
    assert_refused(invoke(args, ws), code, match)
    assert diff_snapshots(before, snapshot(ws)) == []
    assert temp_leftovers(ws) == []


# ------------------------------------------------------------ 1. our own files are inputs

def _link_to_backup(ws: Path) -> str:
    os.symlink(f"opp/{BACKUP}", ws / "bk_link")
    return "bk_link"


def _hard_link_to_backup(ws: Path) -> str:
    os.link(_opp(ws) / BACKUP, ws / "bk_hard")
    return "bk_hard"


def _kept_copy(ws: Path) -> str:
    (_opp(ws) / "transpose.py.lvvit-opt.replaced").write_bytes(b"the file restore --force kept\n")
    return "opp/transpose.py.lvvit-opt.replaced"


GUARD_CASES = {
    "patch-json-backup": (["patch", "--shape", SHAPE2, "--json", f"opp/{BACKUP}"], None, "is the input lvvit-opt backup"),
    "patch-json-record": (["patch", "--shape", SHAPE2, "--json", f"opp/{RECORD}"], None, "is the input lvvit-opt record"),
    "patch-json-symlink-to-backup": (["patch", "--shape", SHAPE2, "--json", "{alias}"], _link_to_backup,
                                     "is the input lvvit-opt backup"),
    "patch-json-hard-link-to-backup": (["patch", "--shape", SHAPE2, "--json", "{alias}"], _hard_link_to_backup,
                                       "is the input lvvit-opt backup"),
    "patch-json-dotdot-backup": (["patch", "--shape", SHAPE2, "--json", f"sub/../opp/{BACKUP}"], None,
                                 "is the input lvvit-opt backup"),
    "patch-output-backup": (["patch", "--shape", SHAPE2, "--output", f"opp/{BACKUP}"], None,
                            "is the input lvvit-opt backup"),
    "patch-output-record": (["patch", "--shape", SHAPE2, "--output", f"opp/{RECORD}"], None,
                            "is the input lvvit-opt record"),
    "patch-dry-run-json-backup": (["patch", "--shape", SHAPE2, "--dry-run", "--json", f"opp/{BACKUP}"], None,
                                  "is the input lvvit-opt backup"),
    "restore-json-backup": (["restore", "--json", f"opp/{BACKUP}"], None, "is the input lvvit-opt backup"),
    "restore-json-record": (["restore", "--json", f"opp/{RECORD}"], None, "is the input lvvit-opt record"),
    "restore-force-json-kept-copy": (["restore", "--force", "--json", "{alias}"], _kept_copy,
                                     "is the input lvvit-opt kept copy"),
    "check-json-backup": (["check", "--shape", SHAPE, "--json", f"opp/{BACKUP}"], None, "is the input lvvit-opt backup"),
    "check-json-record-symlink": (["check", "--shape", SHAPE, "--json", "{alias}"],
                                  lambda ws: (os.symlink(f"opp/{RECORD}", ws / "rec_link"), "rec_link")[1],
                                  "is the input lvvit-opt record"),
}


@pytest.mark.parametrize("case", list(GUARD_CASES))
def test_an_output_on_our_backup_or_record_is_refused(ws, case):
    args, make_alias, match = GUARD_CASES[case]
    _patched(ws)
    alias = make_alias(ws) if make_alias else None
    args = [a.format(alias=alias) if isinstance(a, str) else a for a in args]
    _refused_touching_nothing(ws, ["whitelist", args[0], "--file", "opp/transpose.py", *args[1:]], match)
    assert (_opp(ws) / BACKUP).read_bytes() == ORIGINAL


def test_the_backup_beside_a_symlinks_target_is_guarded(ws):
    _patched(ws)
    _refused_touching_nothing(ws, ["whitelist", "patch", "--file", "transpose_link.py", "--shape", SHAPE2,
                                   "--json", f"opp/{BACKUP}"], "is the input lvvit-opt backup")


def _located_tree(tmp_path: Path, monkeypatch) -> Path:
    target = tmp_path / "opp" / LAYOUT
    target.parent.mkdir(parents=True)
    shutil.copyfile(TRANSPOSE_FIXTURES / "transpose_whitelist_era.py", target)
    monkeypatch.setenv("ASCEND_OPP_PATH", str(tmp_path / "opp"))
    return target


def test_a_located_transpose_py_is_an_input_without_file(ws, monkeypatch):
    target = _located_tree(ws, monkeypatch)
    _refused_touching_nothing(ws, ["whitelist", "patch", "--shape", SHAPE, "--json", target],
                              "is the input transpose.py")
    _refused_touching_nothing(ws, ["whitelist", "patch", "--shape", SHAPE, "--output", target],
                              "is the input transpose.py")


def test_shapes_json_on_the_located_backup_is_refused(ws, monkeypatch):
    target = _located_tree(ws, monkeypatch)
    assert invoke(["whitelist", "patch", "--shape", SHAPE], ws).exit_code == 0
    _refused_touching_nothing(ws, ["whitelist", "shapes", "m.onnx", "--json", f"{target}.lvvit-opt.orig"],
                              "is the input lvvit-opt backup")


def test_patch_file_api_refuses_an_output_on_the_backup(ws):
    from lvvit_opt.core.errors import UserError
    from lvvit_opt.whitelist import patch_file

    _patched(ws)
    before = snapshot(ws)
    with pytest.raises(UserError, match="is the lvvit-opt backup"):
        patch_file(_opp(ws) / "transpose.py", [(2, 3, 4)], output=_opp(ws) / BACKUP)
    assert diff_snapshots(before, snapshot(ws)) == []


# ------------------------------------------------------------ 3. corrupt backup or record

def _edit_record(ws: Path, **changes) -> None:
    record = _record(ws)
    record.update(changes)
    (_opp(ws) / RECORD).write_text(json.dumps(record))


def _backup_dir(ws: Path) -> None:
    (_opp(ws) / BACKUP).unlink()
    (_opp(ws) / BACKUP).mkdir()


CORRUPTIONS = {
    "backup-truncated": (lambda ws: (_opp(ws) / BACKUP).write_bytes(ORIGINAL[:100]),
                         f"backup {{opp}}/{BACKUP}: sha256 "),
    "backup-edited": (lambda ws: (_opp(ws) / BACKUP).write_bytes(ORIGINAL.replace(b"TILING_HEAD_LEN = 4",
                                                                                  b"TILING_HEAD_LEN = 5")),
                      "does not match the record's"),
    "record-wrong-hash": (lambda ws: _edit_record(ws, original_sha256="0" * 64), "does not match the record's 000000000000…"),
    "record-invalid-json": (lambda ws: (_opp(ws) / RECORD).write_text("{not json"), f"record {{opp}}/{RECORD}: not valid JSON"),
    "record-truncated": (lambda ws: (_opp(ws) / RECORD).write_bytes((_opp(ws) / RECORD).read_bytes()[:40]),
                         "not valid JSON"),
    "record-of-another-file": (lambda ws: _edit_record(ws, file="/elsewhere/transpose.py"),
                               "it is the record of /elsewhere/transpose.py, not of"),
    "record-not-a-record": (lambda ws: (_opp(ws) / RECORD).write_text("[1, 2]"), "not an lvvit-opt record"),
    "record-unknown-state": (lambda ws: _edit_record(ws, state="half"), "unknown state 'half'"),
    "backup-missing": (lambda ws: (_opp(ws) / BACKUP).unlink(), f"its backup {BACKUP} is missing"),
    "backup-is-a-directory": (_backup_dir, "not a regular file"),
}
VERBS = {"patch": ["whitelist", "patch", "--file", "opp/transpose.py", "--shape", SHAPE2],
         "restore": ["whitelist", "restore", "--file", "opp/transpose.py"]}


@pytest.mark.parametrize("verb", list(VERBS))
@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_a_corrupt_backup_or_record_is_refused_with_the_evidence(ws, kind, verb):
    corrupt, match = CORRUPTIONS[kind]
    _patched(ws)
    corrupt(ws)
    _refused_touching_nothing(ws, VERBS[verb], match.format(opp="opp"))


def test_a_mismatch_names_both_checksums(ws):
    _patched(ws)
    (_opp(ws) / BACKUP).write_bytes(ORIGINAL[:100])
    got, want = hashlib.sha256(ORIGINAL[:100]).hexdigest(), hashlib.sha256(ORIGINAL).hexdigest()
    _refused_touching_nothing(ws, VERBS["restore"], f"sha256 {got[:12]}… does not match the record's {want[:12]}…")


@pytest.mark.parametrize("kind", ["backup-truncated", "record-invalid-json"])
def test_check_warns_about_a_corrupt_journal_and_touches_nothing(ws, kind):
    _patched(ws)
    CORRUPTIONS[kind][0](ws)
    before = snapshot(ws)
    outcome = invoke(["whitelist", "check", "--file", "opp/transpose.py", "--shape", SHAPE], ws)
    assert outcome.exit_code == 0, outcome.stderr
    assert "warning: whitelist journal of" in outcome.stderr and "not settled" in outcome.stderr
    assert "Transpose " in outcome.stdout
    assert diff_snapshots(before, snapshot(ws)) == []


def test_restore_force_puts_the_backup_back_past_an_unreadable_record(ws):
    _patched(ws)
    patched = (_opp(ws) / "transpose.py").read_bytes()
    (_opp(ws) / RECORD).write_text("{not json")
    outcome = invoke(["whitelist", "restore", "--file", "opp/transpose.py", "--force"], ws)
    assert outcome.exit_code == 0, outcome.stderr
    assert (_opp(ws) / "transpose.py").read_bytes() == ORIGINAL
    assert (_opp(ws) / "transpose.py.lvvit-opt.replaced").read_bytes() == patched
    assert _siblings(ws) == ["transpose.py", "transpose.py.lvvit-opt.replaced"]


def test_restore_force_without_a_backup_refuses_and_names_the_unreadable_record(ws):
    _patched(ws)
    (_opp(ws) / BACKUP).unlink()
    (_opp(ws) / RECORD).write_text("{not json")
    _refused_touching_nothing(ws, VERBS["restore"] + ["--force"], f"({RECORD} is there but unreadable); nothing to restore")


def _backup_without_record(ws: Path) -> bytes:
    """What a SIGTERM left before the journal: the patched file and the backup, no record."""
    _patched(ws)
    (_opp(ws) / RECORD).unlink()
    return (_opp(ws) / "transpose.py").read_bytes()


@pytest.mark.parametrize("verb", list(VERBS))
def test_a_backup_without_its_record_that_differs_is_refused(ws, verb):
    _backup_without_record(ws)
    _refused_touching_nothing(ws, VERBS[verb], f"backup opp/{BACKUP} exists without its record {RECORD}")


def test_restore_force_finds_a_backup_without_its_record(ws):
    patched = _backup_without_record(ws)
    outcome = invoke(["whitelist", "restore", "--file", "opp/transpose.py", "--force"], ws)
    assert outcome.exit_code == 0, outcome.stderr
    assert (_opp(ws) / "transpose.py").read_bytes() == ORIGINAL
    assert (_opp(ws) / "transpose.py.lvvit-opt.replaced").read_bytes() == patched


def test_a_second_forced_restore_keeps_the_first_kept_copy(ws):
    kept = []
    for n in range(2):
        _patched(ws)
        edited = (_opp(ws) / "transpose.py").read_bytes() + f"# hand edit {n}\n".encode()
        (_opp(ws) / "transpose.py").write_bytes(edited)
        kept.append(edited)
        assert invoke(["whitelist", "restore", "--file", "opp/transpose.py", "--force"], ws).exit_code == 0
    assert (_opp(ws) / "transpose.py.lvvit-opt.replaced").read_bytes() == kept[0]
    assert (_opp(ws) / "transpose.py.lvvit-opt.replaced.2").read_bytes() == kept[1]
    assert (_opp(ws) / "transpose.py").read_bytes() == ORIGINAL


# ------------------------------------------------------------ 2. a write that fails mid-way

def _failing_write(monkeypatch, name: str, nth: int = 1, exc=None, also: tuple[str, int] | None = None):
    """Make the nth atomic write to a file called `name` (and the write `also` = (name, nth))
    fail inside atomic_path, as a full disk (or a folder made read-only in between) would."""
    from lvvit_opt.core.fileio import atomic_path
    from lvvit_opt.whitelist import patch as patch_module

    real, seen, failing = patch_module._write_atomic, {}, {(name, nth)} | ({also} if also else set())

    def write(dest, data):
        dest_name = Path(dest).name
        seen[dest_name] = seen.get(dest_name, 0) + 1
        if (dest_name, seen[dest_name]) in failing:
            with atomic_path(dest) as tmp:
                tmp.write_bytes(data[: len(data) // 2])
                raise exc or OSError(errno.ENOSPC, "No space left on device")
        return real(dest, data)

    monkeypatch.setattr(patch_module, "_write_atomic", write)


@pytest.mark.parametrize("name, nth, exc", [
    (RECORD, 1, None), (BACKUP, 1, None), ("transpose.py", 1, None), (RECORD, 2, None),
    (RECORD, 2, PermissionError(errno.EACCES, "Permission denied")),
    (RECORD, 2, OSError(errno.EROFS, "Read-only file system")),
], ids=["intent-ENOSPC", "backup-ENOSPC", "target-ENOSPC", "commit-ENOSPC", "commit-EACCES", "commit-EROFS"])
def test_a_write_failing_at_any_step_changes_nothing_and_is_one_line(ws, monkeypatch, name, nth, exc):
    _failing_write(monkeypatch, name, nth, exc)
    _refused_touching_nothing(ws, VERBS["patch"], "transpose.py is as it was, nothing changed")


def test_a_failed_commit_of_a_second_patch_puts_the_first_patch_back(ws, monkeypatch):
    _patched(ws)
    _failing_write(monkeypatch, RECORD, 2)
    _refused_touching_nothing(ws, VERBS["patch"], f"cannot write opp/{RECORD}: No space left on device")
    assert _record(ws)["state"] == "done" and len(_record(ws)["patches"]) == 1


def test_a_failed_commit_that_cannot_be_rolled_back_is_finished_by_the_next_patch(ws, monkeypatch):
    _failing_write(monkeypatch, RECORD, 2, also=("transpose.py", 2))   # the roll-back's write fails too
    outcome = invoke(VERBS["patch"], ws)
    assert_refused(outcome, 2, f"{RECORD} keeps the interrupted patch, and the next `whitelist patch`")
    assert _record(ws)["state"] == "pending" and (_opp(ws) / BACKUP).read_bytes() == ORIGINAL
    assert temp_leftovers(ws) == []
    monkeypatch.undo()
    outcome = invoke(VERBS["patch"], ws)
    assert outcome.exit_code == 0, outcome.stderr
    assert "whitelist journal: finished an interrupted patch" in outcome.stderr
    assert "nothing to add" in outcome.stdout
    assert _record(ws)["state"] == "done" and _record(ws)["patches"][0]["entries"] == [[16, 197, 197, 6]]


# ------------------------------------------------------------ settling states on disk

def _pending_state(ws: Path, target: bytes) -> None:
    """A first patch's intent and backup on disk, and `target` as the file."""
    _patched(ws)
    record = _record(ws)
    pending = {"time": "t", "list": "white_list_shape", "entries": record["patches"][0]["entries"],
               "patched_sha256": record.pop("patched_sha256")}
    record.update(state="pending", pending=pending, patches=[])
    (_opp(ws) / RECORD).write_text(json.dumps(record))
    (_opp(ws) / "transpose.py").write_bytes(target)


def test_a_pending_patch_with_an_unexplained_file_is_refused(ws):
    _pending_state(ws, ORIGINAL + b"# someone else\n")
    _refused_touching_nothing(ws, VERBS["patch"], "is neither the file before the interrupted patch")
    _refused_touching_nothing(ws, VERBS["restore"], "changed since lvvit-opt patched it, in a way")
    outcome = invoke(["whitelist", "restore", "--file", "opp/transpose.py", "--force"], ws)
    assert outcome.exit_code == 0 and (_opp(ws) / "transpose.py").read_bytes() == ORIGINAL


def test_a_pending_patch_whose_bytes_are_not_sound_is_not_committed(ws):
    _pending_state(ws, ORIGINAL)
    record = _record(ws)
    broken = ORIGINAL + b"(("
    record["pending"]["patched_sha256"] = hashlib.sha256(broken).hexdigest()
    (_opp(ws) / RECORD).write_text(json.dumps(record))
    (_opp(ws) / "transpose.py").write_bytes(broken)
    _refused_touching_nothing(ws, VERBS["patch"], "the interrupted patch's file fails its check")
    outcome = invoke(VERBS["restore"], ws)
    assert outcome.exit_code == 0, outcome.stderr
    assert (_opp(ws) / "transpose.py").read_bytes() == ORIGINAL and _siblings(ws) == ["transpose.py"]


def test_check_removes_a_stale_backup_left_by_an_interrupted_restore(ws):
    (_opp(ws) / BACKUP).write_bytes(ORIGINAL)
    outcome = invoke(["whitelist", "check", "--file", "opp/transpose.py", "--shape", SHAPE], ws)
    assert outcome.exit_code == 0, outcome.stderr
    assert "whitelist journal: removed the stale backup" in outcome.stderr
    assert _siblings(ws) == ["transpose.py"]


def test_a_hand_restored_original_starts_a_fresh_journal(ws):
    _patched(ws)
    shutil.copyfile(_opp(ws) / BACKUP, _opp(ws) / "transpose.py")
    outcome = invoke(VERBS["patch"], ws)
    assert outcome.exit_code == 0, outcome.stderr
    assert "is already the original; removed the stale" in outcome.stderr
    assert [p["entries"] for p in _record(ws)["patches"]] == [[[16, 197, 197, 6]]]
    assert _entry(SHAPE) not in (_opp(ws) / "transpose.py").read_bytes()


# ------------------------------------------------------------ signals at each step

FIRST_STEPS = {"intent": f"{RECORD}#1", "backup": BACKUP, "target": "transpose.py", "commit": f"{RECORD}#2"}
NEXT_STEPS = {"intent": f"{RECORD}#1", "target": "transpose.py", "commit": f"{RECORD}#2"}


def _start_paused(args: list, cwd: Path, at: str, flag: Path) -> subprocess.Popen:
    env = dict(os.environ, LVVIT_HOSTILE_PAUSE="60", LVVIT_HOSTILE_PAUSE_AT=at, LVVIT_HOSTILE_PAUSE_FLAG=str(flag),
               PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join([str(SHIM), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-m", "lvvit_opt", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _kill_at(ws: Path, tmp_path: Path, at: str, sig: int, shape: str = SHAPE) -> tuple[subprocess.Popen, str]:
    flag = tmp_path / "paused"
    flag.unlink(missing_ok=True)
    proc = _start_paused(["whitelist", "patch", "--file", "opp/transpose.py", "--shape", shape], ws, at, flag)
    if not wait_for(lambda: proc.poll() is not None or flag.exists(), timeout=60) or proc.poll() is not None:
        proc.kill()
        pytest.fail(f"the patch never paused at {at}: {proc.communicate()}")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return proc, err


def _run(args: list, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lvvit_opt", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("step", list(FIRST_STEPS))
def test_sigterm_at_each_step_of_a_first_patch_rolls_it_back(ws, tmp_path, step):
    before = snapshot(ws)
    proc, err = _kill_at(ws, tmp_path, FIRST_STEPS[step], signal.SIGTERM)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "terminated"
    assert diff_snapshots(before, snapshot(ws)) == []
    assert temp_leftovers(ws) == []


@pytest.mark.parametrize("step", list(NEXT_STEPS))
def test_sigterm_at_each_step_of_a_second_patch_keeps_the_first(ws, tmp_path, step):
    _patched(ws)
    before = snapshot(ws)
    proc, err = _kill_at(ws, tmp_path, NEXT_STEPS[step], signal.SIGTERM, SHAPE2)
    assert proc.returncode == 143, err
    assert diff_snapshots(before, snapshot(ws)) == [] and temp_leftovers(ws) == []


def _assert_done(ws: Path, entries: list) -> None:
    record = _record(ws)
    assert record["state"] == "done" and "pending" not in record
    assert [p["entries"] for p in record["patches"]] == entries
    assert (_opp(ws) / BACKUP).read_bytes() == ORIGINAL


def _assert_pristine(ws: Path) -> None:
    assert (_opp(ws) / "transpose.py").read_bytes() == ORIGINAL
    assert _siblings(ws) == ["transpose.py"] and temp_leftovers(ws) == []


@pytest.mark.parametrize("step", list(FIRST_STEPS))
def test_sigkill_at_each_step_then_patch_recovers(ws, tmp_path, step):
    proc, _ = _kill_at(ws, tmp_path, FIRST_STEPS[step], signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    result = _run(["whitelist", "patch", "--file", "opp/transpose.py", "--shape", SHAPE], ws)
    assert result.returncode == 0, result.stderr
    said = {"intent": None, "backup": "undid an interrupted patch", "target": "undid an interrupted patch",
            "commit": "finished an interrupted patch"}[step]
    journal_lines = [line for line in result.stderr.splitlines() if "whitelist journal:" in line]
    assert (journal_lines == []) if said is None else (len(journal_lines) == 1 and said in journal_lines[0])
    assert (_opp(ws) / "transpose.py").read_bytes().count(_entry(SHAPE)) == 1
    _assert_done(ws, [[[16, 6, 197, 197]]])
    assert temp_leftovers(ws) == []


@pytest.mark.parametrize("step", list(FIRST_STEPS))
def test_sigkill_at_each_step_then_check_recovers(ws, tmp_path, step):
    _kill_at(ws, tmp_path, FIRST_STEPS[step], signal.SIGKILL)
    result = _run(["whitelist", "check", "--file", "opp/transpose.py", "--shape", SHAPE], ws)
    assert result.returncode == 0, result.stderr
    if step == "commit":   # the file was written: the patch is finished
        assert "Transpose   exact entry [16, 6, 197, 197] in white_list_shape" in result.stdout
        _assert_done(ws, [[[16, 6, 197, 197]]])
        assert temp_leftovers(ws) == []
    else:                  # it was not: the intent is dropped
        assert "TransposeD  not in white_list_shape" in result.stdout
        _assert_pristine(ws)


@pytest.mark.parametrize("step", list(FIRST_STEPS))
def test_sigkill_at_each_step_then_restore_finds_the_original(ws, tmp_path, step):
    _kill_at(ws, tmp_path, FIRST_STEPS[step], signal.SIGKILL)
    result = _run(["whitelist", "restore", "--file", "opp/transpose.py"], ws)
    if step == "intent":   # nothing of the patch reached the disk but a swept temporary file
        assert result.returncode == 2 and "nothing to restore" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert ("restored the original" if step == "commit" else "is already the original") in result.stdout
    _assert_pristine(ws)


@pytest.mark.parametrize("verb", ["patch", "restore"])
@pytest.mark.parametrize("step", list(NEXT_STEPS))
def test_sigkill_during_a_second_patch_then_the_next_verb_recovers(ws, tmp_path, step, verb):
    _patched(ws)
    _kill_at(ws, tmp_path, NEXT_STEPS[step], signal.SIGKILL, SHAPE2)
    if verb == "restore":
        result = _run(["whitelist", "restore", "--file", "opp/transpose.py"], ws)
        assert result.returncode == 0, result.stderr
        _assert_pristine(ws)
        return
    result = _run(["whitelist", "patch", "--file", "opp/transpose.py", "--shape", SHAPE2], ws)
    assert result.returncode == 0, result.stderr
    text = (_opp(ws) / "transpose.py").read_bytes()
    assert text.count(_entry(SHAPE)) == 1 and text.count(_entry(SHAPE2)) == 1
    _assert_done(ws, [[[16, 6, 197, 197]], [[16, 197, 197, 6]]])
    assert temp_leftovers(ws) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_restore_killed_mid_write_is_finished_by_the_next_restore(ws, tmp_path, sig):
    _patched(ws)
    flag = tmp_path / "paused"
    proc = _start_paused(["whitelist", "restore", "--file", "opp/transpose.py"], ws, "transpose.py", flag)
    assert wait_for(lambda: proc.poll() is not None or flag.exists(), timeout=60) and proc.poll() is None
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    assert proc.returncode == (143 if sig == signal.SIGTERM else -signal.SIGKILL)
    assert (_opp(ws) / BACKUP).read_bytes() == ORIGINAL and _record(ws)["state"] == "done"
    result = _run(["whitelist", "restore", "--file", "opp/transpose.py"], ws)
    assert result.returncode == 0, result.stderr
    _assert_pristine(ws)
