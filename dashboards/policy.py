"""Policy comparison figures: operations and cost of legacy, vcpu_run and deferred per source.

Pure builders: ``DataFrame -> go.Figure``, from the rows of the
``ops_breakdown`` and ``timeline`` queries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dashboards.palette import (
    NEEDED_COLOUR,
    OP_CELLS,
    OP_COLOURS,
    REDUNDANT_COLOUR,
    policy_colour,
    policy_rank,
)
from dashboards.text import plotly_text

if TYPE_CHECKING:
    import plotly.graph_objects as go
    import polars as pl


def category_axis(frame: pl.DataFrame, inner: str) -> tuple[list[str], list[str], bool]:
    """(sources, inner values, multi): the x categories of per-source bars.

    One source: the inner values alone.  Several: a two-level axis (source,
    inner), with the source ids escaped like any trace-derived text.
    """
    sources = [plotly_text(s) for s in frame["source"].to_list()]
    inner_values = [plotly_text(v) for v in frame[inner].to_list()]
    return sources, inner_values, frame["source"].n_unique() > 1


def _cells(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per (source, policy), in the kernel's policy order."""
    import polars as pl

    keys = frame.select("source", "policy").unique(maintain_order=True)
    order = sorted(keys.iter_rows(), key=lambda r: (r[0], policy_rank(r[1])))
    return pl.DataFrame(order, schema=["source", "policy"], orient="row")


def _x(keys: pl.DataFrame) -> list[list[str]] | list[str]:
    sources, policies, multi = category_axis(keys, "policy")
    return [sources, policies] if multi else policies


def ops_by_policy(breakdown: pl.DataFrame) -> go.Figure:
    """Stacked bars of operations per source and policy by op x context, needed vs redundant.

    ``breakdown``: the ops_breakdown query's rows.
    """
    import plotly.graph_objects as go
    import polars as pl

    keys = _cells(breakdown)
    fig = go.Figure()
    for op, context in OP_CELLS:
        for redundant in (False, True):
            cell = keys.join(
                breakdown.filter(
                    (pl.col("op") == op)
                    & (pl.col("context") == context)
                    & (pl.col("redundant") == redundant)
                ),
                on=["source", "policy"],
                how="left",
                maintain_order="left",
            ).with_columns(pl.col("ops", "cost_us", "pct_of_policy").fill_null(0))
            if cell["ops"].sum() == 0:
                continue
            need = "redundant" if redundant else "needed"
            fig.add_bar(
                x=_x(keys),
                y=cell["ops"].to_numpy(),
                name=f"{op} {context} ({need})",
                legendgroup=f"{op} {context}",
                marker={
                    "color": OP_COLOURS[(op, context)],
                    "pattern": {"shape": "/" if redundant else "", "solidity": 0.45},
                    "line": {"color": REDUNDANT_COLOUR if redundant else "white", "width": 1},
                },
                customdata=cell.select("cost_us", "pct_of_policy").to_numpy(),
                hovertemplate=(
                    f"{op} {context}, {need}<br>%{{y:,}} operations"
                    " (%{customdata[1]:.1f} % of the policy's)<br>%{customdata[0]:,.1f} µs"
                    "<extra></extra>"
                ),
            )
    fig.update_layout(
        barmode="stack",
        title="FPU operations per policy: save/restore × user/guest, needed vs redundant (hatched)",
        yaxis_title="operations",
        legend={"traceorder": "normal"},
        template="plotly_white",
        height=460,
        margin={"t": 60, "b": 60},
    )
    return fig


def cost_by_policy(breakdown: pl.DataFrame) -> go.Figure:
    """Stacked bars of the cost (µs) per source and policy, needed vs redundant."""
    import plotly.graph_objects as go
    import polars as pl

    keys = _cells(breakdown)
    per = breakdown.group_by("source", "policy", "redundant").agg(
        pl.col("cost_us").sum(), pl.col("ops").sum()
    )
    fig = go.Figure()
    for redundant, colour in ((False, NEEDED_COLOUR), (True, REDUNDANT_COLOUR)):
        cell = keys.join(
            per.filter(pl.col("redundant") == redundant),
            on=["source", "policy"],
            how="left",
            maintain_order="left",
        ).with_columns(pl.col("cost_us", "ops").fill_null(0))
        need = "redundant" if redundant else "needed"
        fig.add_bar(
            x=_x(keys),
            y=cell["cost_us"].to_numpy(),
            name=f"{need} operations",
            marker_color=colour,
            customdata=cell["ops"].to_numpy(),
            hovertemplate=f"{need}: %{{y:,.1f}} µs in %{{customdata:,}} operations<extra></extra>",
        )
    fig.update_layout(
        barmode="stack",
        title="Cost of the FPU operations per policy (cost model: manifest replay.cost_model)",
        yaxis_title="µs of CPU time",
        template="plotly_white",
        height=420,
        margin={"t": 60, "b": 60},
    )
    return fig


def ops_over_time(rate: pl.DataFrame) -> go.Figure:
    """Operations per second of each policy over the trace, one line per source and policy.

    ``rate``: source, policy, start_ms (bucket start), ops_per_s, every bucket
    present (:func:`dashboards.lanes.op_rate`).
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    multi = rate["source"].n_unique() > 1
    dashes = ("solid", "dot", "dash", "longdash", "dashdot")
    sources = list(dict.fromkeys(rate["source"].to_list()))
    groups = sorted(
        rate.group_by("source", "policy"), key=lambda g: (str(g[0][0]), policy_rank(str(g[0][1])))
    )
    for (source, policy), part in groups:
        name = f"{plotly_text(source)} · {plotly_text(policy)}" if multi else plotly_text(policy)
        fig.add_scatter(
            x=part["start_ms"].to_numpy(),
            y=part["ops_per_s"].to_numpy(),
            mode="lines",
            name=name,
            line={
                "color": policy_colour(str(policy)),
                "dash": dashes[sources.index(source) % len(dashes)],
                "width": 1.5,
                "shape": "hv",
            },
            hovertemplate="%{x:.3f} ms: %{y:,.0f} ops/s",
        )
    fig.update_layout(
        title="FPU operations per second over the trace",
        xaxis_title="ms since the source's first event",
        yaxis_title="operations / s",
        template="plotly_white",
        height=360,
        margin={"t": 60, "b": 50},
    )
    return fig
