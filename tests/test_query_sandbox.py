"""Queries are safe on untrusted datasets: parameters are values, SQL is sandboxed.

Two threats, two layers each:

* a ``--param`` value is bound by DuckDB, never spliced into SQL text:
  hostile text comes back verbatim, selects nothing it does not equal, and
  a value that does not fit its declared type is refused before DuckDB;
* ``--sql`` (``queries.run_sql``) runs only statements that read, on a
  connection queries.sandbox has locked to the dataset's table files.  The
  CLI tests show what a user sees (exit 2, the exact message, no file
  anywhere); the ``locked`` tests run each attack on the locked connection
  without the statement filter, to show the DuckDB settings hold by
  themselves, and the one thing they do not stop (overwriting a dataset
  file) that the filter is for.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

import queries
from queries.catalog import PARAM_TYPES, parse
from queries.runner import _sandboxed, run_query
from queries.sandbox import QUERY_FORMS, lock, private_temp_dir
from tests.test_queries import R, S, build_golden

HOSTILE = [
    "'; DROP VIEW events; --",
    "' OR '1'='1",
    "'",
    "''",
    '"',
    '"; DROP VIEW events; --',
    "\\",
    "\\'; SELECT 1; --",
    "$source",
    "?",
    "%",
    "a\x00b",
    "\x00",
    "x" * 1_000_000,
    "'" * 100_000,
]

DENIED = "file system operations are disabled by configuration"
LOCKED = "the configuration has been locked"


def refused(sql: str, kind: str) -> str:
    """queries.sandbox's message for a statement that does not only read."""
    text = " ".join(sql.split())
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"refused {text!r}, a {kind} statement: SQL over a dataset may only read ({QUERY_FORMS})"


def tree(root: Path) -> dict[str, str]:
    """Every file below ``root`` and its sha256: to show that nothing was written."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A directory holding the golden dataset ``ds`` and, beside it, a Parquet file of its own."""
    home = tmp_path_factory.mktemp("sandbox")
    build_golden(home)
    duckdb.sql(f"COPY (SELECT 7 AS seven) TO '{home / 'outside.parquet'}'")
    return home


@pytest.fixture
def golden(home, monkeypatch) -> Iterator[Path]:
    # Relative paths in the SQL land in the working directory: make it one
    # whose every file the test checks.
    monkeypatch.chdir(home)
    before = tree(home)
    yield home / "ds"
    assert tree(home) == before, "a query wrote a file"


def table_file(dataset: Path) -> Path:
    """One of the dataset's own Parquet files (the events of the source STEADY)."""
    return next(p for p in sorted(dataset.glob("events/**/*.parquet")) if f"source={S}" in str(p))


# -- parameters are values ----------------------------------------------------------------

ECHO = """\
-- echo: each parameter back, with the type DuckDB bound it as.
--
-- Parameters:
--   text (VARCHAR, default '')  any text
--   flag (BOOLEAN, default false)  a flag
--   ratio (DOUBLE, default 1)  a number
--   count (BIGINT >= 0, default 0)  a count
--
-- Columns:
--   text         the text
--   text_type    its type
--   text_length  its length in characters
--   flag         the flag
--   flag_type    its type
--   ratio        the number
--   ratio_type   its type
--   count        the count
--   count_type   its type
--   events       rows of the events view, which the values could not drop
SELECT
  $text AS text, typeof($text) AS text_type, length($text) AS text_length,
  $flag AS flag, typeof($flag) AS flag_type,
  $ratio AS ratio, typeof($ratio) AS ratio_type,
  $count AS count, typeof($count) AS count_type,
  (SELECT count(*) FROM events) AS events
"""


@pytest.fixture(scope="module")
def echo(tmp_path_factory) -> queries.Query:
    """A query with one parameter of every type the runner supports, each returned as is."""
    path = tmp_path_factory.mktemp("echo") / "echo.sql"
    path.write_text(ECHO)
    query = parse(path, "test")
    assert sorted(p.type for p in query.params) == sorted(PARAM_TYPES)
    return query


@pytest.mark.parametrize("text", HOSTILE, ids=lambda t: repr(t[:24]) + f"x{len(t)}")
def test_hostile_text_comes_back_verbatim(golden, echo, text):
    row = run_query(golden, echo, text=text).row(0)
    assert row == (text, "VARCHAR", len(text), False, "BOOLEAN", 1.0, "DOUBLE", 0, "BIGINT", 34)


