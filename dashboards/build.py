"""Assemble and write a dataset's dashboard: query, build figures and tables, write one HTML file.

``write_dashboard(dataset, output)`` is what ``fpureplay dashboard`` runs.
The sections, in order: policy comparison, per vCPU, timeline, distributions,
sweep, data quality and fidelity; the header carries the provenance.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dashboards.data import DashboardData, load
from dashboards.page import Figure, Html, Note, Section, render_page
from dashboards.tables import Col, html_table

if TYPE_CHECKING:
    import polars as pl


@dataclass
class Report:
    """What was written."""

    path: Path
    bytes: int
    figures: int
    seconds: float
    marks: dict[str, int] = field(default_factory=dict)  # figure id -> marks it draws
    notes: list[str] = field(default_factory=list)


SAVINGS_COLUMNS = (
    Col("source", "source"),
    Col("policy", "policy"),
    Col("ops_saved", "ops saved", "int", "legacy's operations minus the policy's"),
    Col("ops_saved_pct", "ops saved %", "pct"),
    Col("ops_saved_per_s", "ops saved / s", "float1", "per second of trace"),
    Col("cost_saved_us", "CPU time saved (µs)", "float3"),
    Col("cost_saved_us_per_s", "µs saved / s", "float3", "CPU time saved per second of trace"),
)
SUMMARY_COLUMNS = (
    Col("source", "source"),
    Col("policy", "policy"),
    Col("ops", "ops", "int"),
    Col("save_user", "save user", "int"),
    Col("restore_user", "restore user", "int"),
    Col("save_guest", "save guest", "int"),
    Col("restore_guest", "restore guest", "int"),
    Col("redundant_ops", "redundant", "int"),
    Col("redundant_pct", "redundant %", "pct"),
    Col("cost_us", "cost (µs)", "float3"),
    Col("redundant_cost_us", "redundant cost (µs)", "float3"),
    Col("incomplete_run_ops", "ops in cut runs", "int", "operations inside incomplete runs"),
)
WASTE_COLUMNS = (
    Col("source", "source"),
    Col("policy", "policy"),
    Col("trigger", "trigger"),
    Col("op", "op"),
    Col("context", "context"),
    Col("redundant_ops", "redundant ops", "int"),
    Col("pct_of_redundant", "% of redundant", "pct"),
    Col("redundant_cost_us", "cost (µs)", "float3"),
    Col("reason", "why redundant"),
)
VCPU_COLUMNS = (
    Col("source", "source"),
    Col("policy", "policy"),
    Col("pid", "tid", "int"),
    Col("comm", "thread"),
    Col("kvm_runs", "KVM_RUN calls", "int"),
    Col("incomplete_runs", "cut runs", "int"),
    Col("preemptions", "preemptions", "int"),
    Col("blocks", "blocks", "int"),
    Col("migrations", "migrations", "int"),
    Col("ops", "ops", "int"),
    Col("redundant_ops", "redundant", "int"),
    Col("redundant_pct", "redundant %", "pct"),
    Col("cost_us", "cost (µs)", "float3"),
)
QUALITY_COLUMNS = (
    Col("source", "source"),
    Col("format", "format"),
    Col("lines", "lines", "int"),
    Col("events", "events", "int"),
    Col("rejects", "rejects", "int"),
    Col("reject_pct", "rejects %", "pct"),
    Col("first_reject_line", "first reject line", "int"),
    Col("first_reject_reason", "first reject reason"),
    Col("lost_markers", "lost markers", "int"),
    Col("lost_events", "lost events", "int"),
    Col("ts_backwards", "time steps back", "int"),
    Col("invalid_utf8_lines", "invalid UTF-8 lines", "int"),
    Col("truncated", "truncated", "bool"),
    Col("inferred_switch_ins", "inferred switch-ins", "int"),
    Col("runs", "runs", "int"),
    Col("incomplete_runs", "incomplete runs", "int"),
    Col("incomplete_pct", "incomplete %", "pct"),
    Col("recorded_policy", "recorded policy"),
)
VALIDATION_COLUMNS = (
    Col("source", "source"),
    Col("policy", "policy"),
    Col("pid", "tid", "int"),
    Col("comm", "thread"),
    Col("check", "check"),
    Col("predicted", "predicted", "int"),
    Col("observed", "observed", "int"),
    Col("difference", "difference", "int"),
    Col("agreement_pct", "agreement %", "pct"),
    Col("causes", "known causes"),
)


def build_sections(data: DashboardData) -> tuple[list[Section], dict[str, dict[str, str]]]:
    """The page's sections, and the sweep's values per source (for the header)."""
    from dashboards import distributions, policy, quality, sweep, timeline, vcpus

    sections: list[Section] = []
    policy_section = Section(
        "policy",
        "Policy comparison",
        intro=(
            "Every FPU save and restore each policy performs for the vCPU threads of each"
            " source, split by direction and context, needed or redundant, and what they cost."
        ),
    )
    policy_section.blocks += [
        Html(
            html_table(
                data.savings,
                SAVINGS_COLUMNS,
                table_id="savings",
                caption="what each policy saves over legacy",
            )
        ),
        Figure("policy-ops", policy.ops_by_policy(data.ops_breakdown)),
        Figure("policy-cost", policy.cost_by_policy(data.ops_breakdown)),
        Figure(
            "policy-rate",
            policy.ops_over_time(_rates(data)),
            caption="Sources with a timeline; buckets of 1/1000 of the trace or the timeline's.",
        ),
        Html(
            html_table(
                data.policy_summary,
                SUMMARY_COLUMNS,
                table_id="policy-summary",
                caption="policy summary",
            )
        ),
        Html(
            html_table(
                data.redundant_by_trigger,
                WASTE_COLUMNS,
                table_id="redundant-paths",
                caption="where the redundant operations come from",
            )
        ),
    ]
    sections.append(policy_section)

    sections.append(
        Section(
            "vcpus",
            "Per vCPU",
            [
                Figure("vcpu-bars", vcpus.vcpu_bars(data.vcpus)),
                Html(
                    html_table(
                        data.vcpus,
                        VCPU_COLUMNS,
                        table_id="vcpu-table",
                        caption="per vCPU thread and policy (click a header to sort)",
                    )
                ),
            ],
        )
    )

    tl_section = Section(
        "timeline",
        "Timeline",
        intro=(
            "One lane per CPU; in each, the vCPU threads' state over time (strips, top to bottom:"
            " in KVM_RUN, in userspace, preempted, blocked), off-CPU states on the lane of the"
            " CPU the thread left.  Triangles: the FPU operations of the policy picked in the"
            " dropdown (up: save, down: restore; red: redundant).  Drag to zoom in time,"
            " double-click to zoom out."
        ),
    )
    for i, tl in enumerate(data.timelines):
        fig = timeline.timeline_figure(
            tl.lanes,
            tl.ops,
            cpus=tl.cpus,
            policies=tl.policies,
            span_ms=tl.span_ms,
            lanes_bucket_ms=tl.lanes_bucket_ms,
            ops_bucket_ms=tl.ops_bucket_ms,
            title=f"{_plotly(tl.source)}: {tl.states:,} thread-state stretches,"
            f" {tl.op_count:,} FPU operations (all policies)",
        )
        tl_section.blocks.append(Figure(f"timeline-{i}", fig, config={"scrollZoom": True}))
    tl_section.blocks += [Note(n) for n in data.notes if n.startswith("timelines")]
    sections.append(tl_section)

    sections.append(
        Section(
            "distributions",
            "Distributions",
            [
                Figure(
                    "distributions",
                    distributions.distributions(data.run_histogram, data.ops_per_run),
                )
            ],
        )
    )

    sweep_section = Section("sweep", "Sweep")
    found = sweep.sweep_points(data.manifest, data.savings)
    swept: dict[str, dict[str, str]] = {}
    if found is None:
        sweep_section.blocks.append(
            Note(
                "Not a sweep dataset: a sweep has several sources whose manifest entries carry"
                " the swept parameters (`sweep`, or the model's `params`)."
            )
        )
    else:
        points, params = found
        sweep_section.intro = (
            f"{points['source'].n_unique()} points over {', '.join(params)}; pick the policy and"
            " the measure in the dropdown."
        )
        sweep_section.blocks.append(Figure("sweep", sweep.sweep_heatmap(points, params)))
        swept = {row["source"]: {k: row[k] for k in params} for row in points.iter_rows(named=True)}
    sections.append(sweep_section)

    qsec = Section(
        "quality",
        "Data quality and fidelity",
        intro=(
            "How far to trust each source: lines that did not parse, events the kernel lost,"
            " context switches the replay had to infer, runs the trace cut; then the replay of"
            " the recording kernel's policy checked against that kernel's own events."
        ),
    )
    qsec.blocks += [
        Figure("quality", quality.quality_bars(data.quality)),
        Html(
            html_table(
                data.quality,
                QUALITY_COLUMNS,
                table_id="quality-table",
                caption="data quality per source",
            )
        ),
    ]
    if data.validation is not None and not data.validation.is_empty():
        qsec.blocks += [
            Figure("validation", quality.validation_heatmap(data.validation)),
            Html(
                html_table(
                    data.validation,
                    VALIDATION_COLUMNS,
                    table_id="validation-table",
                    caption="validation (rows that differ are marked)",
                    row_class=lambda r: "bad" if r["difference"] else None,
                )
            ),
        ]
    else:
        qsec.blocks += [Note(n) for n in data.notes if n.startswith("no validation")] or [
            Note("The validation table is empty: no vCPU thread to check.")
        ]
    for source in data.manifest.get("sources", []):
        for note in (source.get("replay") or {}).get("notes") or []:
            qsec.blocks.append(Note(f"{source.get('id')}: {note}"))
    sections.append(qsec)
    if data.fpu_access is not None and not data.fpu_access.is_empty():
        sections.append(_migration_section(data.fpu_access))
    return sections, swept


def _migration_section(calls: pl.DataFrame) -> Section:
    """Migration safety: FPU-state ioctls on their vCPU's lane, and how long they waited."""
    from pipeline import audit_figures

    violations = int((calls["status"] == "violation").sum())
    return Section(
        "migration",
        "Migration safety",
        intro=(
            f"{calls.height:,} FPU-state ioctls (KVM_GET_XSAVE and friends) mapped to their vCPU;"
            f" {violations:,} completed while the vCPU was inside KVM_RUN (the vCPU mutex rule"
            " says none may).  See docs/audit.md."
        ),
        blocks=[
            Figure("fpu-calls", audit_figures.calls_timeline(calls)),
            Figure("fpu-waits", audit_figures.wait_histogram(calls)),
        ],
    )


