"""Fleet scale: many traces, each an independent task, and the `host` dimension.

The traces are the built-in model's (small and fast to make); every run on
worker processes or a Dask cluster is compared, row for row, with the same
run done here in one process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest

import queries
from ingest import dataset as ds
from ingest.errors import InputError
from ingest.fleet import FleetError, FleetOptions
from ingest.inputs import TraceFile, expand
from ingest.load import IngestTask, ingest_traces
from pipeline.fleet import run_traces
from pipeline.model.api import generate
from pipeline.orchestrate import ReplayTask

FPUREPLAY = str(Path(sys.executable).with_name("fpureplay"))  # the console script
TABLES = ("events", "rejects", "runs", "fpu_ops", "validation", "audit")


def make_traces(root: Path, n: int, *, hosts: int = 2, duration_ms: float = 4.0) -> list[Path]:
    """``n`` model traces under ``root/host=web-K/``, each from its own seed."""
    paths = []
    for i in range(n):
        path = root / f"host=web-{i % hosts}" / f"t{i:02d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        generate("pingpong", seed=i, duration_ms=duration_ms).write(path, "tracefs", force=True)
        paths.append(path)
    return paths


def rows(dataset: Path) -> dict[str, list[tuple]]:
    """Every table's rows in a canonical order, and the manifest's sources by id."""
    con = queries.connect(dataset)
    out = {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in TABLES}
    manifest = json.loads((dataset / ds.MANIFEST).read_text())
    out["sources"] = sorted(json.dumps(s, sort_keys=True) for s in manifest["sources"])
    return out


def partitions(dataset: Path) -> set[tuple[str, ...]]:
    """(table, [policy,] host, source) of every partition directory."""
    return {p.relative_to(dataset).parts for p in dataset.rglob("source=*")}


def run_all(paths, out: Path, **options) -> list:
    task = IngestTask()
    replay = ReplayTask()
    return run_traces([str(p) for p in paths], out, task, replay, FleetOptions(**options))


# -- inputs --------------------------------------------------------------------------------


def test_directories_globs_and_hosts_in_paths(tmp_path):
    for name in (
        "host=web-1/a.txt", "host=web-1/a.txt.truth.json", "host=web-1/b.dat",
        "host=web-2/deep/c.tracefs.txt.zst", "host=web-2/trace", "host=web-2/.hidden.txt",
        "host=web-2/notes.md", ".cache/host=x/d.txt", "plain/e.perf",
    ):  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    root = str(tmp_path)
    assert expand([root]) == [
        TraceFile(f"{root}/host=web-1/a.txt", "web-1"),
        TraceFile(f"{root}/host=web-1/b.dat", "web-1"),
        TraceFile(f"{root}/host=web-2/deep/c.tracefs.txt.zst", "web-2"),
        TraceFile(f"{root}/host=web-2/trace", "web-2"),
        TraceFile(f"{root}/plain/e.perf", None),
    ]
    # A named file is taken whatever its name; a glob may name directories;
    # the same file named twice is one input.
    assert expand(
        [f"{root}/host=web-2/notes.md", f"{root}/host=*1", f"{root}/host=web-1/a.txt"]
    ) == [
        TraceFile(f"{root}/host=web-2/notes.md", "web-2"),
        TraceFile(f"{root}/host=web-1/a.txt", "web-1"),
        TraceFile(f"{root}/host=web-1/b.dat", "web-1"),
    ]
    assert expand([f"{root}/**/*.perf", "-"]) == [
        TraceFile(f"{root}/plain/e.perf", None),
        TraceFile("-", None),
    ]


@pytest.mark.parametrize(
    ("arg", "reason"),
    [
        ("missing.txt", "No such file or directory"),
        ("nothing-*.txt", "matches no file"),
        ("empty", "directory holds no trace files (names ending in .txt, .trace, .log, .dat,"
                  " .report, .perf, optionally .gz/.zst, or no suffix)"),
    ],
)  # fmt: skip
def test_an_input_that_names_nothing_is_an_error(tmp_path, arg, reason):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("not a trace")
    with pytest.raises(InputError) as err:
        expand([str(tmp_path / arg)])
    assert str(err.value) == f"{tmp_path / arg}: {reason}"


# -- the host dimension ----------------------------------------------------------------------


def _with_header(path: Path, header: str, fmt: str, seed: int) -> Path:
    generate("pingpong", seed=seed, duration_ms=2).write(path, fmt, force=True)
    path.write_text(header + path.read_text())
    return path


def test_host_from_option_path_header_or_unknown(tmp_path):
    traces = tmp_path / "in"
    [by_path] = make_traces(traces, 1, hosts=1)  # host=web-0/t00.txt
    perf = _with_header(
        traces / "perf.txt", "# ========\n# hostname : perf-box\n# ========\n", "perf-script", 1
    )
    rec = _with_header(
        traces / "rec.txt", "# fpureplay-record: kernel=6.18.0 host=rec-box\n", "tracefs", 2
    )
    hostile = _with_header(traces / "evil.txt", "# hostname : ../../etc\n", "perf-script", 3)
    plain = traces / "plain.txt"
    generate("pingpong", seed=4, duration_ms=2).write(plain, "tracefs", force=True)
    inputs = [str(p) for p in (by_path, perf, rec, hostile, plain)]

    reports = ingest_traces(inputs, tmp_path / "ds")
    assert [r.host for r in reports] == ["web-0", "perf-box", "rec-box", "etc", "unknown"]
    con = queries.connect(tmp_path / "ds")
    by_host = "SELECT host, count(*) FROM sources GROUP BY host ORDER BY host"
    assert con.execute(by_host).fetchall() == [
        ("etc", 1), ("perf-box", 1), ("rec-box", 1), ("unknown", 1), ("web-0", 1),
    ]  # fmt: skip
    assert {p[1] for p in partitions(tmp_path / "ds")} == {
        "host=etc", "host=perf-box", "host=rec-box", "host=unknown", "host=web-0"
    }  # fmt: skip

    # --host names every input's host, over its path and its header.
    forced = ingest_traces(inputs, tmp_path / "forced", host="hv-9")
    assert {r.host for r in forced} == {"hv-9"}
    with pytest.raises(InputError) as err:
        ingest_traces(inputs, tmp_path / "bad", host="a/b")
    assert str(err.value) == (
        "'a/b': is not a usable host name (letters, digits, '.', '_', '-'; at most 63)"
    )
    assert not (tmp_path / "bad").exists()


def test_every_table_has_the_host_column(tmp_path):
    paths = make_traces(tmp_path / "in", 3)
    run_all(paths, tmp_path / "ds")
    con = queries.connect(tmp_path / "ds")
    for table in (*TABLES, "sources"):
        described = [row[:2] for row in con.execute(f"DESCRIBE {table}").fetchall()]
        assert described[:2] == [("source", "VARCHAR"), ("host", "VARCHAR")], table
    # The model's traces reject no line and make no FPU-state ioctl: those
    # two tables have (empty) partitions only.
    for table in ("events", "runs", "fpu_ops", "validation", "sources"):
        hosts = con.execute(f"SELECT DISTINCT host FROM {table} ORDER BY host").fetchall()
        assert hosts == [("web-0",), ("web-1",)], table
    tables = {(p[0], p[-2]) for p in partitions(tmp_path / "ds")}
    assert tables == {(t, f"host=web-{h}") for t in TABLES for h in (0, 1)}


# -- executors -------------------------------------------------------------------------------


def test_worker_processes_make_the_same_dataset(tmp_path):
    paths = make_traces(tmp_path / "in", 6)
    here = run_all(paths, tmp_path / "one", jobs=1)
    pooled = run_all(paths, tmp_path / "two", jobs=2)
    assert [r.status for r in pooled] == ["added"] * 6
    assert [(r.path, r.id, r.host) for r in pooled] == [(r.path, r.id, r.host) for r in here]
    assert rows(tmp_path / "two") == rows(tmp_path / "one")
    assert not list((tmp_path / "two").glob(f"{ds.INCOMING}*"))


def test_replay_on_worker_processes_updates_the_manifest_too(tmp_path):
    from pipeline.orchestrate import replay_dataset

    paths = make_traces(tmp_path / "in", 3)
    for name in ("one", "two"):
        ingest_traces([str(p) for p in paths], tmp_path / name)
    replay_dataset(tmp_path / "one")
    manifest = replay_dataset(tmp_path / "two", options=FleetOptions(jobs=2))
    assert all("replay" in s and "audit" in s for s in manifest["sources"])
    assert manifest["replay"]["guest_run_rule"] == "kvm_entry"
    assert rows(tmp_path / "two") == rows(tmp_path / "one")


def test_a_dask_local_cluster_makes_the_same_dataset(tmp_path):
    distributed = pytest.importorskip("distributed")
    paths = make_traces(tmp_path / "in", 20, hosts=4, duration_ms=2)
    run_all(paths, tmp_path / "one", jobs=1)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):  # fmt: skip
        reports = run_all(
            paths, tmp_path / "dask", executor="dask", scheduler=cluster.scheduler_address
        )
        # Both workers took tasks: the run really was spread out.
        assert len(client.scheduler_info()["workers"]) == 2
    assert [r.status for r in reports] == ["added"] * 20
    assert rows(tmp_path / "dask") == rows(tmp_path / "one")


def test_dask_without_the_extra_or_a_scheduler_is_a_clear_error(tmp_path, monkeypatch):
    paths = make_traces(tmp_path / "in", 1)
    with pytest.raises(InputError) as err:
        run_all(paths, tmp_path / "ds", executor="dask", scheduler="tcp://127.0.0.1:9")
    assert str(err.value).startswith("tcp://127.0.0.1:9: no Dask scheduler there: ")
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    with pytest.raises(InputError) as err:
        run_all(paths, tmp_path / "ds", executor="dask")
    assert str(err.value) == (
        "--executor dask: needs the optional extra: pip install 'fpureplay[dask]'"
    )
    assert not (tmp_path / "ds").exists()


# -- idempotence and errors ------------------------------------------------------------------


def test_a_rerun_skips_what_is_there_and_touches_no_file(tmp_path):
    paths = make_traces(tmp_path / "in", 4)
    run_all(paths, tmp_path / "ds", jobs=2)
    before = {p: p.stat().st_ino for p in (tmp_path / "ds").rglob("*.parquet")}
    again = run_all(paths, tmp_path / "ds", jobs=2)
    assert [r.status for r in again] == ["already present"] * 4
    assert {p: p.stat().st_ino for p in (tmp_path / "ds").rglob("*.parquet")} == before


def test_the_same_trace_twice_in_one_run_is_one_source(tmp_path):
    [path] = make_traces(tmp_path / "in", 1)
    copy = tmp_path / "in" / "copy.txt"
    shutil.copy(path, copy)
    reports = run_all([path, copy], tmp_path / "ds", jobs=2)
    assert [r.status for r in reports] == ["added", "already present"]
    assert reports[0].id == reports[1].id
    assert len(partitions(tmp_path / "ds")) == len(TABLES) + 2  # fpu_ops: 3 policies


def test_a_new_cost_model_replays_the_sources_already_there(tmp_path):
    paths = make_traces(tmp_path / "in", 2)
    run_all(paths[:1], tmp_path / "ds")
    task, options = IngestTask(), FleetOptions()
    legacy_only = ReplayTask(policies=("legacy",))
    run_traces([str(paths[1])], tmp_path / "ds", task, legacy_only, options)
    con = queries.connect(tmp_path / "ds")
    assert con.execute("SELECT DISTINCT policy FROM fpu_ops").fetchall() == [("legacy",)]
    assert con.execute("SELECT count(DISTINCT source) FROM runs").fetchall() == [(2,)]


def test_on_error_raise_leaves_the_dataset_as_it_was(tmp_path):
    paths = make_traces(tmp_path / "in", 3)
    run_all(paths[:1], tmp_path / "ds")
    before = rows(tmp_path / "ds")
    bad = tmp_path / "in" / "host=web-1" / "bad.txt"
    bad.write_bytes(b"\x00\x01garbage\n")
    with pytest.raises(FleetError) as err:
        run_all([*paths, bad], tmp_path / "ds", jobs=2)
    assert str(err.value) == (
        f"{bad}:1: cannot tell the trace format from the first lines (first line:"
        " '\\x00\\x01garbage'); expected tracefs, trace-cmd report or perf script text,"
        " or pass --format"
    )
    assert rows(tmp_path / "ds") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.lock", "ds", "in"]  # no staging


def test_on_error_skip_keeps_the_good_and_a_rerun_completes_the_rest(tmp_path):
    paths = make_traces(tmp_path / "in", 4)
    reference = tmp_path / "reference"
    run_all(paths, reference)
    good = paths[2].read_bytes()
    paths[2].write_bytes(b"\x00\x01garbage\n")
    reports = run_all(paths, tmp_path / "ds", jobs=2, on_error="skip")
    assert [r.status for r in reports] == ["added", "added", "failed", "added"]
    assert reports[2].error.startswith(f"{paths[2]}:1: cannot tell the trace format")
    assert reports[2].summary_row()["reason"] == reports[2].error
    assert len(json.loads((tmp_path / "ds" / ds.MANIFEST).read_text())["sources"]) == 3
    paths[2].write_bytes(good)
    again = run_all(paths, tmp_path / "ds", jobs=2, on_error="skip")
    assert [r.status for r in again] == ["already present"] * 2 + ["added", "already present"]
    assert rows(tmp_path / "ds") == rows(reference)


def test_cli_summary_per_file_and_exit_codes(runner, tmp_path):
    paths = make_traces(tmp_path / "in", 2)
    bad = tmp_path / "in" / "host=web-0" / "bad.txt"
    bad.write_bytes(b"\x00\x01garbage\n")
    out = runner(
        "ingest", str(tmp_path / "in"), "-o", str(tmp_path / "ds"), "--jobs", "2",
        "--on-error", "skip", "--summary-format", "json",
    )  # fmt: skip
    assert out.exit_code == 1
    summary = json.loads(out.stdout)
    assert [(Path(r["path"]).name, r["host"], r["status"]) for r in summary] == [
        ("bad.txt", None, "failed"), ("t00.txt", "web-0", "added"), ("t01.txt", "web-1", "added"),
    ]  # fmt: skip
    assert out.stderr.startswith(
        f"error: 1 of 3 traces failed and were skipped (first: {bad}:1: cannot tell the trace"
    )
    assert out.stderr.endswith("; the others are in the dataset\n")
    raised = runner("ingest", str(tmp_path / "in"), "-o", str(tmp_path / "ds2"), "--jobs", "2")
    assert raised.exit_code == 2
    assert raised.stderr.startswith(f"error: {bad}:1: cannot tell the trace format")
    assert not (tmp_path / "ds2").exists()
    assert len(paths) == 2


def test_run_lists_every_trace_on_stderr_and_sums_up_on_stdout(runner, tmp_path):
    make_traces(tmp_path / "in", 2)
    bad = tmp_path / "in" / "host=web-1" / "bad.txt"
    bad.write_bytes(b"\x00\x01garbage\n")
    args = ["run", str(tmp_path / "in"), "-o", str(tmp_path / "ds"), "--on-error", "skip"]
    out = runner(*args, "--jobs", "2", "--format", "json")
    assert out.exit_code == 1
    summary = json.loads(out.stdout)  # stdout: the policy summary alone
    assert sorted({(r["source"][:3], r["policy"]) for r in summary}) == [
        (t, p) for t in ("t00", "t01") for p in ("deferred", "legacy", "vcpu_run")
    ]
    # stderr: the per-trace table (for people; its layout may change), then the error.
    table = out.stderr[: out.stderr.index("error: ")]
    assert table.lstrip().startswith(f"traces ({tmp_path / 'ds'})")
    cells = [c.strip() for c in table.replace("\n", "│").split("│")]
    assert [c for c in cells if c in ("added", "failed", "already present")] == [
        "added", "failed", "added",
    ]  # fmt: skip
    assert out.stderr.endswith("; the others are in the dataset\n")


# -- a worker killed mid-run -----------------------------------------------------------------


def _workers(pid: int) -> list[int]:
    """The pool's worker processes among ``pid``'s children (not its resource tracker)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"multiprocessing" in cmdline and b"resource_tracker" not in cmdline:
                found.append(int(child))
    return found


