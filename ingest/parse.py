"""Parse blocks of trace lines into `events` and `rejects` frames, vectorized.

Two passes, as LISA does: a header pass splits every line into task, pid,
CPU, flags, timestamp, event name and raw ``args``; a decode pass types the
args of the events declared in :mod:`ingest.events`.  Lines that are neither
events nor known non-event lines (headers, comments, lost-event markers)
become rejects; nothing is dropped: every input line is exactly one event,
one reject or one meta line.

Most of the work is done once per *distinct* value rather than once per
line.  The kernel, trace-cmd and perf all print the comm right-aligned in a
16-column field, so every line splits, with ``find`` and ``slice`` only, at
the first ``": "`` after that field into a prefix (task, pid, CPU, flags),
the timestamp and a tail (event name and args).  Prefixes and tails repeat
heavily (a real ten-thousand-line capture has a few hundred distinct tails:
event bodies name states and tasks, not times), so the format's regexes
and the event decoders run on the distinct values and are joined back; per
line there remain the split, the timestamp's digits and two hash joins.
Lines the split cannot take (long or non-ASCII comms, unusual spacing) go
through the format's full header regex (:data:`ingest.tracefs.HEADER` and
its siblings), which defines the format.  No per-line Python runs anywhere.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from ingest import perfscript, tracecmd, tracefs
from ingest.detect import FORMATS, detect_format
from ingest.errors import InputError
from ingest.events import decode_args
from ingest.lines import byte_slices, byte_windows, split_lines
from ingest.schema import EVENTS_SCHEMA, LOST_EVENTS, REJECTS_SCHEMA

_MODULES: dict[str, ModuleType] = {
    tracefs.NAME: tracefs,
    tracecmd.NAME: tracefs,  # the same line layout, behind the instance prefix
    perfscript.NAME: perfscript,
}

#: Lines that carry no event and are not errors: blank lines, comments (a
#: "#" in column 0: indented, it is a task name that starts with "#"),
#: trace-cmd's "cpus=N", "version = N" and "CPU N is empty".
_META = r"^\s*$|^#|^(?:cpus=[0-9]+|version = [0-9]+|CPU [0-9]+ is empty)\s*$"
#: Lost-event markers: tracefs/trace_pipe, trace-cmd, perf script --show-lost-events.
_LOST = (
    r"^\s*(?:[^\s:]+: )?CPU:?\s*(?P<cpu>[0-9]+)\s*\[(?:LOST (?P<n1>[0-9]+) EVENTS"
    r"|(?P<n2>[0-9]+) EVENTS DROPPED|EVENTS DROPPED)\]"
    r"|\[(?P<cpu2>[0-9]+)\].*\bLOST (?P<n3>[0-9]+) events!"
)
#: Every lost marker contains one of these words (a literal scan, cheap);
#: the group-extracting pattern above only runs on the few lines that do.
_LOST_HINT = "LOST|DROPPED"
_BUFFER_STARTED = r"^#+ CPU [0-9]+ buffer started"
_RECORD_HEADER = "# fpureplay-record: "
_HOST_LINES = r"^#\s*(?:hostname\s*:|fpureplay-record:.*\bhost=)\s*(?P<host>\S+)"
_KERNEL_LINES = (
    r"^#\s*(?:os release\s*:|kernel\s*[:=]|fpureplay-record:.*\bkernel=)\s*(?P<kernel>\S+)"
)
#: Events that only a vCPU thread logs (for the summary's vCPU thread count).
_VCPU_EVENTS = ("kvm_fpu", "kvm_entry", "kvm_userspace_exit")


@dataclass
class Chunk:
    """What one block of lines became, with the figures :class:`SourceStats` folds in.

    The per-chunk figures are computed in :func:`parse_block` (in the worker
    thread) so that folding them in the reading thread costs nothing.
    """

    events: pl.DataFrame
    rejects: pl.DataFrame
    meta_lines: int
    lost_markers: int
    lost_events: int
    buffer_started: int
    instances: set[str]
    kernel: str | None
    #: the `# fpureplay-record:` header fields (ingest.record), when this chunk has it
    recording: dict[str, Any] = field(default_factory=dict)
    #: the host a header line names (perf's `# hostname :`, the recorder's `host=`)
    host: str | None = None
    event_counts: dict[str, int] = field(default_factory=dict)
    cpus: set[int] = field(default_factory=set)
    vcpu_pids: set[int] = field(default_factory=set)
    first_ts_ns: int | None = None
    last_ts_ns: int | None = None
    #: steps back in time between consecutive events of one CPU inside the chunk
    ts_backwards: int = 0
    #: per CPU: (first, last) timestamp of the chunk's events
    cpu_ts_bounds: dict[int, tuple[int, int]] = field(default_factory=dict)
    #: ``events`` / ``rejects`` as Arrow tables for the Parquet writer, when
    #: the worker converted them (ingest.load.iter_parsed ``arrow=True``)
    arrow_events: Any = None
    arrow_rejects: Any = None


@dataclass
class SourceStats:
    """Per-source figures accumulated over the chunks (for the manifest and summary)."""

    format: str
    lines: int = 0
    events: int = 0
    rejects: int = 0
    meta_lines: int = 0
    lost_markers: int = 0
    lost_events: int = 0
    buffer_started: int = 0
    invalid_utf8_lines: int = 0
    ts_backwards: int = 0
    first_ts_ns: int | None = None
    last_ts_ns: int | None = None
    event_counts: dict[str, int] = field(default_factory=dict)
    cpus: set[int] = field(default_factory=set)
    vcpu_pids: set[int] = field(default_factory=set)
    instances: set[str] = field(default_factory=set)
    kernel: str | None = None
    recording: dict[str, Any] = field(default_factory=dict)
    host: str | None = None
    _last_ts_by_cpu: dict[int, int] = field(default_factory=dict, repr=False)

    def add(self, chunk: Chunk) -> None:
        """Fold one chunk's figures in."""
        self.events += chunk.events.height
        self.rejects += chunk.rejects.height
        self.meta_lines += chunk.meta_lines
        self.lost_markers += chunk.lost_markers
        self.lost_events += chunk.lost_events
        self.buffer_started += chunk.buffer_started
        self.instances |= chunk.instances
        self.kernel = self.kernel or chunk.kernel
        self.recording = self.recording or chunk.recording
        self.host = self.host or chunk.host
        for name, n in chunk.event_counts.items():
            self.event_counts[name] = self.event_counts.get(name, 0) + n
        if chunk.first_ts_ns is not None:
            lo, hi = chunk.first_ts_ns, chunk.last_ts_ns
            self.first_ts_ns = lo if self.first_ts_ns is None else min(self.first_ts_ns, lo)
            self.last_ts_ns = hi if self.last_ts_ns is None else max(self.last_ts_ns, hi)
        self.cpus |= chunk.cpus
        self.vcpu_pids |= chunk.vcpu_pids
        # Within a CPU the ring buffer is in time order; a step back means a
        # clock or merge problem the replay should know about.  Steps inside
        # a chunk are counted by parse_block; steps across chunks here.
        self.ts_backwards += chunk.ts_backwards
        for cpu, (first, last) in chunk.cpu_ts_bounds.items():
            before = self._last_ts_by_cpu.get(cpu)
            if before is not None and first < before:
                self.ts_backwards += 1
            self._last_ts_by_cpu[cpu] = last


