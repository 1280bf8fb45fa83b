"""Ingest trace files into a dataset: parse in parallel, write aside, swap in.

One :class:`SourceReport` per input says what happened to it (added, or
already present by sha256) with the figures the CLI summary and the
manifest show.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from ingest import dataset as ds
from ingest.detect import detect_format
from ingest.errors import InputError
from ingest.lines import split_lines
from ingest.parse import Chunk, SourceStats, head_lines, parse_block
from ingest.reader import DEFAULT_BLOCK_BYTES, Block, TraceInput
from ingest.schema import EVENTS_SCHEMA, REJECTS_SCHEMA

#: progress callback: (path, raw bytes read so far, total bytes or None)
Progress = Callable[[str, int, int | None], None]


@dataclass
class SourceReport:
    """What ingest did with one input."""

    id: str
    path: str
    status: str  # "added" or "already present"
    stats: SourceStats | None  # None when skipped before parsing
    entry: dict[str, Any] | None
    sha256: str
    compression: str | None
    truncated: bool
    lines: int
    host: str = ds.UNKNOWN_HOST
    #: the task's private partition tree, until the coordinator adopts it
    incoming: str | None = None
    #: the manifest keys a replay in the same task added (pipeline.fleet)
    replay: dict[str, Any] | None = None
    #: why the input failed (status "failed"), for `--on-error skip`'s summary
    error: str | None = None

    @classmethod
    def of_entry(cls, entry: dict[str, Any], *, status: str, **more: Any) -> SourceReport:
        """A report about a source the dataset already lists (``more``: fields to set)."""
        fields: dict[str, Any] = {
            "id": entry["id"],
            "path": entry["path"],
            "status": status,
            "stats": None,
            "entry": entry,
            "sha256": entry["sha256"],
            "compression": entry.get("compression"),
            "truncated": entry.get("truncated", False),
            "lines": entry["lines"],
            "host": entry["host"],
        }
        return cls(**(fields | more))

    def manifest_entry(self) -> dict[str, Any]:
        """The manifest's `sources[]` entry for this input."""
        if self.entry is not None:
            return self.entry
        s = self.stats
        assert s is not None
        entry = {
            "id": self.id,
            "host": self.host,
            "path": self.path,
            "sha256": self.sha256,
            "format": s.format,
            "compression": self.compression,
            "kernel": s.kernel,
            "recording": s.recording or None,
            "lines": self.lines,
            "events": s.events,
            "rejects": s.rejects,
            "meta_lines": s.meta_lines,
            "lost_markers": s.lost_markers,
            "lost_events": s.lost_events,
            "buffer_started_markers": s.buffer_started,
            "truncated": self.truncated,
            "invalid_utf8_lines": s.invalid_utf8_lines,
            "ts_backwards": s.ts_backwards,
            "first_ts_ns": s.first_ts_ns,
            "last_ts_ns": s.last_ts_ns,
            "cpus": sorted(s.cpus),
            "vcpu_threads": sorted(s.vcpu_pids),
            "instances": sorted(s.instances),
            "event_counts": dict(sorted(s.event_counts.items())),
            "recorded_policy": "undetermined",
            "recorded_policy_evidence": ["not replayed yet: run `fpureplay replay`"],
        }
        return {**entry, **(self.replay or {})}

    def summary_row(self) -> dict[str, Any]:
        """One row of the per-input summary; a failed input has its reason."""
        if self.status == "failed":
            e: dict[str, Any] = {}
            span = None
        else:
            e = self.manifest_entry()
            first, last = e["first_ts_ns"], e["last_ts_ns"]
            span = (last - first) / 1e9 if first is not None and last is not None else None
        return {
            "source": self.id or None,
            "host": self.host if self.status != "failed" else None,
            "path": self.path,
            "status": self.status,
            "format": e.get("format"),
            "lines": e.get("lines"),
            "events": e.get("events"),
            "rejects": e.get("rejects"),
            "lost_markers": e.get("lost_markers"),
            "vcpu_threads": len(e["vcpu_threads"]) if e else None,
            "span_s": round(span, 6) if span is not None else None,
            "reason": self.error,
        }


def events_entry(
    events: pl.DataFrame,
    *,
    source_id: str,
    path: str,
    sha256: str,
    fmt: str,
    host: str = ds.UNKNOWN_HOST,
) -> dict[str, Any]:
    """The manifest's `sources[]` entry of a source given as an events frame.

    Same keys and figures as a parsed trace's entry (SourceReport), for
    sources with no text behind them: every line is an event.
    """
    from ingest.parse import chunk_of_events

    stats = SourceStats(fmt)
    stats.add(chunk_of_events(events))
    report = SourceReport(
        id=source_id,
        path=path,
        status="added",
        stats=stats,
        entry=None,
        sha256=sha256,
        compression=None,
        truncated=False,
        lines=events.height,
        host=host,
    )
    return report.manifest_entry()


