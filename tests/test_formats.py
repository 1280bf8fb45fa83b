"""Inline mini-traces of every format variant, with the exact rows they become.

Each test writes a few lines as the kernel, trace-cmd or perf print them
(reference §5) and compares every non-null column of every row with a
hand-written expectation, so a column that appears, disappears or changes
fails the test.  Decoded fields of each event are covered in test_events.py.
"""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest

from ingest.detect import detect_format
from ingest.lines import split_lines
from ingest.parse import Chunk, parse_block, parse_text
from ingest.schema import EVENTS_SCHEMA, REJECTS_SCHEMA


def trace(text: str) -> str:
    """An inline trace: the lines between the opening and the closing quotes, each
    without the indentation of the closing quotes (which fixes the columns,
    where textwrap.dedent would eat a space that is part of a comm field).
    """
    first, *lines, last = text.split("\n")
    assert first == "" and last.strip() == "", "an inline trace starts and ends on its own line"
    margin = len(last)
    assert all(ln[:margin].strip() == "" for ln in lines), "a line is left of the margin"
    return "".join(ln[margin:] + "\n" for ln in lines)


def parse(text: str, fmt: str, *, truncated: bool = False) -> Chunk:
    """Parse an inline trace (see :func:`trace`), or one line, as one block."""
    frame, _ = split_lines((trace(text) if "\n" in text else text + "\n").encode(), 1)
    return parse_block(frame, fmt, truncated=truncated)


def rows(df: pl.DataFrame) -> list[dict[str, Any]]:
    """Each row as {column: value} without its null columns."""
    return [{k: v for k, v in r.items() if v is not None} for r in df.iter_rows(named=True)]


def rejects(chunk: Chunk) -> list[tuple[int, str, str]]:
    """(line_no, text, reason) of each reject."""
    return list(chunk.rejects.select("line_no", "text", "reason").iter_rows())


# Kernel 6.x tracefs: "%16s-%-7d [%03d] %5s %5lu.%06lu: " (reference §5.1).
NEW_HEADER = """
    # tracer: nop
    #
    # entries-in-buffer/entries-written: 3/3   #P:2
    #
    #                                _-----=> irqs-off/BH-disabled
    #                               / _----=> need-resched
    #                              | / _---=> hardirq/softirq
    #                              || / _--=> preempt-depth
    #                              ||| / _-=> migrate-disable
    #                              |||| /     delay
    #           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
    #              | |         |   |||||     |         |
    """
NEW_LINES = """
           CPU 0/KVM-30801   [001] b....  2194.928432: kvm_fpu: load
         kworker/0:1-87      [000] dNh3.  2194.928435: kvm_fpu: unload
     memfd:sealed-91-2446    [000] d..2.  2194.948043: kvm_fpu: load
    """
NEW_ROWS = [
    {"ts_ns": 2194928432000, "cpu": 1, "pid": 30801, "comm": "CPU 0/KVM", "flags": "b....",
     "event": "kvm_fpu", "args": "load", "fpu_load": True},
    {"ts_ns": 2194928435000, "cpu": 0, "pid": 87, "comm": "kworker/0:1", "flags": "dNh3.",
     "event": "kvm_fpu", "args": "unload", "fpu_load": False},
    {"ts_ns": 2194948043000, "cpu": 0, "pid": 2446, "comm": "memfd:sealed-91", "flags": "d..2.",
     "event": "kvm_fpu", "args": "load", "fpu_load": True},
]


def numbered(expected: list[dict[str, Any]], first: int) -> list[dict[str, Any]]:
    return [{"line_no": first + i, **row} for i, row in enumerate(expected)]


def test_tracefs_with_header():
    text = trace(NEW_HEADER) + trace(NEW_LINES)
    frame, _ = split_lines(text.encode(), 1)
    chunk = parse_block(frame, "tracefs")
    assert rows(chunk.events) == numbered(NEW_ROWS, 13)
    assert chunk.meta_lines == 12
    assert chunk.rejects.height == 0
    assert detect_format(text.splitlines()) == "tracefs"


