"""Adversarial traces, each with exact, hand-computed expectations (issue #9, robustness).

Every case is a trace a kernel could print (or a stream of one), built byte
by byte with tests/adversarial_traces.py, ingested into a dataset, replayed
under the three policies, and read back only through ``queries`` (the views,
never the Parquet files) or the frames the library returns.  Each test
states what is guaranteed and checks it with exact values: the `events` and
`rejects` rows, the `runs` rows, and the operations per policy.

Traces are tracefs text as a 6.x kernel prints it (5 flag characters, 7-wide
pid).  Times are microseconds after 5123 s (``ns(us)`` is the stored
``ts_ns``); line 1 and 2 are the ``# tracer: nop`` header, so the first event
is line 3.  A is vCPU thread ``CPU 0/KVM`` (4321), K the kernel thread
``kworker/0:1`` (87), B the FPU-using user task ``fpu-user`` (5000).

Counting conventions used below (docs/replay.md): `legacy` loads the guest
at the first guest entry and puts it at every sched-out inside KVM_RUN;
`vcpu_run` swaps once at KVM_RUN entry and exit and restores eagerly at
switch-in; `deferred` restores lazily, before the next guest entry or the
return to userspace, and only if another FPU task took the registers.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

import queries
from dashboards import text
from dashboards.build import write_dashboard
from dashboards.page import plotly_js
from ingest import ingest_traces
from pipeline.orchestrate import replay_dataset
from pipeline.output import emit, printable
from tests.adversarial_traces import (
    ENTRY,
    IDLE,
    PERIOD_LINES,
    Thread,
    Tracefs,
    fpureplay_exe,
    many_threads,
    noise_period,
    noise_stream,
    ns,
    run_measured,
)
from tests.test_dashboard import parse, scripts

A = Thread(b"CPU 0/KVM", 4321)
K = Thread(b"kworker/0:1", 87)
B = Thread(b"fpu-user", 5000)

POLICIES = ("legacy", "vcpu_run", "deferred")

#: Size of the streamed trace of the bounded-memory test (bytes, whole periods).
BIG_TRACE_BYTES = 2 * 1024**3
#: Peak RSS allowed for `fpureplay ingest` on it, in KiB (ru_maxrss's unit on Linux).
BIG_TRACE_MAX_RSS_KIB = 512 * 1024
#: Distinct vCPU threads of the many-threads test.
MANY_THREADS = 10**5

#: Characters a terminal or a browser acts on: C0 (but the newline ending a
#: line of output), DEL and C1.
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")

RUN_COLUMNS = (
    "pid, run_idx, comm, start_ns, end_ns, preemptions, blocks, other_sched_outs, migrations,"
    " inferred_switch_ins, complete, cut_by_trace_start, cut_by_trace_end, cut_by_lost_events"
)


# -- helpers ----------------------------------------------------------------------------


def build(tmp_path: Path, data: bytes, name: str = "trace.txt") -> Path:
    """Ingest ``data`` as the trace file ``name``, replay all policies: the dataset."""
    trace = tmp_path / name
    trace.write_bytes(data)
    ds = tmp_path / "ds"
    ingest_traces([str(trace)], ds)
    replay_dataset(ds)
    return ds


def rows(ds: Path, sql: str) -> list[tuple]:
    """The rows of ``sql`` over the dataset's views."""
    return queries.run_sql(ds, sql).rows()


def source(ds: Path, *columns: str) -> tuple:
    """Columns of the dataset's only source (the manifest's figures, as the sources view)."""
    (row,) = rows(ds, f"SELECT {', '.join(columns)} FROM sources")
    return row


def replay_facts(ds: Path) -> dict:
    """The manifest's `replay` section of the dataset's only source."""
    (entry,) = queries.manifest(ds)["sources"]
    return entry["replay"]


def runs(ds: Path) -> list[tuple]:
    """The `runs` rows, RUN_COLUMNS, by pid and run_idx."""
    return rows(ds, f"SELECT {RUN_COLUMNS} FROM runs ORDER BY pid, run_idx")


def op_totals(ds: Path) -> dict[str, tuple[int, int]]:
    """Per policy: (operations, redundant operations)."""
    got = rows(
        ds,
        "SELECT policy, count(*), count(*) FILTER (WHERE redundant) FROM fpu_ops GROUP BY policy",
    )
    return {policy: (n, red) for policy, n, red in got}


def ops(ds: Path, policy: str) -> list[tuple]:
    """One policy's operations: (run_idx or -1, line_no, op, context, site, redundant).

    In line order; the operations of one line (a swap is a save and a
    restore) saves first.
    """
    return rows(
        ds,
        "SELECT coalesce(run_idx, -1), line_no, op, context, site, redundant FROM fpu_ops"
        f" WHERE policy = '{policy}' ORDER BY line_no, op DESC, context",
    )


# -- task names -------------------------------------------------------------------------

#: Task names as the kernel holds them (raw bytes, at most 15), and as `events` stores them.
NAMES = [
    (b"<i>\"'&amp;</i>", "<i>\"'&amp;</i>"),  # markup, quotes, an entity
    ("été-€".encode(), "été-€"),  # UTF-8, 9 bytes for 5 characters
    (b"bad\xff\xfe", "bad\ufffd\ufffd"),  # not UTF-8: each bad byte becomes U+FFFD
    # "ab€€€€€" cut at 15 bytes by the kernel, in the middle of the last €
    (b"ab" + "€".encode() * 4 + b"\xe2", "ab€€€€\ufffd"),
    (b"\x1b[2J\x1b]0;pwn\x07", "\x1b[2J\x1b]0;pwn\x07"),  # clear screen, set window title
    (b"tab\there", "tab\there"),
]