def iter_parsed(
    source: TraceInput,
    fmt: str = "auto",
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    workers: int = 2,
    arrow: bool = False,
) -> Iterator[tuple[Block, Chunk, int]]:
    """Parse ``source`` block by block, ``workers`` blocks at a time, in order.

    polars releases the GIL, so threads give real parallelism; at most
    ``workers + 1`` blocks are in flight, which bounds memory.  ``arrow``:
    the workers also convert each chunk's frames for the Parquet writer
    (``Chunk.arrow_events``, ``arrow_rejects``), off the reading thread.
    """
    # The reader does not count lines (split_lines does anyway): each job
    # learns where its block starts from the job before it, as soon as that
    # one has split its block, and tells the next.  Jobs start in order, so
    # the one a job waits for is always running.
    blocks = source.blocks(block_bytes, count_lines=False)

    def job(
        block: Block, fmt: str, start: Future[int], after: Future[int]
    ) -> tuple[Block, Chunk, int, int]:
        try:
            frame, invalid = split_lines(block.data, 1)
            first = start.result()
            after.set_result(first + frame.height)
        except BaseException as exc:
            if not after.done():
                after.set_exception(exc)
            raise
        if first != 1:
            frame = frame.with_columns(pl.col("line_no") + (first - 1))
        block.first_line_no = first
        chunk = parse_block(frame, fmt, truncated=block.truncated)
        if arrow:
            chunk.arrow_events = ds.PartitionWriter.arrow(chunk.events)
            if chunk.rejects.height:
                chunk.arrow_rejects = ds.PartitionWriter.arrow(chunk.rejects)
        return block, chunk, invalid, frame.height

    def numbered(done: Future[tuple[Block, Chunk, int, int]]) -> tuple[Block, Chunk, int]:
        block, chunk, invalid, n = done.result()
        source.lines += n
        return block, chunk, invalid

    start: Future[int] = Future()
    start.set_result(1)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: deque[Future[tuple[Block, Chunk, int, int]]] = deque()
        for block in blocks:
            if fmt == "auto":
                fmt = detect_format(head_lines(block.data)) or ""
                if not fmt:
                    first = (head_lines(block.data, 1) or [""])[0]
                    raise InputError(
                        source.display_path,
                        "cannot tell the trace format from the first lines (first line: "
                        f"{first[:80]!r}); expected tracefs, trace-cmd report or perf script "
                        "text, or pass --format",
                        line=1,
                    )
            source.format = fmt
            after: Future[int] = Future()
            pending.append(pool.submit(job, block, fmt, start, after))
            start = after
            while len(pending) > max(1, workers):
                yield numbered(pending.popleft())
        while pending:
            yield numbered(pending.popleft())


def parse_file(path: str, fmt: str = "auto") -> pl.DataFrame:
    """All events of one trace file (any supported format) as one frame."""
    parts = [chunk.events for _, chunk, _ in iter_parsed(TraceInput(path), fmt)]
    return pl.concat(parts) if parts else EVENTS_SCHEMA.to_frame()


def ingest_traces(
    paths: Sequence[str],
    out: Path,
    *,
    fmt: str = "auto",
    force: bool = False,
    strict: bool = False,
    host: str | None = None,
    jobs: int = 1,
    executor: str = "local",
    scheduler: str | None = None,
    on_error: str = "raise",
    workers: int = 2,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    progress: Progress | None = None,
) -> list[SourceReport]:
    """Parse ``paths`` into the dataset ``out`` and return one report per input.

    ``paths`` may name files, directories and globs (ingest.inputs).  A new
    ``out`` is created.  An existing dataset gains the inputs it does not
    hold yet (same sha256: skipped); ``force`` replaces it with exactly these
    inputs.  ``strict`` makes any reject or lost-event marker an
    :class:`InputError`.  Each input is an independent task (ingest.fleet):
    in this process (``jobs=1``), in ``jobs`` local worker processes, or on a
    Dask cluster (``executor="dask"``).  ``on_error="raise"`` leaves the
    dataset as it was on any error; ``"skip"`` keeps the inputs that went in
    and reports the others as failed.
    """
    from ingest.fleet import FleetOptions, run_ingest

    options = FleetOptions(
        jobs=jobs, executor=executor, scheduler=scheduler, on_error=on_error, progress=progress
    )
    task = IngestTask(
        fmt=fmt, strict=strict, host=host, workers=workers, block_bytes=block_bytes
    )
    return run_ingest(paths, Path(out), task, options, force=force)


