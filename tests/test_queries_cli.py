"""`fpureplay query`: exact output for --list and for each format, and every error.

The command is invoked in-process through the Typer app, as the lead
registers it (``app.command("query")(query)``); results go to stdout, errors
to stderr as ``error: ...`` with exit code 2.
"""

from __future__ import annotations

import json

import polars as pl
import pytest

import queries
from tests.test_queries import R, S, build_golden


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    return build_golden(tmp_path_factory.mktemp("cli"))


@pytest.fixture(scope="module")
def cli():
    """Invoke `fpureplay query ...`; stdout and stderr kept apart."""
    import typer
    from typer.testing import CliRunner

    from pipeline.cli import app as main_app
    from queries.cli import query

    if any(c.name == "query" for c in main_app.registered_commands):
        app = main_app
    else:  # until pipeline/cli.py registers the command: the same registration
        app = typer.Typer(
            name="fpureplay",
            add_completion=False,
            rich_markup_mode=None,
            pretty_exceptions_enable=False,
            context_settings=main_app.info.context_settings,
        )
        app.command("query")(query)
        app.command("noop")(lambda: None)  # a group, so that `query` is a subcommand

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, ["query", *args], env={"COLUMNS": "200"})

    return invoke


def ok(result) -> str:
    assert (result.exit_code, result.stderr) == (0, ""), result.stderr
    return result.stdout


def lines(text: str) -> list[str]:
    # Rich pads table lines with spaces up to the console width.
    return [line.rstrip() for line in text.splitlines()]


LIST_TABLE = [
    "                                                                                      "
    "queries",
    "┏━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━"
    "━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━"
    "━━━━━━┓",
    "┃ name                 ┃ area   ┃ parameters                                     ┃ des"
    "cription                                                                              "
    "      ┃",
    "┡━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━"
    "━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━"
    "━━━━━━┩",
    "│ fleet_summary        │ fleet  │ baseline VARCHAR = 'legacy'                    │ Per "
    "host and policy: ops and cost per traced second, fleet totals, hosts ranked by saving. "
    "    │",
    "│ cpu_op_buckets       │ lanes  │ bucket_ms DOUBLE > 0 = 10, source VARCHAR = '' │ FPU"
    " operations per policy, CPU and time bucket, for timelines too dense to draw one by on"
    "e.    │",
    "│ op_marks             │ lanes  │ source VARCHAR = '', policy VARCHAR = ''       │ Eve"
    "ry FPU operation with its CPU and time since the trace began, for drawing it on a time"
    "line. │",
    "│ thread_states        │ lanes  │ source VARCHAR = ''                            │ vCP"
    "U thread states over time per CPU lane: in KVM_RUN, in userspace, preempted, blocked. "
    "      │",
    "│ ops_breakdown        │ policy │                                                │ FPU"
    " operations per source and policy by direction, context and need.                     "
    "      │",
    "│ policy_summary       │ policy │                                                │ FPU"
    " saves and restores per source and policy: how many were redundant, what they cost.   "
    "      │",
    "│ redundant_by_trigger │ policy │                                                │ Whi"
    "ch kernel path wastes most: redundant operations per policy by trigger and reason.    "
    "      │",
    "│ savings              │ policy │ baseline VARCHAR = 'legacy'                    │ Ope"
    "rations and cost that legacy (or another baseline) spends beyond each other policy.   "
    "      │",
    "│ timeline             │ policy │ bucket_ms DOUBLE > 0 = 10                      │ FPU"
    " operations and their cost per policy per time bucket.                                "
    "      │",
    "│ data_quality         │ trace  │                                                │ How"
    " far to trust each source: rejected lines, lost events, inferred switches, incomplete "
    "runs. │",
    "│ event_counts         │ trace  │                                                │ Eve"
    "nts per source and event name, with each source's rejected lines and lost-event marker"
    "s.    │",
    "│ event_rates          │ trace  │ exit_reasons BOOLEAN = true                    │ kvm"
    "_stat's view of a trace: Event, Total, %Total and rate per second.                    "
    "      │",
    "│ validation           │ trace  │                                                │ The"
    " replay of the recording kernel's policy against what that kernel logged, per vCPU thr"
    "ead.  │",
    "│ fpu_reload_rate      │ vcpu   │                                                │ The"
    " kernel's fpu_reload statistic per vCPU thread, as each policy and the recording count"
    " it.  │",
    # the migration audit (issue 10)
    "│ fpu_state_access     │ vcpu   │ source VARCHAR = '', flagged BOOLEAN = false   │ Each "
    "ioctl that read or wrote a vCPU's FPU state: its vCPU, its wait for KVM_RUN, the verdic"
    "t. │",
    "│ ops_per_run          │ vcpu   │ include_incomplete BOOLEAN = false             │ Dis"
    "tribution of FPU operations per KVM_RUN, per policy.                                  "
    "      │",
    "│ preemption_cost      │ vcpu   │                                                │ FPU"
    " operations and cost per sched-out inside KVM_RUN, preempted vs blocked.              "
    "      │",
    "│ run_histogram        │ vcpu   │ include_incomplete BOOLEAN = false             │ Dis"
    "tributions of KVM_RUN length (log2 microsecond buckets) and of sched-outs per run.    "
    "      │",
    "│ vcpu_summary         │ vcpu   │                                                │ Per"
    " vCPU thread and policy: KVM_RUN calls, sched-outs, FPU operations and their cost.    "
    "      │",
    "└──────────────────────┴────────┴────────────────────────────────────────────────┴────"
    "──────────────────────────────────────────────────────────────────────────────────────"
    "──────┘",
]


