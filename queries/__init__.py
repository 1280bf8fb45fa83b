"""Named DuckDB SQL over an fpureplay dataset, one question per ``.sql`` file.

``queries/<area>/<name>.sql`` holds one query each, with a header comment
(what it answers, its parameters, one line per output column) that the
catalog reads.  Shipped SQL names the views ``events``, ``rejects``,
``runs``, ``fpu_ops`` and ``sources`` only; this package binds them to a
dataset's Parquet and manifest.

Example::

    import queries

    queries.run("ds", "policy_summary")            # -> polars.DataFrame
    queries.run("ds", "timeline", bucket_ms=0.5)
    con = queries.connect("ds")                    # DuckDB, views registered
    queries.manifest("ds")                         # manifest.json as a dict
    con.sql("SELECT policy, count(*) FROM fpu_ops GROUP BY policy").pl()

Importing this package loads neither DuckDB nor polars.
"""

from __future__ import annotations

from queries.catalog import Column, Param, Query, catalog
from queries.runner import QueryError, bind, connect, get, manifest, run, run_sql

__all__ = [
    "Column",
    "Param",
    "Query",
    "QueryError",
    "bind",
    "catalog",
    "connect",
    "get",
    "manifest",
    "run",
    "run_sql",
]
