"""Timeline reconstruction on imperfect traces, with exact expectations.

Missing sched_switch events (inferred switches), a pid reused after its
thread exited, a vCPU thread exiting mid-trace, lost events inside a run,
runs cut by the trace's edges, INIT resets and KVM_GET_MP_STATE pairs, and
the two guest-run rules.  Traces are written with tests/replay_traces.py as a
6.x (`swap`) or 4.14 (`legacy`) kernel logs them.
"""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.replay import replay
from pipeline.tasks import Kind
from pipeline.validate import validate
from tests.replay_traces import IDLE, Task, TraceWriter

A = Task("CPU 0/KVM", 4321)
B = Task("fpu-user", 5000)
K = Task("kworker/0:1", 87)
I0 = Task(*IDLE)

SHAPE = ["policy", "op", "context", "trigger", "site", "redundant"]


def shape(ops: pl.DataFrame) -> list[tuple]:
    """The ops without their times and lines: what must not depend on how a switch was seen."""
    return ops.select(SHAPE).rows()


def count(ops: pl.DataFrame, policy: str, **eq: str) -> int:
    sel = ops.filter(pl.col("policy") == policy)
    for col, value in eq.items():
        sel = sel.filter(pl.col(col) == value)
    return sel.height


# -- missing sched_switch events ---------------------------------------------------


def _halt_once(log_switch_in: bool) -> TraceWriter:
    w = TraceWriter()
    w.run_start(A, 0)
    w.enter(A, 0, "HLT")
    w.sched_out(A, 0, "S", I0)
    w.wakeup(0, I0, A)
    if log_switch_in:
        w.switch(0, I0, "R", A)
    w.enter(A, 0, "IO_INSTRUCTION")
    w.run_end(A, 0)
    return w


def test_missing_switch_from_idle_is_inferred() -> None:
    logged = replay(_halt_once(True).events())
    w = _halt_once(False)
    inferred = replay(w.events())
    assert logged.info["inferred_switch_ins"] == 0
    assert inferred.info["inferred_switch_ins"] == 1
    assert inferred.runs["inferred_switch_ins"].to_list() == [1]
    assert inferred.runs["blocks"].to_list() == [1]
    # The replay is the same as with the switch logged: idle left A's registers valid.
    assert shape(inferred.fpu_ops) == shape(logged.fpu_ops)
    assert count(inferred.fpu_ops, "deferred") == 5
    sw = inferred.timeline.switches.filter("inferred")
    assert sw.select("cpu", "prev_pid", "next_pid", "state").rows() == [(0, 0, 4321, "unknown")]
    # inferred at A's first event after the wakeup: its second kvm_entry (line 3 = lines[0])
    entries = [i + 3 for i, x in enumerate(w.lines) if "kvm_entry" in x]
    assert sw["line_no"].to_list() == [entries[1]]


def _preempted_by(other: Task, log_switch_back: bool) -> TraceWriter:
    w = TraceWriter()
    w.run_start(A, 0)
    w.enter(A, 0)
    w.sched_out(A, 0, "R", other)
    w.wakeup(0, other, Task("rcu_preempt", 15))
    if log_switch_back:
        w.switch(0, other, "R+", A)
    w.enter(A, 0, "IO_INSTRUCTION")
    w.run_end(A, 0)
    return w


@pytest.mark.parametrize("other", [K, B], ids=["kthread", "user"])
def test_missing_task_to_task_switch_is_inferred(other: Task) -> None:
    logged = replay(_preempted_by(other, True).events())
    inferred = replay(_preempted_by(other, False).events())
    assert inferred.info["inferred_switch_ins"] == 1
    sw = inferred.timeline.switches.filter("inferred")
    assert sw.select("prev_pid", "next_pid").rows() == [(other.pid, 4321)]
    assert shape(inferred.fpu_ops) == shape(logged.fpu_ops)
    # B took the registers (it returned to userspace): A restores the guest.
    assert count(inferred.fpu_ops, "deferred", op="restore", context="guest") == (
        2 if other is B else 1
    )


