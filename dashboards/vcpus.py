"""Per-vCPU figure: what each vCPU thread did and what each policy cost it.

Pure builder from the ``vcpu_summary`` query's rows; the sortable table of
the same rows is made by :func:`dashboards.tables.html_table`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dashboards.palette import policy_colour, policy_rank
from dashboards.text import plotly_text

if TYPE_CHECKING:
    import plotly.graph_objects as go
    import polars as pl

#: (column, subplot title): facts of the trace (the same under every policy).
TRACE_FACTS = (("kvm_runs", "KVM_RUN calls"), ("preemptions", "preemptions"), ("blocks", "blocks"))
#: (column, subplot title): what the policy does.
POLICY_FACTS = (
    ("ops", "FPU operations"),
    ("redundant_ops", "redundant operations"),
    ("cost_us", "cost (µs)"),
)


def vcpu_label(comm: str | None, pid: int) -> str:
    """``CPU 0/KVM · 4321``: a vCPU thread as the figures name it (escaped)."""
    return f"{plotly_text(comm) if comm else '?'} · {pid}"


def vcpu_bars(vcpus: pl.DataFrame) -> go.Figure:
    """Bars per vCPU thread: runs, preemptions, blocks; and per policy ops, redundant, cost."""
    from plotly.subplots import make_subplots

    threads = vcpus.unique(["source", "pid"], keep="first", maintain_order=True).sort(
        "source", "pid"
    )
    multi = threads["source"].n_unique() > 1

    def x_of(frame: pl.DataFrame) -> list[list[str]] | list[str]:
        labels = [vcpu_label(c, p) for c, p in frame.select("comm", "pid").iter_rows()]
        if multi:
            return [[plotly_text(s) for s in frame["source"].to_list()], labels]
        return labels

    titles = [t for _, t in TRACE_FACTS] + [t for _, t in POLICY_FACTS]
    fig = make_subplots(rows=2, cols=3, subplot_titles=titles, vertical_spacing=0.22)
    for i, (col, title) in enumerate(TRACE_FACTS):
        fig.add_bar(
            x=x_of(threads),
            y=threads[col].to_numpy(),
            name=title,
            marker_color="#7f7f7f",
            showlegend=False,
            hovertemplate=f"%{{x}}<br>%{{y:,}} {title}<extra></extra>",
            row=1,
            col=i + 1,
        )
    policies = sorted(vcpus["policy"].unique().to_list(), key=policy_rank)
    for policy in policies:
        rows = vcpus.filter(vcpus["policy"] == policy).sort("source", "pid")
        for i, (col, title) in enumerate(POLICY_FACTS):
            fig.add_bar(
                x=x_of(rows),
                y=rows[col].to_numpy(),
                name=plotly_text(policy),
                legendgroup=policy,
                showlegend=i == 0,
                marker_color=policy_colour(policy),
                hovertemplate=f"%{{x}}<br>%{{fullData.name}}: %{{y:,.4~f}} {title}<extra></extra>",
                row=2,
                col=i + 1,
            )
    fig.update_layout(
        barmode="group",
        title="Per vCPU thread: the trace (top) and each policy's FPU work (bottom)",
        template="plotly_white",
        height=620,
        margin={"t": 80, "b": 80},
    )
    fig.update_xaxes(tickangle=-30)
    return fig