def hostile_names_trace() -> bytes:
    """Thread i (pid 4321 + i, named NAMES[i]) runs once on CPU 0, 10 µs apart.

    Per thread, 7 lines: idle switches to it, load, guest entry and exit,
    unload, kvm_userspace_exit, and it blocks (S) back to idle.
    """
    t = Tracefs()
    for i, (raw, _) in enumerate(NAMES):
        v, us = Thread(raw, 4321 + i), 100 + 10 * i
        t.switch(us, 0, IDLE, "R", v)
        t.load(us + 1, v, 0)
        t.enter(us + 2, v, 0, b"IO_INSTRUCTION")
        t.unload(us + 4, v, 0)
        t.uexit(us + 5, v, 0)
        t.switch(us + 6, 0, v, "S", IDLE)
    return t.data()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("hostile"), hostile_names_trace())


def test_task_names_are_stored_exactly(hostile):
    """Any name the kernel can hold is one event's comm, exactly, U+FFFD for bytes not UTF-8."""
    names = [name for _, name in NAMES]
    # 2 header lines + 6 x 7 events; 7 lines of each of the two non-UTF-8 names
    assert source(hostile, "lines", "events", "rejects", "invalid_utf8_lines") == (44, 42, 0, 14)
    assert rows(hostile, "SELECT count(*) FROM rejects") == [(0,)]
    # the task column of each thread's 6 own lines
    assert rows(
        hostile, "SELECT pid, comm, count(*) FROM events WHERE pid > 0 GROUP BY ALL ORDER BY pid"
    ) == [(4321 + i, name, 6) for i, name in enumerate(names)]
    # the sched_switch bodies: idle's switch to the thread, the thread's own switch out
    assert rows(
        hostile, "SELECT next_comm FROM events WHERE event = 'sched_switch' AND pid = 0"
        " ORDER BY line_no"
    ) == [(name,) for name in names]  # fmt: skip
    assert rows(
        hostile, "SELECT prev_comm, prev_state FROM events WHERE event = 'sched_switch'"
        " AND pid > 0 ORDER BY line_no"
    ) == [(name, "S") for name in names]  # fmt: skip
    assert rows(hostile, "SELECT DISTINCT comm FROM events WHERE pid = 0") == [("<idle>",)]
    # one complete run each, named as its kvm lines name it
    assert rows(
        hostile, "SELECT pid, comm, preemptions, blocks, complete FROM runs ORDER BY pid"
    ) == [(4321 + i, name, 0, 0, True) for i, name in enumerate(names)]
    # Per thread, every policy: a restore of its user state at switch-in (the
    # previous thread had the registers), the KVM_RUN swap in (2) and out (2),
    # the save at its switch-out: 6, none redundant.
    assert op_totals(hostile) == {p: (36, 0) for p in POLICIES}
    assert rows(
        hostile, "SELECT policy, pid, count(*) FROM fpu_ops GROUP BY ALL ORDER BY policy, pid"
    ) == [(p, 4321 + i, 6) for p in sorted(POLICIES) for i in range(len(NAMES))]


def test_table_output_shows_control_characters_as_escapes(hostile, runner):
    """`fpureplay query` tables never send a control character to the terminal."""
    out = runner("query", str(hostile), "vcpu_summary")
    assert out.exit_code == 0, out.stderr
    assert CONTROL.search(out.stdout) is None
    shown = out.stdout
    for _, name in NAMES:
        # 3 rows (one per policy), each showing the name with its controls escaped
        assert shown.count(printable(name)) == 3, name
    assert printable("\x1b[2J\x1b]0;pwn\x07") == "\\x1b[2J\\x1b]0;pwn\\x07"
    assert printable("tab\there") == "tab\\there"
    # markup is text: the name is printed as it is
    assert "<i>\"'&amp;</i>" in shown
    # JSON (for programs) carries the exact names
    out = runner("query", str(hostile), "vcpu_summary", "--format", "json")
    got = {(r["policy"], r["comm"]) for r in json.loads(out.stdout)}
    assert got == {(p, name) for p in POLICIES for _, name in NAMES}


def test_emit_escapes_every_control_character():
    """The table printer escapes C0, DEL and C1 (0x9b is a one-byte CSI), not other text."""
    import io

    buf = io.StringIO()
    row = {"comm": "a\nb\r\x1b[31m\x7f\x9b2J\x00é\ufffd[bold]x", "n": 1}
    emit([row], "table", title="t\x1b", file=buf)
    assert CONTROL.search(buf.getvalue()) is None
    assert "a\\nb\\r\\x1b[31m\\x7f\\x9b2J\\x00é\ufffd[bold]x" in buf.getvalue()
    assert "t\\x1b" in buf.getvalue()
    buf = io.StringIO()
    emit([row], "csv", file=buf)  # CSV is data: the exact text, quoted
    assert buf.getvalue() == 'comm,n\n"a\nb\r\x1b[31m\x7f\x9b2J\x00é\ufffd[bold]x",1\n'


def test_dashboard_shows_names_as_text(hostile, tmp_path):
    """The HTML report: names escaped in tables and labels, exact in its manifest JSON."""
    html_path = tmp_path / "report.html"
    write_dashboard(hostile, html_path)
    html = html_path.read_text(encoding="utf-8")
    page = html.replace(plotly_js(), "")
    assert CONTROL.search(page) is None  # not even inside the JSON: \u001b there
    tags = parse(page)
    assert [t for t, _ in tags.tags if t == "i"] == []
    vcpu_rows = html.split('id="vcpu-table"', 1)[1].split("</table>", 1)[0]
    for _, name in NAMES:
        assert vcpu_rows.count(f"<td>{text.html_text(name)}</td>") == 3, name
    assert text.html_text(NAMES[0][1]) == "&lt;i&gt;&quot;&#x27;&amp;amp;&lt;/i&gt;"
    assert text.html_text(NAMES[4][1]) == "\\x1b[2J\\x1b]0;pwn\\x07"
    # the embedded manifest is the data: exact names
    vcpus = scripts(html)["manifest"]["sources"][0]["replay"]["vcpu_threads"]
    assert [v["comm"] for v in vcpus] == [name for _, name in NAMES]


