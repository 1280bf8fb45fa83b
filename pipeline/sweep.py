"""Sweep the vCPU model over a parameter grid: simulate, replay, summarise every point.

Each point is one simulation (the built-in model, pipeline.model), written
straight to an `events` table (the fast path), replayed under all three
policies by :func:`pipeline.replay.replay`, and reduced to one row: each
policy's operations per second, and what `vcpu_run` and `deferred` save over
`legacy` in operations per second and in percent of the host's CPU time
(saved cost over duration times CPUs).  Every row also says whether the
replay reproduced the model's ground truth exactly (``exact``).

Ping-pong points (preset ``pingpong``) add the round trip: ``rt_us`` is the
simulated duration over the number of round trips, and ``vcpu_run_saved_rt_pct``
the cost `vcpu_run` saves per round trip as a percent of it.  Closed form
(reference §3.3): legacy does 4 more operations than vcpu_run per halt that
blocks and re-enters the guest, so with two such halts per round trip the
saving is ``8 * cost_per_op / rt``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.model import params as P

#: The grid swept when none is given: overcommit ratio x halt rate x xstate size.
DEFAULT_GRID: dict[str, list[str]] = {
    "overcommit": ["1", "2", "4"],
    "timer_hz": ["250", "1000"],
    "xstate": ["sse", "avx512", "amx"],
}
#: The base the default grid varies (a 4-CPU host whose guests halt between ticks).
DEFAULT_BASE = ("mixed", ("cpus=4", "vcpus_per_vm=2", "guest_busy_us=300", "host_tasks=2"))
#: The reference points: the 2017 ping-pong test, with halts that block and with halt
#: polling catching every wakeup.
PINGPONG_POINTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pingpong", ()),
    ("pingpong", ("halt_poll_us=50",)),
)
POLICIES = ("legacy", "vcpu_run", "deferred")


@dataclass(frozen=True)
class Point:
    """One simulation of the sweep."""

    preset: str
    assignments: tuple[str, ...]  # key=value on top of the preset
    label: dict[str, str]  # the swept values, for the table

    def values(self) -> dict[str, Any]:
        """The full parameter set of this point."""
        return P.resolve(self.preset, self.assignments)


def parse_grid(specs: Iterable[str]) -> dict[str, list[str]]:
    """``KEY=V1,V2,...`` specs -> {key: [values]}; ParamError for bad keys or values."""
    grid: dict[str, list[str]] = {}
    for spec in specs:
        key, raw = P.split_assignment(spec)
        values = [v.strip() for v in raw.split(",") if v.strip()]
        if not values:
            raise P.ParamError(f"--grid {spec!r}: no values")
        for v in values:
            P.parse_value(P.BY_NAME[key], v)  # validate early, with the parameter's message
        grid[key] = values
    return grid


def grid_points(
    preset: str, grid: dict[str, list[str]], assignments: Sequence[str] = ()
) -> list[Point]:
    """The cartesian product of ``grid`` on ``preset`` + ``assignments``, in grid order."""
    P.resolve(preset, assignments)  # validate once
    keys = list(grid)
    points = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        assigned = tuple(assignments) + tuple(f"{k}={v}" for k, v in zip(keys, combo, strict=True))
        points.append(Point(preset, assigned, dict(zip(keys, combo, strict=True))))
    return points


def default_points(include_pingpong: bool = True) -> list[Point]:
    """The default sweep: DEFAULT_GRID on DEFAULT_BASE, then the ping-pong points."""
    base, assigned = DEFAULT_BASE
    points = grid_points(base, DEFAULT_GRID, assigned)
    if include_pingpong:
        points += pingpong_points()
    return points


def pingpong_points() -> list[Point]:
    """The ping-pong reference points."""
    return [
        Point(preset, extra, {"preset": preset, **dict(a.split("=", 1) for a in extra)})
        for preset, extra in PINGPONG_POINTS
    ]


def run_point(
    point: Point,
    *,
    seed: int = 0,
    duration_ms: float = 200.0,
    recorded: str = "deferred",
    kernel_era: str | None = None,
) -> dict[str, Any]:
    """Simulate, replay and summarise one point (one row of the sweep table)."""
    import polars as pl

    from pipeline.cost import CostModel
    from pipeline.model.api import generate
    from pipeline.replay import replay

    values = point.values()
    model = generate(point.preset, seed=seed, duration_ms=duration_ms, policy=recorded,
                     kernel_era=kernel_era, values=values)  # fmt: skip
    events = model.events(args=False)
    cost_model = CostModel(cpu_profile=values["xstate"])
    result = replay(events, cost_model=cost_model)
    ops = result.fpu_ops
    per = {
        row["policy"]: row
        for row in ops.group_by("policy")
        .agg(ops=pl.len(), cost_ns=pl.col("cost_ns").sum(), redundant=pl.col("redundant").sum())
        .iter_rows(named=True)
    }
    truth = model.truth()
    seconds = model.duration_ns / 1e9
    cpus = values["cpus"]
    n_vcpus = len(truth["vcpus"])
    row: dict[str, Any] = {**point.label}
    row["vcpus"] = n_vcpus
    row["cpus"] = cpus
    row["blocks_per_s"] = round(sum(v["blocks"] for v in truth["vcpus"]) / seconds, 1)
    row["preempts_per_s"] = round(sum(v["preemptions"] for v in truth["vcpus"]) / seconds, 1)
    for name in POLICIES:
        row[f"{name}_ops_per_s"] = round(per.get(name, {}).get("ops", 0) / seconds, 1)
    legacy_cost = per.get("legacy", {}).get("cost_ns", 0.0)
    legacy_ops = per.get("legacy", {}).get("ops", 0)
    for name in ("vcpu_run", "deferred"):
        saved_ops = legacy_ops - per.get(name, {}).get("ops", 0)
        saved_ns = legacy_cost - per.get(name, {}).get("cost_ns", 0.0)
        row[f"{name}_saved_ops_per_s"] = round(saved_ops / seconds, 1)
        row[f"{name}_saved_cpu_pct"] = round(100.0 * saved_ns / (model.duration_ns * cpus), 4)
    trips = truth["host"].get("pingpong_round_trips")
    if trips:
        rt_ns = model.duration_ns / trips
        saved_ns = legacy_cost - per.get("vcpu_run", {}).get("cost_ns", 0.0)
        row["rt_us"] = round(rt_ns / 1000.0, 3)
        row["vcpu_run_saved_ns_per_rt"] = round(saved_ns / trips, 2)
        row["vcpu_run_saved_rt_pct"] = round(100.0 * saved_ns / trips / rt_ns, 4)
    row["exact"] = _exact(ops, truth)
    return row


def _exact(ops, truth: dict[str, Any]) -> bool:
    """Whether the replay's per-thread op and redundant counts equal the model's truth."""
    import polars as pl

    got = {
        (r["policy"], r["pid"]): (r["ops"], r["redundant"])
        for r in ops.group_by("policy", "pid")
        .agg(ops=pl.len(), redundant=pl.col("redundant").sum())
        .iter_rows(named=True)
    }
    for v in truth["vcpus"]:
        for name in POLICIES:
            want = (v["ops"][name]["ops"], v["ops"][name]["redundant"])
            if got.get((name, v["pid"]), (0, 0)) != want:
                return False
    return True


def run_sweep(
    points: Sequence[Point],
    *,
    seed: int = 0,
    duration_ms: float = 200.0,
    recorded: str = "deferred",
    kernel_era: str | None = None,
    progress: Any = None,
) -> list[dict[str, Any]]:
    """One row per point, with the union of the points' columns (missing ones None)."""
    rows = []
    for i, point in enumerate(points):
        if progress:
            progress(i, len(points), point)
        rows.append(run_point(point, seed=seed, duration_ms=duration_ms, recorded=recorded,
                              kernel_era=kernel_era))  # fmt: skip
    columns = list(dict.fromkeys(k for r in rows for k in r))
    # "exact" last, the ping-pong columns just before it
    columns = [c for c in columns if c != "exact"] + ["exact"]
    return [{c: r.get(c) for c in columns} for r in rows]
