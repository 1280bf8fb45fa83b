"""The CPU-lane timeline of one source: vCPU thread states per CPU, FPU operations on top.

One lane per CPU.  Inside a lane, one strip per state (top to bottom: in
KVM_RUN, in userspace, preempted, blocked, other); a vCPU thread off its CPU
is drawn on the lane of the CPU it left.  The FPU operations of one policy
at a time are overlaid (a dropdown picks the policy; triangles up are
saves, down restores; red is redundant).  Time runs in milliseconds since
the source's first event; drag to zoom (time only), double-click to reset.

Exact stretches and operations are WebGL line segments and markers; past the
budget of :mod:`dashboards.lanes` the lanes are heatmap rows (shade = share
of the bucket in the state) and the operations one mark per CPU, bucket and
need, sized by count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from dashboards.palette import (
    OP_CELLS,
    OP_COLOURS,
    REDUNDANT_COLOUR,
    STATE_COLOURS,
    STATE_LABELS,
    STATES,
)
from dashboards.text import plotly_text

if TYPE_CHECKING:
    import numpy as np
    import plotly.graph_objects as go
    import polars as pl

#: Where things sit in a lane, relative to its centre (lanes are 1 apart and the
#: y axis runs downwards): two rows of operations on top (redundant above
#: needed), then one strip per state.
STRIP_Y = {"kvm_run": -0.18, "user": -0.05, "preempted": 0.08, "blocked": 0.21, "other": 0.34}
STRIP_HALF = 0.055
OPS_Y = {False: -0.31, True: -0.41}
NEEDED_OPS_COLOUR = "#222222"


def timeline_figure(
    lanes: pl.DataFrame,
    ops: pl.DataFrame,
    *,
    cpus: Sequence[int],
    policies: Sequence[str],
    span_ms: float,
    lanes_bucket_ms: float | None = None,
    ops_bucket_ms: float | None = None,
    title: str = "",
) -> go.Figure:
    """The timeline figure.

    ``lanes``: thread_states rows (exact), or bin_states rows when
    ``lanes_bucket_ms`` is given.  ``ops``: op_marks rows, or cpu_op_buckets
    rows when ``ops_bucket_ms`` is given, for ``policies`` (the dropdown's
    choices, first shown first).  ``cpus``: the lanes, top to bottom.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    lane_of = {cpu: i for i, cpu in enumerate(cpus)}
    if lanes_bucket_ms is None:
        _exact_lanes(fig, lanes, lane_of)
    else:
        _binned_lanes(fig, lanes, lane_of, lanes_bucket_ms)
    always = len(fig.data)
    groups: list[range] = []
    for k, policy in enumerate(policies):
        first = len(fig.data)
        part = ops.filter(ops["policy"] == policy)
        if ops_bucket_ms is None:
            _exact_ops(fig, part, lane_of, policy)
        else:
            _binned_ops(fig, part, lane_of, policy, ops_bucket_ms)
        groups.append(range(first, len(fig.data)))
        for i in groups[-1]:
            fig.data[i].visible = k == 0
    buttons = []
    for policy, group in zip(policies, groups, strict=True):
        visible = [True] * always + [i in group for i in range(always, len(fig.data))]
        buttons.append(
            {"label": plotly_text(policy), "method": "restyle", "args": [{"visible": visible}]}
        )
    n = max(len(cpus), 1)
    lane_px = max(28, min(160, 560 // n))
    lane_note = (
        "lanes: every stretch"
        if lanes_bucket_ms is None
        else f"lanes: share of each {lanes_bucket_ms:g} ms bucket (too many stretches to draw)"
    )
    ops_note = (
        "operations: every one"
        if ops_bucket_ms is None
        else f"operations: counted per {ops_bucket_ms:g} ms bucket (size: count)"
    )
    fig.update_layout(
        title={
            "text": title,
            "x": 0.0,
            "xanchor": "left",
            "yref": "container",
            "y": 1.0,
            "yanchor": "top",
            "pad": {"t": 8},
            "subtitle": {"text": f"{lane_note} · {ops_note}", "font": {"size": 11}},
        },
        template="plotly_white",
        height=max(420, 150 + n * lane_px),
        margin={"t": 125, "b": 60, "l": 70, "r": 20},
        hovermode="closest",
        dragmode="zoom",
        legend={"y": 1.0, "yanchor": "top", "x": 1.01, "font": {"size": 11}},
        xaxis={
            "title": "ms since the source's first event",
            "range": _extent(lanes, ops, span_ms, lanes_bucket_ms, ops_bucket_ms),
            "showgrid": True,
            "zeroline": False,
            "tickformat": ",~r",
        },
        yaxis={
            "tickvals": list(range(len(cpus))),
            "ticktext": [f"CPU {c}" for c in cpus],
            "range": [len(cpus) - 0.5, -0.5],  # CPU 0 on top
            "fixedrange": True,
            "showgrid": False,
            "zeroline": False,
        },
    )
    if buttons:  # a source without operations has no policy to pick
        fig.update_layout(
            updatemenus=[
                {
                    "type": "dropdown",
                    "buttons": buttons,
                    "active": 0,
                    "x": 0.13,
                    "xanchor": "left",
                    "y": 1.02,
                    "yanchor": "bottom",
                    "showactive": True,
                    "name": "policy",
                }
            ],
            annotations=[
                {
                    "text": "FPU operations of",
                    "xref": "paper",
                    "yref": "paper",
                    "x": 0.0,
                    "y": 1.02,
                    "yanchor": "bottom",
                    "yshift": 6,
                    "showarrow": False,
                    "xanchor": "left",
                },
            ],
        )
    # lane separators
    for i in range(1, len(cpus)):
        fig.add_hline(y=i - 0.5, line={"color": "#dadce0", "width": 1})
    return fig


def _extent(
    lanes: pl.DataFrame,
    ops: pl.DataFrame,
    span_ms: float,
    lanes_bucket_ms: float | None,
    ops_bucket_ms: float | None,
) -> list[float]:
    """The x range first shown: where the vCPU threads are (a trace often starts
    well before its VM), with a little margin; the whole trace when binned."""
    if lanes_bucket_ms is not None or ops_bucket_ms is not None or lanes.is_empty():
        return [0.0, max(span_ms, 1e-3)]
    lo = float(lanes["start_ms"].min())
    hi = float(lanes["end_ms"].max())
    if not ops.is_empty():
        lo, hi = min(lo, float(ops["t_ms"].min())), max(hi, float(ops["t_ms"].max()))
    pad = max((hi - lo) * 0.01, 1e-3)
    return [max(lo - pad, 0.0), hi + pad]


def _segments(start: np.ndarray, end: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x and y of line segments (start, end, gap) for one WebGL line trace."""
    import numpy as np

    n = len(start)
    xs = np.empty(3 * n)
    ys = np.empty(3 * n)
    xs[0::3], xs[1::3], xs[2::3] = start, end, np.nan
    ys[0::3], ys[1::3], ys[2::3] = y, y, np.nan
    return xs, ys


def _exact_lanes(fig: go.Figure, lanes: pl.DataFrame, lane_of: dict[int, int]) -> None:
    # One WebGL line trace per state and thread, so that the thread's name
    # is the trace's (meta), not repeated at every point; one legend entry
    # per state toggles all of its traces.
    import numpy as np
    import polars as pl

    for state in STATES:
        part = lanes.filter(pl.col("state") == state)
        if part.is_empty():
            continue
        group = f"state-{state}"
        _legend_entry(fig, STATE_LABELS[state], STATE_COLOURS[state], group, "line-ew-open")
        for (pid,), thread in part.group_by("pid", maintain_order=True):
            comm = thread["comm"].drop_nulls()
            label = f"{plotly_text(comm[-1]) if len(comm) else '?'} · {pid}"
            y = np.array([lane_of[c] for c in thread["cpu"].to_list()], dtype=np.float32)
            xs, ys = _segments(
                thread["start_ms"].to_numpy(), thread["end_ms"].to_numpy(), y + STRIP_Y[state]
            )
            fig.add_scattergl(
                x=xs,
                y=ys.astype(np.float32),
                mode="lines",
                line={"color": STATE_COLOURS[state], "width": 9},
                name=label,
                legendgroup=group,
                showlegend=False,
                meta=label,
                hovertemplate=(
                    "%{meta}<br>" + STATE_LABELS[state] + " · %{x:.3f} ms<extra></extra>"
                ),
                connectgaps=False,
            )


def _legend_entry(fig: go.Figure, name: str, colour: str, group: str, symbol: str) -> None:
    """A legend entry (for traces that have none of their own); draws nothing."""
    fig.add_scatter(
        x=[None],
        y=[None],
        mode="markers",
        marker={
            "symbol": symbol,
            "size": 12,
            "color": colour,
            "line": {"width": 4, "color": colour},
        },
        name=name,
        legendgroup=group,
        showlegend=True,
        hoverinfo="skip",
    )


def _binned_lanes(
    fig: go.Figure, lanes: pl.DataFrame, lane_of: dict[int, int], width: float
) -> None:
    import numpy as np
    import polars as pl

    n = len(lane_of)
    buckets = int(lanes["bucket"].max()) + 1 if lanes.height else 1
    x_edges = np.arange(buckets + 1) * width
    for state in STATES:
        part = lanes.filter(pl.col("state") == state)
        if part.is_empty():
            continue
        off = STRIP_Y[state]
        # Rows alternate a strip and the gap up to the next lane's strip.
        y_edges = np.array([i + off + d for i in range(n) for d in (-STRIP_HALF, STRIP_HALF)])
        z = np.full((2 * n - 1, buckets), np.nan)
        rows = np.array([2 * lane_of[c] for c in part["cpu"].to_list()], dtype=int)
        z[rows, part["bucket"].to_numpy()] = part["share"].to_numpy()
        colour = STATE_COLOURS[state]
        on_cpu = state in ("kvm_run", "user")
        fig.add_heatmap(
            x=x_edges,
            y=y_edges,
            z=z.astype(np.float32),
            # Scaled to the state's busiest bucket, from a light tint: a state
            # that takes 1 % of every bucket is still seen (hover: the share).
            zmin=0.0,
            zmax=max(float(np.nanmax(z)), 1e-9),
            zsmooth=False,
            showscale=False,
            hoverongaps=False,
            colorscale=[[0.0, _tint(colour, 0.12)], [1.0, colour]],
            name=STATE_LABELS[state],
            hovertemplate=(
                "%{x:.3f} ms: " + STATE_LABELS[state] + " "
                + ("%{z:.0%} of the bucket" if on_cpu else "%{z:.2f} threads on average")
                + "<extra></extra>"
            ),
        )  # fmt: skip
        # heatmaps have no legend entry of their own
        _legend_entry(fig, STATE_LABELS[state], colour, f"state-{state}", "square")


def _tint(colour: str, alpha: float) -> str:
    """``#rrggbb`` as ``rgba(r,g,b,alpha)``."""
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _op_symbol(op: str) -> str:
    return "triangle-up" if op == "save" else "triangle-down"


def _exact_ops(fig: go.Figure, ops: pl.DataFrame, lane_of: dict[int, int], policy: str) -> None:
    # A trace per op, context and need, so only the trigger varies per point.
    import numpy as np
    import polars as pl

    for redundant in (False, True):
        for op, context in OP_CELLS:
            part = ops.filter(
                (pl.col("redundant") == redundant)
                & (pl.col("op") == op)
                & (pl.col("context") == context)
            )
            if part.is_empty():
                continue
            need = "redundant" if redundant else "needed"
            y = np.array([lane_of.get(c, 0) for c in part["cpu"].to_list()], dtype=np.float32)
            fig.add_scattergl(
                x=part["t_ms"].to_numpy(),
                y=y + np.float32(OPS_Y[redundant]),
                mode="markers",
                marker={
                    "symbol": _op_symbol(op),
                    "size": 8,
                    "color": REDUNDANT_COLOUR if redundant else OP_COLOURS[(op, context)],
                    "line": {"width": 0},
                },
                name=f"{op} {context}" + (" (redundant)" if redundant else ""),
                legendgroup=f"ops-{op}-{context}-{need}",
                meta=plotly_text(policy),
                text=[plotly_text(t) for t in part["trigger"].to_list()],
                customdata=part.select("pid", "cost_ns").to_numpy().astype(np.float32),
                hovertemplate=(
                    f"%{{meta}}: {op} {context} ({need}) at %{{text}}<br>tid %{{customdata[0]:.0f}}"
                    " · %{customdata[1]:.1f} ns · %{x:.6f} ms<extra></extra>"
                ),
            )


def _binned_ops(
    fig: go.Figure, ops: pl.DataFrame, lane_of: dict[int, int], policy: str, width: float
) -> None:
    import numpy as np

    needed = (ops["ops"] - ops["redundant_ops"]).to_numpy()
    redundant = ops["redundant_ops"].to_numpy()
    peak = max(int(needed.max()) if len(needed) else 1, int(redundant.max()) if len(needed) else 1)
    x = ops["start_ms"].to_numpy() + width / 2
    lane = np.array([lane_of.get(c, 0) for c in ops["cpu"].to_list()], dtype=float)
    for counts, need, colour, shift in (
        (needed, "needed", NEEDED_OPS_COLOUR, OPS_Y[False]),
        (redundant, "redundant", REDUNDANT_COLOUR, OPS_Y[True]),
    ):
        keep = counts > 0
        fig.add_scattergl(
            x=x[keep],
            y=lane[keep] + shift,
            mode="markers",
            marker={
                "symbol": "diamond",
                "size": 3 + 11 * np.sqrt(counts[keep] / max(peak, 1)),
                "color": colour,
                "line": {"width": 0},
            },
            name=f"{need} operations",
            legendgroup=f"ops-{need}",
            meta=plotly_text(policy),
            customdata=counts[keep],
            hovertemplate=(
                f"%{{meta}}: %{{customdata:,}} {need} operations in the {width:g} ms"
                " from %{x:.3f} ms (bucket centre)<extra></extra>"
            ),
        )


def count_marks(fig: go.Figure) -> int:
    """Marks a figure draws: points of scatter traces (not the gaps between
    segments; a segment's two ends count once), bars, and heatmap cells with a value."""
    import numpy as np

    total = 0
    for trace in fig.data:
        kind = trace.type
        if kind in ("scatter", "scattergl"):
            x = np.asarray(trace.x if trace.x is not None else [], dtype=float)
            if len(x) and np.isnan(x).any() and trace.mode == "lines":
                total += int(np.count_nonzero(~np.isnan(x))) // 2
            else:
                total += int(np.count_nonzero(~np.isnan(x))) if len(x) else 0
        elif kind == "bar":
            total += len(trace.y if trace.y is not None else [])
        elif kind == "heatmap":
            z = np.asarray(trace.z, dtype=float)
            total += int(np.count_nonzero(~np.isnan(z)))
    return total
