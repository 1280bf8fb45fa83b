"""Parse blocks of trace lines into `events` and `rejects` frames, vectorized.

Two passes, as LISA does: a header pass splits every line into task, pid,
CPU, flags, timestamp, event name and raw ``args`` (one regular expression
per format, run on the first 256 characters of the line); a decode pass
types the args of the events declared in :mod:`ingest.events`.  Lines that
are neither events nor known non-event lines (headers, comments,
lost-event markers) become rejects; nothing is dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import polars as pl

from ingest import perfscript, tracecmd, tracefs
from ingest.detect import FORMATS, detect_format
from ingest.errors import InputError
from ingest.events import decode_args
from ingest.lines import split_lines
from ingest.schema import EVENTS_SCHEMA, LOST_EVENTS, REJECTS_SCHEMA

HEADER_SLICE = 256

_HEADERS = {
    tracefs.NAME: tracefs.HEADER,
    tracecmd.NAME: tracecmd.HEADER,
    perfscript.NAME: perfscript.HEADER,
}

#: Lines that carry no event and are not errors.
_META = r"^\s*$|^\s*#|^(?:cpus=\d+|version = \d+|CPU \d+ is empty)\s*$"
#: Lost-event markers: tracefs/trace_pipe, trace-cmd, perf script --show-lost-events.
_LOST = (
    r"^\s*(?:[^\s:]+: )?CPU:?\s*(?P<cpu>\d+)\s*\[(?:LOST (?P<n1>\d+) EVENTS"
    r"|(?P<n2>\d+) EVENTS DROPPED|EVENTS DROPPED)\]"
    r"|\[(?P<cpu2>\d+)\].*\bLOST (?P<n3>\d+) events!"
)
_KERNEL_LINES = (
    r"^#\s*(?:os release\s*:|kernel\s*[:=]|fpureplay-record:.*\bkernel=)\s*(?P<kernel>\S+)"
)


@dataclass
class Chunk:
    """What one block of lines became."""

    events: pl.DataFrame
    rejects: pl.DataFrame
    meta_lines: int
    lost_markers: int
    lost_events: int
    buffer_started: int
    instances: set[str]
    kernel: str | None


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
    _last_ts_by_cpu: dict[int, int] = field(default_factory=dict, repr=False)

    def add(self, chunk: Chunk) -> None:
        """Fold one chunk's figures in."""
        ev = chunk.events
        self.events += ev.height
        self.rejects += chunk.rejects.height
        self.meta_lines += chunk.meta_lines
        self.lost_markers += chunk.lost_markers
        self.lost_events += chunk.lost_events
        self.buffer_started += chunk.buffer_started
        self.instances |= chunk.instances
        self.kernel = self.kernel or chunk.kernel
        if ev.height == 0:
            return
        for name, n in ev["event"].value_counts().iter_rows():
            self.event_counts[name] = self.event_counts.get(name, 0) + n
        real = ev.filter(pl.col("event") != LOST_EVENTS)
        if real.height:
            lo, hi = real["ts_ns"].min(), real["ts_ns"].max()
            self.first_ts_ns = lo if self.first_ts_ns is None else min(self.first_ts_ns, lo)
            self.last_ts_ns = hi if self.last_ts_ns is None else max(self.last_ts_ns, hi)
        self.cpus |= set(ev["cpu"].drop_nulls().unique().to_list())
        vcpu = ev.filter(
            pl.col("event").is_in(["kvm_fpu", "kvm_entry", "kvm_userspace_exit"])
            | (pl.col("ioctl_cmd") == "KVM_RUN")
        )
        self.vcpu_pids |= set(vcpu["pid"].unique().to_list())
        self._count_backwards(real)

    def _count_backwards(self, ev: pl.DataFrame) -> None:
        # Within a CPU the ring buffer is in time order; a step back means a
        # clock or merge problem the replay should know about.
        per_cpu = ev.select("cpu", "ts_ns").with_columns(
            pl.col("ts_ns").shift(1).over("cpu").alias("prev")
        )
        self.ts_backwards += int(per_cpu.filter(pl.col("ts_ns") < pl.col("prev")).height)
        firsts = per_cpu.group_by("cpu", maintain_order=True).agg(
            pl.col("ts_ns").first().alias("first"), pl.col("ts_ns").last().alias("last")
        )
        for cpu, first, last in firsts.iter_rows():
            before = self._last_ts_by_cpu.get(cpu)
            if before is not None and first < before:
                self.ts_backwards += 1
            self._last_ts_by_cpu[cpu] = last