def test_list(cli):
    assert lines(ok(cli("--list"))) == LIST_TABLE


def test_list_as_json_has_every_query(cli):
    got = json.loads(ok(cli("--list", "--format", "json")))
    assert [q["name"] for q in got] == list(queries.catalog())
    assert got[8] == {
        "name": "timeline",
        "area": "policy",
        "parameters": "bucket_ms DOUBLE > 0 = 10",
        "description": "FPU operations and their cost per policy per time bucket.",
    }


def test_table(cli, golden):
    # STEADY's two complete runs: 61 µs and 712 µs, 0 and 3 sched-outs.
    assert lines(ok(cli(str(golden), "run_histogram"))) == [
        "                                   run_histogram",
        "┏━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━┳━━━━━┳━━━━━━━━━┓",
        "┃ source              ┃ measure    ┃ bucket_lo ┃ bucket_hi ┃ runs ┃ pct ┃ cum_pct ┃",
        "┡━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━╇━━━━━╇━━━━━━━━━┩",
        f"│ {S} │ run_us     │        32 │        64 │    1 │  50 │      50 │",
        f"│ {S} │ run_us     │       512 │     1,024 │    1 │  50 │     100 │",
        f"│ {S} │ sched_outs │         0 │         1 │    1 │  50 │      50 │",
        f"│ {S} │ sched_outs │         3 │         4 │    1 │  50 │     100 │",
        "└─────────────────────┴────────────┴───────────┴───────────┴──────┴─────┴─────────┘",
    ]


def test_csv(cli, golden):
    # Hand-computed in tests/test_queries.py::test_policy_summary.
    assert ok(cli(str(golden), "policy_summary", "--format", "csv")) == (
        "source,policy,ops,saves,restores,save_user,restore_user,save_guest,restore_guest,"
        "redundant_ops,redundant_pct,bytes,cost_us,redundant_cost_us,incomplete_run_ops\n"
        f"{R},legacy,10,5,5,3,3,2,2,0,0.0,26880,1.0,0.0,8\n"
        f"{R},vcpu_run,10,5,5,3,3,2,2,0,0.0,26880,1.0,0.0,8\n"
        f"{R},deferred,10,5,5,3,3,2,2,0,0.0,26880,1.0,0.0,8\n"
        f"{S},legacy,24,13,11,8,6,5,5,10,41.666666666666664,64512,2.4,1.0,0\n"
        f"{S},vcpu_run,12,7,5,2,2,5,3,0,0.0,32256,1.2,0.0,0\n"
        f"{S},deferred,12,7,5,2,2,5,3,0,0.0,32256,1.2,0.0,0\n"
    )


