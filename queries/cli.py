"""`fpureplay query`: run a named query or ad-hoc SQL over a dataset.

``pipeline/cli.py`` registers :func:`query` with ``app.command("query")``.
Results go to stdout (or ``-o FILE``); errors print ``error: ...`` on stderr
and exit 2.  DuckDB and polars are imported only when a query runs, so
``--list`` and ``--help`` stay fast.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

if TYPE_CHECKING:
    import polars as pl


class QueryFormat(StrEnum):
    """Output formats of `fpureplay query`."""

    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


def _fail(message: str) -> None:
    # Imported here, not at the top: pipeline.cli imports this module to
    # register the command.
    from pipeline.cli import fail

    fail(message)


def query(
    dataset: Annotated[
        Path | None, typer.Argument(help="Dataset directory (from `fpureplay ingest`).")
    ] = None,
    name: Annotated[str | None, typer.Argument(help="Query name (see --list).")] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", metavar="KEY=VALUE", help="A query parameter (repeatable)."),
    ] = None,
    fmt: Annotated[
        QueryFormat,
        typer.Option("--format", "-f", help="table, csv, json, or parquet (needs -o)."),
    ] = QueryFormat.table,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Write to FILE instead of stdout."),
    ] = None,
    sql: Annotated[
        str | None,
        typer.Option(
            "--sql", metavar="SQL", help="Run this SQL over the views instead of a named query."
        ),
    ] = None,
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host", metavar="NAME", help="Only these hosts' sources (repeatable; every view)."
        ),
    ] = None,
    list_queries: Annotated[
        bool,
        typer.Option("--list", help="List the queries, their parameters and what they answer."),
    ] = False,
) -> None:
    """Run a named query (or --sql) over a dataset's views and print the rows.

    The views are events, rejects, runs, fpu_ops (after `fpureplay replay`)
    and sources (the manifest).  Parameters are typed and bound, never
    pasted into SQL.  docs/queries.md documents every query and column.

    Example: fpureplay query ds timeline --param bucket_ms=1 --format csv
    """
    from queries.runner import QueryError

    if list_queries:
        if dataset is not None or name is not None or sql is not None or param or host:
            _fail("--list takes no DATASET, NAME, --sql, --param or --host")
        _write_rows(_catalog_rows(), fmt, output, title="queries")
        return
    if dataset is None:
        _fail("give DATASET and a query NAME, DATASET and --sql, or --list")
    assert dataset is not None
    if (name is None) == (sql is None):
        _fail(
            "give either a query NAME or --sql, not both" if name else "give a query NAME or --sql"
        )
    if sql is not None and param:
        _fail("--param applies to named queries; write the values into --sql")
    if fmt is QueryFormat.parquet and output is None:
        _fail("--format parquet writes a file: give -o FILE")
    try:
        if sql is not None:
            from queries.runner import run_sql

            frame = run_sql(dataset, sql, hosts=host)
            title = "sql"
        else:
            from queries.runner import run

            assert name is not None
            frame = run(dataset, name, hosts=host, **_parse_params(param or []))
            title = name
    except QueryError as exc:
        _fail(str(exc))
    _write_frame(frame, fmt, output, title)


def _parse_params(items: list[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` as ``{"a": "1", "b": "x"}``; the query checks names and types."""
    from queries.runner import QueryError

    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise QueryError(f"--param {item!r}: expected KEY=VALUE")
        if key in params:
            raise QueryError(f"--param {key!r} given twice")
        params[key] = value
    return params


def _catalog_rows() -> list[dict[str, Any]]:
    from queries.catalog import catalog

    return [
        {
            "name": q.name,
            "area": q.area,
            "parameters": ", ".join(p.signature() for p in q.params),
            "description": q.description,
        }
        for q in catalog().values()
    ]


def _write_frame(frame: pl.DataFrame, fmt: QueryFormat, output: Path | None, title: str) -> None:
    if fmt is QueryFormat.parquet:
        from ingest.dataset import atomic_write

        assert output is not None
        try:
            # Aside, then renamed: a reader never opens a Parquet file without its footer.
            with atomic_write(output) as tmp:
                frame.write_parquet(tmp, compression="zstd")
        except OSError as exc:
            _fail(f"{output}: {exc.strerror or exc}")
        return
    if frame.height == 0:
        _write_empty(frame.columns, fmt, output, title)
        return
    _write_rows(frame.to_dicts(), fmt, output, title)


def _write_rows(
    rows: list[dict[str, Any]], fmt: QueryFormat, output: Path | None, title: str
) -> None:
    from pipeline.output import emit

    if fmt is QueryFormat.parquet:
        import polars as pl

        _write_frame(pl.DataFrame(rows), fmt, output, title)
        return
    with _opened(output) as out:
        emit(rows, fmt.value, title=title, file=out)


def _write_empty(columns: list[str], fmt: QueryFormat, output: Path | None, title: str) -> None:
    # emit() takes its columns from the first row; with no rows, say which
    # columns there would have been so that a CSV consumer still gets a header.
    with _opened(output) as out:
        if fmt is QueryFormat.csv:
            csv.writer(out, lineterminator="\n").writerow(columns)
        elif fmt is QueryFormat.json:
            out.write("[]\n")
        else:
            out.write(f"{title}: no rows (columns: {', '.join(columns)})\n")


@contextmanager
def _opened(path: Path | None) -> Iterator[TextIO]:
    """stdout, or a text file that replaces ``path`` whole when done (errors become exit 2).

    The file is written aside and renamed into place (ingest.dataset.atomic_write),
    so a reader of ``path`` sees the old result or the new one, never a
    prefix, even when the query is killed while it writes.
    """
    if path is None:
        yield sys.stdout
        return
    from ingest.dataset import atomic_write

    try:
        with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as out:
            yield out
    except OSError as exc:
        _fail(f"{path}: {exc.strerror or exc}")
