"""The query files themselves: headers, parameters, docs, and portability to Spark SQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, ParseError, UnsupportedError

import queries
from queries.catalog import PARAM_REF, VIEWS, CatalogError, Param, Query, parse
from queries.reference import replace_in
from queries.runner import bind

ROOT = Path(__file__).resolve().parents[1]
SQL_FILES = sorted((ROOT / "queries").glob("*/*.sql"))


def test_the_issue_s_queries_are_all_shipped():
    assert set(queries.catalog()) == {
        "policy_summary", "vcpu_summary", "savings", "run_histogram", "event_counts",
        "redundant_by_trigger", "timeline", "preemption_cost", "fpu_reload_rate",
        "event_rates", "data_quality",
        # the dashboard's (issue 6)
        "ops_breakdown", "ops_per_run", "thread_states", "op_marks", "cpu_op_buckets",
        "validation",
        "fpu_state_access",  # the migration audit (issue 10)
        "fleet_summary",  # fleet scale (issue 8)
    }  # fmt: skip
    assert len(SQL_FILES) == len(queries.catalog())


@pytest.mark.parametrize("path", SQL_FILES, ids=lambda p: p.stem)
def test_header_documents_the_query(path):
    query = parse(path)
    assert query.description.endswith(".") and query.description[0] != " "
    assert query.notes, "say what the query answers and how to read it"
    assert query.columns, "document every output column"
    for column in query.columns:
        assert len(column.description) > 8, column
    # The columns the SQL returns are the documented ones, in order: checked by
    # running each query in tests/test_queries.py::test_output_types_are_plain.


@pytest.mark.parametrize("path", SQL_FILES, ids=lambda p: p.stem)
def test_parameters_are_bound_not_pasted(path):
    query = parse(path)
    used = set(PARAM_REF.findall(query.sql))
    assert used == {p.name for p in query.params}
    assert "{" not in query.sql, "no format placeholders: values are bound by DuckDB"


@pytest.mark.parametrize("path", SQL_FILES, ids=lambda p: p.stem)
def test_tables_read_agrees_with_the_parser(path):
    # Query.tables (a regex, so that --list needs no SQL parser) against sqlglot.
    query = parse(path)
    tree = sqlglot.parse_one(query.sql, read="duckdb")
    ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
    read = {t.name for t in tree.find_all(exp.Table)} - ctes
    assert set(query.tables) == read


# -- portability ----------------------------------------------------------------

#: Types every engine has; DuckDB-only ones (HUGEINT, UBIGINT, LIST, STRUCT) would not map.
PORTABLE_TYPES = {
    exp.DataType.Type.BIGINT,
    exp.DataType.Type.INT,
    exp.DataType.Type.DOUBLE,
    exp.DataType.Type.VARCHAR,
    exp.DataType.Type.TEXT,  # DuckDB's VARCHAR as sqlglot reads it
    exp.DataType.Type.BOOLEAN,
}


def spark_problems(sql: str) -> list[str]:
    """Why ``sql`` (DuckDB) would not run as Spark SQL; empty when it would.

    sqlglot maps what it can and passes the rest through, so besides asking it
    to raise on unsupported constructs this rejects what it would pass through
    silently: functions it does not know, table functions and file reads,
    `SELECT *`, ASOF joins, PIVOT, and types Spark lacks.
    """
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except ParseError as exc:
        return [f"DuckDB SQL does not parse: {exc}"]
    problems = []
    if not isinstance(tree, exp.Query):
        problems.append(f"not a query: {type(tree).__name__}")
    ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
    for node in tree.walk():
        if isinstance(node, exp.Anonymous):
            problems.append(f"function unknown to sqlglot: {node.name}")
        elif isinstance(node, exp.Table):
            if not isinstance(node.this, exp.Identifier):
                problems.append(f"table function: {node.this.sql('duckdb')}")
            elif node.name not in VIEWS and node.name not in ctes:
                problems.append(f"not a view: {node.name}")
        elif isinstance(node, exp.Star) and isinstance(node.parent, exp.Select):
            problems.append("SELECT *")
        elif isinstance(node, exp.Join) and (node.args.get("method") or "").upper() == "ASOF":
            problems.append("ASOF JOIN")
        elif isinstance(node, exp.Pivot):
            problems.append("PIVOT")
        elif isinstance(node, exp.DataType) and node.this not in PORTABLE_TYPES:
            problems.append(f"type {node.this.value}")
        elif isinstance(node, exp.Group) and node.args.get("all"):
            problems.append("GROUP BY ALL")
    try:
        [spark] = sqlglot.transpile(
            sql, read="duckdb", write="spark", unsupported_level=ErrorLevel.RAISE
        )
        sqlglot.parse_one(spark, read="spark")
    except (UnsupportedError, ParseError) as exc:
        problems.append(f"no Spark SQL: {exc}")
    return problems


@pytest.mark.parametrize("path", SQL_FILES, ids=lambda p: p.stem)
def test_transpiles_to_spark_sql(path):
    assert spark_problems(parse(path).sql) == []


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        ("SELECT a FROM read_parquet('x.parquet')", "table function: READ_PARQUET('x.parquet')"),
        ("SELECT a FROM range(10)", "table function: RANGE(0, 10)"),
        ("SELECT a FROM 'x.parquet'", "not a view: x.parquet"),
        ("SELECT a FROM runs_2024", "not a view: runs_2024"),
        ("SELECT epoch_ns(ts_ns) FROM events", "function unknown to sqlglot: epoch_ns"),
        ("SELECT * FROM events", "SELECT *"),
        ("SELECT a FROM runs ASOF JOIN events ON runs.a >= events.a", "ASOF JOIN"),
        ("SELECT CAST(a AS HUGEINT) FROM runs", "type INT128"),
        ("SELECT a FROM runs GROUP BY ALL", "GROUP BY ALL"),
        ("PIVOT runs ON pid USING sum(blocks)", "not a query: Pivot"),
        ("SELEC a FROM runs", "DuckDB SQL does not parse"),
    ],
)
def test_the_portability_check_catches(sql, problem):
    assert any(p.startswith(problem) for p in spark_problems(sql)), spark_problems(sql)


# -- header grammar ---------------------------------------------------------------

GOOD = """-- q: What it answers.
--
-- Notes.
--
-- Parameters:
--   n (BIGINT >= 1, default 3)  how many
--
-- Columns:
--   a  the first column
--      continued here

