"""Read CANN's `transpose.py` without importing it: era, literal shape lists, kernel choice.

The file is parsed with `ast` only (it imports `te`/`tbe`, which exist on Ascend hosts
alone, and executing vendor code to read a list would be reckless). Every list keeps its
byte offsets so the patcher can insert text without re-formatting anything.

Kernel selection mirrors `check_supported(input_x, perm, output_y, ...)` on the input's
`ori_shape` (DESIGN.md §3):

* white-list era (CANN <= 5.0.x): the fast Transpose kernel only for shapes in
  `white_list_shape` or matching `white_list_shape_fuzzy`; everything else -> TransposeD.
* black-list era (late 2021 on, `check_supported` ends in `return True`): the white lists
  still win first, then `black_list_shape` / `black_list_shape_fuzzy` send a shape to
  TransposeD, and every other static shape gets the fast kernel.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Iterable
from pathlib import Path

from lvvit_opt.core.errors import UserError, shown

WHITE_ERA = "white-list"
BLACK_ERA = "black-list"
FAST_KERNEL = "Transpose"
SLOW_KERNEL = "TransposeD"

ERA_DESCRIPTIONS = {
    WHITE_ERA: "white-list era (CANN 5.0.x and older): a static shape that is not listed falls back "
               "to the slow TransposeD kernel, so listing the model's shapes matters",
    BLACK_ERA: "black-list era (late 2021 on): every static shape gets the fast Transpose kernel "
               "unless it is black-listed",
}

Shape = tuple[int, ...]


class UnrecognisedStructure(UserError):
    """transpose.py does not have the structure this tool knows how to read safely."""


@dataclass(frozen=True)
class ShapeList:
    """One literal list of shapes in the file, with where it sits (byte offsets, 0-based)."""

    name: str
    function: str
    entries: tuple[Shape, ...]
    entry_lines: tuple[int, ...]
    line: int                      # 1-based line of the assignment
    close_line: int                # 1-based line of the closing ']'
    open_offset: int               # the '['
    close_offset: int              # the ']'
    last_entry_end: int | None     # just after the last entry; None for an empty list


@dataclass(frozen=True)
class TransposeSource:
    """What the tool knows about one transpose.py."""

    path: Path | None
    data: bytes
    era: str
    white: ShapeList
    white_fuzzy: ShapeList | None
    single_core: ShapeList | None   # the `core_num == 1` branch's own list, if it has one
    black: ShapeList | None
    black_fuzzy: ShapeList | None
    vcopy_shortcut: bool            # black-list era: SoCs with tik.vcopy are always fast

    @property
    def era_description(self) -> str:
        return ERA_DESCRIPTIONS[self.era]


@dataclass(frozen=True)
class Selection:
    """Which kernel atc picks for one static input shape, and why."""

    shape: Shape
    kernel: str
    rule: str                 # exact | fuzzy | black-list | black-list-fuzzy | default
    entry: Shape | None = None
    list_name: str | None = None
    line: int | None = None
    reason: str = ""

    @property
    def fast(self) -> bool:
        return self.kernel == FAST_KERNEL

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "kernel": self.kernel, "fast": self.fast, "rule": self.rule,
                "entry": list(self.entry) if self.entry is not None else None,
                "list": self.list_name, "line": self.line, "reason": self.reason}


def read_transpose_source(path: str | Path) -> TransposeSource:
    """Read and parse a transpose.py from disk (UserError if unreadable or unrecognised)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{shown(path)}: no such file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{shown(path)}: cannot read ({exc.strerror or exc})") from None
    return parse_transpose_source(data, path)


