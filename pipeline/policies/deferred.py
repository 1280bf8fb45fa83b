"""`deferred`: 5.6+ (D56 and S, equal in counts; reference §2.D, §2.S, §3.2).

As `vcpu_run`, but nothing is restored at switch-in: TIF_NEED_FPU_LOAD is
set and the restore waits until just before the next guest entry (or
emulation, or the return to userspace), and is skipped if the registers are
still valid.  The KVM_RUN entry/exit swap skips its save when TIF is set
(the context switch already saved: 5.16+ ``fpu_swap_kvm_fpstate``; 5.6–5.15
copy memory instead, which is not an XSAVE).  A context switch saves only
when TIF is clear.

The 5.2–5.5 variants differ only in the edge cases of reference §4 (vi):
D52 saves at the put even when TIF is set (the bug), D53 restores at
``kvm_sched_in``; each would be a subclass overriding one method.
"""

from __future__ import annotations

from pipeline.policies import sites as S
from pipeline.policies.base import GUEST, USER, Policy


class Deferred(Policy):
    """Policy D56 / S."""

    name = "deferred"

    def _content(self, t: int) -> int:
        return GUEST if self.loaded[t] else USER

    def switch_out(self, t: int, st: tuple) -> None:
        if not self.tif[t]:
            self.save(t, self._content(t), S.CS_OUT, st)
            self.last_cpu[t] = st[3]
        self.tif[t] = True  # switch_fpu(): the registers now belong to whoever comes next

    def switch_in(self, t: int, st: tuple) -> None:
        self.tif[t] = True
        if not self.in_run[t] and self.returns_to_user(st):
            self._restore_deferred(t, USER, S.DEFER_USER, st)
            self.use(t, USER)

    def _restore_deferred(self, t: int, ctx: int, site: int, st: tuple) -> None:
        """switch_fpu_return() / fpregs_restore_userregs(): only if TIF and invalid."""
        if self.tif[t]:
            cpu = st[3]
            if not self.valid(t, cpu):
                self.restore(t, ctx, site, st)
                self.owner[cpu] = t
                self.last_cpu[t] = cpu
            self.tif[t] = False

    def _swap(self, t: int, out_ctx: int, in_ctx: int, site: int, st: tuple) -> None:
        """fpu_swap_kvm_fpstate(): save unless TIF, restore, mark active."""
        if not self.tif[t]:
            self.save(t, out_ctx, site, st)
        self.restore(t, in_ctx, site, st)
        self.mark_activate(t, st[3])

    def run_start(self, st: tuple) -> None:
        t = st[4]
        self._swap(t, USER, GUEST, S.KVM_LOAD, st)
        self.in_run[t] = self.loaded[t] = True

    def entry(self, st: tuple) -> None:
        t = st[4]
        if self.in_run[t]:
            self._restore_deferred(t, GUEST, S.DEFER_GUEST, st)
            self.use(t, GUEST)

    def run_end(self, st: tuple) -> None:
        t = st[4]
        if self.loaded[t]:
            self._swap(t, GUEST, USER, S.KVM_PUT, st)
        self.in_run[t] = self.loaded[t] = False
        self.use(t, USER)

    def init_reset(self, st: tuple) -> None:
        t = st[4]
        self._swap(t, GUEST, USER, S.INIT_PUT, st)
        self._swap(t, USER, GUEST, S.INIT_LOAD, st)
        self.loaded[t] = True

    def mp_state(self, st: tuple) -> None:
        # f958bd2314d1 (5.5/5.6) until SEAN25: a load + put outside KVM_RUN.
        t = st[4]
        self._swap(t, USER, GUEST, S.MP_LOAD, st)
        self._swap(t, GUEST, USER, S.MP_PUT, st)
        self.use(t, USER)  # the ioctl returns to userspace

    def emulation(self, st: tuple) -> None:
        t = st[4]
        if self.in_run[t]:
            self._restore_deferred(t, GUEST, S.DEFER_EMUL, st)
            self.use(t, GUEST)
