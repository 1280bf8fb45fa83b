# ruff: noqa: E501 - the traces below are tracefs lines, as long as the kernel prints them
"""The worked examples (i)–(vi) of kernel-fpu-reference.md §4, replayed under every policy.

Each example is written twice, as a 4.14 (legacy) kernel and as a 6.x kernel
would log it, in tracefs text.  Whatever kernel recorded it, replaying a
policy must give the counts of the reference's table (§4, "Counts table";
`deferred` is the S row): operations by op and context, redundant ones, and
the kvm_fpu loads/unloads the policy performs.  Thread A is `CPU 0/KVM`
(pid 4321) on CPU 0; K the kernel thread kworker/0:1 (87); B the user
process fpu-user (5000), which returns to userspace whenever it runs.
"""

from __future__ import annotations

import polars as pl
import pytest

from ingest import parse_text
from pipeline.replay import replay
from pipeline.validate import validate

HEAD = "# tracer: nop\n#\n"

TRACES: dict[tuple[str, str], str] = {}

# (i) One KVM_RUN, 3 in-kernel VM exits, no preemption.
TRACES["i", "legacy"] = """
       CPU 0/KVM-4321  [000] ...1  5123.000100: kvm_fpu: load
       CPU 0/KVM-4321  [000] d..1  5123.000102: kvm_entry: vcpu 0
       CPU 0/KVM-4321  [000] d..1  5123.000150: kvm_exit: reason EPT_MISCONFIG rip 0xffffffff8104f2a6 info 0 0
       CPU 0/KVM-4321  [000] d..1  5123.000152: kvm_entry: vcpu 0
       CPU 0/KVM-4321  [000] d..1  5123.000200: kvm_exit: reason EPT_MISCONFIG rip 0xffffffff8104f2a6 info 0 0
       CPU 0/KVM-4321  [000] d..1  5123.000202: kvm_entry: vcpu 0
       CPU 0/KVM-4321  [000] d..1  5123.000250: kvm_exit: reason MSR_WRITE rip 0xffffffff8104f2a6 info 0 0
       CPU 0/KVM-4321  [000] d..1  5123.000252: kvm_entry: vcpu 0
       CPU 0/KVM-4321  [000] d..1  5123.000300: kvm_exit: reason IO_INSTRUCTION rip 0xffffffff8102f6f4 info 1f10049 0
       CPU 0/KVM-4321  [000] ....  5123.000310: kvm_userspace_exit: reason KVM_EXIT_IO (2)
       CPU 0/KVM-4321  [000] ...1  5123.000311: kvm_fpu: unload
"""
TRACES["i", "swap"] = """
       CPU 0/KVM-4321    [000] ..... 5123.000100: kvm_fpu: load
       CPU 0/KVM-4321    [000] d..1. 5123.000102: kvm_entry: vcpu 0, rip 0xffffffff81c3d9e4
       CPU 0/KVM-4321    [000] d..1. 5123.000150: kvm_exit: vcpu 0 reason EPT_MISCONFIG rip 0xffffffff81a0b2c6 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000
       CPU 0/KVM-4321    [000] d..1. 5123.000152: kvm_entry: vcpu 0, rip 0xffffffff81c3d9e4
       CPU 0/KVM-4321    [000] d..1. 5123.000200: kvm_exit: vcpu 0 reason EPT_MISCONFIG rip 0xffffffff81a0b2c6 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000
       CPU 0/KVM-4321    [000] d..1. 5123.000202: kvm_entry: vcpu 0, rip 0xffffffff81c3d9e4
       CPU 0/KVM-4321    [000] d..1. 5123.000250: kvm_exit: vcpu 0 reason MSR_WRITE rip 0xffffffff81a0b2c6 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000
       CPU 0/KVM-4321    [000] d..1. 5123.000252: kvm_entry: vcpu 0, rip 0xffffffff81c3d9e4
       CPU 0/KVM-4321    [000] d..1. 5123.000300: kvm_exit: vcpu 0 reason IO_INSTRUCTION rip 0xffffffff8102f6f4 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000
       CPU 0/KVM-4321    [000] ..... 5123.000311: kvm_fpu: unload
       CPU 0/KVM-4321    [000] ..... 5123.000312: kvm_userspace_exit: reason KVM_EXIT_IO (2)
"""