def test_trace_pipe_without_header():
    chunk = parse(NEW_LINES, "tracefs")
    assert rows(chunk.events) == numbered(NEW_ROWS, 1)
    assert chunk.meta_lines == 0
    assert detect_format(trace(NEW_LINES).splitlines()) == "tracefs"


def test_tracefs_old_layout_four_flags_pid_width_five():
    # ≤5.9: "%16s-%-5d [%03d] %4s"; a 5-digit pid fills its column, a 6-digit
    # one pushes the CPU column right (the pad is dropped).
    chunk = parse(
        """
                  <idle>-0     [001] ...2  3269.291072: kvm_fpu: load
                   <...>-40539 [004] .... 1221499.061255: kvm_fpu: unload
                    qemu-123456 [002] d.h1   12.000001: kvm_fpu: load
        """,
        "tracefs",
    )
    assert rows(chunk.events) == [
        {"line_no": 1, "ts_ns": 3269291072000, "cpu": 1, "pid": 0, "comm": "<idle>",
         "flags": "...2", "event": "kvm_fpu", "args": "load", "fpu_load": True},
        {"line_no": 2, "ts_ns": 1221499061255000, "cpu": 4, "pid": 40539, "comm": "<...>",
         "flags": "....", "event": "kvm_fpu", "args": "unload", "fpu_load": False},
        {"line_no": 3, "ts_ns": 12000001000, "cpu": 2, "pid": 123456, "comm": "qemu",
         "flags": "d.h1", "event": "kvm_fpu", "args": "load", "fpu_load": True},
    ]


def test_tracefs_pid_width_seven_and_overflowing():
    chunk = parse(
        """
                vmm-main-4194304 [001] .....    10.500000: kvm_fpu: load
                   <...>-12345678 [000] .....    10.500001: kvm_fpu: unload
        """,
        "tracefs",
    )
    assert [(r["pid"], r["comm"], r["cpu"], r["ts_ns"]) for r in rows(chunk.events)] == [
        (4194304, "vmm-main", 1, 10500000000),
        (12345678, "<...>", 0, 10500001000),
    ]


def test_tracefs_without_irq_flags():
    # irq-info off: no flag column between the CPU and the timestamp
    chunk = parse(
        """
               CPU 0/KVM-4321    [000]  5123.000100: kvm_fpu: load
                  <idle>-0       [001]  5123.000101: kvm_fpu: unload
        """,
        "tracefs",
    )
    assert rows(chunk.events) == [
        {"line_no": 1, "ts_ns": 5123000100000, "cpu": 0, "pid": 4321, "comm": "CPU 0/KVM",
         "event": "kvm_fpu", "args": "load", "fpu_load": True},
        {"line_no": 2, "ts_ns": 5123000101000, "cpu": 1, "pid": 0, "comm": "<idle>",
         "event": "kvm_fpu", "args": "unload", "fpu_load": False},
    ]


def test_tracefs_tgid_column():
    # options/record-tgid: "(%7d) " or "(-------) " between the pid and the CPU
    chunk = parse(
        """
                vmm-main-30850   (  30850) [001] d..2.  2196.467623: kvm_fpu: load
               CPU 1/KVM-30851   (-------) [000] d..2.  2196.467624: kvm_fpu: unload
                  python-1234  ( 1200) [001] d..2   2196.467625: kvm_fpu: load
                  python-1234  (-----) [001] d..2   2196.467626: kvm_fpu: load
        """,
        "tracefs",
    )
    assert [(r["pid"], r.get("tgid"), r["cpu"], r["flags"]) for r in rows(chunk.events)] == [
        (30850, 30850, 1, "d..2."),
        (30851, None, 0, "d..2."),
        (1234, 1200, 1, "d..2"),
        (1234, None, 1, "d..2"),
    ]


