"""Property tests of the parser: generated lines round-trip, garbage never breaks it.

Lines are printed the way the kernel (``%16s-%-7d [%03d] %s %5lu.%06lu: ``),
trace-cmd and perf print them, from random records whose task names come
from a hostile alphabet (spaces, dashes, colons, slashes, brackets, digits).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

import polars as pl
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ingest.lines import _split_copying, split_lines
from ingest.parse import Chunk, SourceStats, parse_block

#: Each example parses a block (a few ms of fixed cost), so the default run is
#: kept small; FPUREPLAY_EXAMPLES=2000 makes a thorough one.
PARSER = settings(
    max_examples=int(os.environ.get("FPUREPLAY_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

FORMATS = ("tracefs", "trace-cmd", "perf-script")
#: Task names as the kernel allows them (TASK_COMM_LEN: at most 15 bytes), from a
#: hostile alphabet.  A comm cannot start with a blank: right-aligned, it would
#: be indistinguishable from the padding.
HOSTILE = " -/:[]()<>._=+#0123456789abcKVMxyz"
comms = st.text(alphabet=HOSTILE, min_size=1, max_size=15).filter(lambda c: c[0] != " ")
#: Event names the decoders do not know, so their args come back untouched.
event_names = st.from_regex(r"\A[a-z_][a-z0-9_]{0,24}\Z").filter(
    lambda n: not n.startswith(("sys_", "sched_", "kvm_", "x86_fpu_"))
)
#: Free-form args: any printable text, colons and brackets included (no leading
#: blank: the parser strips the blanks between the event name and its args).
args_text = st.text(alphabet=HOSTILE + "!?%&*@", max_size=60).filter(
    lambda a: not a.startswith(" ")
)
flag_columns = st.one_of(
    st.none(),
    st.tuples(*[st.sampled_from(c) for c in ("dDbX.", "Nnp.", "ZzHhs.", "0123a.")]),
    st.tuples(*[st.sampled_from(c) for c in ("dDbX.", "Nnp.", "ZzHhs.", "0123a.", "012.")]),
).map(lambda t: None if t is None else "".join(t))


@dataclass
class Record:
    """One event line's fields, as the parser should return them."""

    comm: str
    pid: int
    cpu: int
    secs: int
    frac: str  # the printed digits after the dot
    event: str
    args: str
    flags: str | None = None
    tgid: int | None = None

    @property
    def ts_ns(self) -> int | None:
        ns = self.secs * 1_000_000_000 + int(self.frac.ljust(9, "0"))
        return ns if ns < 2**63 else None  # beyond int64: null, never wrapped


@st.composite
def records(draw: st.DrawFn) -> Record:
    return Record(
        comm=draw(comms),
        pid=draw(st.integers(0, 4_194_304)),
        cpu=draw(st.integers(0, 1023)),
        secs=draw(st.integers(0, 10**10)),
        frac=draw(st.sampled_from([6, 9]).flatmap(lambda n: st.from_regex(rf"\A[0-9]{{{n}}}\Z"))),
        event=draw(event_names),
        args=draw(args_text),
        flags=draw(flag_columns),
    )


def tracefs_line(r: Record, *, pid_width: int = 7, tgid: str | None = None) -> str:
    """A line as kernel/trace/trace_output.c prints it."""
    tg = "" if tgid is None else f"({tgid}) "
    flags = "" if r.flags is None else f"{r.flags} "
    return (
        f"{r.comm:>16}-{r.pid:<{pid_width}} {tg}[{r.cpu:03d}] {flags}"
        f"{r.secs:>5}.{r.frac}: {r.event}: {r.args}"
    )


def trace_cmd_line(r: Record, instance: str | None) -> str:
    """A line as `trace-cmd report` prints it (no flag column, padded event name)."""
    prefix = "" if instance is None else f"{instance}: "
    return (
        f"{prefix}{r.comm:>16}-{r.pid:<5} [{r.cpu:03d}] {r.secs:>5}.{r.frac}: "
        f"{(r.event + ':'):<21} {r.args}"
    )


def perf_line(r: Record, width: int) -> str:
    """A line as `perf script` prints a tracepoint sample."""
    name = f"probe:{r.event}"
    return (
        f"{r.comm:>16} {r.pid:>5} [{r.cpu:03d}] {r.secs:>5}.{r.frac}: {name:>{width}}: {r.args}"
    )


def parse(lines: list[str], fmt: str, first: int = 1) -> Chunk:
    frame, _ = split_lines("".join(ln + "\n" for ln in lines).encode(), first)
    return parse_block(frame, fmt)


