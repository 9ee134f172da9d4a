"""whitelist patch / restore on fixture copies: exact bytes, idempotence, safety nets."""
from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from lvvit_opt.cli import main
from lvvit_opt.core.errors import UserError, ValidationFailed
from lvvit_opt.whitelist import check_shapes, patch as patch_module, patch_file, read_transpose_source, restore_file

FIXTURES = Path(__file__).parent / "fixtures" / "transpose"
LAYOUT = "op_impl/built-in/ai_core/tbe/impl/dynamic/transpose.py"
LVVIT_BS16 = [(16, 6, 197, 197), (16, 197, 197, 6)]

WHITE_LIST_TAIL = b"                         [768, 197, 197], [3072, 768], [768, 3072]\n"
WHITE_LIST_PATCHED_TAIL = (b"                         [768, 197, 197], [3072, 768], [768, 3072],\n"
                           b"                         [16, 6, 197, 197], [16, 197, 197, 6]\n")
FUZZY_TAIL = b"                              [-1, 197, 768], [128, 12, 197, -1]\n"
FUZZY_PATCHED_TAIL = (b"                              [-1, 197, 768], [128, 12, 197, -1],\n"
                      b"                              [-1, 6, 197, 197], [-1, 197, 197, 6]\n")


@pytest.fixture
def white_file(tmp_path) -> Path:
    """A white-list-era transpose.py inside an opp tree, mode 0o640."""
    path = tmp_path / "opp" / LAYOUT
    path.parent.mkdir(parents=True)
    shutil.copyfile(FIXTURES / "transpose_whitelist_era.py", path)
    path.chmod(0o640)
    return path


@pytest.fixture
def black_file(tmp_path) -> Path:
    path = tmp_path / "black" / "transpose.py"
    path.parent.mkdir()
    shutil.copyfile(FIXTURES / "transpose_blacklist_era.py", path)
    return path


def _snapshot(path: Path) -> tuple[bytes, int, int]:
    st = path.stat()
    return path.read_bytes(), st.st_mtime_ns, stat.S_IMODE(st.st_mode)


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_patch_inserts_text_only_and_keeps_mode(white_file):
    original = white_file.read_bytes()
    result = patch_file(white_file, LVVIT_BS16)
    assert original.count(WHITE_LIST_TAIL) == 1
    assert white_file.read_bytes() == original.replace(WHITE_LIST_TAIL, WHITE_LIST_PATCHED_TAIL)
    assert stat.S_IMODE(white_file.stat().st_mode) == 0o640
    assert result.added == LVVIT_BS16 and result.list_name == "white_list_shape"
    assert result.backup.read_bytes() == original
    record = json.loads(result.record.read_text())
    assert record["patches"][0]["entries"] == [[16, 6, 197, 197], [16, 197, 197, 6]]
    assert record["patches"][0]["list"] == "white_list_shape"
    assert _siblings(white_file) == ["transpose.py", "transpose.py.lvvit-opt.json", "transpose.py.lvvit-opt.orig"]
    assert "atc caches compiled kernels in" in result.cache_hint
    assert all(s.fast for s in check_shapes(white_file, LVVIT_BS16).selections)


def test_patch_twice_adds_nothing_and_does_not_touch_the_file(white_file):
    patch_file(white_file, LVVIT_BS16)
    before = _snapshot(white_file)
    record_before = (white_file.parent / "transpose.py.lvvit-opt.json").read_bytes()
    result = patch_file(white_file, LVVIT_BS16)
    assert result.added == [] and result.written is None
    assert result.message == "all 2 shape(s) already select Transpose; nothing to add"
    assert _snapshot(white_file) == before
    assert (white_file.parent / "transpose.py.lvvit-opt.json").read_bytes() == record_before


def test_second_patch_adds_only_new_shape_and_keeps_first_backup(white_file):
    original = white_file.read_bytes()
    patch_file(white_file, LVVIT_BS16[:1])
    result = patch_file(white_file, LVVIT_BS16)
    assert result.added == [(16, 197, 197, 6)]
    assert result.backup.read_bytes() == original
    record = json.loads(result.record.read_text())
    assert [p["entries"] for p in record["patches"]] == [[[16, 6, 197, 197]], [[16, 197, 197, 6]]]
    restore_file(white_file)
    assert white_file.read_bytes() == original


