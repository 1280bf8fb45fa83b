"""The `fpureplay` command line: a thin layer over the importable library.

Results go to stdout, progress and errors to stderr.  Exit codes: 0 success,
1 a failed check, 2 bad usage or bad input (the reason on stderr).  Heavy
imports (polars, duckdb, plotly) happen inside the commands so that
``--help`` stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.output import OutputFormat, emit

app = typer.Typer(
    name="fpureplay",
    help="Count the FPU saves and restores a KVM host does under each FPU switching policy.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DEMO_TRACE = EXAMPLES / "mixed-small.tracefs.txt.zst"


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` on stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def input_errors() -> Iterator[None]:
    """Turn the library's InputError into exit 2 with its message."""
    from ingest.errors import InputError

    try:
        yield
    except InputError as exc:
        fail(str(exc))


@contextmanager
def _progress_bar() -> Iterator[Callable[[str, int, int | None], None] | None]:
    # A bar only for people: off when stderr is not a terminal.
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), transient=True
    ) as bar:
        tasks: dict[str, Any] = {}

        def update(path: str, done: int, total: int | None) -> None:
            if path not in tasks:
                tasks[path] = bar.add_task(path[-40:], total=total)
            bar.update(tasks[path], completed=done)

        yield update


def _check_format(fmt: str) -> str:
    from ingest.detect import FORMATS

    if fmt != "auto" and fmt not in FORMATS:
        fail(f"unknown --format {fmt!r}; expected auto, {', '.join(FORMATS)}")
    return fmt


Traces = Annotated[list[str], typer.Argument(help="Trace files ('-' for stdin; .gz, .zst, .dat).")]
DatasetOut = Annotated[Path, typer.Option("--output", "-o", help="Dataset directory.")]
Force = Annotated[
    bool, typer.Option("--force", help="Replace an existing dataset instead of adding to it.")
]


@app.command()
def ingest(
    traces: Traces,
    output: DatasetOut,
    fmt: Annotated[
        str,
        typer.Option("--format", "-f", help="Input format: auto, tracefs, trace-cmd, perf-script."),
    ] = "auto",
    strict: Annotated[
        bool, typer.Option("--strict", help="Any rejected line or lost-events marker is an error.")
    ] = False,
    force: Force = False,
    summary_format: Annotated[
        OutputFormat, typer.Option("--summary-format", help="Summary as table, csv or json.")
    ] = OutputFormat.table,
) -> None:
    """Parse traces into a dataset (events, rejects, manifest) and print a summary per source.

    An existing dataset gains the traces it does not hold yet (same sha256:
    skipped); --force replaces it.  Nothing is visible until all traces are in.
    """
    from ingest.load import ingest_traces

    _check_format(fmt)
    with input_errors(), _progress_bar() as progress:
        reports = ingest_traces(
            traces, output, fmt=fmt, force=force, strict=strict, progress=progress
        )
    emit([r.summary_row() for r in reports], summary_format, title=f"ingested into {output}")


Policies = Annotated[
    list[str] | None,
    typer.Option(
        "--policy",
        "-p",
        help="Policy to replay (repeatable): legacy, vcpu_run, deferred. Default: all three.",
    ),
]
RecordedPolicy = Annotated[
    str | None,
    typer.Option(
        "--recorded-policy",
        help="The recording kernel's policy, overriding detection: legacy, vcpu_run, deferred.",
    ),
]
CpuProfile = Annotated[
    str | None,
    typer.Option(
        "--cpu-profile",
        help="xstate size when the trace has no x86_fpu events: sse, avx2, avx512, amx.",
    ),
]
CostFile = Annotated[
    Path | None,
    typer.Option("--cost-model", help="TOML file with a [cost] table (see docs/replay.md)."),
]
Format = Annotated[OutputFormat, typer.Option("--format", help="Output as table, csv or json.")]


def _cost_model(cpu_profile: str | None, cost_file: Path | None) -> Any:
    from dataclasses import replace

    from pipeline.cost import CostModel

    try:
        model = CostModel.from_toml(cost_file) if cost_file else CostModel.default()
        return replace(model, cpu_profile=cpu_profile) if cpu_profile else model
    except (OSError, ValueError) as exc:
        fail(str(exc))


def _policies(policies: list[str] | None) -> list[str]:
    from pipeline.detect import POLICY_NAMES

    chosen = policies or list(POLICY_NAMES)
    for p in chosen:
        if p not in POLICY_NAMES:
            fail(f"unknown --policy {p!r}; expected {', '.join(POLICY_NAMES)}")
    return list(dict.fromkeys(chosen))


def _replay_and_summarise(
    dataset: Path,
    policies: list[str] | None,
    recorded_policy: str | None,
    cpu_profile: str | None,
    cost_file: Path | None,
    fmt: OutputFormat,
) -> None:
    from pipeline.detect import POLICY_NAMES
    from pipeline.orchestrate import policy_summary, replay_dataset

    if recorded_policy is not None and recorded_policy not in POLICY_NAMES:
        fail(f"unknown --recorded-policy {recorded_policy!r}; expected {', '.join(POLICY_NAMES)}")
    chosen = _policies(policies)
    model = _cost_model(cpu_profile, cost_file)
    with input_errors():
        replay_dataset(dataset, policies=chosen, cost_model=model, recorded_policy=recorded_policy)
        rows = policy_summary(dataset)
    emit(rows, fmt, title=f"FPU operations per policy ({dataset})")