def test_every_type_is_bound_as_its_type(golden, echo):
    # As --param gives them (text) and as Python values: the same typed
    # values.  12 is a BIGINT, not the INTEGER DuckDB would make of a bare 12.
    want = ("", "VARCHAR", 0, True, "BOOLEAN", 0.25, "DOUBLE", 12, "BIGINT", 34)
    assert run_query(golden, echo, flag="yes", ratio="0.25", count="12").row(0) == want
    assert run_query(golden, echo, flag=True, ratio=0.25, count=12).row(0) == want
    big = run_query(golden, echo, count=str(2**63 - 1)).row(0)
    assert big[7:9] == (2**63 - 1, "BIGINT")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"flag": "true; DROP VIEW events; --"},
            "flag must be true or false, not 'true; DROP VIEW events; --'",
        ),
        ({"flag": "true\x00"}, "flag must be true or false, not 'true\\x00'"),
        ({"flag": "' OR '1'='1"}, "flag must be true or false, not \"' OR '1'='1\""),
        (
            {"ratio": "1); DROP VIEW events; --"},
            "ratio must be a number, not '1); DROP VIEW events; --'",
        ),
        ({"ratio": "1\x00"}, "ratio must be a number, not '1\\x00'"),
        ({"ratio": "1e999"}, "ratio must be a number, not '1e999'"),
        ({"ratio": "$ratio"}, "ratio must be a number, not '$ratio'"),
        ({"count": "1; DROP VIEW events"}, "count must be an integer, not '1; DROP VIEW events'"),
        ({"count": "1 OR 1=1"}, "count must be an integer, not '1 OR 1=1'"),
        ({"count": "0x10"}, "count must be an integer, not '0x10'"),
        ({"count": "1\x00"}, "count must be an integer, not '1\\x00'"),
        ({"count": "-1"}, "count must be >= 0, not -1"),
        ({"count": str(2**63)}, f"count must fit in a BIGINT (64 bits), not {2**63}"),
        ({"count": 10**30}, f"count must fit in a BIGINT (64 bits), not {10**30}"),
        ({"text": 1}, "text must be a string, not 1"),
    ],
)
def test_a_value_that_is_not_of_its_type_is_refused(golden, echo, params, message):
    with pytest.raises(queries.QueryError) as err:
        run_query(golden, echo, **params)
    assert str(err.value) == f"query 'echo': {message}"


def test_a_hostile_parameter_name_is_refused(golden):
    with pytest.raises(queries.QueryError) as err:
        queries.run(golden, "timeline", **{"bucket_ms = 1; DROP VIEW events; --": "1"})
    assert str(err.value) == (
        "query 'timeline' has no parameter 'bucket_ms = 1; DROP VIEW events; --'"
        " (its parameters: bucket_ms)"
    )


VARCHAR_PARAMS = [
    (q.name, p.name) for q in queries.catalog().values() for p in q.params if p.type == "VARCHAR"
]


@pytest.mark.parametrize(("name", "param"), VARCHAR_PARAMS)
@pytest.mark.parametrize("text", HOSTILE[:12], ids=repr)  # the long ones: above
def test_a_hostile_filter_selects_nothing(golden, name, param, text):
    # Every shipped VARCHAR parameter filters by equality: a value no
    # source, policy or baseline has selects no row, and the query runs.
    frame = queries.run(golden, name, **{param: text})
    assert (frame.height, frame.columns) == (0, [c.name for c in queries.get(name).columns])


def test_a_hostile_param_on_the_command_line(runner, golden):
    hostile = "source='; DROP VIEW events; --"
    result = runner("query", str(golden), "op_marks", "-p", hostile, "-f", "csv")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == ",".join(c.name for c in queries.get("op_marks").columns) + "\n"


def test_a_source_id_that_is_sql_selects_exactly_its_rows(home, tmp_path):
    # A dataset whose source id, partition directories and manifest entry are
    # SQL: the id is one more value (and the sandbox's file list, which has
    # it in every path, is bound too).
    # No backslash (DuckDB splits hive paths on it) and no glob character
    # (DuckDB expands a listed file name that has one).
    evil = 'x\'; DROP VIEW events; -- "q"'
    dataset = tmp_path / "ds"
    shutil.copytree(home / "ds", dataset)
    for part in sorted(dataset.rglob(f"source={S}"), reverse=True):
        part.rename(part.with_name(f"source={evil}"))
    manifest = dataset / "manifest.json"
    manifest.write_text(manifest.read_text().replace(S, json.dumps(evil)[1:-1]))

    def renamed(rows):
        return [tuple(evil if v == S else v for v in row) for row in rows]

    for name, param in VARCHAR_PARAMS:
        if param != "source":
            continue
        want = renamed(queries.run(home / "ds", name, source=S).rows())
        assert queries.run(dataset, name, source=evil).rows() == want, name
    counts = queries.run(home / "ds", "event_counts").rows()
    assert sorted(queries.run(dataset, "event_counts").rows()) == sorted(renamed(counts))
    sources = queries.run_sql(dataset, "SELECT source FROM sources ORDER BY source").rows()
    assert sources == [(R,), (evil,)]


