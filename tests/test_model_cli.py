"""``simulate`` and ``sweep`` as commands, in-process, with exact errors and exit codes.

The commands are registered here the way pipeline/cli.py registers them
(``app.command("simulate")(simulate)``), so these tests do not depend on it.
"""

from __future__ import annotations

import csv
import io
import json

import pytest
import typer
from typer.testing import CliRunner

from pipeline.model.cli import simulate, sweep


@pytest.fixture(scope="module")
def invoke():
    app = typer.Typer(add_completion=False, rich_markup_mode=None,
                      context_settings={"help_option_names": ["-h", "--help"]})  # fmt: skip
    app.command("simulate")(simulate)
    app.command("sweep")(sweep)
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, list(args), env={"COLUMNS": "200"})

    return run


def test_simulate_writes_the_trace_and_its_truth(invoke, tmp_path):
    out = tmp_path / "t.txt"
    r = invoke("simulate", "-o", str(out), "--preset", "idle", "--seed", "3",
               "--duration-ms", "20", "--summary-format", "csv")  # fmt: skip
    assert r.exit_code == 0, r.output
    truth = json.loads((tmp_path / "t.txt.truth.json").read_text())
    assert (truth["seed"], truth["preset"], truth["policy"]) == (3, "idle", "deferred")
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [row["policy"] for row in rows] == ["legacy", "vcpu_run", "deferred"]
    assert [row["recorded"] for row in rows] == ["False", "False", "True"]
    for row in rows:
        assert int(row["ops"]) == truth["totals"][row["policy"]]["ops"]
    assert out.read_text().startswith("# tracer: nop\n")


def test_simulate_perf_script_legacy_and_dataset(invoke, tmp_path):
    r = invoke("simulate", "-o", str(tmp_path / "p.txt"), "-f", "perf-script", "--policy",
               "legacy", "--duration-ms", "5")  # fmt: skip
    assert r.exit_code == 0, r.output
    first = (tmp_path / "p.txt").read_text().splitlines()[0]
    assert first.startswith("         swapper     0 [")
    r = invoke("simulate", "-o", str(tmp_path / "ds"), "-f", "dataset", "--duration-ms", "5",
               "--no-args", "--summary-format", "json")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ds" / "manifest.json").exists()
    assert (tmp_path / "ds.truth.json").exists()
    assert json.loads(r.stdout)[0]["policy"] == "legacy"


def test_show_params(invoke):
    r = invoke("simulate", "--preset", "pingpong", "-p", "cpus=3", "--show-params",
               "--summary-format", "json")  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = {row["param"]: row for row in json.loads(r.stdout)}
    assert rows["cpus"]["value"] == "3" and rows["cpus"]["default"] == "4"
    assert rows["pingpong"]["value"] == "1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "cpus=0"], "error: cpus=0: must be >= 1\n"),
        (["-p", "bogus=1"], "error: unknown parameter 'bogus' (see `fpureplay simulate "
                            "--show-params`)\n"),
        (["--preset", "busy"], "error: unknown preset 'busy'; expected one of idle, io-heavy, "
                               "overcommit, pingpong, mixed, migration\n"),
        (["--policy", "lazy"], "error: unknown --policy 'lazy'; expected legacy, vcpu_run, "
                               "deferred\n"),
        (["-f", "json"],
         "error: unknown --format 'json'; expected tracefs, perf-script, dataset\n"),
        (["--policy", "vcpu_run", "--kernel-era", "5.10"],
         "error: --policy vcpu_run is run by 4.14-5.1 kernels; a 5.10 kernel does not log it\n"),
        (["--duration-ms", "0"], "error: --duration-ms must be positive\n"),
    ],
)  # fmt: skip
def test_simulate_usage_errors(invoke, tmp_path, args, message):
    r = invoke("simulate", "-o", str(tmp_path / "x.txt"), *args)
    assert r.exit_code == 2
    assert r.stderr == message
    assert not (tmp_path / "x.txt").exists()


def test_simulate_needs_an_output(invoke):
    r = invoke("simulate", "--duration-ms", "1")
    assert r.exit_code == 2
    assert r.stderr.startswith("error: missing --output/-o")


def test_simulate_help_lists_every_parameter(invoke):
    from pipeline.model.params import PARAMS

    r = invoke("simulate", "--help")
    assert r.exit_code == 0
    for p in PARAMS:
        assert f"  {p.name}=" in r.stdout, p.name


def test_sweep_small_grid(invoke):
    r = invoke("sweep", "--grid", "overcommit=1,2", "-p", "cpus=2", "-p", "vcpus_per_vm=2",
               "--no-pingpong", "--duration-ms", "15", "-f", "json")  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [row["overcommit"] for row in rows] == ["1", "2"]
    assert [row["vcpus"] for row in rows] == [2, 4]
    assert all(row["exact"] for row in rows)
    assert rows[0]["legacy_ops_per_s"] >= rows[0]["vcpu_run_ops_per_s"]


def test_sweep_errors(invoke):
    r = invoke("sweep", "--grid", "overcommit")
    assert (r.exit_code, r.stderr) == (2, "error: 'overcommit': expected KEY=VALUE\n")
    r = invoke("sweep", "--duration-ms", "-1")
    assert (r.exit_code, r.stderr) == (2, "error: --duration-ms must be positive\n")
