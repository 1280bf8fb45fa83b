"""Where an FPU operation happens, and why a redundant one is redundant.

A *site* is the kernel code path that performs an operation (reference §0.1
tags: KVM-load, KVM-put, CS-out, CS-in, DEFER).  Each site has the `fpu_ops`
trigger it reports and a phrase used to explain redundancy in words a kernel
engineer recognises.
"""

from __future__ import annotations

from typing import NamedTuple


class Site(NamedTuple):
    """A code path that saves or restores FPU state."""

    trigger: str  # fpu_ops.trigger
    tag: str  # the reference's site tag (fpu_ops.site)
    phrase: str  # "<context> state restored <phrase>"


SITES: tuple[Site, ...] = (
    Site("ioctl_entry", "KVM-load", "when KVM_RUN loads the guest FPU"),
    Site("ioctl_exit", "KVM-put", "when KVM_RUN puts the guest FPU"),
    Site("sched_out", "CS-out", "at the context switch"),
    Site("sched_out", "KVM-put", "by the preempt notifier's put (kvm_sched_out)"),
    Site("sched_in", "CS-in", "eagerly at switch-in"),
    Site("sched_in", "DEFER", "on return to userspace"),
    Site("ioctl_entry", "KVM-load", "at the first guest entry of KVM_RUN"),
    Site("guest_entry", "KVM-load", "when guest entry reloads the guest FPU"),
    Site("guest_entry", "DEFER", "before guest entry"),
    Site("emulation", "KVM-load", "for instruction emulation"),
    Site("emulation", "DEFER", "before instruction emulation"),
    Site("init_reset", "KVM-put", "by the INIT reset's put"),
    Site("init_reset", "KVM-load", "by the INIT reset's load"),
    Site("ioctl_entry", "KVM-load", "by KVM_GET_MP_STATE's load"),
    Site("ioctl_exit", "KVM-put", "by KVM_GET_MP_STATE's put"),
)

(
    KVM_LOAD,
    KVM_PUT,
    CS_OUT,
    NOTIFIER_PUT,
    CS_IN,
    DEFER_USER,
    FIRST_ENTRY_LOAD,
    ENTRY_LOAD,
    DEFER_GUEST,
    EMUL_LOAD,
    DEFER_EMUL,
    INIT_PUT,
    INIT_LOAD,
    MP_LOAD,
    MP_PUT,
) = range(len(SITES))

NO_SITE = 99  # "since the trace started"

# Redundancy kinds, encoded with the two sites into one int per op.
RESTORE_SAVED = 1  # restored, then saved again before it ran
RESTORE_REPLACED = 2  # restored, then overwritten before it ran
SAVE_AFTER_RESTORE = 3  # saved though it has not run since it was restored
SAVE_AFTER_SAVE = 4  # saved though it has not run since it was last saved


def encode(kind: int, first: int, second: int) -> int:
    """One int for (kind, site of the earlier op, site of the later op)."""
    return kind * 10000 + first * 100 + second


def reason_text(code: int, context: str) -> str:
    """The words for an encoded redundancy reason."""
    kind, rest = divmod(code, 10000)
    first, second = divmod(rest, 100)
    p = SITES[first].phrase if first != NO_SITE else None
    q = SITES[second].phrase
    if kind == RESTORE_SAVED:
        return f"{context} state restored {p} only to be saved {q}, before it ran"
    if kind == RESTORE_REPLACED:
        return f"{context} state restored {p} but replaced {q} before it ran"
    if p is None:
        return f"{context} state saved {q} though it has not run since the trace started"
    verb = "restored" if kind == SAVE_AFTER_RESTORE else "saved"
    return (
        f"{context} state saved {q} though it has not run since it was {verb} {p}:"
        " memory already holds it"
    )