# -- ad-hoc SQL: what the user sees ---------------------------------------------------------


def sql_error(runner, dataset: Path, sql: str) -> str:
    """The CLI's stderr for ``--sql SQL``, after checking it failed with exit 2 and no output."""
    result = runner("query", str(dataset), "--sql", sql)
    assert (result.exit_code, result.stdout) == (2, ""), result.stdout
    return result.stderr


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("COPY (SELECT 1) TO '/tmp/x'", "COPY"),
        ("COPY (SELECT 1) TO 'x.csv'", "COPY"),
        ("COPY (SELECT 1) TO 'ds/x.parquet'", "COPY"),
        ("COPY events TO 'ds/events.csv'", "COPY"),
        ("COPY (SELECT 1) TO 'ds/manifest.json' (FORMAT csv)", "COPY"),
        ("EXPORT DATABASE 'export'", "EXPORT"),
        ("ATTACH 'x.db'", "ATTACH"),
        ("ATTACH 'ds/x.db'", "ATTACH"),
        ("ATTACH ':memory:' AS m", "ATTACH"),
        ("INSTALL httpfs", "LOAD"),
        ("LOAD httpfs", "LOAD"),
        ("SET enable_external_access = true", "SET"),
        ("SET lock_configuration = false", "SET"),
        ("RESET lock_configuration", "SET"),
        ("SET allowed_directories = ['/']", "SET"),
        ("PRAGMA enable_profiling", "PRAGMA"),
        ("CALL enable_logging(storage = 'file', storage_path = 'log')", "CALL"),
        ("CREATE TABLE t AS SELECT * FROM events", "CREATE"),
        ("DROP VIEW events", "DROP"),
        ("EXPLAIN ANALYZE COPY (SELECT 1) TO 'x.csv'", "EXPLAIN"),
    ],
)
def test_sql_that_does_more_than_read_is_refused(runner, golden, sql, kind):
    assert sql_error(runner, golden, sql) == f"error: SQL: {refused(sql, kind)}\n"


def test_one_refused_statement_refuses_all(runner, golden):
    # Nothing runs, the SELECT before it included; the message quotes the COPY.
    sql = "SELECT 1; COPY (SELECT 1) TO 'x.csv'"
    copy = "COPY (SELECT 1) TO 'x.csv'"
    assert sql_error(runner, golden, sql) == f"error: SQL: {refused(copy, 'COPY')}\n"


def test_a_long_statement_is_shortened_in_the_message(runner, golden):
    sql = "COPY (SELECT * FROM events WHERE event = 'kvm_exit') TO 'exits.parquet' (FORMAT parquet)"
    assert sql_error(runner, golden, sql) == (
        "error: SQL: refused \"COPY (SELECT * FROM events WHERE event = 'kvm_exit') TO '...\","
        f" a COPY statement: SQL over a dataset may only read ({QUERY_FORMS})\n"
    )


@pytest.mark.parametrize(
    ("sql", "path"),
    [
        ("SELECT * FROM read_csv('/etc/passwd')", "/etc/passwd"),
        ("SELECT * FROM read_text('/etc/hostname')", "/etc/hostname"),
        ("SELECT * FROM read_parquet('outside.parquet')", "outside.parquet"),
        ("SELECT * FROM read_parquet('{home}/outside.parquet')", "{home}/outside.parquet"),
        ("SELECT * FROM read_parquet('ds/../outside.parquet')", "ds/../outside.parquet"),
        ("SELECT * FROM read_text('ds/manifest.json')", "ds/manifest.json"),
        ("SELECT * FROM glob('ds/*')", "ds/*"),
        ("SELECT * FROM sniff_csv('/etc/passwd')", "/etc/passwd"),
    ],
)
def test_sql_reads_no_file_but_the_datasets_tables(runner, golden, sql, path):
    home = golden.parent
    sql, path = sql.format(home=home), path.format(home=home)
    assert sql_error(runner, golden, sql) == (
        f'error: SQL: Permission Error: Cannot access file "{path}" - {DENIED}\n'
    )


