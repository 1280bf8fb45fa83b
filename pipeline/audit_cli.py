"""``fpureplay audit DATASET``: the migration-safety audit as a command (pipeline.audit).

Registered by pipeline.cli with ``app.command("audit")(audit)``.  It writes
the dataset's ``audit`` table, prints a summary per source (or the
violations, or every call) and exits 1 when a call broke the vCPU mutex
rule, 2 on bad input, with ``error: ...`` on stderr.  Heavy imports stay
inside the command so that ``fpureplay --help`` stays fast.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.output import OutputFormat, emit

#: Violations a table lists before pointing at ``--rows violations``.
TABLE_LIMIT = 20


class AuditRows(StrEnum):
    """What ``fpureplay audit`` prints."""

    summary = "summary"
    violations = "violations"
    calls = "calls"


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def audit(
    dataset: Annotated[Path, typer.Argument(help="Dataset directory (from `fpureplay ingest`).")],
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            "-p",
            help="Policy whose guest FPU location is judged (repeatable): legacy, vcpu_run, "
            "deferred. Default: all three.",
        ),
    ] = None,
    recorded_policy: Annotated[
        str | None,
        typer.Option(
            "--recorded-policy",
            help="The recording kernel's policy, overriding detection: legacy, vcpu_run, "
            "deferred.",
        ),
    ] = None,
    rows: Annotated[
        AuditRows,
        typer.Option(
            "--rows",
            help="What to print: summary (one row per source; a table also lists the "
            "violations), violations, or calls (every FPU-state ioctl).",
        ),
    ] = AuditRows.summary,
    fmt: Annotated[
        OutputFormat, typer.Option("--format", help="Output as table, csv or json.")
    ] = OutputFormat.table,
) -> None:
    """Check every ioctl that reads or writes a vCPU's FPU state against KVM_RUN.

    KVM_GET_XSAVE, KVM_GET_XSAVE2, KVM_SET_XSAVE, KVM_GET_FPU and KVM_SET_FPU
    take the vCPU mutex, which KVM_RUN holds: a call that arrives while its
    vCPU is inside KVM_RUN must wait until that KVM_RUN returns, so the guest
    state it copies is in memory under every policy.  Each call is mapped to
    its vCPU by (process, fd) (the fd the vCPU thread passes to KVM_RUN),
    whichever thread issues it.  Writes the dataset's audit table; exit 1 if
    any call completed inside its vCPU's KVM_RUN or copied a stale state.

    Example: fpureplay audit ds --rows violations --format csv
    """
    from ingest.errors import InputError
    from pipeline.audit import POLICY_NAMES, audit_dataset

    chosen = list(dict.fromkeys(policy or POLICY_NAMES))
    for p in chosen:
        if p not in POLICY_NAMES:
            _fail(f"unknown --policy {p!r}; expected {', '.join(POLICY_NAMES)}")
    if recorded_policy is not None and recorded_policy not in POLICY_NAMES:
        _fail(f"unknown --recorded-policy {recorded_policy!r}; expected {', '.join(POLICY_NAMES)}")
    try:
        _, results = audit_dataset(dataset, policies=chosen, recorded_policy=recorded_policy)
    except InputError as exc:
        _fail(str(exc))
    violations = [row for sid, r in results.items() for row in violation_rows(sid, r.violations)]
    if rows is AuditRows.summary:
        emit(
            [summary_row(sid, r) for sid, r in results.items()],
            fmt,
            title=f"FPU-state ioctls against KVM_RUN ({dataset})",
        )
        if fmt is OutputFormat.table and violations:
            emit(violations[:TABLE_LIMIT], fmt, title="violations (trace lines)")
            if len(violations) > TABLE_LIMIT:
                typer.echo(
                    f"... and {len(violations) - TABLE_LIMIT} more: --rows violations lists all",
                    err=True,
                )
    elif rows is AuditRows.violations:
        emit(violations, fmt, title="violations (trace lines)")
    else:
        emit(
            [row for sid, r in results.items() for row in call_rows(sid, r.calls)],
            fmt,
            title=f"FPU-state ioctls ({dataset})",
        )
    if violations:
        n = len(violations)
        _fail(
            f"{n} FPU-state ioctl{'s' if n != 1 else ''} broke the vCPU mutex rule "
            "(completed inside its vCPU's KVM_RUN or copied a stale guest state)",
            code=1,
        )


def summary_row(source: str, result: Any) -> dict[str, Any]:
    """One source's counts: calls, who issued them, waits, violations."""
    import polars as pl

    c = result.calls
    done = c.filter(pl.col("status") != "incomplete")
    waits = done.filter(pl.col("wait_ns") > 0)["wait_ns"]

    def count(expr: pl.Expr) -> int:
        return int(c.select(expr.sum()).item() or 0) if c.height else 0

    return {
        "source": source,
        "calls": c.height,
        "by_vcpu_thread": count(pl.col("issuer") == "vcpu_thread"),
        "by_other_threads": count(pl.col("issuer") != "vcpu_thread"),
        "unknown_vcpu": count(pl.col("status") == "unknown_vcpu"),
        "incomplete": count(pl.col("status") == "incomplete"),
        "entered_in_kvm_run": count(pl.col("in_run_at_enter").fill_null(False)),
        "waited": waits.len(),
        "wait_p50_us": round(waits.median() / 1000, 1) if waits.len() else None,
        "wait_max_us": round(waits.max() / 1000, 1) if waits.len() else None,
        "inside_kvm_run": count(pl.col("inside_run").fill_null(False)),
        "violations": count(pl.col("violation")),
    }


def violation_rows(source: str, violations: Any) -> list[dict[str, Any]]:
    """The violations as people read them: trace lines first, then who and why."""
    return [
        {
            "source": source,
            "enter_line": r["enter_line"],
            "exit_line": r["exit_line"],
            "run_lines": _lines(r["run_start_line"], r["run_end_line"]),
            "thread": f"{r['comm']} ({r['pid']})",
            "cmd": r["cmd"],
            "fd": r["fd"],
            "vcpu": f"{r['vcpu_comm']} ({r['vcpu_pid']})",
            "stale_under": r["stale_under"],
            "reason": r["reason"],
        }
        for r in violations.iter_rows(named=True)
    ]


def call_rows(source: str, calls: Any) -> list[dict[str, Any]]:
    """Every call with the audit table's columns, after its source."""
    return [{"source": source, **r} for r in calls.iter_rows(named=True)]


def _lines(start: int | None, end: int | None) -> str:
    return f"{start if start is not None else 'start'}-{end if end is not None else 'end'}"