def test_task_seen_on_another_cpu_left_the_first_unseen() -> None:
    """A logs on CPU 1 while its timeline has it on CPU 0: out on 0 and in on 1 are inferred."""
    w = TraceWriter()
    w.switch(1, I0, "R", I0)  # CPU 1 is idle when the trace starts
    w.run_start(A, 0)
    w.enter(A, 0)
    w.enter(A, 1, "IO_INSTRUCTION")  # migrated: no sched_switch on either CPU
    w.wakeup(0, K, Task("rcu_preempt", 15))  # K is now seen running on CPU 0
    w.run_end(A, 1)
    result = replay(w.events())
    sw = result.timeline.switches.filter("inferred").sort("line_no", "cpu")
    assert sw.select("cpu", "prev_pid", "next_pid").rows() == [
        (0, 4321, None),  # A left CPU 0 to a task the trace does not show
        (1, 0, 4321),
        (0, None, 87),
    ]
    assert result.info["inferred_switch_ins"] == 2
    assert result.runs.select("migrations", "inferred_switch_ins").rows() == [(1, 1)]
    # Migrated: the registers on CPU 1 are not A's, so every policy restores.
    assert count(result.fpu_ops, "deferred", op="restore", context="guest", site="DEFER") == 1
    assert count(result.fpu_ops, "vcpu_run", op="restore", context="guest", site="CS-in") == 1


# -- task lifetimes ----------------------------------------------------------------


def _exit_and_reuse(reuser: Task | None) -> TraceWriter:
    w = TraceWriter()
    w.run_start(A, 0)
    w.enter(A, 0, "IO_INSTRUCTION")
    w.run_end(A, 0)
    w.switch(0, A, "X", I0)  # the vCPU thread exits
    if reuser is not None:
        w.switch(0, I0, "R", reuser)
        w.wakeup(0, reuser, Task("rcu_preempt", 15))
        w.switch(0, reuser, "R+", B)
        w.switch(0, B, "S", reuser)
        w.switch(0, reuser, "S", I0)
    return w


def test_vcpu_thread_exiting_mid_trace() -> None:
    w = _exit_and_reuse(None)
    result = replay(w.events())
    exit_line = next(i + 3 for i, x in enumerate(w.lines) if "prev_state=X" in x)
    for policy in ("legacy", "vcpu_run", "deferred"):
        ops = result.fpu_ops.filter(pl.col("policy") == policy)
        # the run's 4, then the save of the exiting task's user state at its
        # last switch (6.18 logs it: x86_fpu_regs_deactivated after prev_state=X)
        assert ops.select("op", "context", "line_no").rows()[-1] == ("save", "user", exit_line)
        assert ops.height == 5
    assert result.runs.select("run_idx", "complete").rows() == [(0, True)]
    assert result.info["vcpu_threads"] == [
        {"pid": 4321, "comm": "CPU 0/KVM", "kind": "vcpu", "runs": 1, "in_run_at_start": False}
    ]


@pytest.mark.parametrize(
    ("reuser", "kind"),
    [(Task("kworker/0:2", 4321), Kind.KTHREAD), (Task("sh", 4321), Kind.USER)],
    ids=["kthread", "user"],
)
def test_pid_reused_after_exit_is_a_new_task(reuser: Task, kind: Kind) -> None:
    result = replay(_exit_and_reuse(reuser).events())
    tl = result.timeline
    lives = [k for pid, k in zip(tl.task_pid, tl.task_kind, strict=True) if pid == 4321]
    assert lives == [Kind.VCPU, kind]
    assert [v["pid"] for v in result.info["vcpu_threads"]] == [4321]
    # No op after the vCPU thread's exit, for the new task with its pid.
    exit_ts = result.timeline.switches.filter(pl.col("state") == "exit")["ts_ns"].item()
    assert result.fpu_ops["ts_ns"].max() == exit_ts
    assert result.runs.height == 1


def test_pid_reused_by_another_vcpu_thread_continues_run_idx() -> None:
    w = _exit_and_reuse(None)
    w.switch(0, I0, "R", A)
    w.run_start(A, 0)
    w.enter(A, 0, "IO_INSTRUCTION")
    w.run_end(A, 0)
    result = replay(w.events())
    assert result.runs.select("pid", "run_idx").rows() == [(4321, 0), (4321, 1)]
    assert [v["pid"] for v in result.info["vcpu_threads"]] == [4321, 4321]
    assert result.fpu_ops.group_by("policy", "run_idx").len().filter(pl.col("run_idx") == 1)[
        "len"
    ].to_list() == [4, 4, 4]


# -- incomplete runs ---------------------------------------------------------------


