"""The views queries read: column contracts, missing tables, the sources view.

These tests write small hand-made `runs` and `fpu_ops` Parquet files next to
a really ingested `events` partition, to reach the cases a replay never
produces (extra, missing or retyped columns; a table that is not there).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

import queries
from ingest import ingest_traces
from ingest.dataset import MANIFEST, partition_dir, write_frame
from tests.test_queries import STEADY, S

RUNS = pl.DataFrame(
    {
        "pid": pl.Series([4321, 4322], dtype=pl.Int32),
        "run_idx": pl.Series([0, 0], dtype=pl.Int32),
        "start_ns": [5123000100000, 5123000200000],
        "end_ns": [5123000812000, 5123000261000],
        "exit_reason": ["KVM_EXIT_IO", "KVM_EXIT_IO"],
        "preemptions": pl.Series([2, 0], dtype=pl.Int32),
        "blocks": pl.Series([1, 0], dtype=pl.Int32),
        "migrations": pl.Series([0, 0], dtype=pl.Int32),
        "complete": [True, False],
    }
)

OPS = pl.DataFrame(
    {
        "pid": pl.Series([4321, 4321, 4322], dtype=pl.Int32),
        "cpu": pl.Series([0, 0, 1], dtype=pl.Int32),
        "ts_ns": [5123000100000, 5123000811000, 5123000260000],
        "op": ["save", "restore", "restore"],
        "context": ["user", "user", "user"],
        "trigger": ["ioctl_entry", "ioctl_exit", "ioctl_exit"],
        "redundant": [False, True, False],
        "reason": [None, "made up", None],
        "bytes": pl.Series([576, 576, 576], dtype=pl.Int32),
        "cost_ns": [40.0, 40.0, 40.0],
        "run_idx": pl.Series([0, 0, 0], dtype=pl.Int32),
        "line_no": [3, 23, 10],
    }
)


def ingested(tmp_path: Path) -> Path:
    (tmp_path / "steady.txt").write_bytes(STEADY)
    dataset = tmp_path / "ds"
    ingest_traces([str(tmp_path / "steady.txt")], dataset)
    return dataset


def write_tables(dataset: Path, runs: pl.DataFrame = RUNS, ops: pl.DataFrame = OPS) -> None:
    write_frame(partition_dir(dataset, "runs", S, host="unknown") / "part-0.parquet", runs)
    legacy = partition_dir(dataset, "fpu_ops", S, host="unknown", policy="legacy")
    write_frame(legacy / "part-0.parquet", ops)


def test_hand_made_tables_answer_a_query(tmp_path):
    dataset = ingested(tmp_path)
    write_tables(dataset)
    # legacy: 3 ops, 1 save (user), 2 restores (user), 1 redundant; 3 * 576 bytes,
    # 3 * 40 ns; run (4322, 0) is incomplete and holds one op.
    assert queries.run(dataset, "policy_summary").rows() == [
        (S, "legacy", 3, 1, 2, 1, 2, 0, 0, 1, 100 * 1 / 3, 3 * 576, 0.12, 0.04, 1),
    ]


def test_columns_beyond_the_declared_ones_pass_through(tmp_path):
    dataset = ingested(tmp_path)
    write_tables(dataset, runs=RUNS.with_columns(note=pl.lit("extra")))
    con = queries.connect(dataset)
    columns = [row[0] for row in con.execute("DESCRIBE runs").fetchall()]
    # The partition keys first (source, host), the declared columns in order, then extras.
    assert columns[:11] == [
        "source", "host", "pid", "run_idx", "start_ns", "end_ns", "exit_reason", "preemptions",
        "blocks", "migrations", "complete",
    ]  # fmt: skip
    assert columns[-1] == "note"
    assert con.execute("SELECT DISTINCT note FROM runs").fetchall() == [("extra",)]
    assert queries.run(dataset, "vcpu_summary").height == 2


def test_missing_optional_columns_read_as_null(tmp_path):
    dataset = ingested(tmp_path)
    write_tables(dataset, ops=OPS.drop("run_idx", "line_no"))
    con = queries.connect(dataset)
    assert con.execute("SELECT count(*), count(run_idx), count(site) FROM fpu_ops").fetchall() == [
        (3, 0, 0)
    ]
    # Without run_idx no op can be tied to a run: none counts as from an incomplete one.
    [row] = queries.run(dataset, "policy_summary").rows()
    assert row[-1] == 0


def test_a_missing_required_column_hides_the_table_with_the_reason(tmp_path):
    dataset = ingested(tmp_path)
    write_tables(dataset, runs=RUNS.drop("migrations", "complete"))
    with pytest.raises(queries.QueryError) as err:
        queries.run(dataset, "run_histogram")
    assert str(err.value) == (
        f"query 'run_histogram' reads the runs table, but {dataset} has a runs table without"
        f" the column(s) migrations, complete (written by an older fpureplay? run"
        f" `fpureplay replay {dataset}` again)"
    )


def test_file_types_are_cast_to_the_declared_ones(tmp_path):
    dataset = ingested(tmp_path)
    write_tables(dataset, runs=RUNS.with_columns(pl.col("pid", "preemptions").cast(pl.Int64)))
    con = queries.connect(dataset)
    types = dict((row[0], row[1]) for row in con.execute("DESCRIBE runs").fetchall())
    assert (types["pid"], types["preemptions"]) == ("INTEGER", "INTEGER")


def test_a_query_on_a_dataset_without_replay_names_the_table_and_the_fix(tmp_path):
    dataset = ingested(tmp_path)
    with pytest.raises(queries.QueryError) as err:
        queries.run(dataset, "policy_summary")
    assert str(err.value) == (
        f"query 'policy_summary' reads the runs table, but {dataset} has no runs table yet"
        f" (`fpureplay replay {dataset}` writes it)"
    )
    # Queries that only need ingest's tables run.
    assert queries.run(dataset, "event_counts").height == 5


def test_ad_hoc_sql_on_a_missing_table_names_it(tmp_path):
    dataset = ingested(tmp_path)
    with pytest.raises(queries.QueryError) as err:
        queries.run_sql(dataset, "SELECT count(*) FROM fpu_ops")
    assert str(err.value) == (
        f"{dataset} has no fpu_ops table yet (`fpureplay replay {dataset}` writes it)"
    )


def test_not_a_dataset(tmp_path):
    with pytest.raises(queries.QueryError) as err:
        queries.run(tmp_path, "event_counts")
    assert str(err.value) == f"{tmp_path}: is not an fpureplay dataset (no manifest.json)"


def test_sources_view_is_the_manifest(tmp_path):
    dataset = ingested(tmp_path)
    manifest = json.loads((dataset / MANIFEST).read_text())
    # A later writer may add keys, flat or nested: they pass through, nested as JSON.
    manifest["sources"][0]["rack"] = "r-01"
    manifest["sources"][0]["replay"] = {"inferred_switch_ins": 7, "notes": ["x"]}
    (dataset / MANIFEST).write_text(json.dumps(manifest))
    con = queries.connect(dataset)
    got = con.execute(
        "SELECT source, format, lines, events, first_ts_ns, last_ts_ns, cpus, vcpu_threads,"
        " recorded_policy, inferred_switch_ins, host, rack, replay FROM sources"
    ).fetchall()
    assert got == [
        (S, "tracefs", 24, 22, 5123000100000, 5123000812000, [0, 1], [4321, 4322],
         "undetermined", 7, "unknown", "r-01", '{"inferred_switch_ins": 7, "notes": ["x"]}'),
    ]  # fmt: skip


def test_a_numeric_looking_source_id_stays_text(tmp_path):
    dataset = ingested(tmp_path)
    manifest = json.loads((dataset / MANIFEST).read_text())
    manifest["sources"][0]["id"] = "12345"
    (dataset / MANIFEST).write_text(json.dumps(manifest))
    shutil.move(
        partition_dir(dataset, "events", S, host="unknown"),
        partition_dir(dataset, "events", "12345", host="unknown"),
    )
    con = queries.connect(dataset)
    assert con.execute("SELECT DISTINCT source FROM events").fetchall() == [("12345",)]
    assert {r[0] for r in queries.run(dataset, "event_counts").rows()} == {"12345"}


def test_dataset_paths_with_glob_and_quote_characters(tmp_path):
    weird = tmp_path / "it's [a] *set*"
    weird.mkdir()
    dataset = ingested(weird)
    write_tables(dataset)
    assert queries.run(dataset, "policy_summary").height == 1


def test_views_read_only_their_own_table_files(tmp_path):
    # A stray file outside the partition layout is not part of any table.
    dataset = ingested(tmp_path)
    write_tables(dataset)
    write_frame(dataset / "runs" / "stray.parquet", RUNS)
    con = queries.connect(dataset)
    assert con.execute("SELECT count(*) FROM runs").fetchall() == [(2,)]
