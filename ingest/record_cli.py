"""``fpureplay record``: the command-line face of :mod:`ingest.record`.

``record`` is a Typer command function; ``pipeline/cli.py`` registers it with
``app.command("record")(record)``.  ``python -m ingest.record_cli ...`` runs
it on its own (the tests do, to send it signals).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ingest.record import (
    DEFAULT_BUFFER_KB,
    DEFAULT_WORKLOAD_DURATION,
    RecordError,
    RecordRefused,
    RecordResult,
    record_trace,
)


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def record(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Trace file to write (.zst: compressed).")
    ],
    command: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[-- COMMAND ARGS...]",
            help="Command to run and record until it exits (put it after --).",
        ),
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration",
            help="Seconds to record (with --workload: how long it runs, default "
            f"{DEFAULT_WORKLOAD_DURATION:g}).  Without this, a workload or a COMMAND, "
            "records until Ctrl-C.",
        ),
    ] = None,
    workload: Annotated[
        str | None,
        typer.Option(
            "--workload",
            help="Run a built-in KVM guest while recording: pio, halt, overcommit or mixed.",
        ),
    ] = None,
    events: Annotated[
        str, typer.Option("--events", help="Event set: minimal, default or full (+ioctl).")
    ] = "default",
    buffer_kb: Annotated[
        int, typer.Option("--buffer-kb", help="Ring buffer per CPU, KiB.")
    ] = DEFAULT_BUFFER_KB,
) -> None:
    """Record a real trace on this host (root); tracing is left as it was.

    Captures through a private ftrace instance (removed at the end, also on
    Ctrl-C or SIGTERM) and streams it to TRACE with a header naming the
    kernel, CPU model and XSAVE size.  Examples:

      fpureplay record -o halt.txt --workload halt

      fpureplay record -o vm.txt.zst -- qemu-system-x86_64 ...
    """
    try:
        result = record_trace(
            output,
            duration=duration,
            command=command,
            workload=workload,
            events=events,
            buffer_kb=buffer_kb,
        )
    except RecordRefused as exc:
        _fail(str(exc), 2)
    except RecordError as exc:
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        _fail("interrupted (third signal); the instance was removed, the output is partial", 130)
    else:
        _summary(result)


def _summary(r: RecordResult) -> None:
    """The outcome on stdout; lost events also as a warning on stderr."""
    mib = 1 << 20
    on_disk = f" ({r.file_bytes / mib:.2f} MiB on disk)" if r.file_bytes != r.text_bytes else ""
    typer.echo(
        f"recorded {r.output}: {r.lines} lines, {r.text_bytes / mib:.2f} MiB{on_disk} "
        f"in {r.elapsed_s:.2f} s (stopped by: {r.stopped_by})"
    )
    typer.echo(
        f"lost events: {r.lost_events} in {r.lost_markers} markers; ring buffer overrun "
        f"{r.overrun}, dropped {r.dropped}"
    )
    if r.workload_report is not None:
        w = r.workload_report
        typer.echo(
            f"workload {w['workload']}: {len(w['vcpus'])} vCPU threads, "
            f"{w['kvm_run_calls']} KVM_RUN calls; report {r.workload_report_path}"
        )
    if r.command_rc is not None:
        typer.echo(f"command exit status: {r.command_rc}")
    if r.lost_events or r.overrun or r.dropped:
        typer.echo(
            "warning: events were lost; runs they cut are marked incomplete "
            "(a larger --buffer-kb or fewer events helps)",
            err=True,
        )


def main() -> None:
    """``python -m ingest.record_cli``: the record command alone."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command("record")(record)
    app()


if __name__ == "__main__":
    main()