def fields(chunk: Chunk) -> list[tuple]:
    cols = ["comm", "pid", "tgid", "cpu", "flags", "ts_ns", "event", "args"]
    return list(chunk.events.select(cols).iter_rows())


def expected(recs: list[Record], *, flags: bool = True, tgids: list | None = None) -> list[tuple]:
    tgids = tgids or [None] * len(recs)
    return [
        (r.comm, r.pid, tg, r.cpu, r.flags if flags else None, r.ts_ns, r.event, r.args)
        for r, tg in zip(recs, tgids, strict=True)
    ]


# -- round trips -------------------------------------------------------------------------


@PARSER
@given(st.lists(records(), min_size=1, max_size=12), st.sampled_from([5, 7]))
def test_tracefs_lines_round_trip(recs: list[Record], pid_width: int):
    chunk = parse([tracefs_line(r, pid_width=pid_width) for r in recs], "tracefs")
    assert chunk.rejects.height == 0
    assert fields(chunk) == expected(recs)


@PARSER
@given(
    st.lists(st.tuples(records(), st.one_of(st.none(), st.just(-1), st.integers(1, 99_999))),
             min_size=1, max_size=8)
)
def test_tracefs_tgid_column_round_trips(pairs: list[tuple[Record, int | None]]):
    # with options/record-tgid every line has the column: "(  1234)" or "(-------)"
    lines = [
        tracefs_line(r, tgid="-------" if tg in (None, -1) else f"{tg:>7}") for r, tg in pairs
    ]
    chunk = parse(lines, "tracefs")
    tgids = [None if tg in (None, -1) else tg for _, tg in pairs]
    assert fields(chunk) == expected([r for r, _ in pairs], tgids=tgids)


@PARSER
@given(
    st.lists(records(), min_size=1, max_size=12),
    st.one_of(st.none(), st.from_regex(r"\A[a-z_][a-z0-9_]{0,15}\Z")),
)
def test_trace_cmd_lines_round_trip(recs: list[Record], instance: str | None):
    chunk = parse(["cpus=4"] + [trace_cmd_line(r, instance) for r in recs], "trace-cmd")
    assert chunk.rejects.height == 0
    assert fields(chunk) == expected(recs, flags=False)
    assert chunk.instances == (set() if instance is None else {instance})


@PARSER
@given(st.lists(records(), min_size=1, max_size=12))
def test_perf_script_lines_round_trip(recs: list[Record]):
    width = max(len(f"probe:{r.event}") for r in recs)
    chunk = parse([perf_line(r, width) for r in recs], "perf-script")
    assert chunk.rejects.height == 0
    assert fields(chunk) == expected(recs, flags=False)


SWITCH_COMMS = st.text(alphabet=" -/:[]()<>._+0123456789abcKVM", min_size=1, max_size=15).filter(
    lambda c: c[0] != " "
)


@PARSER
@given(
    records(),
    SWITCH_COMMS,
    st.integers(0, 4_194_304),
    st.integers(-100, 139),
    st.sampled_from(["R", "R+", "S", "D", "I", "X", "Z", "P", "T", "t"]),
    SWITCH_COMMS,
    st.integers(0, 4_194_304),
    st.integers(-100, 139),
)
def test_sched_switch_round_trips_in_both_forms(
    r: Record, pc: str, pp: int, pprio: int, state: str, nc: str, np_: int, nprio: int
):
    # "=" is not in the alphabet: a comm holding " prev_pid=1 " would be ambiguous
    r.event = "sched_switch"
    r.args = (
        f"prev_comm={pc} prev_pid={pp} prev_prio={pprio} prev_state={state} ==> "
        f"next_comm={nc} next_pid={np_} next_prio={nprio}"
    )
    plugin_state = {"I": "W", "X": "Z", "Z": "X", "P": "x", "R+": "R"}.get(state, state)
    plugin = f"{pc}:{pp} [{pprio}] {plugin_state} ==> {nc}:{np_} [{nprio}]"
    kernel = parse([tracefs_line(r)], "tracefs").events
    r2 = Record(**{**r.__dict__, "args": plugin})
    traced = parse([trace_cmd_line(r2, "inst")], "trace-cmd").events
    cols = ["prev_comm", "prev_pid", "prev_prio", "prev_state", "next_comm", "next_pid",
            "next_prio"]
    assert kernel.select(cols).row(0) == (pc, pp, pprio, state, nc, np_, nprio)
    # the plugin drops the "+" of a preempted task; the rest maps back exactly
    assert traced.select(cols).row(0) == (
        pc, pp, pprio, "R" if state == "R+" else state, nc, np_, nprio,
    )


