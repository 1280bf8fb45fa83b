"""The dataset fast path writes the bytes the plain path writes; fixed seeds give fixed traces.

pipeline/model/frame.py hands pyarrow dictionary arrays and string views
instead of plain strings, because they cost the Parquet writer less.  That is
only sound while the file stays the one pyarrow writes from the plain polars
frame with the same options, byte for byte: these tests compare the two,
including the cases where the shortcut must not be taken (a string first seen
after the first page, pages holding only nulls, several row groups) and the
args text.

The digests pin the model's output for fixed seeds and parameters: an
optimisation of the simulation, the line table or the text must not change a
byte of it (tests/test_model_truth.py only checks that a run repeats itself).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.dataset import PARQUET_OPTIONS
from pipeline.model import frame as F
from pipeline.model import lines as L
from pipeline.model.api import generate


def _plain_write(path: Path, frame: pl.DataFrame, row_group_size: int | None = None) -> None:
    """The events file as the fast path wrote it before Events: pyarrow from the frame."""
    strings = [name for name, dtype in frame.schema.items() if dtype == pl.String]
    pq.write_table(
        frame.to_arrow(), path, **PARQUET_OPTIONS, use_dictionary=strings,
        column_encoding={"line_no": "DELTA_BINARY_PACKED", "ts_ns": "DELTA_BINARY_PACKED"},
        row_group_size=row_group_size,
    )  # fmt: skip


def _events(model, args: bool) -> F.Events:
    return F.build_events(model.schedule, model.lines, model.era, model.values["xstate"], args=args)


def _dictionary_columns(events: F.Events) -> set[str]:
    return {f.name for f in events.arrow.schema if pa.types.is_dictionary(f.type)}


@pytest.mark.parametrize("args", [False, True])
@pytest.mark.parametrize(
    ("preset", "seed", "duration_ms", "policy"),
    [
        ("mixed", 11, 25, "deferred"),
        ("mixed", 11, 25, "legacy"),  # 4.14: four flag columns, old x86_fpu lines
        ("pingpong", 3, 30, "deferred"),  # sparse columns with pages of nulls only
        ("idle", 3, 60, "vcpu_run"),
    ],
)
def test_events_file_is_the_plain_frames_file(tmp_path, preset, seed, duration_ms, policy, args):
    model = generate(preset, seed=seed, duration_ms=duration_ms, policy=policy)
    events = _events(model, args)
    F.write_events(tmp_path / "fast.parquet", events)
    _plain_write(tmp_path / "plain.parquet", events.frame)
    assert (tmp_path / "fast.parquet").read_bytes() == (tmp_path / "plain.parquet").read_bytes()
    # the shortcut was taken where it can be
    assert {"event", "flags"} <= _dictionary_columns(events)
    # what readers get: String columns equal to the frame
    assert pl.read_parquet(tmp_path / "fast.parquet").equals(events.frame)


def test_row_groups_start_their_own_dictionaries(tmp_path, monkeypatch):
    """Made small here: a real row group holds 1Mi rows."""
    model = generate("mixed", seed=2, duration_ms=100)
    monkeypatch.setattr(F, "_ROW_GROUP", 5000)
    events = _events(model, False)
    assert events.n > 3 * 5000
    assert {"comm", "flags", "event"} <= _dictionary_columns(events)
    assert events.arrow.column("comm").num_chunks == events.n // 5000 + 1
    F.write_events(tmp_path / "fast.parquet", events)
    _plain_write(tmp_path / "plain.parquet", events.frame, row_group_size=5000)
    assert pq.read_metadata(tmp_path / "fast.parquet").num_row_groups == events.n // 5000 + 1
    assert (tmp_path / "fast.parquet").read_bytes() == (tmp_path / "plain.parquet").read_bytes()


def test_a_string_first_seen_late_goes_over_plain(tmp_path, monkeypatch):
    """Its page would pack the dictionary indices narrower than a whole dictionary does."""
    model = generate("mixed", seed=2, duration_ms=50)
    monkeypatch.setattr(F, "_HEAD", 64)  # fewer rows than it takes every task to show
    events = _events(model, False)
    assert "comm" not in _dictionary_columns(events)
    F.write_events(tmp_path / "fast.parquet", events)
    _plain_write(tmp_path / "plain.parquet", events.frame)
    assert (tmp_path / "fast.parquet").read_bytes() == (tmp_path / "plain.parquet").read_bytes()


def test_tasks_of_the_same_name_share_a_dictionary_entry(tmp_path):
    model = generate("mixed", seed=6, duration_ms=20, params=["host_tasks=10"])
    comms = [t.comm for t in model.schedule.tasks]
    assert comms.count("postgres") == 2 and comms.count("CPU 0/KVM") == 3  # one per VM
    events = _events(model, False)
    assert "comm" in _dictionary_columns(events)
    F.write_events(tmp_path / "fast.parquet", events)
    _plain_write(tmp_path / "plain.parquet", events.frame)
    assert (tmp_path / "fast.parquet").read_bytes() == (tmp_path / "plain.parquet").read_bytes()


def test_a_frame_is_written_as_before(tmp_path):
    frame = generate("io-heavy", seed=5, duration_ms=10).events(args=False)
    F.write_events(tmp_path / "fast.parquet", frame)
    _plain_write(tmp_path / "plain.parquet", frame)
    assert (tmp_path / "fast.parquet").read_bytes() == (tmp_path / "plain.parquet").read_bytes()


def test_empty_trace(tmp_path):
    model = generate("mixed", seed=1, duration_ms=0.0001)
    events = _events(model, True)
    assert events.n == 0 and events.frame.schema == F.EVENTS_SCHEMA
    F.write_events(tmp_path / "fast.parquet", events)
    _plain_write(tmp_path / "plain.parquet", events.frame)
    assert (tmp_path / "fast.parquet").read_bytes() == (tmp_path / "plain.parquet").read_bytes()


def test_line_order_without_the_packed_key(monkeypatch):
    """The lexsort taken when (ts, seq, sub) does not pack into an int64 (runs of days)
    orders the lines as the packed key does."""
    model = generate("mixed", seed=4, duration_ms=20, policy="legacy", kernel_era="4.14")
    packed = model.lines
    v = model.values
    monkeypatch.setattr(L, "_SUB_BITS", 62)
    unpacked = L.build(model.schedule, model._ops[1], model.policy, model.era,
                       exit_hz=v["exit_hz"], exit_us=v["exit_us"])  # fmt: skip
    for field in ("ts", "cpu", "task", "kind", "a", "b", "c", "style"):
        assert np.array_equal(getattr(packed, field), getattr(unpacked, field)), field


#: sha256 prefixes of the text of fixed runs (taken before the fast-path rework of the
#: line table and the events table; a change here is a change of the model's output).
DIGESTS = [
    ("mixed", 11, 25, "deferred", "tracefs", "0f90fa6bfdafb20e"),
    ("mixed", 11, 25, "legacy", "tracefs", "ef0cd0578f8ba41f"),
    ("mixed", 11, 25, "vcpu_run", "perf-script", "b20bd125f2ec2450"),
    ("idle", 3, 60, "deferred", "tracefs", "1c9f31ef1095af0a"),
    ("io-heavy", 5, 15, "deferred", "tracefs", "e60fb90cba517178"),
    ("overcommit", 2, 40, "deferred", "tracefs", "6e89f7857bff42ce"),
    ("pingpong", 1, 20, "deferred", "tracefs", "88215b4cf80cf9fb"),
    ("migration", 4, 15, "deferred", "tracefs", "6a6e0aa847dbda22"),
    # past 3.47 s of simulated time the rip hash (text.rip_index) wraps in int64
    ("idle", 7, 4000, "deferred", "tracefs", "b1a01d7c77073e9d"),
]


@pytest.mark.parametrize(("preset", "seed", "duration_ms", "policy", "fmt", "digest"), DIGESTS)
def test_fixed_runs_give_fixed_traces(preset, seed, duration_ms, policy, fmt, digest):
    text = generate(preset, seed=seed, duration_ms=duration_ms, policy=policy).text(fmt)
    assert hashlib.sha256(text).hexdigest()[:16] == digest
