"""What a simulation produces: records in time order, replay steps, tasks and statistics.

A *record* is one thing the host did that a trace line can show: a context
switch, a wakeup, a KVM_RUN entry or exit, a guest entry or exit.  Records are
kept as parallel columns, appended in time order by the event loop, so the
record index orders records at equal times.  FPU lines (kvm_fpu, x86_fpu_*)
are not records: the recording policy's state machine decides them
(pipeline.model.lines).

The in-kernel VM exits inside each stretch of guest execution carry no
scheduling consequence, so the loop records only the stretches
(``segments``); :func:`inner_exits` expands them into kvm_exit/kvm_entry pairs
with numpy, which is where most lines of a VMX host trace come from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# --- record kinds (also the line kinds of the output) ------------------------
R_SWITCH = 0  # a: prev task, b: next task, c: prev_state code
R_WAKE = 1  # a: woken task, b: target CPU
R_RUN_IN = 2  # sys_enter_ioctl; a: fd, b: command (CMD_*)
R_ENTRY = 3  # kvm_entry
R_EXIT = 4  # kvm_exit; a: exit reason code
R_UEXIT = 5  # kvm_userspace_exit; a: userspace exit code
R_RUN_OUT = 6  # sys_exit_ioctl; a: return value
L_FPU = 7  # kvm_fpu; a: 1 load / 0 unload
L_ACT = 8  # x86_fpu_regs_activated; a: context (0 user, 1 guest), b: TIF printed, c: flags style
L_DEACT = 9  # x86_fpu_regs_deactivated; a, b, c as L_ACT
N_KINDS = 10
#: Never printed: anchors the FPU lines of a step no printed record carries (a vCPU
#: that waited for its mutex inside KVM_RUN loads the guest FPU when it runs again).
R_ANCHOR = 10

EVENT_NAMES = (
    "sched_switch", "sched_wakeup", "sys_enter_ioctl", "kvm_entry", "kvm_exit",
    "kvm_userspace_exit", "sys_exit_ioctl", "kvm_fpu", "x86_fpu_regs_activated",
    "x86_fpu_regs_deactivated",
)  # fmt: skip
SUBSYSTEMS = ("sched", "sched", "syscalls", "kvm", "kvm", "kvm", "syscalls", "kvm",
              "x86_fpu", "x86_fpu")  # fmt: skip

# --- prev_state codes ---------------------------------------------------------
# S_KVM is a vCPU preempted inside KVM_RUN: cond_resched() logs R+ before 5.11,
# KVM's xfer_to_guest_mode work a plain schedule(), R, after (Era.vcpu_preempt_state).
S_R, S_RPLUS, S_S, S_D, S_I, S_KVM = range(6)


def state_text(kvm_preempt: str) -> tuple[str, ...]:
    """prev_state letters by code, with ``kvm_preempt`` for S_KVM."""
    return ("R", "R+", "S", "D", "I", kvm_preempt)

# --- kvm_exit reasons (VMX names) ----------------------------------------------
(X_EXTINT, X_HLT, X_IO, X_MMIO, X_MSR, X_EPTV, X_PTIMER, X_PAUSE, X_CPUID) = range(9)
EXIT_NAMES = (
    "EXTERNAL_INTERRUPT", "HLT", "IO_INSTRUCTION", "EPT_MISCONFIG", "MSR_WRITE",
    "EPT_VIOLATION", "PREEMPTION_TIMER", "PAUSE_INSTRUCTION", "CPUID",
)  # fmt: skip
#: (info1, info2, intr_info) printed for each reason (plausible constants).
EXIT_INFO = (
    (0, 0, 0x800000EC), (0, 0, 0), (0x1F10048, 0, 0), (0, 0xFEBD1000, 0), (0, 0, 0),
    (0x181, 0x7F3A2000, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0),
)  # fmt: skip
#: Reasons of the in-kernel exits expanded by :func:`inner_exits`, and their weights.
INNER_REASONS = np.array([X_EXTINT, X_MSR, X_EPTV, X_PTIMER, X_MMIO, X_PAUSE, X_CPUID])
INNER_WEIGHTS = np.array([0.30, 0.25, 0.15, 0.14, 0.08, 0.05, 0.03])

# --- kvm_userspace_exit --------------------------------------------------------
U_IO, U_MMIO, U_RESTART = range(3)
UEXIT_TEXT = ("reason KVM_EXIT_IO (2)", "reason KVM_EXIT_MMIO (6)", "reason restart (4)")
UEXIT_REASON = ("KVM_EXIT_IO", "KVM_EXIT_MMIO", "restart")
UEXIT_CODE = (2, 6, 4)

# --- ioctl commands (R_RUN_IN's b) -------------------------------------------------
CMD_RUN, CMD_GET_XSAVE = range(2)
IOCTL_NAMES = ("KVM_RUN", "KVM_GET_XSAVE")
IOCTL_HEX = (0xAE80, 0x9000AEA4)
#: The argument printed: KVM_RUN takes none, KVM_GET_XSAVE a user buffer (plausible address).
IOCTL_ARG = (0, 0x7F3494004000)

# --- task roles ----------------------------------------------------------------------
ROLE_IDLE, ROLE_KWORKER, ROLE_HOST, ROLE_VMM_MAIN, ROLE_IOTHREAD, ROLE_VCPU, ROLE_MIGRATION = (
    range(7)
)


@dataclass
class TaskInfo:
    """Static facts of one task (a thread)."""

    pid: int
    tgid: int
    comm: str
    kind: int  # pipeline.tasks.Kind value: 0 idle, 1 kthread, 2 user, 3 vCPU
    role: int
    vm: int = -1
    vcpu_id: int = -1
    pinned: int = -1  # CPU a per-CPU kernel thread is bound to


@dataclass
class Schedule:
    """The output of one simulation (see the module docstring)."""

    n_cpus: int
    end_ns: int  # the simulated duration: nothing at or after it is recorded
    clock_start_ns: int
    tasks: list[TaskInfo]
    # records, parallel columns in time order
    ts: np.ndarray
    cpu: np.ndarray
    task: np.ndarray  # the task that logs the line (current on the CPU)
    kind: np.ndarray
    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    # stretches of guest execution: (task, cpu, start, end)
    seg_task: np.ndarray
    seg_cpu: np.ndarray
    seg_start: np.ndarray
    seg_end: np.ndarray
    #: replay steps in the timeline's format (pipeline.codes ST_*); the line field is
    #: the record index
    steps: list[tuple[int, int, int, int, int, int, int]]
    stats: dict[int, dict[str, int]]  # per vCPU task: runs, preemptions, blocks, ...
    seed: int = 0  # the expansion (in-kernel exits, rips) draws from a generator of this seed
    host_stats: dict[str, Any] = field(default_factory=dict)
    #: KVM_GET_XSAVE calls of the migration threads: (thread, vCPU, enter record,
    #: exit record (-1: still in progress), waited for the vCPU mutex)
    xsave_calls: list[tuple[int, int, int, int, bool]] = field(default_factory=list)
    #: per vCPU task, its KVM_RUN calls: (record of the guest FPU load point, record
    #: of its first guest entry (-1: none), record of kvm_userspace_exit (-1: none))
    vcpu_runs: dict[int, list[list[int]]] = field(default_factory=dict)

    @property
    def n_records(self) -> int:
        """Number of records."""
        return len(self.ts)

    def vcpu_tasks(self) -> list[int]:
        """Task ids of the vCPU threads, in creation order."""
        return [i for i, t in enumerate(self.tasks) if t.role == ROLE_VCPU]


def inner_exits(
    sched: Schedule, exit_hz: float, exit_us: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """kvm_exit/kvm_entry pairs of in-kernel exits inside the guest stretches.

    Counts are Poisson with mean ``exit_hz`` times the stretch's length;
    handling times (exit to entry) uniform in 0.5..1.5 ``exit_us``.  Pairs are
    placed as sorted uniforms pushed apart by the longest handling time, so an
    exit never falls inside the previous pair and the last entry comes before
    the stretch's own end: each stretch stays exit-free at its boundaries.
    """
    empty = np.zeros(0, dtype=np.int64)
    if exit_hz <= 0 or len(sched.seg_start) == 0:
        return {"ts": empty, "cpu": empty, "task": empty, "kind": empty, "a": empty}
    start, end = sched.seg_start, sched.seg_end
    dur = end - start
    h_mean = max(exit_us * 1000.0, 2.0)
    h_max = int(1.5 * h_mean) + 1
    counts = rng.poisson(exit_hz * dur / 1e9)
    cap = np.maximum((dur - 2) // (h_max + 1), 0)
    counts = np.minimum(counts, cap)
    total = int(counts.sum())
    if total == 0:
        return {"ts": empty, "cpu": empty, "task": empty, "kind": empty, "a": empty}
    seg = np.repeat(np.arange(len(counts)), counts)
    room = np.maximum(dur - counts * (h_max + 1) - 1, 0)
    u = (rng.random(total) * room[seg]).astype(np.int64)
    # Sort u within each stretch (seg is sorted already).  u <= room (the product
    # can round up to room), so offsetting each stretch's values by the rooms (+1)
    # before it keeps the stretches apart, and one sort of the values does what a
    # lexsort by (seg, u) did, several times faster: equal keys are equal values.
    offset = (np.cumsum(room + 1) - (room + 1))[seg]
    u = np.sort(u + offset) - offset
    first = np.cumsum(counts) - counts
    rank = np.arange(total) - first[seg]
    exit_ts = start[seg] + 1 + u + rank * (h_max + 1)
    handle = (h_mean * (0.5 + rng.random(total))).astype(np.int64) + 1
    entry_ts = exit_ts + np.minimum(handle, h_max)
    reasons = INNER_REASONS[
        np.searchsorted(np.cumsum(INNER_WEIGHTS), rng.random(total) * INNER_WEIGHTS.sum())
    ]
    keep = entry_ts < sched.end_ns  # a stretch cut by the end of the simulation
    n_exit, n_entry = total, int(keep.sum())
    task = sched.seg_task[seg]
    cpu = sched.seg_cpu[seg]
    return {
        "ts": np.concatenate([exit_ts, entry_ts[keep]]),
        "cpu": np.concatenate([cpu, cpu[keep]]),
        "task": np.concatenate([task, task[keep]]),
        "kind": np.concatenate(
            [np.full(n_exit, R_EXIT, dtype=np.int64), np.full(n_entry, R_ENTRY, dtype=np.int64)]
        ),
        "a": np.concatenate([reasons, np.zeros(n_entry, dtype=np.int64)]),
    }
