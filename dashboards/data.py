"""Everything a dashboard shows, read through the named queries (never SQL of its own).

:func:`load` runs the queries a dashboard needs and decides, per timeline
source, whether its CPU lanes and operations fit the mark budget of
:mod:`dashboards.lanes` as they are or must be binned.  The result,
:class:`DashboardData`, is plain DataFrames: the figure builders never touch
the dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dashboards import lanes as L

if TYPE_CHECKING:
    import polars as pl

#: Timelines drawn when the user names none: the first sources of the manifest.
DEFAULT_TIMELINES = 4
#: Queries run at once (each also runs multi-threaded inside DuckDB).
QUERY_THREADS = 3


@dataclass
class TimelineData:
    """One source's CPU lanes and operations, exact or binned."""

    source: str
    span_ms: float
    cpus: list[int]
    policies: list[str]
    lanes: pl.DataFrame  # thread_states rows, or bin_states rows when lanes_bucket_ms is set
    ops: pl.DataFrame  # op_marks rows, or cpu_op_buckets rows when ops_bucket_ms is set
    lanes_bucket_ms: float | None = None
    ops_bucket_ms: float | None = None
    states: int = 0  # thread_states rows before any binning
    op_count: int = 0  # operations of all policies before any binning


@dataclass
class DashboardData:
    """The query results of one dashboard."""

    dataset: Path
    manifest: dict[str, Any]
    policy_summary: pl.DataFrame
    ops_breakdown: pl.DataFrame
    savings: pl.DataFrame
    redundant_by_trigger: pl.DataFrame
    vcpus: pl.DataFrame
    run_histogram: pl.DataFrame
    ops_per_run: pl.DataFrame
    quality: pl.DataFrame
    validation: pl.DataFrame | None
    timelines: list[TimelineData] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: FPU-state ioctls and their audit (None: the dataset has no audit table)
    fpu_access: pl.DataFrame | None = None


class DashboardError(Exception):
    """A dashboard that cannot be made as asked (CLI: exit 2 with the message)."""


def load(
    dataset: str | Path,
    *,
    timeline_sources: Sequence[str] | None = None,
    max_timelines: int = DEFAULT_TIMELINES,
) -> DashboardData:
    """Run the dashboard's queries on ``dataset``.

    ``timeline_sources`` picks the sources that get a CPU-lane timeline
    (default: the first ``max_timelines`` of the manifest).  Raises
    :class:`queries.QueryError` when the dataset is not one or was not
    replayed, :class:`DashboardError` for an unknown timeline source.
    """
    import polars as pl

    import queries

    root = Path(dataset)
    manifest = queries.manifest(root)
    ids = [s["id"] for s in manifest.get("sources", [])]
    if not ids:
        raise DashboardError(f"{root}: the dataset has no sources")
    notes: list[str] = []
    chosen = _timeline_sources(ids, timeline_sources, max_timelines, notes)

    spans = {s["id"]: _span_ms(s) for s in manifest["sources"]}
    cpus = {s["id"]: len(s.get("cpus") or []) for s in manifest["sources"]}
    jobs: dict[str, tuple[str, dict[str, Any]]] = {
        "policy_summary": ("policy_summary", {}),
        "ops_breakdown": ("ops_breakdown", {}),
        "savings": ("savings", {}),
        "redundant_by_trigger": ("redundant_by_trigger", {}),
        "vcpus": ("vcpu_summary", {}),
        "run_histogram": ("run_histogram", {}),
        "ops_per_run": ("ops_per_run", {}),
        "quality": ("data_quality", {}),
        "validation": ("validation", {}),
        "fpu_access": ("fpu_state_access", {}),
    }
    if len(chosen) == len(ids):
        jobs["states"] = ("thread_states", {})
    else:
        jobs.update({f"states:{s}": ("thread_states", {"source": s}) for s in chosen})
    # The queries are independent: run them side by side (DuckDB and polars
    # release the GIL), which overlaps one query's single-threaded phases
    # (a window over few partitions, a final sort) with another's scan.  The
    # timelines' operations are asked for as soon as the policy summary says
    # how many there are.
    with ThreadPoolExecutor(max_workers=QUERY_THREADS) as pool:
        futures = {key: pool.submit(_query, root, *job) for key, job in jobs.items()}
        summary = _result(futures["policy_summary"])
        if summary.is_empty():
            raise DashboardError(f"{root}: the replay wrote no FPU operations (no vCPU activity?)")
        plans = {
            s: _ops_plan(summary.filter(pl.col("source") == s), spans[s], cpus[s]) for s in chosen
        }
        for source, (name, params, _) in plans.items():
            futures[f"ops:{source}"] = pool.submit(_query, root, name, params)
        results = {key: future.result() for key, future in futures.items()}
    validation = results.pop("validation")
    if isinstance(validation, queries.QueryError):
        # Datasets replayed before the replay validated have no such table.
        notes.append(f"no validation table: {validation}")
        validation = None
    fpu_access = results.pop("fpu_access")
    if isinstance(fpu_access, queries.QueryError):
        # Datasets replayed before the replay audited have no such table.
        notes.append(f"no audit table: {fpu_access}")
        fpu_access = None
    for value in results.values():
        if isinstance(value, Exception):
            raise value
    data = DashboardData(
        dataset=root,
        manifest=manifest,
        policy_summary=summary,
        ops_breakdown=results["ops_breakdown"],
        savings=results["savings"],
        redundant_by_trigger=results["redundant_by_trigger"],
        vcpus=results["vcpus"],
        run_histogram=results["run_histogram"],
        ops_per_run=results["ops_per_run"],
        quality=results["quality"],
        validation=validation,
        notes=notes,
        fpu_access=fpu_access,
    )
    states = (
        results["states"]
        if "states" in results
        else pl.concat([results[f"states:{s}"] for s in chosen])
    )
    for source in chosen:
        part = summary.filter(pl.col("source") == source)
        data.timelines.append(
            _timeline(
                source,
                spans[source],
                states.filter(pl.col("source") == source),
                results[f"ops:{source}"],
                part["policy"].to_list(),
                int(part["ops"].sum()),
                plans[source][2],
            )
        )
    return data


