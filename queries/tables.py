"""The views shipped SQL reads, bound to one dataset's Parquet and manifest.

Shipped SQL names views only (``events``, ``rejects``, ``runs``,
``fpu_ops``, ``validation``, ``sources``), never files, so the same text
can run on another engine that registers the same views.  Each view has a declared column list
(name, type, and whether a dataset must have it):

* a declared column the files lack is an error when it is *required* (the
  view is then not registered and a query that needs it says why), and NULL
  of the declared type when it is *optional* (written by later replays);
* a column whose file type differs from the declared one is cast, so every
  query sees the same types whatever wrote the files;
* columns the files have beyond the declared ones are passed through after
  them, for ad-hoc ``--sql``; shipped SQL never relies on them.

The ``sources`` view is the manifest's ``sources[]``, one row per source.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb


@dataclass(frozen=True)
class Col:
    """A declared column of a view."""

    name: str
    type: str  # DuckDB type name as DESCRIBE prints it
    required: bool = True


@dataclass(frozen=True)
class TableSpec:
    """A Parquet-backed view: where its files are and its declared columns."""

    name: str
    partitions: tuple[str, ...]  # hive keys from the outermost directory in
    columns: tuple[Col, ...]
    made_by: str  # the command that writes it, {root} standing for the dataset

    @property
    def pattern(self) -> str:
        """Glob of the table's files below the dataset root."""
        return "/".join([self.name, *(f"{key}=*" for key in self.partitions), "*.parquet"])


def _events_columns() -> tuple[Col, ...]:
    # ingest/schema.py is the source of truth for the events columns; the
    # ones architecture.md fixes are required, the rest may be absent from
    # datasets written by an older ingest.
    from ingest.schema import EVENT_COLUMNS

    fixed = {
        "line_no", "ts_ns", "cpu", "pid", "comm", "event", "args", "fpu_load", "prev_comm",
        "prev_pid", "prev_state", "next_comm", "next_pid", "exit_reason", "vcpu_id",
    }  # fmt: skip
    return tuple(
        Col(name, _duck_type(dtype), name in fixed) for name, dtype in EVENT_COLUMNS.items()
    )


def _duck_type(dtype: Any) -> str:
    import polars as pl

    types = {
        pl.Int32: "INTEGER",
        pl.Int64: "BIGINT",
        pl.UInt64: "UBIGINT",
        pl.String: "VARCHAR",
        pl.Boolean: "BOOLEAN",
        pl.Binary: "BLOB",
        pl.Float64: "DOUBLE",
    }
    return types[dtype.base_type()]


def _specs() -> dict[str, TableSpec]:
    opt = False
    return {
        "events": TableSpec(
            "events", ("host", "source"), _events_columns(), "fpureplay ingest TRACE... -o {root}"
        ),
        "rejects": TableSpec(
            "rejects",
            ("host", "source"),
            (
                Col("line_no", "BIGINT"),
                Col("text", "VARCHAR"),
                Col("raw", "BLOB", opt),
                Col("reason", "VARCHAR"),
            ),
            "fpureplay ingest TRACE... -o {root}",
        ),
        "runs": TableSpec(
            "runs",
            ("host", "source"),
            (
                Col("pid", "INTEGER"),
                Col("run_idx", "INTEGER"),
                Col("start_ns", "BIGINT"),
                Col("end_ns", "BIGINT"),
                Col("exit_reason", "VARCHAR"),
                Col("preemptions", "INTEGER"),
                Col("blocks", "INTEGER"),
                Col("migrations", "INTEGER"),
                Col("complete", "BOOLEAN"),
                # Written by the replay beside the fixed columns.
                Col("exit_code", "BIGINT", opt),
                Col("comm", "VARCHAR", opt),
                Col("cpu_start", "INTEGER", opt),
                Col("other_sched_outs", "INTEGER", opt),
                Col("inferred_switch_ins", "INTEGER", opt),
                Col("cut_by_trace_start", "BOOLEAN", opt),
                Col("cut_by_trace_end", "BOOLEAN", opt),
                Col("cut_by_lost_events", "BOOLEAN", opt),
            ),
            "fpureplay replay {root}",
        ),
        "fpu_ops": TableSpec(
            "fpu_ops",
            ("policy", "host", "source"),
            (
                Col("pid", "INTEGER"),
                Col("cpu", "INTEGER"),
                Col("ts_ns", "BIGINT"),
                Col("op", "VARCHAR"),
                Col("context", "VARCHAR"),
                Col("trigger", "VARCHAR"),
                Col("redundant", "BOOLEAN"),
                Col("reason", "VARCHAR"),
                Col("bytes", "INTEGER"),
                Col("cost_ns", "DOUBLE"),
                Col("run_idx", "INTEGER", opt),
                Col("line_no", "BIGINT", opt),
                Col("site", "VARCHAR", opt),  # the reference's site tag: KVM-put, CS-out, ...
                # The thread's latest sched-out in the current KVM_RUN (docs/replay.md):
                # its line and kind.  Null in datasets replayed before they existed.
                Col("sched_out_line", "BIGINT", opt),
                Col("sched_out_state", "VARCHAR", opt),
            ),
            "fpureplay replay {root}",
        ),
        # Written by the replay since it validates each source; datasets
        # replayed before that have none, and only the validation query needs it.
        "validation": TableSpec(
            "validation",
            ("host", "source"),
            (
                Col("policy", "VARCHAR"),
                Col("pid", "INTEGER"),
                Col("comm", "VARCHAR"),
                Col("check", "VARCHAR"),
                Col("predicted", "BIGINT"),
                Col("observed", "BIGINT"),
                Col("difference", "BIGINT"),
                Col("agreement_pct", "DOUBLE"),
                Col("causes", "VARCHAR"),
            ),
            "fpureplay replay {root}",
        ),
        # The migration-safety audit (pipeline.audit): one row per FPU-state ioctl.
        "audit": TableSpec("audit", ("host", "source"), _audit_columns(), "fpureplay audit {root}"),
    }


