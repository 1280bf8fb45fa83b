"""Migration-safety audit: was every read or write of a vCPU's FPU state made outside KVM_RUN?

The question (kernel-fpu-reference.md §1.3, §1.5): with the 2017 patch the
guest FPU state stays in the registers for the whole of KVM_RUN, so the
buffer KVM_GET_XSAVE copies from is stale while the vCPU runs.  The patch's
answer was the vCPU mutex: KVM_RUN holds ``vcpu->mutex`` from before its
guest FPU load until after its ``kvm_userspace_exit``, and so does every
ioctl that reads or writes the FPU state (KVM_GET_XSAVE, KVM_GET_XSAVE2,
KVM_SET_XSAVE, KVM_GET_FPU, KVM_SET_FPU).  Such a call that arrives while
its vCPU is inside KVM_RUN must wait until that KVM_RUN returns.

:func:`audit` checks that rule on one source's events:

1. **Calls.**  Every ``sys_enter_ioctl`` with one of those commands is paired
   with the next ``sys_exit_ioctl`` of the same thread (a thread is in one
   syscall at a time).  A call whose exit the trace does not show is
   ``incomplete``; an exit whose entry came before the trace started has no
   command and is only counted.
2. **Which vCPU.**  The fd a vCPU thread passes to KVM_RUN names that vCPU,
   within its process.  A call on fd F of process P targets the vCPU thread
   that runs KVM_RUN on F in P (:func:`map_vcpus`).  The process is the
   TGID when the trace prints it; otherwise it is inferred (see there).
   An fd no vCPU thread runs KVM_RUN on is reported as ``unknown``.
3. **When the vCPU held its mutex.**  Per KVM_RUN call of the vCPU thread,
   the stretch from its first to its last kvm event (``kvm_fpu``,
   ``kvm_entry``, ``kvm_exit``, ``kvm_userspace_exit``): all of them run
   under the mutex, whereas ``sys_enter_ioctl`` comes *before* the mutex is
   taken and ``sys_exit_ioctl`` *after* it is dropped.  These are the
   ``held`` intervals; "inside KVM_RUN" below means inside one.
4. **The rule.**  A call that entered inside a held interval must exit after
   that interval ends.  One whose entry and exit both fall inside the same
   held interval read or wrote the state while the vCPU was in KVM_RUN: a
   *violation*.  Order is by (timestamp, line); two events of different CPUs
   with the same timestamp are not ordered (microsecond clocks), so such a
   tie never makes a violation.  An exit logged inside a *later* KVM_RUN is
   fine: the caller dropped the mutex before that run took it and was
   preempted before its ``sys_exit_ioctl`` was logged.
5. **Where the guest state was.**  At the point the copy happened (the exit,
   or just before the KVM_RUN its exit was logged in, see 4), each policy's
   state machine (pipeline.policies, replayed again with probes) says where
   the vCPU's latest guest state is: ``memory`` (the guest FPU buffer the
   ioctl copies, so the copy is current), ``registers`` (live in a CPU: the
   buffer is stale), or ``task_fpstate`` (vcpu_run only: a context switch
   inside KVM_RUN saved it into the thread's own FPU buffer, not the guest's,
   so the guest buffer is stale too).  Under ``legacy`` a preempted vCPU's
   guest state was put back in the guest buffer by the preempt notifier;
   under ``deferred`` (5.16+ ``fpu_swap_kvm_fpstate``) the context switch
   saves straight into the guest fpstate.  A copy of anything but
   ``memory`` is stale and a violation too.

The result is the ``audit`` table: one row per call (:data:`AUDIT_SCHEMA`).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from pipeline.detect import POLICY_NAMES

if TYPE_CHECKING:
    from pipeline.replay import ReplayResult

#: The ioctls that read or write a vCPU's FPU state (all take vcpu->mutex).
FPU_STATE_CMDS = ("KVM_GET_XSAVE", "KVM_GET_XSAVE2", "KVM_SET_XSAVE", "KVM_GET_FPU", "KVM_SET_FPU")
WRITE_CMDS = frozenset({"KVM_SET_XSAVE", "KVM_SET_FPU"})
#: Events a vCPU thread logs only while it holds its mutex inside a vCPU ioctl.
KVM_EVENTS = ("kvm_fpu", "kvm_entry", "kvm_exit", "kvm_userspace_exit", "kvm_emulate_insn")

#: Where a policy keeps the guest's latest FPU state (see the module docstring).
MEMORY, REGISTERS, TASK_FPSTATE = "memory", "registers", "task_fpstate"

_IOCTL_EVENTS = ("sys_enter_ioctl", "sys_exit_ioctl")
_BEFORE_TRACE = -1  # order key of "before the trace's first event"
_AFTER_TRACE = 1 << 62  # order key (and line) of "after the trace's last event"

AUDIT_SCHEMA = pl.Schema(
    {
        "call_idx": pl.Int32(),
        "pid": pl.Int32(),
        "comm": pl.String(),
        "cmd": pl.String(),
        "fd": pl.Int32(),
        "write": pl.Boolean(),
        "enter_ns": pl.Int64(),
        "enter_line": pl.Int64(),
        "enter_cpu": pl.Int32(),
        "exit_ns": pl.Int64(),
        "exit_line": pl.Int64(),
        "exit_cpu": pl.Int32(),
        "ret": pl.Int64(),
        "vcpu_pid": pl.Int32(),
        "vcpu_comm": pl.String(),
        "mapped_by": pl.String(),
        "issuer": pl.String(),
        "duration_ns": pl.Int64(),
        "wait_ns": pl.Int64(),
        "held_off_ns": pl.Int64(),
        "blocked_ns": pl.Int64(),
        "in_run_at_enter": pl.Boolean(),
        "run_idx": pl.Int32(),
        "run_start_line": pl.Int64(),
        "run_end_ns": pl.Int64(),
        "run_end_line": pl.Int64(),
        "exit_in_later_run": pl.Boolean(),
        "inside_run": pl.Boolean(),
        "read_ns": pl.Int64(),
        "read_line": pl.Int64(),
        **{f"{p}_state": pl.String() for p in POLICY_NAMES},
        **{f"{p}_current": pl.Boolean() for p in POLICY_NAMES},
        "stale_under": pl.String(),
        "status": pl.String(),
        "violation": pl.Boolean(),
        "reason": pl.String(),
    }
)

#: ``mapped_by`` values, strongest evidence first.
MAPPINGS = ("tgid", "own_fd", "unique_fd", "pid_cluster", "unknown")


@dataclass
class AuditResult:
    """One source's audit: the calls (the ``audit`` table) and facts for the manifest."""

    calls: pl.DataFrame
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def violations(self) -> pl.DataFrame:
        """The calls that broke the rule (empty when the source is clean)."""
        return self.calls.filter(pl.col("violation"))

    @property
    def ok(self) -> bool:
        """True when no call broke the rule."""
        return self.violations.height == 0


