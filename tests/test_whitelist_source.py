"""Reading transpose.py with ast: eras, lists, kernel selection, refusal of unknown structure."""
from __future__ import annotations

from pathlib import Path

import pytest

from lvvit_opt.whitelist import (BLACK_ERA, WHITE_ERA, UnrecognisedStructure, check_shapes, parse_transpose_source,
                                 read_transpose_source, select_kernel)

FIXTURES = Path(__file__).parent / "fixtures" / "transpose"
WHITE_FILE = FIXTURES / "transpose_whitelist_era.py"
BLACK_FILE = FIXTURES / "transpose_blacklist_era.py"
UNKNOWN_FILE = FIXTURES / "transpose_unrecognised.py"


def test_white_era_lists_are_read_as_literals():
    src = read_transpose_source(WHITE_FILE)
    assert src.era == WHITE_ERA
    assert src.white.entries == ((2, 512, 1024), (1024, 91), (256, 784, 91), (1, 512, 24), (38, 67, 512),
                                 (67, 38, 512), (768, 197, 197), (3072, 768), (768, 3072))
    assert src.white_fuzzy.entries == ((-1, 12, 197, 64), (-1, 197, 12, 64), (-1, 197, 768), (128, 12, 197, -1))
    assert src.single_core.name == "white_list_shape_single"
    assert src.single_core.entries == ((1, 24, 3, 20),)
    assert src.black is None and src.black_fuzzy is None and not src.vcopy_shortcut
    # offsets point at the brackets of the right list
    assert src.data[:src.white.open_offset + 1].endswith(b"\n    white_list_shape = [")
    assert src.data[src.white.close_offset - 35:src.white.close_offset + 1] == b"[768, 3072]\n" + b" " * 23 + b"]"


def test_black_era_lists_are_read():
    src = read_transpose_source(BLACK_FILE)
    assert src.era == BLACK_ERA
    assert src.black.entries == ((1, 128, 128, 3), (1, 3, 128, 128), (4, 8732), (8732, 4), (16, 6, 197, 197))
    assert src.black_fuzzy.entries == ((-1, 3, 85, 80, 80), (-1, 100, 91))
    assert src.white.entries[-1] == (8732, 4)
    assert src.vcopy_shortcut


@pytest.mark.parametrize("shape, kernel, rule, entry, reason", [
    ((768, 197, 197), "Transpose", "exact", (768, 197, 197),
     "exact entry [768, 197, 197] in white_list_shape (line 51)"),
    ((8, 12, 197, 64), "Transpose", "fuzzy", (-1, 12, 197, 64),
     "fuzzy entry [-1, 12, 197, 64] in white_list_shape_fuzzy (line 21)"),
    ((128, 12, 197, 7), "Transpose", "fuzzy", (128, 12, 197, -1),
     "fuzzy entry [128, 12, 197, -1] in white_list_shape_fuzzy (line 22)"),
    ((16, 6, 197, 197), "TransposeD", "default", None,
     "not in white_list_shape or white_list_shape_fuzzy; white-list era falls back to TransposeD"),
    # fuzzy needs equal rank
    ((8, 12, 197, 64, 1), "TransposeD", "default", None,
     "not in white_list_shape or white_list_shape_fuzzy; white-list era falls back to TransposeD"),
    # the single-core list does not apply on multi-core SoCs
    ((1, 24, 3, 20), "TransposeD", "default", None,
     "not in white_list_shape or white_list_shape_fuzzy; white-list era falls back to TransposeD"),
])
def test_white_era_selection(shape, kernel, rule, entry, reason):
    sel = select_kernel(read_transpose_source(WHITE_FILE), shape)
    assert (sel.kernel, sel.rule, sel.entry, sel.reason) == (kernel, rule, entry, reason)


@pytest.mark.parametrize("shape, kernel, rule, reason", [
    ((16, 197, 197, 6), "Transpose", "default",
     "not black-listed; black-list era selects Transpose for every static shape"),
    ((16, 6, 197, 197), "TransposeD", "black-list",
     "black-listed: exact entry [16, 6, 197, 197] in black_list_shape (line 49)"),
    ((3, 100, 91), "TransposeD", "black-list-fuzzy",
     "black-listed: fuzzy entry [-1, 100, 91] in black_list_shape_fuzzy (line 36)"),
    # white list is consulted before the black list
    ((8732, 4), "Transpose", "exact", "exact entry [8732, 4] in white_list_shape (line 74)"),
    ((4, 8732), "TransposeD", "black-list", "black-listed: exact entry [4, 8732] in black_list_shape (line 48)"),
])
def test_black_era_selection(shape, kernel, rule, reason):
    sel = select_kernel(read_transpose_source(BLACK_FILE), shape)
    assert (sel.kernel, sel.rule, sel.reason) == (kernel, rule, reason)


