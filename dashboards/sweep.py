"""Sweeps: what vcpu_run and deferred save over legacy, as a heatmap over the swept parameters.

A sweep dataset holds one source per point of a parameter grid (the built-in
model, ``pipeline/model``).  :func:`sweep_points` finds each source's swept
values in the manifest and joins them with the ``savings`` query;
:func:`sweep_heatmap` draws any frame of that shape:

==========================  ==============================================
column                      meaning
==========================  ==============================================
``source``                  source id (one point of the sweep)
one column per parameter    its value at the point, as text
``policy``                  the policy compared with legacy
``ops_saved_pct``           100 * (legacy's operations - policy's) / legacy's
``ops_saved_per_s``         operations saved per second of trace
``cost_saved_us_per_s``     CPU time saved, µs per second of trace
==========================  ==============================================

Rows with equal parameters (seeds of one point) are averaged.  The first
parameter is the x axis, the second the y axis, and every combination of
the others a panel of its own.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dashboards.palette import policy_rank
from dashboards.text import plotly_text

if TYPE_CHECKING:
    import plotly.graph_objects as go
    import polars as pl

#: Metric columns of a sweep frame, with the title the dropdown shows.
METRICS = {
    "ops_saved_pct": "operations saved, % of legacy's",
    "ops_saved_per_s": "operations saved per second",
    "cost_saved_us_per_s": "CPU time saved, µs per second",
}
#: Panels drawn at most; further combinations of the extra parameters are averaged in.
MAX_PANELS = 12
#: Keys of a simulated source's `model` entry that are swept like parameters.
MODEL_KEYS = ("preset",)


def _as_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def swept_keys(points: Sequence[dict[str, Any]]) -> list[str]:
    """The parameters a set of points varies, less those the others determine.

    A model's derived parameters change with the swept ones (more VMs at a
    higher overcommit); keeping only keys not determined by the keys kept
    so far, fewest distinct values first, leaves the grid's own axes.
    """
    keys = list(dict.fromkeys(k for p in points for k in p))
    values = {k: [_as_text(p.get(k)) for p in points] for k in keys}
    varying = [k for k in keys if len(set(values[k])) > 1]
    varying.sort(key=lambda k: (len(set(values[k])), k))
    kept: list[str] = []
    for key in varying:
        seen: dict[tuple[str, ...], str] = {}
        determined = True
        for i, value in enumerate(values[key]):
            at = tuple(values[k][i] for k in kept)
            if seen.setdefault(at, value) != value:
                determined = False
                break
        if not determined:
            kept.append(key)
    return kept


def sweep_points(
    manifest: dict[str, Any], savings: pl.DataFrame
) -> tuple[pl.DataFrame, list[str]] | None:
    """(frame, parameters) of a sweep dataset, or None when the dataset is not a sweep.

    A source's swept values are its manifest entry's ``sweep`` object when
    it has one (the swept parameters and their values); otherwise, for a
    simulated source, its ``model.params`` (all parameters) plus ``preset``,
    of which :func:`swept_keys` keeps those that vary.  ``savings``: the
    savings query's rows (baseline legacy).
    """
    import polars as pl

    found: list[tuple[str, dict[str, Any]]] = []
    explicit = True
    for source in manifest.get("sources", []):
        given = source.get("sweep")
        if isinstance(given, dict):
            found.append((source["id"], given))
            continue
        model = source.get("model")
        if isinstance(model, dict) and isinstance(model.get("params"), dict):
            explicit = False
            extra = {k: model[k] for k in MODEL_KEYS if k in model}
            found.append((source["id"], {**extra, **model["params"]}))
    if len(found) < 2:
        return None
    if explicit:
        params = list(dict.fromkeys(k for _, p in found for k in p))
    else:
        params = swept_keys([p for _, p in found])
    if not params:
        return None
    frame = pl.DataFrame(
        [{"source": sid, **{k: _as_text(p.get(k)) for k in params}} for sid, p in found],
        schema={"source": pl.String, **dict.fromkeys(params, pl.String)},
    )
    joined = frame.join(
        savings.select("source", "policy", *METRICS),
        on="source",
        how="inner",
        maintain_order="left",
    )
    return (joined, params) if joined.height else None


def _ordered(values: list[str]) -> list[str]:
    """Distinct values, numerically when they all are numbers, else as first seen."""
    distinct = list(dict.fromkeys(values))
    try:
        return sorted(distinct, key=float)
    except ValueError:
        return distinct


def sweep_heatmap(points: pl.DataFrame, params: Sequence[str]) -> go.Figure:
    """Heatmaps of the savings over the first two ``params``, a panel per value of the rest.

    A dropdown picks the policy and the metric (see the module docstring for
    the frame's shape).
    """
    import numpy as np
    import polars as pl
    from plotly.subplots import make_subplots

    if not params:
        raise ValueError("a sweep heatmap needs at least one parameter")
    px, py = params[0], (params[1] if len(params) > 1 else None)
    rest = list(params[2:])
    xs = _ordered(points[px].to_list())
    ys = _ordered(points[py].to_list()) if py else ["all"]
    combos = list(itertools.product(*(_ordered(points[k].to_list()) for k in rest)))
    averaged = len(combos) > MAX_PANELS
    if averaged:
        combos, rest = [()], []
    policies = sorted(points["policy"].unique().to_list(), key=policy_rank)
    metrics = [m for m in METRICS if m in points.columns]
    cols = min(len(combos), 3)
    titles = [
        ", ".join(f"{plotly_text(k)}={plotly_text(v)}" for k, v in zip(rest, c, strict=True))
        for c in combos
    ]
    fig = make_subplots(
        rows=math.ceil(len(combos) / cols),
        cols=cols,
        subplot_titles=titles if rest else None,
        horizontal_spacing=0.08,
        vertical_spacing=0.12,
    )
    choices = [(p, m) for p in policies for m in metrics]
    keys = [k for k in (px, py, *rest) if k]
    mean = points.group_by([*keys, "policy"]).agg(pl.col(metrics).mean())
    for n, combo in enumerate(combos):
        part = mean
        for k, v in zip(rest, combo, strict=True):
            part = part.filter(pl.col(k) == v)
        for policy, metric in choices:
            z = np.full((len(ys), len(xs)), np.nan)
            cells = part.filter(pl.col("policy") == policy)
            if averaged:
                cells = cells.group_by([px, *([py] if py else [])]).agg(pl.col(metric).mean())
            for row in cells.iter_rows(named=True):
                y = ys.index(row[py]) if py else 0
                z[y, xs.index(row[px])] = row[metric]
            fig.add_heatmap(
                z=z,
                x=[plotly_text(v) for v in xs],
                y=[plotly_text(v) for v in ys],
                coloraxis="coloraxis",
                texttemplate="%{z:.3~g}",
                name=plotly_text(policy),
                meta=METRICS[metric],
                visible=(policy, metric) == choices[0],
                hovertemplate=(
                    f"{plotly_text(px)}=%{{x}}"
                    + (f", {plotly_text(py)}=%{{y}}" if py else "")
                    + "<br>%{fullData.name}: %{meta} %{z:.4~g}<extra></extra>"
                ),
                row=n // cols + 1,
                col=n % cols + 1,
            )
    per = len(choices)
    buttons = [
        {
            "label": f"{plotly_text(policy)}: {METRICS[metric]}",
            "method": "restyle",
            "args": [{"visible": [i % per == k for i in range(len(fig.data))]}],
        }
        for k, (policy, metric) in enumerate(choices)
    ]
    fig.update_xaxes(title_text=plotly_text(px), type="category")
    fig.update_yaxes(title_text=plotly_text(py) if py else "", type="category")
    fig.update_layout(
        title=(
            "Savings over legacy across the sweep"
            + (" (further parameters averaged: too many panels)" if averaged else "")
        ),
        template="plotly_white",
        coloraxis={"colorscale": "Viridis", "colorbar": {"title": {"text": "saved"}}},
        height=max(360, 300 * math.ceil(len(combos) / cols)),
        margin={"t": 110},
        updatemenus=[
            {
                "type": "dropdown",
                "buttons": buttons,
                "active": 0,
                "x": 0.0,
                "xanchor": "left",
                "y": 1.12,
                "yanchor": "bottom",
            }
        ],
    )
    return fig