def test_tracefs_lost_events_and_buffer_started():
    chunk = parse(
        """
        ##### CPU 1 buffer started ####
               CPU 0/KVM-4321    [001] d..2.  5123.000100: kvm_fpu: load
        CPU:1 [LOST 42 EVENTS]
               CPU 0/KVM-4321    [001] d..2.  5123.000900: kvm_fpu: unload
        """,
        "tracefs",
    )
    assert rows(chunk.events) == [
        {"line_no": 2, "ts_ns": 5123000100000, "cpu": 1, "pid": 4321, "comm": "CPU 0/KVM",
         "flags": "d..2.", "event": "kvm_fpu", "args": "load", "fpu_load": True},
        # the marker takes the time of the event after the gap
        {"line_no": 3, "ts_ns": 5123000900000, "cpu": 1, "event": "lost_events",
         "args": "CPU:1 [LOST 42 EVENTS]", "lost_count": 42},
        {"line_no": 4, "ts_ns": 5123000900000, "cpu": 1, "pid": 4321, "comm": "CPU 0/KVM",
         "flags": "d..2.", "event": "kvm_fpu", "args": "unload", "fpu_load": False},
    ]
    assert (chunk.meta_lines, chunk.buffer_started) == (1, 1)
    assert (chunk.lost_markers, chunk.lost_events) == (1, 42)
    assert chunk.event_counts == {"kvm_fpu": 2, "lost_events": 1}


def test_lost_marker_at_the_end_takes_the_last_time():
    chunk = parse(
        """
               CPU 0/KVM-4321    [001] d..2.  5123.000100: kvm_fpu: load
        CPU:0 [LOST 7 EVENTS]
        """,
        "tracefs",
    )
    lost = rows(chunk.events)[1]
    assert (lost["cpu"], lost["ts_ns"], lost["lost_count"]) == (0, 5123000100000, 7)


def test_task_names_with_spaces_dashes_slashes_colons():
    chunk = parse(
        """
               CPU 0/KVM-30801   [001] d..2.  2194.928432: kvm_fpu: load
             kworker/0:1-87      [000] d..2.  2194.928433: kvm_fpu: load
                vmm-main-30797   [001] d..2.  2194.928434: kvm_fpu: load
                  <idle>-0       [000] d..2.  2194.928435: kvm_fpu: load
                   <...>-30802   [001] d..2.  2194.928436: kvm_fpu: load
         memfd:sealed-91-2446    [000] d..2.  2194.928437: kvm_fpu: load
         a-1 [2] 3: x: y-77      [000] d..2.  2194.928438: kvm_fpu: load
        """,
        "tracefs",
    )
    assert [(r["comm"], r["pid"]) for r in rows(chunk.events)] == [
        ("CPU 0/KVM", 30801),
        ("kworker/0:1", 87),
        ("vmm-main", 30797),
        ("<idle>", 0),
        ("<...>", 30802),
        ("memfd:sealed-91", 2446),
        # a comm that looks like a line header: the 16-column field decides
        ("a-1 [2] 3: x: y", 77),
    ]


def test_comm_longer_than_its_column_and_non_ascii():
    # Not printed by a kernel (comms are at most 15 bytes), but parsed: the
    # pid is the first "-digits" followed by the CPU column.
    chunk = parse(
        """
        a-very-long-task-name-9-1234   [000] d..2.  1.000001: kvm_fpu: load
              café-crème-42      [001] d..2.  1.000002: kvm_fpu: unload
        """,
        "tracefs",
    )
    assert [(r["comm"], r["pid"], r["cpu"]) for r in rows(chunk.events)] == [
        ("a-very-long-task-name-9", 1234, 0),
        ("café-crème", 42, 1),
    ]


def test_timestamps_are_exact_integer_nanoseconds():
    chunk = parse(
        """
                  <...>-40539 [004] .... 1221499.061255: kvm_fpu: load
               CPU 0/KVM-4321    [000] d..2.  5123.000100123: kvm_fpu: load
               CPU 0/KVM-4321    [000] d..2.  9007199254.740993: kvm_fpu: load
               CPU 0/KVM-4321    [000] d..2.  123456789012: kvm_fpu: load
               CPU 0/KVM-4321    [000] d..2.  0.000000001: kvm_fpu: load
               CPU 0/KVM-4321    [000] d..2.  1.1234567891: kvm_fpu: load
        """,
        "tracefs",
    )
    assert [r["ts_ns"] for r in rows(chunk.events)] == [
        1221499061255000,
        5123000100123,  # 9 digits: nanoseconds as printed (trace-cmd -t, perf --ns)
        9007199254740993000,  # beyond float64's exact integers: no rounding
        123456789012,  # counter clocks print a bare integer, taken as is
        1,
        1123456789,  # digits past the ninth are below a nanosecond: cut
    ]