def test_the_views_and_the_datasets_own_files_stay_readable(runner, golden):
    part = table_file(golden)
    sql = (
        "SELECT (SELECT count(*) FROM events) AS events,"
        " (SELECT count(*) FROM fpu_ops) AS ops,"
        f" (SELECT count(*) FROM read_parquet('{part}')) AS steady_events,"
        f" (SELECT count(*) FROM read_parquet('ds/{part.relative_to(golden)}')) AS relative"
    )
    result = runner("query", str(golden), "--sql", sql, "-f", "csv")
    assert (result.exit_code, result.stderr) == (0, "")
    # 22 + 12 events; 78 operations: 24 + 12 + 12 for STEADY, 10 per policy for ROUGH.
    assert result.stdout == "events,ops,steady_events,relative\n34,78,22,22\n"


def test_sql_runs_locked_spilling_into_a_private_directory_that_goes_away(golden):
    frame = queries.run_sql(
        golden,
        "SELECT current_setting('enable_external_access') AS external,"
        " current_setting('lock_configuration') AS locked,"
        " current_setting('temp_directory') AS temp",
    )
    external, locked, temp = frame.row(0)
    assert (external, locked) == (False, True)
    temp_dir = Path(temp)
    assert temp_dir.parent == Path(tempfile.gettempdir())
    assert temp_dir.name.startswith("fpureplay-duckdb-")
    assert not temp_dir.exists()


def test_named_queries_run_locked_too(golden, monkeypatch):
    from queries import runner

    seen = []
    execute = runner._execute

    def spy(con, *args, **kwargs):
        seen.append(con.execute("SELECT current_setting('lock_configuration')").fetchall()[0][0])
        return execute(con, *args, **kwargs)

    monkeypatch.setattr(runner, "_execute", spy)
    assert queries.run(golden, "policy_summary").height == 6  # 2 sources x 3 policies
    assert seen == [True]


def test_a_table_file_linking_out_of_the_dataset_is_not_read(home, tmp_path):
    dataset = tmp_path / "ds"
    shutil.copytree(home / "ds", dataset)
    part = table_file(dataset)
    part.unlink()
    part.symlink_to(home / "outside.parquet")
    outside = (home / "outside.parquet").resolve()
    message = f"{part} resolves to {outside}, outside the dataset: not read"
    for run in (
        lambda: queries.run_sql(dataset, "SELECT 1"),
        lambda: queries.run(dataset, "event_counts"),
    ):
        with pytest.raises(queries.QueryError) as err:
            run()
        assert str(err.value) == message


def test_sql_in_a_hostile_manifest_runs_locked(home, tmp_path):
    # queries.tables builds the sources view from the manifest's keys; a key
    # that closes the quoted name runs its own statements while the views
    # are registered.  The connection is locked by then, so its COPY fails.
    dataset = tmp_path / "ds"
    shutil.copytree(home / "ds", dataset)
    target = tmp_path / "pwned.csv"
    manifest = json.loads((dataset / "manifest.json").read_text())
    key = f"path\" AS p FROM _manifest_sources; COPY (SELECT 1) TO '{target}'; SELECT \"source"
    manifest["sources"][0][key] = 1
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    try:
        got = queries.run_sql(dataset, "SELECT count(*) FROM events").rows()
    except queries.QueryError as exc:
        got = str(exc)
    # Either outcome is safe: the key spliced in and stopped by the lock, or
    # (once queries.tables quotes names) the key is just a column name.
    assert got in (
        f"{dataset}: cannot read its Parquet files: Permission Error: Cannot access file"
        f' "{target}" - {DENIED}',
        [(34,)],
    )
    assert not target.exists()


# -- the locked connection by itself, without the statement filter ---------------------------


@pytest.fixture
def locked(golden) -> Iterator[duckdb.DuckDBPyConnection]:
    """What run_sql runs on: the locked connection with the views, minus queries_only."""
    with _sandboxed(golden) as (con, _binding):
        yield con