def _kill_a_worker_mid_task(args: list[str], staging_parent: Path) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        [FPUREPLAY, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )
    deadline = time.monotonic() + 60
    killed = None
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        # A task is under way once its private incoming tree exists.
        busy = list(staging_parent.glob(f".*.staging-*/{ds.INCOMING}/*"))
        workers = _workers(proc.pid) if busy else []
        if workers:
            os.kill(workers[0], signal.SIGKILL)
            killed = workers[0]
        time.sleep(0.005)
    out, err = proc.communicate(timeout=120)
    assert killed is not None, f"no worker was caught mid-task: {err.decode()}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), err.decode())


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_a_killed_worker_leaves_no_partial_partition(tmp_path, on_error):
    paths = make_traces(tmp_path / "in", 6, duration_ms=60)
    reference = tmp_path / "reference"
    run_all(paths, reference)
    dataset = tmp_path / "ds"
    args = ["run", str(tmp_path / "in"), "-o", str(dataset), "--jobs", "2", "--on-error", on_error]
    killed = _kill_a_worker_mid_task(args, tmp_path)
    assert "the worker process died (BrokenProcessPool: killed, or out of memory?)" in killed.stderr
    # Nothing half-written anywhere: no staging directory is left, and every
    # partition of the dataset belongs to a source its manifest lists.
    assert not list(tmp_path.glob(".*staging*"))
    if on_error == "raise":
        assert killed.returncode == 2 and not dataset.exists()
    else:
        assert killed.returncode == 1
        # The pool breaks: every task not finished by then fails with it
        # (how many did finish depends on timing).
        listed = {(s["host"], s["id"]) for s in ds.read_manifest(dataset)["sources"]}
        assert len(listed) < 6
        parts = partitions(dataset)
        assert {(p[-2][5:], p[-1][7:]) for p in parts} == listed
        assert len(parts) == 8 * len(listed)  # 6 tables, fpu_ops in 3 policies
    rerun = subprocess.run([FPUREPLAY, *args], capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert rows(dataset) == rows(reference)


# -- fleet_summary and the host filter -------------------------------------------------------

SPAN_S = 712e-6  # the STEADY trace's span


def _ops(n: int, redundant: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "pid": pl.Series([4321] * n, dtype=pl.Int32),
            "cpu": pl.Series([0] * n, dtype=pl.Int32),
            "ts_ns": [5123000100000 + i for i in range(n)],
            "op": ["save"] * n,
            "context": ["user"] * n,
            "trigger": ["sched_out"] * n,
            "redundant": [i < redundant for i in range(n)],
            "reason": [None] * n,
            "bytes": pl.Series([576] * n, dtype=pl.Int32),
            "cost_ns": [40.0] * n,
        }
    )