def test_timestamp_beyond_int64_is_null_not_wrapped():
    chunk = parse(
        """
               CPU 0/KVM-4321    [000] d..2.  9223372036.854775807: kvm_fpu: load
               CPU 0/KVM-4321    [000] d..2.  9223372036.854775808: kvm_fpu: unload
        CPU:0 [LOST 1 EVENTS]
               CPU 0/KVM-4321    [000] d..2.  99999999999999999999.000001: kvm_fpu: load
        """,
        "tracefs",
    )
    assert [(r["event"], r.get("ts_ns")) for r in rows(chunk.events)] == [
        ("kvm_fpu", 2**63 - 1),
        ("kvm_fpu", None),  # one nanosecond too late: null, and still an event
        ("lost_events", 2**63 - 1),  # no later time in the block: the earlier one
        ("kvm_fpu", None),
    ]


def test_rejects_keep_every_bad_line_with_its_reason():
    chunk = parse(
        """
               CPU 0/KVM-4321    [000] d..2.  5123.000100: kvm_fpu: load
        this is not a trace line
               CPU 0/KVM-4321    [000] d..2.  5123.000200: kvm_fpu: reload
               CPU 0/KVM-4321    [000] d..2.  5123.000300: kvm_userspace_exit: reason KVM_EXIT_IO
               CPU 0/KVM-4321    [xyz] d..2.  5123.000400: kvm_fpu: load
               CPU 0/KVM-4321    [000] d..2.  5123.: kvm_fpu: load
        """,
        "tracefs",
    )
    assert [r["line_no"] for r in rows(chunk.events)] == [1]
    no_form = ": arguments match no known format of this event"
    assert rejects(chunk) == [
        (2, "this is not a trace line", "not a tracefs event line"),
        (3, "       CPU 0/KVM-4321    [000] d..2.  5123.000200: kvm_fpu: reload",
         "kvm_fpu" + no_form),
        (4, "       CPU 0/KVM-4321    [000] d..2.  5123.000300: kvm_userspace_exit: reason "
            "KVM_EXIT_IO", "kvm_userspace_exit" + no_form),
        (5, "       CPU 0/KVM-4321    [xyz] d..2.  5123.000400: kvm_fpu: load",
         "not a tracefs event line"),
        (6, "       CPU 0/KVM-4321    [000] d..2.  5123.: kvm_fpu: load",
         "not a tracefs event line"),
    ]
    assert chunk.rejects.schema == REJECTS_SCHEMA
    assert chunk.rejects["raw"][0] == b"this is not a trace line"


def test_truncated_last_line_says_so():
    text = "       CPU 0/KVM-4321    [000] d..2.  5123.000100: kvm_fpu: load\n  CPU 0/KVM-43"
    frame, _ = split_lines(text.encode(), 1)
    chunk = parse_block(frame, "tracefs", truncated=True)
    assert rejects(chunk) == [
        (2, "  CPU 0/KVM-43",
         "truncated last line (no newline at end of input); not a tracefs event line")
    ]
    # a complete-looking last line is an event, newline or not
    frame, _ = split_lines(text.rsplit("\n", 1)[0].encode(), 1)
    assert parse_block(frame, "tracefs", truncated=True).events.height == 1


def test_invalid_utf8_nul_and_cr_bytes():
    data = (
        b"       CPU 0/KVM-4321    [000] d..2.  5123.000100: kvm_fpu: load\r\n"
        b"\xff\xfe garbage \x00 here\n"
        b"  caf\xe9-12    [000] d..2.  5123.000200: kvm_fpu: unload\n"
    )
    frame, invalid = split_lines(data, 1)
    chunk = parse_block(frame, "tracefs")
    assert invalid == 2
    assert [(r["line_no"], r["comm"], r["args"]) for r in rows(chunk.events)] == [
        (1, "CPU 0/KVM", "load"),  # the CR of a CRLF line is not part of the args
        (3, "caf\ufffd", "unload"),  # a bad byte becomes U+FFFD in text columns
    ]
    assert rejects(chunk) == [(2, "\ufffd\ufffd garbage \x00 here", "not a tracefs event line")]
    assert chunk.rejects["raw"].to_list() == [b"\xff\xfe garbage \x00 here"]