# (ii) Preempted twice by a kernel thread on the same CPU (the reference's fixture sketch).
TRACES["ii", "legacy"] = """
       CPU 0/KVM-4321  [000] ...1  5123.000100: kvm_fpu: load
       CPU 0/KVM-4321  [000] d..1  5123.000102: kvm_entry: vcpu 0
       CPU 0/KVM-4321  [000] d..1  5123.000150: kvm_exit: reason EPT_MISCONFIG rip 0xffffffff8104f2a6 info 0 0
       CPU 0/KVM-4321  [000] d..2  5123.000160: sched_switch: prev_comm=CPU 0/KVM prev_pid=4321 prev_prio=120 prev_state=R+ ==> next_comm=kworker/0:1 next_pid=87 next_prio=120
       CPU 0/KVM-4321  [000] d..2  5123.000161: kvm_fpu: unload
     kworker/0:1-87    [000] d..2  5123.000300: sched_switch: prev_comm=kworker/0:1 prev_pid=87 prev_prio=120 prev_state=I ==> next_comm=CPU 0/KVM next_pid=4321 next_prio=120
       CPU 0/KVM-4321  [000] ...1  5123.000305: kvm_fpu: load
       CPU 0/KVM-4321  [000] d..1  5123.000306: kvm_entry: vcpu 0
       CPU 0/KVM-4321  [000] d..1  5123.000350: kvm_exit: reason EPT_MISCONFIG rip 0xffffffff8104f2a6 info 0 0
       CPU 0/KVM-4321  [000] d..2  5123.000360: sched_switch: prev_comm=CPU 0/KVM prev_pid=4321 prev_prio=120 prev_state=R+ ==> next_comm=kworker/0:1 next_pid=87 next_prio=120
       CPU 0/KVM-4321  [000] d..2  5123.000361: kvm_fpu: unload
     kworker/0:1-87    [000] d..2  5123.000500: sched_switch: prev_comm=kworker/0:1 prev_pid=87 prev_prio=120 prev_state=I ==> next_comm=CPU 0/KVM next_pid=4321 next_prio=120
       CPU 0/KVM-4321  [000] ...1  5123.000505: kvm_fpu: load
       CPU 0/KVM-4321  [000] d..1  5123.000506: kvm_entry: vcpu 0
       CPU 0/KVM-4321  [000] d..1  5123.000600: kvm_exit: reason IO_INSTRUCTION rip 0xffffffff8102f6f4 info 1f10049 0
       CPU 0/KVM-4321  [000] ....  5123.000610: kvm_userspace_exit: reason KVM_EXIT_IO (2)
       CPU 0/KVM-4321  [000] ...1  5123.000611: kvm_fpu: unload
"""
TRACES["ii", "swap"] = """
       CPU 0/KVM-4321    [000] ..... 5123.000100: kvm_fpu: load
       CPU 0/KVM-4321    [000] d..1. 5123.000102: kvm_entry: vcpu 0, rip 0xffffffff81c3d9e4
       CPU 0/KVM-4321    [000] d..1. 5123.000150: kvm_exit: vcpu 0 reason EPT_MISCONFIG rip 0xffffffff81a0b2c6 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000
       CPU 0/KVM-4321    [000] d..2. 5123.000160: sched_switch: prev_comm=CPU 0/KVM prev_pid=4321 prev_prio=120 prev_state=R ==> next_comm=kworker/0:1 next_pid=87 next_prio=120
     kworker/0:1-87      [000] d..2. 5123.000300: sched_switch: prev_comm=kworker/0:1 prev_pid=87 prev_prio=120 prev_state=I ==> next_comm=CPU 0/KVM next_pid=4321 next_prio=120
       CPU 0/KVM-4321    [000] d..1. 5123.000306: kvm_entry: vcpu 0, rip 0xffffffff81c3d9e4
       CPU 0/KVM-4321    [000] d..1. 5123.000350: kvm_exit: vcpu 0 reason EPT_MISCONFIG rip 0xffffffff81a0b2c6 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000
       CPU 0/KVM-4321    [000] d..2. 5123.000360: sched_switch: prev_comm=CPU 0/KVM prev_pid=4321 prev_prio=120 prev_state=R ==> next_comm=kworker/0:1 next_pid=87 next_prio=120
     kworker/0:1-87      [000] d..2. 5123.000500: sched_switch: prev_comm=kworker/0:1 prev_pid=87 prev_prio=120 prev_state=I ==> next_comm=CPU 0/KVM next_pid=4321 next_prio=120
       CPU 0/KVM-4321    [000] d..1. 5123.000506: kvm_entry: vcpu 0, rip 0xffffffff81c3d9e4
       CPU 0/KVM-4321    [000] d..1. 5123.000600: kvm_exit: vcpu 0 reason IO_INSTRUCTION rip 0xffffffff8102f6f4 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000
       CPU 0/KVM-4321    [000] ..... 5123.000611: kvm_fpu: unload
       CPU 0/KVM-4321    [000] ..... 5123.000612: kvm_userspace_exit: reason KVM_EXIT_IO (2)
"""

