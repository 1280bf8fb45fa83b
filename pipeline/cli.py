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


Traces = Annotated[
    list[str],
    typer.Argument(
        help="Trace files, directories (searched for trace files) and globs"
        " ('-' for stdin; .gz, .zst, .dat)."
    ),
]
DatasetOut = Annotated[Path, typer.Option("--output", "-o", help="Dataset directory.")]
Force = Annotated[
    bool, typer.Option("--force", help="Replace an existing dataset instead of adding to it.")
]
Jobs = Annotated[
    int | None,
    typer.Option(
        "--jobs",
        "-j",
        help="Worker processes, one trace per task (default: one per CPU, at most one per"
        " trace; 1 runs here). With --executor dask and no --scheduler: the local cluster's"
        " workers.",
    ),
]
ExecutorKind = Annotated[
    str,
    typer.Option(
        "--executor", help="local (worker processes) or dask (needs the fpureplay[dask] extra)."
    ),
]
Scheduler = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        help="Dask scheduler address, e.g. tcp://10.0.0.5:8786 (default: a local cluster).",
    ),
]
Host = Annotated[
    str | None,
    typer.Option(
        "--host",
        help="Host name for every trace (default: a host=NAME directory in the path, else the"
        " trace header's host, else 'unknown').",
    ),
]
OnError = Annotated[
    str,
    typer.Option(
        "--on-error",
        help="raise: stop at the first bad trace, leaving the dataset as it was; skip: keep the"
        " good ones and list the failed.",
    ),
]


def _fleet(
    jobs: int | None, executor: str, scheduler: str | None, on_error: str, progress: Any
) -> Any:
    import os

    from ingest.fleet import FleetOptions

    return FleetOptions(
        jobs=jobs if jobs is not None else (os.cpu_count() or 1),
        executor=executor,
        scheduler=scheduler,
        on_error=on_error,
        progress=progress,
    )


@contextmanager
def _fleet_errors(fmt: OutputFormat, title: str) -> Iterator[None]:
    # Under --on-error raise, a multi-trace run still says what happened to
    # each trace before the error.
    from ingest.fleet import FleetError

    try:
        yield
    except FleetError as exc:
        if len(exc.reports) > 1:
            emit([r.summary_row() for r in exc.reports], fmt, title=title)
        raise


def _failed_exit(reports: list[Any]) -> None:
    # Like `make -k`: the good traces are in, and the exit status still says
    # that some were not.
    failed = [r for r in reports if r.status == "failed"]
    if failed:
        fail(
            f"{len(failed)} of {len(reports)} traces failed and were skipped"
            f" (first: {failed[0].error}); the others are in the dataset",
            code=1,
        )


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
    host: Host = None,
    jobs: Jobs = None,
    executor: ExecutorKind = "local",
    scheduler: Scheduler = None,
    on_error: OnError = "raise",
    summary_format: Annotated[
        OutputFormat, typer.Option("--summary-format", help="Summary as table, csv or json.")
    ] = OutputFormat.table,
) -> None:
    """Parse traces into a dataset (events, rejects, manifest) and print a summary per trace.

    Each trace is an independent task (worker processes, or a Dask cluster).
    An existing dataset gains the traces it does not hold yet (same sha256:
    skipped); --force replaces it.  Nothing is visible until all traces are in.
    """
    from ingest.fleet import run_ingest
    from ingest.load import IngestTask

    _check_format(fmt)
    title = f"ingested into {output}"
    with input_errors(), _progress_bar() as progress, _fleet_errors(summary_format, title):
        options = _fleet(jobs, executor, scheduler, on_error, progress)
        task = IngestTask(fmt=fmt, strict=strict, host=host)
        reports = run_ingest(traces, output, task, options, force=force)
    emit([r.summary_row() for r in reports], summary_format, title=title)
    _failed_exit(reports)


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


