"""`fpureplay audit DATASET`: exact output and exit codes, the audit table, the figures.

The command is invoked in-process as pipeline/cli.py registers it
(``app.command("audit")(audit)``); until it does, through the same
registration on a local app.  MIGRATE (tests/audit_traces.py) has 8 calls,
3 of them violations; CLEAN is MIGRATE without those 3.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import polars as pl
import pytest

import queries
from pipeline.audit_figures import calls_timeline, wait_buckets, wait_histogram
from tests.audit_traces import MIGRATE, MIGRATE_LINES

# MIGRATE without calls 0, 5 and 6 (lines 5-6, 23-24, 26-27): nothing to flag.
CLEAN = "\n".join(x for i, x in enumerate(MIGRATE_LINES, 1) if i not in (5, 6, 23, 24, 26, 27))
CLEAN += "\n"
M = f"migrate-{hashlib.sha256(MIGRATE.encode()).hexdigest()[:12]}"
C = f"clean-{hashlib.sha256(CLEAN.encode()).hexdigest()[:12]}"
MESSAGE = (
    "error: 3 FPU-state ioctls broke the vCPU mutex rule (completed inside its vCPU's KVM_RUN"
    " or copied a stale guest state)\n"
)


@pytest.fixture(scope="module")
def cli():
    """Invoke `fpureplay audit ...`; stdout and stderr kept apart."""
    import typer
    from typer.testing import CliRunner

    from pipeline.audit_cli import audit
    from pipeline.cli import app as main_app

    if any(c.name == "audit" for c in main_app.registered_commands):
        app = main_app
    else:  # until pipeline/cli.py registers the command: the same registration
        app = typer.Typer(add_completion=False, rich_markup_mode=None,
                          pretty_exceptions_enable=False)  # fmt: skip

        @app.callback()
        def _main() -> None:
            """fpureplay"""

        app.command("audit")(audit)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, ["audit", *args], env={"COLUMNS": "200"})

    return invoke


def make_dataset(root: Path, **traces: str) -> Path:
    from ingest import ingest_traces

    paths = []
    for name, text in traces.items():
        (root / f"{name}.txt").write_text(text)
        paths.append(str(root / f"{name}.txt"))
    dataset = root / "ds"
    ingest_traces(paths, dataset)
    return dataset


@pytest.fixture(scope="module")
def mixed_ds(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("audit"), migrate=MIGRATE, clean=CLEAN)


SUMMARY_MIGRATE = {
    "source": M, "calls": 8, "by_vcpu_thread": 1, "by_other_threads": 7, "unknown_vcpu": 1,
    "incomplete": 0, "entered_in_kvm_run": 4, "waited": 1, "wait_p50_us": 34.0,
    "wait_max_us": 34.0, "inside_kvm_run": 3, "violations": 3,
}  # fmt: skip
SUMMARY_CLEAN = {**SUMMARY_MIGRATE, "source": C, "calls": 5, "by_other_threads": 4,
                 "entered_in_kvm_run": 1, "inside_kvm_run": 0, "violations": 0}  # fmt: skip


def test_violations_exit_1_with_the_summary_on_stdout(cli, mixed_ds):
    r = cli(str(mixed_ds), "--format", "json")
    assert r.exit_code == 1
    assert r.stderr == MESSAGE
    assert sorted(json.loads(r.stdout), key=lambda row: row["source"]) == [
        SUMMARY_CLEAN, SUMMARY_MIGRATE]  # fmt: skip


def test_the_violations_with_their_trace_lines(cli, mixed_ds):
    r = cli(str(mixed_ds), "--rows", "violations", "--format", "csv")
    assert r.exit_code == 1
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    got = [(x["source"], x["enter_line"], x["exit_line"], x["run_lines"], x["thread"], x["cmd"],
            x["vcpu"], x["stale_under"]) for x in rows]  # fmt: skip
    assert got == [
        (M, "5", "6", "4-10", "live_migration (4330)", "KVM_GET_XSAVE", "CPU 0/KVM (4321)",
         "legacy,vcpu_run,deferred"),
        (M, "23", "24", "22-30", "live_migration (4330)", "KVM_SET_XSAVE", "CPU 0/KVM (4321)",
         "legacy,vcpu_run,deferred"),
        (M, "26", "27", "22-30", "live_migration (4330)", "KVM_GET_XSAVE", "CPU 0/KVM (4321)",
         "vcpu_run"),
    ]  # fmt: skip
    assert rows[2]["reason"].startswith("KVM_GET_XSAVE by live_migration (4330) entered at line 26")


def test_the_table_lists_the_violations_after_the_summary(cli, mixed_ds):
    r = cli(str(mixed_ds))
    assert r.exit_code == 1 and r.stderr == MESSAGE
    assert "FPU-state ioctls against KVM_RUN" in r.stdout
    assert "violations (trace lines)" in r.stdout
    assert r.stdout.index("FPU-state ioctls") < r.stdout.index("violations (trace lines)")


def test_a_clean_dataset_exits_0(cli, tmp_path):
    dataset = make_dataset(tmp_path, clean=CLEAN)
    r = cli(str(dataset), "--format", "json")
    assert (r.exit_code, r.stderr) == (0, "")
    assert json.loads(r.stdout) == [SUMMARY_CLEAN]
    r = cli(str(dataset), "--rows", "calls", "--format", "json")
    calls = json.loads(r.stdout)
    assert [c["call_idx"] for c in calls] == [0, 1, 2, 3, 4]
    assert [c["status"] for c in calls] == ["ok", "ok", "unknown_vcpu", "ok", "ok"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "lazy"], "error: unknown --policy 'lazy'; expected legacy, vcpu_run, "
                               "deferred\n"),
        (["--recorded-policy", "swap"], "error: unknown --recorded-policy 'swap'; expected "
                                        "legacy, vcpu_run, deferred\n"),
    ],
)  # fmt: skip
def test_bad_options_exit_2(cli, mixed_ds, args, message):
    r = cli(str(mixed_ds), *args)
    assert (r.exit_code, r.stderr, r.stdout) == (2, message, "")


def test_a_directory_that_is_not_a_dataset_exits_2(cli, tmp_path):
    r = cli(str(tmp_path))
    assert r.exit_code == 2
    assert r.stderr == f"error: {tmp_path}: is not an fpureplay dataset (no manifest.json)\n"


def test_the_audit_table_and_its_query(cli, tmp_path):
    dataset = make_dataset(tmp_path, migrate=MIGRATE)
    assert cli(str(dataset)).exit_code == 1
    part = dataset / "audit" / "host=unknown" / f"source={M}" / "part-0.parquet"
    table = pl.read_parquet(part)
    assert table.height == 8 and table["violation"].sum() == 3
    manifest = queries.manifest(dataset)
    assert manifest["sources"][0]["audit"]["violations"] == 3
    assert manifest["audit"]["policies"] == ["legacy", "vcpu_run", "deferred"]
    flagged = queries.run(dataset, "fpu_state_access", flagged=True)
    assert flagged["call_idx"].to_list() == [0, 5, 6]
    # A second audit replaces the table; it does not add to it.
    assert cli(str(dataset), "--policy", "vcpu_run").exit_code == 1
    assert sorted(p.name for p in (dataset / "audit").rglob("*.parquet")) == ["part-0.parquet"]
    again = queries.run(dataset, "fpu_state_access")
    assert again.height == 8 and again["legacy_state"].null_count() == 8


def test_a_failed_audit_leaves_the_dataset_as_it_was(tmp_path, monkeypatch):
    from pipeline import audit as audit_module

    dataset = make_dataset(tmp_path, migrate=MIGRATE, clean=CLEAN)
    before = sorted(str(p.relative_to(dataset)) for p in dataset.rglob("*"))
    manifest = (dataset / "manifest.json").read_text()
    calls = []

    def failing(events, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("boom")
        return real(events, **kwargs)

    real = audit_module.audit
    monkeypatch.setattr(audit_module, "audit", failing)
    from ingest.errors import InputError

    with pytest.raises(InputError, match="boom"):
        audit_module.audit_dataset(dataset)
    assert sorted(str(p.relative_to(dataset)) for p in dataset.rglob("*")) == before
    assert (dataset / "manifest.json").read_text() == manifest
    assert not any(p.name.startswith(".ds.staging") for p in tmp_path.iterdir())


# -- the figures -----------------------------------------------------------------------------


def test_the_timeline_figure_draws_each_call_on_its_vcpu_lane(mixed_ds):
    from pipeline.audit import audit_dataset

    audit_dataset(mixed_ds)  # the query needs the table (tests may run in any order)
    rows = queries.run(mixed_ds, "fpu_state_access", source=M)
    fig = calls_timeline(rows)
    lanes = [t for t in fig.data if t.mode == "lines"]
    # one bar trace per kind present, 3 points (enter, exit, gap) per call
    assert {t.name: len(t.x) // 3 for t in lanes} == {
        "returned at once": 3, "waited for KVM_RUN to return": 1,
        "violation: inside KVM_RUN": 3, "vCPU unknown": 1,
    }  # fmt: skip
    violation = next(t for t in lanes if t.name.startswith("violation"))
    assert list(violation.x) == [10000 / 1000000, 12000 / 1000000, None,
                                 100000 / 1000000, 104000 / 1000000, None,
                                 112000 / 1000000, 114000 / 1000000, None]  # fmt: skip
    assert set(violation.y) - {None} == {"CPU 0/KVM · 4321"}
    title = "FPU-state ioctls on their vCPU's timeline (8 calls, 3 violations)"
    assert fig.layout.title.text == title
    # The KVM_RUN stretches go behind the calls when the thread_states rows are given.
    states = pl.DataFrame(
        {"source": [M, M], "pid": [4321, 4321], "state": ["kvm_run", "user"],
         "start_ms": [0.002, 0.052], "end_ms": [0.051, 0.09]}
    )  # fmt: skip
    behind = calls_timeline(rows, states).data[0]
    assert behind.name == "vCPU inside KVM_RUN" and list(behind.x) == [0.002, 0.051, None]


def test_the_wait_histogram_buckets_by_powers_of_two():
    assert wait_buckets([34.0]) == [(32.0, 64.0, 1)]
    # empty buckets between the first and the last are kept, so the axis is even
    assert wait_buckets([0.5, 3.0, 3.5, 20.0]) == [
        (0.0, 1.0, 1), (1.0, 2.0, 0), (2.0, 4.0, 2), (4.0, 8.0, 0), (8.0, 16.0, 0),
        (16.0, 32.0, 1)]  # fmt: skip
    calls = pl.DataFrame(
        {"exit_ms": [1.0, 2.0, 3.0, None], "wait_us": [0.0, 34.0, 1500.0, None],
         "issuer": ["other_thread", "other_thread", "vcpu_thread", "other_thread"]}
    )  # fmt: skip
    fig = wait_histogram(calls)
    assert [t.name for t in fig.data] == ["the vCPU thread itself",
                                          "another thread (migration, VMM)"]  # fmt: skip
    bars = {t.name: dict(zip(t.x, t.y, strict=True)) for t in fig.data}
    assert bars["another thread (migration, VMM)"]["[32 µs, 64 µs)"] == 1
    assert bars["the vCPU thread itself"]["[1.02 ms, 2.05 ms)"] == 1
    assert sum(bars["the vCPU thread itself"].values()) == 1
    title = "Waits for KVM_RUN to return (2 calls waited, 1 returned at once)"
    assert fig.layout.title.text == title


def test_trace_text_is_escaped_in_the_figures():
    rows = pl.DataFrame(
        {"source": ["s"], "vcpu_pid": [7], "vcpu_comm": ["<b>x</b>"], "fd": [5], "pid": [8],
         "comm": ["<img>"], "cmd": ["KVM_GET_XSAVE"], "enter_ms": [0.0], "exit_ms": [0.1],
         "enter_line": [1], "exit_line": [2], "duration_us": [100.0], "wait_us": [0.0],
         "violation": [False], "reason": [None]}
    )  # fmt: skip
    fig = calls_timeline(rows)
    assert set(fig.data[0].y) - {None} == {"&lt;b&gt;x&lt;/b&gt; · 7"}
    assert "&lt;img&gt;" in fig.data[1].customdata[0] and "<img>" not in fig.data[1].customdata[0]
