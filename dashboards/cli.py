"""`fpureplay dashboard`: write a dataset's interactive dashboard as one HTML file.

``pipeline/cli.py`` registers :func:`dashboard` with
``app.command("dashboard")(dashboard)``.  The result line goes to stdout,
errors to stderr as ``error: ...`` with exit code 2.  polars, DuckDB and
plotly are imported only when the command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def dashboard(
    dataset: Annotated[
        Path, typer.Argument(help="Dataset directory (after `fpureplay replay` or `run`).")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="FILE.html", help="The HTML file to write.")
    ],
    timeline_source: Annotated[
        list[str] | None,
        typer.Option(
            "--timeline-source",
            "-s",
            metavar="SOURCE",
            help="Source to draw a CPU-lane timeline of (repeatable; default: the first 4).",
        ),
    ] = None,
    title: Annotated[
        str | None, typer.Option("--title", help="Page title (default: names the sources).")
    ] = None,
) -> None:
    """Write the interactive dashboard of DATASET: one self-contained HTML file.

    Policy comparison, per-vCPU table and bars, a CPU-lane timeline per
    source with a policy dropdown, distributions, the sweep heatmap of a
    sweep dataset, data quality and the validation table, and the manifest.
    plotly.js is inlined; the file needs no network.

    Example: fpureplay dashboard ds -o report.html
    """
    from dashboards.build import write_dashboard
    from dashboards.data import DashboardError
    from queries import QueryError

    if output.is_dir():
        _fail(f"{output}: is a directory; give the HTML file to write")
    if not output.parent.is_dir():
        _fail(f"{output.parent}: no such directory")
    try:
        report = write_dashboard(dataset, output, timeline_sources=timeline_source, title=title)
    except (QueryError, DashboardError) as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{output}: cannot write: {exc.strerror or exc}")
    typer.echo(
        f"wrote {report.path}: {report.figures} figures, {report.bytes / 1e6:.1f} MB,"
        f" {report.seconds:.1f} s"
    )
