"""The narrow, ordered frame the timeline pass walks, with per-line flags.

Everything here is vectorised (polars): the order, the event codes, and the
flags that need the previous or next line on the same CPU, computed once so
that the Python pass (pipeline.timeline) reads ints and visits as few lines
as possible.
"""

from __future__ import annotations

import polars as pl

from pipeline.codes import (
    E_ACT,
    E_DEACT,
    E_FPU,
    E_IOCTL_IN,
    E_IOCTL_OUT,
    E_LOST,
    E_OTHER,
    E_SWITCH,
    EVENT_CODES,
    state_codes,
)

# Flags (prepare).  kvm_fpu: unload, load, or the legacy notifier's unload
# logged right after the thread's own sched_switch; x86_fpu_regs_activated: a
# deferred restore, part of a KVM swap, or <= 5.1 (printed with prev's pid).
FPU_UNLOAD, FPU_LOAD, FPU_TAIL = 0, 1, 2
ACT_DEFER, ACT_SWAP, ACT_OLD = 0, 1, 2
# sched_switch flags: the outgoing task's registers were saved right after
# (x86_fpu_regs_deactivated), the incoming task restored right after (activated).
# The incoming task logs the line right after (that line may be dropped).
SW_SAVED, SW_RESTORED, SW_NEXT_LOGS = 1, 2, 4


def in_trace_order(df: pl.DataFrame) -> bool:
    """Whether rows are already sorted by (ts_ns, line_no)."""
    dts = pl.col("ts_ns").diff()
    return bool(
        df.select(
            ((dts > 0) | ((dts == 0) & (pl.col("line_no").diff() > 0))).fill_null(True).all()
        ).item()
    )