def _rates(data: DashboardData):
    """Operations per second per policy over time, for the timeline sources."""
    import polars as pl

    from dashboards.lanes import op_rate

    frames = [
        op_rate(tl.ops, source=tl.source, span_ms=tl.span_ms, bucket_ms=tl.ops_bucket_ms)[0]
        for tl in data.timelines
    ]
    return pl.concat(frames)


def _plotly(text: str) -> str:
    from dashboards.text import plotly_text

    return plotly_text(text)


def write_dashboard(
    dataset: str | Path,
    output: str | Path,
    *,
    timeline_sources: Sequence[str] | None = None,
    title: str | None = None,
) -> Report:
    """Write ``dataset``'s dashboard to ``output`` (replaced atomically); returns a Report.

    Raises :class:`queries.QueryError` or :class:`dashboards.data.DashboardError`
    when the dataset cannot make one, OSError when the file cannot be written.
    """
    from dashboards.provenance import provenance_header
    from dashboards.timeline import count_marks
    from ingest.dataset import atomic_write

    start = time.perf_counter()
    data = load(dataset, timeline_sources=timeline_sources)
    sections, swept = build_sections(data)
    sources = [s.get("id") for s in data.manifest.get("sources", [])]
    more = f" and {len(sources) - 1} more" if len(sources) > 1 else ""
    page_title = title or f"fpureplay dashboard: {sources[0]}{more}"
    html = render_page(
        title=page_title,
        header=provenance_header(data.manifest, Path(dataset), page_title, swept),
        sections=sections,
        manifest=data.manifest,
    )
    out = Path(output)
    # Written aside and renamed: a browser or a web server never gets half a page.
    with atomic_write(out) as tmp:
        tmp.write_text(html, encoding="utf-8")
    figures = [b for s in sections for b in s.blocks if isinstance(b, Figure)]
    return Report(
        path=out,
        bytes=len(html.encode()),
        figures=len(figures),
        seconds=time.perf_counter() - start,
        marks={f.id: count_marks(f.figure) for f in figures},
        notes=list(data.notes),
    )
