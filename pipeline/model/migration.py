"""Live migration: a VMM thread that reads every vCPU's FPU state, and the vCPU mutex.

With ``migration_ms`` > 0 each VM gets a ``live_migration`` thread (a user
task of the VMM, pid right after its vCPU threads).  Every ``migration_ms``
it sweeps its VM's vCPUs in order, calling KVM_GET_XSAVE on each vCPU's fd
(``sys_enter_ioctl`` ... ``sys_exit_ioctl``), ``xsave_us`` for the copy, a
short userspace gap between two calls, and sleeps (``S``) until the next
sweep.  This is the `xsave` capture's helper thread of
shared/fixtures/real/README.md.

**The vCPU mutex** (kernel-fpu-reference.md §1.3).  ``vcpu->mutex`` is held
by KVM_RUN from the guest FPU load to ``kvm_userspace_exit``, and by each
KVM_GET_XSAVE for its copy:

* a call that finds the mutex taken sleeps (``sched_switch`` ``D``) until the
  holder drops it; the mutex is handed to the first waiter, which the
  holder's ``mutex_unlock`` wakes (the ``sched_wakeup`` is logged by the
  vCPU thread right after its ``kvm_userspace_exit``, as in the capture);
* a vCPU thread whose KVM_RUN finds the mutex held by a migration call logs
  ``sys_enter_ioctl`` KVM_RUN, sleeps (``D``) inside the ioctl and loads the
  guest FPU when it runs again with the mutex.

``fpu_ioctl_ignores_mutex=1`` is a deliberately broken kernel: KVM_GET_XSAVE
neither takes nor waits for the mutex, so it copies the guest FPU buffer
even while the vCPU is inside KVM_RUN.  The migration audit
(pipeline.audit) must flag those calls: the negative control.

The simulation keeps every call in ``Schedule.xsave_calls`` and every
KVM_RUN's load, first entry and exit records in ``Schedule.vcpu_runs``, from
which :func:`truth` counts what the audit must find.
"""

from __future__ import annotations

import bisect
from typing import Any

from pipeline.model.schedule import (
    CMD_GET_XSAVE,
    R_RUN_IN,
    R_RUN_OUT,
    S_D,
    S_R,
    S_S,
    Schedule,
)
from pipeline.model.scheduler import A_HOST_END, SLEEPING, W_HOST

# Phases of a migration thread.
M_SLEEP, M_NEXT, M_WAIT, M_COPY = range(4)
_GAP_NS = 1500  # QEMU's userspace between two vCPUs of a sweep