def test_newline_in_a_task_name_splits_its_lines(tmp_path):
    """A comm with a newline is printed raw, so its lines are cut in two (or three).

    Recorded on this host (6.18, tracefs, sched_switch, comm set with
    prctl(PR_SET_NAME)): the kernel prints ``task->comm`` with ``%s`` both in
    the task column (``%16s``, from saved_cmdlines) and in event bodies
    (``prev_comm=%s``), so a newline ends the physical line there.  Nothing
    is joined back: the part before the newline is a reject; a part that
    starts with ``-PID [CPU]`` is the event, with the comm's last piece as
    its comm (``KVM``; empty for a name ending in a newline); a body cut
    after ``prev_comm=``/``next_comm=`` is a reject, and so is its tail.
    Every physical line is accounted for, and the lost sched_switch lines
    are visible as rejects; the replay infers the switch it needs.
    """
    v = Thread(b"CPU 0\nKVM", 4321)  # 9 bytes: 7 blanks of padding
    w = Thread(b"vcpu\n", 4322)  # 5 bytes: ends with the newline
    t = Tracefs()
    t.load(100, v, 0)
    t.enter(102, v, 0, b"HLT")
    t.switch(104, 0, v, "R+", K)
    t.switch(106, 0, K, "I", v)
    t.line(108, v, 0, ENTRY, b"d..1.")
    t.unload(110, v, 0)
    t.uexit(112, v, 0)
    t.switch(114, 0, v, "S", w)
    t.load(116, w, 0)
    t.unload(118, w, 0)
    t.uexit(120, w, 0, b"KVM_EXIT_MMIO (6)")
    data = t.data()
    lines = data.split(b"\n")
    assert lines[2:4] == [
        b"       CPU 0",
        b"KVM-4321    [000] .....  5123.000100: kvm_fpu: load",
    ]
    assert lines[19:23] == [  # the switch from v to w: one kernel line, four physical ones
        b"       CPU 0",
        b"KVM-4321    [000] d..2.  5123.000114: sched_switch: prev_comm=CPU 0",
        b"KVM prev_pid=4321 prev_prio=120 prev_state=S ==> next_comm=vcpu",
        b" next_pid=4322 next_prio=120",
    ]
    ds = build(tmp_path, data)
    assert source(ds, "lines", "events", "rejects", "meta_lines") == (29, 9, 18, 2)
    assert rows(ds, "SELECT line_no, ts_ns, pid, comm, event FROM events ORDER BY line_no") == [
        (4, ns(100), 4321, "KVM", "kvm_fpu"),
        (6, ns(102), 4321, "KVM", "kvm_entry"),
        (8, ns(103), 4321, "KVM", "kvm_exit"),
        (15, ns(108), 4321, "KVM", "kvm_entry"),
        (17, ns(110), 4321, "KVM", "kvm_fpu"),
        (19, ns(112), 4321, "KVM", "kvm_userspace_exit"),
        (25, ns(116), 4322, "", "kvm_fpu"),
        (27, ns(118), 4322, "", "kvm_fpu"),
        (29, ns(120), 4322, "", "kvm_userspace_exit"),
    ]
    bad_args = "sched_switch: arguments match no known format of this event"
    not_event = "not a tracefs event line"
    assert rows(ds, "SELECT line_no, reason FROM rejects ORDER BY line_no") == [
        (3, not_event), (5, not_event), (7, not_event),
        (9, not_event), (10, bad_args), (11, not_event),  # v's switch to K
        (12, bad_args), (13, not_event),  # K's switch back to v (only the body is cut)
        (14, not_event), (16, not_event), (18, not_event),
        (20, not_event), (21, bad_args), (22, not_event), (23, not_event),  # v to w
        (24, not_event), (26, not_event), (28, not_event),
    ]  # fmt: skip
    # rejects keep the exact bytes of their line
    assert rows(ds, "SELECT raw FROM rejects WHERE line_no IN (3, 24) ORDER BY line_no") == [
        (b"       CPU 0",),
        (b"           vcpu",),
    ]
    # No sched_switch of v survived: its preemption by K is not seen (the
    # run looks uninterrupted) and w's arrival is an inferred switch-in.
    assert runs(ds) == [
        (4321, 0, "KVM", ns(100), ns(112), 0, 0, 0, 0, 0, True, False, False, False),
        (4322, 0, "", ns(116), ns(120), 0, 0, 0, 0, 0, True, False, False, False),
    ]
    assert source(ds, "inferred_switch_ins") == (1,)
    # v: the swap in and out (4), saved at the inferred switch-out (1); w:
    # restored at its switch-in (1), then a swap in and out that never enters
    # the guest (legacy: nothing; others 4, the guest restore and save redundant).
    assert op_totals(ds) == {"legacy": (6, 0), "vcpu_run": (10, 2), "deferred": (10, 2)}


# -- task lifetimes -------------------------------------------------------------------


