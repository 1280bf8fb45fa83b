"""Properties of the replay over generated schedules (hypothesis).

A schedule is a series of KVM_RUN calls of thread A, each with sched-outs
inside it (preempted by a kernel thread or by the FPU-using user task B,
halted with only idle running, or migrated to the other CPU), each followed
by a re-entry, optionally a preemption after the last exit (example (vi)),
and sched-outs in userspace between runs.  It is written as a 4.14 or a 6.x
kernel would log it, with or without kvm_entry lines.

Properties:

* ops(legacy) >= ops(vcpu_run) >= ops(deferred) for every vCPU thread.
  Narrowed (kernel semantics give counterexamples otherwise): a KVM_RUN that
  never enters the guest costs legacy nothing but vcpu_run/deferred their
  swap (4 ops), and a KVM_GET_MP_STATE pair costs only deferred kernels 4
  ops; the generator has neither (every run enters; no MP_STATE pairs).
* in the closed-form setting (every sched-out followed by a re-entry),
  legacy's redundant ops are exactly 3P + k and the totals are the closed
  forms plus one save per sched-out in userspace;
* no op is ever attributed to a kernel thread or the idle task;
* guest restores at ioctl_entry equal the kvm_fpu loads of a 6.x recording,
  user restores at ioctl_exit its unloads (legacy: only when the guest
  re-entered after the last sched-in, or entries are synthesised);
* the recording kernel's own policy reproduces its kvm_fpu lines (validate).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.replay import replay
from pipeline.tasks import Kind
from pipeline.validate import validate
from tests.replay_traces import IDLE, Task, TraceWriter

A = Task("CPU 0/KVM", 4321)
B = Task("fpu-user", 5000)
KTHREADS = (Task("kworker/0:1", 87), Task("kworker/1:1", 88))
I0 = Task(*IDLE)
INVALIDATING = {"user", "migrate"}  # the way back in finds the registers invalid


@dataclass
class Run:
    sched_outs: list[str]  # kthread | user | halt | migrate, each followed by a re-entry
    preempted_at_end: bool  # example (vi): preempted after the last exit, no re-entry
    userspace_sched_out: bool  # blocks in userspace after the run


runs_st = st.builds(
    Run,
    st.lists(st.sampled_from(["kthread", "user", "halt", "migrate"]), max_size=6),
    st.booleans(),
    st.booleans(),
)


@dataclass
class Schedule:
    style: str
    entries: bool
    runs: list[Run]

    @property
    def closed_form(self) -> bool:
        return not any(r.preempted_at_end for r in self.runs)

    def write(self) -> TraceWriter:
        w = TraceWriter(style=self.style, entries=self.entries)
        cur = {0: A, 1: I0}
        w.wakeup(1, I0, KTHREADS[1])  # CPU 1 is idle when the trace starts
        cpu = 0
        for run in self.runs:
            w.run_start(A, cpu)
            w.enter(A, cpu)
            for kind in run.sched_outs:
                if kind == "kthread":
                    w.sched_out(A, cpu, "R", KTHREADS[cpu])
                    w.switch(cpu, KTHREADS[cpu], "I", A)
                elif kind == "user":
                    w.sched_out(A, cpu, "R", B)
                    w.switch(cpu, B, "R+", A)
                elif kind == "halt":
                    w.sched_out(A, cpu, "S", I0)
                    w.wakeup(cpu, I0, A)
                    w.switch(cpu, I0, "R", A)
                else:  # migrate: preempted here, resumed on the other CPU
                    other = 1 - cpu
                    w.sched_out(A, cpu, "R", KTHREADS[cpu])
                    cur[cpu] = KTHREADS[cpu]
                    w.switch(other, cur[other], "I" if cur[other].pid else "R", A)
                    cur[other] = A
                    cpu = other
                w.enter(A, cpu)
            if run.preempted_at_end:
                w.sched_out(A, cpu, "R", B)
                w.switch(cpu, B, "R+", A)
            w.run_end(A, cpu)
            if run.userspace_sched_out:
                w.switch(cpu, A, "S", I0)
                w.wakeup(cpu, I0, A)
                w.switch(cpu, I0, "R", A)
        return w


schedules = st.builds(
    Schedule,
    st.sampled_from(["legacy", "swap"]),
    st.booleans(),
    st.lists(runs_st, min_size=1, max_size=4),
)


def per_policy(ops: pl.DataFrame, **eq: str) -> dict[str, int]:
    sel = ops
    for col, value in eq.items():
        sel = sel.filter(pl.col(col) == value)
    counts = dict(sel.group_by("policy").len().iter_rows())
    return {p: counts.get(p, 0) for p in ("legacy", "vcpu_run", "deferred")}


@settings(max_examples=60, deadline=None)
@given(schedules)
def test_fewer_ops_with_each_newer_policy(s: Schedule) -> None:
    ops = replay(s.write().events()).fpu_ops
    for _pid, grp in ops.group_by("pid"):
        n = per_policy(grp)
        assert n["legacy"] >= n["vcpu_run"] >= n["deferred"]


@settings(max_examples=60, deadline=None)
@given(schedules)
def test_closed_forms_hold_over_whole_schedules(s: Schedule) -> None:
    if not s.closed_form:
        return
    ops = replay(s.write().events()).fpu_ops
    p = sum(len(r.sched_outs) for r in s.runs)
    k = sum(kind in INVALIDATING for r in s.runs for kind in r.sched_outs)
    n, u = len(s.runs), sum(r.userspace_sched_out for r in s.runs)
    assert per_policy(ops, redundant=True) == {"legacy": 3 * p + k, "vcpu_run": 0, "deferred": 0}
    # one plain save of QEMU's state per sched-out in userspace (idle leaves it valid)
    assert per_policy(ops) == {
        "legacy": 4 * n + 5 * p + k + u,
        "vcpu_run": 4 * n + p + k + u,
        "deferred": 4 * n + p + k + u,
    }


@settings(max_examples=60, deadline=None)
@given(schedules)
def test_no_op_for_kernel_threads_or_idle(s: Schedule) -> None:
    result = replay(s.write().events())
    assert set(result.fpu_ops["pid"].unique().to_list()) <= {A.pid}
    tl = result.timeline
    kinds = {pid: k for pid, k in zip(tl.task_pid, tl.task_kind, strict=True)}
    assert kinds[A.pid] == Kind.VCPU and kinds[0] == Kind.IDLE
    assert all(kinds[k.pid] == Kind.KTHREAD for k in KTHREADS if k.pid in kinds)
    assert kinds.get(B.pid, Kind.USER) == Kind.USER


@settings(max_examples=60, deadline=None)
@given(schedules)
def test_ioctl_swaps_equal_the_kvm_fpu_lines_of_a_6x_recording(s: Schedule) -> None:
    s.style = "swap"
    events = s.write().events()
    ops = replay(events).fpu_ops
    fpu = events.filter(pl.col("event") == "kvm_fpu")
    loads, unloads = int(fpu["fpu_load"].sum()), int((~fpu["fpu_load"]).sum())
    entry = per_policy(ops, op="restore", context="guest", trigger="ioctl_entry")
    exit_ = per_policy(ops, op="restore", context="user", trigger="ioctl_exit")
    assert entry == {"legacy": loads, "vcpu_run": loads, "deferred": loads}
    assert exit_["vcpu_run"] == exit_["deferred"] == unloads
    if s.closed_form or not s.entries:
        assert exit_["legacy"] == unloads
    else:  # (vi): the sched-out already put the guest; vcpu_put finds it unloaded
        assert exit_["legacy"] == unloads - sum(r.preempted_at_end for r in s.runs)


@settings(max_examples=60, deadline=None)
@given(schedules)
def test_recorded_policy_reproduces_its_kvm_fpu_lines(s: Schedule) -> None:
    if s.style == "legacy" and not s.entries and not s.closed_form:
        # Without kvm_entry lines a legacy run preempted after its last exit
        # looks like one that re-entered (synthesised entry): legacy's replay
        # then reloads and puts once more than the kernel did.
        return
    events = s.write().events()
    check = validate(events)
    assert check.policy == ("legacy" if s.style == "legacy" else "deferred")
    assert check.ok, check.table
