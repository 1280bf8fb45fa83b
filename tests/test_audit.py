"""The migration-safety audit on hand-written traces (pipeline.audit).

MIGRATE (tests/audit_traces.py, where every call is explained line by line)
has one vCPU thread and a migration thread: a call that overlaps KVM_RUN, one
that waits for it, one between runs, one by the vCPU thread itself, one on an
fd no vCPU runs, a write inside KVM_RUN, a read while the vCPU is preempted
inside KVM_RUN, and one whose return is logged inside the next KVM_RUN.  The
smaller traces below check the vCPU mapping across processes and the edges
of a trace.
"""

from __future__ import annotations

import polars as pl
import pytest

from ingest.parse import parse_text
from pipeline.audit import AUDIT_SCHEMA, audit, ioctl_calls, map_vcpus, ordered
from tests.audit_traces import MIGRATE


@pytest.fixture(scope="module")
def migrate():
    return audit(parse_text(MIGRATE, "tracefs"))


def call(result, idx: int) -> dict:
    return result.calls.filter(pl.col("call_idx") == idx).row(0, named=True)


def test_every_call_has_a_row_with_the_declared_columns(migrate):
    assert migrate.calls.schema == AUDIT_SCHEMA
    assert migrate.calls["enter_line"].to_list() == [5, 7, 15, 17, 19, 23, 26, 32]
    assert migrate.calls["exit_line"].to_list() == [6, 14, 16, 18, 20, 24, 27, 37]
    assert migrate.calls["cmd"].to_list() == ["KVM_GET_XSAVE"] * 4 + ["KVM_SET_XSAVE"] * 2 + [
        "KVM_GET_XSAVE"
    ] * 2
    info = migrate.info
    assert (info["calls"], info["violations"], info["unknown_vcpu"]) == (8, 3, 1)
    assert (info["in_run_at_enter"], info["waited"], info["incomplete"]) == (4, 1, 0)
    assert info["by_cmd"] == {"KVM_GET_XSAVE": 6, "KVM_SET_XSAVE": 2}
    assert info["by_issuer"] == {"other_thread": 7, "vcpu_thread": 1}


def test_a_call_that_overlaps_kvm_run_is_a_violation(migrate):
    c = call(migrate, 0)
    assert (c["vcpu_pid"], c["vcpu_comm"], c["mapped_by"]) == (4321, "CPU 0/KVM", "unique_fd")
    assert c["in_run_at_enter"] and c["inside_run"] and c["violation"]
    assert (c["run_idx"], c["run_start_line"], c["run_end_line"]) == (0, 4, 10)
    assert (c["duration_ns"], c["wait_ns"]) == (2000, 0)
    # The vCPU is in the guest: the live state is in the registers under every policy.
    assert [c[f"{p}_state"] for p in ("legacy", "vcpu_run", "deferred")] == ["registers"] * 3
    assert c["stale_under"] == "legacy,vcpu_run,deferred" and c["status"] == "violation"
    assert c["reason"] == (
        "KVM_GET_XSAVE by live_migration (4330) entered at line 5 and returned at line 6"
        " while CPU 0/KVM (4321) was inside KVM_RUN (line 4 to line 10): it did not wait for"
        " the vCPU mutex; read a stale copy of the guest FPU state under legacy (state in"
        " registers), vcpu_run (state in registers), deferred (state in registers)"
    )


def test_a_call_that_arrives_during_kvm_run_waits_until_it_returns(migrate):
    c = call(migrate, 1)
    assert c["in_run_at_enter"] and not c["inside_run"] and c["status"] == "ok"
    assert c["run_end_line"] == 10 and c["exit_line"] == 14
    assert c["held_off_ns"] == 151_000 - 120_000  # until run 0's kvm_userspace_exit
    assert c["blocked_ns"] == 155_000 - 121_000  # asleep (D) until switched back in
    assert c["wait_ns"] == 34_000 and c["duration_ns"] == 38_000
    assert [c[f"{p}_state"] for p in ("legacy", "vcpu_run", "deferred")] == ["memory"] * 3


def test_a_call_between_runs_and_one_by_the_vcpu_thread_itself_are_fine(migrate):
    own = call(migrate, 2)
    assert (own["pid"], own["issuer"], own["mapped_by"]) == (4321, "vcpu_thread", "own_fd")
    between = call(migrate, 4)
    assert between["cmd"] == "KVM_SET_XSAVE" and between["write"]
    for c in (own, between):
        assert c["status"] == "ok" and not c["in_run_at_enter"] and c["wait_ns"] == 0
        assert c["run_idx"] is None and c["stale_under"] is None
        assert all(c[f"{p}_current"] for p in ("legacy", "vcpu_run", "deferred"))


def test_an_fd_no_vcpu_runs_is_reported_unknown(migrate):
    c = call(migrate, 3)
    assert (c["fd"], c["vcpu_pid"], c["mapped_by"], c["status"]) == (9, None, "unknown",
                                                                     "unknown_vcpu")  # fmt: skip
    assert c["ret"] == -9 and not c["violation"] and c["in_run_at_enter"] is None
    assert c["reason"] == "fd 9 is no vCPU thread's KVM_RUN fd in this trace"


