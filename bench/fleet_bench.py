"""Fleet benchmark: 100 traces of 100k lines, `fpureplay run` on 1 and 2 processes and on Dask.

Each trace is the real capture `mixed.tracefs.txt` repeated to 100k lines
(ingest_bench.build_input), with a first comment line naming the trace and
its host, so that all 100 have their own sha256; they sit in ten
`host=hNN/` directories.  Every configuration runs `fpureplay run DIR -o
DATASET --force` in a child process (ingest and replay of every trace, all
three policies) and reports its wall time, the speed-up over `--jobs 1`
and the CPU time of the whole process tree.  The datasets are compared
with the `--jobs 1` one (row counts per table).

    .venv/bin/python bench/fleet_bench.py                 # 100 x 100k lines
    .venv/bin/python bench/fleet_bench.py --traces 10     # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ingest_bench import REAL, build_input  # noqa: E402

OUT = ROOT / "bench" / "out" / "fleet"
FPUREPLAY = str(Path(sys.executable).with_name("fpureplay"))
CONFIGS = {
    "--jobs 1": ["--jobs", "1"],
    "--jobs 2": ["--jobs", "2"],
    "dask, 2 workers": ["--executor", "dask", "--jobs", "2"],
}


def build_traces(n: int, lines: int, hosts: int = 10) -> Path:
    """``n`` distinct traces of ``lines`` lines under ``OUT/traces/host=hNN/``."""
    base = build_input(REAL / "mixed.tracefs.txt", OUT / f"base-{lines}.txt", lines)
    text = base.read_bytes()
    root = OUT / f"traces-{n}x{lines}"
    for i in range(n):
        path = root / f"host=h{i % hosts:02d}" / f"t{i:03d}.txt"
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"# fleet bench trace {i}\n".encode() + text)
    return root


def timed_run(traces: Path, dataset: Path, extra: list[str]) -> dict:
    """Wall time and CPU time (all its processes) of one `fpureplay run`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(
        [FPUREPLAY, "run", str(traces), "-o", str(dataset), "--force", "--format", "csv", *extra],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "wall_s": round(wall, 1),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
    }


def table_rows(dataset: Path) -> dict[str, int]:
    """Rows per table: the runs must agree."""
    import queries

    con = queries.connect(dataset)
    return {
        t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("events", "rejects", "runs", "fpu_ops", "validation", "audit", "sources")
    }


def main(argv: list[str] | None = None) -> int:
    """Build the inputs, run every configuration, print and optionally save the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=int, default=100)
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    traces = build_traces(args.traces, args.lines)
    size = sum(p.stat().st_size for p in traces.rglob("*.txt"))
    results: dict[str, dict] = {}
    reference: dict[str, int] | None = None
    for name, extra in CONFIGS.items():
        dataset = OUT / f"ds-{name.split()[0].strip('-,')}-{extra[-1]}"
        load = os.getloadavg()[0]
        r = timed_run(traces, dataset, extra)
        rows = table_rows(dataset)
        reference = reference or rows
        r.update(load_before=round(load, 2), same_rows=rows == reference)
        results[name] = r
        print(name, r, flush=True)
    base = results["--jobs 1"]["wall_s"]
    for r in results.values():
        r["speedup"] = round(base / r["wall_s"], 2)
    summary = {
        "traces": args.traces,
        "lines_per_trace": args.lines,
        "input_mb": round(size / 2**20),
        "rows": reference,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs,"
        f" Python {platform.python_version()}",
        "results": results,
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
