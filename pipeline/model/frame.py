"""The fast path: the `events` table built straight from a LineTable, and a dataset of it.

No text is formatted or parsed: every decoded column of ingest/schema.py is
filled from the line table's integers and a few small lookup tables.  The
frame is what ingesting the tracefs text of the same simulation gives
(tests/test_model_formats.py checks it column by column): timestamps at the
text's microsecond resolution, ``line_no`` the line the event has in that
text, ``comm`` and ``flags`` as tracefs prints them.  ``args`` (the raw text
after the event name) is the one costly column; it is filled by default and
can be left null.

The rows are built once (:class:`Events`) and seen two ways: the polars frame
readers get back, and the Arrow table handed to the Parquet writer, which is
shaped to cost the writer less while it writes the very bytes the plain frame
gives (tests/test_model_fastpath.py compares the files).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from ingest.schema import EVENTS_SCHEMA, REJECTS_SCHEMA
from ingest.xstate import xstate_bytes
from pipeline.model.eras import Era
from pipeline.model.lines import FLAGS5, LineTable
from pipeline.model.schedule import (
    EVENT_NAMES,
    EXIT_NAMES,
    IOCTL_NAMES,
    L_ACT,
    L_DEACT,
    L_FPU,
    R_ENTRY,
    R_EXIT,
    R_RUN_IN,
    R_RUN_OUT,
    R_SWITCH,
    R_UEXIT,
    R_WAKE,
    UEXIT_CODE,
    UEXIT_REASON,
    Schedule,
    state_text,
)
from pipeline.model.text import RIPS, XFEATURES, Renderer, rip_index, tracefs_header

#: The `events` columns holding text; Parquet dictionaries encode them (few distinct
#: comms, flags and event names), as every dataset table does.
STRING_COLUMNS = tuple(name for name, dtype in EVENTS_SCHEMA.items() if dtype == pl.String)
_DELTA_ENCODED = {"line_no": "DELTA_BINARY_PACKED", "ts_ns": "DELTA_BINARY_PACKED"}
#: Arrow types of the columns' values (nulls ride in a validity bitmap beside them).
_ARROW_TYPES = {
    pl.Int64: pa.int64(), pl.Int32: pa.int32(), pl.UInt64: pa.uint64(), pl.Boolean: pa.bool_(),
    pl.String: pa.large_string(),
}  # fmt: skip
#: Rows per row group of the events file: pyarrow's default, made explicit because
#: the dictionary columns of Events.arrow are cut at the same rows.
_ROW_GROUP = 1024 * 1024
#: Rows the Parquet writer takes at a time when that cannot change a page (write_events).
_WRITE_BATCH = 64 * 1024
#: Rows of a row group in which a string column must show all its values to be handed
#: over as a dictionary (_leading_dictionary): fewer than the 20,000 rows of the
#: Parquet writer's pages.
_HEAD = 16 * 1024


@dataclass
class _Values:
    """A column of numbers or booleans: ``values`` in the column's numpy type, null where
    ``valid`` is False (None: no nulls).  What sits under a null is never read, so one
    array can serve several columns (the priorities) and lookups need no masking."""

    values: np.ndarray
    valid: np.ndarray | None = None


@dataclass
class _Text:
    """A string column as ``codes`` into a short table: ``table[codes]``, null where
    ``valid`` is False.  No string is built per row unless a polars frame is asked for."""

    table: Sequence[str]
    codes: np.ndarray
    valid: np.ndarray | None = None


#: A column spec; None is a column of nulls only (the fields a model trace never has).
_Spec = _Values | _Text | pl.Series | None


class Events:
    """The `events` rows of one trace, built once from the line table's columns.

    Two views of the same rows: :attr:`frame`, the polars frame readers get back
    (ingest.schema.EVENTS_SCHEMA), and :attr:`arrow`, the Arrow table the Parquet
    writer is handed.  In the latter the string columns without nulls (``comm``,
    ``flags``, ``event``: a string on every row) are dictionary arrays whose
    dictionary holds the values used, in the order they first appear, one per row
    group.  Parquet's dictionary encoder numbers plain strings in that order, so the
    file is the one the plain strings give, byte for byte, while the writer skips
    hashing every row.  Where that would not hold the plain strings are handed over:

    * a string first seen after the first page (:func:`_leading_dictionary`);
    * columns with nulls: given a dictionary array, pyarrow (26) gives a page that
      holds only nulls min/max statistics, which the plain strings' page lacks.

    Other string columns are polars' own string views (not copied to Arrow's
    ``large_string``: the writer encodes both alike).
    """

    def __init__(self, n: int, specs: dict[str, _Spec]) -> None:
        self.n = n
        self._specs = specs
        self._series_cache: dict[str, pl.Series] = {}

    @cached_property
    def frame(self) -> pl.DataFrame:
        """The rows as a polars frame, in EVENTS_SCHEMA's column order and types."""
        return pl.DataFrame([self._series(name) for name in EVENTS_SCHEMA])

    @cached_property
    def arrow(self) -> pa.Table:
        """The rows as the Arrow table :func:`write_events` writes (see the class docstring)."""
        return pa.table([self._array(name) for name in EVENTS_SCHEMA], names=list(EVENTS_SCHEMA))

    def _series(self, name: str) -> pl.Series:
        """Column ``name`` as a polars Series (made once: both views may need it)."""
        if name in self._series_cache:
            return self._series_cache[name]
        spec, dtype = self._specs[name], EVENTS_SCHEMA[name]
        if spec is None:
            series = pl.Series(name, dtype=dtype).clear(self.n)
        elif isinstance(spec, pl.Series):
            series = spec.alias(name)
        elif isinstance(spec, _Values) and spec.valid is None:
            series = pl.Series(name, spec.values, dtype=dtype)
        elif isinstance(spec, _Values):
            series = pl.Series(name, self._array(name))
        else:
            # Codes under nulls are other fields (a wakeup's target CPU in wake_comm's):
            # bring them into range, negatives included (they wrap to large unsigned).
            last = len(spec.table) - 1
            if spec.codes.dtype == np.int32:
                codes = np.minimum(spec.codes.view(np.uint32), last)
            else:
                codes = spec.codes.astype(np.uint32)
                np.minimum(codes, last, out=codes)
            index = pl.Series(_with_validity(pa.uint32(), self.n, codes, spec.valid))
            series = pl.Series(name, spec.table, dtype=pl.String).gather(index)
        self._series_cache[name] = series
        return series

    def _array(self, name: str) -> pa.Array | pa.ChunkedArray:
        """Column ``name`` as the Arrow array the writer gets."""
        spec, dtype = self._specs[name], EVENTS_SCHEMA[name]
        arrow_type = _ARROW_TYPES[dtype.base_type()]
        if spec is None:
            return pa.nulls(self.n, arrow_type)
        if isinstance(spec, _Values):
            if spec.valid is None:
                return pa.array(spec.values, type=arrow_type)
            values = spec.values
            if values.dtype == np.bool_:  # Arrow booleans are bits
                values = np.packbits(values, bitorder="little")
            return _with_validity(arrow_type, self.n, values, spec.valid)
        if isinstance(spec, _Text) and spec.valid is None:
            # one dictionary per row group: each starts its own Parquet dictionary
            chunks = []
            for lo in range(0, max(self.n, 1), _ROW_GROUP):
                leading = _leading_dictionary(spec.table, spec.codes[lo : lo + _ROW_GROUP])
                if leading is None:
                    break
                table, codes = leading
                indices = pa.array(codes, type=pa.int32())
                chunks.append(
                    pa.DictionaryArray.from_arrays(indices, pa.array(table, type=arrow_type))
                )
            else:
                return pa.chunked_array(chunks)
        # polars' own string views, not copied (the stored schema says large_string)
        return self._series(name).to_arrow(compat_level=pl.CompatLevel.newest())