def test_a_write_inside_kvm_run_is_a_violation(migrate):
    c = call(migrate, 5)
    assert c["write"] and c["inside_run"] and (c["run_idx"], c["run_end_line"]) == (1, 30)
    assert c["reason"].endswith(
        "wrote a guest FPU buffer its next put overwrites under legacy (state in registers),"
        " vcpu_run (state in registers), deferred (state in registers)"
    )


def test_where_each_policy_keeps_a_preempted_vcpu_s_state(migrate):
    # The vCPU was preempted (R) at line 25, inside run 1: legacy's preempt
    # notifier put the guest state back in its buffer, deferred's context
    # switch saved it into the guest fpstate, vcpu_run's into the thread's own.
    c = call(migrate, 6)
    assert c["inside_run"] and c["violation"]
    assert (c["legacy_state"], c["vcpu_run_state"], c["deferred_state"]) == (
        "memory", "task_fpstate", "memory")  # fmt: skip
    assert (c["legacy_current"], c["vcpu_run_current"], c["deferred_current"]) == (
        True, False, True)  # fmt: skip
    assert c["stale_under"] == "vcpu_run"


def test_a_return_logged_inside_the_next_kvm_run_is_fine(migrate):
    c = call(migrate, 7)
    assert c["exit_in_later_run"] and not c["inside_run"] and c["status"] == "ok"
    assert not c["in_run_at_enter"] and c["wait_ns"] == 0 and c["blocked_ns"] == 0
    assert (c["read_line"], c["read_ns"]) == (35, 100_000_272_000)  # run 2's load
    assert c["deferred_state"] == "memory"


def test_only_the_requested_policies_are_judged():
    result = audit(parse_text(MIGRATE, "tracefs"), policies=["vcpu_run"])
    c = result.calls.filter(pl.col("call_idx") == 6).row(0, named=True)
    assert (c["legacy_state"], c["vcpu_run_state"], c["deferred_state"]) == (
        None, "task_fpstate", None)  # fmt: skip
    assert c["stale_under"] == "vcpu_run"
    assert result.info["policies"] == ["vcpu_run"]


# -- the vCPU mapping ------------------------------------------------------------------------

# Two VMMs whose vCPU threads both run KVM_RUN on fds 5 and 6: pids 500-502
# (vCPUs 501, 502; helper 503) and 900-902 (vCPUs 901, 902; helper 903).
_TWO_VMS = [
    "# tracer: nop",
    "       CPU 0/KVM-501     [000] ..... 10.000100: sys_ioctl(fd: 5, cmd: 0xae80, arg: 0x0)",
    "       CPU 1/KVM-502     [001] ..... 10.000101: sys_ioctl(fd: 6, cmd: 0xae80, arg: 0x0)",
    "       CPU 0/KVM-901     [002] ..... 10.000102: sys_ioctl(fd: 5, cmd: 0xae80, arg: 0x0)",
    "       CPU 1/KVM-902     [003] ..... 10.000103: sys_ioctl(fd: 6, cmd: 0xae80, arg: 0x0)",
    "       CPU 0/KVM-501     [000] ..... 10.000104: kvm_fpu: load",
    "       CPU 0/KVM-901     [002] ..... 10.000104: kvm_fpu: load",
    "  live_migration-903     [004] ..... 10.000110: sys_ioctl(fd: 6, cmd: 0x9000aea4, arg: 0x1)",
    "  live_migration-903     [004] ..... 10.000111: sys_ioctl -> 0x0",
    "  live_migration-503     [004] ..... 10.000112: sys_ioctl(fd: 5, cmd: 0x9000aea4, arg: 0x1)",
    "  live_migration-503     [004] ..... 10.000113: sys_ioctl -> 0x0",
    "       CPU 0/KVM-501     [000] ..... 10.000120: kvm_fpu: unload",
    "       CPU 0/KVM-501     [000] ..... 10.000121: kvm_userspace_exit: reason KVM_EXIT_IO (2)",
    "       CPU 0/KVM-501     [000] ..... 10.000122: sys_ioctl -> 0x0",
]


def test_without_tgids_processes_are_inferred_from_pid_clusters():
    events = parse_text("\n".join(_TWO_VMS) + "\n", "tracefs")
    vmap = map_vcpus(ioctl_calls(ordered(events))[0])
    assert vmap.method == "pid_clusters"
    assert vmap.fds == {501: {5}, 502: {6}, 901: {5}, 902: {6}}
    assert vmap.process[501] == vmap.process[502] == vmap.process[503] == "inferred:501"
    assert vmap.process[901] == vmap.process[902] == vmap.process[903] == "inferred:901"
    result = audit(events)
    rows = result.calls.select("pid", "fd", "vcpu_pid", "mapped_by", "violation").rows()
    # 503's fd 5 is 501 (inside its KVM_RUN, lines 6-13: a violation); 903's fd 6 is 902.
    assert rows == [(903, 6, 902, "pid_cluster", False), (503, 5, 501, "pid_cluster", True)]


