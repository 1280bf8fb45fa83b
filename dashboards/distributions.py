"""Distributions: KVM_RUN length, sched-outs per run, FPU operations per run.

Pure builder from the ``run_histogram`` and ``ops_per_run`` queries' rows.
Bars are shares of runs (%), so sources of different lengths compare; the
hover gives the counts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dashboards.palette import policy_colour, policy_rank
from dashboards.text import plotly_text

if TYPE_CHECKING:
    import plotly.graph_objects as go
    import polars as pl


def _us_label(lo: int, hi: int) -> str:
    def short(us: int) -> str:
        if us >= 1_000_000:
            return f"{us / 1_000_000:g} s"
        if us >= 1000:
            return f"{us / 1000:g} ms"
        return f"{us} µs"

    return f"[{short(lo)}, {short(hi)})"


def distributions(run_histogram: pl.DataFrame, ops_per_run: pl.DataFrame) -> go.Figure:
    """Three histograms side by side: run length, sched-outs per run, operations per run."""
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=(
            "KVM_RUN length (complete runs)",
            "sched-outs per KVM_RUN",
            "FPU operations per KVM_RUN",
        ),
        horizontal_spacing=0.07,
    )
    sources = list(dict.fromkeys(run_histogram["source"].to_list()))
    multi = len(set(sources) | set(ops_per_run["source"].to_list())) > 1
    for col, measure in ((1, "run_us"), (2, "sched_outs")):
        for source in sources:
            part = run_histogram.filter(
                (run_histogram["source"] == source) & (run_histogram["measure"] == measure)
            ).sort("bucket_lo")
            if measure == "run_us":
                x = [
                    _us_label(lo, hi)
                    for lo, hi in part.select("bucket_lo", "bucket_hi").iter_rows()
                ]
            else:
                x = [str(v) for v in part["bucket_lo"].to_list()]
            fig.add_bar(
                x=x,
                y=part["pct"].to_numpy(),
                customdata=part["runs"].to_numpy(),
                name=plotly_text(source),
                legendgroup=f"src-{source}",
                showlegend=multi and col == 1,
                marker_color="#7f7f7f" if not multi else None,
                hovertemplate="%{x}: %{customdata:,} runs (%{y:.1f} %)",
                row=1,
                col=col,
            )
    keys = sorted(
        ops_per_run.select("source", "policy").unique().iter_rows(),
        key=lambda r: (r[0], policy_rank(r[1])),
    )
    for source, policy in keys:
        part = ops_per_run.filter(
            (ops_per_run["source"] == source) & (ops_per_run["policy"] == policy)
        ).sort("ops")
        name = f"{plotly_text(source)} · {plotly_text(policy)}" if multi else plotly_text(policy)
        fig.add_bar(
            x=[str(v) for v in part["ops"].to_list()],
            y=part["pct"].to_numpy(),
            customdata=part["runs"].to_numpy(),
            name=name,
            marker_color=policy_colour(policy),
            hovertemplate="%{x} ops: %{customdata:,} runs (%{y:.1f} %)",
            row=1,
            col=3,
        )
    fig.update_yaxes(title_text="% of runs", row=1, col=1)
    # Categories (bars keep their width however sparse the values), in
    # numeric order whatever order the sources and policies bring them in.
    sched_outs = run_histogram.filter(run_histogram["measure"] == "sched_outs")["bucket_lo"]
    fig.update_xaxes(type="category", tickangle=-45)
    for col, values in ((2, sched_outs), (3, ops_per_run["ops"])):
        order = [str(v) for v in sorted(set(values.to_list()))]
        fig.update_xaxes(categoryorder="array", categoryarray=order, row=1, col=col)
    fig.update_xaxes(title_text="sched-outs", row=1, col=2)
    fig.update_xaxes(title_text="operations", row=1, col=3)
    fig.update_layout(
        barmode="group",
        title="Distributions over KVM_RUN calls",
        template="plotly_white",
        height=440,
        margin={"t": 80, "b": 90},
    )
    return fig
