"""Figures of the migration-safety audit: pure builders ``DataFrame -> go.Figure``.

Both take the rows of the ``fpu_state_access`` query (queries/vcpu/
fpu_state_access.sql), so a dashboard section needs nothing but that query:

* :func:`calls_timeline`: one lane per vCPU thread, each FPU-state ioctl a
  bar from its entry to its return, coloured by what happened (returned at
  once, waited for KVM_RUN, violation, unknown vCPU); optionally the vCPU's
  KVM_RUN stretches behind them (the ``thread_states`` query's ``kvm_run``
  rows), so a wait is seen ending where the KVM_RUN does;
* :func:`wait_histogram`: the distribution of waits (log-spaced buckets),
  one series per kind of issuing thread, with the calls that did not wait
  counted in the title.

Trace text (task names, source ids) reaches plotly only through ``text`` and
``customdata`` after :func:`dashboards.text.plotly_text`; hover templates are
constant.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from dashboards.text import plotly_text

if TYPE_CHECKING:
    import plotly.graph_objects as go
    import polars as pl

#: (key, legend name, colour) of each kind of call, in drawing order.
KINDS = (
    ("at_once", "returned at once", "#4c78a8"),
    ("waited", "waited for KVM_RUN to return", "#f58518"),
    ("violation", "violation: inside KVM_RUN", "#e45756"),
    ("unknown", "vCPU unknown", "#9d9d9d"),
)
KIND_NAMES = {k: name for k, name, _ in KINDS}
#: Issuers of the wait histogram: (key, legend name, colour).
ISSUERS = (
    ("vcpu_thread", "the vCPU thread itself", "#72b7b2"),
    ("other_vcpu", "another vCPU thread", "#b279a2"),
    ("other_thread", "another thread (migration, VMM)", "#f58518"),
)
_RUN_COLOUR = "rgba(44, 160, 44, 0.25)"  # KVM_RUN stretches behind the calls


def call_kind(row: dict[str, Any]) -> str:
    """at_once, waited, violation or unknown: how one call is drawn."""
    if row.get("violation"):
        return "violation"
    if row.get("vcpu_pid") is None:
        return "unknown"
    return "waited" if (row.get("wait_us") or 0) > 0 else "at_once"


def _lane(row: dict[str, Any], multi: bool) -> str:
    if row.get("vcpu_pid") is None:
        name = f"unknown vCPU · fd {row.get('fd')}"
    else:
        name = f"{plotly_text(row.get('vcpu_comm') or '?')} · {row['vcpu_pid']}"
    return f"{plotly_text(row['source'])} · {name}" if multi else name


def calls_timeline(calls: pl.DataFrame, states: pl.DataFrame | None = None) -> go.Figure:
    """FPU-state ioctls on their vCPU's lane, entry to return, over the trace's time.

    ``calls``: rows of the ``fpu_state_access`` query.  ``states``: rows of
    the ``thread_states`` query (optional); their ``kvm_run`` stretches of
    the same vCPU threads are drawn behind the calls.
    """
    import plotly.graph_objects as go

    rows = calls.to_dicts()
    multi = len({r["source"] for r in rows}) > 1
    lanes = sorted(
        {(r["source"], r["vcpu_pid"] is None, r["vcpu_pid"] or -1, _lane(r, multi)) for r in rows}
    )
    order = [lane for *_, lane in lanes]
    fig = go.Figure()
    if states is not None and states.height and rows:
        _kvm_run_bars(fig, states, rows, multi)
    for key, name, colour in KINDS:
        mine = [r for r in rows if call_kind(r) == key and r.get("exit_ms") is not None]
        if not mine:
            continue
        xs: list[float | None] = []
        ys: list[str | None] = []
        for r in mine:
            lane = _lane(r, multi)
            xs += [r["enter_ms"], r["exit_ms"], None]
            ys += [lane, lane, None]
        fig.add_trace(
            go.Scatter(
                x=xs, y=ys, mode="lines", line={"color": colour, "width": 6}, name=name,
                legendgroup=key, hoverinfo="skip",
            )
        )  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=[r["exit_ms"] for r in mine],
                y=[_lane(r, multi) for r in mine],
                mode="markers",
                marker={"color": colour, "size": 7, "symbol": "line-ns-open"},
                name=name,
                legendgroup=key,
                showlegend=False,
                customdata=[_hover(r) for r in mine],
                hovertemplate="%{customdata}<extra></extra>",
            )
        )
    fig.update_yaxes(categoryorder="array", categoryarray=order[::-1], title=None)
    fig.update_xaxes(title="ms since the trace's first event")
    n_bad = sum(1 for r in rows if r.get("violation"))
    fig.update_layout(
        title=f"FPU-state ioctls on their vCPU's timeline ({len(rows):,} calls,"
        f" {n_bad:,} violations)",
        template="plotly_white",
        height=max(260, 70 + 38 * len(order)),
        legend={"orientation": "h", "y": -0.2},
        margin={"l": 10, "r": 10, "t": 60, "b": 60},
    )
    return fig


def _hover(r: dict[str, Any]) -> str:
    wait = f"waited {r['wait_us']:,.1f} µs" if (r.get("wait_us") or 0) > 0 else "no wait"
    lines = f"lines {r['enter_line']}-{r['exit_line']}"
    head = f"{plotly_text(r['cmd'])} by {plotly_text(r['comm'])} · {r['pid']} (fd {r['fd']})"
    verdict = plotly_text(r.get("reason") or KIND_NAMES[call_kind(r)])
    return f"{head}<br>{lines}, {r['duration_us']:,.1f} µs, {wait}<br>{verdict}"


def _kvm_run_bars(fig: go.Figure, states: pl.DataFrame, rows: list[dict], multi: bool) -> None:
    import plotly.graph_objects as go

    lane_of = {(r["source"], r["vcpu_pid"]): _lane(r, multi) for r in rows if r["vcpu_pid"]}
    runs = states.filter(states["state"] == "kvm_run")
    xs: list[float | None] = []
    ys: list[str | None] = []
    for source, pid, start, end in runs.select("source", "pid", "start_ms", "end_ms").iter_rows():
        lane = lane_of.get((source, pid))
        if lane is not None:
            xs += [start, end, None]
            ys += [lane, lane, None]
    if xs:
        fig.add_trace(
            go.Scatter(
                x=xs, y=ys, mode="lines", line={"color": _RUN_COLOUR, "width": 18},
                name="vCPU inside KVM_RUN", hoverinfo="skip",
            )
        )  # fmt: skip


def wait_buckets(waits_us: list[float]) -> list[tuple[float, float, int]]:
    """(lo, hi, count) per log2 bucket of the positive waits, from 1 µs up (smaller: [0, 1))."""
    counts: dict[int, int] = {}
    for w in waits_us:
        k = max(math.floor(math.log2(w)) + 1, 0) if w >= 1 else 0
        counts[k] = counts.get(k, 0) + 1
    if not counts:
        return []
    return [
        (0.0 if k == 0 else 2.0 ** (k - 1), 2.0**k, counts.get(k, 0))
        for k in range(min(counts), max(counts) + 1)
    ]


def _bucket_label(lo: float, hi: float) -> str:
    def short(us: float) -> str:
        return f"{us / 1000:.3g} ms" if us >= 1000 else f"{us:g} µs"

    return f"[{short(lo)}, {short(hi)})"


def wait_histogram(calls: pl.DataFrame) -> go.Figure:
    """How long FPU-state ioctls waited for their vCPU's KVM_RUN (log2 µs buckets, per issuer)."""
    import plotly.graph_objects as go

    done = calls.filter(calls["exit_ms"].is_not_null())
    waits = done.filter(done["wait_us"] > 0)
    all_buckets = wait_buckets(waits["wait_us"].to_list())
    labels = [_bucket_label(lo, hi) for lo, hi, _ in all_buckets]
    fig = go.Figure()
    for key, name, colour in ISSUERS:
        mine = waits.filter(waits["issuer"] == key)["wait_us"].to_list()
        if not mine:
            continue
        counts = {(lo, hi): n for lo, hi, n in wait_buckets(mine)}
        fig.add_bar(
            x=labels,
            y=[counts.get((lo, hi), 0) for lo, hi, _ in all_buckets],
            name=name,
            marker_color=colour,
            hovertemplate="%{x}: %{y:,} calls<extra>" + name + "</extra>",
        )
    at_once = done.height - waits.height
    fig.update_layout(
        title=f"Waits for KVM_RUN to return ({waits.height:,} calls waited,"
        f" {at_once:,} returned at once)",
        barmode="stack",
        template="plotly_white",
        height=380,
        xaxis_title="wait (log2 buckets)",
        yaxis_title="calls",
        legend={"orientation": "h", "y": -0.3},
    )
    return fig