def test_pid_reused_by_a_new_vcpu_thread(tmp_path):
    """A pid whose thread exited (prev_state X) and is reused is a new task: its own runs.

    A (CPU 0/KVM, 4321) runs once on CPU 0 and exits; a thread of another VM
    gets pid 4321 (CPU 1/KVM) and runs on CPU 1, preempted once by K.  The
    runs continue the pid's run_idx; queries that group by pid (vcpu_summary)
    add the two lives together.
    """
    n = Thread(b"CPU 1/KVM", 4321)
    k1 = Thread(b"kworker/1:1", 88)
    t = Tracefs()
    t.load(100, A, 0)  # line 3
    t.enter(102, A, 0, b"IO_INSTRUCTION")
    t.unload(104, A, 0)
    t.uexit(106, A, 0)
    t.switch(108, 0, A, "X", IDLE)  # line 8: A exits
    t.switch(110, 1, IDLE, "R", n)  # line 9: the new thread with the same pid
    t.load(112, n, 1)
    t.enter(114, n, 1)
    t.switch(116, 1, n, "R+", k1)  # line 13
    t.switch(118, 1, k1, "I", n)
    t.enter(120, n, 1, b"IO_INSTRUCTION")
    t.unload(122, n, 1)  # line 17
    t.uexit(124, n, 1)
    t.switch(126, 1, n, "S", IDLE)  # line 19
    ds = build(tmp_path, t.data())
    assert source(ds, "events", "rejects", "vcpu_threads") == (17, 0, [4321])
    assert runs(ds) == [
        (4321, 0, "CPU 0/KVM", ns(100), ns(106), 0, 0, 0, 0, 0, True, False, False, False),
        (4321, 1, "CPU 1/KVM", ns(112), ns(124), 1, 0, 0, 0, 0, True, False, False, False),
    ]
    vcpus = replay_facts(ds)["vcpu_threads"]
    assert [(v["pid"], v["comm"], v["runs"]) for v in vcpus] == [
        (4321, "CPU 0/KVM", 2),  # `runs` counts per pid
        (4321, "CPU 1/KVM", 2),
    ]
    # A: swap in and out (4), its user state saved at its exit (1).  The new
    # thread: restored at switch-in (1), swap in (2), preempted by a kernel
    # thread (vcpu_run/deferred: save the guest, nothing to restore: 1;
    # legacy: the notifier's put, the save, and a reload at the next entry: 5,
    # 3 redundant), swap out (2), saved when it blocks (1).
    assert op_totals(ds) == {"legacy": (16, 3), "vcpu_run": (12, 0), "deferred": (12, 0)}
    assert rows(
        ds, "SELECT coalesce(run_idx, -1), count(*) FROM fpu_ops WHERE policy = 'deferred'"
        " GROUP BY ALL ORDER BY 1"
    ) == [(-1, 3), (0, 4), (1, 5)]  # fmt: skip
    assert ops(ds, "deferred") == [
        (0, 3, "save", "user", "KVM-load", False),
        (0, 3, "restore", "guest", "KVM-load", False),
        (0, 6, "save", "guest", "KVM-put", False),
        (0, 6, "restore", "user", "KVM-put", False),
        (-1, 8, "save", "user", "CS-out", False),  # A's last switch (exit)
        (-1, 9, "restore", "user", "DEFER", False),  # the new thread returns to userspace
        (1, 10, "save", "user", "KVM-load", False),
        (1, 10, "restore", "guest", "KVM-load", False),
        (1, 13, "save", "guest", "CS-out", False),
        (1, 17, "save", "guest", "KVM-put", False),
        (1, 17, "restore", "user", "KVM-put", False),
        (-1, 19, "save", "user", "CS-out", False),
    ]
    summary = queries.run(ds, "vcpu_summary").select("policy", "pid", "comm", "kvm_runs", "ops")
    assert summary.rows() == [
        ("legacy", 4321, "CPU 1/KVM", 2, 16),
        ("vcpu_run", 4321, "CPU 1/KVM", 2, 12),
        ("deferred", 4321, "CPU 1/KVM", 2, 12),
    ]


def test_vcpu_thread_exiting_inside_kvm_run(tmp_path):
    """A thread that exits (X) inside KVM_RUN ends its run there, incomplete.

    A thread cannot exit inside the ioctl (it returns first, logging its
    unload and kvm_userspace_exit), so those lines are missing: the run ends
    at the exit with complete = false (cut_by_trace_end: its end was not
    seen), and no put is replayed.  A lost-events marker on the same CPU
    after the exit does not touch the finished run.
    """
    t = Tracefs()
    t.load(100, A, 0)  # line 3
    t.enter(102, A, 0, b"HLT")
    t.switch(104, 0, A, "R+", B)  # line 6
    t.switch(106, 0, B, "R+", A)
    t.enter(108, A, 0)  # line 8
    t.switch(110, 0, A, "X", IDLE)  # line 10: exits, still inside KVM_RUN
    t.switch(112, 0, IDLE, "R", B)
    t.lost(0, 5)  # line 12
    t.wakeup(114, 0, B, Thread(b"rcu_preempt", 15))
    t.switch(116, 0, B, "S", IDLE)
    ds = build(tmp_path, t.data())
    assert source(ds, "events", "lost_markers", "lost_events") == (12, 1, 5)
    assert runs(ds) == [
        # preempted by B once; the exit is a sched-out of another kind
        (4321, 0, "CPU 0/KVM", ns(100), ns(110), 1, 0, 1, 0, 0, False, False, True, False),
    ]
    # vcpu_run: swap in (2), save at B's preemption (1), eager restore when A
    # comes back (B took the registers) (1), save at the exit (1).
    # deferred: the same, the restore deferred to the next guest entry.
    # legacy: the first entry's load (2); at each sched-out the notifier's
    # put and the save (3); the restore of A's user state at its return (1)
    # and the reload of the guest at the next entry (2): 11, 6 redundant.
    assert op_totals(ds) == {"legacy": (11, 6), "vcpu_run": (5, 0), "deferred": (5, 0)}
    assert ops(ds, "deferred") == [
        (0, 3, "save", "user", "KVM-load", False),
        (0, 3, "restore", "guest", "KVM-load", False),
        (0, 6, "save", "guest", "CS-out", False),
        (0, 8, "restore", "guest", "DEFER", False),
        (0, 10, "save", "guest", "CS-out", False),
    ]
    assert any("cut where their thread exited" in n for n in replay_facts(ds)["notes"])


