"""Fuzz targets: arbitrary bytes through the ingest path, held to the ingest contract.

A target gets the bytes of one input file and runs what ``fpureplay ingest``
runs on it: :class:`ingest.reader.TraceInput` over a file holding the bytes,
:func:`ingest.load.iter_parsed` (``arrow=True``, as ingest calls it) and a
:class:`ingest.parse.SourceStats` folding the chunks in, with the format
forced (``tracefs``, ``trace-cmd``, ``perf-script``) or ``auto``.
:func:`check` then holds the result to the contract of docs/formats.md:

* **Errors**: nothing but :class:`ingest.errors.InputError` escapes.  With
  a forced format on plain text not even that (every line has a place);
  with ``auto`` only "cannot tell the trace format"; a compressed or
  ``.dat`` input may also be corrupt.
* **Text**: the blocks hold exactly the input's text (for gzip and zstd:
  all of it, every member and frame, as ``gzip -d`` / ``zstd -d`` decode
  it), numbered without gap from line 1.
* **Accounting**: ``source.lines == events + rejects + meta_lines``; the
  events and rejects have distinct line numbers in ``1..lines``, in order,
  so the meta lines are exactly the rest; ``event_counts`` sums to
  ``events``, ``lost_markers`` is the number of ``lost_events`` rows and
  ``lost_events`` the sum of their counts; ``invalid_utf8_lines`` is the
  number of lines that are not UTF-8; ``truncated`` says whether the text
  ends without a newline.
* **Rejects**: each keeps its line's exact bytes in ``raw`` (the CR of a
  CRLF line included), its text with U+FFFD for bad bytes and without the
  CR in ``text``, and one of the documented reasons, prefixed
  "truncated last line" exactly when it is the cut-off last line.
* **Schemas**: every chunk's frames have the tables' schemas, so the
  Parquet writer can append them.
* **Blocks do not matter**: the same text cut into other blocks (the first
  line alone, then the rest: a cut the real reader only makes in inputs of
  megabytes) gives the same events, rejects and figures, but for the time
  of a lost-events marker (taken from its own block).  Each block learns
  its own timestamp layout, so this also pits the parser's fast-path
  layers against each other and against the header regex.

A violation raises :class:`PropertyViolation`; any other exception is a
crasher.  Under atheris, :func:`features` also turns what each input became
(event kinds, flag widths, reject reasons, ...) into coverage edges: the
parser is vectorized polars, so the Python branches alone tell the fuzzer
little about which kinds of lines an input reached.
"""

from __future__ import annotations

import atexit
import gzip
import io
import itertools
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import polars as pl
import zstandard

from ingest.errors import InputError
from ingest.events import DECODED_EVENTS
from ingest.load import iter_parsed
from ingest.parse import SourceStats
from ingest.reader import DEFAULT_BLOCK_BYTES, GZIP_MAGIC, ZSTD_MAGIC, Block, TraceInput
from ingest.schema import EVENTS_SCHEMA, LOST_EVENTS, REJECTS_SCHEMA
from ingest.tracecmd import DAT_MAGIC

FORMATS = ("tracefs", "trace-cmd", "perf-script")
#: One target per format (the format forced) and one for detection.
TARGETS = (*FORMATS, "auto")
#: The saved corpus: one directory of seeds per format.
CORPUS = Path(__file__).resolve().parent / "corpus"

TRUNCATED = "truncated last line (no newline at end of input); "
NO_FORM = ": arguments match no known format of this event"
UNDETECTED = "cannot tell the trace format"


class PropertyViolation(AssertionError):
    """The ingest path broke its contract on an input."""


def corpus_dirs(target: str) -> list[Path]:
    """The saved corpus directories a target starts from (``auto``: all formats')."""
    return [CORPUS / f for f in (FORMATS if target == "auto" else (target,))]


@dataclass
class Outcome:
    """What the ingest path made of one input."""

    source: TraceInput
    format: str
    stats: SourceStats | None  # None: the input held no line
    blocks: list[Block]
    events: pl.DataFrame
    rejects: pl.DataFrame

    @property
    def text(self) -> bytes:
        """The text the parser saw: the blocks' bytes, in order."""
        return b"".join(bytes(b.data) for b in self.blocks)