@PARSER
@given(st.lists(records(), min_size=1, max_size=8))
def test_fast_path_and_regex_fallback_agree(recs: list[Record]):
    # One more leading blank moves the task separator off column 16, so the
    # same lines go through the header regex instead of the fixed-width cut.
    # (Comms without "[": the regex takes the first "-digits" before a
    # "[cpu]", which a comm holding "-1 [2] 3: e:" would fool.)
    assume(all("[" not in r.comm for r in recs))
    lines = [tracefs_line(r) for r in recs]
    fast = parse(lines, "tracefs").events
    slow = parse([" " + ln for ln in lines], "tracefs").events
    assert fast.equals(slow)
    # perf's fallback cannot tell a comm's trailing blanks from the separator
    perf = [perf_line(r, 40) for r in recs if not r.comm.endswith(" ")]
    if perf:
        fast = parse(perf, "perf-script").events
        assert fast.equals(parse([" " + ln for ln in perf], "perf-script").events)


# -- garbage -----------------------------------------------------------------------------


def conserved(data: bytes, fmt: str) -> Chunk:
    """Parse ``data`` and check every line became one event, one reject or one meta line."""
    frame, _ = split_lines(data, 1)
    chunk = parse_block(frame, fmt)
    assert frame.height == chunk.events.height + chunk.rejects.height + chunk.meta_lines
    seen = pl.concat([chunk.events["line_no"], chunk.rejects["line_no"]])
    assert seen.is_unique().all()
    return chunk


line_bytes = st.one_of(
    st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"")),
    st.text(max_size=200).map(lambda t: t.replace("\n", "").encode("utf-8", "surrogatepass")),
    st.builds(lambda r: tracefs_line(r).encode(), records()),
    st.sampled_from(
        [b"", b"#", b"cpus=2", b"CPU:0 [LOST 3 EVENTS]", b"##### CPU 1 buffer started ####",
         b"\x00" * 40, b"\r", b"CPU 1 is empty", b"[000] LOST 5 events!"]
    ),
)


@PARSER
@given(st.lists(line_bytes, max_size=30), st.sampled_from(FORMATS), st.booleans())
def test_arbitrary_lines_never_raise_and_nothing_is_lost(
    lines: list[bytes], fmt: str, final_newline: bool
):
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    conserved(data, fmt)


@PARSER
@given(st.binary(max_size=2000), st.sampled_from(FORMATS))
def test_arbitrary_bytes_never_raise(data: bytes, fmt: str):
    conserved(data, fmt)


@PARSER
@given(st.binary(max_size=500))
def test_line_views_agree_with_copied_lines(data: bytes):
    # blocks over 2 GiB (views hold int32 offsets) take the copying path
    views, invalid = split_lines(data, 3)
    copied, invalid_copied = _split_copying(data, 3)
    assert views.equals(copied) if data else views.height == 0
    assert invalid == invalid_copied or not data


def test_very_long_lines_and_nul_bytes():
    r = Record("CPU 0/KVM", 4321, 0, 5123, "000100", "long_event", "x" * (1 << 20))
    data = (
        tracefs_line(r) + "\n" + "y" * (1 << 20) + "\n" + "\x00" * 1000 + "\n"
    ).encode()
    chunk = conserved(data, "tracefs")
    assert chunk.events["args"].str.len_bytes().to_list() == [1 << 20]
    assert chunk.rejects["line_no"].to_list() == [2, 3]


# -- blocks ------------------------------------------------------------------------------


@PARSER
@given(
    st.lists(
        st.one_of(
            st.builds(tracefs_line, records()),
            st.sampled_from(["garbage", "CPU:1 [LOST 2 EVENTS]", "# comment", ""]),
        ),
        min_size=1,
        max_size=25,
    ),
    st.lists(st.integers(0, 25), max_size=4),
)
def test_any_cut_into_blocks_gives_the_same_events_and_stats(lines: list[str], cuts: list[int]):
    whole = parse(lines, "tracefs")
    bounds = sorted({0, len(lines), *[c for c in cuts if c <= len(lines)]})
    parts = [parse(lines[a:b], "tracefs", first=a + 1) for a, b in itertools.pairwise(bounds)]
    joined = pl.concat([p.events for p in parts])
    # A lost marker takes the time of the next event of its block, else of the
    # previous one: at a block's end that is the event before the gap instead
    # of the one after, which sorts the same by (ts_ns, line_no).
    real = pl.col("event") != "lost_events"
    assert joined.filter(real).equals(whole.events.filter(real))
    assert joined.drop("ts_ns").equals(whole.events.drop("ts_ns"))
    assert pl.concat([p.rejects for p in parts]).equals(whole.rejects)
    one, many = SourceStats("tracefs"), SourceStats("tracefs")
    one.add(whole)
    for p in parts:
        many.add(p)
    assert one == many
