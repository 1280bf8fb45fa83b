"""Ingest benchmark: lines/s, peak RSS and Parquet size of `ingest_traces` on large traces.

Builds large inputs by replicating a real capture with shifted timestamps,
then measures, each in its own subprocess (so peak RSS is that run's alone):

* ``ingest``: :func:`ingest.ingest_traces` end to end, text file to dataset;
* ``naive``: the baseline the issue names, one regex per line in a Python
  loop, rows batched into a pyarrow ``ParquetWriter`` (zstd);
* ``wc -l`` on the same file, as the floor any line-oriented tool pays.

Usage::

    .venv/bin/python bench/ingest_bench.py                 # 1M and 10M tracefs, 1M perf
    .venv/bin/python bench/ingest_bench.py --sizes 1000000 --repeat 1
    .venv/bin/python bench/ingest_bench.py --json bench/out/results.json

Inputs and datasets go to ``bench/out/`` (git-ignored); inputs are reused
when present.  See bench/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "fixtures" / "real"
OUT = ROOT / "bench" / "out"

#: The timestamp of a line of any of the three formats: "secs.frac:" after the CPU column.
_TS = re.compile(r"\]\s+(?:[^\s\d]\S{3,4}\s+)?(\d+)\.(\d+)(:)")

#: The naive baseline's line regex: reference §5.1's robust tracefs regex.
NAIVE_TRACEFS = re.compile(
    r"^\s*(?P<comm>.+)-(?P<pid>\d+)\s+(?:\(\s*(?P<tgid>\d+|-+)\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>[^\s]{4,5})\s+)?(?P<ts>\d+(?:\.\d+)?):\s+(?P<event>[^:\s]+):\s?(?P<body>.*)$"
)


# -- inputs ------------------------------------------------------------------------


#: Per-call values in event bodies: x86_fpu's (hashed) pointer, an ioctl's argument.
_VARYING = re.compile(r"(?<=x86/fpu: )[0-9a-f]{16}\b|(?<=arg: 0x)[0-9a-f]+\b")


def build_input(src: Path, dest: Path, n_lines: int, *, vary: bool = False) -> Path:
    """Write ``n_lines`` event lines: ``src``'s events repeated, each copy later in time.

    The header (``#`` lines, ``cpus=``) is written once.  Copy ``k`` has its
    timestamps shifted by ``k`` times the source's span plus 1 ms, keeping
    the digits layout (microseconds) and the per-CPU order of the source.
    With ``vary``, copy ``k`` also changes the pointers in x86_fpu bodies and
    the ioctl arguments (XOR ``k``), so those bodies are new in every copy,
    as if every task and every call were new: the parser's worst case.
    """
    if dest.exists() and dest.stat().st_size > 0:
        return dest
    lines = src.read_text().splitlines(keepends=True)
    header = [ln for ln in lines if ln.startswith("#") or ln.startswith("cpus=")]
    body = [ln for ln in lines if not (ln.startswith("#") or ln.startswith("cpus="))]
    parts: list[tuple[str, int, str]] = []  # (text before secs, ts in us, text from ':')
    for ln in body:
        m = _TS.search(ln)
        if m is None:
            raise SystemExit(f"{src}: no timestamp in {ln!r}")
        frac = m.group(2)
        if len(frac) != 6:
            raise SystemExit(f"{src}: expected microsecond timestamps, got {m.group(0)!r}")
        us = int(m.group(1)) * 1_000_000 + int(frac)
        parts.append((ln[: m.start(1)], us, ln[m.start(3) :]))
    first = min(p[1] for p in parts)
    span = max(p[1] for p in parts) - first + 1000
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    with open(tmp, "w", buffering=1 << 22) as f:
        f.writelines(header)
        written, k = 0, 0
        while written < n_lines:
            shift = k * span
            take = parts[: n_lines - written]

            def post_of(post: str, k: int = k) -> str:
                if not vary or k == 0:
                    return post
                return _VARYING.sub(
                    lambda m: f"{int(m.group(0), 16) ^ k:0{len(m.group(0))}x}", post
                )

            f.write(
                "".join(
                    f"{pre}{(us + shift) // 1_000_000}.{(us + shift) % 1_000_000:06d}"
                    f"{post_of(post)}"
                    for pre, us, post in take
                )
            )
            written += len(take)
            k += 1
    os.replace(tmp, dest)
    return dest


# -- one measurement (runs in a child process) -------------------------------------------


def child_ingest(path: str, out: str, block_bytes: int | None, workers: int) -> dict:
    """Run ingest_traces on ``path`` into ``out``; return timings and sizes."""
    import ingest
    from ingest import ingest_traces

    kwargs = {"force": True, "workers": workers}
    if block_bytes:
        kwargs["block_bytes"] = block_bytes
    t0, c0 = time.perf_counter(), time.process_time()
    reports = ingest_traces([path], Path(out), **kwargs)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    r = reports[0]
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,  # all threads, from the call to its return
        "ingest_from": str(Path(ingest.__file__).parent),
        "lines": r.lines,
        "events": r.stats.events,
        "rejects": r.stats.rejects,
    }


def child_naive(path: str, out: str, style: str = "dicts") -> dict:
    """The baseline: one regex per line in a Python loop, rows to Parquet with pyarrow.

    ``dicts`` is the loop most people write first (a ``groupdict()`` per line,
    ``Table.from_pylist`` per 100k rows); ``columns`` is the same loop tuned
    (typed values appended to one list per column).  Both parse tracefs text
    with reference §5.1's regex and write zstd Parquet.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    schema = pa.schema(
        [
            ("line_no", pa.int64()),
            ("ts_ns", pa.int64()),
            ("cpu", pa.int32()),
            ("pid", pa.int32()),
            ("comm", pa.string()),
            ("flags", pa.string()),
            ("event", pa.string()),
            ("args", pa.string()),
        ]
    )
    Path(out).mkdir(parents=True, exist_ok=True)
    writer = pq.ParquetWriter(Path(out) / "events.parquet", schema, compression="zstd")
    rows: list[dict] = []
    cols: dict[str, list] = {name: [] for name in schema.names}
    n = rejects = 0

    def flush() -> None:
        if style == "dicts":
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
            rows.clear()
        else:
            writer.write_table(pa.table(cols, schema=schema))
            for v in cols.values():
                v.clear()

    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if line.startswith("#"):
                continue
            m = NAIVE_TRACEFS.match(line)
            if m is None:
                rejects += 1
                continue
            secs, _, frac = m["ts"].partition(".")
            ts_ns = int(secs) * 1_000_000_000 + int((frac + "000000000")[:9])
            if style == "dicts":
                row = m.groupdict()
                row.update(line_no=n, ts_ns=ts_ns, cpu=int(row["cpu"]), pid=int(row["pid"]),
                           comm=row["comm"].strip(), args=row.pop("body").rstrip("\n"))
                rows.append(row)
                full = len(rows) >= 100_000
            else:
                cols["line_no"].append(n)
                cols["ts_ns"].append(ts_ns)
                cols["cpu"].append(int(m["cpu"]))
                cols["pid"].append(int(m["pid"]))
                cols["comm"].append(m["comm"].strip())
                cols["flags"].append(m["flags"])
                cols["event"].append(m["event"])
                cols["args"].append(m["body"].rstrip("\n"))
                full = len(cols["line_no"]) >= 100_000
            if full:
                flush()
    flush()
    writer.close()
    return {"seconds": time.perf_counter() - t0, "lines": n, "rejects": rejects}