def test_fuzzy_adds_one_minus_one_batch_entry_per_shape(white_file):
    original = white_file.read_bytes()
    result = patch_file(white_file, LVVIT_BS16 + [(1, 6, 197, 197), (1, 197, 197, 6)], fuzzy=True)
    assert result.added == [(-1, 6, 197, 197), (-1, 197, 197, 6)]
    assert white_file.read_bytes() == original.replace(FUZZY_TAIL, FUZZY_PATCHED_TAIL)
    report = check_shapes(white_file, [(64, 6, 197, 197), (2, 197, 197, 6)])
    assert [(s.rule, s.entry) for s in report.selections] == [("fuzzy", (-1, 6, 197, 197)),
                                                              ("fuzzy", (-1, 197, 197, 6))]


def test_fuzzy_on_a_file_without_fuzzy_list_is_refused(white_file):
    text = white_file.read_text()
    start, end = text.index("def _fuzzy_match"), text.index("def _by_dynamic_static_union_version")
    white_file.write_text(text[:start] + text[end:])
    before = _snapshot(white_file)
    with pytest.raises(UserError, match="has no white_list_shape_fuzzy"):
        patch_file(white_file, LVVIT_BS16, fuzzy=True)
    assert _snapshot(white_file) == before


def test_dry_run_prints_diff_and_changes_nothing(white_file):
    before = _snapshot(white_file)
    result = patch_file(white_file, LVVIT_BS16, dry_run=True)
    assert _snapshot(white_file) == before
    assert _siblings(white_file) == ["transpose.py"]
    name = str(white_file)
    assert result.diff == (
        f"--- {name}\n+++ {name}\n@@ -48,7 +48,8 @@\n"
        "     white_list_shape = [\n"
        "                          [2, 512, 1024], [1024, 91], [256, 784, 91],\n"
        "                          [1, 512, 24], [38, 67, 512], [67, 38, 512],\n"
        "-                         [768, 197, 197], [3072, 768], [768, 3072]\n"
        "+                         [768, 197, 197], [3072, 768], [768, 3072],\n"
        "+                         [16, 6, 197, 197], [16, 197, 197, 6]\n"
        "                        ]\n"
        "     shape_t = list(shape)\n"
        "     if shape_t in white_list_shape:\n")


def test_restore_is_byte_identical_and_removes_our_files(white_file):
    original = white_file.read_bytes()
    patch_file(white_file, LVVIT_BS16)
    result = restore_file(white_file)
    assert result.restored and white_file.read_bytes() == original
    assert stat.S_IMODE(white_file.stat().st_mode) == 0o640
    assert _siblings(white_file) == ["transpose.py"]
    with pytest.raises(UserError, match="no lvvit-opt backup beside it"):
        restore_file(white_file)


def test_restore_refuses_unexplained_change_unless_forced(white_file):
    original = white_file.read_bytes()
    patch_file(white_file, LVVIT_BS16)
    edited = white_file.read_bytes().replace(b"TILING_HEAD_LEN = 4", b"TILING_HEAD_LEN = 8")
    white_file.write_bytes(edited)
    with pytest.raises(UserError, match="changed since lvvit-opt patched it, in a way"):
        restore_file(white_file)
    assert white_file.read_bytes() == edited
    with pytest.raises(UserError, match="changed since lvvit-opt patched it"):
        patch_file(white_file, [(2, 3, 4)])
    assert white_file.read_bytes() == edited
    result = restore_file(white_file, force=True)
    assert white_file.read_bytes() == original
    assert result.replaced.read_bytes() == edited
    assert _siblings(white_file) == ["transpose.py", "transpose.py.lvvit-opt.replaced"]


def test_unrecognised_structure_leaves_file_untouched(tmp_path):
    path = tmp_path / "transpose.py"
    shutil.copyfile(FIXTURES / "transpose_unrecognised.py", path)
    before = _snapshot(path)
    result = CliRunner().invoke(main, ["whitelist", "patch", "--file", str(path), "--shape", "16,6,197,197"])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {path}: structure not recognised: missing `white_list_shape = [...]`")
    assert "Traceback" not in result.output
    assert _snapshot(path) == before
    assert _siblings(path) == ["transpose.py"]


def test_black_era_changes_nothing(black_file):
    before = _snapshot(black_file)
    ok = patch_file(black_file, [(16, 197, 197, 6)])
    assert ok.added == [] and ok.blocked == [] and ok.message == (
        "black-list era file: all 1 static shape(s) already get the fast Transpose kernel; nothing to patch")
    blocked = patch_file(black_file, LVVIT_BS16)
    assert [s.shape for s in blocked.blocked] == [(16, 6, 197, 197)]
    assert "white_list_shape in _by_dynamic_static_union_version()" in blocked.message
    assert _snapshot(black_file) == before and _siblings(black_file) == ["transpose.py"]
    result = CliRunner().invoke(main, ["whitelist", "patch", "--file", str(black_file),
                                       "--shape", "16,6,197,197", "--shape", "16,197,197,6"])
    assert result.exit_code == 1
    assert "1 of 2 shape(s) already get Transpose; 1 are black-listed" in result.output


