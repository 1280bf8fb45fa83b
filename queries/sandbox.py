"""Lock a DuckDB connection down to one dataset: SQL run on it touches no other file.

Datasets are shared, and so is the SQL run over them: a named query's
``--param`` values and all of ``--sql`` come from whoever runs the command,
the manifest and Parquet files from whoever wrote the dataset.  On a
connection that :func:`lock` has locked (``queries.run`` and
``queries.run_sql`` lock theirs before any view is registered):

* **Reads** reach only the dataset's own table files, the Parquet the
  views read (``allowed_paths``, one entry per file).  Any other path
  (``/etc/passwd``, another Parquet file, the dataset's ``manifest.json``,
  a glob, ``ATTACH``, ``IMPORT DATABASE``) fails with DuckDB's
  ``Permission Error: Cannot access file ... - file system operations are
  disabled by configuration`` (``enable_external_access = false``).  A table
  file that is a symlink resolving outside the dataset is refused before
  anything runs (:class:`Refused`).
* **Writes** create no file: ``COPY ... TO``, ``EXPORT DATABASE``,
  ``ATTACH`` of a new file, ``INSTALL``, persistent secrets fail the same
  way, and neither Python variables (replacement scans) nor extensions can
  be reached.  DuckDB does not tell reading an allowed path from writing
  it, so ``COPY ... TO`` one of the dataset's own files (with
  ``USE_TMP_FILE false``) would replace it: that is why :func:`queries_only`
  must vet SQL nobody reviewed (it admits SELECT and the forms DuckDB
  parses as one, nothing else).
* **Settings** are frozen (``lock_configuration = true``): no ``SET``,
  ``RESET``, ``PRAGMA`` or ``CALL enable_logging`` can undo the above, turn
  on profiling or log output, or raise a resource limit.
* **Spilling** goes to ``temp_directory``, a fresh private directory
  (mode 0700, from :func:`private_temp_dir`) outside the dataset, removed
  with everything in it once the connection is closed; DuckDB's default
  (``.tmp`` under the working directory) could be inside the dataset.

Checked on DuckDB 2.0.1 (tests/test_query_sandbox.py); a DuckDB without
these settings fails to lock, and then nothing runs.  Not covered: CPU,
memory, run time and spill size are DuckDB's defaults (locked, so they
cannot be raised, but not lowered either); a file swapped for a symlink
between :func:`readable_files` and the read it allows, or added to the
dataset in between (not readable: the query fails); ``queries.connect``
(a connection for the caller's own code) is not locked.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from queries.tables import specs

if TYPE_CHECKING:
    import duckdb

#: What queries_only admits, as DuckDB spells the statements it parses as a SELECT.
QUERY_FORMS = "SELECT, WITH, FROM, VALUES, TABLE, DESCRIBE, SUMMARIZE, SHOW"


class Refused(Exception):
    """SQL or a dataset the sandbox will not run; the message says why."""


def readable_files(root: Path) -> list[Path]:
    """The files a locked connection may read: every table file the views can list.

    The same globs as :func:`queries.tables.register` (one per table spec),
    so the views read exactly what is allowed; a file whose real path is
    outside ``root`` (a symlink out of the dataset) is :class:`Refused`.
    """
    real_root = root.resolve()
    files: list[Path] = []
    for spec in specs().values():
        for path in sorted(root.glob(spec.pattern)):
            real = path.resolve()
            if not real.is_relative_to(real_root):
                raise Refused(f"{path} resolves to {real}, outside the dataset: not read")
            files.append(path)
    return files


def lock(con: duckdb.DuckDBPyConnection, root: Path, temp_dir: Path) -> None:
    """Confine ``con`` to reading ``root``'s table files, spilling to ``temp_dir``; for good.

    Call it before running anything untrusted, registering views included
    (their SQL is built from names in the dataset's files).  Settings the
    caller wants (progress bar, memory limit) must be made before: after
    this, none can change.
    """
    allowed = [str(p.absolute()) for p in readable_files(root)]
    # Order matters: DuckDB refuses to change allowed_paths once external
    # access is off, and lock_configuration must come last.
    con.execute("SET temp_directory = $dir", {"dir": str(temp_dir)})
    # Bound, not spliced: a dataset path may contain quotes.
    con.execute("SET allowed_paths = $paths", {"paths": allowed})
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


@contextmanager
def private_temp_dir() -> Iterator[Path]:
    """A new directory only this user can enter, removed with its contents afterwards."""
    path = Path(tempfile.mkdtemp(prefix="fpureplay-duckdb-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def queries_only(con: duckdb.DuckDBPyConnection, sql: str) -> list[duckdb.Statement]:
    """``sql``'s statements, parsed by DuckDB, if every one of them only reads.

    Raises :class:`Refused` naming the first that is not a query (COPY,
    ATTACH, INSTALL, SET, CREATE, ...), and ``duckdb.ParserException`` for
    SQL that does not parse.  Run the statements returned, not ``sql``
    again, so what runs is exactly what was checked.
    """
    import duckdb

    statements = con.extract_statements(sql)
    for statement in statements:
        if statement.type != duckdb.StatementType.SELECT:
            text = " ".join(statement.query.split()).rstrip(";")
            if len(text) > 60:
                text = text[:57] + "..."
            raise Refused(
                f"refused {text!r}, a {statement.type.name} statement: SQL over a dataset may"
                f" only read ({QUERY_FORMS})"
            )
    return statements