def ingest(source: TraceInput, fmt: str) -> Outcome:
    """Run ``source`` through the ingest loop: ingest.load's per-source loop, minus Parquet."""
    stats: SourceStats | None = None
    blocks: list[Block] = []
    events, rejects = [EVENTS_SCHEMA.to_frame()], [REJECTS_SCHEMA.to_frame()]
    for block, chunk, invalid in iter_parsed(source, fmt, arrow=True):
        stats = stats or SourceStats(source.format or fmt)
        stats.add(chunk)
        stats.invalid_utf8_lines += invalid
        _require(chunk.events.schema == EVENTS_SCHEMA, f"events schema {chunk.events.schema}")
        _require(chunk.rejects.schema == REJECTS_SCHEMA, f"rejects schema {chunk.rejects.schema}")
        _require(chunk.arrow_events is not None, "no Arrow events for the Parquet writer")
        blocks.append(block)
        events.append(chunk.events)
        rejects.append(chunk.rejects)
    return Outcome(
        source=source,
        format=source.format or fmt,
        stats=stats,
        blocks=blocks,
        events=pl.concat(events),
        rejects=pl.concat(rejects),
    )


class CutInput(TraceInput):
    """Text already in memory, read as the blocks :func:`cut_points` chooses."""

    def __init__(self, text: bytes) -> None:
        super().__init__("<fuzz>")
        self._text = text

    def blocks(
        self, block_bytes: int = DEFAULT_BLOCK_BYTES, *, count_lines: bool = True
    ) -> Iterator[Block]:
        """The text's whole lines in blocks, then a cut-off last line alone, as the reader does."""
        text = self._text
        whole = text.rfind(b"\n") + 1
        ends = [i + 1 for i, byte in enumerate(text[:whole]) if byte == 10]
        start = 0
        for k in cut_points(len(ends)):
            yield self._numbered(text[start : ends[k - 1]], count_lines)
            start = ends[k - 1]
        if whole > start:
            yield self._numbered(text[start:whole], count_lines)
        if whole < len(text):
            self.truncated = True
            yield self._numbered(text[whole:], count_lines, truncated=True)


def cut_points(n: int) -> list[int]:
    """Line counts after which a text of ``n`` whole lines is cut: after the first line.

    A block of one line learns its timestamp layout (and, with ``auto``, its
    format) from that line alone, the rest from the others: the two halves
    take other fast-path layers than the whole text did.  One cut: every
    block costs a parse, and the fuzzer's time is better spent on inputs.
    """
    return [1] if n > 1 else []


def plain_text(data: bytes) -> bytes | None:
    """The text a reader must find in ``data``, or None when no independent decoder says
    (a corrupt or cut-off compressed stream, a trace-cmd ``.dat`` file)."""
    if data.startswith(DAT_MAGIC):
        return None
    if data.startswith(GZIP_MAGIC):
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            return None
    if data.startswith(ZSTD_MAGIC):
        reader = zstandard.ZstdDecompressor().stream_reader(
            io.BytesIO(data), read_across_frames=True
        )
        try:
            text = reader.read()
        except zstandard.ZstdError:
            return None
        # stream_reader stops quietly inside a cut-off frame: that is no answer either
        return text if _zstd_complete(data) else None
    return data


def _zstd_complete(data: bytes) -> bool:
    """Whether ``data`` is whole zstd frames (each decoder ends at its frame's end)."""
    rest = data
    while rest:
        decomp = zstandard.ZstdDecompressor().decompressobj()
        try:
            decomp.decompress(rest)
        except zstandard.ZstdError:
            return False
        if not decomp.eof:
            return False
        rest = decomp.unused_data
    return True


def split_text(text: bytes) -> list[bytes]:
    """The lines of ``text``: cut at each newline, which is dropped, and the last line
    kept when no newline ends it."""
    lines = text.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def check(data: bytes, fmt: str) -> Outcome | None:
    """Feed ``data`` to the ingest path with format ``fmt`` and hold the result to the contract.

    Returns what ingest made of it, or None when it refused the input (an
    allowed InputError).  Raises :class:`PropertyViolation` on a broken
    promise; any other exception is a crasher of the ingest path itself.
    """
    text = plain_text(data)
    plain = not data.startswith((DAT_MAGIC, GZIP_MAGIC, ZSTD_MAGIC))
    try:
        whole = ingest(TraceInput(str(_scratch(data))), fmt)
    except InputError as exc:
        _require(not (plain and fmt != "auto"), f"InputError on plain text, {fmt} forced: {exc}")
        _require(not plain or exc.reason.startswith(UNDETECTED), f"unexpected InputError: {exc}")
        return None
    if text is not None:
        _require(whole.text == text, "the blocks do not hold the input's text")
    check_accounting(whole)
    if len(whole.blocks) < whole.source.lines:  # one line per block already: nothing to cut
        cut = ingest(CutInput(whole.text), whole.format)
        check_accounting(cut)
        check_same(whole, cut)
    return whole