# -- the clock ---------------------------------------------------------------------------


def test_timestamps_going_back_on_one_cpu(tmp_path):
    """A CPU's clock steps back: its lines keep their file order, timed at the latest before.

    Ingest keeps the stamps as printed and counts the step (ts_backwards).
    The replay trusts each CPU's file order (its ring buffer's order): a
    stamp that steps back is raised to the latest one before it on its CPU.
    Here CPU 0's clock goes back 20 µs after A's preemption; ordering by the
    raw stamps would have put K's switch back to A, A's entry, unload and
    kvm_userspace_exit before A's load (two incomplete runs); in file order
    it is example (ii) of the reference with one preemption.
    """
    t = Tracefs()
    t.load(100, A, 0)  # line 3
    t.enter(102, A, 0)
    t.switch(104, 0, A, "R+", K)  # line 6
    t.skew[0] = -20  # CPU 0's clock steps back
    t.switch(106, 0, K, "I", A)  # line 7, stamped 86
    t.enter(108, A, 0, b"IO_INSTRUCTION")  # 88, 89
    t.unload(110, A, 0)  # line 10, stamped 90
    t.uexit(112, A, 0)  # line 11, stamped 92
    ds = build(tmp_path, t.data())
    assert source(ds, "events", "ts_backwards") == (9, 1)
    assert rows(ds, "SELECT line_no, ts_ns FROM events WHERE line_no >= 6 ORDER BY line_no") == [
        (6, ns(104)), (7, ns(86)), (8, ns(88)), (9, ns(89)), (10, ns(90)), (11, ns(92)),
    ]  # fmt: skip
    assert runs(ds) == [
        (4321, 0, "CPU 0/KVM", ns(100), ns(104), 1, 0, 0, 0, 0, True, False, False, False),
    ]
    # example (ii), P = 1: legacy 4 + 5P (3 redundant), vcpu_run and deferred 4 + P
    assert op_totals(ds) == {"legacy": (9, 3), "vcpu_run": (5, 0), "deferred": (5, 0)}
    # the put is timed at the raised stamp of the unload, 104 µs
    assert rows(
        ds, "SELECT line_no, op, context, site, ts_ns FROM fpu_ops WHERE policy = 'deferred'"
        " ORDER BY line_no, op DESC"
    ) == [
        (3, "save", "user", "KVM-load", ns(100)),
        (3, "restore", "guest", "KVM-load", ns(100)),
        (6, "save", "guest", "CS-out", ns(104)),
        (10, "save", "guest", "KVM-put", ns(104)),
        (10, "restore", "user", "KVM-put", ns(104)),
    ]  # fmt: skip


def test_timestamp_beyond_int64_takes_its_cpus_previous_time(tmp_path):
    """A timestamp too large for int64 ns is null in `events`; the replay places it in file order.

    Ingest stores null rather than a wrapped value; the replay takes the
    latest time before it on its CPU, so the line keeps its place (the
    replay used to fail on it with a TypeError).
    """
    t = Tracefs()
    t.load(100, A, 0)  # line 3
    t.enter(102, A, 0, b"IO_INSTRUCTION")  # line 4, restamped below; exit at 103
    t.unload(104, A, 0)  # line 6
    t.uexit(106, A, 0)
    data = t.data().replace(b" 5123.000102: kvm_entry", b" 99999999999.000102: kvm_entry")
    ds = build(tmp_path, data)
    assert rows(ds, "SELECT line_no, ts_ns, event FROM events ORDER BY line_no") == [
        (3, ns(100), "kvm_fpu"),
        (4, None, "kvm_entry"),
        (5, ns(103), "kvm_exit"),
        (6, ns(104), "kvm_fpu"),
        (7, ns(106), "kvm_userspace_exit"),
    ]
    assert runs(ds) == [
        (4321, 0, "CPU 0/KVM", ns(100), ns(106), 0, 0, 0, 0, 0, True, False, False, False),
    ]
    assert op_totals(ds) == {p: (4, 0) for p in POLICIES}
    # legacy loads the guest at that entry: timed as the line before it on CPU 0
    assert rows(
        ds, "SELECT line_no, ts_ns, op, context FROM fpu_ops WHERE policy = 'legacy'"
        " AND site = 'KVM-load' ORDER BY op DESC"
    ) == [(4, ns(100), "save", "user"), (4, ns(100), "restore", "guest")]  # fmt: skip


def skewed_migration(skew_us: int) -> bytes:
    """A, preempted by B on CPU 0, resumes on CPU 1 10 µs later; CPU 1's clock is off by skew.

    True times: CPU 1 idle (100); A loads (102), enters (104/105) and is
    preempted by B on CPU 0 (106); idle switches to A on CPU 1 (116); A
    enters (118/119), unloads (120), returns to the VMM (122) and blocks
    (124); B blocks on CPU 0 (130).  The file merges the CPUs by stamp, as
    the kernel's iterator does.
    """
    t = Tracefs(skew={1: skew_us})
    t.switch(100, 1, IDLE, "R", IDLE)
    t.load(102, A, 0)
    t.enter(104, A, 0)
    t.switch(106, 0, A, "R+", B)
    t.switch(116, 1, IDLE, "R", A)
    t.enter(118, A, 1, b"IO_INSTRUCTION")
    t.unload(120, A, 1)
    t.uexit(122, A, 1)
    t.switch(124, 1, A, "S", IDLE)
    t.switch(130, 0, B, "S", IDLE)
    return t.data(merged=True)