#: The largest timestamp an int64 of nanoseconds holds (year 2262 of a wall clock).
TS_MAX = 2**63 - 1
_MAX_S, _MAX_NS = divmod(TS_MAX, 1_000_000_000)


def _ts_ns(secs: pl.Expr, frac: pl.Expr) -> pl.Expr:
    """Exact nanoseconds from the digits: "2194.928432" is 2194 s + "928432" padded to 9.

    Without a fraction (counter clocks) the number is taken as is.  A value
    beyond int64 is null, not wrapped.
    """
    whole = secs.cast(pl.Int64, strict=False)
    nanos = frac.str.pad_end(9, "0").str.slice(0, 9).cast(pl.Int64, strict=False)
    fits = (whole < _MAX_S) | ((whole == _MAX_S) & (nanos <= _MAX_NS))
    return (
        pl.when(frac.is_null())
        .then(whole)
        .when(fits)
        .then(whole * 1_000_000_000 + nanos)
    )


#: Tail columns joined even when all null (the fast path tests them).
_TAIL_KEEP = ("_tail", "event", "args", "decoded")
#: What the timestamp of a fast-path line is made of.
_TS_CHARS = "0123456789."
#: How many lines the timestamp layout of a block is learnt from.
_LAYOUT_SAMPLE = 256