def test_lost_events_inside_a_run_make_it_incomplete() -> None:
    w = TraceWriter()
    w.switch(1, I0, "R", I0)
    w.run_start(A, 0)
    w.enter(A, 0)
    w.lost(0)
    w.sched_out(A, 0, "R", K)
    w.switch(0, K, "I", A)
    w.enter(A, 0, "IO_INSTRUCTION")
    w.run_end(A, 0)
    w.run_start(A, 0)
    w.lost(1)  # on a CPU the run never touched
    w.enter(A, 0, "IO_INSTRUCTION")
    w.run_end(A, 0)
    result = replay(w.events())
    runs = result.runs.select("run_idx", "complete", "cut_by_lost_events")
    assert runs.rows() == [(0, False, True), (1, True, False)]
    assert result.info["lost_markers"] == 2
    assert result.info["incomplete_runs"] == 1
    # the incomplete run's ops still count: 4 + 5P (legacy), 4 + P (others), P = 1
    assert result.info["ops_from_incomplete_runs"] == {"legacy": 9, "vcpu_run": 5, "deferred": 5}
    assert result.fpu_ops.filter(pl.col("run_idx") == 0).group_by("policy").len().sort(
        "policy"
    ).rows() == [("deferred", 5), ("legacy", 9), ("vcpu_run", 5)]


def test_runs_cut_by_the_trace_edges() -> None:
    w = TraceWriter()
    w.enter(A, 0)  # already inside KVM_RUN when the trace starts
    w.sched_out(A, 0, "R", K)
    w.switch(0, K, "I", A)
    w.enter(A, 0, "IO_INSTRUCTION")
    w.run_end(A, 0)
    w.run_start(A, 0)
    w.enter(A, 0)  # still inside when the trace ends
    result = replay(w.events())
    runs = result.runs.select("run_idx", "complete", "cut_by_trace_start", "cut_by_trace_end")
    assert runs.rows() == [(0, False, True, False), (1, False, False, True)]
    assert result.runs["start_ns"][0] == w.events()["ts_ns"].min()
    assert result.runs["end_ns"][1] == w.events()["ts_ns"].max()
    assert result.info["vcpu_threads"][0]["in_run_at_start"] is True
    ops = result.fpu_ops.filter(pl.col("policy") == "deferred")
    # run 0: the sched-out save, then the put; run 1: the load.
    assert ops.select("run_idx", "op", "context").rows() == [
        (0, "save", "guest"),
        (0, "save", "guest"),
        (0, "restore", "user"),
        (1, "save", "user"),
        (1, "restore", "guest"),
    ]
    assert not ops["redundant"].any()


# -- KVM paths inside and outside KVM_RUN ---------------------------------------


def test_init_reset_inside_a_run() -> None:
    w = TraceWriter()
    w.run_start(A, 0)
    w.enter(A, 0)
    w.emit(A, 0, "kvm_fpu", "unload")  # kvm_vcpu_reset(init_event) on an MPX host
    w.emit(A, 0, "kvm_fpu", "load")
    w.enter(A, 0, "IO_INSTRUCTION")
    w.run_end(A, 0)
    events = w.events()
    result = replay(events)
    assert result.runs.height == 1
    for policy in ("legacy", "vcpu_run", "deferred"):
        ops = result.fpu_ops.filter(pl.col("policy") == policy)
        init = ops.filter(pl.col("trigger") == "init_reset")
        assert init.select("op", "context", "redundant").rows() == [
            ("save", "guest", False),
            ("restore", "user", True),
            ("save", "user", True),
            ("restore", "guest", False),
        ]
        assert ops.height == 8
    assert validate(events, result).ok


@pytest.mark.parametrize("with_ioctl", [False, True], ids=["kvm_only", "ioctl_events"])
def test_get_mp_state_pair_is_not_a_run(with_ioctl: bool) -> None:
    w = TraceWriter()
    if with_ioctl:
        w.ioctl(A, 0, "0x8004ae98")
    w.emit(A, 0, "kvm_fpu", "load")
    w.emit(A, 0, "kvm_fpu", "unload")
    if with_ioctl:
        w.ioctl_return(A, 0)
        w.ioctl(A, 0, "ae80")
    w.run_start(A, 0)
    w.enter(A, 0, "IO_INSTRUCTION")
    w.run_end(A, 0)
    if with_ioctl:
        w.ioctl_return(A, 0)
    events = w.events()
    result = replay(events)
    assert result.runs.height == 1
    ops = result.fpu_ops
    mp = ops.filter((pl.col("policy") == "deferred") & pl.col("reason").str.contains("MP_STATE"))
    assert mp.select("op", "context").rows() == [("restore", "guest"), ("save", "guest")]
    assert count(ops, "deferred") == 8
    # 4.15-5.4 and legacy kernels do not load the guest FPU for KVM_GET_MP_STATE.
    assert count(ops, "vcpu_run") == count(ops, "legacy") == 4
    assert validate(events, result).ok