def _query(root: Path, name: str, params: dict[str, Any]) -> pl.DataFrame | Exception:
    """A named query's rows, or its QueryError (returned, so that the caller decides)."""
    import queries

    try:
        return queries.run(root, name, **params)
    except queries.QueryError as exc:
        return exc


def _result(future: Future) -> pl.DataFrame:
    value = future.result()
    if isinstance(value, Exception):
        raise value
    return value


def _ops_plan(
    summary: pl.DataFrame, span_ms: float, traced_cpus: int
) -> tuple[str, dict[str, Any], float | None]:
    """(query, parameters, bucket width or None) for one timeline's operations.

    Every operation (op_marks) when all policies' together fit the budget;
    else counts per CPU and round bucket (cpu_op_buckets), a needed and a
    redundant mark per CPU, bucket and policy; the CPUs with operations are
    not known yet, the traced ones bound them.
    """
    source = summary["source"][0] if summary.height else ""
    if int(summary["ops"].sum()) <= L.OP_MARKS:
        return "op_marks", {"source": source}, None
    per_policy = L.OP_MARKS // max(summary.height, 1)
    width = L.bucket_width(span_ms, per_policy // (2 * max(traced_cpus, 1)))
    return "cpu_op_buckets", {"source": source, "bucket_ms": width}, width


def _timeline_sources(
    ids: list[str], asked: Sequence[str] | None, most: int, notes: list[str]
) -> list[str]:
    if asked:
        unknown = [s for s in asked if s not in ids]
        if unknown:
            raise DashboardError(
                f"no source {unknown[0]!r} in the dataset (its sources: {', '.join(ids)})"
            )
        return list(dict.fromkeys(asked))
    if len(ids) > most:
        notes.append(
            f"timelines are drawn for the first {most} of {len(ids)} sources;"
            " pick others with --timeline-source"
        )
    return ids[:most]


def _span_ms(source: dict[str, Any]) -> float:
    first, last = source.get("first_ts_ns"), source.get("last_ts_ns")
    if first is None or last is None:
        return 0.0
    return (int(last) - int(first)) / 1e6


def _timeline(
    source: str,
    span_ms: float,
    states: pl.DataFrame,
    ops: pl.DataFrame,
    policies: list[str],
    op_count: int,
    ops_width: float | None,
) -> TimelineData:
    # A lane per CPU a vCPU thread ran, waited or did FPU work on.
    cpus = sorted(set(states["cpu"].to_list()) | set(ops["cpu"].to_list()))
    tl = TimelineData(source, span_ms, cpus, policies, states, ops, None, ops_width,
                      states=states.height, op_count=op_count)  # fmt: skip
    if states.height > L.LANE_MARKS:
        # One heatmap cell per CPU, state and bucket within the budget.
        width = L.bucket_width(span_ms, L.LANE_MARKS // (max(len(cpus), 1) * 5))
        tl.lanes, tl.lanes_bucket_ms = L.bin_states(states, width), width
    return tl