@app.command()
def replay(
    dataset: Annotated[Path, typer.Argument(help="Dataset directory (from `fpureplay ingest`).")],
    policy: Policies = None,
    recorded_policy: RecordedPolicy = None,
    cpu_profile: CpuProfile = None,
    cost_model: CostFile = None,
    fmt: Format = OutputFormat.table,
) -> None:
    """Rebuild vCPU timelines, replay the policies, write runs and fpu_ops, print the summary.

    The summary has, per source and policy: ops, saves, restores, redundant
    ops, redundant %, cost in microseconds and ops per second of trace.
    """
    _replay_and_summarise(dataset, policy, recorded_policy, cpu_profile, cost_model, fmt)


@app.command()
def run(
    traces: Traces,
    output: DatasetOut,
    input_format: Annotated[
        str,
        typer.Option("--input-format", help="Input format: auto, tracefs, trace-cmd, perf-script."),
    ] = "auto",
    force: Force = False,
    policy: Policies = None,
    recorded_policy: RecordedPolicy = None,
    cpu_profile: CpuProfile = None,
    cost_model: CostFile = None,
    fmt: Format = OutputFormat.table,
) -> None:
    """Ingest traces and replay them in one step (ingest, then replay)."""
    from ingest.load import ingest_traces

    _check_format(input_format)
    with input_errors(), _progress_bar() as progress:
        ingest_traces(traces, output, fmt=input_format, force=force, progress=progress)
    _replay_and_summarise(output, policy, recorded_policy, cpu_profile, cost_model, fmt)


@app.command()
def validate(
    dataset: Annotated[Path, typer.Argument(help="Dataset directory.")],
    recorded_policy: RecordedPolicy = None,
    fmt: Format = OutputFormat.table,
) -> None:
    """Check the replay of the recording kernel's policy against what that kernel logged.

    Per vCPU thread: kvm_fpu loads and unloads (must match exactly; exit 1
    otherwise), context-switch saves against x86_fpu_regs_deactivated, and
    deferred restores against x86_fpu_regs_activated, with the known causes
    of any difference named.
    """
    from ingest.dataset import read_manifest
    from pipeline.orchestrate import read_events
    from pipeline.validate import validate as check

    ok = True
    rows: list[dict[str, Any]] = []
    with input_errors():
        manifest = read_manifest(dataset)
        for source in manifest["sources"]:
            result = check(
                read_events(dataset, source["id"]),
                recorded_policy=recorded_policy,
                kernel=source.get("kernel"),
            )
            ok &= result.ok
            for row in result.table.to_dicts():
                rows.append({"source": source["id"], "policy": result.policy, **row})
    emit(rows, fmt, title=f"validation against the recording kernel's own events ({dataset})")
    if not ok:
        fail("kvm_fpu loads/unloads predicted by the replay differ from the trace", code=1)


@app.command()
def demo(
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Directory for the demo's outputs.", metavar="DIR"),
    ] = Path("demo-out"),
    duration_ms: Annotated[
        float, typer.Option(help="Simulated host time in milliseconds.")
    ] = 2000.0,
) -> None:
    """The whole pipeline: simulate a KVM host, ingest it with a real trace, replay, query.

    Writes DIR/host.tracefs.txt (the built-in model's `mixed` preset, as a
    6.18 kernel logs it, with its truth.json), ingests it together with the
    bundled real 6.18 capture into DIR/dataset, replays all three policies
    and prints the policy summary and the savings of the 2017 patch, then
    writes DIR/dashboard.html.
    """
    from ingest.load import ingest_traces
    from pipeline.model.api import generate
    from pipeline.orchestrate import policy_summary, replay_dataset

    if not DEMO_TRACE.exists():
        fail(f"{DEMO_TRACE}: the bundled demo trace is missing")
    output.mkdir(parents=True, exist_ok=True)
    trace = output / "host.tracefs.txt"
    typer.echo(f"simulating {duration_ms:g} ms of a KVM host -> {trace}", err=True)
    generate("mixed", seed=1, duration_ms=duration_ms).write(trace, "tracefs", force=True)
    dataset = output / "dataset"
    with input_errors():
        reports = ingest_traces([str(trace), str(DEMO_TRACE)], dataset, force=True)
        emit([r.summary_row() for r in reports], title=f"ingested into {dataset}")
        replay_dataset(dataset)
        emit(policy_summary(dataset), title="FPU operations per policy")
        import queries

        emit(queries.run(dataset, "savings").to_dicts(), title="what the 2017 patch saves")
        from dashboards.build import write_dashboard

        page = output / "dashboard.html"
        write_dashboard(dataset, page)
        typer.echo(f"dashboard: {page}", err=True)


def _register() -> None:
    # Commands that live with their area; each module keeps heavy imports
    # inside the command so that `--help` stays fast.
    from dashboards.cli import dashboard
    from ingest.record_cli import record
    from pipeline.audit_cli import audit
    from pipeline.model.cli import simulate, sweep
    from queries.cli import query

    app.command("simulate")(simulate)
    app.command("sweep")(sweep)
    app.command("query")(query)
    app.command("dashboard")(dashboard)
    app.command("record")(record)
    app.command("audit")(audit)


_register()


def main() -> None:
    """Console-script entry point."""
    app()
