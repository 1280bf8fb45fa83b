"""Column contracts of the dataset tables written by ingest.

The `events` table has one row per trace event.  Columns shared by every
event come first; the decoded per-event fields follow and are null for
events that do not carry them.  `source` is not stored inside the Parquet
files: it is a hive partition key (`events/host=H/source=ID/`, like `host`), restored by every
reader that enables hive partitioning (DuckDB, polars, pyarrow, Spark).
"""

from __future__ import annotations

import polars as pl

#: Columns of `events`, in file order, with their polars types.
EVENT_COLUMNS: dict[str, pl.DataType] = {
    "line_no": pl.Int64(),  # 1-based line in the input text
    "ts_ns": pl.Int64(),  # exact nanoseconds, parsed from the digits
    "cpu": pl.Int32(),
    "pid": pl.Int32(),  # thread id of the task column
    "tgid": pl.Int32(),  # tracefs TGID column when present
    "comm": pl.String(),  # task column ('<idle>', '<...>' as printed)
    "flags": pl.String(),  # tracefs irq-flag column ('d..2.'), else null
    "event": pl.String(),  # bare event name: kvm_fpu, sched_switch, ...
    "args": pl.String(),  # raw text after the event name
    # kvm_fpu
    "fpu_load": pl.Boolean(),
    # sched_switch (prev_state normalised to the kernel's letters)
    "prev_comm": pl.String(),
    "prev_pid": pl.Int32(),
    "prev_prio": pl.Int32(),
    "prev_state": pl.String(),
    "next_comm": pl.String(),
    "next_pid": pl.Int32(),
    "next_prio": pl.Int32(),
    # sched_wakeup / sched_waking / sched_wakeup_new
    "wake_comm": pl.String(),
    "wake_pid": pl.Int32(),
    "wake_prio": pl.Int32(),
    "target_cpu": pl.Int32(),
    # kvm_userspace_exit ('KVM_EXIT_IO', 'restart', 'error') and kvm_exit
    "exit_reason": pl.String(),
    "exit_code": pl.Int64(),  # kvm_userspace_exit: the number in parentheses
    # kvm_entry / kvm_exit
    "vcpu_id": pl.Int32(),
    "guest_rip": pl.UInt64(),
    # x86_fpu_*
    "fpu_tif": pl.Boolean(),  # 'load: N' (>=5.2: TIF_NEED_FPU_LOAD of current)
    "fpu_initialized": pl.Boolean(),  # 'initialized: N' (<=5.1)
    "xfeatures": pl.UInt64(),
    "xcomp_bv": pl.UInt64(),
    "xstate_bytes": pl.Int32(),  # size of the xfeatures components
    # sys_enter_ioctl / sys_exit_ioctl
    "ioctl_fd": pl.Int32(),
    "ioctl_cmd": pl.String(),  # KVM_RUN, KVM_GET_XSAVE, ... or hex '0x5401'
    "ioctl_ret": pl.Int64(),  # sys_exit_ioctl return value (signed)
    # lost_events pseudo-event (CPU:N [LOST M EVENTS] and equivalents)
    "lost_count": pl.Int64(),
}

#: Columns of `rejects`: lines that did not parse.
REJECT_COLUMNS: dict[str, pl.DataType] = {
    "line_no": pl.Int64(),
    "text": pl.String(),  # the line, invalid UTF-8 replaced by U+FFFD
    "raw": pl.Binary(),  # the exact bytes of the line
    "reason": pl.String(),
}

EVENTS_SCHEMA = pl.Schema(EVENT_COLUMNS)
REJECTS_SCHEMA = pl.Schema(REJECT_COLUMNS)

#: Name of the pseudo-event that stands for a lost-events marker line.
LOST_EVENTS = "lost_events"