def test_compile_failure_after_write_rolls_back(white_file, monkeypatch):
    original = white_file.read_bytes()
    real = patch_module.render_insertions

    def broken(data, shape_list, entries):
        return real(data, shape_list, entries) + [(shape_list.close_offset, b"((")]

    monkeypatch.setattr(patch_module, "render_insertions", broken)
    with pytest.raises(ValidationFailed, match=r"failed its check \(UnrecognisedStructure|SyntaxError"):
        patch_file(white_file, LVVIT_BS16)
    assert white_file.read_bytes() == original
    assert _siblings(white_file) == ["transpose.py"]


def test_reread_check_rolls_back_when_shapes_not_selected(white_file, monkeypatch):
    """A patch that compiles but lands in the wrong list must be undone too."""
    original = white_file.read_bytes()
    monkeypatch.setattr(patch_module, "_target_list", lambda source, fuzzy: source.single_core)
    with pytest.raises(ValidationFailed, match=r"still selects TransposeD for \[\[16, 6, 197, 197\]"):
        patch_file(white_file, LVVIT_BS16)
    assert white_file.read_bytes() == original
    assert _siblings(white_file) == ["transpose.py"]


def test_read_only_directory_is_refused_before_writing(white_file, monkeypatch):
    """chmod the directory; root bypasses modes, so os.access is what a normal user would see."""
    original_access = os.access
    monkeypatch.setattr(patch_module.os, "access",
                        lambda p, mode: False if Path(p) == white_file.parent else original_access(p, mode))
    white_file.parent.chmod(0o555)
    try:
        before = _snapshot(white_file)
        result = CliRunner().invoke(main, ["whitelist", "patch", "--file", str(white_file),
                                           "--shape", "16,6,197,197"])
    finally:
        white_file.parent.chmod(0o755)
    assert result.exit_code == 2, result.output
    message = result.output
    assert f"cannot write {white_file}: its directory {white_file.parent} is read-only" in message
    assert "--output PATH" in message
    opp = white_file.parents[6]
    assert f"cp -r {opp} ~/opp" in message and f"--output ~/opp/{LAYOUT}" in message
    assert "export ASCEND_OPP_PATH=~/opp" in message
    assert _snapshot(white_file) == before and _siblings(white_file) == ["transpose.py"]


def test_permission_error_during_write_is_a_clear_error(white_file, monkeypatch):
    """Root passes os.access; a real EACCES/EROFS at write time must still be a one-line error."""
    def refuse(dest, data):
        raise PermissionError(13, "Permission denied", str(dest))

    monkeypatch.setattr(patch_module, "_write_atomic", refuse)
    before = _snapshot(white_file)
    with pytest.raises(UserError, match="read-only for this user. Run with the needed rights"):
        patch_file(white_file, LVVIT_BS16)
    assert _snapshot(white_file) == before and _siblings(white_file) == ["transpose.py"]


def test_output_writes_patched_copy_elsewhere(white_file, tmp_path):
    before = _snapshot(white_file)
    dest = tmp_path / "copy" / LAYOUT
    result = patch_file(white_file, LVVIT_BS16, output=dest)
    assert _snapshot(white_file) == before and _siblings(white_file) == ["transpose.py"]
    assert dest.read_bytes() == before[0].replace(WHITE_LIST_TAIL, WHITE_LIST_PATCHED_TAIL)
    assert result.written == dest and result.backup is None
    assert result.message.endswith(f"atc uses it after `export ASCEND_OPP_PATH={tmp_path / 'copy'}` (the rest "
                                   "of that opp tree must be a copy of the original)")
    assert sorted(p.name for p in dest.parent.iterdir()) == ["transpose.py"]
    with pytest.raises(UserError, match="is the file being patched"):
        patch_file(white_file, [(2, 3, 4)], output=white_file)


def test_crlf_file_gets_crlf_insertion(white_file):
    crlf = white_file.read_bytes().replace(b"\n", b"\r\n")
    white_file.write_bytes(crlf)
    patch_file(white_file, LVVIT_BS16)
    expected = crlf.replace(WHITE_LIST_TAIL.replace(b"\n", b"\r\n"),
                            WHITE_LIST_PATCHED_TAIL.replace(b"\n", b"\r\n"))
    assert white_file.read_bytes() == expected


