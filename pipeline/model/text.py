"""Trace text from a LineTable, in bulk: tracefs (reference §5.1) and perf script (§5.3).

No per-line Python: everything a line is made of is either a per-task string
(``"   CPU 0/KVM-30002   "``, the ``prev_comm=... prev_prio=120`` half of a
sched_switch), a per-CPU/flags string, a small table (exit reasons, rips), or
a number turned into text by polars; a line is a handful of string gathers and
one concatenation.  Lines are grouped by kind, each group's tail is built from
its own columns, and a gather puts the tails back in file order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.model.eras import Era
from pipeline.model.lines import FLAGS5, LineTable
from pipeline.model.schedule import (
    EVENT_NAMES,
    EXIT_INFO,
    EXIT_NAMES,
    IOCTL_ARG,
    IOCTL_HEX,
    IOCTL_NAMES,
    L_DEACT,
    L_FPU,
    R_ENTRY,
    R_EXIT,
    R_RUN_IN,
    R_RUN_OUT,
    R_SWITCH,
    R_UEXIT,
    R_WAKE,
    SUBSYSTEMS,
    UEXIT_TEXT,
    Schedule,
    state_text,
)

#: xfeatures printed for each xstate profile; with xcomp_bv 0 (standard format)
#: ingest.xstate sizes them at 576, 832, 2688 and 11008 bytes.
XFEATURES = {"sse": 0x3, "avx2": 0x7, "avx512": 0xE7, "amx": 0x600E7}

#: Guest rips (kernel text addresses) the kvm_entry/kvm_exit lines cycle through.
RIPS = tuple(0xFFFFFFFF81000000 + 0x1F3A7 * k % 0xB00000 for k in range(1, 64))

_RET = ("0x0", "0xfffffffffffffffc")  # sys_exit_ioctl: 0, -EINTR


def _s(values: Sequence[str]) -> pl.Series:
    return pl.Series(values, dtype=pl.String)


def _g(table: pl.Series, idx: np.ndarray) -> pl.Series:
    return table.gather(pl.Series(idx, dtype=pl.UInt32))


def _cat(parts: list[pl.Series | str], n: int) -> pl.Series:
    """Concatenate string Series and literals elementwise."""
    frame = pl.DataFrame({f"p{i}": p for i, p in enumerate(parts) if isinstance(p, pl.Series)})
    exprs = [
        pl.col(f"p{i}") if isinstance(p, pl.Series) else pl.lit(p) for i, p in enumerate(parts)
    ]
    if frame.width == 0:
        return pl.repeat("".join(p for p in parts if isinstance(p, str)), n, eager=True)
    return frame.select(pl.concat_str(exprs).alias("s")).to_series()


class Renderer:
    """Formats one schedule's lines in one flavour (``tracefs`` or ``perf``) and era."""

    def __init__(self, sched: Schedule, era: Era, flavour: str, xstate: str) -> None:
        self.sched, self.era, self.flavour = sched, era, flavour
        tasks = sched.tasks
        n_cpus = sched.n_cpus
        perf = flavour == "perf"
        # Index space of the per-task tables: tasks, then "the idle task on CPU c".
        self.n_tasks = len(tasks)
        comm_sw = [t.comm for t in tasks] + [f"swapper/{c}" for c in range(n_cpus)]
        pid = [t.pid for t in tasks] + [0] * n_cpus
        self.prev_half = _s([f"prev_comm={c} prev_pid={p} prev_prio=120"
                             for c, p in zip(comm_sw, pid, strict=True)])  # fmt: skip
        self.next_half = _s([f" ==> next_comm={c} next_pid={p} next_prio=120"
                             for c, p in zip(comm_sw, pid, strict=True)])  # fmt: skip
        self.wake_head = _s([f"comm={t.comm} pid={t.pid} prio=120 target_cpu=" for t in tasks])
        self.cpu3 = _s([f"{c:03d}" for c in range(n_cpus)])
        self.vcpu_of = _s([f"vcpu {max(t.vcpu_id, 0)}" for t in tasks])
        if perf:
            width = era.perf_tid_width
            names = ["swapper" if t.pid == 0 else t.comm for t in tasks]
            self.prefix = _s([f"{c:>16} {t.pid:>{width}} [" for c, t in zip(names, tasks,
                                                                             strict=True)])
        else:
            width = era.pid_width
            names = ["<idle>" if t.pid == 0 else t.comm for t in tasks]
            self.prefix = _s([f"{c:>16}-{t.pid:<{width}} [" for c, t in zip(names, tasks,
                                                                            strict=True)])
        flags = [f[: era.flag_columns] for f in FLAGS5]
        self.n_styles = len(flags)
        if perf:
            self.cpu_flags = _s([f"{c:03d}] " for c in range(n_cpus) for _ in flags])
        else:
            self.cpu_flags = _s([f"{c:03d}] {f} " for c in range(n_cpus) for f in flags])
        self.ptr = _s([self._pointer(i) for i in range(len(tasks))])
        self.fpu_tail = f" xfeatures: {XFEATURES[xstate]:x} xcomp_bv: 0"
        self.fpu_flag = " load: " if era.fpu_new_format else " initialized: "
        self.states = _s(list(state_text(era.vcpu_preempt_state)))
        self.rips = _s([f"{r:x}" for r in RIPS])
        self.exit_names = _s(list(EXIT_NAMES))
        self.exit_info = _s([self._exit_info(i) for i in range(len(EXIT_NAMES))])
        self.uexit = _s(list(UEXIT_TEXT))
        self.events = list(EVENT_NAMES)
        if perf:
            full = [f"{s}:{e}" for s, e in zip(SUBSYSTEMS, EVENT_NAMES, strict=True)]
            self.perf_width = max(len(f) for f in full)
            self.events = [f.rjust(self.perf_width) for f in full]

    def ioctl_args(self, fd: int, cmd: int) -> str:
        """``sys_enter_ioctl``'s arguments as this flavour and era print them."""
        hexcmd, arg = IOCTL_HEX[cmd], IOCTL_ARG[cmd]
        if self.flavour == "perf":
            return f"fd: 0x{fd:08x}, cmd: 0x{hexcmd:08x}, arg: 0x{arg:08x}"
        cmd_text = f"0x{hexcmd:x}" if self.era.ioctl_hex_args else f"{hexcmd:x}"
        return f"fd: {_fd(fd)}, cmd: {cmd_text}, arg: {_fd(arg)}"

    def _pointer(self, tid: int) -> str:
        """The task's ``struct fpu`` address as ``%p`` prints it (hashed from 4.15)."""
        base = 0xFFFF888100000000 + (tid * 0x2A40 + (self.sched.seed % 997) * 0x100000)
        if self.flavour == "perf":
            return f"0x{base:x}"
        if self.era.hashed_pointers:
            hashed = (tid * 2654435761 + 0x5BD1E995 * (self.sched.seed % 65521)) & 0xFFFFFFFF
            return f"{hashed:016x}"
        return f"{base:x}"

    def _exit_info(self, reason: int) -> str:
        i1, i2, intr = EXIT_INFO[reason]
        form = self.era.exit_form
        if form == 2:
            return (f" info1 0x{i1:016x} info2 0x{i2:016x} intr_info 0x{intr:08x}"
                    " error_code 0x00000000")  # fmt: skip
        return f" info {i1:x} {i2:x}"

    # -- lines -----------------------------------------------------------------------
    def bodies(self, lt: LineTable) -> pl.Series:
        """Each line's event text after the event name (``args``), in file order.

        For the syscall lines this is what the ``events`` table calls args: the
        text inside tracefs's ``sys_ioctl(...)`` and after its ``->``.
        """
        n = len(lt)
        order = np.argsort(lt.kind, kind="stable")
        kinds = lt.kind[order]
        bounds = np.searchsorted(kinds, np.arange(L_DEACT + 2))
        pieces = []
        for k in range(L_DEACT + 1):
            lo, hi = bounds[k], bounds[k + 1]
            if hi > lo:
                pieces.append(self._body(k, lt, order[lo:hi]))
        grouped = pl.concat(pieces) if pieces else _s([])
        inverse = np.empty(n, dtype=np.int64)
        inverse[order] = np.arange(n)
        return _g(grouped, inverse)

    def affixes(self) -> tuple[pl.Series, pl.Series]:
        """Per line kind: the text before the body and after it."""
        if self.flavour == "perf":
            return _s([e + ": " for e in self.events]), _s([""] * len(self.events))
        pre = [e + ": " for e in self.events]
        post = [""] * len(self.events)
        pre[R_RUN_IN], post[R_RUN_IN] = "sys_ioctl(", ")"
        pre[R_RUN_OUT] = "sys_ioctl -> "
        return _s(pre), _s(post)

    def _body(self, k: int, lt: LineTable, idx: np.ndarray) -> pl.Series:
        m = len(idx)
        a, b, c = lt.a[idx], lt.b[idx], lt.c[idx]
        if k == R_SWITCH:
            cpu = lt.cpu[idx]
            ia = np.where(a == 0, self.n_tasks + cpu, a)
            ib = np.where(b == 0, self.n_tasks + cpu, b)
            return _cat([_g(self.prev_half, ia), " prev_state=", _g(self.states, c),
                         _g(self.next_half, ib)], m)  # fmt: skip
        if k == R_WAKE:
            return _cat([_g(self.wake_head, a), _g(self.cpu3, b)], m)
        if k == R_RUN_IN:
            # a few distinct (fd, command) pairs: format each once, then gather
            n_cmds = len(IOCTL_NAMES)
            uniq, inverse = np.unique(a * n_cmds + b, return_inverse=True)
            texts = _s([self.ioctl_args(int(u) // n_cmds, int(u) % n_cmds) for u in uniq])
            return _g(texts, inverse.reshape(-1))
        if k == R_RUN_OUT:
            return _g(_s(list(_RET)), (a < 0).astype(np.int64))
        if k == R_ENTRY:
            parts: list[pl.Series | str] = [_g(self.vcpu_of, lt.task[idx])]
            form = self.era.entry_form
            if form >= 1:
                parts += [", rip 0x", _g(self.rips, rip_index(lt.ts[idx]))]
            if form == 2:
                parts.append(" intr_info 0x00000000 error_code 0x00000000")
            return _cat(parts, m) if len(parts) > 1 else parts[0]  # type: ignore[return-value]
        if k == R_EXIT:
            parts = []
            if self.era.exit_form >= 1:
                parts += [_g(self.vcpu_of, lt.task[idx]), " "]
            parts += ["reason ", _g(self.exit_names, a), " rip 0x",
                      _g(self.rips, rip_index(lt.ts[idx])), _g(self.exit_info, a)]  # fmt: skip
            return _cat(parts, m)
        if k == R_UEXIT:
            return _g(self.uexit, a)
        if k == L_FPU:
            return _g(_s(["unload", "load"]), a)
        # x86_fpu_regs_activated / deactivated
        flag = _g(_s(["0", "1"]), b)
        return _cat(["x86/fpu: ", _g(self.ptr, a), self.fpu_flag, flag, self.fpu_tail], m)

    def heads(self, lt: LineTable) -> pl.Series:
        """``comm-pid [cpu] flags secs.usecs: `` (tracefs) or perf's fields, per line."""
        n = len(lt)
        abs_ns = lt.ts + self.sched.clock_start_ns
        secs = pl.Series(abs_ns // 1_000_000_000).cast(pl.String)
        usec = pl.Series(abs_ns // 1000 % 1_000_000).cast(pl.String).str.zfill(6)
        cpu_fl = _g(self.cpu_flags, lt.cpu * self.n_styles + lt.style)
        frame = pl.DataFrame({"p": _g(self.prefix, lt.task), "c": cpu_fl, "s": secs, "u": usec})
        if self.flavour == "perf":
            ts = pl.concat_str([pl.col("s"), pl.lit("."), pl.col("u")]).str.pad_start(12)
            expr = pl.concat_str([pl.col("p"), pl.col("c"), ts, pl.lit(": ")])
        else:
            expr = pl.concat_str([pl.col("p"), pl.col("c"), pl.col("s").str.pad_start(5),
                                  pl.lit("."), pl.col("u"), pl.lit(": ")])  # fmt: skip
        out = frame.select(expr.alias("h")).to_series()
        assert out.len() == n
        return out


def rip_index(ts: np.ndarray) -> np.ndarray:
    """Which of RIPS a kvm_entry/kvm_exit line prints: a fixed hash of its time."""
    index = ts * 2654435761  # int64: wraps for times past ~3.5 s, as it always has
    index >>= 11  # in place: one temporary instead of three
    index %= len(RIPS)
    return index


def _fd(fd: int) -> str:
    """Recent kernels print small syscall arguments in decimal and the rest in hex."""
    return str(fd) if fd < 10 else f"0x{fd:x}"


def tracefs_header(era: Era, entries: int, n_cpus: int) -> str:
    """The ``# tracer: nop`` header of the ``trace`` file (reference §5.1)."""
    if era.flag_columns == 5:
        bh = "irqs-off/BH-disabled" if era.at_least(5, 18) else "irqs-off"
        return (
            "# tracer: nop\n#\n"
            f"# entries-in-buffer/entries-written: {entries}/{entries}   #P:{n_cpus}\n#\n"
            f"#                                _-----=> {bh}\n"
            "#                               / _----=> need-resched\n"
            "#                              | / _---=> hardirq/softirq\n"
            "#                              || / _--=> preempt-depth\n"
            "#                              ||| / _-=> migrate-disable\n"
            "#                              |||| /     delay\n"
            "#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION\n"
            "#              | |         |   |||||     |         |\n"
        )
    pad = " " * (era.pid_width - 5)
    return (
        "# tracer: nop\n#\n"
        f"# entries-in-buffer/entries-written: {entries}/{entries}   #P:{n_cpus}\n#\n"
        f"#                      {pad}        _-----=> irqs-off\n"
        f"#                      {pad}       / _----=> need-resched\n"
        f"#                      {pad}      | / _---=> hardirq/softirq\n"
        f"#                      {pad}      || / _--=> preempt-depth\n"
        f"#                      {pad}      ||| /     delay\n"
        f"#           TASK-PID{pad}   CPU#  ||||    TIMESTAMP  FUNCTION\n"
        f"#              | |{pad}       |   ||||       |         |\n"
    )


def render(sched: Schedule, lt: LineTable, era: Era, flavour: str, xstate: str) -> bytes:
    """The whole trace text (``flavour``: tracefs or perf) as bytes."""
    r = Renderer(sched, era, flavour, xstate)
    pre, post = r.affixes()
    kind = pl.Series(lt.kind, dtype=pl.UInt32)
    lines = pl.DataFrame(
        {"h": r.heads(lt), "p": pre.gather(kind), "b": r.bodies(lt), "s": post.gather(kind)}
    ).select(pl.concat_str([pl.col("h"), pl.col("p"), pl.col("b"), pl.col("s"), pl.lit("\n")]))
    body = _join(lines.to_series())
    if flavour == "tracefs":
        return tracefs_header(era, len(lt), sched.n_cpus).encode() + body
    return body


def _join(lines: pl.Series) -> bytes:
    """The concatenation of a string Series (each element already ends in a newline).

    An Arrow large_string array keeps its strings back to back in one buffer, so
    the file's bytes are a slice of it: no join, no Python string.
    """
    if lines.len() == 0:
        return b""
    arr = lines.to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.type != pa.large_string() or arr.null_count:
        return lines.str.join("").item().encode()
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)
    first, last = offsets[arr.offset], offsets[arr.offset + len(arr)]
    return arr.buffers()[2].to_pybytes()[first:last]