def test_tgids_when_the_trace_prints_them():
    # The tracefs TGID column ("(%7d) ") names the processes outright, even when
    # the pid proximity would say otherwise (the helper 903 belongs to VMM 500).
    with_tgid = [
        line.replace("[", f"({500 if '-50' in line or '-903' in line else 900:>7}) [", 1)
        for line in _TWO_VMS[1:]
    ]
    events = parse_text("\n".join(with_tgid) + "\n", "tracefs")
    assert events["tgid"].drop_nulls().len() == events.height
    result = audit(events)
    rows = result.calls.select("pid", "fd", "vcpu_pid", "mapped_by").rows()
    assert rows == [(903, 6, 502, "tgid"), (503, 5, 501, "tgid")]


# -- the edges of a trace -------------------------------------------------------------------


def test_a_trace_that_starts_inside_kvm_run_and_ends_inside_a_call():
    lines = [
        "# tracer: nop",
        # inside the KVM_RUN in progress when the trace starts (its entry is not shown)
        "       CPU 0/KVM-4321    [000] d..1. 100.000100: kvm_exit: vcpu 0 reason HLT rip"
        " 0xffffffff81000000 info1 0x0000000000000000 info2 0x0000000000000000 intr_info"
        " 0x00000000 error_code 0x00000000",
        "  live_migration-4330    [001] ..... 100.000110: sys_ioctl(fd: 5, cmd: 0x9000aea4,"
        " arg: 0x1)",
        "  live_migration-4330    [001] ..... 100.000112: sys_ioctl -> 0x0",
        "       CPU 0/KVM-4321    [000] ..... 100.000150: kvm_fpu: unload",
        "       CPU 0/KVM-4321    [000] ..... 100.000151: kvm_userspace_exit: reason"
        " KVM_EXIT_IO (2)",
        "       CPU 0/KVM-4321    [000] ..... 100.000152: sys_ioctl -> 0x0",
        "       CPU 0/KVM-4321    [000] ..... 100.000160: sys_ioctl(fd: 5, cmd: 0xae80, arg: 0x0)",
        "       CPU 0/KVM-4321    [000] ..... 100.000162: kvm_fpu: load",
        "  live_migration-4330    [001] ..... 100.000170: sys_ioctl(fd: 5, cmd: 0x9000aea4,"
        " arg: 0x1)",
    ]
    result = audit(parse_text("\n".join(lines) + "\n", "tracefs"))
    first, last = result.calls.rows(named=True)
    # The first call falls in the KVM_RUN the trace started inside (held from the
    # trace's start to line 6): a violation, its run's start named as such.
    assert first["inside_run"] and first["run_start_line"] is None
    assert "inside KVM_RUN (trace start to line 6)" in first["reason"]
    # The last never returns before the trace ends: incomplete, not judged.
    assert (last["status"], last["exit_line"], last["violation"]) == ("incomplete", None, False)
    assert last["in_run_at_enter"] and last["run_end_line"] is None
    assert result.info["incomplete"] == 1


def test_equal_timestamps_on_different_cpus_are_not_a_violation():
    # The call's return and the vCPU's kvm_userspace_exit share a microsecond
    # on different CPUs: their order is unknown, so it is not flagged.
    lines = [
        "# tracer: nop",
        "       CPU 0/KVM-4321    [000] ..... 100.000100: sys_ioctl(fd: 5, cmd: 0xae80, arg: 0x0)",
        "       CPU 0/KVM-4321    [000] ..... 100.000102: kvm_fpu: load",
        "  live_migration-4330    [001] ..... 100.000110: sys_ioctl(fd: 5, cmd: 0x9000aea4,"
        " arg: 0x1)",
        "  live_migration-4330    [001] ..... 100.000150: sys_ioctl -> 0x0",
        "       CPU 0/KVM-4321    [000] ..... 100.000150: kvm_fpu: unload",
        "       CPU 0/KVM-4321    [000] ..... 100.000150: kvm_userspace_exit: reason"
        " KVM_EXIT_IO (2)",
        "       CPU 0/KVM-4321    [000] ..... 100.000151: sys_ioctl -> 0x0",
    ]
    c = audit(parse_text("\n".join(lines) + "\n", "tracefs")).calls.row(0, named=True)
    assert c["in_run_at_enter"] and not c["inside_run"] and not c["violation"]
    # One microsecond earlier it is certain, and flagged.
    lines[4] = lines[4].replace("100.000150", "100.000149")
    c = audit(parse_text("\n".join(lines) + "\n", "tracefs")).calls.row(0, named=True)
    assert c["inside_run"] and c["violation"]


def test_a_source_without_fpu_state_ioctls_gives_an_empty_table():
    lines = ["# tracer: nop", *[x for x in MIGRATE.splitlines() if "0xae80" in x or "kvm_" in x]]
    result = audit(parse_text("\n".join(lines) + "\n", "tracefs"))
    assert result.calls.height == 0 and result.calls.schema == AUDIT_SCHEMA
    assert result.ok and result.info["calls"] == 0