# -- driver --------------------------------------------------------------------------


@dataclass
class Run:
    """One measured subprocess."""

    kind: str
    input: str
    lines: int
    seconds: float  # inside the child, from the call to its return
    process_seconds: float  # the whole child, interpreter start included
    cpu_seconds: float  # user + system of the child
    peak_rss_mb: float
    load_before: float  # 1-minute load average when the run started (other work on the host)
    extra: dict = field(default_factory=dict)

    @property
    def lines_per_s(self) -> float:
        return self.lines / self.seconds


def run_child(kind: str, args: list[str], env: dict[str, str] | None = None) -> Run:
    """Run this script in ``--child`` mode and collect its result and rusage."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, *args]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=ROOT, env=env)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{kind} child failed ({proc.returncode}): {' '.join(cmd)}")
    result = json.loads(output)
    return Run(
        kind=kind,
        input=args[0],
        lines=result.pop("lines"),
        seconds=result.pop("seconds"),
        process_seconds=wall,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,  # Linux: KiB
        load_before=load,
        extra=result,
    )


def wc_seconds(path: Path, repeat: int) -> float:
    """Best wall time of ``wc -l`` on ``path`` (page cache warm)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(["wc", "-l", str(path)], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return min(times)


def dir_bytes(path: Path, sub: str = "") -> int:
    """Total size of the files under ``path/sub``."""
    return sum(p.stat().st_size for p in (path / sub).rglob("*") if p.is_file())


def versions() -> dict[str, str]:
    """Versions of the interpreter, the libraries and the machine."""
    import numpy
    import polars
    import pyarrow

    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "python": platform.python_version(),
        "polars": polars.__version__,
        "pyarrow": pyarrow.__version__,
        "numpy": numpy.__version__,
        "kernel": platform.release(),
        "cpu": cpu,
        "cpus": str(os.cpu_count()),
        "memory_gb": f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f}",
    }


