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
    "host",
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
        f"events/host=unknown/source={report.id}/part-0.parquet",
        "manifest.json",
        f"rejects/host=unknown/source={report.id}/part-0.parquet",
    ]
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["schema_version"] == 2
    [source] = manifest["sources"]
    assert set(source) == SOURCE_KEYS
    assert source["lines"] == 1922 and source["events"] == 1910 and source["cpus"] == [0, 1]
    assert source["recorded_policy"] == "undetermined"


def test_duckdb_reads_the_hive_partitions(tmp_path):
    [report] = ingest_traces([EXAMPLE], tmp_path / "ds")
    rows = duckdb.sql(
        f"SELECT host, source, event, count(*) AS n FROM read_parquet("
        f"'{tmp_path}/ds/events/*/*/*.parquet', hive_partitioning=true)"
        " WHERE event = 'kvm_fpu' GROUP BY ALL"
    ).fetchall()
    assert rows == [("unknown", report.id, "kvm_fpu", 120)]


def test_a_failing_input_leaves_the_previous_dataset_untouched(tmp_path):
    ingest_traces([EXAMPLE], tmp_path / "ds")
    before = snapshot(tmp_path / "ds")
    (tmp_path / "t.txt").write_bytes(TRACE)
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(InputError, match="is empty"):
        ingest_traces([str(tmp_path / "t.txt"), str(tmp_path / "empty.txt")], tmp_path / "ds")
    assert snapshot(tmp_path / "ds") == before
    # Only the (hidden) write lock is left beside the dataset.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.lock", "ds", "empty.txt", "t.txt"]


def test_an_interrupted_ingest_leaves_the_previous_dataset_untouched(tmp_path):
    ingest_traces([EXAMPLE], tmp_path / "ds")
    before = snapshot(tmp_path / "ds")
    (tmp_path / "t.txt").write_bytes(TRACE)

    def interrupt(*_args):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest_traces([str(tmp_path / "t.txt")], tmp_path / "ds", progress=interrupt)
    assert snapshot(tmp_path / "ds") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.lock", "ds", "t.txt"]


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
    assert not (tmp_path / "ds" / "events" / "host=unknown" / f"source={first[0].id}").exists()


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


# -- one writer at a time, a full disk, leftovers of killed writers -------------------------


def test_a_second_writer_is_refused_naming_the_first(tmp_path, runner):
    import os
    import subprocess
    import sys

    from ingest.dataset import writer_lock

    ingest_traces([EXAMPLE], tmp_path / "ds")
    before = snapshot(tmp_path / "ds")
    (tmp_path / "t.txt").write_bytes(TRACE)
    with writer_lock((tmp_path / "ds").absolute()), pytest.raises(InputError) as err:
        ingest_traces([str(tmp_path / "t.txt")], tmp_path / "ds")
    assert str(err.value) == (
        f"{tmp_path / 'ds'}: another fpureplay process (pid {os.getpid()}) is writing this"
        " dataset; run again when it has finished"
    )
    # Another process holding it: the CLI refuses with exit 2, naming that pid.
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from ingest.dataset import writer_lock\n"
         f"with writer_lock(Path({str(tmp_path / 'ds')!r})):\n"
         "    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        out = runner("ingest", str(tmp_path / "t.txt"), "-o", str(tmp_path / "ds"))
        assert out.exit_code == 2
        assert f"(pid {holder.pid}) is writing this dataset" in out.stderr
    finally:
        holder.kill()
        holder.wait()
    assert snapshot(tmp_path / "ds") == before
    # The kernel dropped the dead holder's lock: the next writer goes ahead.
    assert [r.status for r in ingest_traces([str(tmp_path / "t.txt")], tmp_path / "ds")] == [
        "added"
    ]


def test_leftovers_of_a_killed_writer_are_removed_by_the_next(tmp_path):
    ingest_traces([EXAMPLE], tmp_path / "ds")
    for leftover in (".ds.staging-99999-deadbeef", ".ds.old-cafebabe"):
        (tmp_path / leftover / "events").mkdir(parents=True)
    (tmp_path / ".other.staging-1-x").mkdir()  # another dataset's: not ours to touch
    (tmp_path / "t.txt").write_bytes(TRACE)
    ingest_traces([str(tmp_path / "t.txt")], tmp_path / "ds")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".ds.lock", ".other.staging-1-x", "ds", "t.txt"
    ]


@pytest.fixture
def small_disk(tmp_path):
    """A 200 KiB tmpfs (root only; skipped where mounting is not allowed)."""
    import subprocess

    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mnt)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "--lazy", str(mnt)], check=True)


def test_a_full_disk_is_a_clear_error_and_the_dataset_stays(small_disk, tmp_path, runner):
    from pipeline.model.api import generate

    (tmp_path / "t.txt").write_bytes(TRACE)
    ingest_traces([str(tmp_path / "t.txt")], small_disk / "ds")
    before = snapshot(small_disk / "ds")
    big = tmp_path / "big.txt"  # ~30 MB of text, ~1 MB of Parquet: more than is free
    generate("mixed", seed=2, duration_ms=1000).write(big, "tracefs", force=True)
    out = runner("ingest", str(big), "-o", str(small_disk / "ds"))
    assert out.exit_code == 2
    assert out.stderr == (
        f"error: {small_disk / 'ds'}: cannot write the dataset (Error writing bytes to file."
        " Detail: [errno 28] No space left on device); it was left as it was\n"
    )
    assert snapshot(small_disk / "ds") == before
    assert sorted(p.name for p in small_disk.iterdir()) == [".ds.lock", "ds"]