def test_legacy_run_starts_at_the_kvm_run_ioctl() -> None:
    w = TraceWriter(style="legacy")
    w.ioctl(A, 0, "ae80")
    w.sched_out(A, 0, "R+", K)  # preempted before the first guest entry
    w.switch(0, K, "I", A)
    w.run_start(A, 0)
    w.enter(A, 0, "IO_INSTRUCTION")
    w.run_end(A, 0)
    w.ioctl_return(A, 0)
    events = w.events()
    result = replay(events)
    assert result.info["recorded_policy"] == "legacy"
    assert result.runs["start_ns"].item() == events["ts_ns"].min()
    assert result.runs["preemptions"].item() == 1
    # vcpu_run swaps at the ioctl entry, so its sched-out saves the guest;
    # legacy has not loaded the guest yet (L7b) and saves QEMU's state.
    assert count(result.fpu_ops, "vcpu_run", site="CS-out", context="guest") == 1
    assert count(result.fpu_ops, "legacy", site="CS-out", context="user") == 1
    assert validate(events, result).ok


# -- guest-run rule and user-return rule --------------------------------------------


def test_synthesised_entries_assume_the_guest_reenters() -> None:
    """Example (vi) without kvm_entry lines: the guest is taken to run after the sched-in."""
    w = TraceWriter(entries=False)
    w.run_start(A, 0)
    w.enter(A, 0)
    w.sched_out(A, 0, "R", B)
    w.switch(0, B, "R+", A)
    w.run_end(A, 0)
    result = replay(w.events())
    assert result.info["guest_run_rule"] == "synthesised"
    ops = result.fpu_ops
    assert (count(ops, "legacy"), count(ops, "vcpu_run"), count(ops, "deferred")) == (10, 6, 6)
    assert ops.filter("redundant").group_by("policy").len().rows() == [("legacy", 4)]


def _b_blocks_again(evidence: bool) -> TraceWriter:
    w = TraceWriter()
    w.run_start(A, 0)
    w.enter(A, 0)
    w.sched_out(A, 0, "R", B)
    if evidence:
        w.x86_fpu(A, 0, "deactivated", "2")
        w.x86_fpu(B, 0, "activated", "a3")  # B restores: it goes back to userspace
    w.switch(0, B, "S", A)
    if evidence:
        w.x86_fpu(B, 0, "deactivated", "a3")
    w.enter(A, 0, "IO_INSTRUCTION")
    w.run_end(A, 0)
    return w


@pytest.mark.parametrize("evidence", [False, True], ids=["heuristic", "x86_fpu"])
def test_user_task_that_blocks_again_takes_the_registers_only_if_it_restored(
    evidence: bool,
) -> None:
    result = replay(_b_blocks_again(evidence).events())
    assert result.info["user_return_rule"] == ("x86_fpu" if evidence else "heuristic")
    ops = result.fpu_ops
    # deferred: B switched in and blocked with nothing logged never returned to
    # userspace, so it did not take the registers; with x86_fpu evidence it did.
    assert count(ops, "deferred", op="restore", context="guest", site="DEFER") == int(evidence)
    # vcpu_run restores eagerly at every FPU task's switch-in.
    assert count(ops, "vcpu_run", op="restore", context="guest", site="CS-in") == 1