@pytest.mark.parametrize("skew_us", [0, -3, -11])
def test_clock_skew_between_cpus_within_a_migration(tmp_path, skew_us):
    """Skew that only reorders a migration's two switches changes nothing.

    With CPU 1 3 µs behind, the merged order is the true one.  11 µs behind,
    A's switch-in on CPU 1 is stamped (105) before its switch-out on CPU 0
    (106): the replay first infers that A left CPU 0, then finds A's own
    logged switch-out there with nothing else on CPU 0 in between, and takes
    it as the late-stamped original of that inferred switch (its state R+,
    its line) instead of bringing A back to CPU 0 for a round trip.
    """
    ds = build(tmp_path, skewed_migration(skew_us))
    assert source(ds, "events", "ts_backwards", "inferred_switch_ins") == (12, 0, 0)
    end = 122 + skew_us  # A's kvm_userspace_exit, on CPU 1
    assert runs(ds) == [
        (4321, 0, "CPU 0/KVM", ns(102), ns(end), 1, 0, 0, 1, 0, True, False, False, False),
    ]
    # B blocks without returning to userspace (heuristic), so it never takes
    # CPU 0's registers.  legacy: load at the first entry (2), the
    # notifier's put and the save at the preemption (3), the restore of the
    # user state on CPU 1 (1) and the reload at the next entry (2), the put
    # (2), the save when A blocks (1): 11, 4 redundant.  vcpu_run: swap in
    # (2), save at the preemption (1), restore on CPU 1 (1), swap out (2),
    # save when A blocks (1): 7; deferred the same, the restore at the entry.
    assert op_totals(ds) == {"legacy": (11, 4), "vcpu_run": (7, 0), "deferred": (7, 0)}
    # the save at the preemption is caused by the logged sched_switch on CPU 0
    (line,) = rows(ds, "SELECT line_no FROM events WHERE event = 'sched_switch' AND cpu = 0"
                   " AND prev_pid = 4321")[0]  # fmt: skip
    assert rows(ds, "SELECT line_no, cpu FROM fpu_ops WHERE policy = 'vcpu_run'"
                " AND site = 'CS-out' AND context = 'guest'") == [(line, 0)]  # fmt: skip


def test_clock_skew_beyond_a_migration_shows_as_inferred_switches(tmp_path):
    """Skew larger than that reorders A's own lines: the replay infers switches, and says so.

    CPU 1 13 µs behind: A's switch-in on CPU 1 (stamped 103) comes before
    its guest entry on CPU 0 (104), and its entry on CPU 1 (105) before its
    switch-out on CPU 0 (106).  A task is on one CPU at a time, so the
    replay moves A 0 -> 1 (logged) -> 0 (its entry on CPU 0: an inferred
    switch-in) -> 1 (its entry on CPU 1: another); the logged switch-out on
    CPU 0 then merges with the inferred one.  The run counts 3 migrations,
    2 inferred switch-ins and 2 sched-outs of unknown kind, and the
    round trips cost the eager policies a restore and a save each.
    """
    ds = build(tmp_path, skewed_migration(-13))
    assert source(ds, "events", "inferred_switch_ins") == (12, 2)
    assert runs(ds) == [
        (4321, 0, "CPU 0/KVM", ns(102), ns(109), 1, 0, 2, 3, 2, True, False, False, False),
    ]
    # vcpu_run: swap in (2); out of 0 (save) and in on 1 (restore) before the
    # guest ran: both redundant, and so are the save and restore of the
    # round trip to 1 and back; in on 0 (restore), the guest runs; out of 0
    # at the preemption (save); in on 1 (restore); swap out (2); blocks (1).
    assert op_totals(ds) == {"legacy": (15, 8), "vcpu_run": (11, 4), "deferred": (8, 2)}
    assert ops(ds, "vcpu_run") == [
        (0, 4, "save", "user", "KVM-load", False),
        (0, 4, "restore", "guest", "KVM-load", True),
        (0, 5, "save", "guest", "CS-out", True),
        (0, 5, "restore", "guest", "CS-in", True),
        (0, 6, "save", "guest", "CS-out", True),
        (0, 6, "restore", "guest", "CS-in", False),
        (0, 8, "restore", "guest", "CS-in", False),
        (0, 9, "save", "guest", "CS-out", False),
        (0, 11, "save", "guest", "KVM-put", False),
        (0, 11, "restore", "user", "KVM-put", False),
        (-1, 13, "save", "user", "CS-out", False),
    ]


# -- trace edges and gaps ---------------------------------------------------------------


def test_trace_starting_inside_a_run(tmp_path):
    """A run in progress when the trace starts is complete = false, from the first timestamp.

    The trace starts with K switching to A, which is inside KVM_RUN
    (preempted before the trace began): its first kvm line is a guest entry.
    A then finishes that run and does a whole one.
    """
    t = Tracefs()
    t.switch(100, 0, K, "I", A)  # line 3
    t.enter(102, A, 0, b"IO_INSTRUCTION")
    t.unload(104, A, 0)  # line 6
    t.uexit(106, A, 0)
    t.load(108, A, 0)  # line 8
    t.enter(110, A, 0, b"IO_INSTRUCTION")
    t.unload(112, A, 0)
    t.uexit(114, A, 0)
    ds = build(tmp_path, t.data())
    assert rows(ds, "SELECT pid, run_idx, cpu_start FROM runs ORDER BY run_idx") == [
        (4321, 0, None),  # off-CPU when the trace starts: where it started is unknown
        (4321, 1, 0),
    ]
    assert runs(ds) == [
        (4321, 0, "CPU 0/KVM", ns(100), ns(106), 0, 0, 0, 0, 0, False, True, False, False),
        (4321, 1, "CPU 0/KVM", ns(108), ns(114), 0, 0, 0, 0, 0, True, False, False, False),
    ]
    facts = replay_facts(ds)
    assert facts["vcpu_threads"][0]["in_run_at_start"] is True
    # run 0, guest taken as loaded (legacy: put by the notifier at the unseen
    # sched-out): vcpu_run restores it eagerly at the switch-in (1),
    # deferred before the entry (1), legacy restores the user state (1) and
    # reloads the guest at the entry (2, the restore and that save redundant);
    # then the put (2).  Run 1: 4 each.
    assert op_totals(ds) == {"legacy": (9, 2), "vcpu_run": (7, 0), "deferred": (7, 0)}
    assert facts["ops_from_incomplete_runs"] == {"legacy": 5, "vcpu_run": 3, "deferred": 3}