#: Parsed lines before the events / rejects split: the events columns, the line
#: (for a reject) and whether its args matched a form of its event.
_PARSED_SCHEMA = pl.Schema(
    {**EVENTS_SCHEMA, "line": pl.String(), "raw": pl.Binary(), "decoded": pl.Boolean()}
)

Stages = list[dict[str, pl.Expr]]


def _colon() -> pl.Expr:
    """Byte offset in ``body`` of the first ``": "`` after the comm field.

    The search starts past the field, so a comm holding ``": "`` is no
    obstacle; the field's length in bytes makes the offset right for a
    non-ASCII comm too.
    """
    body, width = pl.col("body"), tracefs.COMM_WIDTH + 1  # the same in the three formats
    return body.str.slice(width).str.find(": ", literal=True) + body.str.head(width).str.len_bytes()


def _split_any() -> Stages:
    """Cut ``body`` into ``_prefix``, ``_ts`` and ``_tail`` at the first ``": "`` after the comm.

    The timestamp is the run of digits and dots before that colon.  Nothing
    is validated here: the prefix is checked against the format's PREFIX
    (which admits neither ``:`` nor non-ASCII, so a cut at another colon, or
    character offsets that differ from byte offsets, fail it), the timestamp
    by its conversion, the tail by the format's EVENT.  Each stage is one
    ``with_columns``: eager polars does not share subexpressions.
    """
    body, colon, head = pl.col("body"), pl.col("_colon"), pl.col("_head")
    return [
        # (character offsets: a line that is not ASCII up to the colon fails
        # PREFIX, whichever way it is cut)
        {"_colon": body.str.slice(tracefs.COMM_WIDTH + 1).str.find(": ", literal=True)
         + (tracefs.COMM_WIDTH + 1)},
        {"_head": body.str.head(colon), "_tail": body.str.slice(colon + 2)},
        {"_prefix": head.str.strip_chars_end(_TS_CHARS)},
        {"_ts": head.str.slice(pl.col("_prefix").str.len_chars())},
    ]


def _ts_any() -> Stages:
    """``ts_ns`` from ``_ts``, a string of digits and dots, and ``_ts_ok``: is it ``secs[.frac]``?

    ``ts_ns`` is null for a well-formed timestamp beyond int64 (the line is
    still an event: the header regex would take it too).
    """
    ts, dot = pl.col("_ts"), pl.col("_dot")
    return [
        {
            "_dot": ts.str.find(".", literal=True),
            "_ts_ok": ts.str.contains(r"^[0-9]+(?:\.[0-9]+)?$"),
        },
        {
            "_secs": pl.when(dot.is_null()).then(ts).otherwise(ts.str.head(dot)),
            "_frac": pl.when(dot.is_not_null()).then(ts.str.slice(dot + 1)),
        },
        {"ts_ns": _ts_ns(pl.col("_secs"), pl.col("_frac"))},
    ]