@pytest.fixture
def two_hosts(tmp_path) -> Path:
    """STEADY ingested for hosts h1 and h2, with hand-made fpu_ops of 40 ns each.

    h1: legacy 4 ops (2 redundant), vcpu_run 2; h2: legacy 3 (1 redundant), vcpu_run 3.
    """
    from tests.test_queries import STEADY

    dataset = tmp_path / "ds"
    for host, extra in (("h1", b""), ("h2", b"# another capture\n")):
        trace = tmp_path / f"{host}.txt"
        trace.write_bytes(extra + STEADY)
        [report] = ingest_traces([str(trace)], dataset, host=host)
        for policy, (n, red) in {"legacy": (4, 2), "vcpu_run": (2, 0)}.items():
            if host == "h2":
                n, red = {"legacy": (3, 1), "vcpu_run": (3, 0)}[policy]
            part = ds.partition_dir(dataset, "fpu_ops", report.id, host=host, policy=policy)
            ds.write_frame(part / "part-0.parquet", _ops(n, red))
    return dataset


def _summary(dataset: Path, **kw) -> list[tuple]:
    frame = queries.run(dataset, "fleet_summary", **kw)
    return [
        tuple(round(v, 6) if isinstance(v, float) else v for v in row)
        for row in frame.select(
            "scope", "host", "policy", "sources", "traced_s", "ops", "redundant_ops",
            "redundant_pct", "cost_us", "ops_per_s", "cost_saved_us_per_s", "savings_rank",
        ).rows()
    ]  # fmt: skip