# (iii) Same, but preempted by the FPU-using user task B (which B's preemption ends).
TRACES["iii", "legacy"] = """
       CPU 0/KVM-4321  [000] ...1  5123.000100: kvm_fpu: load
       CPU 0/KVM-4321  [000] d..1  5123.000102: kvm_entry: vcpu 0
       CPU 0/KVM-4321  [000] d..1  5123.000150: kvm_exit: reason EPT_MISCONFIG rip 0xffffffff8104f2a6 info 0 0
       CPU 0/KVM-4321  [000] d..2  5123.000160: sched_switch: prev_comm=CPU 0/KVM prev_pid=4321 prev_prio=120 prev_state=R+ ==> next_comm=fpu-user next_pid=5000 next_prio=120
       CPU 0/KVM-4321  [000] d..2  5123.000161: kvm_fpu: unload
        fpu-user-5000  [000] d..2  5123.000300: sched_switch: prev_comm=fpu-user prev_pid=5000 prev_prio=120 prev_state=R+ ==> next_comm=CPU 0/KVM next_pid=4321 next_prio=120
       CPU 0/KVM-4321  [000] ...1  5123.000305: kvm_fpu: load
       CPU 0/KVM-4321  [000] d..1  5123.000306: kvm_entry: vcpu 0
       CPU 0/KVM-4321  [000] d..1  5123.000350: kvm_exit: reason EPT_MISCONFIG rip 0xffffffff8104f2a6 info 0 0
       CPU 0/KVM-4321  [000] d..2  5123.000360: sched_switch: prev_comm=CPU 0/KVM prev_pid=4321 prev_prio=120 prev_state=R+ ==> next_comm=fpu-user next_pid=5000 next_prio=120
       CPU 0/KVM-4321  [000] d..2  5123.000361: kvm_fpu: unload
        fpu-user-5000  [000] d..2  5123.000500: sched_switch: prev_comm=fpu-user prev_pid=5000 prev_prio=120 prev_state=R+ ==> next_comm=CPU 0/KVM next_pid=4321 next_prio=120
       CPU 0/KVM-4321  [000] ...1  5123.000505: kvm_fpu: load
       CPU 0/KVM-4321  [000] d..1  5123.000506: kvm_entry: vcpu 0
       CPU 0/KVM-4321  [000] d..1  5123.000600: kvm_exit: reason IO_INSTRUCTION rip 0xffffffff8102f6f4 info 1f10049 0
       CPU 0/KVM-4321  [000] ....  5123.000610: kvm_userspace_exit: reason KVM_EXIT_IO (2)
       CPU 0/KVM-4321  [000] ...1  5123.000611: kvm_fpu: unload
"""
TRACES["iii", "swap"] = """
       CPU 0/KVM-4321    [000] ..... 5123.000100: kvm_fpu: load
       CPU 0/KVM-4321    [000] d..1. 5123.000102: kvm_entry: vcpu 0, rip 0xffffffff81c3d9e4
       CPU 0/KVM-4321    [000] d..1. 5123.000150: kvm_exit: vcpu 0 reason EPT_MISCONFIG rip 0xffffffff81a0b2c6 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000
       CPU 0/KVM-4321    [000] d..2. 5123.000160: sched_switch: prev_comm=CPU 0/KVM prev_pid=4321 prev_prio=120 prev_state=R ==> next_comm=fpu-user next_pid=5000 next_prio=120
        fpu-user-5000    [000] d..2. 5123.000300: sched_switch: prev_comm=fpu-user prev_pid=5000 prev_prio=120 prev_state=R+ ==> next_comm=CPU 0/KVM next_pid=4321 next_prio=120
       CPU 0/KVM-4321    [000] d..1. 5123.000306: kvm_entry: vcpu 0, rip 0xffffffff81c3d9e4
       CPU 0/KVM-4321    [000] d..1. 5123.000350: kvm_exit: vcpu 0 reason EPT_MISCONFIG rip 0xffffffff81a0b2c6 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000
       CPU 0/KVM-4321    [000] d..2. 5123.000360: sched_switch: prev_comm=CPU 0/KVM prev_pid=4321 prev_prio=120 prev_state=R ==> next_comm=fpu-user next_pid=5000 next_prio=120
        fpu-user-5000    [000] d..2. 5123.000500: sched_switch: prev_comm=fpu-user prev_pid=5000 prev_prio=120 prev_state=R+ ==> next_comm=CPU 0/KVM next_pid=4321 next_prio=120
       CPU 0/KVM-4321    [000] d..1. 5123.000506: kvm_entry: vcpu 0, rip 0xffffffff81c3d9e4
       CPU 0/KVM-4321    [000] d..1. 5123.000600: kvm_exit: vcpu 0 reason IO_INSTRUCTION rip 0xffffffff8102f6f4 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000
       CPU 0/KVM-4321    [000] ..... 5123.000611: kvm_fpu: unload
       CPU 0/KVM-4321    [000] ..... 5123.000612: kvm_userspace_exit: reason KVM_EXIT_IO (2)
"""


