"""Small integer codes shared by the timeline and the policies.

The replay's hot loops compare ints, not strings; this module is the one
place that maps the `events` table's names onto them.
"""

from __future__ import annotations

import polars as pl

# --- event codes (the `event` column) --------------------------------------
E_OTHER = 0
E_SWITCH = 1
E_FPU = 2  # kvm_fpu
E_ENTRY = 3  # kvm_entry
E_UEXIT = 4  # kvm_userspace_exit
E_ACT = 5  # x86_fpu_regs_activated
E_DEACT = 6  # x86_fpu_regs_deactivated
E_IOCTL_IN = 7  # sys_enter_ioctl
E_IOCTL_OUT = 8  # sys_exit_ioctl
E_LOST = 9  # lost_events marker
E_EMUL = 10  # kvm_emulate_insn

EVENT_CODES: dict[str, int] = {
    "sched_switch": E_SWITCH,
    "kvm_fpu": E_FPU,
    "kvm_entry": E_ENTRY,
    "kvm_userspace_exit": E_UEXIT,
    "x86_fpu_regs_activated": E_ACT,
    "x86_fpu_regs_deactivated": E_DEACT,
    "sys_enter_ioctl": E_IOCTL_IN,
    "sys_exit_ioctl": E_IOCTL_OUT,
    "lost_events": E_LOST,
    "kvm_emulate_insn": E_EMUL,
}

# --- sched-out states (prev_state, by its first letter) ---------------------
S_PREEMPT = 0  # R, R+: preempted or yielded
S_BLOCK = 1  # S, D: blocked
S_OTHER = 2  # T, t, I, P, ...
S_EXIT = 3  # X, Z: the thread exits
S_UNKNOWN = 4  # inferred switch: the state was not logged


def state_codes(prev_state: pl.Expr) -> pl.Expr:
    """Sched-out state codes from the kernel's prev_state letters (ref §7.3)."""
    first = prev_state.str.slice(0, 1)
    return (
        pl.when(first == "R")
        .then(S_PREEMPT)
        .when(first.is_in(["S", "D"]))
        .then(S_BLOCK)
        .when(first.is_in(["X", "Z"]))
        .then(S_EXIT)
        .when(first.is_null())
        .then(S_UNKNOWN)
        .otherwise(S_OTHER)
    )


STATE_NAMES = {
    S_PREEMPT: "preempted",
    S_BLOCK: "blocked",
    S_OTHER: "other",
    S_EXIT: "exit",
    S_UNKNOWN: "unknown",
}

# --- records of the timeline's first pass -----------------------------------
R_SWITCH = 0
R_KVM = 1
R_LOST = 2

# --- replay steps (what the policies consume) ------------------------------
ST_SWITCH = 0  # (code, ts, line, cpu, prev_task, next_task, next_slice, prev_state)
# every other step: (code, ts, line, cpu, task, x, y)
ST_RUN_START = 1  # KVM_RUN entry: where vcpu_run/deferred load the guest
ST_RUN_END = 2  # KVM_RUN exit: the put, then the ioctl returns to userspace
ST_ENTRY = 3  # guest entry (kvm_entry, or synthesised)
ST_INIT = 4  # INIT reset inside KVM_RUN (put + load)
ST_MP = 5  # KVM_GET_MP_STATE on MPX hosts (load + put outside KVM_RUN)
ST_EMUL = 6  # instruction emulation touching the guest FPU
ST_OPEN = 7  # a `runs` interval opens (x = run_idx): attributes ops to runs
ST_CLOSE = 8  # a `runs` interval closes
N_STEPS = 9

#: Task id standing for "some task we did not see" (after an inferred switch-out).
UNKNOWN_TASK = -1