SELECT $n AS a
"""


def write(tmp_path: Path, text: str, name: str = "q") -> Path:
    path = tmp_path / "area" / f"{name}.sql"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def test_a_good_header(tmp_path):
    q = parse(write(tmp_path, GOOD))
    assert (q.name, q.area, q.description, q.notes) == ("q", "area", "What it answers.", "Notes.")
    assert q.params == (Param("n", "BIGINT", "how many", 3, False, ">=", 1.0),)
    assert [(c.name, c.description) for c in q.columns] == [
        ("a", "the first column continued here")
    ]
    assert q.sql == "SELECT $n AS a\n"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("-- q: What it answers.", "-- What it answers.", "the first line must be"),
        ("-- q: What", "-- other: What", "header names 'other', file is 'q'"),
        ("-- Columns:\n", "", "the header has no '-- Columns:' section"),
        ("--   a  the first column\n--      continued here\n", "", "documents no column"),
        (
            "--   a  the first column\n--      continued here",
            "--   a",
            "column 'a' has no description",
        ),
        ("(BIGINT >= 1, default 3)", "(INT, default 3)", "parameter 'n' must read"),
        ("(BIGINT >= 1, default 3)", "(BIGINT >= 1, default 0)", "default of 'n': n must be >= 1"),
        (
            "(BIGINT >= 1, default 3)",
            "(VARCHAR, default x)",
            "VARCHAR default of 'n' must be quoted",
        ),
        ("-- Parameters:\n", "-- Parameters: none\n", "cannot read header line"),
        ("-- Columns:", "-- Parameters:", "two 'parameters' sections"),
    ],
)
def test_a_bad_header_is_refused(tmp_path, old, new, message):
    assert old in GOOD
    with pytest.raises(CatalogError, match="^" + str(tmp_path).replace("\\", "\\\\")) as err:
        parse(write(tmp_path, GOOD.replace(old, new)))
    assert message in str(err.value)


# -- parameter values -------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "value", "expected"),
    [
        ("BIGINT", "12", 12),
        ("BIGINT", "-3", -3),
        ("BIGINT", 7, 7),
        ("BIGINT", 7.0, 7),
        ("DOUBLE", "0.25", 0.25),
        ("DOUBLE", 2, 2.0),
        ("BOOLEAN", "yes", True),
        ("BOOLEAN", "0", False),
        ("BOOLEAN", "False", False),
        ("BOOLEAN", True, True),
        ("VARCHAR", "legacy", "legacy"),
    ],
)
def test_parameter_values_are_typed(type_, value, expected):
    got = Param("p", type_, "d").coerce(value)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        ("BIGINT", "1.5"),
        ("BIGINT", 1.5),
        ("BIGINT", "0x10"),
        ("BIGINT", True),
        ("DOUBLE", "inf"),
        ("DOUBLE", "ten"),
        ("DOUBLE", None),
        ("BOOLEAN", "maybe"),
        ("BOOLEAN", 1),
        ("VARCHAR", 3),
    ],
)
def test_ill_typed_values_are_refused(type_, value):
    with pytest.raises(ValueError, match=r"^p must be "):
        Param("p", type_, "d").coerce(value)


def test_bind_fills_defaults_and_refuses_what_the_query_lacks():
    query = Query(
        "q", "a", Path("q.sql"), "d.", "n", (Param("need", "BIGINT", "d"),
        Param("opt", "DOUBLE", "d", 1.5, False)), (), "SELECT $need, $opt"
    )  # fmt: skip
    assert bind(query, {"need": "4"}) == {"need": 4, "opt": 1.5}
    with pytest.raises(queries.QueryError, match=r"^query 'q' needs the parameter 'need'$"):
        bind(query, {})
    with pytest.raises(queries.QueryError, match="has no parameter 'other'"):
        bind(query, {"need": 1, "other": 2})


def test_python_api_takes_typed_values(tmp_path):
    from tests.test_queries import build_golden

    dataset = build_golden(tmp_path)
    by_text = queries.run(dataset, "timeline", bucket_ms="0.25")
    assert by_text.equals(queries.run(dataset, "timeline", bucket_ms=0.25))
    with pytest.raises(queries.QueryError, match="bucket_ms must be > 0, not -1"):
        queries.run(dataset, "timeline", bucket_ms=-1)


# -- docs -------------------------------------------------------------------------


def test_docs_reference_is_current():
    doc = (ROOT / "docs" / "queries.md").read_text()
    assert replace_in(doc) == doc, (
        "docs/queries.md is stale: run `python -m queries.reference --write docs/queries.md`"
    )


def test_docs_name_every_query_and_column():
    doc = (ROOT / "docs" / "queries.md").read_text()
    for query in queries.catalog().values():
        section = doc.split(f"### `{query.name}`", 1)[1].split("\n### ", 1)[0]
        for column in query.columns:
            assert f"| `{column.name}` | {column.description} |" in section