def test_trace_ending_inside_a_run(tmp_path):
    """A run still open at the trace's end is complete = false, up to the last timestamp.

    A does a whole run, then a second one in which B preempts it once; the
    trace ends after A's next guest entry.
    """
    t = Tracefs()
    t.load(100, A, 0)
    t.enter(102, A, 0, b"IO_INSTRUCTION")
    t.unload(104, A, 0)
    t.uexit(106, A, 0)
    t.load(108, A, 0)  # line 8
    t.enter(110, A, 0)
    t.switch(112, 0, A, "R+", B)
    t.switch(114, 0, B, "R+", A)
    t.enter(116, A, 0)  # the last line: kvm_exit at 117
    ds = build(tmp_path, t.data())
    assert runs(ds) == [
        (4321, 0, "CPU 0/KVM", ns(100), ns(106), 0, 0, 0, 0, 0, True, False, False, False),
        (4321, 1, "CPU 0/KVM", ns(108), ns(117), 1, 0, 0, 0, 0, False, False, True, False),
    ]
    # run 0: 4 each.  Run 1: swap in (legacy: at the entry) (2); B (which
    # returns to userspace) takes the registers: vcpu_run/deferred save the
    # guest (1) and restore it (1); legacy puts, saves (3), restores the user
    # state (1) and reloads at the entry (2), 4 of them redundant.
    assert op_totals(ds) == {"legacy": (12, 4), "vcpu_run": (8, 0), "deferred": (8, 0)}
    assert replay_facts(ds)["ops_from_incomplete_runs"] == {
        "legacy": 8,
        "vcpu_run": 4,
        "deferred": 4,
    }


def test_lost_events_in_the_middle_of_runs(tmp_path):
    """Lost-events markers make the runs they may have cut incomplete, and only those.

    Run 0: a marker on A's CPU while A is on it: incomplete.  Run 1: a
    marker on CPU 1 while A has only been on CPU 0 (it migrates to CPU 1
    afterwards): complete.  Runs 2 and 3: the gap swallowed run 2's unload
    and kvm_userspace_exit; the next load, with the guest still loaded, shows
    that run 2 ended (a >= 4.15 kernel alternates load and unload): run 2 is
    cut there (incomplete; its put is replayed there) and run 3 is complete.
    """
    t = Tracefs()
    t.switch(100, 1, IDLE, "R", IDLE)  # line 3: CPU 1 idle
    t.load(102, A, 0)
    t.enter(104, A, 0)
    t.lost(0, 3)  # line 7
    t.enter(106, A, 0)
    t.unload(108, A, 0)
    t.uexit(110, A, 0)  # line 11
    t.load(112, A, 0)  # line 12: run 1
    t.enter(114, A, 0)
    t.lost(1, 2)  # line 15
    t.switch(116, 0, A, "R+", K)
    t.switch(118, 1, IDLE, "R", A)  # line 17: A migrates to CPU 1
    t.enter(120, A, 1, b"IO_INSTRUCTION")
    t.unload(122, A, 1)
    t.uexit(124, A, 1)  # line 21
    t.load(126, A, 1)  # line 22: run 2
    t.enter(128, A, 1, b"IO_INSTRUCTION")
    t.lost(1, 4)  # line 25
    t.load(134, A, 1)  # line 26: run 3
    t.enter(136, A, 1, b"IO_INSTRUCTION")
    t.unload(138, A, 1)  # line 29
    t.uexit(140, A, 1)
    ds = build(tmp_path, t.data())
    assert source(ds, "events", "lost_markers", "lost_events") == (28, 3, 9)
    # a marker is an event on its CPU, timed at the line that follows it
    assert rows(
        ds, "SELECT line_no, cpu, ts_ns, lost_count FROM events WHERE event = 'lost_events'"
        " ORDER BY line_no"
    ) == [(7, 0, ns(106), 3), (15, 1, ns(116), 2), (25, 1, ns(134), 4)]  # fmt: skip
    assert runs(ds) == [
        (4321, 0, "CPU 0/KVM", ns(102), ns(110), 0, 0, 0, 0, 0, False, False, False, True),
        (4321, 1, "CPU 0/KVM", ns(112), ns(124), 1, 0, 0, 1, 0, True, False, False, False),
        (4321, 2, "CPU 0/KVM", ns(126), ns(134), 0, 0, 0, 0, 0, False, False, True, True),
        (4321, 3, "CPU 0/KVM", ns(134), ns(140), 0, 0, 0, 0, 0, True, False, False, False),
    ]
    # runs 0, 2, 3: 4 each; run 1, preempted by K and resumed on CPU 1:
    # vcpu_run/deferred 4 + save + restore = 6; legacy 4 + put, save,
    # restore of the user state and reload = 10 (4 redundant).
    assert op_totals(ds) == {"legacy": (22, 4), "vcpu_run": (18, 0), "deferred": (18, 0)}
    assert replay_facts(ds)["ops_from_incomplete_runs"] == {p: 8 for p in POLICIES}
    # run 2's put, replayed at run 3's load, belongs to run 2
    assert [op for op in ops(ds, "deferred") if op[1] == 26] == [
        (2, 26, "save", "guest", "KVM-put", False),
        (3, 26, "save", "user", "KVM-load", False),
        (3, 26, "restore", "guest", "KVM-load", False),
        (2, 26, "restore", "user", "KVM-put", False),
    ]


