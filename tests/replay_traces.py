"""Write small tracefs traces for the replay tests, as a 4.14 or a 6.x kernel logs them.

`TraceWriter` prints lines in the tracefs layout of reference §5.1 (4 flag
characters and a 5-wide pid for ``legacy``, 5 and 7 for ``swap``), and
knows what each kernel logs around a KVM_RUN: a legacy kernel puts the guest
FPU at every sched-out inside KVM_RUN (``kvm_fpu: unload`` right after the
vCPU's ``sched_switch``), reloads it at the next entry and logs
``kvm_userspace_exit`` before the final unload; a 6.x kernel logs one load at
the start and the unload before ``kvm_userspace_exit``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from ingest import parse_text

IDLE = ("swapper", 0)


@dataclass
class Task:
    comm: str
    pid: int


@dataclass
class TraceWriter:
    """Accumulates trace lines; ``style`` is 'legacy' (4.14) or 'swap' (6.x)."""

    style: str = "swap"
    entries: bool = True  # log kvm_entry lines (False: as on the fixtures' host)
    t_us: int = 5123_000_100
    lines: list[str] = field(default_factory=list)
    _loaded: dict[int, bool] = field(default_factory=dict)

    # -- raw lines -------------------------------------------------------------
    def emit(self, task: Task, cpu: int, event: str, body: str, flags: str | None = None) -> None:
        """One ``event: body`` line by ``task`` on ``cpu``, 2 µs after the previous one."""
        self.text_line(task, cpu, f"{event}: {body}", flags)

    def text_line(self, task: Task, cpu: int, text: str, flags: str | None = None) -> None:
        """One line whose part after the timestamp is ``text``."""
        self.t_us += 2
        secs, usecs = divmod(self.t_us, 1_000_000)
        comm = "<idle>" if task.pid == 0 else task.comm
        if self.style == "legacy":
            head = f"{comm:>16}-{task.pid:<5} [{cpu:03d}] {flags or '....'} "
        else:
            head = f"{comm:>16}-{task.pid:<7} [{cpu:03d}] {flags or '.....'} "
        self.lines.append(f"{head}{secs:5d}.{usecs:06d}: {text}")

    def switch(self, cpu: int, prev: Task, state: str, nxt: Task) -> None:
        """``prev`` leaves ``cpu`` in ``state``; ``nxt`` comes in."""
        pc = f"swapper/{cpu}" if prev.pid == 0 else prev.comm
        nc = f"swapper/{cpu}" if nxt.pid == 0 else nxt.comm
        self.emit(
            prev,
            cpu,
            "sched_switch",
            f"prev_comm={pc} prev_pid={prev.pid} prev_prio=120 prev_state={state} ==> "
            f"next_comm={nc} next_pid={nxt.pid} next_prio=120",
            "d..2" if self.style == "legacy" else "d..2.",
        )

    def wakeup(self, cpu: int, waker: Task, woken: Task) -> None:
        self.emit(
            waker,
            cpu,
            "sched_wakeup",
            f"comm={woken.comm} pid={woken.pid} prio=120 target_cpu={cpu:03d}",
        )

    def ioctl(self, task: Task, cpu: int, cmd: str) -> None:
        """sys_enter_ioctl as tracefs prints it (cmd in hex, e.g. 'ae80' for KVM_RUN)."""
        self.text_line(task, cpu, f"sys_ioctl(fd: 14, cmd: {cmd}, arg: 0)")

    def ioctl_return(self, task: Task, cpu: int) -> None:
        self.text_line(task, cpu, "sys_ioctl -> 0x0")

    def x86_fpu(self, task: Task, cpu: int, which: str, xfeatures: str, tif: int = 1) -> None:
        """``x86_fpu_regs_activated``/``_deactivated`` as >= 5.2 kernels print them."""
        self.emit(
            task,
            cpu,
            f"x86_fpu_regs_{which}",
            f"x86/fpu: 000000002be25e1d load: {tif} xfeatures: {xfeatures} "
            "xcomp_bv: 80000000000000e7",
        )

    def lost(self, cpu: int, count: int = 3) -> None:
        self.lines.append(f"CPU:{cpu} [LOST {count} EVENTS]")

    # -- what each kernel logs for a vCPU thread --------------------------------
    def run_start(self, v: Task, cpu: int) -> None:
        """KVM_RUN entry: 6.x logs the load here; legacy loads at the first entry."""
        self._loaded[v.pid] = False
        if self.style == "swap":
            self.emit(v, cpu, "kvm_fpu", "load")
            self._loaded[v.pid] = True

    def enter(self, v: Task, cpu: int, exit_reason: str = "EPT_MISCONFIG") -> None:
        """A guest entry and the in-kernel exit that follows it."""
        if self.style == "legacy" and not self._loaded.get(v.pid):
            self.emit(v, cpu, "kvm_fpu", "load")
            self._loaded[v.pid] = True
        if self.entries:
            rip = "" if self.style == "legacy" else ", rip 0xffffffff81c3d9e4"
            self.emit(v, cpu, "kvm_entry", f"vcpu 0{rip}")
            self.emit(v, cpu, "kvm_exit", f"reason {exit_reason} rip 0xffffffff8104f2a6 info 0 0")

    def sched_out(self, v: Task, cpu: int, state: str, nxt: Task) -> None:
        """The vCPU thread leaves the CPU (legacy puts the guest FPU right after)."""
        self.switch(cpu, v, state, nxt)
        if self.style == "legacy" and self._loaded.get(v.pid):
            self.emit(v, cpu, "kvm_fpu", "unload", "d..2")
            self._loaded[v.pid] = False

    def run_end(self, v: Task, cpu: int, reason: str = "KVM_EXIT_IO (2)") -> None:
        """KVM_RUN returns to userspace."""
        if self.style == "legacy":
            self.emit(v, cpu, "kvm_userspace_exit", f"reason {reason}")
            if self._loaded.get(v.pid):  # vcpu_put() is a no-op when not loaded
                self.emit(v, cpu, "kvm_fpu", "unload")
        else:
            self.emit(v, cpu, "kvm_fpu", "unload")
            self.emit(v, cpu, "kvm_userspace_exit", f"reason {reason}")
        self._loaded[v.pid] = False

    # -- output ----------------------------------------------------------------
    def text(self) -> str:
        return "# tracer: nop\n#\n" + "\n".join(self.lines) + "\n"

    def events(self) -> pl.DataFrame:
        return parse_text(self.text(), "tracefs")


def closed_form_trace(style: str, preemptions: int, invalid: int, entries: bool = True) -> str:
    """One KVM_RUN of thread A on CPU 0 with ``preemptions`` sched-outs (reference §3.3).

    The first ``invalid`` of them are by the FPU-using user task B (which takes
    the registers, so the way back in finds them invalid); the others by the
    kernel thread K, which leaves them valid.  Each is followed by a re-entry.
    """
    a, b, k = Task("CPU 0/KVM", 4321), Task("fpu-user", 5000), Task("kworker/0:1", 87)
    w = TraceWriter(style=style, entries=entries)
    w.run_start(a, 0)
    w.enter(a, 0)
    for i in range(preemptions):
        other = b if i < invalid else k
        w.sched_out(a, 0, "R+" if style == "legacy" else "R", other)
        w.switch(0, other, "R+" if other is b else "I", a)
        w.enter(a, 0)
    w.run_end(a, 0)
    return w.text()
