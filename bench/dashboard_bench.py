"""Dashboard size and speed on a dataset of 10M events replayed under three policies.

Usage::

    .venv/bin/python bench/dashboard_bench.py                  # 10M events, 3 runs of each
    .venv/bin/python bench/dashboard_bench.py --events 1000000 --repeat 2
    .venv/bin/python bench/dashboard_bench.py --markdown       # the RESULTS.md section

The dataset (``bench/out/dashboard-<N>/``, git-ignored, reused when present)
is built as ``bench/query_bench.py`` builds its own: the real capture
``shared/fixtures/real/mixed.tracefs.txt`` (6 vCPU threads, 2 CPUs)
repeated back to back to N events, written as one source's ``events``
partition and replayed for real by ``pipeline.orchestrate.replay_dataset``
(runs, fpu_ops and validation, as ``fpureplay replay`` writes them).

What is measured, against the issue's bars:

* **write** (< 10 s): ``dashboards.build.write_dashboard(dataset, html)``
  (every query, every figure, the HTML), each run in a fresh Python process
  so that no query result or plotly import is warm; the process's own start
  and imports are reported apart.  Cold = first run.
* **size** (<= 10 MB): the HTML file, plotly.js (inlined once) included.
* **render** (< 5 s): a fresh headless Chromium per run (Debian's, through
  ``dashboards.browser``: no compiled-code cache, no warm GPU process) opens
  the file; ``wall`` runs from ``driver.get`` to the page's own "every figure
  drawn and painted" mark, ``page`` from navigation start to that mark.
  Console errors are counted (must be 0).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ingest.dataset import MANIFEST  # noqa: E402

OUT = ROOT / "bench" / "out"


def child_write(dataset: Path, html: Path) -> dict[str, Any]:
    """(In a child process) write the dashboard; its timings and report."""
    t0 = time.perf_counter()
    from dashboards.build import write_dashboard

    t1 = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    report = write_dashboard(dataset, html)
    t2 = time.perf_counter()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "import_s": t1 - t0,
        "write_s": t2 - t1,
        # CPU time of all threads (DuckDB's included): steadier than wall
        # time on a shared machine.
        "cpu_s": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
        "bytes": report.bytes,
        "figures": report.figures,
        "marks": report.marks,
        "notes": report.notes,
    }


def time_write(dataset: Path, html: Path, repeat: int) -> dict[str, Any]:
    runs = []
    for _ in range(repeat + 1):  # the first is the cold one
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(dataset), str(html)],
            check=True,
            capture_output=True,
            text=True,
        )
        result = json.loads(out.stdout)
        result["process_s"] = time.perf_counter() - start
        runs.append(result)
    warm = [r["write_s"] for r in runs[1:]]
    last = runs[-1]
    return {
        "cold_s": round(runs[0]["write_s"], 2),
        "best_s": round(min(warm), 2),
        "median_s": round(statistics.median(warm), 2),
        "process_s": round(statistics.median(r["process_s"] for r in runs[1:]), 2),
        "import_s": round(statistics.median(r["import_s"] for r in runs[1:]), 2),
        "cpu_s": round(statistics.median(r["cpu_s"] for r in runs[1:]), 2),
        "bytes": last["bytes"],
        "figures": last["figures"],
        "marks": last["marks"],
        "notes": last["notes"],
    }


def time_render(html: Path, repeat: int) -> dict[str, Any]:
    from dashboards import browser

    reason = browser.missing()
    if reason:
        return {"skipped": reason}
    walls, pages, errors = [], [], []
    for _ in range(repeat):
        with browser.chromium(1400, 1000) as driver:
            result = browser.load(driver, html)
        walls.append(result.wall_s)
        pages.append(result.ready_ms / 1000)
        errors += result.errors
    return {
        "wall_best_s": round(min(walls), 2),
        "wall_median_s": round(statistics.median(walls), 2),
        "wall_worst_s": round(max(walls), 2),
        "page_median_s": round(statistics.median(pages), 2),
        "console_errors": errors,
    }


def machine() -> dict[str, Any]:
    import duckdb
    import plotly
    import polars as pl

    chromium = "?"
    with contextlib.suppress(OSError):
        chromium = subprocess.run(
            ["chromium", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    return {
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "polars": pl.__version__,
        "plotly": plotly.__version__,
        "chromium": chromium,
        "cpus": os.cpu_count(),
        "load_avg": [round(x, 1) for x in os.getloadavg()],
    }


def markdown(s: dict[str, Any]) -> str:
    w, r = s["write"], s["render"]
    marks = ", ".join(f"{k} {v:,}" for k, v in w["marks"].items())
    mb = w["bytes"] / 1e6
    lines = [
        "| measure | bar | measured |",
        "|---|---|---|",
        f"| HTML size | <= 10 MB | {mb:.2f} MB ({w['figures']} figures, plotly.js included) |",
        f"| write (`write_dashboard`) | < 10 s | best {w['best_s']} s, median {w['median_s']} s,"
        f" cold {w['cold_s']} s; {w['cpu_s']} s of CPU (all threads) |",
    ]
    if "skipped" in r:
        lines.append(f"| render in headless Chromium | < 5 s | skipped: {r['skipped']} |")
    else:
        lines.append(
            f"| render in headless Chromium | < 5 s | best {r['wall_best_s']} s, median"
            f" {r['wall_median_s']} s, worst {r['wall_worst_s']} s (page's own clock:"
            f" {r['page_median_s']} s); {len(r['console_errors'])} console errors |"
        )
    lines += ["", f"Marks per figure (at most 50,000): {marks}."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument(
        "--dataset",
        type=Path,
        help="an existing replayed dataset to use instead (e.g. bench/out/query-10000000)",
    )
    ap.add_argument("--markdown", action="store_true", help="print the RESULTS.md rows")
    ap.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child_write(*args.child)))
        return

    from query_bench import FIXTURE, build  # bench/query_bench.py: the same replicated input

    dataset = args.dataset or OUT / f"dashboard-{args.events}"
    built = None
    if args.dataset is None and not (dataset / MANIFEST).exists():
        if not FIXTURE.exists():
            raise SystemExit(f"{FIXTURE}: the real capture this benchmark replicates is missing")
        if dataset.exists():
            raise SystemExit(f"{dataset}: incomplete; delete it and run again")
        print(f"building {dataset} ...", file=sys.stderr)
        built = build(dataset, args.events)
        print(f"built: {built}", file=sys.stderr)
    html = OUT / f"{dataset.name}.html"
    summary: dict[str, Any] = {"machine": machine(), "dataset": str(dataset), "built": built}
    summary["write"] = time_write(dataset, html, args.repeat)
    summary["render"] = time_render(html, args.repeat)
    summary["machine"]["load_avg_after"] = [round(x, 1) for x in os.getloadavg()]
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    print(markdown(summary) if args.markdown else json.dumps(summary, indent=1))
    w, r = summary["write"], summary["render"]
    failed = [
        name
        for name, bad in (
            ("size", w["bytes"] > 10_000_000),
            ("write", w["median_s"] >= 10),
            ("render", "skipped" not in r and (r["wall_median_s"] >= 5 or r["console_errors"])),
        )
        if bad
    ]
    if failed:
        print(f"over the bar: {', '.join(failed)}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