def _with_validity(
    arrow_type: pa.DataType, n: int, values: np.ndarray, valid: np.ndarray | None
) -> pa.Array:
    """An Arrow array of ``n`` rows over the buffer of ``values`` (not copied), null where
    ``valid`` is False."""
    bitmap, nulls = None, 0
    if valid is not None:
        bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
        nulls = n - int(np.count_nonzero(valid))
    return pa.Array.from_buffers(arrow_type, n, [bitmap, pa.py_buffer(values)], null_count=nulls)


def _leading_dictionary(
    table: Sequence[str], codes: np.ndarray
) -> tuple[list[str], np.ndarray] | None:
    """The strings ``table[codes]`` takes, each once, in the order of their first row, and
    every row's int32 code into that list; None unless each of them appears in the first
    ``_HEAD`` rows.

    The order is the one Parquet's dictionary encoder gives the plain strings (equal
    strings under different codes, the ``CPU 0/KVM`` threads of different VMs, share
    one entry, as they do there).  A page's dictionary indices are packed with the
    bit width of the dictionary *so far*, which a dictionary handed over whole does
    not reproduce if a string first appears after the first page: hence the head.
    """
    head_codes, head_rows = np.unique(codes[:_HEAD], return_index=True)
    strings: dict[str, int] = {}
    for code in head_codes[np.argsort(head_rows)].tolist():
        strings.setdefault(table[code], len(strings))
    # every code whose string the head has (each VM has a "CPU 0/KVM")
    remap = np.array([strings.get(text, -1) for text in table], dtype=np.int32)
    mapped = remap[codes]
    if len(mapped) and mapped.min() < 0:  # a string first seen after the head
        return None
    return list(strings), mapped