def test_check_report_structure():
    report = check_shapes(WHITE_FILE, [[16, 6, 197, 197], (768, 197, 197), (16, 6, 197, 197)])
    data = report.to_dict()
    assert data["era"] == "white-list" and data["all_fast"] is False
    assert [(s["shape"], s["kernel"], s["rule"]) for s in data["shapes"]] == [
        ([16, 6, 197, 197], "TransposeD", "default"), ([768, 197, 197], "Transpose", "exact")]
    assert data["notes"] == ["single-core SoCs (core_num == 1) use their own white_list_shape_single (line 43); "
                             "this report is for multi-core SoCs such as Ascend 310"]


def _white_text() -> str:
    return WHITE_FILE.read_text()


@pytest.mark.parametrize("mutate, missing", [
    (lambda t: UNKNOWN_FILE.read_text(), "missing `white_list_shape = [...]` (a literal list) in "
                                         "_by_dynamic_static_union_version()"),
    (lambda t: t.replace("def check_supported(", "def check_support("), "missing def check_supported("),
    (lambda t: t.replace('x_shape = input_x.get("ori_shape")', 'x_shape = input_x.get("shape")'),
     "missing the read of input_x's 'ori_shape' in check_supported()"),
    (lambda t: t.replace('    return False, ""\n\n\nclass', '    return maybe()\n\n\nclass'),
     "missing a final `return False` (white-list era) or `return True` (black-list era)"),
    (lambda t: t.replace("_by_dynamic_static_union_version(shape, core_num)", "_union(shape, core_num)"),
     "missing def _by_dynamic_static_union_version(shape, core_num)"),
    (lambda t: t.replace("[1024, 91], [256", "[1024, N], [256"), "white_list_shape (line 49) holds something "
                                                                   "other than a literal list of ints"),
    (lambda t: t.replace("    white_list_shape_fuzzy = [", "    white_list_shape_fuzzy = tuple(["), "not valid Python"),
    (lambda t: t + "\n\ndef check_supported(input_x):\n    return True\n", "check_supported() is defined twice"),
    (lambda t: t.replace("    shape_t = list(shape)\n    if shape_t in white_list_shape",
                         "    white_list_shape = []\n    shape_t = list(shape)\n    if shape_t in white_list_shape"),
     "white_list_shape is assigned 2 times in _by_dynamic_static_union_version()"),
])
def test_unrecognised_structure_names_what_is_missing(mutate, missing):
    with pytest.raises(UnrecognisedStructure) as info:
        parse_transpose_source(mutate(_white_text()).encode(), Path("t.py"))
    assert missing in str(info.value)
    assert str(info.value).endswith("file left untouched")


def test_black_era_without_black_list_is_refused():
    text = BLACK_FILE.read_text().replace("_static_scenario_goto_old_version(shape, core_num):",
                                          "_goto_old(shape, core_num):")
    with pytest.raises(UnrecognisedStructure, match=r"missing def _static_scenario_goto_old_version\(shape, "
                                                    r"core_num\) \(black-list era file\)"):
        parse_transpose_source(text.encode())


def test_oldest_file_without_fuzzy_list_is_read():
    """The earliest white-list files have no _fuzzy_match and `if core_num == 1: return False`."""
    text = _white_text()
    start, end = text.index("def _fuzzy_match"), text.index("def _by_dynamic_static_union_version")
    text = text[:start] + text[end:]
    text = text.replace("    if _fuzzy_match(shape_t):\n        return True\n\n", "")
    text = text.replace("        white_list_shape_single = [[1, 24, 3, 20]]\n"
                        "        if list(shape) in white_list_shape_single:\n            return True\n", "")
    src = parse_transpose_source(text.encode())
    assert src.era == WHITE_ERA and src.white_fuzzy is None and src.single_core is None
    assert select_kernel(src, (8, 12, 197, 64)).kernel == "TransposeD"
