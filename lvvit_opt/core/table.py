"""The one plain-text table format every table the CLI prints uses (no dependencies, so
libraries' `format()` methods can use it too)."""
from __future__ import annotations

from typing import Any, Sequence


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, align: str | None = None,
                 rule: bool = True, footer: Sequence[Any] | None = None) -> str:
    """Columns padded to their widest cell; `align` is one letter per column, 'l' or 'r'
    (default: right for numbers, left otherwise, decided by the first row). A dashed rule
    separates the header (and the footer, when given). Cells are str()-ed; None is blank."""
    body = [[_cell(v) for v in row] for row in rows]
    foot = [_cell(v) for v in footer] if footer is not None else None
    ncols = len(headers)
    for row in body + ([foot] if foot else []):
        if len(row) != ncols:
            raise ValueError(f"table row has {len(row)} cells, header has {ncols}: {row}")
    if align is None:
        first = rows[0] if rows else [""] * ncols
        align = "".join("r" if isinstance(v, (int, float)) and not isinstance(v, bool) else "l" for v in first)
    if len(align) != ncols:
        raise ValueError(f"align {align!r} does not have {ncols} letters")
    widths = [max([len(str(h))] + [len(r[i]) for r in body + ([foot] if foot else [])]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, align)]
        return "  ".join(parts).rstrip()

    out = [line([str(h) for h in headers])]
    dashes = line(["-" * w for w in widths])
    if rule:
        out.append(dashes)
    out += [line(r) for r in body]
    if foot:
        if rule:
            out.append(dashes)
        out.append(line(foot))
    return "\n".join(out)


def _cell(value: Any) -> str:
    return "" if value is None else str(value)
