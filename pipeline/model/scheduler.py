"""The host scheduler: per-CPU run queues, timeslices, wakeup preemption, idle, migration.

A deliberately small CFS stand-in (docs/model.md, "Scheduler"):

* each CPU runs its current task and keeps a FIFO run queue;
* a task that has run ``timeslice_us`` is preempted when others wait on its CPU;
* a wakeup goes to the task's previous CPU if it is idle, else to the first idle
  CPU after it (a migration), else to the previous CPU's queue, where it preempts
  the running task with probability ``wakeup_preempt`` (after ``resched_us``);
* a preempted task is requeued on another random CPU with probability
  ``migrate_prob``; a CPU going idle pulls a waiting task from the busiest queue
  with probability ``idle_pull``; at the end of a timeslice a CPU with nobody
  waiting pulls a waiter from a queue of two or more (periodic load balance);
* an idle CPU switches to a task queued on it after ``wake_latency_us``.

Preemption is a request (``need_resched``) that the running task honours at its
next preemption point: at once in the guest or in userspace, at the end of a
short kernel path otherwise (pipeline.model.vcpu).
"""

from __future__ import annotations

import heapq

from pipeline import codes as CS
from pipeline.codes import ST_SWITCH
from pipeline.model.schedule import (
    R_SWITCH,
    R_WAKE,
    ROLE_HOST,
    ROLE_IOTHREAD,
    ROLE_KWORKER,
    ROLE_MIGRATION,
    ROLE_VCPU,
    ROLE_VMM_MAIN,
    S_D,
    S_KVM,
    S_R,
    S_RPLUS,
    S_S,
)

IDLE = 0  # task id of the idle task (pid 0, on every CPU)
_IN_IOCTL = -2  # pipeline.steps.IN_IOCTL: a switch-in that cannot return to userspace

#: The replay's sched-out state code (pipeline.codes S_*) of each prev_state code here.
STEP_STATE = (CS.S_PREEMPT, CS.S_PREEMPT, CS.S_BLOCK, CS.S_BLOCK, CS.S_OTHER, CS.S_PREEMPT)

# task.state
RUNNING, RUNNABLE, SLEEPING = 0, 1, 2

# Event actions: task actions carry the task's ``gen``, wake actions its ``wgen``,
# CPU actions the CPU's ``cpu_gen`` (stale events are dropped).
(
    A_U_END, A_ENTER, A_G_END, A_UEXIT, A_BLOCK, A_POLL_END, A_PREEMPT_SWITCH,
    A_HOST_END, A_KW_END, A_IO_END,
    W_TIMER, W_HOST, W_START,
    C_TICK, C_PICK, C_RESCHED, C_KWORKER,
    W_SPURIOUS,
) = range(18)  # fmt: skip
N_ACTIONS = 18