@dataclass(frozen=True)
class IngestTask:
    """How to ingest each input (everything a worker needs besides the path)."""

    fmt: str = "auto"
    strict: bool = False
    host: str | None = None  # --host: overrides the path's and the header's
    workers: int = 2
    block_bytes: int = DEFAULT_BLOCK_BYTES


def new_manifest() -> dict[str, Any]:
    """The manifest of an empty dataset."""
    return {"schema_version": ds.SCHEMA_VERSION, "tool_version": ds.tool_version(), "sources": []}


def ingest_source(
    path: str,
    root: Path,
    task: IngestTask,
    *,
    path_host: str | None = None,
    known: Collection[str] = (),
    progress: Progress | None = None,
) -> SourceReport:
    """Parse one input into a private incoming tree of the staged dataset ``root``.

    Safe to run in a worker process: it writes only below
    ``root/_incoming/<uuid>/`` (SourceReport.incoming), which the coordinator
    moves into place with :func:`ingest.dataset.adopt`.  ``known`` holds the
    sha256 of the sources already in the dataset: a file with one of them is
    not parsed, and its report (status "already present", no entry) is
    completed by the coordinator, which holds the entries.
    """
    source = TraceInput(path)
    regular = path != "-" and os.path.isfile(path)
    if regular and known:
        # Hashing is far cheaper than parsing: skip inputs already present.
        sha = _file_sha256(path)
        if sha in known:
            return SourceReport(
                id="",
                path=source.display_path,
                status="already present",
                stats=None,
                entry=None,
                sha256=sha,
                compression=None,
                truncated=False,
                lines=0,
            )
    total = os.path.getsize(path) if regular else None
    incoming = ds.incoming_dir(root)
    writer = ds.BackgroundWriter(
        ds.PartitionWriter(incoming / "events.parquet", EVENTS_SCHEMA),
        ds.PartitionWriter(incoming / "rejects.parquet", REJECTS_SCHEMA),
    )
    stats: SourceStats | None = None
    first_reject: tuple[int, str] | None = None
    try:
        for _block, chunk, invalid in iter_parsed(
            source, task.fmt, block_bytes=task.block_bytes, workers=task.workers, arrow=True
        ):
            stats = stats or SourceStats(source.format or task.fmt)
            stats.add(chunk)
            stats.invalid_utf8_lines += invalid
            if chunk.rejects.height and first_reject is None:
                first_reject = (chunk.rejects["line_no"][0], chunk.rejects["reason"][0])
            if task.strict and (first_reject or stats.lost_markers):
                _strict_failure(source, first_reject, chunk)
            writer.put(
                chunk.arrow_events if chunk.arrow_events is not None else chunk.events,
                (chunk.arrow_rejects if chunk.arrow_rejects is not None else chunk.rejects)
                if chunk.rejects.height
                else None,
            )
            if progress:
                progress(source.display_path, source.bytes, total)
    except BaseException:
        writer.abandon()
        raise
    writer.close()
    if stats is None:
        raise InputError(source.display_path, "is empty: no trace lines")
    stats.kernel = source.kernel or stats.kernel
    sid = ds.source_id(source.display_path, source.sha256)
    host = task.host or path_host or ds.safe_host(stats.host or stats.recording.get("host"))
    for table in ("events", "rejects"):
        dest = ds.partition_dir(incoming, table, sid, host=host)
        dest.mkdir(parents=True)
        os.rename(incoming / f"{table}.parquet", dest / "part-0.parquet")
    return SourceReport(
        id=sid,
        path=source.display_path,
        status="added",
        stats=stats,
        entry=None,
        sha256=source.sha256,
        compression=source.compression,
        truncated=source.truncated,
        lines=source.lines,
        host=host,
        incoming=str(incoming),
    )


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _strict_failure(source: TraceInput, first_reject: tuple[int, str] | None, chunk: Chunk) -> None:
    if first_reject is not None:
        line, reason = first_reject
        raise InputError(source.display_path, f"rejected line ({reason}) [--strict]", line=line)
    lost = chunk.events.filter(chunk.events["event"] == "lost_events")
    line = int(lost["line_no"][0]) if lost.height else None
    raise InputError(source.display_path, "lost-events marker [--strict]", line=line)