def _halts(style: str) -> str:
    """(iv): five halts, each HLT exit -> block -> idle -> wakeup -> back on CPU 0."""
    legacy = style == "legacy"
    pid = "4321 " if legacy else "4321   "
    idle = "0    " if legacy else "0      "
    f = (lambda s: s) if legacy else (lambda s: s + ".")
    entry = "vcpu 0" if legacy else "vcpu 0, rip 0xffffffff81c3d9e4"
    lines = []
    t = 100

    def at() -> str:
        return f"5123.{t:06d}"

    def add(who: str, flags: str, text: str) -> None:
        lines.append(f"{who} [000] {f(flags)} {at()}: {text}")

    a, idl = f"       CPU 0/KVM-{pid}", f"          <idle>-{idle}"
    if legacy:
        add(a, "...1", "kvm_fpu: load")
    else:
        add(a, "....", "kvm_fpu: load")
    for _ in range(5):
        t += 2
        add(a, "d..1", f"kvm_entry: {entry}")
        t += 40
        add(a, "d..1", "kvm_exit: reason HLT rip 0xffffffff81b1c2d2 info 0 0")
        t += 5
        add(
            a,
            "d..2",
            "sched_switch: prev_comm=CPU 0/KVM prev_pid=4321 prev_prio=120 prev_state=S ==> next_comm=swapper/0 next_pid=0 next_prio=120",
        )
        if legacy:
            add(a, "d..2", "kvm_fpu: unload")
        t += 400
        add(idl, "dNh2", "sched_wakeup: comm=CPU 0/KVM pid=4321 prio=120 target_cpu=000")
        t += 2
        add(
            idl,
            "d..2",
            "sched_switch: prev_comm=swapper/0 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=CPU 0/KVM next_pid=4321 next_prio=120",
        )
        if legacy:
            t += 3
            add(a, "...1", "kvm_fpu: load")
    t += 2
    add(a, "d..1", f"kvm_entry: {entry}")
    t += 40
    add(a, "d..1", "kvm_exit: reason IO_INSTRUCTION rip 0xffffffff8102f6f4 info 1f10049 0")
    t += 10
    if legacy:
        add(a, "....", "kvm_userspace_exit: reason KVM_EXIT_IO (2)")
        add(a, "...1", "kvm_fpu: unload")
    else:
        add(a, "....", "kvm_fpu: unload")
        t += 1
        add(a, "....", "kvm_userspace_exit: reason KVM_EXIT_IO (2)")
    return "\n".join(lines) + "\n"


# (iv) The vCPU halts (blocks) 5 times inside one KVM_RUN; only idle runs meanwhile.
TRACES["iv", "legacy"] = _halts("legacy")
TRACES["iv", "swap"] = _halts("swap")