def _replay_task(
    policies: list[str] | None,
    recorded_policy: str | None,
    cpu_profile: str | None,
    cost_file: Path | None,
) -> Any:
    from pipeline.detect import POLICY_NAMES
    from pipeline.orchestrate import ReplayTask

    if recorded_policy is not None and recorded_policy not in POLICY_NAMES:
        fail(f"unknown --recorded-policy {recorded_policy!r}; expected {', '.join(POLICY_NAMES)}")
    return ReplayTask(
        tuple(_policies(policies)), _cost_model(cpu_profile, cost_file), recorded_policy
    )


def _summarise(dataset: Path, fmt: OutputFormat) -> None:
    from ingest.dataset import read_manifest
    from pipeline.orchestrate import policy_summary
    from queries import QueryError

    with input_errors():
        if not read_manifest(dataset)["sources"]:
            return  # every trace failed (--on-error skip): nothing to sum up
        try:
            rows = policy_summary(dataset)
        except QueryError as exc:
            fail(str(exc))
    emit(rows, fmt, title=f"FPU operations per policy ({dataset})")


@app.command()
def replay(
    dataset: Annotated[Path, typer.Argument(help="Dataset directory (from `fpureplay ingest`).")],
    policy: Policies = None,
    recorded_policy: RecordedPolicy = None,
    cpu_profile: CpuProfile = None,
    cost_model: CostFile = None,
    jobs: Jobs = None,
    executor: ExecutorKind = "local",
    scheduler: Scheduler = None,
    fmt: Format = OutputFormat.table,
) -> None:
    """Rebuild vCPU timelines, replay the policies, write runs and fpu_ops, print the summary.

    The summary has, per source and policy: ops, saves, restores, redundant
    ops, redundant %, cost in microseconds and ops per second of trace.
    Each source is an independent task, as in `ingest`.
    """
    from pipeline.orchestrate import replay_dataset

    task = _replay_task(policy, recorded_policy, cpu_profile, cost_model)
    with input_errors():
        replay_dataset(
            dataset,
            policies=task.policies,
            cost_model=task.cost_model,
            recorded_policy=task.recorded_policy,
            options=_fleet(jobs, executor, scheduler, "raise", None),
        )
    _summarise(dataset, fmt)


@app.command()
def run(
    traces: Traces,
    output: DatasetOut,
    input_format: Annotated[
        str,
        typer.Option("--input-format", help="Input format: auto, tracefs, trace-cmd, perf-script."),
    ] = "auto",
    force: Force = False,
    host: Host = None,
    jobs: Jobs = None,
    executor: ExecutorKind = "local",
    scheduler: Scheduler = None,
    on_error: OnError = "raise",
    policy: Policies = None,
    recorded_policy: RecordedPolicy = None,
    cpu_profile: CpuProfile = None,
    cost_model: CostFile = None,
    fmt: Format = OutputFormat.table,
) -> None:
    """Ingest traces and replay them in one step, one task per trace; print the summary.

    Sources already in the dataset are replayed again only when the dataset
    was last replayed with other policies, costs or --recorded-policy.  With
    several traces, what happened to each (added, already present, failed
    and why) is listed on stderr.
    """
    from ingest.load import IngestTask
    from pipeline.fleet import run_traces

    _check_format(input_format)
    replay_task = _replay_task(policy, recorded_policy, cpu_profile, cost_model)
    with input_errors(), _progress_bar() as progress, _fleet_errors(fmt, f"traces ({output})"):
        options = _fleet(jobs, executor, scheduler, on_error, progress)
        task = IngestTask(fmt=input_format, host=host)
        reports = run_traces(traces, output, task, replay_task, options, force=force)
    if len(reports) > 1 or any(r.status == "failed" for r in reports):
        # Per trace on stderr: stdout stays the policy summary, in --format.
        rows = [r.summary_row() for r in reports]
        emit(rows, OutputFormat.table, title=f"traces ({output})", file=sys.stderr)
    _summarise(output, fmt)
    _failed_exit(reports)


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
                read_events(dataset, source["id"], source["host"]),
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