def test_preempted_inside_kvm_run_before_the_load() -> None:
    """With ioctl events the replay knows the thread is inside KVM_RUN at its switch-in."""
    w = TraceWriter()
    w.ioctl(A, 0, "ae80")
    w.sched_out(A, 0, "R", B)  # preempted between sys_enter_ioctl and the FPU load
    w.switch(0, B, "R+", A)
    w.run_start(A, 0)
    w.enter(A, 0, "IO_INSTRUCTION")
    w.run_end(A, 0)
    w.ioctl_return(A, 0)
    ops = replay(w.events()).fpu_ops
    deferred = ops.filter(pl.col("policy") == "deferred")
    # no restore of QEMU's state (it does not return to userspace), and the
    # load skips its save: TIF_NEED_FPU_LOAD is set, memory already holds it
    assert deferred.select("op", "context", "site").rows() == [
        ("save", "user", "CS-out"),
        ("restore", "guest", "KVM-load"),
        ("save", "guest", "KVM-put"),
        ("restore", "user", "KVM-put"),
    ]
    # vcpu_run restores QEMU's state eagerly at the switch-in, only for the load to save it
    vcpu_run = ops.filter((pl.col("policy") == "vcpu_run") & pl.col("redundant"))
    assert vcpu_run.select("op", "context", "site").rows() == [
        ("restore", "user", "CS-in"),
        ("save", "user", "KVM-load"),
    ]


def _counts(ops: pl.DataFrame, policy: str) -> tuple[tuple[int, int, int, int], dict]:
    own = ops.filter(pl.col("policy") == policy)

    def n(frame: pl.DataFrame, op: str, ctx: str) -> int:
        return frame.filter((pl.col("op") == op) & (pl.col("context") == ctx)).height

    pairs = (("save", "user"), ("restore", "user"), ("save", "guest"), ("restore", "guest"))
    counts = tuple(n(own, op, ctx) for op, ctx in pairs)
    red = own.filter("redundant")
    return counts, {f"{o} {c}": k for o, c, k in red.group_by("op", "context").len().iter_rows()}


def test_woken_and_blocked_again_without_entering_the_guest() -> None:
    """A spurious halt wakeup: switched in and out again inside KVM_RUN with no kvm_entry.

    deferred: TIF_NEED_FPU_LOAD is still set at the second sched-out, so it
    does not save (§2.D D6); vcpu_run saves the guest again (redundant);
    legacy saves QEMU's state again (L7b) and again at the re-entry.
    """
    w = TraceWriter()
    w.run_start(A, 0)
    w.enter(A, 0, "HLT")
    for _ in range(2):
        w.sched_out(A, 0, "S", I0)
        w.wakeup(0, I0, A)
        w.switch(0, I0, "R", A)
    w.enter(A, 0, "IO_INSTRUCTION")
    w.run_end(A, 0)
    ops = replay(w.events()).fpu_ops
    assert _counts(ops, "deferred") == ((1, 1, 2, 1), {})
    assert _counts(ops, "vcpu_run") == ((1, 1, 3, 1), {"save guest": 1})
    assert _counts(ops, "legacy") == ((4, 2, 2, 2), {"restore user": 1, "save user": 3})
    # the kernel skips that save: deferred predicts exactly the sched-outs it saves at
    saves = ops.filter((pl.col("policy") == "deferred") & (pl.col("site") == "CS-out"))
    outs = w.events().filter(pl.col("event") == "sched_switch").filter(pl.col("prev_pid") == A.pid)
    assert saves["line_no"].to_list() == outs["line_no"].to_list()[:1]


def test_blocked_again_in_userspace_without_returning() -> None:
    """Between runs A is woken but blocks again before returning to userspace.

    deferred neither restores QEMU's state at that switch-in nor saves it at
    the next sched-out; the eager policies restore it (B took the registers)
    only for the context switch to save it again.
    """
    w = TraceWriter()
    w.run_start(A, 0)
    w.enter(A, 0, "IO_INSTRUCTION")
    w.run_end(A, 0)
    w.switch(0, A, "S", B)  # blocks in userspace (a read)
    w.switch(0, B, "R+", A)  # B ran and returned to userspace: it holds the registers
    w.switch(0, A, "S", I0)  # A blocks again before logging anything
    w.switch(0, I0, "R", A)
    w.run_start(A, 0)
    w.enter(A, 0, "IO_INSTRUCTION")
    w.run_end(A, 0)
    ops = replay(w.events()).fpu_ops
    assert _counts(ops, "deferred") == ((3, 3, 2, 2), {})
    eager = ((4, 3, 2, 2), {"restore user": 1, "save user": 1})
    assert _counts(ops, "vcpu_run") == eager
    assert _counts(ops, "legacy") == eager
    restore = ops.filter((pl.col("policy") == "deferred") & (pl.col("site") == "DEFER"))
    assert restore.select("op", "context", "trigger").rows() == [("restore", "user", "sched_in")]
