"""Print result rows as a table (people), CSV or JSON (programs).

Everything printed may come from a trace, so table cells are rich ``Text``
objects: a task named ``[bold]x`` prints literally instead of as markup.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, TextIO


class OutputFormat(StrEnum):
    """How a reporting command prints its rows."""

    table = "table"
    csv = "csv"
    json = "json"


def emit(
    rows: Sequence[dict[str, Any]],
    fmt: OutputFormat | str = OutputFormat.table,
    *,
    title: str | None = None,
    file: TextIO | None = None,
) -> None:
    """Print ``rows`` (dicts sharing their keys) in ``fmt`` to ``file`` (stdout)."""
    out = file or sys.stdout
    fmt = OutputFormat(fmt)
    columns = list(rows[0].keys()) if rows else []
    if fmt is OutputFormat.json:
        out.write(json.dumps(list(rows), default=str) + "\n")
    elif fmt is OutputFormat.csv:
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        _table(rows, columns, title, out)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _table(
    rows: Sequence[dict[str, Any]], columns: list[str], title: str | None, out: TextIO
) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title) if title else None, show_lines=False)
    for col in columns:
        numeric = rows and all(isinstance(r[col], int | float) or r[col] is None for r in rows)
        table.add_column(Text(col), justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*(Text(_cell(row[c])) for c in columns))
    Console(file=out, width=200, highlight=False, markup=False).print(table)
