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


@app.command()
def ingest(
    traces: Annotated[
        list[str], typer.Argument(help="Trace files ('-' for stdin; .gz, .zst, .dat).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Dataset directory.")],
    fmt: Annotated[
        str,
        typer.Option("--format", "-f", help="Input format: auto, tracefs, trace-cmd, perf-script."),
    ] = "auto",
    strict: Annotated[
        bool, typer.Option("--strict", help="Any rejected line or lost-events marker is an error.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing dataset instead of adding to it.")
    ] = False,
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


@app.command()
def demo(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Directory for the demo's outputs.")
    ] = Path("demo-out"),
) -> None:
    """Run the pipeline on the bundled real trace and print its summary."""
    from ingest.load import ingest_traces

    if not DEMO_TRACE.exists():
        fail(f"{DEMO_TRACE}: the bundled demo trace is missing")
    dataset = output / "dataset"
    with input_errors():
        reports = ingest_traces([str(DEMO_TRACE)], dataset, force=True)
    emit([r.summary_row() for r in reports], title=f"ingested {DEMO_TRACE.name} into {dataset}")


def main() -> None:
    """Console-script entry point."""
    app()
