"""Compare an ingested trace with the capture harness's ground-truth JSON."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import polars as pl


def ts_ns(text: str) -> int:
    """Exact ns of a 'secs.frac' ground-truth timestamp."""
    secs, _, frac = text.partition(".")
    return int(secs) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])


def printed_states(vcpu: dict) -> dict[str, int]:
    """Sched-outs by kernel state letter (trace-cmd files carry them separately)."""
    if "sched_out_in_kvm_run_kernel_state_letters" in vcpu:
        total: Counter[str] = Counter()
        for key in ("sched_out_in_kvm_run", "sched_out_in_userspace"):
            letters = dict(vcpu[f"{key}_kernel_state_letters"])
            letters.pop("total", None)
            total.update(letters)
        return dict(total)
    return dict(vcpu["sched_out_by_prev_state"])


def check(
    events: pl.DataFrame, truth_path: Path, ts_unit_ns: int = 1, plugin_states: bool = False
) -> dict:
    """Assert ``events`` agree with the ground truth; returns the truth for more checks.

    ``ts_unit_ns`` compares times at a coarser unit (1000 when the events
    carry nanoseconds and the truth microseconds); ``plugin_states`` counts
    ``R+`` as ``R``, as the truth of a plugin-printed report does.
    """
    truth = json.loads(truth_path.read_text())
    counts = dict(events.group_by("event").len().iter_rows())
    assert counts == truth["event_counts"]

    # trace-cmd rounds nanoseconds to the nearest microsecond in its text report
    def coarse(ns: int) -> int:
        return (ns + ts_unit_ns // 2) // ts_unit_ns

    assert coarse(events["ts_ns"].min()) == ts_ns(truth["first_ts"]) // ts_unit_ns
    assert coarse(events["ts_ns"].max()) == ts_ns(truth["last_ts"]) // ts_unit_ns
    assert sorted(events["cpu"].unique().to_list()) == truth["cpus_seen"]
    for vcpu in truth["vcpu_threads"]:
        pid = vcpu["pid"]
        own = events.filter(pl.col("pid") == pid)
        fpu = own.filter(pl.col("event") == "kvm_fpu")
        assert fpu["fpu_load"].sum() == vcpu["kvm_fpu_load"], vcpu["comm"]
        assert (~fpu["fpu_load"]).sum() == vcpu["kvm_fpu_unload"], vcpu["comm"]
        assert own.filter(pl.col("event") == "kvm_userspace_exit").height == vcpu["kvm_run_returns"]
        outs = events.filter((pl.col("event") == "sched_switch") & (pl.col("prev_pid") == pid))
        assert outs.height == vcpu["sched_out_total"], vcpu["comm"]
        states = outs["prev_state"]
        if plugin_states:
            states = states.replace("R+", "R")
        assert dict(states.value_counts().iter_rows()) == printed_states(vcpu)
    return truth
