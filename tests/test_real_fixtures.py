"""Every real capture, in all three formats (and the .dat files), against its ground truth."""

from __future__ import annotations

import shutil

import polars as pl
import pytest

from ingest import ingest_traces, parse_file
from tests.conftest import REAL, REAL_FORMATS, WORKLOADS, needs_shared
from tests.groundtruth import check

pytestmark = [needs_shared, pytest.mark.real]


@pytest.mark.parametrize("suffix,truth,fmt", REAL_FORMATS)
@pytest.mark.parametrize("workload", WORKLOADS)
def test_real_capture_matches_ground_truth(
    workload: str, suffix: str, truth: str, fmt: str, tmp_path
):
    path = REAL / f"{workload}.{suffix}"
    [report] = ingest_traces([str(path)], tmp_path / "ds")
    gt = check(
        pl.read_parquet(
            tmp_path / "ds" / "events" / "host=*" / f"source={report.id}" / "*.parquet"
        ),
        REAL / f"{workload}.{truth}.groundtruth.json",
    )
    entry = report.manifest_entry()
    assert entry["format"] == fmt
    assert entry["lines"] == gt["total_lines"]
    assert entry["events"] == gt["event_lines"]
    assert entry["rejects"] == 0
    assert entry["lost_markers"] == 0
    assert entry["vcpu_threads"] == sorted(v["pid"] for v in gt["vcpu_threads"])


@pytest.mark.skipif(shutil.which("trace-cmd") is None, reason="trace-cmd is not installed")
@pytest.mark.parametrize("workload", WORKLOADS)
def test_dat_file_through_trace_cmd(workload: str):
    events = parse_file(str(REAL / f"{workload}.trace-cmd.dat"))
    # `report -N` prints kernel formats: the state letters need no mapping
    # and R+ survives (the plugin text the truth was computed from folds it
    # into R); the counts are those of the report text of the same file.
    truth = REAL / f"{workload}.trace-cmd.groundtruth.json"
    check(events, truth, ts_unit_ns=1000, plugin_states=True)
    # -t gives the full nanoseconds the text report rounds to microseconds.
    assert (events["ts_ns"] % 1000 != 0).any()


def test_trace_cmd_plugin_states_are_mapped_to_kernel_letters():
    # mixed.trace-cmd.txt prints a thread exit as "X" (plugin table), which
    # the kernel calls "Z"... and the tracefs capture of the same workload "X".
    events = parse_file(str(REAL / "mixed.trace-cmd.txt"))
    states = set(events.filter(pl.col("event") == "sched_switch")["prev_state"].unique())
    assert "W" not in states and "I" in states
