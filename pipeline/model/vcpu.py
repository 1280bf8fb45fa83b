"""A vCPU thread: userspace (the VMM), KVM_RUN, guest execution, exits, halts.

The life of a vCPU thread (docs/model.md, "vCPU"):

* **userspace** (``P_U``): the VMM handles the last exit for ``user_io_us`` or
  ``user_signal_us``, then issues KVM_RUN;
* **KVM_RUN entry**: ``sys_enter_ioctl``, then the guest entry ``entry_us`` later;
* **guest** (``P_G``): runs its current busy period (``guest_busy_us``) while
  Poisson streams of exits compete: port I/O and MMIO exits to userspace
  (``io_hz``, ``mmio_hz``), virtio notifications that wake the VM's I/O thread
  (``notify_hz``), IPIs to another vCPU (``ipi_hz``) and kicks that make KVM_RUN
  return ``restart (4)`` (``signal_hz``); plain in-kernel exits (``exit_hz``) are
  expanded afterwards (pipeline.model.schedule.inner_exits);
* **halt**: at the end of the busy period the guest executes HLT.  An interrupt
  already pending re-enters at once; with ``halt_poll_us`` the thread polls and
  a wakeup in the window re-enters without a context switch; otherwise it
  blocks (``sched_switch`` S) until its timer tick, an IPI or an I/O interrupt;
  with ``spurious_hz`` it is sometimes woken without an event and blocks again
  with no guest entry (reference §8.2);
* **preemption**: in the guest it exits at once (EXTERNAL_INTERRUPT) and
  schedules (``R+`` before 5.11, ``R`` after); in userspace it is preempted
  (``R``); in a kernel path it waits for the path's end, and a vCPU switched
  back in always enters the guest before it can be preempted again.

That last rule, together with "a kick only hits a vCPU in the guest", keeps
every sched-in inside KVM_RUN followed by a guest entry (spurious wakeups
aside, off by default), so traces without kvm_entry lines replay exactly
(fpu-model.md: synthesised entries).
"""

from __future__ import annotations

from heapq import heappush

from pipeline.codes import ST_ENTRY, ST_RUN_END, ST_RUN_START
from pipeline.model.schedule import (
    R_ANCHOR,
    R_ENTRY,
    R_EXIT,
    R_RUN_IN,
    R_RUN_OUT,
    R_UEXIT,
    S_D,
    S_KVM,
    S_R,
    S_S,
    U_IO,
    U_MMIO,
    U_RESTART,
    X_EXTINT,
    X_HLT,
    X_IO,
    X_MMIO,
    X_MSR,
)
from pipeline.model.scheduler import (
    A_BLOCK,
    A_ENTER,
    A_G_END,
    A_POLL_END,
    A_PREEMPT_SWITCH,
    A_U_END,
    A_UEXIT,
    W_SPURIOUS,
    W_TIMER,
)

# vCPU phases (P_MUTEX: inside KVM_RUN's ioctl, asleep on the vCPU mutex a
# migration thread holds; pipeline.model.migration)
P_U, P_TRANS, P_G, P_HLT, P_POLL, P_BLOCKED, P_PRE_G, P_PRE_H, P_SPURIOUS, P_MUTEX = range(10)

# Why a stretch of guest execution ends (the significant exits).
G_NONE, G_PREEMPT, G_HLT, G_IO, G_MMIO, G_NOTIFY, G_IPI, G_SIGNAL, G_TOKEN = range(9)
#: kvm_exit reason printed for each
G_EXIT = (X_EXTINT, X_EXTINT, X_HLT, X_IO, X_MMIO, X_MMIO, X_MSR, X_EXTINT, X_MSR)

INF = 1 << 62  # "never" (a CPU-bound guest's busy period, a zero rate's next event)
_KICK_NS = 500  # a resched IPI pending at guest entry forces an exit this soon after it
_HLT_AFTER_IPI_NS = 300  # ping-pong: the guest executes HLT right after its IPI


