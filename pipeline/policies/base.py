"""The state every policy keeps, the op log, and the redundancy rules.

A policy is a subclass of :class:`Policy` that says what the kernel does at
each replay step (pipeline.codes ``ST_*``): a context switch, the KVM_RUN
entry and exit, a guest entry, an INIT reset, a KVM_GET_MP_STATE, an
emulation.  The state is that of reference §3.1, kept in flat lists indexed
by task id (the timeline's tasks) and CPU:

* ``owner[c]``: whose registers CPU ``c`` holds; ``last_cpu[t]``;
  ``valid(t, c) = owner[c] == t and last_cpu[t] == c`` skips a restore;
* ``tif[t]``: TIF_NEED_FPU_LOAD (used by `deferred`);
* per vCPU thread ``in_run`` (between the KVM_RUN entry and exit swaps) and
  ``loaded`` (the guest context is the active one).

Redundancy (fpu-model.md): a save is redundant when its context has not run
since it was last restored or saved; a restore is redundant when its
context is saved again or replaced before it runs.  The user context runs
when the thread returns to userspace, the guest at a guest entry.  Only
vCPU threads' operations are logged; other user tasks' restores matter only
through the register ownership they take.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.codes import N_STEPS
from pipeline.policies import sites as S
from pipeline.tasks import Kind
from pipeline.timeline import Timeline

USER, GUEST = 0, 1  # contexts; op code = 2 * context + is_restore


@dataclass
class OpLog:
    """The operations one policy performed.

    ``ops`` holds one tuple per operation, (task, ts, line, cpu, code, site,
    run_idx, sched_out_line, sched_out_state) with code 0 save user, 1
    restore user, 2 save guest, 3 restore guest, run_idx -1 outside any run,
    and the line and state (pipeline.codes ``S_*``) of the thread's latest
    sched-out since its last KVM_RUN entry or exit (-1: none); ``redundant``
    maps the index of each redundant op to its encoded reason (sites.encode).
    """

    ops: list[tuple[int, int, int, int, int, int, int, int, int]]
    redundant: dict[int, int]

    def __len__(self) -> int:
        return len(self.ops)


class Policy:
    """Replays the timeline's steps under one FPU switching policy."""

    name = "base"

    def __init__(self, tl: Timeline) -> None:
        n = len(tl.task_pid)
        n_cpus = tl.n_cpus
        self.tl = tl
        self.returns = tl.slice_returns
        self.is_vcpu = [k == Kind.VCPU for k in tl.task_kind]
        # Kernel threads and idle never save or restore user FPU state (§1.1).
        self.fpu = [k >= Kind.USER for k in tl.task_kind]
        self.owner = [-1] * n_cpus
        self.last_cpu = [-1] * n
        self.tif = [True] * n  # other tasks' contexts start saved in memory
        self.in_run = [False] * n
        self.loaded = [False] * n
        self.run_of = [-1] * n
        # the thread's latest sched-out since its last KVM_RUN entry or exit
        # (the episode an op belongs to, for reports): line, state
        self.out_line = [-1] * n
        self.out_state = [-1] * n
        self.dirty = [False] * (2 * n)
        self.pending = [-1] * (2 * n)
        self.last_site = [S.NO_SITE] * (2 * n)
        self.last_restore = [False] * (2 * n)
        self.log = OpLog([], {})
        self._ops = self.log.ops
        self._red = self.log.redundant
        self._begin(tl)

    # -- starting state (fpu-model.md) -----------------------------------------
    def _begin(self, tl: Timeline) -> None:
        on_cpu = {t: c for c, t in tl.initial_cpu.items()}
        for t, idx in tl.run_at_start.items():
            self.in_run[t] = True
            self.run_of[t] = idx
            self.loaded[t] = self.loaded_at_start(t, t in on_cpu)
        for t, c in on_cpu.items():
            if t >= 0 and self.fpu[t]:
                # Running when the trace starts: owns the registers, valid,
                # in the context it is in, and that context has been running.
                self.owner[c] = t
                self.last_cpu[t] = c
                self.tif[t] = False
                self.dirty[2 * t + (GUEST if self.loaded[t] else USER)] = True

    def loaded_at_start(self, task: int, on_cpu: bool) -> bool:
        """Whether a thread inside KVM_RUN at the trace start has the guest loaded."""
        return True

    # -- the replay ------------------------------------------------------------
    def run(self) -> OpLog:
        """Replay every step; returns the op log."""
        handlers = [None] * N_STEPS
        from pipeline import codes as C

        handlers[C.ST_SWITCH] = self._switch
        handlers[C.ST_RUN_START] = self._run_start
        handlers[C.ST_RUN_END] = self._run_end
        handlers[C.ST_ENTRY] = self.entry
        handlers[C.ST_INIT] = self.init_reset
        handlers[C.ST_MP] = self.mp_state
        handlers[C.ST_EMUL] = self.emulation
        handlers[C.ST_OPEN] = self._open
        handlers[C.ST_CLOSE] = self._close
        for st in self.tl.steps:
            handlers[st[0]](st)
        return self.log

    def _switch(self, st: tuple) -> None:
        prev, nxt = st[4], st[5]
        if prev >= 0 and self.fpu[prev]:
            self.out_line[prev] = st[2]
            self.out_state[prev] = st[7]
            self.switch_out(prev, st)
        if nxt >= 0 and self.fpu[nxt]:
            self.switch_in(nxt, st)

    def _run_start(self, st: tuple) -> None:
        self.out_line[st[4]] = self.out_state[st[4]] = -1
        self.run_start(st)

    def _run_end(self, st: tuple) -> None:
        self.run_end(st)  # the put still belongs to the run's last sched-out
        self.out_line[st[4]] = self.out_state[st[4]] = -1

    def _open(self, st: tuple) -> None:
        t = st[4]
        self.run_of[t] = st[5]
        if st[6] and not self.in_run[t]:
            # Inside a run whose start the trace does not show (after a gap).
            self.in_run[t] = True
            self.loaded[t] = self.loaded_at_start(t, True)

    def _close(self, st: tuple) -> None:
        self.run_of[st[4]] = -1

    # -- what a policy defines -------------------------------------------------
    def switch_out(self, t: int, st: tuple) -> None:
        """``t`` (a user task or vCPU thread) is switched out on CPU ``st[3]``."""
        raise NotImplementedError

    def switch_in(self, t: int, st: tuple) -> None:
        """``t`` (a user task or vCPU thread) is switched in; ``st[6]`` is its slice."""
        raise NotImplementedError

    def run_start(self, st: tuple) -> None:
        """KVM_RUN entry of thread ``st[4]``."""
        raise NotImplementedError

    def run_end(self, st: tuple) -> None:
        """KVM_RUN exit of thread ``st[4]``: the put, then back to userspace."""
        raise NotImplementedError

    def entry(self, st: tuple) -> None:
        """Guest entry of thread ``st[4]``."""
        raise NotImplementedError

    def init_reset(self, st: tuple) -> None:
        """INIT reset inside KVM_RUN (MPX/CET hosts): put then load (§1.5)."""
        raise NotImplementedError

    def mp_state(self, st: tuple) -> None:
        """KVM_GET_MP_STATE on MPX hosts (5.5+ kernels only): load then put."""

    def emulation(self, st: tuple) -> None:
        """Instruction emulation that touches the guest FPU."""
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------
    def valid(self, t: int, cpu: int) -> bool:
        """fpregs_state_valid(): the registers of ``cpu`` still hold ``t``'s state."""
        return self.owner[cpu] == t and self.last_cpu[t] == cpu

    def mark_activate(self, t: int, cpu: int) -> None:
        """fpregs_mark_activate() (>= 5.2): owner, last_cpu, TIF cleared."""
        self.owner[cpu] = t
        self.last_cpu[t] = cpu
        self.tif[t] = False

    def returns_to_user(self, st: tuple) -> bool:
        """Whether the task switched in by ``st`` goes back to userspace in that slice."""
        sid = st[6]
        if sid < 0:
            return sid == -1  # -1: not tracked (taken to return); -2: inside KVM_RUN
        return self.returns[sid]

    def use(self, t: int, ctx: int) -> None:
        """Context ``ctx`` of ``t`` runs: a pending restore was needed, memory is stale."""
        k = 2 * t + ctx
        self.pending[k] = -1
        self.dirty[k] = True

    def save(self, t: int, ctx: int, site: int, st: tuple) -> None:
        """An XSAVE of context ``ctx`` of vCPU thread ``t``."""
        if not self.is_vcpu[t]:
            return
        ops, red = self._ops, self._red
        k = 2 * t + ctx
        i = len(ops)
        ops.append(
            (t, st[1], st[2], st[3], 2 * ctx, site, self.run_of[t], self.out_line[t],
             self.out_state[t])
        )  # fmt: skip
        if not self.dirty[k]:
            kind = S.SAVE_AFTER_RESTORE if self.last_restore[k] else S.SAVE_AFTER_SAVE
            red[i] = S.encode(kind, self.last_site[k], site)
        p = self.pending[k]
        if p >= 0:
            red[p] = S.encode(S.RESTORE_SAVED, ops[p][5], site)
            self.pending[k] = -1
        self.dirty[k] = False
        self.last_site[k] = site
        self.last_restore[k] = False

    def restore(self, t: int, ctx: int, site: int, st: tuple) -> None:
        """An XRSTOR of context ``ctx`` of vCPU thread ``t``."""
        if not self.is_vcpu[t]:
            return
        ops, red, pending = self._ops, self._red, self.pending
        k = 2 * t + ctx
        i = len(ops)
        ops.append(
            (t, st[1], st[2], st[3], 2 * ctx + 1, site, self.run_of[t], self.out_line[t],
             self.out_state[t])
        )  # fmt: skip
        for j in (k ^ 1, k):  # the other context, then this one, restored and never run
            p = pending[j]
            if p >= 0:
                red[p] = S.encode(S.RESTORE_REPLACED, ops[p][5], site)
                pending[j] = -1
        pending[k] = i
        self.dirty[k] = False
        self.last_site[k] = site
        self.last_restore[k] = True