def build_events(
    sched: Schedule, lt: LineTable, era: Era, xstate: str, *, args: bool = True
) -> Events:
    """The `events` rows of the trace ``lt`` (ingest.schema.EVENTS_SCHEMA, in file order).

    Every column is computed with numpy from the line table, without a string per
    row (see :class:`Events`); ``args`` (the raw text) is the one costly column.
    """
    n = len(lt)
    tasks = sched.tasks
    n_tasks = len(tasks)
    kind, a, b, c, task, cpu = lt.kind, lt.a, lt.b, lt.c, lt.task, lt.cpu
    pid_of = np.array([t.pid for t in tasks] + [0] * sched.n_cpus, dtype=np.int32)
    vcpu_of = np.array([t.vcpu_id for t in tasks], dtype=np.int32)
    comm_sw = [t.comm for t in tasks] + [f"swapper/{k}" for k in range(sched.n_cpus)]
    comm_task = ["<idle>" if t.pid == 0 else t.comm for t in tasks]
    header_lines = tracefs_header(era, n, sched.n_cpus).count("\n")
    xf = XFEATURES[xstate]

    sw, wake = kind == R_SWITCH, kind == R_WAKE
    run_in, run_out = kind == R_RUN_IN, kind == R_RUN_OUT
    uexit, kexit, kentry = kind == R_UEXIT, kind == R_EXIT, kind == R_ENTRY
    fpu_line = (kind == L_ACT) | (kind == L_DEACT)
    rip_printed = (kexit | kentry) if era.entry_form >= 1 else kexit
    vcpu_printed = (kentry | kexit) if era.exit_form >= 1 else kentry
    new = era.fpu_new_format
    # Columns are made with as few full-length temporaries as possible, int32 where
    # the schema is: at half a million rows each fresh array costs its page faults.
    # Every value a row shows fits int32 (tasks, CPUs, fds, reason codes).
    a32, b32 = a.astype(np.int32), b.astype(np.int32)
    ia, ib = a32.copy(), b32.copy()  # sched_switch prev and next, the idle task as swapper/N
    for index, side in ((ia, a), (ib, b)):
        idle = np.flatnonzero(sw & (side == 0))
        index[idle] = n_tasks + cpu[idle]
    # kvm_userspace_exit and kvm_exit share exit_reason: one table, the exits after.
    reasons = list(UEXIT_REASON) + list(EXIT_NAMES)
    reason = a32 + kexit.view(np.uint8) * np.uint8(len(UEXIT_REASON))  # (add(where=) is slow)
    ts_ns = lt.ts + sched.clock_start_ns
    ts_ns //= 1000  # the text's microseconds
    ts_ns *= 1000
    # One array of 120s serves every priority column: only the validity differs.
    prio = np.full(n, 120, dtype=np.int32)
    fpu_flag = b == 1
    rips = np.array(RIPS, dtype=np.uint64)
    uexit_codes = np.array(UEXIT_CODE, dtype=np.int64)

    # Lookups by a, b or c read other fields on rows of other kinds: those rows are
    # null in the column, and "clip" keeps their (unused) index in range.
    def pid(index: np.ndarray) -> np.ndarray:
        return np.take(pid_of, index, mode="clip")

    specs: dict[str, _Spec] = {
        "line_no": _Values(np.arange(header_lines + 1, header_lines + 1 + n, dtype=np.int64)),
        "ts_ns": _Values(ts_ns),
        "cpu": _Values(cpu.astype(np.int32)),
        "pid": _Values(pid_of[task]),
        "tgid": None,
        "comm": _Text(comm_task, task),
        "flags": _Text([f[: era.flag_columns] for f in FLAGS5], lt.style),
        "event": _Text(EVENT_NAMES, kind),
        "args": Renderer(sched, era, "tracefs", xstate).bodies(lt) if args else None,
        "fpu_load": _Values(a == 1, kind == L_FPU),
        "prev_comm": _Text(comm_sw, ia, sw),
        "prev_pid": _Values(pid(ia), sw),
        "prev_prio": _Values(prio, sw),
        "prev_state": _Text(state_text(era.vcpu_preempt_state), c, sw),
        "next_comm": _Text(comm_sw, ib, sw),
        "next_pid": _Values(pid(ib), sw),
        "next_prio": _Values(prio, sw),
        "wake_comm": _Text(comm_sw, a32, wake),
        "wake_pid": _Values(pid(a32), wake),
        "wake_prio": _Values(prio, wake),
        "target_cpu": _Values(b32, wake),
        "exit_reason": _Text(reasons, reason, uexit | kexit),
        "exit_code": _Values(np.take(uexit_codes, a, mode="clip"), uexit),
        "vcpu_id": _Values(vcpu_of[task], vcpu_printed),
        "guest_rip": _Values(np.take(rips, rip_index(lt.ts)), rip_printed),
        "fpu_tif": _Values(fpu_flag, fpu_line) if new else None,
        "fpu_initialized": None if new else _Values(fpu_flag, fpu_line),
        "xfeatures": _Values(np.full(n, xf, dtype=np.uint64), fpu_line),
        "xcomp_bv": _Values(np.zeros(n, dtype=np.uint64), fpu_line),
        "xstate_bytes": _Values(np.full(n, xstate_bytes(xf, 0), dtype=np.int32), fpu_line),
        "ioctl_fd": _Values(a32, run_in),
        "ioctl_cmd": _Text(IOCTL_NAMES, b32, run_in),
        "ioctl_ret": _Values(a, run_out),  # the line table's own array (never written to)
        "lost_count": None,
    }
    return Events(n, specs)