def test_json_with_a_parameter(cli, golden):
    # savings against vcpu_run for STEADY: legacy does 24 - 12 = 12 more ops.
    out = ok(cli(str(golden), "savings", "--param", "baseline=vcpu_run", "--format", "json"))
    span = 712000 / 1000000000
    assert json.loads(out)[2:] == [
        {
            "source": S, "baseline": "vcpu_run", "policy": "legacy", "baseline_ops": 12,
            "ops": 24, "ops_saved": -12, "ops_saved_pct": -100.0, "ops_saved_per_s": -12 / span,
            "baseline_cost_us": 1.2, "cost_us": 2.4, "cost_saved_us": -1.2,
            "cost_saved_us_per_s": -1200.0 / 1000 / span, "span_s": span,
        },
        {
            "source": S, "baseline": "vcpu_run", "policy": "deferred", "baseline_ops": 12,
            "ops": 12, "ops_saved": 0, "ops_saved_pct": 0.0, "ops_saved_per_s": 0.0,
            "baseline_cost_us": 1.2, "cost_us": 1.2, "cost_saved_us": 0.0,
            "cost_saved_us_per_s": 0.0, "span_s": span,
        },
    ]  # fmt: skip
    assert out.startswith('[{"source": "') and out.endswith("}]\n")


def test_parquet_to_a_file(cli, golden, tmp_path):
    out = tmp_path / "vcpus.parquet"
    assert ok(cli(str(golden), "vcpu_summary", "--format", "parquet", "-o", str(out))) == ""
    assert pl.read_parquet(out).equals(queries.run(golden, "vcpu_summary"))


def test_csv_to_a_file(cli, golden, tmp_path):
    out = tmp_path / "rates.csv"
    assert (
        ok(cli(str(golden), "event_rates", "-p", "exit_reasons=no", "-f", "csv", "-o", str(out)))
        == ""
    )
    assert out.read_text().splitlines()[:3] == [
        "source,event,total,pct_total,per_s",
        f"{R},kvm_fpu,4,{100 * 4 / 11},{4 / (262000 / 1000000000)}",
        f"{R},kvm_entry,2,{100 * 2 / 11},{2 / (262000 / 1000000000)}",
    ]


def test_empty_result_keeps_its_columns(cli, golden):
    header = (
        "source,baseline,policy,baseline_ops,ops,ops_saved,ops_saved_pct,ops_saved_per_s,"
        "baseline_cost_us,cost_us,cost_saved_us,cost_saved_us_per_s,span_s\n"
    )
    assert ok(cli(str(golden), "savings", "-p", "baseline=D52", "-f", "csv")) == header
    assert ok(cli(str(golden), "savings", "-p", "baseline=D52", "-f", "json")) == "[]\n"
    assert ok(cli(str(golden), "savings", "-p", "baseline=D52")) == (
        "savings: no rows (columns: " + header.strip().replace(",", ", ") + ")\n"
    )


def test_ad_hoc_sql(cli, golden):
    sql = "SELECT policy, count(*) AS ops FROM fpu_ops WHERE redundant GROUP BY policy"
    assert ok(cli(str(golden), "--sql", sql, "-f", "csv")) == "policy,ops\nlegacy,10\n"