# (v) Migrated to CPU 1 while preempted (one preemption).
TRACES["v", "legacy"] = """
       CPU 0/KVM-4321  [000] ...1  5123.000100: kvm_fpu: load
       CPU 0/KVM-4321  [000] d..1  5123.000102: kvm_entry: vcpu 0
       CPU 0/KVM-4321  [000] d..1  5123.000150: kvm_exit: reason EPT_MISCONFIG rip 0xffffffff8104f2a6 info 0 0
       CPU 0/KVM-4321  [000] d..2  5123.000160: sched_switch: prev_comm=CPU 0/KVM prev_pid=4321 prev_prio=120 prev_state=R+ ==> next_comm=kworker/0:1 next_pid=87 next_prio=120
       CPU 0/KVM-4321  [000] d..2  5123.000161: kvm_fpu: unload
          <idle>-0     [001] d..2  5123.000200: sched_switch: prev_comm=swapper/1 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=CPU 0/KVM next_pid=4321 next_prio=120
       CPU 0/KVM-4321  [001] ...1  5123.000205: kvm_fpu: load
       CPU 0/KVM-4321  [001] d..1  5123.000206: kvm_entry: vcpu 0
       CPU 0/KVM-4321  [001] d..1  5123.000300: kvm_exit: reason IO_INSTRUCTION rip 0xffffffff8102f6f4 info 1f10049 0
       CPU 0/KVM-4321  [001] ....  5123.000310: kvm_userspace_exit: reason KVM_EXIT_IO (2)
       CPU 0/KVM-4321  [001] ...1  5123.000311: kvm_fpu: unload
"""
TRACES["v", "swap"] = """
       CPU 0/KVM-4321    [000] ..... 5123.000100: kvm_fpu: load
       CPU 0/KVM-4321    [000] d..1. 5123.000102: kvm_entry: vcpu 0, rip 0xffffffff81c3d9e4
       CPU 0/KVM-4321    [000] d..1. 5123.000150: kvm_exit: vcpu 0 reason EPT_MISCONFIG rip 0xffffffff81a0b2c6 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000
       CPU 0/KVM-4321    [000] d..2. 5123.000160: sched_switch: prev_comm=CPU 0/KVM prev_pid=4321 prev_prio=120 prev_state=R ==> next_comm=kworker/0:1 next_pid=87 next_prio=120
          <idle>-0       [001] d..2. 5123.000200: sched_switch: prev_comm=swapper/1 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=CPU 0/KVM next_pid=4321 next_prio=120
       CPU 0/KVM-4321    [001] d..1. 5123.000206: kvm_entry: vcpu 0, rip 0xffffffff81c3d9e4
       CPU 0/KVM-4321    [001] d..1. 5123.000300: kvm_exit: vcpu 0 reason IO_INSTRUCTION rip 0xffffffff8102f6f4 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000
       CPU 0/KVM-4321    [001] ..... 5123.000311: kvm_fpu: unload
       CPU 0/KVM-4321    [001] ..... 5123.000312: kvm_userspace_exit: reason KVM_EXIT_IO (2)
"""

# (vi) Preempted by B after the last VM exit; back on CPU 0, returns to
# userspace without re-entering the guest (legacy: no final unload).
TRACES["vi", "legacy"] = """
       CPU 0/KVM-4321  [000] ...1  5123.000100: kvm_fpu: load
       CPU 0/KVM-4321  [000] d..1  5123.000102: kvm_entry: vcpu 0
       CPU 0/KVM-4321  [000] d..1  5123.000150: kvm_exit: reason IO_INSTRUCTION rip 0xffffffff8102f6f4 info 1f10049 0
       CPU 0/KVM-4321  [000] d..2  5123.000160: sched_switch: prev_comm=CPU 0/KVM prev_pid=4321 prev_prio=120 prev_state=R+ ==> next_comm=fpu-user next_pid=5000 next_prio=120
       CPU 0/KVM-4321  [000] d..2  5123.000161: kvm_fpu: unload
        fpu-user-5000  [000] d..2  5123.000300: sched_switch: prev_comm=fpu-user prev_pid=5000 prev_prio=120 prev_state=R+ ==> next_comm=CPU 0/KVM next_pid=4321 next_prio=120
       CPU 0/KVM-4321  [000] ....  5123.000310: kvm_userspace_exit: reason KVM_EXIT_IO (2)
"""
TRACES["vi", "swap"] = """
       CPU 0/KVM-4321    [000] ..... 5123.000100: kvm_fpu: load
       CPU 0/KVM-4321    [000] d..1. 5123.000102: kvm_entry: vcpu 0, rip 0xffffffff81c3d9e4
       CPU 0/KVM-4321    [000] d..1. 5123.000150: kvm_exit: vcpu 0 reason IO_INSTRUCTION rip 0xffffffff8102f6f4 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000
       CPU 0/KVM-4321    [000] d..2. 5123.000160: sched_switch: prev_comm=CPU 0/KVM prev_pid=4321 prev_prio=120 prev_state=R ==> next_comm=fpu-user next_pid=5000 next_prio=120
        fpu-user-5000    [000] d..2. 5123.000300: sched_switch: prev_comm=fpu-user prev_pid=5000 prev_prio=120 prev_state=R+ ==> next_comm=CPU 0/KVM next_pid=4321 next_prio=120
       CPU 0/KVM-4321    [000] ..... 5123.000311: kvm_fpu: unload
       CPU 0/KVM-4321    [000] ..... 5123.000312: kvm_userspace_exit: reason KVM_EXIT_IO (2)
"""

