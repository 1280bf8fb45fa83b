"""Print result rows as a table (people), CSV or JSON (programs).

Everything printed may come from a trace, so table cells are rich ``Text``
objects: a task named ``[bold]x`` prints literally instead of as markup.
A task name can also hold control characters (the kernel copies
``prctl(PR_SET_NAME)`` and ``/proc/PID/comm`` bytes as they are: ESC, a
newline, a tab), which a terminal would act on: the table shows them as
escapes (:func:`printable`).  CSV and JSON carry the exact text, JSON with
its ``\\u`` escapes.
"""

from __future__ import annotations

import csv
import json
import re
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


#: C0 controls, DEL and C1 controls: ESC (and the C1 CSI, 0x9b) start terminal
#: escape sequences (colours, cursor moves, window titles, screen clears).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` with each control character written as an escape (``\\n``, ``\\x1b``).

    What a person sees instead of what a terminal (or a browser) would do
    with it; every other character, non-ASCII ones included, is kept.
    """
    return _CONTROL.sub(lambda m: _NAMED.get(m[0]) or f"\\x{ord(m[0]):02x}", text)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return printable(str(value))


def _table(
    rows: Sequence[dict[str, Any]], columns: list[str], title: str | None, out: TextIO
) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(printable(title)) if title else None, show_lines=False)
    for col in columns:
        numeric = rows and all(isinstance(r[col], int | float) or r[col] is None for r in rows)
        table.add_column(Text(printable(col)), justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*(Text(_cell(row[c])) for c in columns))
    Console(file=out, width=200, highlight=False, markup=False).print(table)