@pytest.mark.parametrize(
    "data,lines",
    [
        (b"", []),
        (b"\n", [""]),
        (b"abc", ["abc"]),  # no newline at the end
        (b"a\r\nbb\n", ["a", "bb"]),
        # up to 12 bytes a line lives inside its Arrow view, longer ones point into
        # the block; the last bytes of the block are read from a padded copy
        (b"123456789012\n1234567890123\n12345678901", ["123456789012", "1234567890123",
                                                    "12345678901"]),
        (b"\n\n" + b"x" * 40 + b"\n", ["", "", "x" * 40]),
    ],
)
def test_split_lines_numbers_every_line(data: bytes, lines: list[str]):
    frame, invalid = split_lines(data, 7)
    assert frame["line"].to_list() == lines
    assert frame["line_no"].to_list() == list(range(7, 7 + len(lines)))
    assert frame["raw"].to_list() == [ln.encode() + (b"\r" if ln == "a" else b"") for ln in lines]
    assert invalid == 0


# -- trace-cmd report --------------------------------------------------------------


def test_trace_cmd_report_with_instance_prefix_and_plugins():
    chunk = parse(
        """
        cpus=2
        capture_mixed:         vmm-main-30850 [001]  2196.467623: kvm_fpu:              load
        capture_mixed:           python-30691 [000]  2196.471369: sched_wakeup:         rcu_tasks_trace:29 [120] CPU:000
        capture_mixed:           python-30691 [000]  2196.471374: sched_switch:         python:30691 [120] R ==> rcu_tasks_trace:29 [120]
        capture_mixed:  rcu_tasks_trace-29    [000]  2196.471378: sched_switch:         rcu_tasks_trace:29 [120] W ==> CPU 0/KVM:30691 [120]
        """,  # noqa: E501 - lines as trace-cmd prints them
        "trace-cmd",
    )
    assert rows(chunk.events) == [
        {"line_no": 2, "ts_ns": 2196467623000, "cpu": 1, "pid": 30850, "comm": "vmm-main",
         "event": "kvm_fpu", "args": "load", "fpu_load": True},
        {"line_no": 3, "ts_ns": 2196471369000, "cpu": 0, "pid": 30691, "comm": "python",
         "event": "sched_wakeup", "args": "rcu_tasks_trace:29 [120] CPU:000",
         "wake_comm": "rcu_tasks_trace", "wake_pid": 29, "wake_prio": 120, "target_cpu": 0},
        {"line_no": 4, "ts_ns": 2196471374000, "cpu": 0, "pid": 30691, "comm": "python",
         "event": "sched_switch", "args": "python:30691 [120] R ==> rcu_tasks_trace:29 [120]",
         "prev_comm": "python", "prev_pid": 30691, "prev_prio": 120, "prev_state": "R",
         "next_comm": "rcu_tasks_trace", "next_pid": 29, "next_prio": 120},
        {"line_no": 5, "ts_ns": 2196471378000, "cpu": 0, "pid": 29, "comm": "rcu_tasks_trace",
         "event": "sched_switch", "args": "rcu_tasks_trace:29 [120] W ==> CPU 0/KVM:30691 [120]",
         "prev_comm": "rcu_tasks_trace", "prev_pid": 29, "prev_prio": 120, "prev_state": "I",
         "next_comm": "CPU 0/KVM", "next_pid": 30691, "next_prio": 120},
    ]
    assert chunk.meta_lines == 1
    assert chunk.instances == {"capture_mixed"}


@pytest.mark.parametrize(
    "printed,kernel",
    [("R", "R"), ("S", "S"), ("D", "D"), ("T", "T"), ("t", "t"), ("W", "I"), ("X", "Z"),
     ("Z", "X"), ("x", "P"), ("S|W", "S|I")],
)
def test_trace_cmd_plugin_state_letters_map_to_the_kernels(printed: str, kernel: str):
    line = f"       CPU 0/KVM-4321  [000]  5123.000160: sched_switch:         CPU 0/KVM:4321 [120] {printed} ==> kworker/0:1:87 [120]"  # noqa: E501
    [row] = rows(parse(line, "trace-cmd").events)
    assert row["prev_state"] == kernel
    assert (row["prev_comm"], row["next_comm"], row["next_pid"]) == ("CPU 0/KVM", "kworker/0:1", 87)