def parse_transpose_source(data: bytes, path: Path | None = None) -> TransposeSource:
    """Parse transpose.py bytes; raise UnrecognisedStructure naming the first missing piece."""
    label = str(path) if path else "transpose.py"
    try:
        tree = ast.parse(data, filename=label)
    except (SyntaxError, ValueError) as exc:
        raise UnrecognisedStructure(f"{label}: not valid Python ({exc.__class__.__name__}: {exc}); "
                                    "structure not recognised, file left untouched") from None
    line_starts = byte_line_starts(data)
    functions = _module_functions(tree, label)

    def missing(what: str) -> UnrecognisedStructure:
        return UnrecognisedStructure(f"{label}: structure not recognised: missing {what}; file left untouched")

    check = functions.get("check_supported")
    if check is None:
        raise missing("def check_supported(input_x, perm, output_y, ...)")
    if not any(isinstance(n, ast.Constant) and n.value == "ori_shape" for n in ast.walk(check)):
        raise missing("the read of input_x's 'ori_shape' in check_supported()")
    era = _era_of(check)
    if era is None:
        raise missing("a final `return False` (white-list era) or `return True` (black-list era) "
                      "in check_supported()")

    union = functions.get("_by_dynamic_static_union_version")
    if union is None:
        raise missing("def _by_dynamic_static_union_version(shape, core_num)")
    white = _list_in(union, "white_list_shape", data, line_starts, label, top_level_only=True)
    if white is None:
        raise missing("`white_list_shape = [...]` (a literal list) in _by_dynamic_static_union_version()")
    single_core = _single_core_list(union, data, line_starts, label)

    fuzzy_fn = functions.get("_fuzzy_match")
    white_fuzzy = _list_in(fuzzy_fn, "white_list_shape_fuzzy", data, line_starts, label) if fuzzy_fn else None
    if fuzzy_fn is not None and white_fuzzy is None:
        raise missing("`white_list_shape_fuzzy = [...]` (a literal list) in _fuzzy_match()")

    black = black_fuzzy = None
    if era == BLACK_ERA:
        goto_old = functions.get("_static_scenario_goto_old_version")
        if goto_old is None:
            raise missing("def _static_scenario_goto_old_version(shape, core_num) (black-list era file)")
        black = _list_in(goto_old, "black_list_shape", data, line_starts, label)
        if black is None:
            raise missing("`black_list_shape = [...]` in _static_scenario_goto_old_version()")
        black_fn = functions.get("_fuzzy_match_black")
        if black_fn is not None:
            black_fuzzy = _list_in(black_fn, "black_list_shape_fuzzy", data, line_starts, label)
            if black_fuzzy is None:
                raise missing("`black_list_shape_fuzzy = [...]` in _fuzzy_match_black()")
    vcopy = era == BLACK_ERA and any(
        isinstance(n, ast.Constant) and n.value == "tik.vcopy" for n in ast.walk(check))
    return TransposeSource(path, data, era, white, white_fuzzy, single_core, black, black_fuzzy, vcopy)


def select_kernel(source: TransposeSource, shape: Shape) -> Selection:
    """The kernel `check_supported` picks for a static input shape (multi-core SoCs)."""
    shape = tuple(int(d) for d in shape)
    for shape_list, rule in ((source.white, "exact"), (source.white_fuzzy, "fuzzy")):
        hit = _find(shape_list, shape, fuzzy=rule == "fuzzy")
        if hit is not None:
            return _hit(shape, FAST_KERNEL, rule, shape_list, hit, "")
    if source.era == WHITE_ERA:
        return Selection(shape, SLOW_KERNEL, "default", reason="not in white_list_shape or "
                         "white_list_shape_fuzzy; white-list era falls back to TransposeD")
    for shape_list, rule in ((source.black, "black-list"), (source.black_fuzzy, "black-list-fuzzy")):
        hit = _find(shape_list, shape, fuzzy=rule.endswith("fuzzy"))
        if hit is not None:
            return _hit(shape, SLOW_KERNEL, rule, shape_list, hit, "black-listed: ")
    return Selection(shape, FAST_KERNEL, "default",
                     reason="not black-listed; black-list era selects Transpose for every static shape")


def fuzzy_matches(entry: Shape, shape: Shape) -> bool:
    """CANN's fuzzy rule: same rank, and every entry dim is -1 or equal."""
    return len(entry) == len(shape) and all(e == -1 or e == s for e, s in zip(entry, shape))


def _hit(shape: Shape, kernel: str, rule: str, shape_list: ShapeList, index: int, prefix: str) -> Selection:
    entry = shape_list.entries[index]
    line = shape_list.entry_lines[index]
    kind = "fuzzy entry" if "fuzzy" in rule else "exact entry"
    reason = f"{prefix}{kind} {list(entry)} in {shape_list.name} (line {line})"
    return Selection(shape, kernel, rule, entry, shape_list.name, line, reason)


def _find(shape_list: ShapeList | None, shape: Shape, fuzzy: bool) -> int | None:
    if shape_list is None:
        return None
    for index, entry in enumerate(shape_list.entries):
        if (fuzzy_matches(entry, shape) if fuzzy else entry == shape):
            return index
    return None


