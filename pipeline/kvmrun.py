"""KVM_RUN boundaries of one vCPU thread from its kvm events (reference §7.1).

Each of the thread's kvm events gets a *role* (bit flags below, in a list
indexed by the timeline's record number) and the thread's runs are listed.
The rules depend on the recording kernel:

* vcpu_run / deferred (>= 4.15): a run is ``kvm_fpu: load`` ... ``kvm_fpu:
  unload`` followed by ``kvm_userspace_exit``; an unload then a load with no
  ``kvm_userspace_exit`` between is an INIT reset inside the run; a load ...
  unload pair with neither ``kvm_entry`` nor ``kvm_userspace_exit`` is a
  KVM_GET_MP_STATE (MPX hosts), not a run; a load while the guest is loaded
  means the run's end was lost (events missing): the run is cut there and a
  new one starts.
* legacy (<= 4.14): ``kvm_userspace_exit`` ends a run (the final put is logged
  after it); an unload right after the thread's own ``sched_switch`` is the
  preempt notifier's put, not a run end; a run starts at ``sys_enter_ioctl``
  KVM_RUN when the trace has it, else at the run's first kvm event.

With ioctl events the ``sys_enter_ioctl``/``sys_exit_ioctl`` bracket is
authoritative: loads inside another ioctl are KVM_GET_MP_STATE.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.codes import E_EMUL, E_ENTRY, E_FPU, E_IOCTL_IN, E_IOCTL_OUT, E_UEXIT

# Roles (bit flags) of a kvm record.
OPEN = 1  # a `runs` interval starts here
SWAPIN = 2  # the KVM_RUN entry swap point (vcpu_run/deferred load the guest here)
CLOSE_SWAP = 4  # the KVM_RUN exit swap point (the put, then return to userspace)
CLOSE = 8  # the `runs` interval ends here
ENTRY = 16  # kvm_entry
INIT = 32  # INIT reset (put + load) inside the run
MP = 64  # KVM_GET_MP_STATE load + put
EMUL = 128  # instruction emulation


@dataclass(slots=True)
class KvmRecord:
    """One kvm-related event of a thread, as the run classifier needs it."""

    rec: int  # index in the timeline's record list
    ev: int  # event code
    ts: int
    load: bool  # kvm_fpu: load (False for unload and other events)
    tail: bool  # kvm_fpu unload logged right after the thread's own sched_switch
    switches: int  # the thread's switch count so far (back-to-back test)
    kvm_run: bool  # sys_enter_ioctl with cmd KVM_RUN
    exit_reason: str | None = None
    exit_code: int | None = None


@dataclass(slots=True)
class Run:
    """One KVM_RUN interval of a thread (a row of the `runs` table)."""

    task: int
    open_rec: int | None  # record of the start (None: before the trace or a gap)
    start_ts: int
    close_rec: int | None = None
    end_ts: int | None = None
    exit_reason: str | None = None
    exit_code: int | None = None
    cut_start: bool = False
    cut_end: bool = False
    first_rec: int = -1  # the first record at which the run is known to be in progress
    at_start: bool = False  # in progress when the trace starts
    swap_rec: int | None = None  # the record carrying SWAPIN
    entered: bool = False  # a kvm_entry was seen inside
    run_idx: int = -1  # per pid, in order (set by the caller)


class _Classifier:
    """Shared bookkeeping: roles, the current run, closing and opening."""

    def __init__(self, task: int, roles: list[int], start_ts: int, at_trace_start: bool) -> None:
        self.task = task
        self.roles = roles
        self.runs: list[Run] = []
        self.run: Run | None = None
        self.trace_start_ts = start_ts
        # The thread's first lifetime began before the trace: a run it is in
        # at its first event was cut by the trace start.
        self.at_trace_start = at_trace_start
        self.first = True

    def mark(self, rec: int, role: int) -> None:
        self.roles[rec] |= role

    def unmark(self, rec: int, role: int) -> None:
        self.roles[rec] &= ~role

    def open(self, r: KvmRecord, swap: bool) -> Run:
        run = Run(self.task, r.rec, r.ts, first_rec=r.rec)
        self.mark(r.rec, OPEN | (SWAPIN if swap else 0))
        if swap:
            run.swap_rec = r.rec
        self.runs.append(run)
        self.run = run
        return run

    def open_cut(self, r: KvmRecord) -> Run:
        """A run already in progress at this record: before the trace, or after a gap."""
        at_start = self.first and self.at_trace_start
        start = self.trace_start_ts if at_start else r.ts
        run = Run(self.task, None, start, cut_start=True, first_rec=r.rec, at_start=at_start)
        self.runs.append(run)
        self.run = run
        return run

    def close(self, r: KvmRecord, swap_rec: int | None, complete: bool = True) -> None:
        run = self.run
        assert run is not None
        if swap_rec is not None:
            self.mark(swap_rec, CLOSE_SWAP)
        self.mark(r.rec, CLOSE)
        run.close_rec = r.rec
        run.end_ts = r.ts
        if r.ev == E_UEXIT:
            run.exit_reason, run.exit_code = r.exit_reason, r.exit_code
        run.cut_end = not complete
        self.run = None

    def abandon(self, r: KvmRecord) -> None:
        """The current run never showed its end: it is cut here (timeline closes it)."""
        run = self.run
        assert run is not None
        run.end_ts = r.ts
        run.cut_end = True
        self.run = None

    def drop_run(self) -> None:
        """Forget the current run (it turned out not to be one)."""
        run = self.run
        assert run is not None
        self.runs.remove(run)
        if run.open_rec is not None:
            self.unmark(run.open_rec, OPEN | SWAPIN)
        self.run = None


def classify_vd(
    task: int,
    recs: list[KvmRecord],
    roles: list[int],
    start_ts: int,
    at_trace_start: bool,
    has_entry: bool,
) -> list[Run]:
    """Runs of one thread recorded by a vcpu_run/deferred kernel; marks ``roles``."""
    c = _Classifier(task, roles, start_ts, at_trace_start)
    loaded = False
    pend_u: KvmRecord | None = None  # an unload not yet known to end the run
    mp_load: KvmRecord | None = None
    ioctl: str | None = None  # 'run' | 'other' while inside a traced ioctl
    has_ioctl = any(r.ev == E_IOCTL_IN for r in recs)

    def end_pending(at: KvmRecord, complete: bool) -> None:
        nonlocal pend_u
        assert pend_u is not None
        c.close(at, pend_u.rec, complete)
        pend_u = None

    for i, r in enumerate(recs):
        c.first = i == 0
        ev = r.ev
        if ev == E_IOCTL_IN:
            if pend_u is not None:  # the run ended without a logged kvm_userspace_exit
                end_pending(pend_u, complete=False)
            if r.kvm_run:
                ioctl = "run"
                if c.run is not None:  # never closed: events missing
                    c.abandon(r)
                c.open(r, swap=False)
                loaded = False
            else:
                ioctl = "other"
        elif ev == E_FPU and r.load:
            if pend_u is not None:
                if _is_init_reset(c.run, pend_u, r, has_ioctl, ioctl, has_entry):
                    c.mark(pend_u.rec, INIT)
                    pend_u = None
                    loaded = True
                    continue
                run = c.run
                if run is not None and run.swap_rec is not None and not run.cut_start:
                    # load ... unload with no entry and no return: KVM_GET_MP_STATE
                    c.mark(run.swap_rec, MP)
                    c.drop_run()
                    pend_u = None
                else:
                    end_pending(pend_u, complete=False)
            elif loaded and c.run is not None and not has_ioctl:
                # These kernels alternate load and unload: a load while the guest
                # is loaded means the unload that ended the run (and its
                # kvm_userspace_exit) were lost.  Runs end far more often than
                # an INIT reset puts, so the run is cut here and a new one
                # starts, rather than two runs being read as one.  (With ioctl
                # events the KVM_RUN bracket says where runs start.)
                c.abandon(r)
            if ioctl == "other":
                mp_load = r
                continue
            if c.run is None:
                c.open(r, swap=True)
            elif not loaded:
                c.mark(r.rec, SWAPIN)
                c.run.swap_rec = r.rec
            loaded = True
        elif ev == E_FPU:  # unload
            if mp_load is not None:
                c.mark(mp_load.rec, MP)
                mp_load = None
            else:
                if c.run is None:
                    c.open_cut(r)
                loaded = False
                pend_u = r
        elif ev == E_UEXIT:
            if pend_u is not None:
                c.close(r, pend_u.rec)
                pend_u = None
            elif c.run is not None:  # no unload logged: events missing
                c.close(r, r.rec if loaded else None, complete=False)
            else:
                c.open_cut(r)
                c.close(r, r.rec, complete=True)
            loaded = False
        elif ev == E_IOCTL_OUT:
            if ioctl == "run":
                if pend_u is not None:
                    c.close(r, pend_u.rec, complete=False)
                    pend_u = None
                elif c.run is not None and c.run.swap_rec is None and not c.run.cut_start:
                    c.drop_run()  # KVM_RUN that never reached the FPU load: no run
                elif c.run is not None:
                    c.close(r, r.rec if loaded else None, complete=False)
                loaded = False
            ioctl = None
        elif ev == E_ENTRY:
            if c.run is None:
                c.open_cut(r)
                loaded = True
            c.run.entered = True
            c.mark(r.rec, ENTRY)
        elif ev == E_EMUL:
            c.mark(r.rec, EMUL)
    if pend_u is not None:
        end_pending(pend_u, complete=False)
    if c.run is not None:
        c.run.cut_end = True
    return c.runs


def _is_init_reset(
    run: Run | None,
    unload: KvmRecord,
    load: KvmRecord,
    has_ioctl: bool,
    ioctl: str | None,
    has_entry: bool,
) -> bool:
    """Unload then load with no kvm_userspace_exit: an INIT reset inside the run?"""
    if run is None:
        return False
    if has_ioctl:
        return ioctl == "run"
    if has_entry:
        # The guest ran in this run, so this is not a GET_MP_STATE pair.
        return run.entered or run.cut_start
    # No entry events: an INIT put/load is back to back, with no switch of the
    # thread between; a GET_MP_STATE pair is followed by userspace work.
    return unload.switches == load.switches


def classify_legacy(
    task: int, recs: list[KvmRecord], roles: list[int], start_ts: int, at_trace_start: bool
) -> list[Run]:
    """Runs of one thread recorded by a legacy (<= 4.14) kernel; marks ``roles``."""
    c = _Classifier(task, roles, start_ts, at_trace_start)
    loaded = False
    after_exit = False  # the previous kvm record was this thread's kvm_userspace_exit
    pend_init: KvmRecord | None = None
    ioctl: str | None = None
    for i, r in enumerate(recs):
        c.first = i == 0
        ev = r.ev
        was_after_exit, after_exit = after_exit, False
        if ev == E_IOCTL_IN:
            if r.kvm_run:
                ioctl = "run"
                if c.run is not None:
                    c.abandon(r)
                c.open(r, swap=True)
                loaded = False
            else:
                ioctl = "other"
        elif ev == E_FPU and r.load:
            if pend_init is not None and pend_init.switches == r.switches:
                c.mark(pend_init.rec, INIT)
            elif c.run is None and ioctl != "other":
                c.open(r, swap=True)
            pend_init = None
            loaded = True
        elif ev == E_FPU:  # unload
            pend_init = None
            if r.tail or was_after_exit:
                # The preempt notifier's put, or the end-of-ioctl put after the
                # run's kvm_userspace_exit: both already accounted for.
                if c.run is None and r.tail:
                    c.open_cut(r)
            elif c.run is not None and loaded:
                pend_init = r
            loaded = False
        elif ev == E_UEXIT:
            if c.run is None:
                c.open_cut(r)
                if not (c.first and c.at_trace_start):
                    c.run.cut_start = False  # a run with no guest entry: no kvm_fpu at all
            c.close(r, r.rec)
            loaded = False
            after_exit = True
        elif ev == E_IOCTL_OUT:
            if ioctl == "run" and c.run is not None:
                c.close(r, r.rec, complete=False)
            ioctl = None
        elif ev == E_ENTRY:
            if c.run is None:
                if c.first and c.at_trace_start:
                    c.open_cut(r)
                else:
                    c.open(r, swap=True)
            c.run.entered = True
            c.mark(r.rec, ENTRY)
        elif ev == E_EMUL:
            c.mark(r.rec, EMUL)
    if c.run is not None:
        c.run.cut_end = True
    return c.runs
