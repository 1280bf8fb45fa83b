"""Which FPU switching policy the recording kernel ran (reference §7.2).

Evidence, strongest first:

1. the kernel version when known (perf header, trace-cmd uname), mapped to
   its policy; distribution kernels carry backports, so the trace is checked
   too and wins when it disagrees;
2. the order of a run's last ``kvm_fpu: unload`` and its
   ``kvm_userspace_exit`` (legacy logs the exit first), and legacy's unloads
   right after the vCPU's own ``sched_switch`` (the preempt-notifier put);
3. vcpu_run vs deferred: the x86_fpu events print ``initialized:`` up to 5.1
   and ``load:`` from 5.2, and from 5.2 every kvm_fpu is preceded by an
   ``x86_fpu_regs_activated`` of the same thread; format clues (5-character
   flags, ``rip`` on kvm_entry, ``info1`` on kvm_exit) date the kernel too;
4. otherwise ``undetermined`` (runs are then read with the >= 4.15 rules).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import polars as pl

from pipeline.codes import E_FPU, E_UEXIT
from pipeline.prepare import FPU_LOAD, FPU_TAIL, FPU_UNLOAD, in_trace_order

POLICY_NAMES = ("legacy", "vcpu_run", "deferred")
UNDETERMINED = "undetermined"


@dataclass
class Detection:
    """The recorded policy and the evidence for it, as the manifest stores them."""

    policy: str  # legacy | vcpu_run | deferred | undetermined
    evidence: list[str] = field(default_factory=list)
    variant: str | None = None  # the reference's id (L, V, D52, D53, D56, S) when known

    @property
    def run_rules(self) -> str:
        """Which KVM_RUN boundary rules apply: 'legacy' or the >= 4.15 ones."""
        return "legacy" if self.policy == "legacy" else "vcpu_run"


def policy_for_version(kernel: str) -> tuple[str, str] | None:
    """(policy, variant) for a kernel release string such as '6.18.44-fc'."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", kernel.strip())
    if not m:
        return None
    major, minor, patch = int(m[1]), int(m[2]), int(m[3] or 0)
    v = (major, minor)
    if v < (4, 11):
        return None  # lazy guest FPU: out of scope
    if v < (4, 15):
        return "legacy", "L"  # 4.14.y after the f775b13eedee backport behaves as V
    if v < (5, 2):
        return "vcpu_run", "V"
    if v == (5, 2):
        return "deferred", "D52"
    if v == (5, 4) and patch >= 19:
        return "deferred", "D56"
    if v < (5, 6):
        return "deferred", "D53"
    if v < (5, 16):
        return "deferred", "D56"
    return "deferred", "S"


def detect(
    df: pl.DataFrame, kernel: str | None = None, events: pl.DataFrame | None = None
) -> Detection:
    """Detect the recording policy.

    ``df`` is the prepared frame (pipeline.prepare) for the kvm event order;
    ``events`` the source's events for the format clues (default: ``df``,
    which has dropped most x86_fpu lines, so counts are then partial).
    """
    ev: list[str] = []
    by_version = policy_for_version(kernel) if kernel else None
    if kernel:
        if by_version:
            ev.append(f"kernel {kernel} maps to {by_version[0]} ({by_version[1]})")
        else:
            ev.append(f"kernel {kernel}: no policy for this version")

    order_legacy, order_new, notifier = _end_order(df)
    family: str | None = None
    if order_legacy or notifier:
        ev.append(
            f"legacy order: {order_legacy} kvm_userspace_exit before the run's last unload, "
            f"{notifier} unloads right after the vCPU's own sched_switch"
        )
    if order_new:
        ev.append(f"{order_new} runs log kvm_fpu unload before kvm_userspace_exit (>= 4.15)")
    if (order_legacy or notifier) and not order_new:
        family = "legacy"
    elif order_new and not (order_legacy or notifier):
        family = "new"
    elif order_new or order_legacy or notifier:
        family = "legacy" if order_legacy + notifier > order_new else "new"
        ev.append("conflicting end-order evidence: the majority wins")

    era = _era(events if events is not None else df)
    ev.extend(era[1])
    if family == "legacy":
        policy, variant = "legacy", "L"
    elif family == "new" and era[0] is not None:
        policy = era[0]
        variant = "V" if policy == "vcpu_run" else None
    elif family == "new":
        policy, variant = UNDETERMINED, None
        ev.append("vcpu_run or deferred: nothing in the trace tells them apart")
    elif era[0] is not None:
        policy, variant = era[0], ("V" if era[0] == "vcpu_run" else None)
    else:
        policy, variant = UNDETERMINED, None
        ev.append("no end-order, preemption or format evidence")

    if by_version:
        vpolicy, vvariant = by_version
        if policy == UNDETERMINED and family == "new" and vpolicy == "legacy":
            # >= 4.15 order on a 4.14 kernel: 4.14.y carries the f775b13eedee backport
            policy, variant = "vcpu_run", "V"
            ev.append("4.14.y with >= 4.15 order: the f775b13eedee backport (vcpu_run)")
        elif policy == UNDETERMINED:
            policy, variant = vpolicy, vvariant
        elif policy != vpolicy:
            ev.append(f"trace evidence ({policy}) overrides the kernel version ({vpolicy})")
        elif variant is None or policy == "deferred":
            variant = vvariant
    if policy == UNDETERMINED:
        ev.append("runs read with the >= 4.15 rules; validate compares with deferred")
    return Detection(policy, ev, variant)