# -- scale ----------------------------------------------------------------------------------


def test_many_distinct_threads(tmp_path):
    """10**5 distinct vCPU threads: exact per-thread results, in time linear in the trace.

    Thread i (pid 100000 + i) is switched in on CPU 0 by thread i - 1, loads,
    unloads, returns to the VMM and blocks.  Every policy performs, per
    thread, a user restore at its switch-in, the KVM_RUN swap in and out and
    a user save at its switch-out, none redundant (entries are synthesised:
    legacy loads at the synthesised entry).
    """
    n = MANY_THREADS
    trace = tmp_path / "many.txt"
    trace.write_bytes(many_threads(n))
    ds = tmp_path / "ds"
    started = time.monotonic()
    ingest_traces([str(trace)], ds)
    assert source(ds, "lines", "events", "rejects") == (4 * n + 3, 4 * n + 1, 0)
    (vcpus,) = source(ds, "vcpu_threads")
    assert vcpus == list(range(100_000, 100_000 + n))
    # The whole replay, as `fpureplay replay` runs it: validation and the
    # audit included (validation alone once took 27 s here, one filter per
    # thread; it now counts per thread with one group_by).
    replay_dataset(ds)
    elapsed = time.monotonic() - started
    assert rows(
        ds, "SELECT count(*), count(DISTINCT pid), count(*) FILTER (WHERE complete),"
        " sum(preemptions), sum(blocks) FROM runs"
    ) == [(n, n, n, 0, 0)]  # fmt: skip
    facts = replay_facts(ds)
    assert facts["inferred_switch_ins"] == 0 and len(facts["vcpu_threads"]) == n
    assert facts["validation"]["ok"] is True
    assert rows(
        ds, "SELECT \"check\", count(*), sum(difference) FROM validation GROUP BY ALL ORDER BY ALL"
    ) == [("kvm_fpu_load", n, 0), ("kvm_fpu_unload", n, 0)]  # fmt: skip
    counts = queries.run_sql(
        ds,
        "SELECT policy, op, context, site, count(*) AS len, sum(redundant::INT) AS redundant"
        " FROM fpu_ops GROUP BY ALL ORDER BY policy, op, context, site",
    )
    site_in = {"legacy": "CS-in", "vcpu_run": "CS-in", "deferred": "DEFER"}
    assert counts.rows() == [
        row
        for p in sorted(POLICIES)
        for row in sorted(
            [
                (p, "restore", "guest", "KVM-load", n, 0),
                (p, "restore", "user", site_in[p], n, 0),
                (p, "restore", "user", "KVM-put", n, 0),
                (p, "save", "guest", "KVM-put", n, 0),
                (p, "save", "user", "CS-out", n, 0),
                (p, "save", "user", "KVM-load", n, 0),
            ]
        )
    ]
    # Linear: ~15 s here on a 2-core machine; a per-thread scan of all
    # threads (quadratic) would take hours.
    assert elapsed < 120, elapsed


def test_two_gigabytes_of_noise_ingested_in_bounded_memory(tmp_path):
    """BIG_TRACE_BYTES of wakeups and irqs, streamed to `fpureplay ingest -`: exact counts.

    The trace is generated as it is written to the child's stdin (never on
    disk): periods of PERIOD_LINES lines, 1 s each, of which per 100 lines
    33 sched_wakeup, 33 irq_handler_entry, 32 irq_handler_exit and 2
    kvm_fpu.  The child's peak RSS is what wait4() reports for it (as
    getrusage(RUSAGE_CHILDREN) would), with the child forked from a small
    process: forked from the test process, it would include the test
    process's own peak (see adversarial_traces.run_measured).
    """
    period = noise_period()
    assert period.counts == {
        "sched_wakeup": 33_000,
        "irq_handler_entry": 33_000,
        "irq_handler_exit": 32_000,
        "kvm_fpu": 2_000,
    }
    assert PERIOD_LINES == 100_000
    periods = -(-BIG_TRACE_BYTES // len(period.template))  # whole periods, at least the size
    ds = tmp_path / "ds"
    started = time.monotonic()
    child = run_measured(
        [fpureplay_exe(), "ingest", "-", "-o", str(ds), "--summary-format", "json"],
        noise_stream(period, periods),
        tmp_path,
    )
    elapsed = time.monotonic() - started
    assert child.returncode == 0, child.stderr.decode()
    assert child.maxrss_kib <= BIG_TRACE_MAX_RSS_KIB, (child.maxrss_kib, elapsed)
    lines = periods * PERIOD_LINES
    (summary,) = json.loads(child.stdout)
    assert (summary["lines"], summary["events"], summary["rejects"]) == (lines + 2, lines, 0)
    assert source(ds, "lines", "events", "rejects", "meta_lines", "ts_backwards") == (
        lines + 2,
        lines,
        0,
        2,
        0,
    )
    assert source(ds, "first_ts_ns", "last_ts_ns", "cpus", "vcpu_threads") == (
        10_000 * 10**9,
        (10_000 + periods - 1) * 10**9 + 999_990_000,
        [0, 1],
        [4321],
    )
    got = queries.run(ds, "event_counts").select("event", "count").rows()
    assert sorted(got) == sorted((event, n * periods) for event, n in period.counts.items())
