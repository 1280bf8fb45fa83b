"""Reconstruct who ran where from the `events` of one source (reference §3, §7).

One pass over the events, in (ts_ns, line_no) order, keeps per CPU the task
that is current there, and produces:

* the context switches, logged or *inferred*: when a task logs an event on a
  CPU while its timeline says another task is current there (or that it is
  off-CPU), the missing switch-in (and the switch-out of whoever was current,
  usually idle) is inferred at that event and marked; no event is dropped;
* a logged switch-out that arrives after its task was already seen on
  another CPU (and inferred to have left), with nothing else on its CPU in
  between, is that inferred switch-out stamped late by a CPU clock that
  disagrees: it is merged into it rather than inventing a round trip;
* task lifetimes: a pid reused after its thread exited (``prev_state`` X/Z) is
  a new task; each task gets a kind (pipeline.tasks);
* on-CPU *slices* and whether each returned to userspace (used by `deferred`
  to decide whether a switched-in user task restored its registers);
* the KVM_RUN runs of every vCPU thread (pipeline.kvmrun) with their
  preemptions, blocks, migrations and completeness;
* the replay *steps* the policies consume (pipeline.codes ``ST_*``).

Events some kernels log with the *previous* task's pid right after its
sched_switch (x86_fpu_regs_deactivated, <= 5.1 x86_fpu_regs_activated and the
legacy preempt-notifier kvm_fpu unload; reference §1.6) are attributed to
that task and never trigger an inference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from pipeline.codes import (
    E_ACT,
    E_DEACT,
    E_ENTRY,
    E_FPU,
    E_IOCTL_IN,
    E_LOST,
    E_OTHER,
    E_SWITCH,
    E_UEXIT,
    R_KVM,
    R_LOST,
    R_SWITCH,
    S_BLOCK,
    S_EXIT,
    S_UNKNOWN,
    UNKNOWN_TASK,
)
from pipeline.prepare import (
    FPU_LOAD,
    FPU_TAIL,
    SW_NEXT_LOGS,
    SW_RESTORED,
    SW_SAVED,
    prepare,
)
from pipeline.steps import StepBuilder
from pipeline.tasks import Kind, decide_kind

# Record kinds in the ordered record list of the first pass:
#   [R_SWITCH, row, cpu, prev, next, state, inferred, next_sid, saved, prev_sid]
#   (R_KVM, row, task, tail, task_switch_count)
#   (R_LOST, row, cpu)

_NOT_SEEN = -2  # a CPU on which nothing has been logged yet

# Per-task evidence bits.
_LOGS_KVM = 1
_FPU_EVIDENCE = 2

# Which comm names a task (resolved after the pass): the row's task column,
# or the prev/next side of a sched_switch.
_COMM, _PREV_COMM, _NEXT_COMM = 0, 1, 2


@dataclass
class Timeline:
    """What the policies replay, plus the tables and facts the manifest reports."""

    steps: list[tuple[int, ...]]
    slice_returns: list[bool]  # per on-CPU slice: the task returned to userspace
    task_pid: list[int]
    task_comm: list[str | None]
    task_kind: list[Kind]
    initial_cpu: dict[int, int]  # CPU -> task current there when the trace starts
    run_at_start: dict[int, int]  # task -> run_idx of the run it is inside at the start
    runs: pl.DataFrame
    guest_run_rule: str
    user_return_rule: str
    inferred_switch_ins: int
    first_ts: int | None
    last_ts: int | None
    n_events: int
    lost_markers: int
    n_cpus: int = 1
    notes: list[str] = field(default_factory=list)
    switches_builder: Callable[[], pl.DataFrame] | None = field(default=None, repr=False)
    _switches: pl.DataFrame | None = field(default=None, repr=False)

    @property
    def switches(self) -> pl.DataFrame:
        """Every context switch the replay used, logged or inferred (built on demand)."""
        if self._switches is None:
            assert self.switches_builder is not None
            self._switches = self.switches_builder()
        return self._switches

    def vcpu_tasks(self) -> list[int]:
        """Task ids of the vCPU threads, in order of first appearance."""
        return [t for t, k in enumerate(self.task_kind) if k == Kind.VCPU]


def user_return_rule(events: pl.DataFrame) -> str:
    """'x86_fpu' when >= 5.2 x86_fpu events log restores and saves, else 'heuristic'."""
    names = events.filter(pl.col("fpu_tif").is_not_null())["event"].unique().to_list()
    return (
        "x86_fpu"
        if {"x86_fpu_regs_activated", "x86_fpu_regs_deactivated"} <= set(names)
        else ("heuristic")
    )


_KVM_CODES = frozenset({E_FPU, E_ENTRY, E_UEXIT})


class _Pass:
    """The first pass: tasks, current task per CPU, inferences, slices, records."""

    def __init__(self, n_cpus: int, evidence_mode: bool) -> None:
        self.cur: list[int] = [_NOT_SEEN] * n_cpus
        self.recent_prev: list[int] = [UNKNOWN_TASK] * n_cpus
        self.last_switch: list[list[Any] | None] = [None] * n_cpus
        self.slice_of: list[int] = [-1] * n_cpus
        self.task_of: dict[int, int] = {}  # pid -> its live task (dropped at exit)
        self.t_pid: list[int] = []
        self.t_comm_src: list[tuple[int, int]] = []
        self.t_kvm_row: list[int] = []  # a vCPU thread is named as its kvm events show
        self.t_flags: list[int] = []
        self.t_on: list[int] = []
        self.t_switches: list[int] = []
        self.t_kvm: list[list[int]] = []
        # per on-CPU slice: how it ended (-1 still running), events, evidence
        self.sl_end: list[int] = []
        self.sl_events: list[int] = []
        self.sl_evidence: list[bool] = []
        self.records: list[Any] = []
        # per CPU: the inferred switch-out of a task that showed up on another
        # CPU, while nothing else has happened on this one since (see late_out)
        self.unseen_out: list[list[Any] | None] = [None] * n_cpus
        self.initial_cpu: dict[int, int] = {}
        self.inferred = 0
        self.evidence_mode = evidence_mode
        self.idle = self.new_task(0, -1, _COMM)  # task 0: the idle task (pid 0, every CPU)

    def new_task(self, pid: int, row: int, which: int) -> int:
        """A task lifetime starting at ``row``: a new pid, or a pid reused after an exit."""
        t = len(self.t_pid)
        self.t_pid.append(pid)
        self.t_comm_src.append((row, which))
        self.t_kvm_row.append(-1)
        self.t_flags.append(0)
        self.t_on.append(-1)
        self.t_switches.append(0)
        self.t_kvm.append([])
        self.task_of[pid] = t
        return t

    def slice_returns(self) -> list[bool]:
        """Per slice: did the task go back to userspace (fpu-model.md, starting state)?"""
        if self.evidence_mode:
            # >= 5.2: a restore (activated) or a save (deactivated) of its own
            # shows TIF_NEED_FPU_LOAD was cleared, i.e. it returned to userspace.
            return [
                e < 0 or e == S_UNKNOWN or ev
                for e, ev in zip(self.sl_end, self.sl_evidence, strict=True)
            ]
        # Taken to return unless it blocks again before logging anything.
        return [
            not (e == S_BLOCK and n == 0) for e, n in zip(self.sl_end, self.sl_events, strict=True)
        ]

    # -- switches -------------------------------------------------------------
    def switch(self, row: int, cpu: int, prev: int, nxt: int, state: int, inferred: bool) -> list:
        """Record a switch on ``cpu`` (``prev`` or ``nxt`` may be UNKNOWN_TASK)."""
        self.unseen_out[cpu] = None
        prev_sid = self.slice_of[cpu]
        if prev_sid >= 0:
            self.sl_end[prev_sid] = state
        if prev >= 0:
            if prev != self.idle:
                self.t_on[prev] = -1
            self.t_switches[prev] += 1
        sid = -1
        if nxt >= 0:
            sid = len(self.sl_end)
            self.sl_end.append(-1)
            self.sl_events.append(0)
            self.sl_evidence.append(False)
            if nxt != self.idle:
                self.t_on[nxt] = cpu
            self.t_switches[nxt] += 1
        self.slice_of[cpu] = sid
        rec = [R_SWITCH, row, cpu, prev, nxt, state, inferred, sid, False, prev_sid]
        self.records.append(rec)
        self.cur[cpu] = nxt
        return rec

    def leave_other_cpu(self, row: int, t: int, cpu: int) -> None:
        """``t`` shows up on ``cpu`` while believed current elsewhere: it left unseen."""
        other = self.t_on[t]
        if t != self.idle and other >= 0 and other != cpu:
            rec = self.switch(row, other, t, UNKNOWN_TASK, S_UNKNOWN, True)
            self.recent_prev[other] = UNKNOWN_TASK
            self.unseen_out[other] = rec

    def late_out(self, row: int, cpu: int, t: int, state: int, flag: int) -> list[Any] | None:
        """A logged switch-out of ``t`` on ``cpu`` after ``t`` was seen arriving elsewhere.

        When ``t`` shows up on another CPU while believed current on ``cpu``,
        its switch-out here is inferred.  If the next thing on ``cpu`` is
        ``t``'s own logged switch-out, that is the switch the inference
        stood for, stamped after ``t``'s arrival on the other CPU: the two
        CPUs' clocks disagree (a per-CPU trace clock) by more than the gap
        between the two switches.  The inferred switch-out takes the logged
        state (and the observed save), and ``t`` is not brought back to
        ``cpu`` only to leave it again, which would invent a round trip
        (a restore and a save) and a migration.  Returns the inferred record
        it merged into, or None when the rule does not apply.
        """
        rec = self.unseen_out[cpu]
        if rec is None or rec[3] != t:
            return None
        rec[1] = row  # its time and line are the logged line's (the ops it causes name it)
        rec[5] = state
        rec[6] = False  # the switch is in the trace: only its place was inferred
        if rec[9] >= 0:
            self.sl_end[rec[9]] = state
        if flag & SW_SAVED:
            rec[8] = True
            self.t_flags[t] |= _FPU_EVIDENCE
            if rec[9] >= 0:
                self.sl_evidence[rec[9]] = True
        return rec

    def ensure_current(self, row: int, cpu: int, t: int) -> None:
        """Make ``t`` current on ``cpu``, inferring the switch the trace did not log."""
        cur = self.cur[cpu]
        if cur == t:
            return
        self.leave_other_cpu(row, t, cpu)
        if cur == _NOT_SEEN:
            # The task running when the trace starts (fpu-model.md: starting state).
            self.initial_cpu[cpu] = t
            self.cur[cpu] = t
            if t != self.idle:
                self.t_on[t] = cpu
            self.slice_of[cpu] = len(self.sl_end)
            self.sl_end.append(-1)
            self.sl_events.append(0)
            self.sl_evidence.append(False)
            return
        self.switch(row, cpu, cur, t, S_UNKNOWN, True)
        self.inferred += 1
        self.recent_prev[cpu] = UNKNOWN_TASK

    def run(self, df: pl.DataFrame) -> None:
        """Walk every row once (the hot loop: ints and flat lists only)."""
        loads_from_user = not bool((df["code"] == E_IOCTL_IN).any())
        recent_prev = self.recent_prev
        records = self.records
        slice_of = self.slice_of
        sl_events = self.sl_events
        sl_evidence = self.sl_evidence
        t_flags = self.t_flags
        t_kvm = self.t_kvm
        t_switches = self.t_switches
        t_kvm_row = self.t_kvm_row
        t_on = self.t_on
        task_of = self.task_of
        cur = self.cur
        last_switch = self.last_switch
        new_task = self.new_task
        sl_end = self.sl_end
        unseen_out = self.unseen_out
        idle = self.idle
        cols = [
            df[c].to_list() for c in ("code", "cpu", "pid", "flag", "prev_pid", "next_pid", "st")
        ]
        for row, code, cpu, pid, flag, prev_pid, next_pid, st in zip(
            range(df.height), *cols, strict=True
        ):
            if code == E_SWITCH:
                tp = task_of.get(prev_pid)
                if tp is None:
                    tp = new_task(prev_pid, row, _PREV_COMM)
                late = None
                if cur[cpu] != tp:
                    late = self.late_out(row, cpu, tp, st, flag)
                    if late is None:
                        self.ensure_current(row, cpu, tp)
                tn = task_of.get(next_pid)
                if tn is None:
                    tn = new_task(next_pid, row, _NEXT_COMM)
                elif t_on[tn] >= 0 and t_on[tn] != cpu and tn != idle:
                    self.leave_other_cpu(row, tn, cpu)
                # the switch, inlined (this is the hottest path): end prev's slice
                unseen_out[cpu] = None
                psid = slice_of[cpu]
                if psid >= 0:
                    sl_end[psid] = st
                if late is None:
                    t_on[tp] = -1  # (idle's entry is never consulted)
                    t_switches[tp] += 1
                t_switches[tn] += 1
                t_on[tn] = cpu
                sid = slice_of[cpu] = len(sl_end)
                sl_end.append(-1)
                restored = flag & SW_RESTORED
                sl_events.append(1 if flag & (SW_RESTORED | SW_NEXT_LOGS) else 0)
                sl_evidence.append(bool(restored))
                saved = bool(flag & SW_SAVED)
                if late is None:
                    sw = [R_SWITCH, row, cpu, tp, tn, st, False, sid, saved, psid]
                    last_switch[cpu] = sw
                else:
                    # tp left this CPU at the merged record: only tn's switch-in is new
                    sw = [R_SWITCH, row, cpu, UNKNOWN_TASK, tn, st, False, sid, False, psid]
                    last_switch[cpu] = late
                records.append(sw)
                cur[cpu] = tn
                if saved:  # the outgoing task saved its registers right after
                    t_flags[tp] |= _FPU_EVIDENCE
                    if psid >= 0:
                        sl_evidence[psid] = True
                if restored:  # the incoming task's own deferred restore followed
                    t_flags[tn] |= _FPU_EVIDENCE
                    recent_prev[cpu] = UNKNOWN_TASK
                else:
                    recent_prev[cpu] = tp
                if st == S_EXIT and prev_pid:
                    del task_of[prev_pid]  # a later thread with this pid is a new task
                continue
            if code == E_DEACT:
                # Logged with the previous task's pid right after its switch (the
                # context-switch save), or by the current task (fpu__drop):
                # attributed, never a reason to infer a switch.
                t = task_of.get(pid)
                if t is None:
                    continue
                t_flags[t] |= _FPU_EVIDENCE
                if t == recent_prev[cpu]:
                    sw = last_switch[cpu]
                    if sw is not None and sw[3] == t:
                        sw[8] = True  # this switch-out saved (observed)
                        if sw[9] >= 0:
                            sl_evidence[sw[9]] = True
                elif t == cur[cpu] and slice_of[cpu] >= 0:
                    sl_evidence[slice_of[cpu]] = True
                continue
            if code == E_LOST:
                records.append((R_LOST, row, cpu))
                # events of this CPU are missing: a later switch-out there may be real
                if cpu >= 0:
                    unseen_out[cpu] = None
                else:
                    unseen_out[:] = [None] * len(unseen_out)
                continue
            if pid is None or pid < 0:
                continue  # perf prints -1 for a thread that exited before `perf script`
            t = task_of.get(pid)
            if code == E_FPU and flag == FPU_TAIL and t is not None and t == recent_prev[cpu]:
                # legacy: kvm_sched_out's put, logged right after the thread's own switch
                records.append((R_KVM, row, t, True, t_switches[t]))
                t_kvm[t].append(len(records) - 1)
                continue
            if t is None:
                t = new_task(pid, row, _COMM)
            if cur[cpu] != t:
                self.ensure_current(row, cpu, t)
            recent_prev[cpu] = UNKNOWN_TASK
            sid = slice_of[cpu]
            sl_events[sid] = 1
            if code == E_OTHER:
                continue
            if code == E_ACT:  # a deferred restore of its own (>= 5.2)
                t_flags[t] |= _FPU_EVIDENCE
                sl_evidence[sid] = True
                continue
            if code == E_IOCTL_IN or (code == E_FPU and flag == FPU_LOAD and loads_from_user):
                # issued from userspace (a load is, unless ioctl events show the
                # thread may have been preempted inside KVM_RUN before it)
                sl_evidence[sid] = True
            if code in _KVM_CODES or (code == E_IOCTL_IN and flag == 1):
                t_flags[t] |= _LOGS_KVM
            records.append((R_KVM, row, t, False, t_switches[t]))
            t_kvm[t].append(len(records) - 1)
            t_kvm_row[t] = row


def _notes(
    has_entry: bool, inferred: int, runs: list, rule: str, cut_by_exit: list[int]
) -> list[str]:
    """What a reader of the numbers should know about how this timeline was built."""
    notes = []
    if not has_entry:
        notes.append(
            "no kvm_entry events: a guest entry is synthesised at the start of each KVM_RUN,"
            " after each sched-in inside it and after an INIT reset"
        )
    if inferred:
        notes.append(
            f"{inferred} switch-ins inferred: a task logged events on a CPU the trace"
            " had not switched it to (sched_switch not logged)"
        )
    exits = set(cut_by_exit)
    cut = sum(
        1
        for g, r in enumerate(runs)
        if r.cut_end and r.close_rec is None and r.end_ts is not None and g not in exits
    )
    if cut:
        notes.append(f"{cut} runs whose end the trace does not show were cut at the next run")
    if exits:
        notes.append(
            f"{len(exits)} runs were cut where their thread exited (prev_state X/Z) inside"
            " KVM_RUN: the ioctl's return was not logged (events missing)"
        )
    if rule == "heuristic":
        notes.append(
            "no >= 5.2 x86_fpu events: a switched-in user task is taken to return to"
            " userspace unless it blocks again before logging anything"
        )
    return notes


def _comms(df: pl.DataFrame, sources: list[tuple[int, int]]) -> list[str | None]:
    """Resolve each task's naming comm (gathered once, after the pass)."""
    rows = [max(r, 0) for r, _ in sources]
    if df.height == 0:
        return [None] * len(sources)
    idx = pl.Series(rows, dtype=pl.UInt32)
    cols = {
        _COMM: df["comm"].gather(idx).to_list(),
        _PREV_COMM: df["prev_comm"].gather(idx).to_list(),
        _NEXT_COMM: df["next_comm"].gather(idx).to_list(),
    }
    return [cols[which][i] if r >= 0 else None for i, (r, which) in enumerate(sources)]


