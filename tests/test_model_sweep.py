"""The sweep: grid parsing, and the ping-pong point against the hand computation."""

from __future__ import annotations

import functools

import pytest

from pipeline.model import params as P
from pipeline.model.api import generate
from pipeline.sweep import Point, default_points, grid_points, parse_grid, run_point

#: One AVX-512 save or restore with the default cost model: 20 ns + 0.03 ns/byte x 2688 bytes.
COST_AVX512_NS = 20 + 0.03 * 2688  # 100.64


@functools.cache
def pingpong_row(extra: tuple[str, ...] = ()):
    point = Point("pingpong", extra, {"preset": "pingpong"})
    row = run_point(point, seed=9, duration_ms=60)
    truth = generate("pingpong", seed=9, duration_ms=60, params=extra).truth()
    return row, truth


def test_ping_pong_saving_matches_the_closed_form():
    """legacy does 4 more operations than vcpu_run per halt that re-enters the guest.

    Every halt of the ping-pong blocks (sched_switch S) and re-enters after
    the partner's IPI, two per round trip; so vcpu_run saves 8 operations of
    100.64 ns per round trip of ~19 us: 805 ns, 4.2% of it.  The trace's end
    catches at most one halt per vCPU between its block and its re-entry,
    which saves 2 operations instead of 4.
    """
    row, truth = pingpong_row()
    assert row["exact"] is True
    trips = truth["host"]["pingpong_round_trips"]
    halts = sum(v["preemptions"] + v["blocks"] for v in truth["vcpus"])
    pending = sum(v["reentry_pending"] for v in truth["vcpus"])
    assert halts / trips == pytest.approx(2.0, rel=0.01)
    saved_ops = 4 * halts - 2 * pending
    rt_ns = 60e6 / trips
    assert row["rt_us"] == pytest.approx(rt_ns / 1000, abs=0.001)
    assert row["vcpu_run_saved_ns_per_rt"] == pytest.approx(
        saved_ops * COST_AVX512_NS / trips, abs=0.01
    )
    assert row["vcpu_run_saved_rt_pct"] == pytest.approx(
        100 * saved_ops * COST_AVX512_NS / trips / rt_ns, abs=1e-4
    )
    # the hand numbers: 8 x 100.64 ns = 805.12 ns per round trip of 2 x 9.5 us
    assert row["vcpu_run_saved_ns_per_rt"] == pytest.approx(8 * COST_AVX512_NS, rel=0.01)
    assert row["vcpu_run_saved_rt_pct"] == pytest.approx(100 * 805.12 / 19000, rel=0.03)
    # and as a share of the host's CPU time (2 CPUs): half of that
    half = row["vcpu_run_saved_rt_pct"] / 2
    assert row["vcpu_run_saved_cpu_pct"] == pytest.approx(half, rel=0.01)


def test_ping_pong_with_halt_polling_saves_nothing():
    """The 2017 observation: a 200 us poll window (here 50) catches every ~10 us wakeup,
    so no halt blocks, no context switch happens and the two policies do the same."""
    row, truth = pingpong_row(("halt_poll_us=50",))
    assert sum(v["poll_wakes"] for v in truth["vcpus"]) > 1000
    assert row["blocks_per_s"] < 100
    assert row["vcpu_run_saved_rt_pct"] < 0.01
    assert row["exact"] is True


def test_grid_points_are_the_cartesian_product():
    grid = parse_grid(["overcommit=1,2", "xstate=sse, amx"])
    points = grid_points("mixed", grid, ["cpus=2"])
    assert [p.label for p in points] == [
        {"overcommit": "1", "xstate": "sse"}, {"overcommit": "1", "xstate": "amx"},
        {"overcommit": "2", "xstate": "sse"}, {"overcommit": "2", "xstate": "amx"},
    ]  # fmt: skip
    values = points[3].values()
    assert (values["cpus"], values["overcommit"], values["xstate"]) == (2, 2.0, "amx")


def test_default_sweep_is_overcommit_by_halt_rate_by_xstate_plus_ping_pong():
    points = default_points()
    assert len(points) == 3 * 2 * 3 + 2
    assert {p.label["xstate"] for p in points[:-2]} == {"sse", "avx512", "amx"}
    assert [p.preset for p in points[-2:]] == ["pingpong", "pingpong"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("overcommit=", "--grid 'overcommit=': no values"),
        ("cpus=1,x", "cpus='x': expected an integer"),
        ("speed=1,2", "unknown parameter 'speed'"),
    ],
)
def test_bad_grid(spec, message):
    with pytest.raises(P.ParamError, match=message.replace("(", r"\(")):
        parse_grid([spec])


def test_where_the_patch_matters():
    """Savings grow with sched-outs inside KVM_RUN and with the xstate size."""
    base = ("cpus=2", "vcpus_per_vm=2", "guest_busy_us=300", "host_tasks=0")
    rows = {
        key: run_point(Point("mixed", (*base, *extra), {}), seed=1, duration_ms=30)
        for key, extra in {
            "sse": ("overcommit=1", "xstate=sse"),
            "amx": ("overcommit=1", "xstate=amx"),
            "amx x4": ("overcommit=4", "xstate=amx"),
        }.items()
    }
    assert all(r["exact"] for r in rows.values())
    # same schedule, 11008 vs 576 bytes per op: the saved CPU share scales with the cost
    ratio = (20 + 0.03 * 11008) / (20 + 0.03 * 576)
    assert rows["amx"]["vcpu_run_saved_ops_per_s"] == rows["sse"]["vcpu_run_saved_ops_per_s"]
    assert rows["amx"]["vcpu_run_saved_cpu_pct"] == pytest.approx(
        rows["sse"]["vcpu_run_saved_cpu_pct"] * ratio, rel=0.01
    )
    # more vCPUs per CPU: more halts and preemptions inside KVM_RUN, more saved
    assert rows["amx x4"]["vcpu_run_saved_ops_per_s"] > 2 * rows["amx"]["vcpu_run_saved_ops_per_s"]
