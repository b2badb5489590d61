"""Plain-text tables for the terminal: one function, used by every report the CLI prints."""
from __future__ import annotations

from typing import Iterable, Sequence

__all__ = ["format_table"]


def format_table(rows: Iterable[Sequence], right: Iterable[int] = (), indent: str = "") -> str:
    """Aligns rows of cells into columns.

    Args:
        rows: The header row first, then the data rows; cells are turned into
            strings with ``str``.
        right: Indices of the columns to right-align (numbers).
        indent: Put before every line.

    Returns:
        The table, one line per row, without a trailing newline.
    """
    cells = [[str(c) for c in row] for row in rows]
    if not cells:
        return ""
    columns = max(len(row) for row in cells)
    cells = [row + [""] * (columns - len(row)) for row in cells]
    widths = [max(len(row[i]) for row in cells) for i in range(columns)]
    right = set(right)
    lines = []
    for row in cells:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append(indent + "  ".join(parts).rstrip())
    return "\n".join(lines)