class VcpuMixin:
    """vCPU thread behaviour; needs the attributes Simulation sets up."""

    def new_busy(self, v) -> int:
        """A fresh busy period for ``v``'s guest."""
        if self.pingpong_on and v.partner >= 0:
            return self.draws.lat_ns(self.busy_ns)
        if self.busy_ns >= INF:
            return INF
        return self.draws.exp_ns(self.busy_ns)

    # -- switch-in ---------------------------------------------------------------
    def vcpu_resume(self, v, cpu: int, t: int) -> None:
        """Back on a CPU: continue the VMM work, or (inside KVM_RUN) re-enter the guest."""
        if v.phase == P_U:
            v.end_at = t + v.remaining
            self._at(v, v.end_at, A_U_END)
        elif v.phase == P_MUTEX:
            # Woken holding the mutex: KVM_RUN goes on and loads the guest FPU now.
            v.in_ioctl = False
            self._run_start(v, t, self._rec(t, cpu, v.id, R_ANCHOR), cpu)
        elif v.phase == P_SPURIOUS:
            # kvm_vcpu_block() finds no event and sleeps again, without a guest entry
            v.phase = P_HLT
            v.entry_step = True  # an interrupt arriving meanwhile makes it enter
            self._at(v, t + self.draws.lat_ns(self.hlt_ns), A_BLOCK)
        else:
            v.phase = P_TRANS
            v.entry_step = True
            self._at(v, t + self.draws.lat_ns(self.entry_ns), A_ENTER)

    # -- userspace -> KVM_RUN ----------------------------------------------------
    def vcpu_u_end(self, v, t: int) -> None:
        """The VMM is done with the last exit: KVM_RUN."""
        cpu = v.cpu
        if self.need_resched[cpu]:
            v.remaining = 1
            self.switch_out(cpu, t, S_R, True)
            return
        rec = self._rec(t, cpu, v.id, R_RUN_IN, v.fd)
        if v.mutex >= 0:
            # A migration thread's KVM_GET_XSAVE holds the vCPU mutex: sleep for it
            # inside the ioctl (pipeline.model.migration).
            v.phase = P_MUTEX
            v.in_ioctl = True
            v.waiters.append(v.id)
            self.switch_out(cpu, t, S_D, False)
            return
        self._run_start(v, t, rec, cpu)

    def _run_start(self, v, t: int, rec: int, cpu: int) -> None:
        """KVM_RUN holds the vCPU mutex: the guest FPU load point, then the guest entry."""
        v.mutex = v.id
        self.steps.append((ST_RUN_START, t, rec, cpu, v.id, 0, 0))
        if self.track_runs:
            v.run_rec = [rec, -1, -1]
            self.vcpu_runs.setdefault(v.id, []).append(v.run_rec)
        v.in_run = True
        v.entry_step = True
        v.phase = P_TRANS
        self._at(v, t + self.draws.lat_ns(self.entry_ns), A_ENTER)

    # -- guest ---------------------------------------------------------------------
    def vcpu_enter(self, v, t: int) -> None:
        """kvm_entry: run the guest until the next significant exit."""
        # The hottest path of the loop: the record and the event push are inlined.
        cpu, vid = v.cpu, v.id
        rec = self._nrec
        self._nrec = rec + 1
        self._r.extend((t, cpu, vid, R_ENTRY, 0, 0, 0))
        if v.entry_step:
            # Only the first entry after KVM_RUN's start or a switch-in can change
            # FPU state; the policies treat later ones as no-ops, so they are not
            # replayed (the trace still shows them all).
            self.steps.append((ST_ENTRY, t, rec, cpu, vid, 0, 0))
            v.entry_step = False
            run = v.run_rec
            if run is not None and run[1] < 0:
                run[1] = rec  # legacy logs this KVM_RUN's first kvm line here
        v.phase = P_G
        v.seg_start = t
        if self.need_resched[cpu]:
            reason, dt = G_PREEMPT, _KICK_NS
        elif v.halt_next:
            reason, dt = G_HLT, _HLT_AFTER_IPI_NS
        else:
            busy = v.busy_left
            gap = int(v.mean_gap_ns * self.draws.e()) + 1 if v.rate_total > 0 else INF
            if gap < busy:
                x = self.draws.u() * v.rate_total
                reason = G_SIGNAL
                for r, upto in v.rates_cum:
                    if x < upto:
                        reason = r
                        break
                dt = gap
            elif busy < INF:
                reason, dt = v.end_reason, max(busy, 1)
            else:
                v.g_reason = G_NONE  # CPU bound and nothing to exit for: until preempted
                return
        v.g_reason = reason
        self._seq = seq = self._seq + 1
        heappush(self._heap, (t + dt, seq, A_G_END, vid, v.gen))

    def vcpu_g_end(self, v, t: int) -> None:
        """A significant exit ends the stretch of guest execution."""
        cpu, vid = v.cpu, v.id
        start = v.seg_start
        self._seg.extend((vid, cpu, start, t))
        if v.busy_left < INF:
            v.busy_left = max(v.busy_left - (t - start), 0)
        reason = v.g_reason
        self._nrec += 1
        self._r.extend((t, cpu, vid, R_EXIT, G_EXIT[reason], 0, 0))
        v.phase = P_TRANS
        draws = self.draws
        if reason == G_PREEMPT:
            self._at(v, t + draws.lat_ns(self.exit_ns), A_PREEMPT_SWITCH)
        elif reason == G_HLT:
            v.halt_next = False
            if v.pending_irq:
                v.pending_irq = False
                v.busy_left = self.new_busy(v)
                self._at(v, t + self._exit_handling(), A_ENTER)
                return
            self._arm_timer(v, t)
            if self.poll_ns > 0:
                v.phase = P_POLL
                self._at(v, t + self.poll_ns, A_POLL_END)
            else:
                v.phase = P_HLT
                self._at(v, t + draws.lat_ns(self.hlt_ns), A_BLOCK)
        elif reason in (G_IO, G_MMIO, G_SIGNAL):
            v.uexit = U_IO if reason == G_IO else U_MMIO if reason == G_MMIO else U_RESTART
            self._at(v, t + draws.lat_ns(self.uexit_ns), A_UEXIT)
        else:
            st = self.stats[vid]
            if reason == G_NOTIFY:
                st["notifies"] += 1
                self.iothread_notify(v, t, cpu)
            else:  # G_IPI, G_TOKEN
                target = v.partner if reason == G_TOKEN else self._ipi_target(v)
                st["ipis"] += 1
                if reason == G_TOKEN:
                    st["tokens"] += 1
                    v.halt_next = True
                if target >= 0:
                    self.vcpu_interrupt(self.tasks[target], t, cpu)
            self._at(v, t + self._exit_handling(), A_ENTER)

    def _exit_handling(self) -> int:
        return int(self.exit_ns * (0.5 + self.draws.u())) + 1

    def _ipi_target(self, v) -> int:
        peers = self.vm_vcpus[v.vm]
        if len(peers) < 2:
            return -1
        k = self.draws.below(len(peers) - 1)
        target = peers[k]
        return peers[-1] if target == v.id else target

    def vcpu_preempt_switch(self, v, t: int) -> None:
        """After the preemption exit: schedule() inside KVM_RUN."""
        v.phase = P_PRE_G
        self.switch_out(v.cpu, t, S_KVM, True)

    # -- KVM_RUN -> userspace -----------------------------------------------------
    def vcpu_uexit(self, v, t: int) -> None:
        """KVM_RUN returns: kvm_userspace_exit, sys_exit_ioctl, then the VMM's handling."""
        cpu = v.cpu
        restart = v.uexit == U_RESTART
        rec = self._rec(t, cpu, v.id, R_UEXIT, v.uexit)
        self.steps.append((ST_RUN_END, t, rec, cpu, v.id, 0, 0))
        if v.run_rec is not None:
            v.run_rec[2] = rec
            v.run_rec = None
        self.mutex_unlock(v, t, cpu)  # after kvm_userspace_exit, before the ioctl returns
        self._rec(t, cpu, v.id, R_RUN_OUT, -4 if restart else 0)
        v.in_run = False
        v.phase = P_U
        v.remaining = self.draws.exp_ns(self.user_signal_ns if restart else self.user_io_ns)
        if self.need_resched[cpu]:
            self.switch_out(cpu, t, S_R, True)  # resched on the return to userspace
        else:
            v.end_at = t + v.remaining
            self._at(v, v.end_at, A_U_END)

    # -- halt ---------------------------------------------------------------------------
    def _arm_timer(self, v, t: int) -> None:
        v.wgen += 1
        if v.tick_ns <= 0:
            return
        k = (t - v.tick_phase) // v.tick_ns + 1
        self._push(v.tick_phase + k * v.tick_ns, W_TIMER, v.id, v.wgen)

    def vcpu_block(self, v, t: int) -> None:
        """kvm_vcpu_block(): sleep unless an interrupt is already pending."""
        if v.pending_irq:
            v.pending_irq = False
            v.wgen += 1
            v.busy_left = self.new_busy(v)
            v.phase = P_TRANS
            self._at(v, t + self._exit_handling(), A_ENTER)
            return
        if v.entry_step:  # blocking again after a spurious wakeup: its tick is still due
            self._arm_timer(v, t)
        v.phase = P_BLOCKED
        if self.spurious_hz > 0:
            self._push(t + self.draws.gap_ns(self.spurious_hz), W_SPURIOUS, v.id, v.wgen)
        self.switch_out(v.cpu, t, S_S, False)

    def vcpu_spurious(self, vid: int, wgen: int, t: int) -> None:
        """A spurious wakeup of a blocked vCPU (reference §8.2): switched in, no guest entry."""
        v = self.tasks[vid]
        if wgen != v.wgen or v.phase != P_BLOCKED:
            return
        v.wgen += 1  # its tick is re-armed when it blocks again
        v.phase = P_SPURIOUS
        self.stats[v.id]["spurious_wakes"] += 1
        self.wake(v, t, v.cpu)

    def vcpu_interrupt(self, v, t: int, waker_cpu: int) -> None:
        """An IPI, I/O interrupt or timer tick for ``v``, raised on ``waker_cpu``."""
        ph = v.phase
        if ph == P_BLOCKED:
            v.wgen += 1
            v.busy_left = self.new_busy(v)
            v.phase = P_PRE_H
            self.wake(v, t, waker_cpu)
        elif ph == P_POLL:
            v.gen += 1  # the poll window's end is moot
            v.wgen += 1
            v.busy_left = self.new_busy(v)
            v.phase = P_TRANS
            self.stats[v.id]["poll_wakes"] += 1
            self._at(v, t + self._exit_handling(), A_ENTER)
        else:
            # Not halted: the guest takes it as more work, and its next HLT
            # returns at once (kvm_vcpu_has_events()).
            v.pending_irq = True

    def vcpu_timer(self, vid: int, wgen: int, t: int) -> None:
        """The guest's timer tick fires on the CPU where the vCPU last ran."""
        v = self.tasks[vid]
        if wgen == v.wgen:
            self.vcpu_interrupt(v, t, v.cpu)

    # -- preemption requests ------------------------------------------------------------
    def vcpu_on_resched(self, v, cpu: int, t: int) -> None:
        """need_resched was set on ``v``'s CPU."""
        ph = v.phase
        if ph == P_G:
            v.gen += 1
            v.g_reason = G_PREEMPT
            self.vcpu_g_end(v, t)
        elif ph == P_U:
            v.remaining = max(v.end_at - t, 1)
            self.switch_out(cpu, t, S_R, True)
        elif ph == P_POLL:
            v.gen += 1  # polling stops on need_resched, and the vCPU blocks
            self.vcpu_block(v, t)
        # In a kernel path: honoured at its end (vcpu_enter, vcpu_uexit, vcpu_u_end).

    # -- dispatch -----------------------------------------------------------------------
    def vcpu_action(self, action: int, v, t: int) -> None:
        """Run a scheduled vCPU action."""
        if action == A_ENTER:
            self.vcpu_enter(v, t)
        elif action == A_G_END:
            self.vcpu_g_end(v, t)
        elif action == A_U_END:
            self.vcpu_u_end(v, t)
        elif action == A_UEXIT:
            self.vcpu_uexit(v, t)
        elif action in (A_BLOCK, A_POLL_END):
            self.vcpu_block(v, t)
        elif action == A_PREEMPT_SWITCH:
            self.vcpu_preempt_switch(v, t)