def duck_error(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    with pytest.raises(duckdb.Error) as err:
        con.execute(sql)
    return str(err.value).splitlines()[0]


@pytest.mark.parametrize(
    ("sql", "path"),
    [
        ("COPY (SELECT 1) TO '{home}/x.csv'", "{home}/x.csv"),
        ("COPY (SELECT 1) TO 'x.csv'", "x.csv"),
        ("COPY (SELECT 1) TO 'ds/events/x.parquet'", "ds/events/x.parquet"),
        ("COPY (SELECT 1) TO 'ds/manifest.json' (FORMAT csv)", "ds/manifest.json"),
        ("SELECT * FROM read_csv('/etc/passwd')", "/etc/passwd"),
        ("SELECT * FROM read_parquet('outside.parquet')", "outside.parquet"),
        ("ATTACH 'x.db'", "{home}/x.db"),
        ("ATTACH 'ds/x.db'", "{home}/ds/x.db"),
        ("IMPORT DATABASE 'ds'", "ds/schema.sql"),
    ],
)
def test_locked_no_file_outside_the_tables(locked, golden, sql, path):
    home = golden.parent
    assert duck_error(locked, sql.format(home=home)) == (
        f'Permission Error: Cannot access file "{path.format(home=home)}" - {DENIED}'
    )


@pytest.mark.parametrize(
    "sql",
    [
        "INSTALL httpfs",
        "EXPORT DATABASE 'export'",
        "CREATE PERSISTENT SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
    ],
)
def test_locked_no_directory(locked, sql):
    message = duck_error(locked, sql)
    assert re.fullmatch(f'Permission Error: Cannot access directory "[^"]+" - {DENIED}', message)


def test_locked_no_extension(locked):
    assert duck_error(locked, "LOAD httpfs") == (
        "Permission Error: Loading external extensions is disabled through configuration"
    )


@pytest.mark.parametrize(
    ("sql", "option"),
    [
        ("SET enable_external_access = true", "enable_external_access"),
        ("SET lock_configuration = false", "lock_configuration"),
        ("RESET lock_configuration", "lock_configuration"),
        ("SET allowed_paths = ['/etc/passwd']", "allowed_paths"),
        ("SET allowed_directories = ['/']", "allowed_directories"),
        ("SET temp_directory = '.'", "temp_directory"),
        ("SET disabled_filesystems = ''", "disabled_filesystems"),
        ("SET memory_limit = '1TB'", "memory_limit"),
        ("PRAGMA enable_profiling", "enable_profiling"),
        ("SET profiling_output = 'profile.json'", "profiling_output"),
        ("CALL enable_logging(storage = 'file', storage_path = 'log')", "enable_logging"),
    ],
)
def test_locked_settings_stay(locked, sql, option):
    assert duck_error(locked, sql) == (
        f'Invalid Input Error: Cannot change configuration option "{option}" - {LOCKED}'
    )


def test_locked_no_python_variables(locked):
    # DuckDB's Python client reads a local DataFrame or Arrow table named in
    # the SQL (a replacement scan) unless external access is off.
    secret = duckdb.sql("SELECT 42 AS answer").arrow()  # noqa: F841 (what the SQL names)
    assert duck_error(locked, "SELECT * FROM secret") == (
        "Catalog Error: Table with name secret does not exist!"
    )


def test_locked_views_still_read_the_dataset(locked):
    assert locked.execute("SELECT count(*) FROM events").fetchone() == (34,)
    assert locked.execute("SELECT count(*), count(DISTINCT policy) FROM fpu_ops").fetchone() == (
        78,
        3,
    )


def test_locked_would_overwrite_a_table_file_which_is_why_sql_may_only_read(home, tmp_path):
    # DuckDB checks a path, not what is done with it: a file the views must
    # read can be written.  run_sql refuses every COPY before DuckDB sees it
    # (test_sql_that_does_more_than_read_is_refused); should DuckDB ever
    # tell the two apart, this test fails and the filter could relax.
    dataset = tmp_path / "ds"
    shutil.copytree(home / "ds", dataset)
    part = table_file(dataset)
    with _sandboxed(dataset) as (con, _binding):
        # Without USE_TMP_FILE false DuckDB writes tmp_<name> first, which is
        # not allowed; with it, the allowed file itself is written.
        con.execute(f"COPY (SELECT 1 AS replaced) TO '{part}' (FORMAT parquet, USE_TMP_FILE false)")
        assert con.execute(f"SELECT replaced FROM read_parquet('{part}')").fetchall() == [(1,)]


def test_spilled_data_goes_to_the_private_directory(golden):
    # A memory limit set before the lock makes a temporary table spill.
    with private_temp_dir() as spill:
        con = duckdb.connect()
        try:
            con.execute("SET memory_limit = '32MB'")
            con.execute("SET threads = 1")
            lock(con, golden, spill)
            con.execute(
                "CREATE TEMP TABLE big AS"
                " SELECT i, repeat('x', 100) || i::VARCHAR AS s FROM range(600000) t(i)"
            )
            files = [
                Path(p)
                for (p,) in con.execute("SELECT path FROM duckdb_temporary_files()").fetchall()
            ]
            assert files and {p.parent for p in files} == {spill}
            assert spill.stat().st_mode & 0o777 == 0o700
        finally:
            con.close()
    assert not spill.exists()