def events_frame(
    sched: Schedule, lt: LineTable, era: Era, xstate: str, *, args: bool = True
) -> pl.DataFrame:
    """The `events` rows of the trace ``lt`` as a polars frame (see :func:`build_events`)."""
    return build_events(sched, lt, era, xstate, args=args).frame


def source_entry(
    frame: pl.DataFrame, *, path: str, identity: dict[str, Any], era: Era, policy: str
) -> dict[str, Any]:
    """The manifest's `sources[]` entry for a simulated source (ingest's keys, format simulated).

    The sha256 is of the canonical JSON of what determines the events (seed,
    preset, parameters, policy, era): the same simulation is the same source.
    """
    sha = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    from ingest.dataset import source_id
    from ingest.load import events_entry

    path_id = source_id(path, sha)
    entry = events_entry(frame, source_id=path_id, path=path, sha256=sha, fmt="simulated")
    return {**entry, "model": {**identity, "kernel_era": era.name, "policy": policy}}


def write_events(path: Path, events: Events | pl.DataFrame) -> None:
    """Write the events as one Parquet file: zstd as every dataset table, and the encodings
    that suit this table (measured: about a fifth less CPU time and size than the defaults):
    dictionaries only for the string columns (few distinct comms, flags and event names),
    delta encoding for the increasing ``line_no`` and ``ts_ns``.

    The Arrow schema stored for readers is the plain one (large_string, as polars
    exports a frame), also when :class:`Events` hands over dictionary arrays and
    string views: readers get String columns, never categoricals.
    """
    import pyarrow.parquet as pq

    from ingest.dataset import PARQUET_OPTIONS

    if isinstance(events, Events):
        table, stored = events.arrow, _plain_events_schema()
    else:
        table = events.to_arrow()
        stored = table.schema
    # Without the args text every page is cut by its row count (20,000 rows), far
    # below the 1 MiB page and dictionary sizes pyarrow checks after each batch of
    # rows, so batches bigger than the default 1,024 rows give the same pages for
    # less work per batch (statistics, level encoding): about 5% of the writer.
    # With args those sizes can be reached inside a batch: the default stays.
    no_args = table.column("args").null_count == table.num_rows
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = pq.ParquetWriter(
        path, table.schema, store_schema=False, **PARQUET_OPTIONS,
        use_dictionary=list(STRING_COLUMNS), column_encoding=_DELTA_ENCODED,
        write_batch_size=_WRITE_BATCH if no_args else None,
    )  # fmt: skip
    try:
        # what store_schema=True would store for ``stored`` (an IPC schema, base64)
        schema = base64.b64encode(stored.serialize()).decode()
        writer.add_key_value_metadata({"ARROW:schema": schema})
        writer.write_table(table, row_group_size=_ROW_GROUP)
    finally:
        writer.close()