class MigrationMixin:
    """Migration threads and the vCPU mutex; needs the attributes Simulation sets up."""

    def migration_start(self, m: Any) -> None:
        """Arm the first sweep at a random phase of the period."""
        m.tick_ns = max(int(self.p.migration_ms * 1e6), 1)
        m.tick_phase = self.draws.below(m.tick_ns)
        m.mig_phase = M_SLEEP
        self._push(m.tick_phase, W_HOST, m.id, m.wgen)

    def migration_wake(self, m: Any, wgen: int, t: int) -> None:
        """A sweep is due: wake the thread; it starts with the VM's first vCPU."""
        if wgen != m.wgen or m.state != SLEEPING:
            return
        m.mig_k = 0
        m.mig_phase = M_NEXT
        m.remaining = 1
        self.wake(m, t, m.cpu)

    def migration_resume(self, m: Any, cpu: int, t: int) -> None:
        """Switched in: copy if the mutex was handed over, else carry on where it was."""
        if m.mig_phase == M_WAIT:
            self._xsave_copy(m, t)
            return
        m.end_at = t + m.remaining
        self._at(m, m.end_at, A_HOST_END)

    def migration_step(self, m: Any, t: int) -> None:
        """The end of the current piece of work: issue the next call, or return from one."""
        if m.mig_phase == M_COPY:
            self._xsave_return(m, t)
        else:
            self._xsave_enter(m, t)

    # -- one KVM_GET_XSAVE ---------------------------------------------------------
    def _xsave_enter(self, m: Any, t: int) -> None:
        cpu = m.cpu
        if self.need_resched[cpu]:  # preempted in userspace before the call
            m.remaining = 1
            self.switch_out(cpu, t, S_R, True)
            return
        v = self.tasks[self.vm_vcpus[m.vm][m.mig_k]]
        rec = self._rec(t, cpu, m.id, R_RUN_IN, v.fd, CMD_GET_XSAVE)
        waits = not self.ignores_mutex and v.mutex >= 0
        self.xsave_calls.append((m.id, v.id, rec, -1, waits))
        m.call = len(self.xsave_calls) - 1
        if waits:
            v.waiters.append(m.id)
            m.mig_phase = M_WAIT
            self.switch_out(cpu, t, S_D, False)
            return
        if not self.ignores_mutex:
            v.mutex = m.id
        self._xsave_copy(m, t)

    def _xsave_copy(self, m: Any, t: int) -> None:
        m.mig_phase = M_COPY
        m.remaining = self.draws.lat_ns(self.xsave_ns)
        m.end_at = t + m.remaining
        self._at(m, m.end_at, A_HOST_END)

    def _xsave_return(self, m: Any, t: int) -> None:
        cpu = m.cpu
        rec = self._rec(t, cpu, m.id, R_RUN_OUT, 0)
        tid, vid, enter, _, waited = self.xsave_calls[m.call]
        self.xsave_calls[m.call] = (tid, vid, enter, rec, waited)
        v = self.tasks[vid]
        if v.mutex == m.id:
            self.mutex_unlock(v, t, cpu)
        m.mig_k += 1
        if m.mig_k < len(self.vm_vcpus[m.vm]):
            m.mig_phase = M_NEXT
            m.remaining = _GAP_NS
            if self.need_resched[cpu]:
                self.switch_out(cpu, t, S_R, True)
            else:
                m.end_at = t + m.remaining
                self._at(m, m.end_at, A_HOST_END)
            return
        m.mig_phase = M_SLEEP
        m.wgen += 1
        k = (t - m.tick_phase) // m.tick_ns + 1
        self._push(m.tick_phase + k * m.tick_ns, W_HOST, m.id, m.wgen)
        self.switch_out(cpu, t, S_S, False)

    # -- the vCPU mutex ----------------------------------------------------------------
    def mutex_unlock(self, v: Any, t: int, cpu: int) -> None:
        """Drop vCPU ``v``'s mutex on ``cpu``: hand it to the first waiter and wake it."""
        if v.waiters:
            w = self.tasks[v.waiters.popleft()]
            v.mutex = w.id
            self.wake(w, t, cpu)
        else:
            v.mutex = -1


def _us_before(sched: Schedule, a: int, b: int) -> bool:
    """Record ``a`` certainly before record ``b`` as a microsecond trace shows them.

    The rule of pipeline.audit: an earlier microsecond, or the same one on the
    same CPU (whose lines keep their order).
    """
    ua, ub = int(sched.ts[a]) // 1000, int(sched.ts[b]) // 1000
    return ua < ub or (ua == ub and int(sched.cpu[a]) == int(sched.cpu[b]) and a < b)


def truth(sched: Schedule, policy: str) -> dict[str, Any]:
    """What the migration audit of a trace of ``sched`` recorded under ``policy`` must find.

    * ``calls``: KVM_GET_XSAVE calls with both lines in the trace;
    * ``waited``: calls that found their vCPU's mutex taken and slept for it;
    * ``entered_in_kvm_run``: calls that entered while the vCPU was inside
      KVM_RUN as the trace shows it (from its first kvm line: the guest FPU
      load, or under ``legacy`` the load at the first guest entry, to its
      ``kvm_userspace_exit``);
    * ``inside_kvm_run``: calls whose entry and exit both lie inside one such
      KVM_RUN, by the microsecond rule of pipeline.audit (the violations).
    """
    calls = [c for c in sched.xsave_calls if c[3] >= 0]
    inside = entered = 0
    for _, vid, enter, leave, _ in calls:
        # legacy logs its first kvm line at the first guest entry; a run that never
        # entered the guest logs none there
        runs = [(r[1] if policy == "legacy" else r[0], r[2]) for r in sched.vcpu_runs.get(vid, [])]
        runs = [r for r in runs if r[0] >= 0]
        i = bisect.bisect_left([r[0] for r in runs], enter) - 1
        if i < 0:
            continue
        start, end = runs[i]
        if end >= 0 and enter > end:
            continue
        entered += 1
        if _us_before(sched, start, enter) and (
            end < 0 or _us_before(sched, leave, end)
        ):
            inside += 1
    threads = {}
    for tid, *_ in sched.xsave_calls:
        info = sched.tasks[tid]
        row = threads.setdefault(
            tid, {"pid": info.pid, "comm": info.comm, "tgid": info.tgid, "calls": 0}
        )
        row["calls"] += 1
    return {
        "calls": len(calls),
        "waited": sum(1 for c in calls if c[4]),
        "entered_in_kvm_run": entered,
        "inside_kvm_run": inside,
        "threads": list(threads.values()),
    }