def main(argv: list[str] | None = None) -> int:
    """Build the inputs, run the measurements, print a table (and write JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000000,10000000", help="tracefs input sizes (lines)")
    ap.add_argument("--perf-size", type=int, default=1_000_000, help="perf-script input lines")
    ap.add_argument("--naive-size", type=int, default=1_000_000, help="naive baseline input lines")
    ap.add_argument(
        "--vary-size", type=int, default=1_000_000,
        help="tracefs input whose x86_fpu and ioctl bodies differ in every copy (0: none)",
    )
    ap.add_argument("--repeat", type=int, default=3, help="runs per input; the best is kept")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--block-bytes", type=int, default=0, help="0: ingest's default")
    ap.add_argument(
        "--src", type=Path,
        help="import ingest from this checkout instead of the installed one (A/B a change)",
    )
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the datasets in bench/out/")
    args = ap.parse_args(argv)
    if not REAL.is_dir():
        print(f"needs the real fixtures in {REAL}", file=sys.stderr)
        return 2
    env = None
    if args.src:
        env = {**os.environ, "PYTHONPATH": str(args.src.resolve())}

    sizes = [int(s) for s in args.sizes.split(",") if s]
    inputs: list[tuple[str, Path]] = []
    for n in sizes:
        inputs.append(("tracefs", build_input(REAL / "mixed.tracefs.txt", _input(n, "tracefs"), n)))
    if args.vary_size:
        n = args.vary_size
        src = REAL / "mixed.tracefs.txt"
        varied = build_input(src, _input(n, "varied.tracefs"), n, vary=True)
        inputs.append(("tracefs varied", varied))
    if args.perf_size:
        n = args.perf_size
        src = REAL / "mixed.perf-script.txt"
        inputs.append(("perf-script", build_input(src, _input(n, "perf-script"), n)))
    naive_input = build_input(
        REAL / "mixed.tracefs.txt", _input(args.naive_size, "tracefs"), args.naive_size
    )

    rows = []
    for fmt, path in inputs:
        wc = wc_seconds(path, 3)  # also warms the page cache
        runs = []
        for _ in range(args.repeat):
            ds = OUT / f"ds-{path.stem}"
            runs.append(
                run_child(
                    "ingest", [str(path), str(ds), str(args.block_bytes), str(args.workers)], env
                )
            )
            events = dir_bytes(ds, "events")
            total = dir_bytes(ds)
            if not args.keep:
                shutil.rmtree(ds, ignore_errors=True)
        best = min(runs, key=lambda r: r.seconds)
        text = path.stat().st_size
        rows.append(
            {
                "format": fmt,
                "input": path.name,
                "lines": best.lines,
                "text_mb": text / 2**20,
                "best_s": best.seconds,
                "median_s": statistics.median(r.seconds for r in runs),
                "lines_per_s": best.lines_per_s,
                "process_s": best.process_seconds,
                "cpu_s": best.cpu_seconds,
                "cpu_s_per_mline": best.extra["cpu_seconds"] / best.lines * 1e6,
                "peak_rss_mb": max(r.peak_rss_mb for r in runs),
                "events_parquet_mb": events / 2**20,
                "dataset_mb": total / 2**20,
                "text_over_parquet": text / total,
                "wc_s": wc,
                "ingest_over_wc": best.seconds / wc,
                "runs_s": [round(r.seconds, 3) for r in runs],
                "load_before": [round(r.load_before, 2) for r in runs],
                "ingest_from": best.extra.get("ingest_from"),
            }
        )
        print(_row_text(rows[-1]), flush=True)

    naive_rows = {}
    for style in ("dicts", "columns"):
        runs = [
            run_child("naive", [str(naive_input), str(OUT / "ds-naive"), style])
            for _ in range(max(1, min(args.repeat, 2)))
        ]
        shutil.rmtree(OUT / "ds-naive", ignore_errors=True)
        nb = min(runs, key=lambda r: r.seconds)
        naive_rows[style] = {
            "style": style,
            "input": naive_input.name,
            "lines": nb.lines,
            "best_s": nb.seconds,
            "lines_per_s": nb.lines_per_s,
            "peak_rss_mb": nb.peak_rss_mb,
            "cpu_s": nb.cpu_seconds,
        }
        print(
            f"naive-{style:7s} {naive_input.name:32s} {nb.lines:>10,d} lines {nb.seconds:7.2f} s "
            f"{nb.lines_per_s:>11,.0f} lines/s  rss {nb.peak_rss_mb:6.0f} MB",
            flush=True,
        )
    naive_row = naive_rows["dicts"]
    for r in rows:
        r["speedup_vs_naive"] = r["lines_per_s"] / naive_row["lines_per_s"]
        r["speedup_vs_tuned_naive"] = r["lines_per_s"] / naive_rows["columns"]["lines_per_s"]
    summary = {
        "machine": versions(),
        "src": str(args.src) if args.src else None,
        "ingest": rows,
        "naive": naive_row,
        "naive_tuned": naive_rows["columns"],
        "argv": sys.argv[1:],
    }
    print()
    print(_markdown(summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


def _input(n: int, fmt: str) -> Path:
    return OUT / f"mixed-{n}.{fmt}.txt"


def _row_text(r: dict) -> str:
    return (
        f"ingest  {r['input']:34s} {r['lines']:>10,d} lines {r['best_s']:7.2f} s "
        f"{r['lines_per_s']:>11,.0f} lines/s  rss {r['peak_rss_mb']:6.0f} MB  "
        f"text/parquet {r['text_over_parquet']:5.1f}x  wc -l {r['wc_s']:.2f} s  runs {r['runs_s']} "
        f"load {r['load_before']}"
    )


def _markdown(s: dict) -> str:
    head = (
        "| format | input lines | text MB | best s (median) | lines/s | vs naive "
        "| CPU s per M lines | peak RSS MB | dataset MB | text/Parquet | wc -l s | ingest/wc |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    body = [
        f"| {r['format']} | {r['lines']:,} | {r['text_mb']:.0f} | {r['best_s']:.2f} "
        f"({r['median_s']:.2f}) | {r['lines_per_s']:,.0f} | {r['speedup_vs_naive']:.1f}x | "
        f"{r['cpu_s_per_mline']:.2f} | {r['peak_rss_mb']:.0f} | {r['dataset_mb']:.1f} | "
        f"{r['text_over_parquet']:.1f} | {r['wc_s']:.2f} | {r['ingest_over_wc']:.1f} |"
        for r in s["ingest"]
    ]
    naive = [
        f"\nnaive baseline, {n['style']} ({n['input']}): {n['lines']:,} lines in "
        f"{n['best_s']:.2f} s = {n['lines_per_s']:,.0f} lines/s, peak RSS {n['peak_rss_mb']:.0f} MB"
        for n in (s["naive"], s["naive_tuned"])
    ]
    return "\n".join([head, *body, *naive])


def _child(argv: list[str]) -> int:
    kind, rest = argv[0], argv[1:]
    if kind == "ingest":
        path, out, block, workers = rest
        result = child_ingest(path, out, int(block) or None, int(workers))
    elif kind == "naive":
        result = child_naive(*rest)
    else:
        raise SystemExit(f"unknown child {kind!r}")
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.exit(_child(sys.argv[2:]))
    sys.exit(main())