def build(
    events: pl.DataFrame, recorded_policy: str, *, df: pl.DataFrame | None = None
) -> Timeline:
    """Reconstruct the timeline of one source for replay.

    ``recorded_policy`` is the policy of the recording kernel ('legacy',
    'vcpu_run', 'deferred' or 'undetermined'); it only chooses how KVM_RUN
    boundaries are read from the kvm_fpu events (pipeline.kvmrun).  ``df`` is
    the output of :func:`prepare` when the caller already has it.
    """
    if df is None:
        df = prepare(events)
    n = df.height
    n_cpus = max(df["cpu"].max() or 0, 0) + 1 if n else 1
    rule = user_return_rule(events)
    p = _Pass(int(n_cpus), rule == "x86_fpu")
    p.run(df)
    returns = p.slice_returns()
    has_entry = bool((df["code"] == E_ENTRY).any()) if n else False
    # the trace's edges: of every event, including the lines prepare() dropped
    first_ts = events["ts_ns"].min() if events.height else None
    last_ts = events["ts_ns"].max() if events.height else None

    sources = [
        (kvm_row, _COMM) if kvm_row >= 0 else src
        for src, kvm_row in zip(p.t_comm_src, p.t_kvm_row, strict=True)
    ]
    comms = _comms(df, sources)
    kinds = [
        decide_kind(pid, comms[t], bool(fl & _LOGS_KVM), bool(fl & _FPU_EVIDENCE))
        for t, (pid, fl) in enumerate(zip(p.t_pid, p.t_flags, strict=True))
    ]
    # The idle task is one task id for pid 0 on every CPU.
    kinds[p.idle] = Kind.IDLE

    builder = StepBuilder(
        df=df,
        records=p.records,
        task_kvm=p.t_kvm,
        task_pid=p.t_pid,
        task_comm=comms,
        task_kind=kinds,
        legacy=recorded_policy == "legacy",
        has_entry=has_entry,
        first_ts=first_ts,
        last_ts=last_ts,
        initial_cpu=p.initial_cpu,
    )
    builder.build()
    return Timeline(
        steps=builder.steps,
        slice_returns=returns,
        task_pid=p.t_pid,
        task_comm=comms,
        task_kind=kinds,
        initial_cpu=p.initial_cpu,
        run_at_start=builder.run_at_start,
        runs=builder.runs_frame(),
        switches_builder=builder.switches_frame,
        guest_run_rule="kvm_entry" if has_entry else "synthesised",
        user_return_rule=rule,
        inferred_switch_ins=p.inferred,
        first_ts=first_ts,
        last_ts=last_ts,
        n_events=events.height,
        lost_markers=sum(1 for r in p.records if r[0] == R_LOST),
        n_cpus=int(n_cpus),
        notes=_notes(has_entry, p.inferred, builder.runs, rule, builder.cut_by_exit),
    )


__all__ = ["Timeline", "build", "prepare", "user_return_rule"]