def in_cpu_order(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` in trace order when its timestamps are not: each CPU's lines in file order.

    A CPU's ring buffer is written in the order its events happen, and every
    text format prints each CPU's events in that order (tracefs and
    trace-cmd merge the buffers by timestamp, perf script sorts by it), so
    within a CPU the file order is the truth and a timestamp that steps back
    is a clock problem (ingest counts them: ``ts_backwards``).  Such a
    timestamp is raised to the latest one before it on its CPU, then the
    CPUs are merged by time, file order breaking ties: sorting by raw time
    would move the line, and the lines of its CPU stamped after the step,
    before events they followed (a switch-in before the switch-out it
    ends, a run's put before its load).  Without steps back this is the
    plain (ts_ns, line_no) order.

    A null timestamp (ingest's value for one beyond int64) is likewise the
    latest before it on its CPU (the next one if none is before it); a line
    whose CPU has no timestamp at all cannot be placed and is left out.
    """
    if not df["line_no"].is_sorted():
        df = df.sort("line_no", maintain_order=True)
    ts = pl.col("ts_ns").cum_max().forward_fill().backward_fill()
    df = df.with_columns(ts.over("cpu"))
    if df["ts_ns"].null_count():
        df = df.filter(pl.col("ts_ns").is_not_null())
    return df.sort(["ts_ns", "line_no"], maintain_order=True)


def prepare(events: pl.DataFrame) -> pl.DataFrame:
    """The narrow, ordered frame the timeline pass walks (see ``_prepare``)."""
    return _prepare(events, with_xstate=False)[0]


def _prepare(
    events: pl.DataFrame, *, with_xstate: bool
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """The narrow, ordered frame of the events the timeline needs.

    Orders by (ts_ns, line_no), each CPU's lines kept in file order
    (:func:`in_cpu_order`), only when the input is not already in that
    order (sorting a wide frame costs more than the whole replay).
    Derives, vectorised, the flags that need the previous or next line on the
    same CPU, and drops the lines that cannot change anything: the
    x86_fpu_regs_activated printed by a KVM swap (its kvm_fpu line follows),
    the <= 5.1 ones (printed with the previous task's pid, reference §1.6),
    and a line of another event by the task that the CPU's previous line
    already showed current.  ``events`` counts stay with the caller.
    """
    df = events.select(
        "line_no",
        "ts_ns",
        "cpu",
        "pid",
        "comm",
        "event",
        "fpu_load",
        "prev_pid",
        "prev_state",
        "prev_comm",
        "next_pid",
        "next_comm",
        "exit_reason",
        "exit_code",
        "ioctl_cmd",
        "fpu_tif",
        "fpu_initialized",
        "xstate_bytes",
        "flags",
    )
    if df["ts_ns"].null_count() or not in_trace_order(df):
        df = in_cpu_order(df)
    if df["cpu"].null_count():
        # A line that names no CPU cannot be placed on the timeline, except a
        # lost-events marker, which then stands for every CPU (-1).
        lost = pl.col("event") == "lost_events"
        df = df.filter(pl.col("cpu").is_not_null() | lost).with_columns(
            cpu=pl.col("cpu").fill_null(-1)
        )
    code = pl.col("event").replace_strict(EVENT_CODES, default=E_OTHER, return_dtype=pl.Int8)
    kvm_pids = df.filter(
        pl.col("event").is_in(["kvm_fpu", "kvm_entry", "kvm_userspace_exit"])
        | (pl.col("ioctl_cmd") == "KVM_RUN")
    )["pid"].unique()
    df = df.with_columns(
        code=pl.when(
            (code == E_SWITCH) & (pl.col("prev_pid").is_null() | pl.col("next_pid").is_null())
        )
        .then(pl.lit(E_OTHER, dtype=pl.Int8))
        # ioctls of tasks that never touch KVM only show the task is running
        .when(code.is_in([E_IOCTL_IN, E_IOCTL_OUT]) & ~pl.col("pid").is_in(kvm_pids.implode()))
        .then(pl.lit(E_OTHER, dtype=pl.Int8))
        .otherwise(code),
        st=state_codes(pl.col("prev_state")).cast(pl.Int8),
    )
    return _split(df, kvm_pids, with_xstate)


def prepare_with_xstate(events: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """:func:`prepare`, plus the vCPU threads' x86_fpu lines that carry xstate sizes.

    The second frame has (pid, ts_ns, line_no, event, next_load, xstate_bytes):
    ``next_load`` is the kvm_fpu line an activated line belongs to (True for a
    load, False for an unload) when the KVM swap printed it, else null.
    """
    df, xstate = _prepare(events, with_xstate=True)
    assert xstate is not None
    return df, xstate


def _split(
    df: pl.DataFrame, kvm_pids: pl.Series, with_xstate: bool
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    flags = _neighbour_flags(df)
    full = df.with_columns(flag=flags["flag"], next_load=flags["next_load"])
    xstate = None
    if with_xstate:
        xstate = full.filter(
            pl.col("xstate_bytes").is_not_null()
            & pl.col("pid").is_in(kvm_pids.implode())
            & (
                (pl.col("code") == E_DEACT)
                | ((pl.col("code") == E_ACT) & (pl.col("flag") != ACT_OLD))
            )
        ).select("pid", "ts_ns", "line_no", "event", "next_load", "xstate_bytes")
    return full.filter(flags["keep"]).drop("next_load"), xstate


def next_skipping_wakeups(col: str, wake: pl.Expr) -> pl.Expr:
    """``col`` of the next line on the same CPU that is not a sched_wakeup.

    Wakeups are printed from interrupt context on behalf of whatever task
    runs, so they can fall between two lines of one kernel path (e.g. the
    activated and kvm_fpu lines of a KVM swap).  The frame must be sorted by
    CPU, then trace order.
    """
    val = pl.when(~wake).then(pl.col(col)).shift(-1).backward_fill()
    cpu = pl.when(~wake).then(pl.col("cpu")).shift(-1).backward_fill()
    return pl.when(cpu == pl.col("cpu")).then(val)


def _neighbour_flags(df: pl.DataFrame) -> pl.DataFrame:
    """``flag`` and ``keep`` per row, from the rows before and after it on its CPU.

    Computed on a narrow copy sorted by CPU (stable), so each neighbour is a
    plain shift, then put back in trace order.
    """
    k = (
        df.select(
            "cpu", "code", "pid", "prev_pid", "next_pid",
            load=pl.col("fpu_load"),
            wake=pl.col("event").str.starts_with("sched_wak"),
            kvm_run=pl.col("ioctl_cmd") == "KVM_RUN",
            old_act=pl.col("fpu_initialized").is_not_null(),
        )
        .with_row_index("_row")
        .sort("cpu", maintain_order=True)
    )  # fmt: skip
    c, pid = pl.col("code"), pl.col("pid")

    def near(col: str, by: int) -> pl.Expr:
        # the row ``by`` lines later (negative: earlier) on the same CPU, else null
        same = pl.col("cpu").shift(-by) == pl.col("cpu")
        return pl.when(same).then(pl.col(col).shift(-by))

    # legacy: kvm_sched_out's put is logged right after the thread's own switch.
    notifier = (near("code", -1) == E_SWITCH) & (near("prev_pid", -1) == pid)
    # x86_fpu_regs_activated printed by fpregs_mark_activate() right before a
    # kvm_fpu of the same thread is part of the KVM swap, not a deferred restore.
    act_swap = (next_skipping_wakeups("code", pl.col("wake")) == E_FPU) & (
        next_skipping_wakeups("pid", pl.col("wake")) == pid
    )
    k = k.with_columns(
        flag=pl.when(c == E_FPU)
        .then(pl.when(pl.col("load")).then(FPU_LOAD).when(notifier.fill_null(False))
              .then(FPU_TAIL).otherwise(FPU_UNLOAD))
        .when(c == E_IOCTL_IN)
        .then(pl.col("kvm_run").cast(pl.Int8))
        .when(c == E_ACT)
        .then(pl.when(pl.col("old_act")).then(ACT_OLD).when(act_swap.fill_null(False))
              .then(ACT_SWAP).otherwise(ACT_DEFER))
        .otherwise(0)
        .fill_null(0)
        .cast(pl.Int8)
    )  # fmt: skip
    # Fold the context-switch save (deactivated, prev's pid) and the next
    # task's deferred restore (activated) that follow a sched_switch into
    # flags of that switch line; the pass then need not visit them.
    k = k.with_columns(
        deact_tail=(c == E_DEACT)
        & (
            ((near("code", -1) == E_SWITCH) & (near("prev_pid", -1) == pid))
            | ((near("code", -1) == E_FPU) & (near("flag", -1) == FPU_TAIL)
               & (near("pid", -1) == pid))
        ).fill_null(False)
    )  # fmt: skip
    k = k.with_columns(
        act_first=(c == E_ACT)
        & (pl.col("flag") == ACT_DEFER)
        & (
            ((near("code", -1) == E_SWITCH) & (near("next_pid", -1) == pid))
            | (near("deact_tail", -1) & (near("code", -2) == E_SWITCH)
               & (near("next_pid", -2) == pid))
        ).fill_null(False)
    )  # fmt: skip
    saved = (
        ((near("code", 1) == E_DEACT) & (near("pid", 1) == pl.col("prev_pid")))
        | ((near("code", 1) == E_FPU) & (near("flag", 1) == FPU_TAIL)
           & (near("code", 2) == E_DEACT) & (near("pid", 2) == pl.col("prev_pid")))
    ).fill_null(False)  # fmt: skip
    restored = (
        (near("act_first", 1) & (near("pid", 1) == pl.col("next_pid")))
        | (near("deact_tail", 1) & near("act_first", 2) & (near("pid", 2) == pl.col("next_pid")))
    ).fill_null(False)
    # The incoming task logs the next line itself (after the outgoing one's save).
    next_logs = (
        (
            ~near("code", 1).is_in([E_SWITCH, E_DEACT, E_LOST])
            & (near("pid", 1) == pl.col("next_pid"))
        )
        | (
            near("deact_tail", 1)
            & ~near("code", 2).is_in([E_SWITCH, E_DEACT, E_LOST])
            & (near("pid", 2) == pl.col("next_pid"))
        )
    ).fill_null(False)
    sw_flag = (
        saved.cast(pl.Int8) * SW_SAVED
        + restored.cast(pl.Int8) * SW_RESTORED
        + next_logs.cast(pl.Int8) * SW_NEXT_LOGS
    )
    # A line of another event by the task the CPU's previous line showed current
    # (the switch to it included: the switch's flag then records the line).
    # (a <= 5.1 activated line is printed with the previous task's pid)
    asserting = ~(
        near("code", -1).is_in([E_SWITCH, E_DEACT, E_LOST])
        | ((near("code", -1) == E_ACT) & (near("flag", -1) == ACT_OLD))
    ).fill_null(True)
    same_as_before = (c == E_OTHER) & (
        (asserting & (near("pid", -1) == pid))
        | ((near("code", -1) == E_SWITCH) & (near("next_pid", -1) == pid))
        | (near("deact_tail", -1) & (near("code", -2) == E_SWITCH) & (near("next_pid", -2) == pid))
    ).fill_null(False)
    keep = ~(
        same_as_before
        | ((c == E_ACT) & (pl.col("flag") != ACT_DEFER))
        | pl.col("deact_tail")
        | pl.col("act_first")
    )
    return k.select(
        "_row",
        next_load=pl.when((c == E_ACT) & act_swap.fill_null(False)).then(
            next_skipping_wakeups("load", pl.col("wake"))
        ),
        flag=pl.when(c == E_SWITCH).then(sw_flag).otherwise(pl.col("flag")),
        keep=keep,
    ).sort("_row")
