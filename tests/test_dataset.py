"""The dataset directory: layout, manifest, and all-or-nothing updates."""

from __future__ import annotations

import json

import duckdb
import pytest

from ingest import InputError, ingest_traces
from tests.conftest import EXAMPLES
from tests.test_cli_ingest import TRACE

EXAMPLE = str(EXAMPLES / "mixed-small.tracefs.txt.zst")

SOURCE_KEYS = {
    "id",
    "path",
    "sha256",
    "format",
    "compression",
    "kernel",
    "recording",
    "lines",
    "events",
    "rejects",
    "meta_lines",
    "lost_markers",
    "lost_events",
    "buffer_started_markers",
    "truncated",
    "invalid_utf8_lines",
    "ts_backwards",
    "first_ts_ns",
    "last_ts_ns",
    "cpus",
    "vcpu_threads",
    "instances",
    "event_counts",
    "recorded_policy",
    "recorded_policy_evidence",
}


def snapshot(root):
    return sorted(
        (str(p.relative_to(root)), p.stat().st_ino) for p in root.rglob("*") if p.is_file()
    )


def test_layout_and_manifest(tmp_path):
    [report] = ingest_traces([EXAMPLE], tmp_path / "ds")
    root = tmp_path / "ds"
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == [
        f"events/source={report.id}/part-0.parquet",
        "manifest.json",
        f"rejects/source={report.id}/part-0.parquet",
    ]
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["schema_version"] == 1
    [source] = manifest["sources"]
    assert set(source) == SOURCE_KEYS
    assert source["lines"] == 1922 and source["events"] == 1910 and source["cpus"] == [0, 1]
    assert source["recorded_policy"] == "undetermined"


def test_duckdb_reads_the_hive_partitions(tmp_path):
    [report] = ingest_traces([EXAMPLE], tmp_path / "ds")
    rows = duckdb.sql(
        f"SELECT source, event, count(*) AS n FROM read_parquet('{tmp_path}/ds/events/*/*.parquet',"
        " hive_partitioning=true) WHERE event = 'kvm_fpu' GROUP BY ALL"
    ).fetchall()
    assert rows == [(report.id, "kvm_fpu", 120)]


def test_a_failing_input_leaves_the_previous_dataset_untouched(tmp_path):
    ingest_traces([EXAMPLE], tmp_path / "ds")
    before = snapshot(tmp_path / "ds")
    (tmp_path / "t.txt").write_bytes(TRACE)
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(InputError, match="is empty"):
        ingest_traces([str(tmp_path / "t.txt"), str(tmp_path / "empty.txt")], tmp_path / "ds")
    assert snapshot(tmp_path / "ds") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "empty.txt", "t.txt"]


def test_an_interrupted_ingest_leaves_the_previous_dataset_untouched(tmp_path):
    ingest_traces([EXAMPLE], tmp_path / "ds")
    before = snapshot(tmp_path / "ds")
    (tmp_path / "t.txt").write_bytes(TRACE)

    def interrupt(*_args):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest_traces([str(tmp_path / "t.txt")], tmp_path / "ds", progress=interrupt)
    assert snapshot(tmp_path / "ds") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "t.txt"]


def test_adding_keeps_old_sources_and_force_replaces(tmp_path):
    (tmp_path / "t.txt").write_bytes(TRACE)
    first = ingest_traces([EXAMPLE], tmp_path / "ds")
    added = ingest_traces([str(tmp_path / "t.txt"), EXAMPLE], tmp_path / "ds")
    assert [r.status for r in added] == ["added", "already present"]
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert [s["id"] for s in manifest["sources"]] == [first[0].id, added[0].id]
    ingest_traces([str(tmp_path / "t.txt")], tmp_path / "ds", force=True)
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert [s["id"] for s in manifest["sources"]] == [added[0].id]
    assert not (tmp_path / "ds" / "events" / f"source={first[0].id}").exists()


def test_record_header_goes_into_the_manifest(tmp_path):
    header = (
        '# fpureplay-record: kernel=6.18.44 cpu_model="AMD EPYC" xstate_bytes=2432 '
        "xsaves_bytes=2472 xfeatures=0xe7 events=default cpus=2\n"
    )
    (tmp_path / "r.txt").write_bytes(b"# tracer: nop\n" + header.encode() + TRACE)
    [report] = ingest_traces([str(tmp_path / "r.txt")], tmp_path / "ds")
    entry = report.manifest_entry()
    assert entry["kernel"] == "6.18.44"
    assert entry["recording"] == {
        "kernel": "6.18.44", "cpu_model": "AMD EPYC", "xstate_bytes": 2432,
        "xsaves_bytes": 2472, "xfeatures": 0xE7, "events": "default", "cpus": 2,
    }  # fmt: skip
