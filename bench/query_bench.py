"""Query latency: every shipped query on a dataset of 10M events replayed under three policies.

Usage::

    .venv/bin/python bench/query_bench.py                    # 10M events, 5 timed runs
    .venv/bin/python bench/query_bench.py --events 1000000 --repeat 3
    .venv/bin/python bench/query_bench.py --markdown         # the RESULTS.md table

The dataset (``bench/out/query-<N>/``, git-ignored, reused when present) is
built the way a real one is, minus text parsing: a real capture
(``shared/fixtures/real/mixed.tracefs.txt``, 6 vCPU threads on 2 CPUs) is
parsed, its events are repeated back to back, each copy later in time,
until there are N; they are written as one source's ``events`` partition
(row groups of 128k rows, as ingest writes them) with its manifest entry,
then replayed for real by ``pipeline.orchestrate.replay_dataset`` (what
``fpureplay replay`` runs) under legacy, vcpu_run and deferred, which
writes ``runs`` and ``fpu_ops``.

Each query is timed end to end through ``queries.run`` (open the dataset,
register the views, run, convert to polars): one cold run, then the best
and the median of ``--repeat`` runs.  The issue's bar is < 1 s per query.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import queries  # noqa: E402
from ingest import parse_file  # noqa: E402
from ingest.dataset import (  # noqa: E402
    MANIFEST,
    SCHEMA_VERSION,
    UNKNOWN_HOST,
    partition_dir,
    tool_version,
)
from ingest.load import events_entry  # noqa: E402
from ingest.schema import REJECTS_SCHEMA  # noqa: E402

FIXTURE = ROOT.parent / "shared" / "fixtures" / "real" / "mixed.tracefs.txt"
OUT = ROOT / "bench" / "out"
SOURCE = "mixed-replicated"
EVENT_ROW_GROUP = 128 * 1024


def replicate(events: pl.DataFrame, n: int) -> pl.DataFrame:
    """``events`` repeated to exactly ``n`` rows, each copy after the previous one."""
    copies = -(-n // events.height)
    span = int(events["ts_ns"].max() - events["ts_ns"].min()) + 1_000_000
    lines = int(events["line_no"].max())
    return pl.concat(
        events.with_columns(pl.col("ts_ns") + i * span, pl.col("line_no") + i * lines)
        for i in range(copies)
    ).head(n)


def build(dataset: Path, n: int) -> dict[str, Any]:
    """Write the benchmark dataset; returns what building it took."""
    from pipeline.orchestrate import replay_dataset

    t0 = time.perf_counter()
    events = replicate(parse_file(str(FIXTURE)), n)
    events_dir = partition_dir(dataset, "events", SOURCE, host=UNKNOWN_HOST)
    events_dir.mkdir(parents=True)
    events.write_parquet(
        events_dir / "part-0.parquet", compression="zstd", row_group_size=EVENT_ROW_GROUP
    )
    # Ingest always writes a rejects partition, empty when every line parsed.
    rejects_dir = partition_dir(dataset, "rejects", SOURCE, host=UNKNOWN_HOST)
    rejects_dir.mkdir(parents=True)
    REJECTS_SCHEMA.to_frame().write_parquet(rejects_dir / "part-0.parquet", compression="zstd")
    entry = events_entry(
        events,
        source_id=SOURCE,
        path=f"{FIXTURE.name}, replicated to {n} events",
        sha256="0" * 64,
        fmt="tracefs",
    )
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "tool_version": tool_version(),
        "sources": [entry],
    }
    (dataset / MANIFEST).write_text(json.dumps(manifest, indent=1))
    del events
    t1 = time.perf_counter()
    replay_dataset(dataset)  # what `fpureplay replay` does: all three policies
    t2 = time.perf_counter()
    return {
        "write_events_s": round(t1 - t0, 1),
        "replay_s": round(t2 - t1, 1),
        "dataset_mb": round(sum(p.stat().st_size for p in dataset.rglob("*")) / 2**20, 1),
    }


def describe(dataset: Path) -> dict[str, Any]:
    """Row counts of an existing benchmark dataset."""
    con = queries.connect(dataset)
    count = {
        t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
        for t in ("events", "runs", "fpu_ops")
    }
    by_policy = dict(
        con.execute(
            "SELECT policy, count(*) FROM fpu_ops GROUP BY policy ORDER BY policy"
        ).fetchall()
    )
    return {**count, "fpu_ops_by_policy": by_policy}


def time_query(dataset: Path, name: str, repeat: int) -> dict[str, Any]:
    """Cold, best and median wall time of ``queries.run`` for one query."""
    times, cpu = [], []
    rows = 0
    for _ in range(repeat + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        frame = queries.run(dataset, name)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)  # all of DuckDB's threads
        rows = frame.height
    warm = times[1:]
    return {
        "query": name,
        "rows": rows,
        "cold_s": times[0],
        "best_s": min(warm),
        "median_s": statistics.median(warm),
        "cpu_s": statistics.median(cpu[1:]),
    }


def time_connect(dataset: Path, repeat: int) -> float:
    """Median time to open the dataset and register its views."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        queries.connect(dataset).close()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def markdown(summary: dict[str, Any]) -> str:
    """The results as the table bench/RESULTS.md records."""
    lines = [
        "| query | rows | cold s | best s | median s | CPU s (median) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in summary["queries"]:
        lines.append(
            f"| `{r['query']}` | {r['rows']:,} | {r['cold_s']:.3f} | {r['best_s']:.3f}"
            f" | {r['median_s']:.3f} | {r['cpu_s']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--markdown", action="store_true", help="print the RESULTS.md table")
    args = ap.parse_args()

    if not FIXTURE.exists():
        raise SystemExit(f"{FIXTURE}: the real capture this benchmark replicates is missing")
    dataset = OUT / f"query-{args.events}"
    built = None
    if not (dataset / MANIFEST).exists():
        if dataset.exists():
            raise SystemExit(f"{dataset}: incomplete; delete it and run again")
        print(f"building {dataset} ...", file=sys.stderr)
        built = build(dataset, args.events)
        print(f"built: {built}", file=sys.stderr)
    import duckdb

    summary: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "duckdb": duckdb.__version__,
            "polars": pl.__version__,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "dataset": describe(dataset),
        "built": built,
        "connect_s": time_connect(dataset, args.repeat),
        "queries": [time_query(dataset, name, args.repeat) for name in queries.catalog()],
    }
    slow = [r["query"] for r in summary["queries"] if r["best_s"] >= 1.0]
    summary["all_under_1s"] = not slow
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    if args.markdown:
        print(markdown(summary))
    else:
        print(json.dumps(summary, indent=1))
    if slow:
        print(f"over 1 s (best of {args.repeat}): {', '.join(slow)}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
