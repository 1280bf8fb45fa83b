"""`legacy`: 4.11–4.14 (reference §2.L, §3.2 policy L).

The guest FPU is loaded at the first guest entry of KVM_RUN (or for
emulation) and put back by ``kvm_arch_vcpu_put()``: at the end of the ioctl
and at *every* sched-out inside it (the preempt notifier).  So each sched-out
of a loaded vCPU saves the guest, restores QEMU's state and saves it again at
the context switch; the way back in restores QEMU's state if the registers
are no longer valid, and the next entry saves it again before loading the
guest.  The context-switch restore is eager (<= 5.1) and every FPU task
switched in takes the CPU's registers.
"""

from __future__ import annotations

from pipeline.policies import sites as S
from pipeline.policies.base import GUEST, USER, Policy


class Legacy(Policy):
    """Policy L."""

    name = "legacy"

    def __init__(self, tl) -> None:
        super().__init__(tl)
        self.first_load = [False] * len(tl.task_pid)

    def loaded_at_start(self, task: int, on_cpu: bool) -> bool:
        # Off-CPU inside KVM_RUN means the notifier put it at its sched-out.
        return on_cpu

    def switch_out(self, t: int, st: tuple) -> None:
        if self.in_run[t] and self.loaded[t]:
            # kvm_sched_out -> kvm_arch_vcpu_put -> kvm_put_guest_fpu, before switch_to
            self.save(t, GUEST, S.NOTIFIER_PUT, st)
            self.restore(t, USER, S.NOTIFIER_PUT, st)
            self.loaded[t] = False
        self.save(t, USER, S.CS_OUT, st)
        self.last_cpu[t] = st[3]

    def switch_in(self, t: int, st: tuple) -> None:
        cpu = st[3]
        if not self.valid(t, cpu):
            self.restore(t, GUEST if self.loaded[t] else USER, S.CS_IN, st)
        self.owner[cpu] = t  # fpregs_activate() for every FPU task switched in
        self.last_cpu[t] = cpu
        if not self.in_run[t] and self.returns_to_user(st):
            self.use(t, USER)

    def run_start(self, st: tuple) -> None:
        t = st[4]
        self.in_run[t] = True  # nothing yet: the load waits for the first guest entry
        self.first_load[t] = True

    def _load(self, t: int, site: int, st: tuple) -> None:
        self.save(t, USER, site, st)  # __kernel_fpu_begin()
        self.restore(t, GUEST, site, st)
        self.loaded[t] = True

    def entry(self, st: tuple) -> None:
        t = st[4]
        if not self.in_run[t]:
            return
        if not self.loaded[t]:
            self._load(t, S.FIRST_ENTRY_LOAD if self.first_load[t] else S.ENTRY_LOAD, st)
            self.first_load[t] = False
        self.use(t, GUEST)

    def run_end(self, st: tuple) -> None:
        t = st[4]
        if self.loaded[t]:  # vcpu_put(); a no-op when a sched-out already put it
            self.save(t, GUEST, S.KVM_PUT, st)
            self.restore(t, USER, S.KVM_PUT, st)  # __kernel_fpu_end()
            self.loaded[t] = False
        self.in_run[t] = False
        self.first_load[t] = False
        self.use(t, USER)

    def init_reset(self, st: tuple) -> None:
        t = st[4]
        if self.loaded[t]:
            self.save(t, GUEST, S.INIT_PUT, st)
            self.restore(t, USER, S.INIT_PUT, st)
        self._load(t, S.INIT_LOAD, st)
        self.first_load[t] = False

    def emulation(self, st: tuple) -> None:
        t = st[4]
        if self.in_run[t] and not self.loaded[t]:
            self._load(t, S.EMUL_LOAD, st)  # emulator_get_fpu()
            self.first_load[t] = False
        self.use(t, GUEST)