def error(result) -> str:
    assert (result.exit_code, result.stdout) == (2, ""), result.stdout
    return result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "unknown query 'nope' (`fpureplay query --list` shows them all)"),
        (
            ["polcy_summary"],
            "unknown query 'polcy_summary'; did you mean 'policy_summary'?"
            " (`fpureplay query --list` shows them all)",
        ),
        (
            ["timeline", "--param", "bucket=1"],
            "query 'timeline' has no parameter 'bucket' (its parameters: bucket_ms)",
        ),
        (
            ["policy_summary", "-p", "x=1"],
            "query 'policy_summary' has no parameter 'x' (its parameters: none)",
        ),
        (
            ["timeline", "-p", "bucket_ms=abc"],
            "query 'timeline': bucket_ms must be a number, not 'abc'",
        ),
        (
            ["timeline", "-p", "bucket_ms=nan"],
            "query 'timeline': bucket_ms must be a number, not 'nan'",
        ),
        (["timeline", "-p", "bucket_ms=0"], "query 'timeline': bucket_ms must be > 0, not 0"),
        (
            ["event_rates", "-p", "exit_reasons=maybe"],
            "query 'event_rates': exit_reasons must be true or false, not 'maybe'",
        ),
        (["timeline", "-p", "bucket_ms"], "--param 'bucket_ms': expected KEY=VALUE"),
        (["timeline", "-p", "bucket_ms=1", "-p", "bucket_ms=2"], "--param 'bucket_ms' given twice"),
        (["--sql", "SELEC 1"], 'SQL: Parser Error: syntax error at or near "SELEC"'),
        (
            ["--sql", "SELECT nope FROM runs"],
            'SQL: Binder Error: Referenced column "nope" not found in FROM clause!',
        ),
        (["policy_summary", "-f", "parquet"], "--format parquet writes a file: give -o FILE"),
        ([], "give a query NAME or --sql"),
        (["policy_summary", "--sql", "SELECT 1"], "give either a query NAME or --sql, not both"),
        (
            ["--sql", "SELECT 1", "-p", "a=1"],
            "--param applies to named queries; write the values into --sql",
        ),
    ],
)
def test_errors_on_a_dataset(cli, golden, args, message):
    assert error(cli(str(golden), *args)) == f"error: {message}\n"


def test_errors_without_a_dataset(cli, tmp_path):
    assert error(cli()) == "error: give DATASET and a query NAME, DATASET and --sql, or --list\n"
    assert error(cli("--list", "ds")) == (
        "error: --list takes no DATASET, NAME, --sql, --param or --host\n"
    )
    assert error(cli(str(tmp_path), "event_counts")) == (
        f"error: {tmp_path}: is not an fpureplay dataset (no manifest.json)\n"
    )


def test_error_for_a_table_the_dataset_lacks(cli, tmp_path):
    from ingest import ingest_traces
    from tests.test_queries import STEADY

    (tmp_path / "steady.txt").write_bytes(STEADY)
    dataset = tmp_path / "ds"
    ingest_traces([str(tmp_path / "steady.txt")], dataset)
    assert error(cli(str(dataset), "vcpu_summary")) == (
        f"error: query 'vcpu_summary' reads the runs table, but {dataset} has no runs table"
        f" yet (`fpureplay replay {dataset}` writes it)\n"
    )
    assert error(cli(str(dataset), "--sql", "SELECT * FROM fpu_ops")) == (
        f"error: {dataset} has no fpu_ops table yet (`fpureplay replay {dataset}` writes it)\n"
    )


def test_error_for_an_unwritable_output(cli, golden, tmp_path):
    out = tmp_path / "missing-dir" / "x.csv"
    assert error(cli(str(golden), "event_counts", "-f", "csv", "-o", str(out))) == (
        f"error: {out}: No such file or directory\n"
    )


def test_an_unknown_format_is_a_usage_error(cli, golden):
    result = cli(str(golden), "policy_summary", "--format", "xml")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        "Error: Invalid value for '--format' / '-f': Value error, 'xml' is not one of"
        " 'table', 'csv', 'json', 'parquet'."
    )
