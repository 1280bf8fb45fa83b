"""Task kinds: which tasks own FPU state (reference §1.1, §7.4).

Only user tasks (the VMM's vCPU threads among them) save and restore FPU
state at context switches.  Kernel threads and the idle task never do, so a
kernel thread running on a CPU leaves that CPU's register owner unchanged.
The kind of a task is decided once per task lifetime (a pid reused after an
exit is a new task), from evidence in this order:

1. pid 0 is the idle task;
2. a task that logs kvm_fpu, kvm_entry, kvm_userspace_exit or a KVM_RUN
   ioctl is a vCPU thread;
3. a task the x86_fpu events show saving or (>= 5.2) restoring its own
   registers is a user task: kernel threads never do;
4. a comm matching the kernel-thread patterns below is a kernel thread;
5. everything else is a user task.
"""

from __future__ import annotations

import re
from enum import IntEnum


class Kind(IntEnum):
    """Kind of a task, as the FPU code distinguishes them."""

    IDLE = 0
    KTHREAD = 1
    USER = 2
    VCPU = 3


#: Names used in the manifest and in reports.
KIND_NAMES = {Kind.IDLE: "idle", Kind.KTHREAD: "kthread", Kind.USER: "user", Kind.VCPU: "vcpu"}

# Per-CPU and well-known kernel threads; vhost and io_uring workers are
# PF_USER_WORKER tasks, which switch_fpu() skips like kernel threads (6.x).
_KTHREAD = re.compile(
    r"^(?:kworker/|ksoftirqd/|migration/|rcu_|rcuo|rcub/|kthreadd$|cpuhp/|watchdog/|"
    r"irq/|idle_inject/|kvm-nx-lpage-re|kvm-pit/|kcompactd|kswapd|khugepaged|ksmd|"
    r"kauditd|khungtaskd|kdevtmpfs|oom_reaper|writeback|kblockd|kintegrityd|kthrotld|"
    r"jbd2/|ext4-|xfs|scsi_|nvme|kswapd|card\d|psimon|pool_workqueue|kstrp|ipv6_|"
    r"md\d*_|dm_|loop\d|zswap|edac-|ecryptfs|vhost-|iou-wrk-|iou-sqp-|swapper)"
)


def kind_from_comm(comm: str | None) -> Kind:
    """Kind suggested by a comm alone: kernel thread or user task (ref §7.4)."""
    if comm and _KTHREAD.match(comm):
        return Kind.KTHREAD
    return Kind.USER


def decide_kind(pid: int, comm: str | None, logs_kvm: bool, fpu_evidence: bool) -> Kind:
    """Kind of one task lifetime from the evidence gathered over the trace."""
    if pid == 0:
        return Kind.IDLE
    if logs_kvm:
        return Kind.VCPU
    if fpu_evidence:
        return Kind.USER
    return kind_from_comm(comm)