# Reference §4 counts table: (XS_u, XR_u, XS_g, XR_g), redundant by op/context
# ("save user" = XS_u ...), kvm_fpu loads/unloads.  `deferred` is the S row.
L, V, D = "legacy", "vcpu_run", "deferred"
EXPECTED: dict[tuple[str, str], tuple[tuple[int, int, int, int], dict[str, int], int]] = {
    ("i", L): ((1, 1, 1, 1), {}, 1),
    ("i", V): ((1, 1, 1, 1), {}, 1),
    ("i", D): ((1, 1, 1, 1), {}, 1),
    ("ii", L): ((5, 3, 3, 3), {"restore user": 2, "save user": 4}, 3),
    ("ii", V): ((1, 1, 3, 1), {}, 1),
    ("ii", D): ((1, 1, 3, 1), {}, 1),
    ("iii", L): ((5, 5, 3, 3), {"restore user": 4, "save user": 4}, 3),
    ("iii", V): ((1, 1, 3, 3), {}, 1),
    ("iii", D): ((1, 1, 3, 3), {}, 1),
    ("iv", L): ((11, 6, 6, 6), {"restore user": 5, "save user": 10}, 6),
    ("iv", V): ((1, 1, 6, 1), {}, 1),
    ("iv", D): ((1, 1, 6, 1), {}, 1),
    ("v", L): ((3, 3, 2, 2), {"restore user": 2, "save user": 2}, 2),
    ("v", V): ((1, 1, 2, 2), {}, 1),
    ("v", D): ((1, 1, 2, 2), {}, 1),
    ("vi", L): ((2, 2, 1, 1), {"restore user": 1, "save user": 1}, 1),
    ("vi", V): ((1, 1, 2, 2), {"restore guest": 1, "save guest": 1}, 1),
    ("vi", D): ((1, 1, 1, 1), {}, 1),
}

CASES = [
    pytest.param(ex, style, policy, id=f"{ex}-{style}-recording-{policy}")
    for (ex, policy) in EXPECTED
    for style in ("legacy", "swap")
]


def _events(ex: str, style: str) -> pl.DataFrame:
    return parse_text(HEAD + TRACES[ex, style].lstrip("\n"), "tracefs")


def _counts(ops: pl.DataFrame) -> tuple[int, int, int, int]:
    def n(op: str, ctx: str) -> int:
        return ops.filter((pl.col("op") == op) & (pl.col("context") == ctx)).height

    return n("save", "user"), n("restore", "user"), n("save", "guest"), n("restore", "guest")


@pytest.mark.parametrize(("ex", "style", "policy"), CASES)
def test_worked_example(ex: str, style: str, policy: str) -> None:
    result = replay(_events(ex, style), policies=[policy])
    ops = result.fpu_ops
    counts, redundant, kvm_fpu = EXPECTED[ex, policy]
    assert _counts(ops) == counts
    red = ops.filter("redundant")
    assert {f"{op} {ctx}": k for (op, ctx), k in _group(red).items()} == redundant
    assert red["reason"].null_count() == 0
    assert ops.filter(~pl.col("redundant"))["reason"].null_count() == ops.height - red.height
    # The kvm_fpu loads and unloads this policy performs in the one run.
    loads = ops.filter((pl.col("op") == "restore") & (pl.col("context") == "guest"))
    assert loads.filter(pl.col("site") == "KVM-load").height == kvm_fpu
    puts = ops.filter((pl.col("op") == "restore") & (pl.col("context") == "user"))
    assert puts.filter(pl.col("site") == "KVM-put").height == kvm_fpu
    assert ops["pid"].unique().to_list() == [4321]
    assert ops["run_idx"].unique().to_list() == [0]
    runs = result.runs
    assert runs.select("pid", "run_idx", "complete", "exit_reason").rows() == [
        (4321, 0, True, "KVM_EXIT_IO")
    ]


