"""The ``simulate`` and ``sweep`` commands (registered by pipeline.cli).

Both are plain functions with Typer annotations, so the lead registers them
with ``app.command("simulate")(simulate)``.  Results go to stdout through
pipeline.output.emit, progress and errors to stderr; bad usage or input exits
2 with ``error: ...``.  Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from pipeline.model import params as P
from pipeline.output import OutputFormat, emit

_FORMATS = ("tracefs", "perf-script", "dataset")
_POLICIES = ("legacy", "vcpu_run", "deferred")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@contextmanager
def _usage_errors() -> Iterator[None]:
    """Bad parameters, eras, policies and unwritable outputs: exit 2 with the reason."""
    from ingest.errors import InputError

    try:
        yield
    except (P.ParamError, ValueError, InputError) as exc:
        _fail(str(exc))
    except BrokenPipeError:
        raise
    except OSError as exc:
        _fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(f"unknown {name} {value!r}; expected {', '.join(choices)}")


def simulate(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Trace file (.gz/.zst compress) or dataset directory."),
    ] = None,
    preset: Annotated[
        str,
        typer.Option(help="Preset: " + "; ".join(f"{k}: {v}" for k, v in P.PRESET_HELP.items())),
    ] = P.DEFAULT_PRESET,
    seed: Annotated[
        int, typer.Option(help="Random seed: same seed and parameters, same bytes.")
    ] = 0,
    duration_ms: Annotated[float, typer.Option(help="Simulated time in milliseconds.")] = 1000.0,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="Output: tracefs, perf-script or dataset.")
    ] = "tracefs",
    policy: Annotated[
        str, typer.Option(help="Policy of the recording kernel: legacy, vcpu_run or deferred.")
    ] = "deferred",
    kernel_era: Annotated[
        str | None,
        typer.Option(
            help="Kernel version whose text formats to write (default 4.14 legacy, 4.19 "
            "vcpu_run, 6.18 deferred); it must run the policy."
        ),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="KEY=VALUE, repeatable: override a parameter."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Dataset: replace it instead of adding the source.")
    ] = False,
    no_args: Annotated[
        bool, typer.Option("--no-args", help="Dataset: leave `args` null (faster).")
    ] = False,
    show_params: Annotated[
        bool, typer.Option("--show-params", help="Print the resolved parameters and exit.")
    ] = False,
    summary_format: Annotated[
        OutputFormat, typer.Option("--summary-format", help="Summary as table, csv or json.")
    ] = OutputFormat.table,
) -> None:
    """(set below from the parameter table)"""
    from pipeline.model.api import generate

    _check_choice("--format", fmt, _FORMATS)
    _check_choice("--policy", policy, _POLICIES)
    with _usage_errors():
        model = generate(preset, seed=seed, duration_ms=duration_ms, policy=policy,
                         kernel_era=kernel_era, params=param or ())  # fmt: skip
        if show_params:
            emit(P.rows(model.values), summary_format, title=f"parameters of preset {preset}")
            return
        if output is None:
            _fail("missing --output/-o (a trace file or, with --format dataset, a directory)")
        assert output is not None
        typer.echo(f"simulating {duration_ms:g} ms of preset {preset} (seed {seed})", err=True)
        status = model.write(output, fmt, force=force, args=not no_args)
        truth = model.truth()
    seconds = model.duration_ns / 1e9
    rows = [
        {
            "policy": name,
            "recorded": name == policy,
            "ops": t["ops"],
            "ops_per_s": round(t["ops"] / seconds, 1),
            "save_user": t["save_user"],
            "restore_user": t["restore_user"],
            "save_guest": t["save_guest"],
            "restore_guest": t["restore_guest"],
            "redundant": t["redundant"],
        }
        for name, t in truth["totals"].items()
    ]
    title = (
        f"{output} ({status}, {fmt}, {len(model.lines):,} events, {policy} on {model.era.name}, "
        f"{len(truth['vcpus'])} vCPU threads); ground truth in {output}.truth.json"
    )
    emit(rows, summary_format, title=title)


simulate.__doc__ = (
    "Simulate a KVM host and write the trace a kernel with --policy would log, with its truth.\n\n"
    "The built-in vCPU model: pCPUs with run queues, host processes and kernel threads, VMs "
    "whose vCPU threads (CPU n/KVM) enter and leave the guest, exit to the VMM, halt, send "
    "IPIs and get kicked.  It writes OUTPUT (tracefs or perf-script text, or a dataset) and "
    "OUTPUT.truth.json: per vCPU thread its runs, preemptions, blocks and the true FPU "
    "operation counts under every policy.  Same seed and parameters, same bytes.\n\n"
    "\b\nParameters (--param KEY=VALUE; a preset overrides some defaults, --show-params "
    "prints them all):\n" + P.help_text()
)


def sweep(
    grid: Annotated[
        list[str] | None,
        typer.Option(
            "--grid", "-g",
            help="KEY=V1,V2,... repeatable: the values of one axis (default: overcommit=1,2,4 x "
            "timer_hz=250,1000 x xstate=sse,avx512,amx on a 4-CPU host).",
        ),
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help="Preset the grid varies (default: the default grid's base).")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="KEY=VALUE, repeatable: fixed for every point."),
    ] = None,
    pingpong: Annotated[
        bool,
        typer.Option(help="Add the ping-pong points (blocking halts, and with halt polling)."),
    ] = True,
    seed: Annotated[int, typer.Option(help="Random seed of every point.")] = 0,
    duration_ms: Annotated[float, typer.Option(help="Simulated time per point (ms).")] = 200.0,
    policy: Annotated[
        str, typer.Option(help="Policy the points are recorded under (replay runs all three).")
    ] = "deferred",
    kernel_era: Annotated[str | None, typer.Option(help="Kernel era of the recording.")] = None,
    fmt: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="Table, csv or json.")
    ] = OutputFormat.table,
) -> None:
    """Simulate, replay and summarise a grid of model parameters, one row per point.

    Each row: operations per second under legacy, vcpu_run and deferred, what
    vcpu_run and deferred save over legacy (operations per second and percent
    of the host's CPU time), the measured block and preemption rates, and
    `exact` (the replay reproduced the model's ground truth).  Ping-pong rows
    add the round trip (rt_us) and the saving as a percent of it.
    """
    from pipeline.sweep import default_points, grid_points, parse_grid, pingpong_points, run_sweep

    _check_choice("--policy", policy, _POLICIES)
    with _usage_errors():
        if duration_ms <= 0:
            raise P.ParamError("--duration-ms must be positive")
        if grid or preset or param:
            axes = parse_grid(grid or [])
            base = preset or P.DEFAULT_PRESET
            points = grid_points(base, axes, param or ())
            if pingpong:
                points += pingpong_points()
        else:
            points = default_points(include_pingpong=pingpong)

        def progress(i: int, n: int, point) -> None:
            label = " ".join(f"{k}={v}" for k, v in point.label.items()) or point.preset
            typer.echo(f"[{i + 1}/{n}] {label}", err=True)

        rows = run_sweep(points, seed=seed, duration_ms=duration_ms, recorded=policy,
                         kernel_era=kernel_era,
                         progress=progress if sys.stderr.isatty() else None)  # fmt: skip
    emit(rows, fmt, title=f"sweep: {len(rows)} points, {duration_ms:g} ms each, seed {seed}")