def _ts_ns(secs: pl.Expr, frac: pl.Expr) -> pl.Expr:
    # Exact: "2194.928432" is 2194 s + "928432" padded to 9 digits of ns.
    # Without a fraction (counter clocks) the number is taken as is.
    whole = secs.cast(pl.Int64, strict=False)
    nanos = frac.str.pad_end(9, "0").str.slice(0, 9).cast(pl.Int64, strict=False)
    return pl.when(frac.is_null()).then(whole).otherwise(whole * 1_000_000_000 + nanos)


def parse_block(lines: pl.DataFrame, fmt: str, *, truncated: bool = False) -> Chunk:
    """Parse numbered lines (``line_no``, ``line``, ``raw``) of a trace in format ``fmt``."""
    if fmt not in _HEADERS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    line = pl.col("line")
    df = lines.with_columns(
        line.str.contains(_META).alias("is_meta"),
        line.str.extract_groups(_LOST).alias("lost"),
    )
    if fmt == tracecmd.NAME:
        df = df.with_columns(line.str.extract(tracecmd.INSTANCE_PREFIX, 1).alias("instance"))
        body = pl.when(pl.col("instance").is_null()).then(line).otherwise(
            line.str.slice(pl.col("instance").str.len_chars() + 2)
        )
    else:
        df = df.with_columns(pl.lit(None, dtype=pl.String).alias("instance"))
        body = line
    lost = pl.col("lost")
    is_lost = (lost.struct.field("cpu").is_not_null() | lost.struct.field("cpu2").is_not_null())
    df = df.with_columns(body.alias("body"), is_lost.alias("is_lost"))
    candidate = ~pl.col("is_meta") & ~pl.col("is_lost")
    header = _HEADERS[fmt]
    df = df.with_columns(
        pl.when(candidate).then(pl.col("body").str.slice(0, HEADER_SLICE))
        .str.extract_groups(header).alias("h")
    )
    # Headers longer than the slice (very long comms, padding) get a second try.
    retry = candidate & pl.col("h").struct.field("hdr").is_null()
    if df.select(retry.any()).item():
        df = df.with_columns(
            pl.when(retry)
            .then(pl.col("body").str.extract_groups(header))
            .otherwise(pl.col("h"))
            .alias("h")
        )
    groups = set(re.compile(header).groupindex)

    def field(name: str) -> pl.Expr:
        if name in groups:
            return pl.col("h").struct.field(name)
        return pl.lit(None, dtype=pl.String)

    sep = field("sep").str.strip_chars()
    raw_event = field("event")
    after = pl.col("body").str.slice(field("hdr").str.len_chars())
    df = df.with_columns(
        field("comm").str.strip_chars_start().alias("comm"),
        field("pid").cast(pl.Int32, strict=False).alias("pid"),
        field("tgid").cast(pl.Int32, strict=False).alias("tgid"),
        field("cpu").cast(pl.Int32, strict=False).alias("cpu"),
        field("flags").alias("flags"),
        _ts_ns(field("secs"), field("frac")).alias("ts_ns"),
        # tracefs prints syscall events as "sys_ioctl(...)" and "sys_ioctl -> ret"
        pl.when(sep == "(")
        .then(pl.lit("sys_enter_") + raw_event.str.strip_prefix("sys_"))
        .when(sep == "->")
        .then(pl.lit("sys_exit_") + raw_event.str.strip_prefix("sys_"))
        .otherwise(raw_event)
        .alias("event"),
        pl.when(sep == "(")
        .then(after.str.strip_suffix(")"))
        .otherwise(after.str.strip_chars_start())
        .alias("args"),
    )
    parsed = df.filter(pl.col("h").struct.field("hdr").is_not_null())
    parsed = decode_args(parsed)
    bad_args = parsed.filter(~pl.col("decoded"))
    events = parsed.filter(pl.col("decoded"))

    lost_rows = df.filter(pl.col("is_lost")).select(
        "line_no",
        pl.coalesce(lost.struct.field("cpu"), lost.struct.field("cpu2"))
        .cast(pl.Int32)
        .alias("cpu"),
        pl.lit(LOST_EVENTS).alias("event"),
        pl.col("line").alias("args"),
        pl.coalesce(lost.struct.field("n1"), lost.struct.field("n2"), lost.struct.field("n3"))
        .cast(pl.Int64)
        .alias("lost_count"),
    )
    events = pl.concat(
        [events.select([c for c in EVENTS_SCHEMA.names() if c in events.columns]), lost_rows],
        how="diagonal_relaxed",
    )
    events = _conform(events.sort("line_no"), EVENTS_SCHEMA)
    if lost_rows.height:
        # A marker stands where the gap is: give it the time of the next event.
        events = events.with_columns(
            pl.col("ts_ns").fill_null(strategy="backward").fill_null(strategy="forward")
        )

    unparsed = df.filter(candidate & pl.col("h").struct.field("hdr").is_null())
    last_line = lines["line_no"].max() if truncated else None
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
                (
                    pl.col("event")
                    + pl.lit(": arguments match no known format of this event")
                ).alias("reason"),
            ),
        ]
    ).sort("line_no")
    if last_line is not None:
        rejects = rejects.with_columns(
            pl.when(pl.col("line_no") == last_line)
            .then(pl.lit("truncated last line (no newline at end of input); ") + pl.col("reason"))
            .otherwise(pl.col("reason"))
            .alias("reason")
        )
    rejects = _conform(rejects, REJECTS_SCHEMA)

    meta = df.filter(pl.col("is_meta"))
    kernels = meta["line"].str.extract(_KERNEL_LINES, 1).drop_nulls()
    return Chunk(
        events=events,
        rejects=rejects,
        meta_lines=meta.height,
        lost_markers=lost_rows.height,
        lost_events=int(lost_rows["lost_count"].fill_null(0).sum()),
        buffer_started=int(meta["line"].str.contains(r"^#+ CPU \d+ buffer started").sum()),
        instances=set(df["instance"].drop_nulls().unique().to_list()),
        kernel=kernels[0] if kernels.len() else None,
    )


def _conform(df: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    return df.select(
        [
            (pl.col(c).cast(t) if c in df.columns else pl.lit(None, dtype=t)).alias(c)
            for c, t in schema.items()
        ]
    )


def head_lines(data: bytes, n: int = 200) -> list[str]:
    """The first ``n`` lines of ``data`` as text (for format detection)."""
    return data[: 1 << 16].decode("utf-8", "replace").splitlines()[:n]


def parse_text(text: str, fmt: str | None = None) -> pl.DataFrame:
    """Events of an inline trace (for tests, notebooks and docs examples).

    >>> parse_text("  CPU 0/KVM-4321  [000] .... 5123.000100: kvm_fpu: load")["fpu_load"][0]
    True
    """
    data = text.encode()
    if fmt is None:
        fmt = detect_format(head_lines(data))
        if fmt is None:
            raise InputError("<text>", "cannot tell the trace format from the first lines")
    frame, _ = split_lines(data, 1)
    return parse_block(frame, fmt).events