def check_accounting(out: Outcome) -> None:
    """Every line of ``out.text`` is an event, a reject or a meta line, counted exactly."""
    text, source, stats = out.text, out.source, out.stats
    lines = split_text(text) if text else []
    _require(source.lines == len(lines), f"source.lines {source.lines} != {len(lines)} lines")
    _require(source.truncated == (text[-1:] not in (b"", b"\n")), "source.truncated is wrong")
    first = 1
    for block in out.blocks:
        _require(block.first_line_no == first, f"block numbered {block.first_line_no}, not {first}")
        first += bytes(block.data).count(b"\n") + (1 if block.truncated else 0)
    if stats is None:
        _require(not lines and out.events.height == out.rejects.height == 0, "lines, no stats")
        return
    n_events, n_rejects = out.events.height, out.rejects.height
    _require(
        (stats.events, stats.rejects) == (n_events, n_rejects),
        f"stats count {stats.events} events, {stats.rejects} rejects; the frames hold "
        f"{n_events}, {n_rejects}",
    )
    _require(
        source.lines == stats.events + stats.rejects + stats.meta_lines,
        f"{source.lines} lines != {stats.events} events + {stats.rejects} rejects + "
        f"{stats.meta_lines} meta lines",
    )
    ev_lines = out.events["line_no"].to_list()
    rj_lines = out.rejects["line_no"].to_list()
    _require(all(a < b for a, b in itertools.pairwise(ev_lines)),
             "events are not in line order (or repeat a line)")
    _require(all(a < b for a, b in itertools.pairwise(rj_lines)),
             "rejects are not in line order (or repeat a line)")
    taken = set(ev_lines) | set(rj_lines)
    _require(len(taken) == n_events + n_rejects, "a line is both an event and a reject")
    _require(taken <= set(range(1, len(lines) + 1)), "a row names a line that does not exist")
    _require(sum(stats.event_counts.values()) == n_events, "event_counts do not sum to events")
    lost = out.events.filter(pl.col("event") == LOST_EVENTS)
    _require(stats.lost_markers == lost.height, "lost_markers != lost_events rows")
    _require(stats.lost_events == int(lost["lost_count"].fill_null(0).sum()),
             "lost_events != the markers' counts")
    invalid = sum(1 for ln in lines if not _is_utf8(ln))
    _require(stats.invalid_utf8_lines == invalid,
             f"invalid_utf8_lines {stats.invalid_utf8_lines} != {invalid}")
    truncated_line = len(lines) if source.truncated else None
    for line_no, text_, raw, reason in out.rejects.iter_rows():
        line = lines[line_no - 1]
        _require(raw == line, f"line {line_no}: reject raw {raw!r} != {line!r}")
        want = line.decode("utf-8", "replace").removesuffix("\r")
        _require(text_ == want, f"line {line_no}: reject text {text_!r} != {want!r}")
        _require(_reason_ok(reason, out.format, line_no == truncated_line),
                 f"line {line_no}: reason {reason!r}")


def _reason_ok(reason: str, fmt: str, truncated: bool) -> bool:
    if truncated != reason.startswith(TRUNCATED):
        return False
    reason = reason.removeprefix(TRUNCATED)
    return reason == f"not a {fmt} event line" or (
        reason.endswith(NO_FORM) and reason.removesuffix(NO_FORM) in DECODED_EVENTS
    )


def _figures(stats: SourceStats | None) -> dict[str, Any]:
    """Every public figure of ``stats`` (the fields a later SourceStats gains included)."""
    if stats is None:
        return {}
    return {f.name: getattr(stats, f.name) for f in fields(stats) if not f.name.startswith("_")}


