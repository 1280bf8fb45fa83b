"""`vcpu_run`: 4.15–5.1, the 2017 patch f775b13eedee (reference §2.V, §3.2 V).

One swap at KVM_RUN entry (save QEMU's state, load the guest) and one at
its exit.  Inside KVM_RUN the registers hold the guest state as the task's
own: a sched-out saves it, and the eager switch-in restores it if the
registers are no longer valid.
"""

from __future__ import annotations

from pipeline.policies import sites as S
from pipeline.policies.base import GUEST, USER, Policy


class VcpuRun(Policy):
    """Policy V."""

    name = "vcpu_run"

    def _content(self, t: int) -> int:
        return GUEST if self.loaded[t] else USER

    def switch_out(self, t: int, st: tuple) -> None:
        self.save(t, self._content(t), S.CS_OUT, st)
        self.last_cpu[t] = st[3]

    def switch_in(self, t: int, st: tuple) -> None:
        cpu = st[3]
        if not self.valid(t, cpu):
            self.restore(t, self._content(t), S.CS_IN, st)
        self.owner[cpu] = t
        self.last_cpu[t] = cpu
        if not self.in_run[t] and self.returns_to_user(st):
            self.use(t, USER)

    def run_start(self, st: tuple) -> None:
        t, cpu = st[4], st[3]
        self.save(t, USER, S.KVM_LOAD, st)
        self.restore(t, GUEST, S.KVM_LOAD, st)
        self.owner[cpu] = t  # the running task's registers, now the guest's
        self.last_cpu[t] = cpu
        self.in_run[t] = self.loaded[t] = True

    def entry(self, st: tuple) -> None:
        if self.in_run[st[4]]:
            self.use(st[4], GUEST)

    def run_end(self, st: tuple) -> None:
        t = st[4]
        if self.loaded[t]:
            self.save(t, GUEST, S.KVM_PUT, st)
            self.restore(t, USER, S.KVM_PUT, st)
        self.in_run[t] = self.loaded[t] = False
        self.use(t, USER)

    def init_reset(self, st: tuple) -> None:
        t = st[4]
        self.save(t, GUEST, S.INIT_PUT, st)
        self.restore(t, USER, S.INIT_PUT, st)
        self.save(t, USER, S.INIT_LOAD, st)
        self.restore(t, GUEST, S.INIT_LOAD, st)
        self.loaded[t] = True

    def emulation(self, st: tuple) -> None:
        # emulator_get_fpu() is empty: the guest state is live in the registers.
        if self.in_run[st[4]]:
            self.use(st[4], GUEST)