def _audit_columns() -> tuple[Col, ...]:
    # pipeline.audit.AUDIT_SCHEMA is the source of truth for the audit columns.
    from pipeline.audit import AUDIT_SCHEMA

    return tuple(Col(name, _duck_type(dtype)) for name, dtype in AUDIT_SCHEMA.items())


#: Declared columns of the manifest-backed ``sources`` view (``id`` is
#: renamed ``source`` so it joins like every other view).  Keys a source
#: entry lacks are NULL; keys it has beyond these are passed through.
SOURCE_COLUMNS: tuple[Col, ...] = (
    Col("source", "VARCHAR"),
    Col("host", "VARCHAR"),
    Col("path", "VARCHAR"),
    Col("sha256", "VARCHAR"),
    Col("format", "VARCHAR"),
    Col("compression", "VARCHAR"),
    Col("kernel", "VARCHAR"),
    Col("lines", "BIGINT"),
    Col("events", "BIGINT"),
    Col("rejects", "BIGINT"),
    Col("meta_lines", "BIGINT"),
    Col("lost_markers", "BIGINT"),
    Col("lost_events", "BIGINT"),
    Col("buffer_started_markers", "BIGINT"),
    Col("truncated", "BOOLEAN"),
    Col("invalid_utf8_lines", "BIGINT"),
    Col("ts_backwards", "BIGINT"),
    Col("first_ts_ns", "BIGINT"),
    Col("last_ts_ns", "BIGINT"),
    Col("cpus", "INTEGER[]"),
    Col("vcpu_threads", "INTEGER[]"),
    Col("recorded_policy", "VARCHAR"),
    Col("recorded_policy_evidence", "VARCHAR[]"),
    # Added by the replay (read from the entry, or from a `replay` dict in it).
    Col("inferred_switch_ins", "BIGINT", False),
)


class HostError(ValueError):
    """A host filter names a host the dataset does not have."""


@dataclass
class Binding:
    """What :func:`register` found: the views made, and why others are missing."""

    root: Path
    manifest: dict[str, Any]
    views: dict[str, list[str]] = field(default_factory=dict)  # view -> its columns
    #: view -> why it is not there, worded to follow the dataset path
    missing: dict[str, str] = field(default_factory=dict)


def specs() -> dict[str, TableSpec]:
    """The Parquet-backed views, by name."""
    return _specs()