@cache
def _plain_events_schema() -> pa.Schema:
    """The Arrow schema of an `events` polars frame (what ``frame.to_arrow()`` gives)."""
    return EVENTS_SCHEMA.to_frame().to_arrow().schema


def write_dataset(
    out: Path, frame: pl.DataFrame, entry: dict[str, Any], *, force: bool = False
) -> str:
    """Add the simulated source to dataset ``out`` (created if absent); returns its status.

    As ``fpureplay ingest``: an existing dataset gains the source unless it
    already holds it (same sha256: "already present"); ``force`` replaces the
    dataset with this source alone; a directory that is not a dataset is refused.
    The new version is built aside and swapped in (ingest.dataset.staging).
    """
    from ingest import dataset as ds
    from ingest.fleet import check_target
    from ingest.load import new_manifest

    out = Path(out)
    existing = check_target(out, force)
    if existing and any(s["sha256"] == entry["sha256"] for s in ds.read_manifest(out)["sources"]):
        return "already present"
    with ds.staging(out, copy_existing=existing) as stage:
        manifest = stage.manifest or new_manifest()
        sid = entry["id"]
        host = entry["host"]
        events = ds.partition_dir(stage.path, "events", sid, host=host)
        write_events(events / "part-0.parquet", frame)
        ds.write_frame(
            ds.partition_dir(stage.path, "rejects", sid, host=host) / "part-0.parquet",
            REJECTS_SCHEMA.to_frame(),
        )
        manifest["sources"].append(entry)
        manifest["tool_version"] = ds.tool_version()
        stage.manifest = manifest
        stage.commit()
    return "added"