def test_trace_cmd_top_level_lines_ns_timestamps_and_success():
    # no instance prefix (top-level buffer), "-t" nanoseconds, sched_wakeup with success=
    chunk = parse(
        """
        version = 6
        cpus=2
               CPU 0/KVM-4321  [000]  5123.000100123: kvm_fpu:              load
                  python-30691 [000]  2196.471369000: sched_wakeup:         kworker/0:1:87 [120] success=1 CPU:001
        CPU 0 is empty
        """,  # noqa: E501
        "trace-cmd",
    )
    assert rows(chunk.events) == [
        {"line_no": 3, "ts_ns": 5123000100123, "cpu": 0, "pid": 4321, "comm": "CPU 0/KVM",
         "event": "kvm_fpu", "args": "load", "fpu_load": True},
        {"line_no": 4, "ts_ns": 2196471369000, "cpu": 0, "pid": 30691, "comm": "python",
         "event": "sched_wakeup", "args": "kworker/0:1:87 [120] success=1 CPU:001",
         "wake_comm": "kworker/0:1", "wake_pid": 87, "wake_prio": 120, "target_cpu": 1},
    ]
    assert (chunk.meta_lines, chunk.instances) == (3, set())


def test_trace_cmd_lost_events_and_mixed_buffers():
    chunk = parse(
        """
        cpus=2
        capture_x:        CPU 0/KVM-4321  [000]  5123.000100: kvm_fpu:              load
        CPU:1 [12 EVENTS DROPPED]
               CPU 0/KVM-4321  [001]  5123.000200: kvm_fpu:              unload
        capture_x: CPU:0 [EVENTS DROPPED]
        """,
        "trace-cmd",
    )
    got = [(r["line_no"], r["event"], r["cpu"], r.get("lost_count")) for r in rows(chunk.events)]
    assert got == [
        (2, "kvm_fpu", 0, None),
        (3, "lost_events", 1, 12),
        (4, "kvm_fpu", 1, None),
        (5, "lost_events", 0, None),  # a count trace-cmd does not know stays null
    ]
    assert (chunk.lost_markers, chunk.lost_events) == (2, 12)
    assert chunk.instances == {"capture_x"}


def test_trace_cmd_instance_names_with_colons_and_non_ascii():
    chunk = parse(
        """
        câpture:        CPU 0/KVM-4321  [000]  5123.000100: kvm_fpu:              load
        a:b:        CPU 0/KVM-4321  [000]  5123.000101: kvm_fpu:              unload
        """,
        "trace-cmd",
    )
    assert [(r["comm"], r["pid"], r["args"]) for r in rows(chunk.events)] == [
        ("CPU 0/KVM", 4321, "load"),
        ("CPU 0/KVM", 4321, "unload"),
    ]
    assert chunk.instances == {"câpture", "a:b"}


def test_trace_cmd_detected_from_cpus_line_or_instance_prefix():
    assert detect_format(["cpus=2", "  x-1 [000] 1.0: e: a"]) == "trace-cmd"
    assert detect_format(["cap: " + "x-1".rjust(16) + " [000] 1.000000: e: a"]) == "trace-cmd"


# -- perf script ---------------------------------------------------------------------


PERF_LINE = """
       CPU 0/KVM  4321 [000]  5123.000100:            kvm:kvm_fpu: load
    """


