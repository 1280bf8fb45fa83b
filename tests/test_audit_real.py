"""The migration-safety audit on the real `xsave` captures (6.18, all three formats).

The capture's workload (shared/fixtures/real/README.md): two vCPU threads
call KVM_GET_XSAVE after every 4th exit, and a `live_migration` thread calls
it on both vCPUs every 2 ms, sleeping on the vCPU mutex (prev_state=D) while
the vCPU is inside KVM_RUN.  Every expected count below comes from the
capture's ground truth JSON (ioctl_cmds, vmm_counts, sched_out_by_prev_state).
"""

from __future__ import annotations

import json

import polars as pl
import pytest

from ingest import parse_file
from pipeline.audit import audit
from tests.conftest import REAL, REAL_FORMATS, needs_shared

pytestmark = [needs_shared, pytest.mark.real]

FORMATS = [pytest.param(suffix, truth, id=truth) for suffix, truth, _ in REAL_FORMATS]


@pytest.fixture(scope="module")
def audited():
    cache: dict[str, tuple] = {}

    def get(suffix: str, truth: str):
        if suffix not in cache:
            events = parse_file(str(REAL / f"xsave.{suffix}"))
            gt = json.loads((REAL / f"xsave.{truth}.groundtruth.json").read_text())
            cache[suffix] = (events, audit(events), gt)
        return cache[suffix]

    return get


@pytest.mark.parametrize(("suffix", "truth"), FORMATS)
def test_every_get_xsave_is_accounted_for(audited, suffix, truth):
    _, result, gt = audited(suffix, truth)
    calls = result.calls
    threads = gt["vcpu_threads"] + gt["helper_threads"]
    want = {t["pid"]: t["ioctl_cmds"].get("KVM_GET_XSAVE", 0) for t in threads}
    got = dict(calls.group_by("pid").len().iter_rows())
    assert got == want
    assert calls.height == sum(want.values())  # 366 / 373 / 393
    assert set(calls["cmd"]) == {"KVM_GET_XSAVE"}
    # The VMM's own count agrees: each vCPU thread's calls are get_xsave_calls.
    for v in gt["vcpu_threads"]:
        assert want[v["pid"]] == v["vmm_counts"]["get_xsave_calls"] == 150
    for h in gt["helper_threads"]:
        assert want[h["pid"]] == h["ioctl_cmds"]["KVM_GET_XSAVE"]
        assert h["comm"] == "live_migration"


@pytest.mark.parametrize(("suffix", "truth"), FORMATS)
def test_no_violation_and_every_call_reaches_its_vcpu(audited, suffix, truth):
    _, result, gt = audited(suffix, truth)
    calls = result.calls
    assert result.ok and result.violations.height == 0
    assert set(calls["status"]) == {"ok"}  # none unknown, none cut by the trace's end
    vcpus = {v["pid"] for v in gt["vcpu_threads"]}
    assert set(calls["vcpu_pid"]) == vcpus
    # The vCPU threads read their own state (the fd they run KVM_RUN on) ...
    own = calls.filter(pl.col("issuer") == "vcpu_thread")
    assert (own["pid"] == own["vcpu_pid"]).all() and set(own["mapped_by"]) == {"own_fd"}
    assert own.height == 300
    # ... and the migration thread reads both, each fd naming one vCPU of the trace.
    helper = calls.filter(pl.col("issuer") == "other_thread")
    assert set(helper["vcpu_pid"]) == vcpus and set(helper["mapped_by"]) == {"unique_fd"}
    for p in ("legacy", "vcpu_run", "deferred"):
        assert set(calls[f"{p}_state"]) == {"memory"} and calls[f"{p}_current"].all()


@pytest.mark.parametrize(("suffix", "truth"), FORMATS)
def test_calls_that_arrive_during_kvm_run_wait_until_it_returns(audited, suffix, truth):
    events, result, gt = audited(suffix, truth)
    calls = result.calls
    arrived = calls.filter(pl.col("in_run_at_enter"))
    # Only the migration thread can find its vCPU inside KVM_RUN (a vCPU thread
    # is never in two ioctls); many of its calls do (35 / 43 / 68).
    assert set(arrived["issuer"]) == {"other_thread"} and arrived.height >= 30
    assert not arrived["inside_run"].any()
    # Each returns after the KVM_RUN it arrived in, by time and by trace line.
    assert (arrived["exit_ns"] >= arrived["run_end_ns"]).all()
    assert (arrived["exit_line"] > arrived["run_end_line"]).all()
    assert (arrived["wait_ns"] >= arrived["run_end_ns"] - arrived["enter_ns"]).all()
    assert (arrived["wait_ns"] > 0).all()
    # The mutex sleeps: every D sched-out of the migration thread falls inside one
    # of its calls, and those calls are among the ones that arrived during KVM_RUN.
    helper = gt["helper_threads"][0]
    d_outs = events.filter(
        (pl.col("event") == "sched_switch")
        & (pl.col("prev_pid") == helper["pid"])
        & pl.col("prev_state").str.starts_with("D")
    )["line_no"].to_list()
    assert len(d_outs) == helper["sched_out_by_prev_state"]["D"]  # 38 / 29 / 34
    spans = arrived.select("enter_line", "exit_line").rows()
    assert all(any(e < line < x for e, x in spans) for line in d_outs)
    slept = calls.filter(pl.col("blocked_ns") > 0)
    assert slept["in_run_at_enter"].all() and slept.height <= len(d_outs)


def test_the_tracefs_capture_s_first_long_wait(audited):
    # Hand-read from xsave.tracefs.txt: live_migration enters KVM_GET_XSAVE on
    # fd 6 at line 942 (2201.135495) while CPU 1/KVM is inside the KVM_RUN that
    # loaded at line 674; it sleeps (D) at 943; that run returns at line 948
    # (kvm_userspace_exit, 2201.135515) and CPU 1/KVM wakes it, but the vCPU
    # keeps the CPU and takes the mutex again for its next runs; the call sleeps
    # again at line 1183 and returns at line 1425 (2201.143483).
    _, result, _ = audited("tracefs.txt", "tracefs")
    row = result.calls.filter(pl.col("enter_line") == 942).row(0, named=True)
    assert (row["comm"], row["fd"], row["vcpu_comm"]) == ("live_migration", 6, "CPU 1/KVM")
    assert (row["run_start_line"], row["run_end_line"], row["exit_line"]) == (674, 948, 1425)
    assert row["held_off_ns"] == 2201135515000 - 2201135495000
    assert row["duration_ns"] == 2201143483000 - 2201135495000
    # slept 943 (…135497) -> switched in at 1181 (…139394); 1183 (…139395) -> 1423 (…143470)
    assert row["blocked_ns"] == (139394 - 135497 + 143470 - 139395) * 1000
    assert row["wait_ns"] == row["blocked_ns"] and row["status"] == "ok"
