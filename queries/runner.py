"""Run a named query, or ad-hoc SQL, against a dataset.

Parameters are checked against the query's header and bound by DuckDB as
named parameters (``$bucket_ms``); no value is ever formatted into SQL.
Every failure the user can cause (an unknown query or parameter, a value of
the wrong type, a dataset without the tables a query reads, bad ad-hoc SQL)
raises :class:`QueryError` with a message the CLI prints as is.

:func:`run` and :func:`run_sql` run on a connection :mod:`queries.sandbox`
has locked to the dataset's own files before the views are registered, and
:func:`run_sql` admits only statements that read; :func:`connect` is the
caller's own, unlocked connection.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from queries.catalog import Query, catalog
from queries.sandbox import Refused, lock, private_temp_dir, queries_only
from queries.tables import Binding, HostError, register

if TYPE_CHECKING:
    import duckdb
    import polars as pl


class QueryError(Exception):
    """A query that cannot run as asked; the message says why (CLI: exit 2)."""


def connect(
    dataset: str | Path, *, hosts: Sequence[str] | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the dataset's views registered.

    Views exist for the tables the dataset has (``runs`` and ``fpu_ops``
    only after a replay); ``sources`` always exists.  The connection is not
    sandboxed (it may write results anywhere): it is for the caller's own
    code.  SQL someone else wrote goes through :func:`run_sql`.  ``hosts``
    limits every view to those hosts' sources.
    """
    root, found = Path(dataset), manifest(dataset)
    con = _new_connection()
    try:
        _register(con, root, found, hosts)
    except QueryError:
        con.close()
        raise
    return con


@contextmanager
def _sandboxed(
    dataset: str | Path, hosts: Sequence[str] | None = None
) -> Iterator[tuple[duckdb.DuckDBPyConnection, Binding]]:
    """A connection locked to ``dataset``'s files (queries.sandbox), then its views."""
    import duckdb

    root, found = Path(dataset), manifest(dataset)
    # The spill directory outlives the connection: DuckDB removes its temp
    # files at close, then the directory goes.
    with private_temp_dir() as spill:
        con = _new_connection()
        try:
            try:
                # Locked before the views exist: registering them runs SQL
                # built from names in the dataset's manifest and Parquet files.
                lock(con, root, spill)
            except Refused as exc:
                raise QueryError(str(exc)) from None
            except duckdb.Error as exc:
                raise QueryError(
                    f"cannot sandbox DuckDB {duckdb.__version__}: {_first_line(exc)}"
                ) from None
            yield con, _register(con, root, found, hosts)
        finally:
            con.close()


def _new_connection() -> duckdb.DuckDBPyConnection:
    import duckdb

    con = duckdb.connect()
    # No progress bar: DuckDB draws it on stdout, even into a pipe, where it
    # would corrupt `fpureplay query -f csv` output and the dashboard's line.
    con.execute("SET enable_progress_bar = false")
    return con


def _register(
    con: duckdb.DuckDBPyConnection,
    root: Path,
    found: dict[str, Any],
    hosts: Sequence[str] | None = None,
) -> Binding:
    import duckdb

    try:
        return register(con, root, found, hosts)
    except HostError as exc:
        raise QueryError(str(exc)) from None
    except duckdb.Error as exc:
        raise QueryError(f"{root}: cannot read its Parquet files: {_first_line(exc)}") from None


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
        value = values[param.name]
        if param.type == "BIGINT" and not -(2**63) <= value < 2**63:
            raise QueryError(
                f"query {query.name!r}: {param.name} must fit in a BIGINT (64 bits), not {value}"
            )
    return values


def _typed(query: Query, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` as DuckDB values of their declared types, to bind.

    A plain Python value is bound as the narrowest type that holds it: 12
    would be an INTEGER, and ``$count * 1000000000`` would overflow where
    the header promised a BIGINT.
    """
    from duckdb.value.constant import BooleanValue, DoubleValue, LongValue, StringValue

    # One per catalog.PARAM_TYPES entry.
    kinds = {
        "BIGINT": LongValue,
        "DOUBLE": DoubleValue,
        "BOOLEAN": BooleanValue,
        "VARCHAR": StringValue,
    }
    return {p.name: kinds[p.type](values[p.name]) for p in query.params}


def run(
    dataset: str | Path, name: str, /, *, hosts: Sequence[str] | None = None, **params: Any
) -> pl.DataFrame:
    """Run the shipped query ``name`` on ``dataset`` and return its rows.

    ``params`` are the query's parameters as Python values (or their text, as
    ``--param`` gives them); ``hosts`` limits the dataset to those hosts'
    sources (so no query may call a parameter ``hosts``).  Example::

        queries.run("ds", "timeline", bucket_ms=1)
        queries.run("fleet", "fleet_summary", hosts=["web-7", "web-8"])
    """
    return run_query(dataset, get(name), hosts=hosts, **params)


def run_query(
    dataset: str | Path, query: Query, /, *, hosts: Sequence[str] | None = None, **params: Any
) -> pl.DataFrame:
    """Run ``query`` (shipped, or parsed from any .sql file) on ``dataset``, as :func:`run` does.

    Its parameters are checked by :func:`bind` and bound by DuckDB as
    their declared types, on a sandboxed connection.
    """
    values = bind(query, params)
    with _sandboxed(dataset, hosts) as (con, binding):
        for table in query.tables:
            if table in binding.missing:
                raise QueryError(
                    f"query {query.name!r} reads the {table} table, but {binding.root}"
                    f" {binding.missing[table]}"
                )
        return _execute(con, [query.sql], _typed(query, values), query.name)


def run_sql(dataset: str | Path, sql: str, *, hosts: Sequence[str] | None = None) -> pl.DataFrame:
    """Run ad-hoc SQL over the dataset's views and return the last statement's rows.

    Only statements that read are admitted (SELECT and what DuckDB parses as
    one: WITH, FROM, VALUES, DESCRIBE, SUMMARIZE, SHOW); any other is a
    QueryError before anything runs.  The connection is sandboxed: the SQL
    can read no file but the dataset's table files and write none
    (queries.sandbox).
    """
    import duckdb

    with _sandboxed(dataset, hosts) as (con, binding):
        try:
            statements = queries_only(con, sql)
        except Refused as exc:
            raise QueryError(f"SQL: {exc}") from None
        except duckdb.Error as exc:
            raise QueryError(f"SQL: {_first_line(exc)}") from None
        return _execute(con, statements, {}, None, binding)


def _execute(
    con: duckdb.DuckDBPyConnection,
    statements: Sequence[str | duckdb.Statement],
    values: dict[str, Any],
    name: str | None,
    binding: Binding | None = None,
) -> pl.DataFrame:
    import duckdb
    import polars as pl

    try:
        relation = None
        # Every statement is bound (its errors surface); they only read, so
        # the last one's rows are the answer.
        for statement in statements:
            relation = con.sql(statement, params=values or None)
        if relation is None:  # no statement at all (empty SQL, a lone comment)
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
