"""Plain-text tables: aligned for the terminal (QA reports, cache summaries, result tables), and
CSV files of the same row dicts."""

from __future__ import annotations

import csv
import io
import os
from typing import Any, Callable, Sequence


def format_cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, digits: int = 3) -> str:
    """Align ``rows`` (dicts) under a header of ``columns`` (default: the first row's keys)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    cells = [[format_cell(row.get(column), digits) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    lines = ["  ".join(column.rjust(width) for column, width in zip(columns, widths))]
    lines += ["  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def write_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]], columns: Sequence[str],
              float_format: Callable[[float], str] = lambda value: repr(float(value))) -> None:
    """``rows`` as CSV under ``columns``, written atomically: floats through ``float_format``
    (default exact, ``repr``: ``nan``, ``inf``), None as an empty cell, anything else ``str``."""
    from cmrssp.atomic import write_text

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else float_format(row[c]) if isinstance(row[c], float) else str(row[c])
                         for c in columns])
    write_text(path, buffer.getvalue())