def test_perf_script_lines():
    chunk = parse(
        """
               CPU 0/KVM  4321 [000]  5123.000100:            kvm:kvm_fpu: load
                     :-1    -1 [001]  5123.000101:            kvm:kvm_fpu: unload
                    perf  1234/1235  [000]  5123.000102:            kvm:kvm_fpu: load
                 swapper       0 [001]  5123.000103:            kvm:kvm_fpu: unload
               CPU 1/KVM 4194304 [001]  5123.000104123: kvm:kvm_userspace_exit: reason KVM_EXIT_IO (2)
        """,  # noqa: E501
        "perf-script",
    )
    assert rows(chunk.events) == [
        {"line_no": 1, "ts_ns": 5123000100000, "cpu": 0, "pid": 4321, "comm": "CPU 0/KVM",
         "event": "kvm_fpu", "args": "load", "fpu_load": True},
        # a thread perf never saw: comm ":-1", tid -1
        {"line_no": 2, "ts_ns": 5123000101000, "cpu": 1, "pid": -1, "comm": ":-1",
         "event": "kvm_fpu", "args": "unload", "fpu_load": False},
        # "-F pid,tid": the thread id is the one the events table keeps
        {"line_no": 3, "ts_ns": 5123000102000, "cpu": 0, "pid": 1235, "comm": "perf",
         "event": "kvm_fpu", "args": "load", "fpu_load": True},
        {"line_no": 4, "ts_ns": 5123000103000, "cpu": 1, "pid": 0, "comm": "swapper",
         "event": "kvm_fpu", "args": "unload", "fpu_load": False},
        {"line_no": 5, "ts_ns": 5123000104123, "cpu": 1, "pid": 4194304, "comm": "CPU 1/KVM",
         "event": "kvm_userspace_exit", "args": "reason KVM_EXIT_IO (2)",
         "exit_reason": "KVM_EXIT_IO", "exit_code": 2},
    ]
    assert detect_format(trace(PERF_LINE).splitlines()) == "perf-script"


def test_perf_script_kernel_and_plugin_sched_switch():
    chunk = parse(
        """
               CPU 0/KVM  4321 [000]  5123.000160:     sched:sched_switch: prev_comm=CPU 0/KVM prev_pid=4321 prev_prio=120 prev_state=R+ ==> next_comm=kworker/0:1 next_pid=87 next_prio=120
               CPU 0/KVM  4321 [000]  5123.000161:     sched:sched_switch: CPU 0/KVM:4321 [120] R ==> kworker/0:1:87 [120]
        """,  # noqa: E501
        "perf-script",
    )
    assert [(r["prev_comm"], r["prev_state"], r["next_comm"], r["next_pid"])
            for r in rows(chunk.events)] == [
        ("CPU 0/KVM", "R+", "kworker/0:1", 87),
        ("CPU 0/KVM", "R", "kworker/0:1", 87),
    ]


def test_perf_script_rejects_lines_of_other_outputs():
    chunk = parse(
        """
               CPU 0/KVM  4321 [000]  5123.000100:            kvm:kvm_fpu: load
        \t    ffffffff81000000 do_syscall_64+0x3b ([kernel.kallsyms])
        """,
        "perf-script",
    )
    assert [r[2] for r in rejects(chunk)] == ["not a perf-script event line"]


# -- all formats -----------------------------------------------------------------------


def test_unknown_events_keep_their_raw_args():
    chunk = parse(
        """
                vmm-main-30797   [001] .....  2194.985613: sched_migrate_task: comm=x pid=1 prio=120 orig_cpu=0 dest_cpu=1
                vmm-main-30797   [001] .....  2194.985614: tlb_flush: pages:-1 reason:remote shootdown (3)
                vmm-main-30797   [001] .....  2194.985615: empty_args:
        """,  # noqa: E501
        "tracefs",
    )
    assert [(r["event"], r.get("args")) for r in rows(chunk.events)] == [
        ("sched_migrate_task", "comm=x pid=1 prio=120 orig_cpu=0 dest_cpu=1"),
        ("tlb_flush", "pages:-1 reason:remote shootdown (3)"),
        ("empty_args", ""),
    ]


def test_event_frame_has_the_schema_and_parse_text_detects():
    events = parse_text(trace(NEW_HEADER) + trace(NEW_LINES))
    assert events.schema == EVENTS_SCHEMA
    assert events.height == 3


def test_unknown_format_name_is_an_error():
    frame, _ = split_lines(b"x\n", 1)
    with pytest.raises(ValueError, match="unknown format 'ftrace'"):
        parse_block(frame, "ftrace")