def register(
    con: duckdb.DuckDBPyConnection,
    root: Path,
    manifest: dict[str, Any],
    hosts: Sequence[str] | None = None,
) -> Binding:
    """Create the dataset's views on ``con``; tables it does not have are left out.

    ``hosts`` limits every view, ``sources`` included, to those hosts' sources
    (by listing only their partitions, so the other hosts' files are never
    opened); a host the dataset does not have is a :class:`HostError`.
    """
    if hosts:
        known = sorted({s.get("host") for s in manifest.get("sources", [])} - {None})
        unknown = [h for h in hosts if h not in known]
        if unknown:
            raise HostError(
                f"no host {unknown[0]!r} in {root} (its hosts: {', '.join(known) or 'none'})"
            )
        manifest = dict(manifest, sources=[s for s in manifest["sources"] if s["host"] in hosts])
    binding = Binding(Path(root), manifest)
    for spec in _specs().values():
        files = sorted(str(p) for p in binding.root.glob(spec.pattern) if _on(p, hosts))
        made_by = spec.made_by.format(root=binding.root)
        if not files:
            binding.missing[spec.name] = f"has no {spec.name} table yet (`{made_by}` writes it)"
            continue
        scan = _scan(spec, files)
        found = dict(
            (row[0], row[1]) for row in con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()
        )
        lacking = [c.name for c in spec.columns if c.required and c.name not in found]
        if lacking:
            binding.missing[spec.name] = (
                f"has a {spec.name} table without the column(s) {', '.join(lacking)}"
                f" (written by an older fpureplay? run `{made_by}` again)"
            )
            continue
        select = _select_list(spec.partitions, spec.columns, found)
        items = ", ".join(sql for sql, _ in select)
        con.execute(f"CREATE VIEW {spec.name} AS SELECT {items} FROM {scan}")
        binding.views[spec.name] = [name for _, name in select]
    _register_sources(con, binding)
    return binding


def _scan(spec: TableSpec, files: list[str]) -> str:
    # An explicit file list, not a glob: a dataset path may contain glob
    # characters.  Partition keys are typed VARCHAR so that an id that looks
    # like a number stays text.
    listed = ", ".join(_literal(f) for f in files)
    hive = ", ".join(f"'{key}': 'VARCHAR'" for key in spec.partitions)
    return (
        f"read_parquet([{listed}], hive_partitioning = true, union_by_name = true,"
        f" hive_types = {{{hive}}})"
    )


def _select_list(
    partitions: tuple[str, ...], columns: tuple[Col, ...], found: dict[str, str]
) -> list[tuple[str, str]]:
    """(SQL, column name) of each item of a view's SELECT list."""
    select = [(_ident(key), key) for key in reversed(partitions)]  # source, host, policy
    for col in columns:
        name = _ident(col.name)
        if col.name not in found:
            select.append((f"CAST(NULL AS {col.type}) AS {name}", col.name))
        elif found[col.name] != col.type:
            select.append((f"CAST({name} AS {col.type}) AS {name}", col.name))
        else:
            select.append((name, col.name))
    declared = {c.name for c in columns} | set(partitions)
    # Column names found in the files are the dataset's text, not ours.
    select += [(_ident(n), n) for n in found if n not in declared]
    return select


def _ident(name: str) -> str:
    """``name`` as a DuckDB identifier, whatever characters it holds."""
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _on(path: Path, hosts: Sequence[str] | None) -> bool:
    return not hosts or any(f"host={h}" in path.parts for h in hosts)


def _register_sources(con: duckdb.DuckDBPyConnection, binding: Binding) -> None:
    import pyarrow as pa

    entries = [dict(s) for s in binding.manifest.get("sources", [])]
    for entry in entries:
        entry["source"] = entry.pop("id", None)
        nested = entry.get("replay")
        if isinstance(nested, dict):
            # Per-source replay facts may be kept in a sub-dict; the declared
            # columns are looked up there too.
            for col in SOURCE_COLUMNS:
                if col.name not in entry and col.name in nested:
                    entry[col.name] = nested[col.name]
    declared = [c.name for c in SOURCE_COLUMNS]
    extra: list[str] = []
    for entry in entries:
        extra += [k for k in entry if k not in declared and k not in extra]
    arrays: dict[str, pa.Array] = {}
    for col in SOURCE_COLUMNS:
        arrays[col.name] = pa.array([e.get(col.name) for e in entries], _arrow_type(col.type))
    for key in extra:
        values = [e.get(key) for e in entries]
        # Nested values (event_counts, replay details) become JSON text: a
        # struct whose fields differ per source would not make one column.
        if any(isinstance(v, dict | list) for v in values):
            values = [None if v is None else json.dumps(v, sort_keys=True) for v in values]
        try:
            arrays[key] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays[key] = pa.array([None if v is None else str(v) for v in values], pa.string())
    con.register("_manifest_sources", pa.table(arrays))
    # Manifest keys are the dataset's text, not ours: quoted as identifiers.
    names = ", ".join(_ident(n) for n in arrays)
    con.execute(f"CREATE VIEW sources AS SELECT {names} FROM _manifest_sources")
    binding.views["sources"] = list(arrays)


def _arrow_type(duck: str) -> Any:
    import pyarrow as pa

    scalar = {
        "VARCHAR": pa.string(),
        "BIGINT": pa.int64(),
        "INTEGER": pa.int32(),
        "BOOLEAN": pa.bool_(),
    }
    if duck.endswith("[]"):
        return pa.list_(scalar[duck[:-2]])
    return scalar[duck]