def _end_order(df: pl.DataFrame) -> tuple[int, int, int]:
    """(exit-then-unload, unload-then-exit, notifier unloads) of the vCPU threads' events."""
    kvm = df.filter(pl.col("code").is_in([E_FPU, E_UEXIT])).select(
        "code",
        "flag",
        prev_code=pl.col("code").shift(1).over("pid"),
        prev_flag=pl.col("flag").shift(1).over("pid"),
    )
    unload = (pl.col("code") == E_FPU) & (pl.col("flag") != FPU_LOAD)
    # An unload logged right after the thread's own sched_switch is legacy's
    # preempt-notifier put, whatever follows it.
    notifier = unload & (pl.col("flag") == FPU_TAIL)
    prev_unload = (pl.col("prev_code") == E_FPU) & (pl.col("prev_flag") == FPU_UNLOAD)
    counts = kvm.select(
        legacy=(unload & ~notifier & (pl.col("prev_code") == E_UEXIT)).sum(),
        new=((pl.col("code") == E_UEXIT) & prev_unload).sum(),
        notifier=notifier.sum(),
    ).row(0)
    return int(counts[0] or 0), int(counts[1] or 0), int(counts[2] or 0)


def _era(events: pl.DataFrame) -> tuple[str | None, list[str]]:
    """vcpu_run (<= 5.1) or deferred (>= 5.2) from x86_fpu and format clues (all lines)."""
    ev: list[str] = []
    s = events.select(
        new=pl.col("fpu_tif").is_not_null().sum(),
        old=pl.col("fpu_initialized").is_not_null().sum(),
        flags5=(pl.col("flags").str.len_chars() == 5).sum(),
    ).row(0, named=True)
    if s["new"]:
        ev.append(f"x86_fpu events print 'load:' ({s['new']} lines): >= 5.2")
        # >= 5.2: fpregs_mark_activate() prints an activated line right before
        # each kvm_fpu line of the thread (interrupts' wakeups may fall between)
        lines = events.select("line_no", "ts_ns", "cpu", "pid", "event").filter(
            ~pl.col("event").str.starts_with("sched_wak")
        )
        if not in_trace_order(lines):
            lines = lines.sort("ts_ns", "line_no", maintain_order=True)
        fpu = lines.select(
            "event",
            "pid",
            prev_event=pl.col("event").shift(1).over("cpu"),
            prev_pid=pl.col("pid").shift(1).over("cpu"),
        ).filter(pl.col("event") == "kvm_fpu")
        preceded = fpu.filter(
            (pl.col("prev_event") == "x86_fpu_regs_activated")
            & (pl.col("prev_pid") == pl.col("pid"))
        )
        if fpu.height and preceded.height == fpu.height:
            ev.append(f"all {fpu.height} kvm_fpu lines follow the thread's regs_activated: >= 5.2")
    if s["old"]:
        ev.append(f"x86_fpu events print 'initialized:' ({s['old']} lines): <= 5.1")
    if s["new"] and not s["old"]:
        return "deferred", ev
    if s["old"] and not s["new"]:
        return "vcpu_run", ev
    if s["flags5"]:
        ev.append("5-character irq-flags column: >= 5.13")
        return "deferred", ev
    return None, ev
