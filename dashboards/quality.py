"""Data quality and fidelity: how far to trust each source, and the validation table.

Pure builders from the ``data_quality`` and ``validation`` queries' rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dashboards.text import plotly_text
from dashboards.vcpus import vcpu_label

if TYPE_CHECKING:
    import plotly.graph_objects as go
    import polars as pl

#: (column, title): what can make a replay wrong, per source.
QUALITY_FACTS = (
    ("reject_pct", "rejected lines (% of lines)"),
    ("lost_events", "events lost (markers' counts)"),
    ("inferred_switch_ins", "switch-ins inferred by the replay"),
    ("incomplete_pct", "incomplete runs (% of runs)"),
)


def quality_bars(quality: pl.DataFrame) -> go.Figure:
    """One small bar chart per quality fact, one bar per source (a missing fact is 0)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1, cols=len(QUALITY_FACTS), subplot_titles=[t for _, t in QUALITY_FACTS]
    )
    x = [plotly_text(s) for s in quality["source"].to_list()]
    for i, (col, title) in enumerate(QUALITY_FACTS):
        y = quality[col].fill_null(0).cast(float).to_numpy()
        fig.add_bar(
            x=x,
            y=y,
            name=title,
            showlegend=False,
            marker_color=["#e45756" if v > 0 else "#4c78a8" for v in y],
            text=[f"{v:,.4g}" for v in y],
            textposition="outside",
            hovertemplate="%{x}<br>" + title + ": %{y:,.4~g}<extra></extra>",
            row=1,
            col=i + 1,
        )
    fig.update_xaxes(showticklabels=len(x) <= 12, tickangle=-30)
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(
        title="Data quality per source (red: something to look at)",
        template="plotly_white",
        height=380,
        margin={"t": 80, "b": 80},
    )
    return fig


def validation_heatmap(validation: pl.DataFrame) -> go.Figure:
    """Agreement (%) of each check for each vCPU thread; the cell text is predicted/observed."""
    import numpy as np
    import plotly.graph_objects as go

    checks = list(dict.fromkeys(validation["check"].to_list()))
    threads = validation.unique(["source", "pid"], keep="first", maintain_order=True)
    multi = threads["source"].n_unique() > 1
    labels = [
        (f"{plotly_text(s)} · " if multi else "") + vcpu_label(c, p)
        for s, c, p in threads.select("source", "comm", "pid").iter_rows()
    ]
    row_of = {(s, p): i for i, (s, p) in enumerate(threads.select("source", "pid").iter_rows())}
    z = np.full((len(labels), len(checks)), np.nan)
    text = [["" for _ in checks] for _ in labels]
    for r in validation.iter_rows(named=True):
        i, j = row_of[(r["source"], r["pid"])], checks.index(r["check"])
        z[i, j] = r["agreement_pct"] if r["agreement_pct"] is not None else np.nan
        text[i][j] = f"{r['predicted']:,}/{r['observed']:,}"
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[plotly_text(c) for c in checks],
            y=labels,
            text=text,
            texttemplate="%{text}",
            zmin=90.0,
            zmax=100.0,
            colorscale=[[0.0, "#d62728"], [0.5, "#ffdd71"], [1.0, "#2ca02c"]],
            colorbar={"title": {"text": "agreement %"}},
            hovertemplate="%{y}<br>%{x}: predicted/observed %{text}, agreement %{z:.2f} %"
            "<extra></extra>",
            xgap=2,
            ygap=2,
        )
    )
    fig.update_layout(
        title="Validation: the replay of the recording kernel's policy against its own events",
        template="plotly_white",
        height=max(260, 120 + 26 * len(labels)),
        margin={"t": 60, "b": 40, "l": 200},
        yaxis={"autorange": "reversed", "type": "category"},
        xaxis={"type": "category", "side": "top"},
    )
    return fig