class SchedulerMixin:
    """Run queues and context switches; needs the attributes Simulation sets up."""

    # -- plumbing ----------------------------------------------------------------
    def _push(self, t: int, action: int, ident: int, gen: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, action, ident, gen))

    def _at(self, task, t: int, action: int) -> None:
        """Schedule ``action`` of the running ``task`` (dropped if it is switched out first)."""
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, action, task.id, task.gen))

    def _rec(self, t: int, cpu: int, task: int, kind: int, a: int = 0, b: int = 0,
             c: int = 0) -> int:  # fmt: skip
        """Append a record; returns its index (the line field of the step it anchors)."""
        self._r.extend((t, cpu, task, kind, a, b, c))  # one flat list: the cheapest append
        i = self._nrec
        self._nrec = i + 1
        return i

    # -- wakeups -------------------------------------------------------------------
    def wake(self, task, t: int, waker_cpu: int) -> None:
        """``task`` becomes runnable; the wakeup is logged on ``waker_cpu`` by its current task."""
        task.state = RUNNABLE
        curr = self.curr
        if task.pinned >= 0:
            target = task.pinned
        else:
            prev = task.cpu
            target = prev
            if curr[prev] != IDLE or self.rq[prev]:
                n = self.n_cpus
                for k in range(1, n):
                    c = (prev + k) % n
                    if curr[c] == IDLE and not self.rq[c]:
                        target = c
                        break
        self._rec(t, waker_cpu, curr[waker_cpu], R_WAKE, task.id, target)
        if curr[target] != IDLE and self.draws.chance(self.p.wakeup_preempt):
            self.rq[target].appendleft(task.id)
            self._push(t + self.draws.lat_ns(self.resched_ns), C_RESCHED, target, 0)
        else:
            self._enqueue(task, target, t)

    def _enqueue(self, task, cpu: int, t: int) -> None:
        self.rq[cpu].append(task.id)
        if self.curr[cpu] == IDLE and not self.pick_pending[cpu]:
            self.pick_pending[cpu] = True
            self._push(t + self.draws.lat_ns(self.wake_latency_ns), C_PICK, cpu, 0)

    # -- switching -------------------------------------------------------------------
    def switch_out(self, cpu: int, t: int, state: int, requeue: bool) -> None:
        """The current task of ``cpu`` leaves it (``state``: its prev_state code)."""
        prev = self.tasks[self.curr[cpu]]
        self.need_resched[cpu] = False
        if prev.id != IDLE:
            prev.gen += 1
            if requeue:
                prev.state = RUNNABLE
                target = cpu
                if prev.pinned < 0 and self.n_cpus > 1 and self.draws.chance(self.p.migrate_prob):
                    target = (cpu + 1 + self.draws.below(self.n_cpus - 1)) % self.n_cpus
                if target == cpu:
                    self.rq[cpu].append(prev.id)
                else:
                    self._enqueue(prev, target, t)
            else:
                prev.state = SLEEPING
        nxt = self._pick(cpu)
        if nxt is prev:
            # Nothing else wants the CPU after all (its waiter was pulled away).
            if prev.id != IDLE:
                prev.state = RUNNING
                self._resume(prev, cpu, t)
            return
        if prev.role == ROLE_VCPU and (prev.in_run or prev.in_ioctl):
            st = self.stats[prev.id]
            if state in (S_KVM, S_R, S_RPLUS):
                st["preemptions"] += 1
            elif state in (S_S, S_D):  # a halt, or (migration) a wait for the vCPU mutex
                st["blocks"] += 1
        rec = self._rec(t, cpu, prev.id, R_SWITCH, prev.id, nxt.id, state)
        if prev.role >= ROLE_HOST or nxt.role >= ROLE_HOST:
            # A switch between idle and kernel threads changes no FPU state: the
            # policies skip it, so it is not replayed (the trace shows it).
            # -1: a task switched in outside KVM_RUN returns to userspace; a vCPU woken
            # inside the ioctl before its KVM_RUN load (the mutex wait) does not.
            sid = _IN_IOCTL if nxt.in_ioctl else -1
            self.steps.append((ST_SWITCH, t, rec, cpu, prev.id, nxt.id, sid, STEP_STATE[state]))
        self._switch_in(nxt, cpu, t)

    def _pick(self, cpu: int):
        rq = self.rq[cpu]
        if rq:
            return self.tasks[rq.popleft()]
        if self.n_cpus > 1 and self.draws.chance(self.p.idle_pull):
            # Only a CPU that is busy has waiters to spare: a task queued on an
            # idle CPU is about to run there.
            busiest, most = -1, 0
            curr = self.curr
            for c in range(self.n_cpus):
                if c != cpu and curr[c] != IDLE and len(self.rq[c]) > most:
                    busiest, most = c, len(self.rq[c])
            if busiest >= 0:
                other = self.rq[busiest]
                for i, tid in enumerate(other):
                    if self.tasks[tid].pinned < 0:
                        del other[i]
                        return self.tasks[tid]
        return self.tasks[IDLE]

    def _switch_in(self, task, cpu: int, t: int) -> None:
        self.curr[cpu] = task.id
        self.cpu_gen[cpu] += 1
        if task.id == IDLE:
            return
        task.state = RUNNING
        if task.cpu != cpu:
            if task.role == ROLE_VCPU and task.in_run:
                self.stats[task.id]["migrations"] += 1
            task.cpu = cpu
        self._push(t + self.timeslice_ns, C_TICK, cpu, self.cpu_gen[cpu])
        self._resume(task, cpu, t)

    def _resume(self, task, cpu: int, t: int) -> None:
        role = task.role
        if role == ROLE_VCPU:
            self.vcpu_resume(task, cpu, t)
        elif role == ROLE_KWORKER:
            self._at(task, t + task.remaining, A_KW_END)
        elif role == ROLE_IOTHREAD:
            task.end_at = t + task.remaining
            self._at(task, task.end_at, A_IO_END)
        elif role == ROLE_MIGRATION:
            self.migration_resume(task, cpu, t)
        else:  # host process, VMM main thread
            task.end_at = t + task.remaining
            self._at(task, task.end_at, A_HOST_END)

    # -- preemption --------------------------------------------------------------------
    def preempt(self, cpu: int, t: int) -> None:
        """Ask the current task of ``cpu`` to give it up at its next preemption point."""
        task = self.tasks[self.curr[cpu]]
        if task.id == IDLE:
            return
        self.need_resched[cpu] = True
        role = task.role
        if role == ROLE_VCPU:
            self.vcpu_on_resched(task, cpu, t)
        elif role in (ROLE_HOST, ROLE_VMM_MAIN, ROLE_IOTHREAD):
            # Preempted in userspace: the return-to-user schedule() logs R.
            task.remaining = max(task.end_at - t, 1)
            self.switch_out(cpu, t, S_R, True)
        # A kernel thread runs to its (short) end and sleeps.

    def on_tick(self, cpu: int, gen: int, t: int) -> None:
        """The running task's timeslice is over."""
        if gen != self.cpu_gen[cpu] or self.curr[cpu] == IDLE:
            return
        if self.rq[cpu] or self._balance(cpu):
            self.preempt(cpu, t)
        else:
            self._push(t + self.timeslice_ns, C_TICK, cpu, gen)

    def _balance(self, cpu: int) -> bool:
        """Periodic load balance: pull a waiter from a queue holding two or more."""
        if self.n_cpus < 2:
            return False
        busiest, most = -1, 1
        for c in range(self.n_cpus):
            if c != cpu and len(self.rq[c]) > most:
                busiest, most = c, len(self.rq[c])
        if busiest < 0:
            return False
        other = self.rq[busiest]
        for i, tid in enumerate(other):
            if self.tasks[tid].pinned < 0:
                del other[i]
                self.rq[cpu].append(tid)
                return True
        return False

    def on_resched(self, cpu: int, _gen: int, t: int) -> None:
        """A preempting wakeup's resched IPI arrives."""
        if self.curr[cpu] != IDLE and self.rq[cpu]:
            self.preempt(cpu, t)

    def on_pick(self, cpu: int, _gen: int, t: int) -> None:
        """An idle CPU switches to the task queued on it."""
        self.pick_pending[cpu] = False
        if self.curr[cpu] == IDLE and self.rq[cpu]:
            self.switch_out(cpu, t, S_R, False)
