"""CANN's transpose.py under hostile conditions: symlinks, concurrent patches, locks, and
`run --patch-whitelist` giving the same exit status as `whitelist patch`."""
from __future__ import annotations

import os
import shutil

import pytest

from hostile_helpers import (TRANSPOSE_FIXTURES, assert_refused, cli_subprocess, diff_snapshots, invoke, snapshot,
                             temp_leftovers)

ORIGINAL = (TRANSPOSE_FIXTURES / "transpose_whitelist_era.py").read_bytes()


def test_patch_through_a_symlink_patches_the_target_and_keeps_the_link(ws):
    outcome = invoke(["whitelist", "patch", "--file", "transpose_link.py", "--shape", "16,6,197,197"], ws)
    assert outcome.exit_code == 0, outcome.stderr
    assert "followed the symlink" in outcome.stdout
    assert os.readlink(ws / "transpose_link.py") == "opp/transpose.py"   # still the same link
    assert b"[16, 6, 197, 197]" in (ws / "opp" / "transpose.py").read_bytes()
    assert (ws / "opp" / "transpose.py.lvvit-opt.orig").read_bytes() == ORIGINAL   # beside the target
    assert (ws / "opp" / "transpose.py.lvvit-opt.json").is_file()
    assert not (ws / "transpose_link.py.lvvit-opt.orig").exists()

    outcome = invoke(["whitelist", "restore", "--file", "transpose_link.py"], ws)
    assert outcome.exit_code == 0, outcome.stderr
    assert "followed the symlink" in outcome.stdout
    assert os.path.islink(ws / "transpose_link.py")
    assert (ws / "opp" / "transpose.py").read_bytes() == ORIGINAL
    assert sorted(p.name for p in (ws / "opp").iterdir()) == ["transpose.py"]


def test_discovered_transpose_py_that_is_a_symlink_is_patched_at_its_target(tmp_path, monkeypatch):
    real = tmp_path / "real" / "transpose.py"
    real.parent.mkdir()
    shutil.copyfile(TRANSPOSE_FIXTURES / "transpose_whitelist_era.py", real)
    opp = tmp_path / "opp" / "op_impl" / "built-in" / "ai_core" / "tbe" / "impl" / "dynamic"
    opp.mkdir(parents=True)
    os.symlink(real, opp / "transpose.py")
    monkeypatch.setenv("ASCEND_OPP_PATH", str(tmp_path / "opp"))
    outcome = invoke(["whitelist", "patch", "--shape", "16,197,197,6"], tmp_path)
    assert outcome.exit_code == 0, outcome.stderr
    assert os.path.islink(opp / "transpose.py")
    assert b"[16, 197, 197, 6]" in real.read_bytes()
    assert (real.parent / "transpose.py.lvvit-opt.orig").read_bytes() == ORIGINAL


def test_patch_of_a_dangling_symlink_is_refused(ws):
    os.symlink("opp/nowhere.py", ws / "dangling.py")
    before = snapshot(ws)
    assert_refused(invoke(["whitelist", "patch", "--file", "dangling.py", "--shape", "1,2,3,4"], ws), 2, "no such file")
    assert diff_snapshots(before, snapshot(ws)) == []


def test_eight_pairs_of_simultaneous_patches_lose_no_shape_and_restore_is_byte_identical(ws):
    """16 processes at once (8 pairs, each pair patching the same list of the same file)."""
    import json

    shapes = [f"{n},6,197,197" for n in range(2, 18)]
    target = ws / "opp" / "transpose.py"
    procs = [cli_subprocess(["whitelist", "patch", "--file", target, "--shape", s], ws) for s in shapes]
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0] * 16, results
    assert all("Traceback" not in out + err for out, err in results)
    text = target.read_text()
    assert [s for s in shapes if "[" + ", ".join(s.split(",")) + "]" not in text] == []
    record = json.loads((ws / "opp" / "transpose.py.lvvit-opt.json").read_text())
    assert sorted(tuple(e) for p in record["patches"] for e in p["entries"]) == \
        sorted(tuple(int(d) for d in s.split(",")) for s in shapes)
    proc = cli_subprocess(["whitelist", "restore", "--file", target], ws)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert target.read_bytes() == ORIGINAL
    assert sorted(p.name for p in (ws / "opp").iterdir()) == ["transpose.py"]
    assert temp_leftovers(ws) == []


def test_a_patch_waiting_on_the_lock_says_so_and_then_finishes(ws):
    from lvvit_opt.whitelist.patch import transpose_lock

    target = ws / "opp" / "transpose.py"
    with transpose_lock(target):
        proc = cli_subprocess(["whitelist", "patch", "--file", target, "--shape", "3,6,197,197"], ws)
        line = proc.stderr.readline()
        assert "waiting for another lvvit-opt whitelist patch" in line
        assert proc.poll() is None   # still waiting while we hold the lock
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert b"[3, 6, 197, 197]" in target.read_bytes()


def _black_file(ws):
    black = ws / "black" / "transpose.py"
    black.parent.mkdir()
    shutil.copyfile(TRANSPOSE_FIXTURES / "transpose_blacklist_era.py", black)
    return black


def _a_black_listed_shape(path) -> str:
    from lvvit_opt.whitelist import read_transpose_source

    source = read_transpose_source(path)
    entry = next(iter(source.black.entries))
    return ",".join(str(d) for d in entry)


def test_black_listed_shape_exits_1_in_whitelist_patch(ws):
    black = _black_file(ws)
    before = snapshot(ws)
    outcome = invoke(["whitelist", "patch", "--file", black, "--shape", _a_black_listed_shape(black)], ws)
    assert_refused(outcome, 1, "black-listed")
    assert diff_snapshots(before, snapshot(ws)) == []


def test_patch_output_into_a_folder_writes_a_copy_there(ws):
    outcome = invoke(["whitelist", "patch", "--file", "opp/transpose.py", "--shape", "1,2,3,4", "--output", "sub"], ws)
    assert outcome.exit_code == 0, outcome.stderr
    assert b"[1, 2, 3, 4]" in (ws / "sub" / "transpose.py").read_bytes()
    assert (ws / "opp" / "transpose.py").read_bytes() == ORIGINAL


def test_patch_output_folder_of_the_file_itself_is_refused(ws):
    before = snapshot(ws)
    outcome = invoke(["whitelist", "patch", "--file", "opp/transpose.py", "--shape", "1,2,3,4", "--output", "opp"], ws)
    assert_refused(outcome, 2, "is the input --file")
    assert diff_snapshots(before, snapshot(ws)) == []