def test_fleet_summary_by_hand(two_hosts):
    s, s2 = SPAN_S, 2 * SPAN_S
    r = lambda v: round(v, 6)  # noqa: E731
    assert _summary(two_hosts) == [
        # fleet: 7 legacy ops (3 redundant) and 5 vcpu_run ops over 2 spans
        ("fleet", None, "legacy", 2, r(s2), 7, 3, r(300 / 7), 0.28, r(7 / s2), 0.0, None),
        ("fleet", None, "vcpu_run", 2, r(s2), 5, 0, 0.0, 0.2, r(5 / s2), r(0.08 / s2), None),
        # h1 saves 2 ops * 40 ns per trace, h2 nothing: h1 ranks first
        ("host", "h1", "legacy", 1, r(s), 4, 2, 50.0, 0.16, r(4 / s), 0.0, None),
        ("host", "h1", "vcpu_run", 1, r(s), 2, 0, 0.0, 0.08, r(2 / s), r(0.08 / s), 1),
        ("host", "h2", "legacy", 1, r(s), 3, 1, r(100 / 3), 0.12, r(3 / s), 0.0, None),
        ("host", "h2", "vcpu_run", 1, r(s), 3, 0, 0.0, 0.12, r(3 / s), 0.0, 2),
    ]


def test_the_host_filter_limits_every_view(two_hosts, runner):
    r = lambda v: round(v, 6)  # noqa: E731
    assert _summary(two_hosts, hosts=["h2"]) == [
        ("fleet", None, "legacy", 1, r(SPAN_S), 3, 1, r(100 / 3), 0.12, r(3 / SPAN_S), 0.0, None),
        ("fleet", None, "vcpu_run", 1, r(SPAN_S), 3, 0, 0.0, 0.12, r(3 / SPAN_S), 0.0, None),
        ("host", "h2", "legacy", 1, r(SPAN_S), 3, 1, r(100 / 3), 0.12, r(3 / SPAN_S), 0.0, None),
        ("host", "h2", "vcpu_run", 1, r(SPAN_S), 3, 0, 0.0, 0.12, r(3 / SPAN_S), 0.0, 1),
    ]
    out = runner(
        "query", str(two_hosts), "--host", "h1", "--sql",
        "SELECT (SELECT count(DISTINCT host) FROM events), (SELECT count(*) FROM sources),"
        " (SELECT min(host) FROM fpu_ops)", "--format", "csv",
    )  # fmt: skip
    assert out.exit_code == 0, out.stderr
    assert out.stdout.splitlines()[1] == "1,1,h1"
    missing = runner("query", str(two_hosts), "policy_summary", "--host", "h3")
    assert missing.exit_code == 2
    assert missing.stderr == f"error: no host 'h3' in {two_hosts} (its hosts: h1, h2)\n"


def test_spark_style_readers_see_host_and_source_from_the_paths(two_hosts):
    # Any hive-partitioning reader gets both keys from the directory names.
    got = duckdb.sql(
        f"SELECT host, count(DISTINCT source), count(*) FROM read_parquet("
        f"'{two_hosts}/fpu_ops/*/*/*/*.parquet', hive_partitioning = true)"
        " GROUP BY host ORDER BY host"
    ).fetchall()
    assert got == [("h1", 1, 6), ("h2", 1, 6)]


def test_run_ingest_is_importable_without_dask():
    # The core never imports the optional extra.
    code = (
        "import sys, ingest.fleet, pipeline.fleet, pipeline.cli;"
        " print('distributed' in sys.modules, 'dask' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "False False\n"