def _group(ops: pl.DataFrame) -> dict[tuple[str, str], int]:
    return {(op, ctx): k for op, ctx, k in ops.group_by("op", "context").len().iter_rows()}


@pytest.mark.parametrize("ex", ["i", "ii", "iii", "iv", "v", "vi"])
@pytest.mark.parametrize("style", ["legacy", "swap"])
def test_example_recording_detected_and_validated(ex: str, style: str) -> None:
    """The recording kernel's policy is detected, and its replay matches its kvm_fpu lines."""
    events = _events(ex, style)
    result = replay(events)
    assert result.info["recorded_policy"] == ("legacy" if style == "legacy" else "deferred")
    assert result.info["guest_run_rule"] == "kvm_entry"
    check = validate(events, result)
    assert check.ok, check.table
    loads = check.table.filter(pl.col("check") == "kvm_fpu_load")
    assert loads["observed"].to_list() == [EXPECTED[ex, result.info["recorded_policy"]][2]]


def test_example_ii_run_shape() -> None:
    """Preemptions, blocks and the legacy notifier puts are read off the trace."""
    legacy = replay(_events("ii", "legacy")).runs
    swap = replay(_events("ii", "swap")).runs
    for runs in (legacy, swap):
        assert runs.select("preemptions", "blocks", "migrations").rows() == [(2, 0, 0)]
    halts = replay(_events("iv", "swap")).runs
    assert halts.select("preemptions", "blocks").rows() == [(0, 5)]
    moved = replay(_events("v", "legacy")).runs
    assert moved.select("preemptions", "migrations", "cpu_start").rows() == [(1, 1, 0)]


def test_redundancy_reasons_name_the_kernel_paths() -> None:
    ops = replay(_events("ii", "legacy"), policies=["legacy"]).fpu_ops
    reasons = (
        ops.filter("redundant").group_by("op", "context", "trigger").agg(pl.col("reason").first())
    )
    by = {(op, ctx, trig): r for op, ctx, trig, r in reasons.iter_rows()}
    assert by["restore", "user", "sched_out"].startswith(
        "user state restored by the preempt notifier's put (kvm_sched_out) only to be saved"
        " at the context switch"
    )
    assert (
        "has not run since it was restored by the preempt notifier's put"
        in by["save", "user", "sched_out"]
    )
    assert (
        "has not run since it was saved at the context switch" in by["save", "user", "guest_entry"]
    )
    vi = replay(_events("vi", "swap"), policies=["vcpu_run"]).fpu_ops.filter("redundant")
    assert sorted(vi["reason"].to_list()) == [
        "guest state restored eagerly at switch-in only to be saved when KVM_RUN puts the guest FPU, before it ran",
        "guest state saved when KVM_RUN puts the guest FPU though it has not run since it was restored eagerly at switch-in: memory already holds it",
    ]


def test_ops_carry_the_sched_out_they_follow() -> None:
    """Each op names the thread's latest sched-out in its KVM_RUN (for per-episode reports)."""
    events = _events("ii", "legacy")
    switches = events.filter((pl.col("event") == "sched_switch") & (pl.col("prev_pid") == 4321))
    first, second = switches["line_no"].to_list()
    ops = replay(events, policies=["legacy"]).fpu_ops
    by_line = ops.group_by("sched_out_line", maintain_order=True).agg(
        pl.col("sched_out_state").unique(), n=pl.len()
    )
    # the load at the first entry follows no sched-out; then each preemption's
    # put + save, switch-in restore (none: valid) and re-entry load; the final
    # put belongs to the second preemption's episode
    assert by_line.rows() == [
        (None, [None], 2),
        (first, ["preempted"], 5),
        (second, ["preempted"], 7),
    ]
