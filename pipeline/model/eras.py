"""What a kernel of a given version prints, for the formats the model writes (reference §5).

A kernel era is a version such as ``4.14``, ``5.10`` or ``6.18``.  It fixes
the tracefs pid width (5, 7 from 5.10), the number of irq-flag columns (4, 5
from 5.13), the ``kvm_entry`` / ``kvm_exit`` text, the x86_fpu format
(``initialized:`` up to 5.1, ``load:`` from 5.2), pointer hashing (4.15+),
the ``prev_state`` of a vCPU preempted inside KVM_RUN (``R+`` from
cond_resched before 5.11, ``R`` from KVM's xfer_to_guest_mode work after)
and perf's tid width (7 from 6.5).

A policy is only logged by the kernels that run it: `legacy` 4.11–4.14,
`vcpu_run` 4.14.y (after the f775b13eedee backport) to 5.1, `deferred` 5.2+.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The era each policy is written in when --kernel-era is not given.
DEFAULT_ERA = {"legacy": "4.14", "vcpu_run": "4.19", "deferred": "6.18"}

#: Inclusive (lowest, highest) versions whose kernels run each policy.
POLICY_RANGE = {
    "legacy": ((4, 11), (4, 14)),
    "vcpu_run": ((4, 14), (5, 1)),
    "deferred": ((5, 2), (99, 99)),
}


@dataclass(frozen=True)
class Era:
    """Format features of one kernel version."""

    version: tuple[int, int]

    @property
    def name(self) -> str:
        """``major.minor``."""
        return f"{self.version[0]}.{self.version[1]}"

    def at_least(self, major: int, minor: int) -> bool:
        """Whether this era is ``major.minor`` or later."""
        return self.version >= (major, minor)

    @property
    def pid_width(self) -> int:
        """tracefs ``%-5d`` / ``%-7d`` (795d6379a47b, 5.10)."""
        return 7 if self.at_least(5, 10) else 5

    @property
    def flag_columns(self) -> int:
        """4 irq-flag characters, 5 with migrate-disable (54357f0c9149, ~5.13)."""
        return 5 if self.at_least(5, 13) else 4

    @property
    def perf_tid_width(self) -> int:
        """perf script ``%5d`` tid, ``%7d`` in perf of ~6.5 on [inferred]."""
        return 7 if self.at_least(6, 5) else 5

    @property
    def fpu_new_format(self) -> bool:
        """x86_fpu prints ``load:`` (TIF_NEED_FPU_LOAD) from 5.2, ``initialized:`` before."""
        return self.at_least(5, 2)

    @property
    def hashed_pointers(self) -> bool:
        """``%p`` is hashed from 4.15 (16 hex digits); 4.14 prints the raw pointer."""
        return self.at_least(4, 15)

    @property
    def vcpu_preempt_state(self) -> str:
        """prev_state of a vCPU preempted inside KVM_RUN (reference §7.3)."""
        return "R" if self.at_least(5, 11) else "R+"

    @property
    def fpu_switch_tif(self) -> int:
        """``load:`` printed by the context-switch save: switch_fpu() sets TIF first (6.16+)."""
        return 1 if self.at_least(6, 16) else 0

    @property
    def entry_form(self) -> int:
        """kvm_entry text: 0 ``vcpu N``; 1 ``, rip``; 2 ``, rip ... intr_info ... error_code``."""
        if self.at_least(6, 13):
            return 2
        return 1 if self.at_least(5, 9) else 0

    @property
    def exit_form(self) -> int:
        """kvm_exit text: 0 ``reason R rip info``; 1 ``vcpu N`` first; 2 info1/info2/intr_info."""
        if self.at_least(5, 11):
            return 2
        return 1 if self.at_least(5, 5) else 0

    @property
    def ioctl_hex_args(self) -> bool:
        """tracefs ``sys_ioctl(fd: 5, cmd: 0xae80, arg: 0)`` (recent) vs ``cmd: ae80`` (older)."""
        return self.at_least(5, 0)


def parse_era(text: str) -> Era:
    """``'6.18'`` (or ``'6.18.44-fc'``) -> Era; ValueError for anything else."""
    m = re.fullmatch(r"\s*(\d+)\.(\d+)(?:[.\-+][\w.\-+]*)?\s*", text)
    if not m:
        raise ValueError(f"kernel era {text!r}: expected a version such as 4.14, 5.10 or 6.18")
    version = (int(m[1]), int(m[2]))
    if version < (4, 11):
        raise ValueError(f"kernel era {text}: before 4.11 KVM's guest FPU was lazy (out of scope)")
    return Era(version)


def era_for(policy: str, text: str | None) -> Era:
    """The era to write ``policy`` in; ValueError when no kernel of that era runs the policy."""
    era = parse_era(text if text is not None else DEFAULT_ERA[policy])
    lo, hi = POLICY_RANGE[policy]
    if not lo <= era.version <= hi:
        span = f"{lo[0]}.{lo[1]}+" if hi[0] == 99 else f"{lo[0]}.{lo[1]}-{hi[0]}.{hi[1]}"
        raise ValueError(
            f"--policy {policy} is run by {span} kernels; a {era.name} kernel does not log it"
        )
    return era
