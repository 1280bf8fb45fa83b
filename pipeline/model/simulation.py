"""The discrete-event loop: builds the host, runs it for a duration, returns a Schedule.

Time is integer nanoseconds from 0.  Events sit in one heap ordered by
(time, sequence number), so ties resolve in the order they were scheduled and
the run is a pure function of the seed and the parameters.  Everything starts
idle at time 0: the CPUs run their idle task and every thread's FPU state is in
memory, which is exactly the replay's assumption for a trace that starts there
(fpu-model.md, starting state), so the ground truth needs no warm-up guess.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from pipeline.model.distributions import Draws, generators
from pipeline.model.host import HostMixin
from pipeline.model.migration import MigrationMixin
from pipeline.model.params import namespace
from pipeline.model.schedule import (
    R_ENTRY,
    R_EXIT,
    R_RUN_IN,
    R_SWITCH,
    R_UEXIT,
    ROLE_HOST,
    ROLE_IDLE,
    ROLE_IOTHREAD,
    ROLE_KWORKER,
    ROLE_MIGRATION,
    ROLE_VCPU,
    ROLE_VMM_MAIN,
    U_IO,
    U_MMIO,
    U_RESTART,
    X_HLT,
    Schedule,
    TaskInfo,
)
from pipeline.model.scheduler import (
    A_IO_END,
    C_KWORKER,
    C_PICK,
    C_RESCHED,
    C_TICK,
    IDLE,
    SLEEPING,
    W_HOST,
    W_SPURIOUS,
    W_START,
    W_TIMER,
    SchedulerMixin,
)
from pipeline.model.vcpu import (
    G_HLT,
    G_IO,
    G_IPI,
    G_MMIO,
    G_NOTIFY,
    G_SIGNAL,
    G_TOKEN,
    INF,
    P_BLOCKED,
    P_G,
    P_PRE_G,
    P_PRE_H,
    P_SPURIOUS,
    P_TRANS,
    P_U,
    VcpuMixin,
)

HOST_NAMES = ("postgres", "python3", "nginx", "java", "redis-server", "ffmpeg", "node", "gcc")
#: Counted by the loop; runs, entries, halts and exits to userspace are counted from the
#: records afterwards (cheaper than counting in the loop).
STAT_KEYS = ("preemptions", "blocks", "migrations", "poll_wakes", "notifies", "ipis", "tokens",
             "spurious_wakes")  # fmt: skip
_START_SPREAD_NS = 200_000  # threads start within the first 200 us


class Task:
    """Mutable per-thread simulation state (static facts live in TaskInfo)."""

    __slots__ = (
        "busy_left", "call", "cpu", "end_at", "end_reason", "entry_step", "fd", "g_reason", "gen",
        "halt_next", "id", "in_ioctl", "in_run", "mean_gap_ns", "mig_k", "mig_phase", "mutex",
        "partner", "pending_irq", "phase", "pinned", "queue", "rate_total", "rates_cum",
        "remaining", "role", "run_rec", "seg_start", "state", "tick_ns", "tick_phase", "uexit",
        "vcpu_id", "vm", "waiters", "wgen",
    )  # fmt: skip

    def __init__(self, tid: int, role: int, cpu: int, pinned: int = -1) -> None:
        self.id = tid
        self.role = role
        self.cpu = cpu
        self.pinned = pinned
        self.state = SLEEPING
        self.gen = 0
        self.wgen = 0
        self.phase = P_U
        self.end_at = 0
        self.remaining = 1
        self.seg_start = 0
        self.busy_left = 0
        self.pending_irq = False
        self.halt_next = False
        self.in_run = False
        self.entry_step = False
        self.g_reason = 0
        self.end_reason = G_HLT
        self.uexit = 0
        self.vm = -1
        self.vcpu_id = -1
        self.partner = -1
        self.fd = 0
        self.tick_ns = 0
        self.tick_phase = 0
        self.rate_total = 0.0
        self.mean_gap_ns = 0.0
        self.rates_cum: tuple[tuple[int, float], ...] = ()
        self.queue: deque[int] = deque()
        # live migration (pipeline.model.migration): the vCPU mutex and its waiters,
        # a migration thread's sweep position and phase
        self.in_ioctl = False  # in a vCPU ioctl but not (yet) in KVM_RUN proper
        self.mutex = -1  # task holding this vCPU's mutex (-1: free)
        self.waiters: deque[int] = deque()
        self.mig_k = 0
        self.mig_phase = 0
        self.call = -1
        self.run_rec: list[int] | None = None  # this KVM_RUN's [load, first entry, exit] records


class Simulation(SchedulerMixin, VcpuMixin, HostMixin, MigrationMixin):
    """One host, built from the parameters and run by :meth:`run`."""

    def __init__(self, values: Mapping[str, Any], seed: int) -> None:
        p = self.p = namespace(values)
        sim_rng, _ = generators(seed)
        self.seed = seed
        self.draws = Draws(sim_rng)
        self.n_cpus = n = int(p.cpus)
        us = 1000.0
        self.timeslice_ns = max(int(p.timeslice_us * us), 1)
        self.resched_ns = p.resched_us * us
        self.wake_latency_ns = p.wake_latency_us * us
        self.entry_ns = p.entry_us * us
        self.exit_ns = p.exit_us * us
        self.uexit_ns = p.uexit_us * us
        self.hlt_ns = p.hlt_us * us
        self.poll_ns = int(p.halt_poll_us * us)
        self.user_io_ns = p.user_io_us * us
        self.user_signal_ns = p.user_signal_us * us
        self.host_busy_ns = p.host_busy_us * us
        self.host_sleep_ns = p.host_sleep_us * us
        self.main_busy_ns = p.vmm_main_us * us
        self.main_sleep_ns = 1e9 / p.vmm_main_hz if p.vmm_main_hz > 0 else math.inf
        self.kthread_ns = p.kthread_us * us
        self.iothread_ns = p.iothread_us * us
        self.busy_ns = INF if math.isinf(p.guest_busy_us) else p.guest_busy_us * us
        self.pingpong_on = bool(p.pingpong)
        self.spurious_hz = p.spurious_hz
        self.xsave_ns = p.xsave_us * us
        self.ignores_mutex = bool(p.fpu_ioctl_ignores_mutex)
        self.track_runs = p.migration_ms > 0  # KVM_RUN records for the migration truth
        self.xsave_calls: list[tuple[int, int, int, int, bool]] = []
        self.vcpu_runs: dict[int, list[list[int]]] = {}

        self._heap: list[tuple[int, int, int, int, int]] = []
        self._seq = 0
        self.curr = [IDLE] * n
        self.rq: list[deque[int]] = [deque() for _ in range(n)]
        self.need_resched = [False] * n
        self.pick_pending = [False] * n
        self.cpu_gen = [0] * n
        self._r: list[int] = []  # records, 7 ints each (see SchedulerMixin._rec)
        self._nrec = 0
        self._seg: list[int] = []  # guest stretches, 4 ints each: task, cpu, start, end
        self.steps: list[tuple[int, int, int, int, int, int, int]] = []
        self.tasks: list[Task] = []
        self.info: list[TaskInfo] = []
        self.stats: dict[int, dict[str, int]] = {}
        self.kworker: list[int] = []
        self.iothread: list[int] = []
        self.vm_vcpus: list[list[int]] = []
        self._build()

    # -- the host ------------------------------------------------------------------
    def _task(self, info: TaskInfo, role: int, cpu: int, pinned: int = -1) -> Task:
        task = Task(len(self.tasks), role, cpu, pinned)
        self.tasks.append(task)
        self.info.append(info)
        return task

    def _build(self) -> None:
        p, n, draws = self.p, self.n_cpus, self.draws
        self._task(TaskInfo(0, 0, "swapper", 0, ROLE_IDLE), ROLE_IDLE, 0)
        for c in range(n):
            kw = self._task(
                TaskInfo(24 + 6 * c, 24 + 6 * c, f"kworker/{c}:1", 1, ROLE_KWORKER, pinned=c),
                ROLE_KWORKER, c, pinned=c,
            )  # fmt: skip
            self.kworker.append(kw.id)
            self._push(draws.gap_ns(p.kthread_hz), C_KWORKER, c, 0)
        sizes = self._vm_sizes()
        placed = 0
        for vm, size in enumerate(sizes):
            tgid = p.pid_base + 100 * vm
            main = self._task(
                TaskInfo(tgid, tgid, "qemu-system-x86", 2, ROLE_VMM_MAIN, vm=vm), ROLE_VMM_MAIN,
                (vm * 3) % n,
            )  # fmt: skip
            self._start_sleeper(main, self.main_sleep_ns)
            io = self._task(
                TaskInfo(tgid + 1, tgid, "IO iothread0", 2, ROLE_IOTHREAD, vm=vm), ROLE_IOTHREAD,
                (vm * 3 + 1) % n,
            )  # fmt: skip
            self.iothread.append(io.id)
            if p.timer_hz_max > p.timer_hz:
                hz = p.timer_hz + draws.uniform() * (p.timer_hz_max - p.timer_hz)
            else:
                hz = p.timer_hz
            ids = []
            for i in range(size):
                v = self._task(
                    TaskInfo(tgid + 2 + i, tgid, f"CPU {i}/KVM", 3, ROLE_VCPU, vm=vm, vcpu_id=i),
                    ROLE_VCPU, placed % n,
                )  # fmt: skip
                placed += 1
                v.vm, v.vcpu_id, v.fd = vm, i, 12 + i
                v.tick_ns = round(1e9 / hz) if hz > 0 else 0
                v.tick_phase = int(draws.uniform() * v.tick_ns) if v.tick_ns else 0
                ids.append(v.id)
                self.stats[v.id] = dict.fromkeys(STAT_KEYS, 0)
            self.vm_vcpus.append(ids)
            for i, vid in enumerate(ids):
                self._init_vcpu(self.tasks[vid], i, ids)
            if p.migration_ms > 0:
                mig = self._task(
                    TaskInfo(tgid + 2 + size, tgid, "live_migration", 2, ROLE_MIGRATION, vm=vm),
                    ROLE_MIGRATION, (vm * 3 + 2) % n,
                )  # fmt: skip
                mig.vm = vm
                self.migration_start(mig)
        for i in range(p.host_tasks):
            pid = p.pid_base - 1000 + 17 * i
            name = HOST_NAMES[i % len(HOST_NAMES)]
            task = self._task(TaskInfo(pid, pid, name, 2, ROLE_HOST), ROLE_HOST, (placed + i) % n)
            self._start_sleeper(task, self.host_sleep_ns)

    def _vm_sizes(self) -> list[int]:
        p = self.p
        if p.overcommit > 0:
            total = max(round(p.overcommit * p.cpus), 1)
            full, rest = divmod(total, p.vcpus_per_vm)
            return [p.vcpus_per_vm] * full + ([rest] if rest else [])
        return [p.vcpus_per_vm] * p.vms

    def _init_vcpu(self, v: Task, i: int, ids: list[int]) -> None:
        p = self.p
        ipi = p.ipi_hz if len(ids) > 1 else 0.0
        rates = [(G_IO, p.io_hz), (G_MMIO, p.mmio_hz), (G_NOTIFY, p.notify_hz), (G_IPI, ipi),
                 (G_SIGNAL, p.signal_hz)]  # fmt: skip
        cum, total = [], 0.0
        for reason, rate in rates:
            if rate > 0:
                total += rate
                cum.append((reason, total))
        v.rates_cum, v.rate_total = tuple(cum), total
        v.mean_gap_ns = 1e9 / total if total > 0 else 0.0
        if self.pingpong_on and i ^ 1 < len(ids):
            v.partner = ids[i ^ 1]
            v.end_reason = G_TOKEN
            v.halt_next = i % 2 == 1  # the odd one waits for the token
        v.busy_left = 0 if v.halt_next else self.new_busy(v)
        v.phase = P_U
        v.remaining = self.draws.exp_ns(self.user_io_ns)
        self._push(self.draws.below(_START_SPREAD_NS), W_START, v.id, 0)

    def _start_sleeper(self, task: Task, sleep_ns: float) -> None:
        if math.isinf(sleep_ns):
            return
        self._push(self.draws.exp_ns(sleep_ns), W_HOST, task.id, task.wgen)

    # -- the loop --------------------------------------------------------------------
    def run(self, end_ns: int) -> Schedule:
        """Run until ``end_ns``; the Schedule holds everything before it."""
        heap, pop, tasks = self._heap, heapq.heappop, self.tasks
        vcpu_action, host_action = self.vcpu_action, self.host_action
        while heap:
            t, _, action, ident, gen = heap[0]
            if t >= end_ns:
                break
            pop(heap)
            if action <= A_IO_END:
                task = tasks[ident]
                if gen != task.gen:
                    continue
                if task.role == ROLE_VCPU:
                    vcpu_action(action, task, t)
                else:
                    host_action(action, task, t)
            elif action == W_TIMER:
                self.vcpu_timer(ident, gen, t)
            elif action == C_TICK:
                self.on_tick(ident, gen, t)
            elif action == C_PICK:
                self.on_pick(ident, gen, t)
            elif action == C_RESCHED:
                self.on_resched(ident, gen, t)
            elif action == C_KWORKER:
                self.kworker_timer(ident, gen, t)
            elif action == W_HOST:
                self.host_wake(ident, gen, t)
            elif action == W_SPURIOUS:
                self.vcpu_spurious(ident, gen, t)
            elif action == W_START:
                v = tasks[ident]
                self.wake(v, t, v.cpu)
        return self._finish(end_ns)

    def _finish(self, end_ns: int) -> Schedule:
        for v in self.tasks:
            if v.role == ROLE_VCPU and v.phase == P_G:  # a guest stretch cut by the end
                self._seg.extend((v.id, v.cpu, v.seg_start, end_ns))
        rec = np.fromiter(self._r, dtype=np.int64, count=len(self._r)).reshape(-1, 7)
        seg = np.fromiter(self._seg, dtype=np.int64, count=len(self._seg)).reshape(-1, 4)
        ts, cpu, task, kind, a, b, c = (rec[:, j].copy() for j in range(7))
        n = len(self.tasks)

        def per_task(mask: np.ndarray) -> np.ndarray:
            return np.bincount(task[mask], minlength=n)

        derived = {
            "runs": per_task(kind == R_RUN_IN),
            "entries": per_task(kind == R_ENTRY),
            "halts": per_task((kind == R_EXIT) & (a == X_HLT)),
            "io_exits": per_task((kind == R_UEXIT) & (a == U_IO)),
            "mmio_exits": per_task((kind == R_UEXIT) & (a == U_MMIO)),
            "signals": per_task((kind == R_UEXIT) & (a == U_RESTART)),
        }
        stats: dict[int, dict[str, int]] = {}
        for vid, counted in self.stats.items():
            v = self.tasks[vid]
            st = {k: int(d[vid]) for k, d in derived.items()}
            st.update(counted)
            st["blocked_at_end"] = int(v.in_run and v.phase == P_BLOCKED)
            # Switched out inside KVM_RUN (or back in but not yet in the guest) when the
            # simulation ends: legacy has done 2 more operations than vcpu_run for that
            # sched-out, not the 4 of one that re-entered (reference §3.3).
            out = v.phase in (P_BLOCKED, P_PRE_G, P_PRE_H, P_SPURIOUS)
            st["reentry_pending"] = int(v.in_run and (out or (v.phase == P_TRANS and v.entry_step)))
            stats[vid] = st
        tokens = sum(st["tokens"] for st in stats.values())
        return Schedule(
            n_cpus=self.n_cpus,
            end_ns=end_ns,
            clock_start_ns=round(self.p.clock_start_s * 1e9),
            tasks=self.info,
            ts=ts, cpu=cpu, task=task, kind=kind, a=a, b=b, c=c,
            seg_task=seg[:, 0].copy(), seg_cpu=seg[:, 1].copy(),
            seg_start=seg[:, 2].copy(), seg_end=seg[:, 3].copy(),
            steps=self.steps,
            stats=stats,
            seed=self.seed,
            host_stats={
                "context_switches": int((kind == R_SWITCH).sum()),
                "pingpong_round_trips": tokens // 2 if self.pingpong_on else None,
            },
            xsave_calls=self.xsave_calls,
            vcpu_runs=self.vcpu_runs,
        )  # fmt: skip


def simulate(values: Mapping[str, Any], seed: int, duration_ns: int) -> Schedule:
    """Simulate the host described by ``values`` for ``duration_ns`` from ``seed``."""
    if duration_ns <= 0:
        raise ValueError("the duration must be positive")
    return Simulation(values, seed).run(duration_ns)


__all__ = ["Simulation", "simulate"]