def _cut_fixed(work: pl.DataFrame, ts_len: int, frac_digits: int) -> pl.DataFrame:
    """Layer one: :func:`_split_any` and :func:`_ts_any` for a timestamp of known shape.

    Almost every line of a trace has a timestamp of the same length and
    number of decimals, learnt from the block's first lines: the prefix ends
    ``ts_len`` bytes before the colon, and the timestamp's digits are read
    at fixed positions.  The cuts are Arrow views into the lines' memory
    (:func:`ingest.lines.byte_slices`): no text is copied.  A line where the
    guess is wrong (its prefix no longer ends with a blank, its timestamp is
    not ``digits.digits``) is left to the next layer.
    """
    colon = work.select(_colon()).to_series().cast(pl.Int64).fill_null(-1).to_numpy()
    body = work["body"]
    found = colon >= ts_len
    tail = byte_slices(body, np.where(found, colon + 2, -1))
    ts = byte_windows(body, colon - ts_len, ts_len)
    dot = ts_len - frac_digits - 1
    places = [k for k in range(ts_len) if k != dot]
    digits = ts[:, places]
    ok = found & (ts[:, dot] == ord(".")) & ((digits >= 48) & (digits <= 57)).all(axis=1)
    # Only where the window is a timestamp (ASCII) does the prefix end on a
    # character boundary: elsewhere the cut could split a multi-byte
    # character, and an invalid string would break the decode of them all.
    prefix = byte_slices(body, np.where(ok, 0, -1), colon - ts_len)
    weights = 10 ** np.arange(len(places) - 1, -1, -1, dtype=np.int64)
    value = (digits.astype(np.int64) - 48) @ weights
    scale = 10 ** (9 - frac_digits)
    fits = ok & (value <= TS_MAX // scale)
    ts_ns = pa.array(np.where(fits, value, 0) * scale, mask=~fits)
    return work.with_columns(
        _prefix=prefix, _tail=tail, ts_ns=pl.Series(ts_ns), _ts_ok=pl.Series(ok)
    )


def _ts_layout(work: pl.DataFrame) -> tuple[int, int] | None:
    """The most common (length, digits after the dot) of the block's timestamps, if usable."""
    if work.height == 0:
        return None
    sample = work.head(_LAYOUT_SAMPLE)
    for stage in _split_any():
        sample = sample.with_columns(**stage)
    ts = pl.col("_ts")
    layouts = (
        sample.filter(ts.str.contains(r"^[0-9]+\.[0-9]{1,9}$"))
        .group_by(
            ts.str.len_bytes().alias("n"),
            (ts.str.len_bytes() - ts.str.find(".", literal=True) - 1).alias("f"),
        )
        .len()
        .sort("len", "n", descending=True)
    )
    if layouts.height == 0 or layouts["n"][0] > 19:  # 18 digits: int64 arithmetic is exact
        return None
    return int(layouts["n"][0]), int(layouts["f"][0])


def _event_and_args(event: pl.Expr, sep: pl.Expr, after: pl.Expr) -> list[pl.Expr]:
    """The bare event name and its args, from the name as printed and what follows it.

    tracefs prints syscall events as ``sys_ioctl(...)`` and ``sys_ioctl ->
    ret``: they are named as their tracepoints, ``sys_enter_ioctl`` and
    ``sys_exit_ioctl``.
    """
    return [
        pl.when(sep == "(")
        .then(pl.lit("sys_enter_") + event.str.strip_prefix("sys_"))
        .when(sep == "->")
        .then(pl.lit("sys_exit_") + event.str.strip_prefix("sys_"))
        .otherwise(event)
        .alias("event"),
        pl.when(sep == "(")
        .then(after.str.strip_suffix(")"))
        .otherwise(after.str.strip_chars_start())
        .alias("args"),
    ]


def _match(frame: pl.DataFrame, column: str, pattern: str, fields: list[str]) -> pl.DataFrame:
    """``frame`` with the named groups of ``pattern`` over ``column`` (null where
    it does not match) and ``_hdr_len``, the length of group ``hdr`` if any."""
    names = set(re.compile(pattern).groupindex)
    g = pl.col("_g").struct
    out = frame.with_columns(pl.col(column).str.extract_groups(pattern).alias("_g"))
    cols = [(g.field(f) if f in names else pl.lit(None, dtype=pl.String)).alias(f) for f in fields]
    if "hdr" in names:
        cols.append(g.field("hdr").str.len_chars().alias("_hdr_len"))
    return out.with_columns(cols).drop("_g")


def _decode_tails(tails: pl.DataFrame, module: ModuleType) -> pl.DataFrame:
    """Event name, args and decoded fields of each distinct tail (``event<sep>args``)."""
    # The split consumed the timestamp's colon and the first blank of EVENT's \s+.
    pattern = r"^(?P<hdr>\s*" + module.EVENT.removeprefix(r"\s+") + ")"
    out = _match(tails, "_tail", pattern, ["event", "sep"])
    out = out.with_columns(
        _event_and_args(
            pl.col("event"),
            pl.col("sep").str.strip_chars(),
            pl.col("_tail").str.slice(pl.col("_hdr_len")),
        )
    ).drop("sep", "_hdr_len")
    return decode_args(out)


def _typed_task(frame: pl.DataFrame) -> pl.DataFrame:
    """The task columns as the events table types them."""
    return frame.with_columns(
        pl.col("comm").str.strip_chars_start(),
        *[pl.col(c).cast(pl.Int32, strict=False) for c in ("pid", "tgid", "cpu")],
    )


def _fallback(df: pl.DataFrame, module: ModuleType) -> pl.DataFrame:
    """Header fields of lines the fast path did not take, by the format's HEADER regex."""
    out = _match(df, "body", module.HEADER, ["comm", "pid", "tgid", "cpu", "flags", "secs",
                                             "frac", "event", "sep"])
    out = _typed_task(out.filter(pl.col("_hdr_len").is_not_null())).with_columns(
        _ts_ns(pl.col("secs"), pl.col("frac")).alias("ts_ns"),
        *_event_and_args(
            pl.col("event"), pl.col("sep").str.strip_chars(),
            pl.col("body").str.slice(pl.col("_hdr_len")),
        ),
    )
    return decode_args(out)


def parse_block(lines: pl.DataFrame, fmt: str, *, truncated: bool = False) -> Chunk:
    """Parse numbered lines (``line_no``, ``line``, ``raw``) of a trace in format ``fmt``."""
    if fmt not in _MODULES:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    module = _MODULES[fmt]
    line = pl.col("line")
    df = lines.with_columns(
        line.str.contains(_META).alias("is_meta"),
        line.str.contains(_LOST_HINT).alias("_lost_hint"),
    )
    df = df.with_columns(
        pl.when(pl.col("_lost_hint") & ~pl.col("is_meta"))
        .then(line)
        .str.extract_groups(_LOST)
        .alias("lost")
    )
    lost = pl.col("lost").struct
    is_lost = lost.field("cpu").is_not_null() | lost.field("cpu2").is_not_null()
    df = df.with_columns(is_lost.fill_null(False).alias("is_lost"))
    candidate = ~pl.col("is_meta") & ~pl.col("is_lost")
    if fmt == tracecmd.NAME:
        # An instance prefix holds no whitespace and ends at the line's first
        # ": " (a byte offset; the cuts are views of the line, no copies).
        ilen = (
            df.select(
                pl.when(candidate & line.str.contains(tracecmd.INSTANCE_PREFIX))
                .then(line.str.find(": ", literal=True))
                .cast(pl.Int64)
                .fill_null(-1)
            )
            .to_series()
            .to_numpy()
        )
        has = ilen >= 0
        df = df.with_columns(
            instance=byte_slices(df["line"], np.where(has, 0, -1), ilen),
            body=byte_slices(df["line"], np.where(has, ilen + 2, 0)),
        )
    else:
        df = df.with_columns(pl.lit(None, dtype=pl.String).alias("instance"), line.alias("body"))

    # Fast path, in layers, then the regex: each takes the lines the previous left.
    work = df.filter(candidate).select("line_no", "line", "raw", "body")
    layers: list[Callable[[pl.DataFrame], pl.DataFrame]] = [_cut_any]
    layout = _ts_layout(work)
    if layout is not None:
        layers.insert(0, functools.partial(_cut_fixed, ts_len=layout[0], frac_digits=layout[1]))
    parts: list[pl.DataFrame] = []
    for cut in layers:
        if work.height == 0:
            break
        done = _fast_path(cut(work), module)
        if done["_ok"].all():  # the usual case: no copy
            parts.append(done)
            work = work.clear()
        else:
            parts.append(done.filter(pl.col("_ok")))
            work = work.filter(~done["_ok"])
    unparsed = work
    if work.height:
        slow = _fallback(work, module)
        parts.append(slow)
        unparsed = work.join(slow.select("line_no"), on="line_no", how="anti")
    parts = [_conform(p, _PARSED_SCHEMA) for p in parts if p.height]
    parsed = _PARSED_SCHEMA.to_frame() if not parts else parts[0]
    if len(parts) > 1:
        parsed = pl.concat(parts).sort("line_no")
    if parsed["decoded"].all():  # the usual case: no copy
        events, bad_args = parsed, parsed.clear()
    else:
        events, bad_args = parsed.filter(pl.col("decoded")), parsed.filter(~pl.col("decoded"))

    lost_rows = df.filter(pl.col("is_lost")).select(
        "line_no",
        pl.coalesce(lost.field("cpu"), lost.field("cpu2")).cast(pl.Int32, strict=False)
        .alias("cpu"),
        pl.lit(LOST_EVENTS).alias("event"),
        pl.col("line").alias("args"),
        pl.coalesce(lost.field("n1"), lost.field("n2"), lost.field("n3"))
        .cast(pl.Int64, strict=False)
        .alias("lost_count"),
    )
    if lost_rows.height:
        events = pl.concat([events, lost_rows], how="diagonal_relaxed").sort("line_no")
        # A marker stands where the gap is: give it the time of the next event
        # (of the previous one at the end of the block).  Only markers: an
        # event whose timestamp is out of range stays null.
        near = pl.col("ts_ns").fill_null(strategy="backward").fill_null(strategy="forward")
        events = events.with_columns(
            pl.when(pl.col("event") == LOST_EVENTS).then(near).otherwise(pl.col("ts_ns"))
            .alias("ts_ns")
        )
    events = _conform(events, EVENTS_SCHEMA)

    rejects = REJECTS_SCHEMA.to_frame()
    if unparsed.height or bad_args.height:
        rejects = _rejects(unparsed, bad_args, fmt, lines["line_no"].max() if truncated else None)

    meta = df.filter(pl.col("is_meta")).select("line")
    kernels = meta["line"].str.extract(_KERNEL_LINES, 1).drop_nulls()
    headers = meta["line"].filter(meta["line"].str.starts_with(_RECORD_HEADER))
    hosts = meta["line"].str.extract(_HOST_LINES, 1).drop_nulls()
    chunk = Chunk(
        events=events,
        rejects=rejects,
        meta_lines=meta.height,
        lost_markers=lost_rows.height,
        lost_events=int(lost_rows["lost_count"].fill_null(0).sum()),
        buffer_started=int(meta["line"].str.contains(_BUFFER_STARTED).sum()),
        instances=set(df["instance"].drop_nulls().unique().to_list()),
        kernel=kernels[0] if kernels.len() else None,
        recording=_recording(headers[0]) if headers.len() else {},
        host=hosts[0] if hosts.len() else None,
    )
    _summarize(chunk)
    return chunk


def _rejects(
    unparsed: pl.DataFrame, bad_args: pl.DataFrame, fmt: str, truncated_line: int | None
) -> pl.DataFrame:
    """The rejects of a block: lines that are no event line, and declared events whose
    args match no form; ``truncated_line`` is the input's last line when it had
    no newline."""
    rejects = pl.concat(
        [
            unparsed.select(
                "line_no",
                pl.col("line").alias("text"),
                "raw",
                pl.lit(f"not a {fmt} event line").alias("reason"),
            ),
            bad_args.select(
                "line_no",
                pl.col("line").alias("text"),
                "raw",
                (pl.col("event") + pl.lit(": arguments match no known format of this event"))
                .alias("reason"),
            ),
        ]
    ).sort("line_no")
    if truncated_line is not None:
        rejects = rejects.with_columns(
            pl.when(pl.col("line_no") == truncated_line)
            .then(pl.lit("truncated last line (no newline at end of input); ") + pl.col("reason"))
            .otherwise(pl.col("reason"))
            .alias("reason")
        )
    return _conform(rejects, REJECTS_SCHEMA)


def _cut_any(work: pl.DataFrame) -> pl.DataFrame:
    """Layer two: :func:`_split_any` and :func:`_ts_any`, for timestamps of any shape."""
    for stage in _split_any() + _ts_any():
        work = work.with_columns(**stage)
    return work


def _fast_path(work: pl.DataFrame, module: ModuleType) -> pl.DataFrame:
    """Decode each distinct ``_prefix`` and ``_tail`` of the cut lines once, join them back.

    Returns ``work`` with the task, event and decoded columns and ``_ok``,
    false for the lines this layer could not take.
    """
    prefixes = work.select(pl.col("_prefix").unique().drop_nulls())
    prefixes = _typed_task(
        _match(prefixes, "_prefix", module.PREFIX, ["comm", "pid", "tgid", "cpu", "flags"])
    )
    tails = _decode_tails(work.select(pl.col("_tail").unique().drop_nulls()), module)
    # Only the columns some tail fills travel through the join; the others
    # are added as typed nulls at the end, which costs nothing per row.
    filled = tails.select(pl.all().is_not_null().any()).row(0, named=True)
    tails = tails.select([c for c, any_value in filled.items() if any_value or c in _TAIL_KEEP])
    # Only what the events and rejects need goes on; the split's columns are
    # dropped here so that their memory is freed before the next step.
    keep = ["line_no", "line", "raw", "ts_ns", "_ts_ok", "_prefix", "_tail"]
    work = work.select(keep).join(prefixes, on="_prefix", how="left", maintain_order="left")
    work = work.drop("_prefix").join(tails, on="_tail", how="left", maintain_order="left")
    ok = pl.col("comm").is_not_null() & pl.col("event").is_not_null() & pl.col("_ts_ok")
    return work.with_columns(ok.alias("_ok")).drop("_tail", "_ts_ok")


def chunk_of_events(events: pl.DataFrame) -> Chunk:
    """A chunk holding ``events`` only (no rejects, no meta lines), with its figures.

    For sources that arrive as an events frame rather than as text: the
    built-in model's dataset fast path, benchmark datasets.
    """
    lost = events.filter(pl.col("event") == LOST_EVENTS)
    chunk = Chunk(
        events=events,
        rejects=REJECTS_SCHEMA.to_frame(),
        meta_lines=0,
        lost_markers=lost.height,
        lost_events=int(lost["lost_count"].fill_null(0).sum()),
        buffer_started=0,
        instances=set(),
        kernel=None,
    )
    _summarize(chunk)
    return chunk


def _summarize(chunk: Chunk) -> None:
    """Fill the chunk's figures for :meth:`SourceStats.add`."""
    ev = chunk.events
    if ev.height == 0:
        return
    chunk.event_counts = dict(ev["event"].value_counts().iter_rows())
    is_vcpu = pl.col("event").is_in(_VCPU_EVENTS) | (pl.col("ioctl_cmd") == "KVM_RUN")
    real = ev.select("cpu", "ts_ns", "event").filter(
        (pl.col("event") != LOST_EVENTS) & pl.col("ts_ns").is_not_null()
    )
    ts = pl.col("ts_ns")
    cpus, vcpu_pids = ev.select(
        pl.col("cpu").drop_nulls().unique().implode(),
        pl.col("pid").filter(is_vcpu).unique().implode(),
    ).row(0)
    chunk.cpus, chunk.vcpu_pids = set(cpus), set(vcpu_pids)
    if real.height == 0:
        return
    # Within a CPU the ring buffer is in time order: count the steps back.
    chunk.first_ts_ns, chunk.last_ts_ns, chunk.ts_backwards = real.select(
        ts.min().alias("first"),
        ts.max().alias("last"),
        (ts < ts.shift(1).over("cpu")).sum().alias("backwards"),
    ).row(0)
    bounds = real.group_by("cpu", maintain_order=True).agg(ts.first(), ts.last().alias("last"))
    chunk.cpu_ts_bounds = {cpu: (first, last) for cpu, first, last in bounds.iter_rows()}


def _recording(line: str) -> dict[str, Any]:
    """The fields of a ``# fpureplay-record:`` header; ``{}`` when they do not parse.

    The header is a comment: a quoted field that is not JSON (``"\\q"``, a
    raw tab) must not stop the ingest of the trace below it.
    """
    from ingest.record import parse_record_header  # only traces from `record` need it

    try:
        return parse_record_header(line)
    except ValueError:  # json.JSONDecodeError
        return {}


def _conform(df: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """``df`` as exactly ``schema``: its columns in order and typed, the missing ones null."""
    return df.select(_conform_exprs(tuple(schema.items()), frozenset(df.columns)))


@functools.lru_cache(maxsize=256)
def _conform_exprs(
    schema: tuple[tuple[str, pl.DataType], ...], have: frozenset[str]
) -> list[pl.Expr]:
    # Cached: building the expressions costs more than running them on a small block.
    return [
        (pl.col(c).cast(t) if c in have else pl.lit(None, dtype=t)).alias(c) for c, t in schema
    ]


def head_lines(data: bytes, n: int = 200) -> list[str]:
    """The first ``n`` lines of ``data`` as text (for format detection)."""
    return data[: 1 << 16].decode("utf-8", "replace").splitlines()[:n]


def parse_text(text: str, fmt: str | None = None) -> pl.DataFrame:
    """Events of an inline trace (for tests, notebooks and docs examples).

    >>> parse_text("       CPU 0/KVM-4321  [000] .... 5123.000100: kvm_fpu: load")["fpu_load"][0]
    True
    """
    data = text.encode()
    if fmt is None:
        fmt = detect_format(head_lines(data))
        if fmt is None:
            raise InputError("<text>", "cannot tell the trace format from the first lines")
    frame, _ = split_lines(data, 1)
    return parse_block(frame, fmt).events
