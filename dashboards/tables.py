"""HTML tables of query results: escaped, formatted, sortable by the page's script.

A table is a pure function of a DataFrame, like a figure: the page only
places it.  Every cell is escaped (:func:`dashboards.text.html_text`);
numeric cells carry their exact value in ``data-v`` so that the page sorts
numbers as numbers whatever their display format.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dashboards.text import html_text

if TYPE_CHECKING:
    import polars as pl


@dataclass(frozen=True)
class Col:
    """One column of an HTML table: which DataFrame column, its header and its format."""

    name: str
    label: str
    fmt: str = "text"  # text, int, float0..float4, pct, bool
    title: str = ""  # tooltip of the header: what the column means


def _format(value: Any, fmt: str) -> tuple[str, str | None]:
    """(display text, sort value or None) of one cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "", None
    if fmt == "int":
        return f"{int(value):,}", str(int(value))
    if fmt.startswith("float"):
        digits = int(fmt[5:] or 2)
        return f"{float(value):,.{digits}f}", repr(float(value))
    if fmt == "pct":
        return f"{float(value):.2f} %", repr(float(value))
    if fmt == "bool":
        return ("yes" if value else "no"), ("1" if value else "0")
    return str(value), None


def html_table(
    frame: pl.DataFrame,
    columns: Sequence[Col],
    *,
    table_id: str,
    caption: str | None = None,
    row_class: Callable[[dict[str, Any]], str | None] | None = None,
) -> str:
    """``frame`` as an escaped ``<table>`` with the given columns, sortable by header click.

    ``row_class`` may mark rows (``"bad"`` for a failed check); its result is
    escaped like any other text.
    """
    head = "".join(
        f'<th scope="col" data-type="{"text" if c.fmt == "text" else "num"}"'
        f' title="{html_text(c.title)}" tabindex="0">{html_text(c.label)}</th>'
        for c in columns
    )
    body: list[str] = []
    for row in frame.select([c.name for c in columns]).iter_rows(named=True):
        cells = []
        for c in columns:
            shown, sort = _format(row[c.name], c.fmt)
            attr = "" if sort is None else f' data-v="{html_text(sort)}"'
            cls = "" if c.fmt == "text" else ' class="num"'
            cells.append(f"<td{cls}{attr}>{html_text(shown)}</td>")
        css = row_class(row) if row_class else None
        tr = f'<tr class="{html_text(css)}">' if css else "<tr>"
        body.append(tr + "".join(cells) + "</tr>")
    cap = f"<caption>{html_text(caption)}</caption>" if caption else ""
    return (
        f'<div class="table-wrap"><table class="sortable" id="{html_text(table_id)}">{cap}'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )
