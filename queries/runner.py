"""Run a named query, or ad-hoc SQL, against a dataset.

Parameters are checked against the query's header and bound by DuckDB as
named parameters (``$bucket_ms``); no value is ever formatted into SQL.
Every failure the user can cause (an unknown query or parameter, a value of
the wrong type, a dataset without the tables a query reads, bad ad-hoc SQL)
raises :class:`QueryError` with a message the CLI prints as is.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from queries.catalog import Query, catalog
from queries.tables import Binding, register

if TYPE_CHECKING:
    import duckdb
    import polars as pl


class QueryError(Exception):
    """A query that cannot run as asked; the message says why (CLI: exit 2)."""


def connect(dataset: str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the dataset's views registered.

    Views exist for the tables the dataset has (``runs`` and ``fpu_ops``
    only after a replay); ``sources`` always exists.
    """
    return _connect(dataset)[0]


def _connect(dataset: str | Path) -> tuple[duckdb.DuckDBPyConnection, Binding]:
    import duckdb

    from ingest.dataset import read_manifest
    from ingest.errors import InputError

    root = Path(dataset)
    try:
        manifest = read_manifest(root)
    except InputError as exc:
        raise QueryError(str(exc)) from None
    # No progress bar: DuckDB draws it on stdout, even into a pipe, where it
    # would corrupt `fpureplay query -f csv` output and the dashboard's line.
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    try:
        binding = register(con, root, manifest)
    except duckdb.Error as exc:
        con.close()
        raise QueryError(f"{root}: cannot read its Parquet files: {_first_line(exc)}") from None
    return con, binding


def manifest(dataset: str | Path) -> dict[str, Any]:
    """The dataset's ``manifest.json`` as a dict; QueryError when it is not a dataset.

    What the views are built from besides the Parquet: for provenance (the
    dashboard embeds it) and for nested per-source facts no view flattens.
    """
    from ingest.dataset import read_manifest
    from ingest.errors import InputError

    try:
        return read_manifest(Path(dataset))
    except InputError as exc:
        raise QueryError(str(exc)) from None


def get(name: str) -> Query:
    """The shipped query called ``name``; QueryError (with a suggestion) if none."""
    queries = catalog()
    if name in queries:
        return queries[name]
    close = difflib.get_close_matches(name, list(queries), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise QueryError(f"unknown query {name!r}{hint} (`fpureplay query --list` shows them all)")


def bind(query: Query, params: Mapping[str, Any]) -> dict[str, Any]:
    """The values to bind for ``query``: ``params`` checked and typed, defaults filled in."""
    for key in params:
        if query.param(key) is None:
            have = ", ".join(p.name for p in query.params) or "none"
            raise QueryError(
                f"query {query.name!r} has no parameter {key!r} (its parameters: {have})"
            )
    values: dict[str, Any] = {}
    for param in query.params:
        if param.name not in params:
            if param.required:
                raise QueryError(f"query {query.name!r} needs the parameter {param.name!r}")
            values[param.name] = param.default
            continue
        try:
            values[param.name] = param.coerce(params[param.name])
        except ValueError as exc:
            raise QueryError(f"query {query.name!r}: {exc}") from None
    return values


def run(dataset: str | Path, name: str, /, **params: Any) -> pl.DataFrame:
    """Run the shipped query ``name`` on ``dataset`` and return its rows.

    ``params`` are the query's parameters as Python values (or their text, as
    ``--param`` gives them).  Example::

        queries.run("ds", "timeline", bucket_ms=1)
    """
    query = get(name)
    values = bind(query, params)
    con, binding = _connect(dataset)
    try:
        for table in query.tables:
            if table in binding.missing:
                raise QueryError(
                    f"query {query.name!r} reads the {table} table, but {binding.root}"
                    f" {binding.missing[table]}"
                )
        return _execute(con, query.sql, values, query.name)
    finally:
        con.close()


def run_sql(dataset: str | Path, sql: str) -> pl.DataFrame:
    """Run ad-hoc SQL over the dataset's views and return its rows."""
    con, binding = _connect(dataset)
    try:
        return _execute(con, sql, {}, None, binding)
    finally:
        con.close()


def _execute(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    values: dict[str, Any],
    name: str | None,
    binding: Binding | None = None,
) -> pl.DataFrame:
    import duckdb
    import polars as pl

    try:
        relation = con.sql(sql, params=values or None)
        if relation is None:  # a statement without rows (SET, CREATE ...)
            return pl.DataFrame()
        return relation.pl()
    except duckdb.CatalogException as exc:
        missing = _missing_view(exc, binding)
        if missing:
            raise QueryError(missing) from None
        raise QueryError(f"SQL: {_first_line(exc)}") from None
    except duckdb.Error as exc:
        what = f"query {name!r} failed" if name else "SQL"
        raise QueryError(f"{what}: {_first_line(exc)}") from None


def _missing_view(exc: Exception, binding: Binding | None) -> str | None:
    # Ad-hoc SQL naming a table the dataset lacks: say which and why,
    # rather than DuckDB's "Table with name runs does not exist".
    if binding is None:
        return None
    m = re.search(r"Table with name (\w+) does not exist", str(exc))
    if m and m.group(1).lower() in binding.missing:
        table = m.group(1).lower()
        return f"{binding.root} {binding.missing[table]}"
    return None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]
