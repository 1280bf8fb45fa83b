"""Traces for the adversarial tests (tests/test_adversarial.py), as bytes.

:class:`Tracefs` prints lines the way a >= 5.10 kernel does
(``kernel/trace/trace_output.c``: ``"%16s-%-7d [%03d] %s %5lu.%06lu: "``,
reference §5.1), at explicit times and with task names given as *bytes*: the
kernel copies ``task->comm`` raw, so a name can hold any byte but NUL, a
newline included, and ``%16s`` pads it to 16 bytes, not characters.  The
lines are kept with their CPU and stamp so that a trace can be printed in
file order or merged by stamp across CPUs, as the kernel's iterator merges
the per-CPU ring buffers (how clock skew between CPUs reaches a file).

It also has the two generators of the large cases: a trace of
``10**5`` distinct vCPU threads, and an endless stream of mostly
uninteresting events for the bounded-memory ingest.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

BASE_S = 5123  # trace clock (uptime seconds) of every small trace


@dataclass(frozen=True)
class Thread:
    """A task as the trace names it: ``comm`` bytes exactly as the kernel holds them."""

    comm: bytes
    pid: int


IDLE = Thread(b"swapper", 0)

ENTRY = b"kvm_entry: vcpu 0, rip 0xffffffff81c3d9e4"
EXIT = b"kvm_exit: vcpu 0 reason %s rip 0xffffffff8102f6f4 info 1f10049 0"


def stamp(us: int) -> bytes:
    """The tracefs timestamp of ``us`` microseconds after BASE_S (`` %5lu.%06lu``)."""
    secs, usecs = divmod(BASE_S * 1_000_000 + us, 1_000_000)
    return b"%5d.%06d" % (secs, usecs)


def ns(us: int) -> int:
    """The ``ts_ns`` ingest stores for the line stamped ``us`` µs after BASE_S."""
    return (BASE_S * 1_000_000 + us) * 1000


@dataclass
class Tracefs:
    """tracefs lines at explicit times (µs after BASE_S) and CPUs."""

    #: (stamp µs, cpu, line) in the order they were added (the file order)
    rows: list[tuple[int, int, bytes]] = field(default_factory=list)
    #: µs added to the stamps of a CPU's lines: its clock's offset (skew)
    skew: dict[int, int] = field(default_factory=dict)

    def line(self, us: int, task: Thread, cpu: int, text: bytes, flags: bytes = b".....") -> None:
        """One event line of ``task`` on ``cpu`` at ``us`` (true time; the CPU's skew is added)."""
        us += self.skew.get(cpu, 0)
        comm = b"<idle>" if task.pid == 0 else task.comm
        head = b"%16s-%-7d [%03d] %s %s: " % (comm, task.pid, cpu, flags, stamp(us))
        self.rows.append((us, cpu, head + text))

    def switch(self, us: int, cpu: int, prev: Thread, state: str, nxt: Thread) -> None:
        """``prev`` leaves ``cpu`` in ``state`` for ``nxt`` (the body names the comms as set)."""
        pc = b"swapper/%d" % cpu if prev.pid == 0 else prev.comm
        nc = b"swapper/%d" % cpu if nxt.pid == 0 else nxt.comm
        body = (
            b"sched_switch: prev_comm=%s prev_pid=%d prev_prio=120 prev_state=%s ==> "
            b"next_comm=%s next_pid=%d next_prio=120" % (pc, prev.pid, state.encode(), nc, nxt.pid)
        )
        self.line(us, prev, cpu, body, b"d..2.")

    def wakeup(self, us: int, cpu: int, waker: Thread, woken: Thread) -> None:
        """``waker`` wakes ``woken`` onto ``cpu``."""
        body = b"sched_wakeup: comm=%s pid=%d prio=120 target_cpu=%03d" % (
            woken.comm,
            woken.pid,
            cpu,
        )
        self.line(us, waker, cpu, body, b"dNh4.")

    def load(self, us: int, v: Thread, cpu: int) -> None:
        """``kvm_fpu: load``: the KVM_RUN entry of a >= 4.15 kernel."""
        self.line(us, v, cpu, b"kvm_fpu: load")

    def unload(self, us: int, v: Thread, cpu: int) -> None:
        """``kvm_fpu: unload``: the KVM_RUN exit's put."""
        self.line(us, v, cpu, b"kvm_fpu: unload")

    def enter(self, us: int, v: Thread, cpu: int, reason: bytes = b"EPT_MISCONFIG") -> None:
        """A guest entry at ``us`` and its in-kernel exit 1 µs later."""
        self.line(us, v, cpu, ENTRY, b"d..1.")
        self.line(us + 1, v, cpu, EXIT % reason, b"d..1.")

    def uexit(self, us: int, v: Thread, cpu: int, reason: bytes = b"KVM_EXIT_IO (2)") -> None:
        """``kvm_userspace_exit``: KVM_RUN returns to the VMM."""
        self.line(us, v, cpu, b"kvm_userspace_exit: reason " + reason)

    def lost(self, cpu: int, count: int) -> None:
        """A lost-events marker, where the kernel prints it: before its CPU's next line."""
        us = self.rows[-1][0] if self.rows else 0
        self.rows.append((us, cpu, b"CPU:%d [LOST %d EVENTS]" % (cpu, count)))

    def data(self, merged: bool = False) -> bytes:
        """The trace file: a tracefs header, then the lines in file order or merged by stamp.

        ``merged`` sorts by stamp, stably, which keeps each CPU's own order
        as long as its stamps do not go back: what the kernel's iterator
        does with the per-CPU buffers.
        """
        rows = sorted(self.rows, key=lambda r: r[0]) if merged else self.rows
        return b"# tracer: nop\n#\n" + b"".join(line + b"\n" for _, _, line in rows)


# -- 10**5 distinct threads ------------------------------------------------------------


def many_threads(n: int) -> bytes:
    """``n`` distinct vCPU threads (pids 100000 + i) on CPU 0, one KVM_RUN each.

    Thread i is switched in from thread i - 1 (idle for the first), loads,
    unloads and returns to the VMM, then blocks (S) in the next thread's
    switch, the last one to idle: ``4 n + 1`` events, 1 µs apart within a
    thread, and no guest entry (entries are synthesised).
    """
    out = [b"# tracer: nop\n#\n"]
    prev = IDLE
    us = 0
    for i in range(n):
        v = Thread(b"CPU %d/KVM" % (i % 1000), 100_000 + i)
        t = Tracefs()
        t.switch(us, 0, prev, "S" if i else "R", v)
        t.load(us + 1, v, 0)
        t.unload(us + 2, v, 0)
        t.uexit(us + 3, v, 0)
        us += 5
        prev = v
        out += [line + b"\n" for _, _, line in t.rows]
    t = Tracefs()
    t.switch(us, 0, prev, "S", IDLE)
    out += [line + b"\n" for _, _, line in t.rows]
    return b"".join(out)


# -- the endless stream of uninteresting events ------------------------------------------

#: Lines per period of :func:`noise_period`; a period spans 1 s of trace time.
PERIOD_LINES = 100_000
_SECONDS = b"SSSSS"  # placeholder for the period's seconds in the template


@dataclass(frozen=True)
class NoisePeriod:
    """One period of the stream: its bytes (seconds to fill in) and its event counts."""

    template: bytes
    counts: dict[str, int]

    def at(self, second: int) -> bytes:
        """The period's lines stamped in ``second`` (5 digits, as ``%5lu`` prints it)."""
        return self.template.replace(_SECONDS, b"%5d" % second)


def noise_period() -> NoisePeriod:
    """``PERIOD_LINES`` lines on 2 CPUs, 10 µs apart: wakeups and irqs, and a few kvm_fpu.

    Per 100 lines: 2 ``kvm_fpu`` (a load, then an unload, of vCPU thread
    4321), and the other 98 in turn a ``sched_wakeup``, an
    ``irq_handler_entry`` and an ``irq_handler_exit``.
    """
    lines = []
    counts: dict[str, int] = {}
    vcpu, qemu, idle = b"CPU 0/KVM", b"qemu-system-x86", b"<idle>"
    for j in range(PERIOD_LINES):
        cpu = j % 2
        ts = _SECONDS + b".%06d" % (j * 10)
        k = j % 100
        if k in (50, 51):
            comm, pid, flags = vcpu, 4321, b"....."
            event, body = "kvm_fpu", b"load" if k == 50 else b"unload"
        elif k % 3 == 0:
            comm, pid, flags = idle, 0, b"dNh4."
            event = "sched_wakeup"
            body = b"comm=kworker/%d:1 pid=%d prio=120 target_cpu=%03d" % (cpu, 87 + cpu, cpu)
        elif k % 3 == 1:
            comm, pid, flags = qemu, 4300, b"d.h1."
            event, body = "irq_handler_entry", b"irq=24 name=virtio0-input.0"
        else:
            comm, pid, flags = qemu, 4300, b"d.h1."
            event, body = "irq_handler_exit", b"irq=24 ret=handled"
        head = b"%16s-%-7d [%03d] %s %s: " % (comm, pid, cpu, flags, ts)
        lines.append(head + event.encode() + b": " + body + b"\n")
        counts[event] = counts.get(event, 0) + 1
    return NoisePeriod(b"".join(lines), counts)


def noise_stream(period: NoisePeriod, periods: int, first_second: int = 10_000) -> Iterator[bytes]:
    """A tracefs header, then ``periods`` periods at consecutive seconds: never all in memory."""
    yield b"# tracer: nop\n#\n"
    for p in range(periods):
        yield period.at(first_second + p)


# -- peak memory of a child process --------------------------------------------------------

# Forks the command from this small process and reports the child's own
# rusage.  A child spawned straight from the test process would report the
# test process's memory too: exec() records in the child's ru_maxrss the
# high-water RSS of the memory the child leaves, which is the parent's
# (vfork(), what Python uses on Linux) or a copy of it (fork()).  Seen here:
# 1.5 GB reported for a 369 MB ingest run after the many-threads test.
_FORKER = """
import os, sys
report, argv = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.execv(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(report, "w") as f:
    f.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}\\n")
"""


@dataclass(frozen=True)
class Measured:
    """How a command ended: its exit code, peak RSS (KiB), stdout and stderr."""

    returncode: int
    maxrss_kib: int
    stdout: bytes
    stderr: bytes


def run_measured(argv: list[str], stdin: Iterator[bytes], workdir: Path) -> Measured:
    """Run ``argv`` with ``stdin`` streamed to it; its own peak RSS, from wait4().

    The command's output goes to files in ``workdir`` (a pipe nobody reads
    while stdin is being written could fill and block it).
    """
    report = workdir / "rusage"
    with open(workdir / "stdout", "wb") as out, open(workdir / "stderr", "wb") as err:
        forker = subprocess.Popen(
            [sys.executable, "-c", _FORKER, str(report), *argv],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=err,
        )
        assert forker.stdin is not None
        try:
            for chunk in stdin:
                forker.stdin.write(chunk)
        except BrokenPipeError:
            pass  # the command stopped reading: its exit code and stderr say why
        finally:
            with contextlib.suppress(BrokenPipeError):
                forker.stdin.close()
            forker.wait()
    code, maxrss = (int(x) for x in report.read_text().split())
    return Measured(
        code, maxrss, (workdir / "stdout").read_bytes(), (workdir / "stderr").read_bytes()
    )


def fpureplay_exe() -> str:
    """The `fpureplay` console script of the running interpreter's environment."""
    return os.path.join(os.path.dirname(sys.executable), "fpureplay")