def check_same(a: Outcome, b: Outcome) -> None:
    """``a`` and ``b``, one text read as different blocks, say the same about every line."""
    lost = pl.col("event") == LOST_EVENTS
    untimed = pl.when(lost).then(None).otherwise(pl.col("ts_ns")).alias("ts_ns")
    ea, eb = a.events.with_columns(untimed), b.events.with_columns(untimed)
    if not ea.equals(eb):
        differ = ea.join(eb, on=ea.columns, how="anti", nulls_equal=True)
        line = differ["line_no"][0] if differ.height else None
        raise PropertyViolation(f"events depend on the block boundaries (line {line})")
    _require(a.rejects.equals(b.rejects), "rejects depend on the block boundaries")
    fa, fb = _figures(a.stats), _figures(b.stats)
    _require(fa == fb, f"figures depend on the block boundaries: {fa} != {fb}")


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise PropertyViolation(what)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# -- the file a target writes its input to ------------------------------------------------

_SCRATCH: Path | None = None


def use_scratch_file(path: Path) -> None:
    """Write each input to ``path`` (a fuzzer's work directory: libFuzzer ends the
    process without Python's exit handlers, so a temporary directory would stay)."""
    global _SCRATCH
    path.parent.mkdir(parents=True, exist_ok=True)
    _SCRATCH = path


def _scratch(data: bytes) -> Path:
    """A file holding ``data``, rewritten for every input."""
    global _SCRATCH
    if _SCRATCH is None:
        shm = Path("/dev/shm")
        root = tempfile.mkdtemp(prefix="fpureplay-fuzz-", dir=shm if shm.is_dir() else None)
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _SCRATCH = Path(root) / "input"
    _SCRATCH.write_bytes(data)
    return _SCRATCH


# -- coverage feedback ---------------------------------------------------------------------

#: Feature buckets; each is one coverage edge when feedback is on.
N_FEATURES = 1024
_EDGES: list[Callable[[], int]] = []


def features(out: Outcome) -> set[int]:
    """Buckets of :func:`feature_names`, the coverage edges an input reaches."""
    return {zlib.crc32(n.encode()) % N_FEATURES for n in feature_names(out)}


def feature_names(out: Outcome) -> set[str]:
    """What ``out`` holds: each kind of event row, reject reason and figure (log2) seen."""
    names: set[str] = {f"format={out.format}", f"compression={out.source.compression}"}
    if out.stats is not None:
        s = out.stats
        for figure in ("meta_lines", "lost_markers", "lost_events", "buffer_started",
                       "invalid_utf8_lines", "ts_backwards", "rejects", "events"):
            names.add(f"{figure}:log2={_log2(getattr(s, figure))}")
        names |= {f"instances:log2={_log2(len(s.instances))}", f"kernel={s.kernel is not None}",
                  f"recording={bool(s.recording)}", f"truncated={out.source.truncated}",
                  f"blocks={len(out.blocks)}"}
    ev = out.events
    if ev.height:
        kinds = ev.select(
            pl.col("event").replace_strict(
                {e: e for e in (*DECODED_EVENTS, LOST_EVENTS)}, default="other",
                return_dtype=pl.String,
            ),
            pl.col("flags").str.len_bytes().fill_null(0),
            pl.col("tgid").is_null(),
            pl.col("ts_ns").is_null(),
            pl.col("comm").str.contains(r"[ :/<-]").fill_null(False).alias("odd_comm"),
            pl.col("lost_count").is_null(),
            pl.col("prev_state").str.len_bytes().fill_null(0).clip(0, 3),
            pl.col("ioctl_cmd").str.starts_with("KVM").fill_null(False),
        ).unique()
        names |= {"event:" + repr(row) for row in kinds.iter_rows()}
    if out.rejects.height:
        reasons = out.rejects["reason"].unique().to_list()
        names |= {"reject:" + r for r in reasons}
    return names


def _log2(n: int) -> int:
    """0 for 0, else 1 + floor(log2 n): libFuzzer's way of bucketing counts."""
    return n.bit_length()


def enable_feedback(instrument: Callable[[Callable[..., Any]], Any]) -> None:
    """Make each feature bucket a coverage edge: a function of its own, instrumented.

    ``instrument`` is ``atheris.instrument_func``.  Each bucket needs its own
    code object (a lambda made in a loop shares one), hence the generated source.
    """
    scope: dict[str, Any] = {}
    exec(
        "\n".join(f"def _edge{k}():\n    return {k}" for k in range(N_FEATURES)), scope
    )
    _EDGES[:] = [instrument(scope[f"_edge{k}"]) for k in range(N_FEATURES)]


def fuzz_one(data: bytes, target: str) -> Outcome | None:
    """One execution of ``target`` (a format, or ``auto``) on ``data``."""
    out = check(data, target)
    if out is not None and _EDGES:
        for k in features(out):
            _EDGES[k]()
    return out