def _module_functions(tree: ast.Module, label: str) -> dict[str, ast.FunctionDef]:
    functions: dict[str, ast.FunctionDef] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            if node.name in functions:
                # a redefinition means we cannot tell which body is live
                raise UnrecognisedStructure(f"{label}: structure not recognised: {node.name}() is defined "
                                            "twice; file left untouched")
            functions[node.name] = node
    return functions


def _era_of(check: ast.FunctionDef) -> str | None:
    last = check.body[-1] if check.body else None
    if not isinstance(last, ast.Return) or last.value is None:
        return None
    value = last.value
    if isinstance(value, ast.Tuple) and value.elts:
        value = value.elts[0]
    if isinstance(value, ast.Constant) and value.value is True:
        return BLACK_ERA
    if isinstance(value, ast.Constant) and value.value is False:
        return WHITE_ERA
    return None


def _single_core_list(union: ast.FunctionDef, data: bytes, line_starts: list[int], label: str) -> ShapeList | None:
    """The short list inside `if core_num == 1:` (None when that branch just returns False)."""
    for node in union.body:
        if isinstance(node, ast.If) and _is_core_num_one(node.test):
            for stmt in node.body:
                if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.List):
                    name = stmt.targets[0].id if isinstance(stmt.targets[0], ast.Name) else "?"
                    return _shape_list(stmt, name, union.name, data, line_starts, label)
    return None


def _is_core_num_one(test: ast.expr) -> bool:
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "core_num"
            and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)
            and isinstance(test.comparators[0], ast.Constant) and test.comparators[0].value == 1)


def _list_in(function: ast.FunctionDef, name: str, data: bytes, line_starts: list[int], label: str,
             top_level_only: bool = False) -> ShapeList | None:
    """The single `name = [...]` assignment in `function` (None if absent; refuse if twice)."""
    statements = function.body if top_level_only else list(ast.walk(function))
    found = [stmt for stmt in statements
             if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
             and isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id == name]
    if not found:
        return None
    if len(found) > 1:
        raise UnrecognisedStructure(f"{label}: structure not recognised: {name} is assigned "
                                    f"{len(found)} times in {function.name}(); file left untouched")
    if not isinstance(found[0].value, ast.List):
        return None
    return _shape_list(found[0], name, function.name, data, line_starts, label)


def _shape_list(stmt: ast.Assign, name: str, function: str, data: bytes, line_starts: list[int],
                label: str) -> ShapeList:
    node = stmt.value
    assert isinstance(node, ast.List)
    entries = []
    for elt in node.elts:
        try:
            value = ast.literal_eval(elt)
        except ValueError:
            value = None
        if not (isinstance(value, list) and all(type(d) is int for d in value)):
            raise UnrecognisedStructure(f"{label}: structure not recognised: {name} (line {elt.lineno}) holds "
                                        f"something other than a literal list of ints; file left untouched")
        entries.append(tuple(value))
    open_offset = line_starts[node.lineno - 1] + node.col_offset
    close_offset = line_starts[node.end_lineno - 1] + node.end_col_offset - 1
    if data[open_offset:open_offset + 1] != b"[" or data[close_offset:close_offset + 1] != b"]":
        raise UnrecognisedStructure(f"{label}: structure not recognised: cannot place {name}'s brackets "
                                    "(unusual encoding?); file left untouched")
    last_end = None
    if node.elts:
        last = node.elts[-1]
        last_end = line_starts[last.end_lineno - 1] + last.end_col_offset
    return ShapeList(name, function, tuple(entries), tuple(e.lineno for e in node.elts), stmt.lineno,
                     node.end_lineno, open_offset, close_offset, last_end)


def byte_line_starts(data: bytes) -> list[int]:
    """Byte offset of each line's start, splitting like Python's tokenizer (\\n, \\r\\n, \\r)."""
    starts, offset = [], 0
    for line in data.splitlines(keepends=True):
        starts.append(offset)
        offset += len(line)
    starts.append(offset)
    return starts


def normalise_shapes(shapes: Iterable[Iterable[int]]) -> list[Shape]:
    """Distinct static shapes as int tuples, in order; UserError on anything else."""
    result: list[Shape] = []
    for shape in shapes:
        try:
            dims = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            raise UserError(f"shape {shape!r} is not a list of integers") from None
        if not dims or any(d <= 0 for d in dims):
            raise UserError(f"shape {list(dims)} is not static (needs positive dims)")
        if dims not in result:
            result.append(dims)
    if not result:
        raise UserError("no shapes given")
    return result