def test_single_line_list_with_trailing_comment_and_comma(tmp_path):
    """Lists written other ways: one line, a trailing comma, a comment after the last entry."""
    text = (FIXTURES / "transpose_whitelist_era.py").read_text()
    start = text.index("    white_list_shape = [")
    end = text.index("]\n    shape_t = list(shape)") + 2
    one_line = text[:start] + "    white_list_shape = [[2, 512, 1024], [1024, 91]]\n" + text[end:]
    commented = text[:start] + ("    white_list_shape = [\n        [2, 512, 1024],  # detection, keep\n"
                                "        [1024, 91],  # bert\n    ]\n") + text[end:]
    cases = [
        (one_line, "    white_list_shape = [[2, 512, 1024], [1024, 91], [16, 6, 197, 197]]\n"),
        (commented, "    white_list_shape = [\n        [2, 512, 1024],  # detection, keep\n"
                    "        [1024, 91],  # bert\n        [16, 6, 197, 197],\n    ]\n"),
    ]
    for source_text, expected_block in cases:
        path = tmp_path / "transpose.py"
        path.write_text(source_text)
        for name in ("transpose.py.lvvit-opt.orig", "transpose.py.lvvit-opt.json"):
            (tmp_path / name).unlink(missing_ok=True)
        patch_file(path, [(16, 6, 197, 197)])
        block_start = source_text.index("    white_list_shape = [")
        assert path.read_text() == source_text[:block_start] + expected_block + \
            source_text[source_text.index("    shape_t = list(shape)\n    if shape_t in white_list"):]


def _large_variant() -> bytes:
    """~600 KB like a real CANN 6.x file: a 6000-entry white list and lots of code after it."""
    text = (FIXTURES / "transpose_whitelist_era.py").read_text()
    rows = "".join(f"                         [{i}, 3, {i % 97 + 1}, 64], [{i}, 64, 3, {i % 89 + 1}],\n"
                   for i in range(1, 3001))
    text = text.replace("    white_list_shape = [\n", "    white_list_shape = [\n" + rows, 1)
    filler = "".join(f"\n\ndef _tiling_case_{i}(tik_inst, ub_size):\n    \"\"\"case {i}\"\"\"\n"
                     f"    return (ub_size - {i} * 32) // 2 // 2\n" for i in range(4000))
    return (text + filler).encode()


def test_large_file(tmp_path):
    path = tmp_path / "transpose.py"
    original = _large_variant()
    path.write_bytes(original)
    assert len(original) > 500_000
    assert len(read_transpose_source(path).white.entries) == 6009
    patch_file(path, LVVIT_BS16)
    assert path.read_bytes() == original.replace(WHITE_LIST_TAIL, WHITE_LIST_PATCHED_TAIL)
    assert all(s.fast for s in check_shapes(path, LVVIT_BS16).selections)
    restore_file(path)
    assert path.read_bytes() == original


def test_cli_patch_check_restore_round_trip(white_file):
    original = white_file.read_bytes()
    runner = CliRunner()
    args = ["--file", str(white_file), "--shape", "16,6,197,197", "--shape", "16,197,197,6"]
    check = runner.invoke(main, ["whitelist", "check", *args, "--require-fast"])
    assert check.exit_code == 1
    assert check.output.count("TransposeD  not in white_list_shape") == 2
    patched = runner.invoke(main, ["whitelist", "patch", *args])
    assert patched.exit_code == 0, patched.output
    assert "added 2 entries to white_list_shape" in patched.output and "hint: atc caches" in patched.output
    check = runner.invoke(main, ["whitelist", "check", *args, "--require-fast", "--json", "-"])
    assert check.exit_code == 0
    data = json.loads(check.stdout)["result"]
    assert [(s["shape"], s["kernel"], s["rule"], s["line"]) for s in data["shapes"]] == [
        ([16, 6, 197, 197], "Transpose", "exact", 52), ([16, 197, 197, 6], "Transpose", "exact", 52)]
    restored = runner.invoke(main, ["whitelist", "restore", "--file", str(white_file)])
    assert restored.exit_code == 0 and white_file.read_bytes() == original


@pytest.mark.parametrize("bad", ["16,6,x,197", "16;6", "", "16,-6,197,197", "0"])
def test_malformed_shape_exits_2(white_file, bad):
    before = _snapshot(white_file)
    result = CliRunner().invoke(main, ["whitelist", "patch", "--file", str(white_file), "--shape", bad])
    assert result.exit_code == 2
    assert "Invalid value for '--shape'" in result.output
    assert _snapshot(white_file) == before


def test_shape_and_from_model_are_exclusive(white_file):
    result = CliRunner().invoke(main, ["whitelist", "check", "--file", str(white_file)])
    assert result.exit_code == 2 and "give either --shape" in result.output