# -- 1. calls -----------------------------------------------------------------------


def ordered(events: pl.DataFrame) -> pl.DataFrame:
    """``events`` sorted by (ts_ns, line_no) with ``ord``, its rank in that order."""
    return (
        events.filter(pl.col("ts_ns").is_not_null())
        .sort("ts_ns", "line_no")
        .with_row_index("ord")
        .with_columns(pl.col("ord").cast(pl.Int64))
    )


def ioctl_calls(ev: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Every ioctl (enter paired with the thread's next exit) and the exits with no entry.

    ``ev`` is :func:`ordered` output.  Returns one row per ``sys_enter_ioctl``
    (exit columns null when the thread logs no exit before its next entry or
    the trace end) and the number of exits whose entry precedes the trace.
    """
    keep = ["ord", "pid", "comm", "tgid", "line_no", "ts_ns", "cpu", "event"]
    io = (
        ev.filter(pl.col("event").is_in(_IOCTL_EVENTS) & (pl.col("pid") > 0))
        .select(*keep, "ioctl_fd", "ioctl_cmd", "ioctl_ret")
        .sort("pid", "ord")
    )
    nxt = {c: pl.col(c).shift(-1).over("pid") for c in ("event", "ord", "line_no", "ts_ns", "cpu")}
    prev_event = pl.col("event").shift(1).over("pid")
    orphan_exits = io.filter((pl.col("event") == "sys_exit_ioctl") & (prev_event.is_null())).height
    paired = nxt["event"] == "sys_exit_ioctl"
    calls = io.with_columns(
        exit_ord=pl.when(paired).then(nxt["ord"]),
        exit_line=pl.when(paired).then(nxt["line_no"]),
        exit_ns=pl.when(paired).then(nxt["ts_ns"]),
        exit_cpu=pl.when(paired).then(nxt["cpu"]),
        ret=pl.when(paired).then(pl.col("ioctl_ret").shift(-1).over("pid")),
    ).filter(pl.col("event") == "sys_enter_ioctl")
    names = {"ord": "enter_ord", "line_no": "enter_line", "ts_ns": "enter_ns"}
    names.update({"cpu": "enter_cpu", "ioctl_fd": "fd", "ioctl_cmd": "cmd"})
    calls = calls.rename(names).drop("event", "ioctl_ret")
    return calls.sort("enter_ord"), orphan_exits


# -- 2. which vCPU ---------------------------------------------------------------


@dataclass
class VcpuMap:
    """How calls find their vCPU: KVM_RUN fds per thread and each thread's process."""

    #: vCPU thread pid -> the fds it runs KVM_RUN on
    fds: dict[int, set[int]]
    #: pid -> process key ('tgid:N', or 'inferred:N' named after its lowest vCPU pid)
    process: dict[int, str]
    #: how processes were found: 'tgid', 'single' (one process's fds), 'pid_clusters'
    method: str

    def resolve(self, pid: int, fd: int | None) -> tuple[int | None, str]:
        """(vCPU pid, mapped_by) of a call by thread ``pid`` on ``fd``."""
        if fd is None:
            return None, "unknown"
        if fd in self.fds.get(pid, ()):
            return pid, "own_fd"  # the caller runs KVM_RUN on this fd itself
        owners = sorted(v for v, fds in self.fds.items() if fd in fds)
        if not owners:
            return None, "unknown"
        proc = self.process.get(pid)
        if proc is not None and proc.startswith("tgid:"):
            same = [v for v in owners if self.process.get(v) == proc]
            return (same[0], "tgid") if len(same) == 1 else (None, "unknown")
        if len(owners) == 1:
            return owners[0], "unique_fd"
        same = [v for v in owners if proc is not None and self.process.get(v) == proc]
        return (same[0], "pid_cluster") if len(same) == 1 else (None, "unknown")


def map_vcpus(calls: pl.DataFrame) -> VcpuMap:
    """Map fds to vCPU threads, and threads to processes (``calls``: :func:`ioctl_calls`).

    The process of a thread is its TGID when the trace prints one.  Without
    TGIDs (the default tracefs, trace-cmd and perf-script outputs) it is
    inferred, only where it matters (an fd two vCPU threads run KVM_RUN on):

    * vCPU threads are grouped in pid order, a new group starting at a
      thread whose KVM_RUN fd the current group already uses: in one process
      each vCPU has its own fd, and a VMM creates its vCPU threads one after
      another, so their thread ids are consecutive (QEMU, the model, the
      fixtures' harness);
    * any other thread belongs to the group of the vCPU thread nearest to it
      in pid (a VMM's helper threads are created among its vCPU threads).

    A call whose fd is run by one vCPU thread only needs no process at all.
    """
    runs = calls.filter(pl.col("cmd") == "KVM_RUN")
    fds: dict[int, set[int]] = {}
    for pid, fd in runs.select("pid", "fd").unique().iter_rows():
        if fd is not None:
            fds.setdefault(pid, set()).add(fd)
    tgids = {
        pid: tgid
        for pid, tgid in calls.filter(pl.col("tgid").is_not_null())
        .group_by("pid")
        .agg(pl.col("tgid").mode().first())
        .iter_rows()
    }
    callers = set(calls["pid"].to_list())
    process: dict[int, str] = {}
    method = "single"
    if tgids and all(p in tgids for p in fds):
        process = {p: f"tgid:{t}" for p, t in tgids.items()}
        method = "tgid"
    else:
        groups: list[tuple[list[int], set[int]]] = []
        for pid in sorted(fds):
            if not groups or groups[-1][1] & fds[pid]:
                groups.append(([], set()))
            groups[-1][0].append(pid)
            groups[-1][1].update(fds[pid])
        if len(groups) > 1:
            method = "pid_clusters"
        key = {pid: f"inferred:{g[0][0]}" for g in groups for pid in g[0]}
        process.update(key)
        vcpu_pids = sorted(key)
        for pid in callers - set(key):
            if vcpu_pids:
                nearest = min(vcpu_pids, key=lambda v: (abs(v - pid), v))
                process[pid] = key[nearest]
    return VcpuMap(fds, process, method)


# -- 3. held intervals ---------------------------------------------------------------


@dataclass
class Held:
    """A stretch in which a vCPU thread certainly held its mutex inside KVM_RUN."""

    start: tuple[int, int, int, int]  # (ord, ts_ns, line_no, cpu); ord -1: before the trace
    end: tuple[int, int, int, int]  # ord _AFTER_TRACE: held past the trace end
    run_idx: int | None = None


def held_intervals(
    ev: pl.DataFrame, runs: pl.DataFrame, vcpus: Iterable[int]
) -> dict[int, list[Held]]:
    """Per vCPU pid, its held intervals in order (see the module docstring, 3).

    A held interval is one KVM_RUN call's first to last kvm event (``vcpus``
    are mapped through their KVM_RUN ioctls, so those are traced); a KVM_RUN
    whose exit the trace lacks holds until the trace end, and kvm events
    before the thread's first ioctl event (a KVM_RUN in progress when the
    trace starts) hold from the trace start.  ``run_idx`` is the replay run
    (``runs``) the interval starts in.
    """
    vcpus = set(vcpus)
    n = ev.height
    first_ts = ev["ts_ns"].min() if n else 0
    last_ts = ev["ts_ns"].max() if n else 0
    before = (_BEFORE_TRACE, first_ts, 0, -1)
    after = (_AFTER_TRACE, last_ts, _AFTER_TRACE, -1)
    kvm = ev.filter(pl.col("event").is_in(KVM_EVENTS) & pl.col("pid").is_in(list(vcpus))).select(
        "pid", "ord", "ts_ns", "line_no", "cpu"
    )
    io = ev.filter(pl.col("event").is_in(_IOCTL_EVENTS) & pl.col("pid").is_in(list(vcpus))).select(
        "pid", "ord", "event", is_run=pl.col("ioctl_cmd") == "KVM_RUN"
    )
    out: dict[int, list[Held]] = {}
    by_pid_kvm = {k[0]: g for k, g in kvm.partition_by("pid", as_dict=True).items()}
    by_pid_io = {k[0]: g for k, g in io.partition_by("pid", as_dict=True).items()}
    for pid in vcpus:
        k = by_pid_kvm.get(pid)
        if k is None or k.height == 0:
            out[pid] = []
            continue
        out[pid] = _held_from_ioctls(list(k.iter_rows()), by_pid_io.get(pid), before, after)
    _attach_run_idx(out, runs)
    return out


def _held_from_ioctls(rows: list[tuple], io: pl.DataFrame | None, before, after) -> list[Held]:
    """Group a thread's kvm events (pid, ord, ts, line, cpu) by the KVM_RUN call they fall in."""
    marks = list(io.sort("ord").iter_rows()) if io is not None else []
    mark_ords = [m[1] for m in marks]
    groups: dict[int, list[tuple]] = {}
    for r in rows:
        i = bisect.bisect_left(mark_ords, r[1]) - 1
        if i < 0:
            # Before the thread's first ioctl event: inside the ioctl in progress
            # at the trace start (a KVM_RUN, since it logs kvm events).
            key = _BEFORE_TRACE
        else:
            _, _, event, is_run = marks[i]
            if event != "sys_enter_ioctl" or not is_run:
                continue  # another vCPU ioctl (KVM_GET_MP_STATE's load/put): not KVM_RUN
            key = mark_ords[i]
        groups.setdefault(key, []).append(r)
    held = []
    for key, g in sorted(groups.items()):
        start = before if key == _BEFORE_TRACE else _pos(g[0])
        i = bisect.bisect_right(mark_ords, g[-1][1])
        closed = i < len(marks) and marks[i][2] == "sys_exit_ioctl"
        end = _pos(g[-1]) if closed else after
        held.append(Held(start, end))
    return held


def _pos(row: tuple) -> tuple[int, int, int, int]:
    _, o, ts, line, cpu = row
    return (o, ts, line, cpu)


def _attach_run_idx(held: dict[int, list[Held]], runs: pl.DataFrame) -> None:
    by_pid = {k[0]: part for k, part in runs.partition_by("pid", as_dict=True).items()}
    for pid, intervals in held.items():
        mine = by_pid.get(pid, runs.clear()).sort("start_ns")
        starts = mine["start_ns"].to_list()
        idx = mine["run_idx"].to_list()
        for h in intervals:
            i = bisect.bisect_right(starts, h.start[1]) - 1
            h.run_idx = idx[i] if i >= 0 else (idx[0] if idx else None)


def _certainly_before(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """``a`` happened before ``b``: an earlier timestamp, or the same one on the same CPU."""
    if a[0] == _BEFORE_TRACE or b[0] == _AFTER_TRACE:
        return True
    return a[1] < b[1] or (a[1] == b[1] and a[3] == b[3] and a[0] < b[0])


def _containing(intervals: list[Held], starts: list[int], o: int) -> int | None:
    """Index of the held interval strictly containing order key ``o``."""
    i = bisect.bisect_left(starts, o) - 1
    if i >= 0 and o < intervals[i].end[0]:
        return i
    return None


# -- 5. where the guest state was, per policy -------------------------------------------


def _where_legacy(p: Any, t: int, on_cpu: bool) -> str:
    # Loaded only between a guest entry and the next put (sched-out or ioctl end).
    return REGISTERS if p.in_run[t] and p.loaded[t] else MEMORY


def _where_vcpu_run(p: Any, t: int, on_cpu: bool) -> str:
    if not (p.in_run[t] and p.loaded[t]):
        return MEMORY
    # Inside KVM_RUN the registers hold the guest as the task's own state: a
    # sched-out saves it into the task's fpstate, not vcpu->arch.guest_fpu.
    return REGISTERS if on_cpu else TASK_FPSTATE


def _where_deferred(p: Any, t: int, on_cpu: bool) -> str:
    # 5.16+: with TIF_NEED_FPU_LOAD set the context switch has saved the
    # registers into fpu->fpstate, which inside KVM_RUN is the guest fpstate.
    if p.in_run[t] and p.loaded[t] and not p.tif[t]:
        return REGISTERS
    return MEMORY


WHERE: dict[str, Callable[[Any, int, bool], str]] = {
    "legacy": _where_legacy,
    "vcpu_run": _where_vcpu_run,
    "deferred": _where_deferred,
}


def _probed(cls: type, where: Callable[[Any, int, bool], str]) -> type:
    """``cls`` (a pipeline.policies Policy) that records where watched vCPUs' guest state is.

    After every step that concerns a watched task the subclass appends
    ((ts, line), location) to that task's list, so the location at any
    point of the trace is a bisect away.  Only the public step methods are
    overridden; the counting is the policy's own.
    """

    class Probed(cls):  # type: ignore[misc, valid-type]
        def __init__(self, tl: Any, watch: set[int]) -> None:
            super().__init__(tl)
            self.watch = watch
            self.on_cpu = [False] * len(tl.task_pid)
            for t in tl.initial_cpu.values():
                if t >= 0:
                    self.on_cpu[t] = True
            self.snaps: dict[int, tuple[list[tuple[int, int]], list[str]]] = {
                t: ([(-1, -1)], [where(self, t, self.on_cpu[t])]) for t in watch
            }

        def _snap(self, t: int, st: tuple) -> None:
            if t in self.watch:
                keys, locs = self.snaps[t]
                keys.append((st[1], st[2]))
                locs.append(where(self, t, self.on_cpu[t]))

        def switch_out(self, t: int, st: tuple) -> None:
            super().switch_out(t, st)
            self.on_cpu[t] = False
            self._snap(t, st)

        def switch_in(self, t: int, st: tuple) -> None:
            super().switch_in(t, st)
            self.on_cpu[t] = True
            self._snap(t, st)

        def run_start(self, st: tuple) -> None:
            super().run_start(st)
            self._snap(st[4], st)

        def run_end(self, st: tuple) -> None:
            super().run_end(st)
            self._snap(st[4], st)

        def entry(self, st: tuple) -> None:
            super().entry(st)
            self._snap(st[4], st)

        def init_reset(self, st: tuple) -> None:
            super().init_reset(st)
            self._snap(st[4], st)

        def mp_state(self, st: tuple) -> None:
            super().mp_state(st)
            self._snap(st[4], st)

        def emulation(self, st: tuple) -> None:
            super().emulation(st)
            self._snap(st[4], st)

    Probed.__name__ = f"{cls.__name__}Probed"
    return Probed


def guest_locations(
    tl: Any, policies: Sequence[str], pids: Iterable[int]
) -> dict[str, dict[int, tuple[list[tuple[int, int]], list[str]]]]:
    """Per policy and vCPU pid: (sorted (ts, line) keys, location after each)."""
    from pipeline.policies import POLICIES

    pids = set(pids)
    watch = {t for t, p in enumerate(tl.task_pid) if p in pids}
    out: dict[str, dict[int, tuple[list[tuple[int, int]], list[str]]]] = {}
    for name in policies:
        where = WHERE.get(name, _where_vcpu_run)  # a future policy: the strictest reading
        probe = _probed(POLICIES[name], where)(tl, watch)
        probe.run()
        merged: dict[int, list[tuple[tuple[int, int], str]]] = {}
        for t, (keys, locs) in probe.snaps.items():
            merged.setdefault(tl.task_pid[t], []).extend(zip(keys, locs, strict=True))
        out[name] = {}
        for pid, pairs in merged.items():
            pairs.sort(key=lambda kv: kv[0])
            out[name][pid] = ([k for k, _ in pairs], [v for _, v in pairs])
    return out


class _Locations:
    """:func:`guest_locations`, computed on first use: only calls inside a run need them."""

    def __init__(self, tl: Any, policies: Sequence[str], pids: Iterable[int]) -> None:
        self.args = (tl, policies, set(pids))
        self.found: dict[str, dict[int, tuple[list[tuple[int, int]], list[str]]]] | None = None

    def get(self, policy: str, pid: int) -> tuple[list[tuple[int, int]], list[str]] | None:
        """(keys, locations) of ``pid`` under ``policy``."""
        if self.found is None:
            self.found = guest_locations(*self.args)
        return self.found[policy].get(pid)


def _location_at(snaps: tuple[list[tuple[int, int]], list[str]], key: tuple[int, int]) -> str:
    """The location after the last step at or before ``key`` (ts, line)."""
    keys, locs = snaps
    return locs[max(bisect.bisect_right(keys, key) - 1, 0)]


# -- the audit ---------------------------------------------------------------------------


def audit(
    events: pl.DataFrame,
    result: ReplayResult | None = None,
    *,
    policies: Sequence[str] = POLICY_NAMES,
    kernel: str | None = None,
    recorded_policy: str | None = None,
) -> AuditResult:
    """Audit one source's FPU-state ioctls (``events``: ingest.schema columns).

    ``result`` is the source's pipeline.replay.ReplayResult when the caller
    has it (its timeline and runs are reused); otherwise the timeline is
    rebuilt here, replaying no policy.  The policies run once more, with
    probes, only when a call lies inside KVM_RUN.  ``kernel`` and
    ``recorded_policy`` are passed to the replay as ``fpureplay replay`` would.
    """
    ev = ordered(events)
    calls, orphan_exits = ioctl_calls(ev)
    fpu = calls.filter(pl.col("cmd").is_in(FPU_STATE_CMDS))
    info: dict[str, Any] = {
        "calls": fpu.height,
        "exits_without_entry": orphan_exits,
        "policies": list(policies),
    }
    if fpu.height == 0:
        info.update(_summary(AUDIT_SCHEMA.to_frame()))
        return AuditResult(AUDIT_SCHEMA.to_frame(), info)
    if result is None:
        from pipeline.replay import replay

        result = replay(events, policies=(), kernel=kernel, recorded_policy=recorded_policy)
    tl = result.timeline
    comm = {p: c for p, c in zip(tl.task_pid, tl.task_comm, strict=True) if c is not None}
    vmap = map_vcpus(calls)
    info["process_rule"] = vmap.method
    rows = []
    targets: dict[tuple[int, int], tuple[int | None, str]] = {}
    for pid, fd in fpu.select("pid", "fd").unique().iter_rows():
        targets[(pid, fd)] = vmap.resolve(pid, fd)
    vcpu_pids = {v for v, _ in targets.values() if v is not None}
    held = held_intervals(ev, result.runs, vcpu_pids)
    held_starts = {v: [h.start[0] for h in hs] for v, hs in held.items()}
    where = _Locations(tl, policies, vcpu_pids)
    sleeps = _sleeps(ev, tl, set(fpu["pid"].to_list()))
    for i, c in enumerate(fpu.iter_rows(named=True)):
        vcpu, mapped_by = targets[(c["pid"], c["fd"])]
        rows.append(
            _judge(i, c, vcpu, mapped_by, vmap, held, held_starts, where, policies, sleeps, comm)
        )
    frame = pl.DataFrame(rows, schema=AUDIT_SCHEMA, orient="row")
    info.update(_summary(frame))
    return AuditResult(frame, info)


def _sleeps(ev: pl.DataFrame, tl: Any, pids: set[int]) -> dict[int, tuple[list[int], list, list]]:
    """Per calling thread: its D-state sched-outs (ord, ts) and its switch-ins (ord, ts)."""
    outs = ev.filter(
        (pl.col("event") == "sched_switch")
        & pl.col("prev_pid").is_in(list(pids))
        & pl.col("prev_state").str.starts_with("D")
    ).select("prev_pid", "ord", "ts_ns")
    ins = (
        tl.switches.filter(pl.col("next_pid").is_in(list(pids)))
        .select("next_pid", "line_no", "ts_ns")
        .join(ev.select("line_no", "ord"), on="line_no", how="left")
        .drop_nulls("ord")
        .sort("ord")
    )
    out: dict[int, tuple[list[int], list, list]] = {}
    for pid in pids:
        o = outs.filter(pl.col("prev_pid") == pid).sort("ord")
        n = ins.filter(pl.col("next_pid") == pid)
        out[pid] = (
            n["ord"].to_list(),
            list(zip(o["ord"].to_list(), o["ts_ns"].to_list(), strict=True)),
            n["ts_ns"].to_list(),
        )
    return out


def _blocked_ns(sl: tuple[list[int], list, list], enter: int, exit_: int, exit_ns: int) -> int:
    """Time the caller spent switched out after D-state sched-outs between enter and exit."""
    in_ords, outs, in_ts = sl
    total = 0
    for o, ts in outs:
        if not enter < o < exit_:
            continue
        j = bisect.bisect_right(in_ords, o)
        back = in_ts[j] if j < len(in_ords) and in_ords[j] < exit_ else exit_ns
        total += max(back - ts, 0)
    return total


def _judge(
    i: int,
    c: dict[str, Any],
    vcpu: int | None,
    mapped_by: str,
    vmap: VcpuMap,
    held: dict[int, list[Held]],
    held_starts: dict[int, list[int]],
    where: _Locations,
    policies: Sequence[str],
    sleeps: dict[int, tuple[list[int], list, list]],
    comm: dict[int, str | None],
) -> tuple:
    """One audit row for call ``c`` (a row of :func:`ioctl_calls`)."""
    pid = c["pid"]
    complete = c["exit_ord"] is not None
    enter = (c["enter_ord"], c["enter_ns"], c["enter_line"], c["enter_cpu"])
    exit_ = (c["exit_ord"], c["exit_ns"], c["exit_line"], c["exit_cpu"]) if complete else None
    duration = c["exit_ns"] - c["enter_ns"] if complete else None
    blocked = (
        _blocked_ns(sleeps[pid], enter[0], exit_[0], exit_[1]) if exit_ is not None else None
    )
    issuer = (
        "vcpu_thread" if vcpu == pid else "other_vcpu" if pid in vmap.fds else "other_thread"
    )
    states: dict[str, str | None] = dict.fromkeys(POLICY_NAMES)
    current: dict[str, bool | None] = dict.fromkeys(POLICY_NAMES)
    in_run = run_idx = run_start_line = run_end_ns = run_end_line = None
    later = read = inside = None
    stale: list[str] = []
    held_off = 0
    violation = False
    reasons: list[str] = []
    who = f"{c['comm']} ({pid})"
    if vcpu is None:
        status = "unknown_vcpu"
        in_run = None
        others = sorted(v for v, fds in vmap.fds.items() if c["fd"] in fds)
        reasons.append(
            f"fd {c['fd']} is the KVM_RUN fd of vCPU threads of other processes only "
            f"({', '.join(map(str, others))})"
            if others
            else f"fd {c['fd']} is no vCPU thread's KVM_RUN fd in this trace"
        )
    else:
        intervals, starts = held[vcpu], held_starts[vcpu]
        vname = f"{comm.get(vcpu) or '?'} ({vcpu})"
        k = _containing(intervals, starts, enter[0])
        in_run = k is not None
        if k is not None:
            h = intervals[k]
            run_idx = h.run_idx
            run_start_line = h.start[2] if h.start[0] != _BEFORE_TRACE else None
            run_end_ns = h.end[1]
            run_end_line = h.end[2] if h.end[0] != _AFTER_TRACE else None
        if exit_ is None:
            status = "incomplete"
        else:
            m = _containing(intervals, starts, exit_[0])
            later = m is not None and m != k
            if k is not None and m != k:
                # It returned after the KVM_RUN it arrived in: held off until then.
                held_off = max(intervals[k].end[1] - enter[1], 0)
            read = (exit_[1], exit_[2])
            if later:
                # Logged inside a later KVM_RUN: the copy was made before that run
                # took the mutex, so the state is judged just before its start.
                assert m is not None
                read = (intervals[m].start[1], intervals[m].start[2])
            inside = (
                k is not None
                and m == k
                and _certainly_before(intervals[k].start, enter)
                and _certainly_before(exit_, intervals[k].end)
            )
            if inside:
                assert k is not None
                h = intervals[k]
                start_txt = f"line {h.start[2]}" if h.start[0] != _BEFORE_TRACE else "trace start"
                end_txt = f"line {run_end_line}" if run_end_line is not None else "trace end"
                reasons.append(
                    f"{c['cmd']} by {who} entered at line {enter[2]} and returned at line "
                    f"{exit_[2]} while {vname} was inside KVM_RUN ({start_txt} to "
                    f"{end_txt}): it did not wait for the vCPU mutex"
                )
            for p in policies:
                snaps = where.get(p, vcpu) if inside else ([(-1, -1)], [MEMORY])
                if snaps is None:
                    continue
                # Outside KVM_RUN every policy has put the guest state back in its
                # buffer before KVM_RUN dropped the mutex: only a copy made inside a
                # held interval can find it elsewhere.  (This also keeps the replay's
                # approximations of where a run's swap happens, e.g. a legacy
                # recording's run opening at sys_enter_ioctl, out of the verdict.)
                loc = _location_at(snaps, read) if inside else MEMORY
                states[p] = loc
                current[p] = loc == MEMORY
            stale = [p for p in policies if current[p] is False]
            if stale:
                where_txt = ", ".join(f"{p} (state in {states[p]})" for p in stale)
                reasons.append(
                    f"wrote a guest FPU buffer its next put overwrites under {where_txt}"
                    if c["cmd"] in WRITE_CMDS
                    else f"read a stale copy of the guest FPU state under {where_txt}"
                )
            violation = bool(inside or stale)
            status = "violation" if violation else "ok"
    wait = max(held_off, blocked or 0)
    return (
        i, pid, c["comm"], c["cmd"], c["fd"], c["cmd"] in WRITE_CMDS,
        c["enter_ns"], c["enter_line"], c["enter_cpu"],
        c["exit_ns"], c["exit_line"], c["exit_cpu"], c["ret"],
        vcpu, comm.get(vcpu) if vcpu is not None else None, mapped_by, issuer,
        duration, wait if complete else None, held_off, blocked,
        in_run, run_idx, run_start_line, run_end_ns, run_end_line, later, inside,
        read[0] if read else None, read[1] if read else None,
        *(states[p] for p in POLICY_NAMES), *(current[p] for p in POLICY_NAMES),
        ",".join(stale) or None, status, violation, "; ".join(reasons) or None,
    )  # fmt: skip


def _summary(calls: pl.DataFrame) -> dict[str, Any]:
    """Counts for the manifest and the CLI summary."""
    by_status = dict(calls.group_by("status").len().iter_rows()) if calls.height else {}
    return {
        "calls": calls.height,
        "violations": int(calls["violation"].sum() or 0) if calls.height else 0,
        "inside_run": int(calls["inside_run"].sum() or 0) if calls.height else 0,
        "stale": int(calls["stale_under"].is_not_null().sum()) if calls.height else 0,
        "unknown_vcpu": by_status.get("unknown_vcpu", 0),
        "incomplete": by_status.get("incomplete", 0),
        "in_run_at_enter": int(calls["in_run_at_enter"].sum() or 0) if calls.height else 0,
        "waited": int((calls["wait_ns"] > 0).sum() or 0) if calls.height else 0,
        "by_cmd": dict(sorted(calls.group_by("cmd").len().iter_rows())) if calls.height else {},
        "by_issuer": dict(sorted(calls.group_by("issuer").len().iter_rows()))
        if calls.height
        else {},
    }


# -- the dataset ---------------------------------------------------------------------------


def write_audit(root: Path, source_id: str, host: str, result: AuditResult) -> None:
    """Write one source's ``audit`` partition under ``root`` (a dataset or its staging copy)."""
    from ingest import dataset as ds

    path = ds.partition_dir(Path(root), "audit", source_id, host=host) / "part-0.parquet"
    ds.write_frame(path, result.calls)


def audit_dataset(
    dataset: Path,
    *,
    policies: Sequence[str] = POLICY_NAMES,
    recorded_policy: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], dict[str, AuditResult]]:
    """Audit every source of ``dataset`` and write its ``audit`` table; returns (manifest, results).

    As ``replay_dataset`` does, the table is written into a staged copy of
    the dataset and swapped in whole (ingest.dataset.staging): an earlier
    ``audit`` table is replaced, and a failure leaves the dataset as it was.
    Each source's counts go to its manifest entry under ``audit``.
    """
    import shutil

    from ingest import dataset as ds
    from ingest.errors import InputError
    from pipeline.orchestrate import read_events

    dataset = Path(dataset)
    ds.read_manifest(dataset)  # a clear error when it is not a dataset
    unknown = [p for p in policies if p not in POLICY_NAMES]
    if unknown:
        raise InputError(str(dataset), f"unknown policy {unknown[0]!r}")
    results: dict[str, AuditResult] = {}
    with ds.staging(dataset, copy_existing=True) as stage:
        if (stage.path / "audit").exists():
            shutil.rmtree(stage.path / "audit")  # unlinks the staged links only
        for source in stage.manifest["sources"]:
            if progress:
                progress(source["id"])
            events = read_events(dataset, source["id"], source["host"])
            try:
                result = audit(
                    events,
                    policies=policies,
                    kernel=source.get("kernel"),
                    recorded_policy=recorded_policy,
                )
            except ValueError as exc:
                raise InputError(source["path"], str(exc)) from exc
            write_audit(stage.path, source["id"], source["host"], result)
            source["audit"] = result.info
            results[source["id"]] = result
        stage.manifest["audit"] = {
            "policies": list(policies),
            "commands": list(FPU_STATE_CMDS),
            "recorded_policy_override": recorded_policy,
        }
        manifest = stage.manifest
        stage.commit()
    return manifest, results
