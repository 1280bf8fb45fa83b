"""Over long fixed-seed runs the model's observed rates match its parameters.

Tolerances (docs/model.md, "Rates"): a Poisson stream's count within four
standard deviations of its mean (relative 4/sqrt(N) for N expected events);
the deterministic ones (timer ticks, timeslices) within 2%; the ping-pong
round trip within 3% of its closed form; shares of CPU time within 10% each
and 5% on average.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from pipeline.model.api import generate
from pipeline.model.distributions import generators
from pipeline.model.schedule import R_EXIT, R_SWITCH, ROLE_HOST, ROLE_KWORKER, inner_exits


def guest_seconds(sched) -> np.ndarray:
    """Seconds each task spent in the guest (its guest stretches)."""
    g = np.zeros(len(sched.tasks))
    np.add.at(g, sched.seg_task, sched.seg_end - sched.seg_start)
    return g / 1e9


def run_seconds(sched) -> np.ndarray:
    """Seconds each task was current on a CPU (from the context switches)."""
    run = np.zeros(len(sched.tasks))
    since: dict[int, int] = {}
    sw = np.flatnonzero(sched.kind == R_SWITCH)
    for t, prev, nxt in zip(sched.ts[sw], sched.a[sw], sched.b[sw], strict=True):
        if prev in since:
            run[prev] += t - since.pop(prev)
        since[nxt] = t
    return run / 1e9


@functools.cache
def io_heavy():
    return generate("io-heavy", seed=21, duration_ms=1000)


@pytest.mark.parametrize(
    ("stat", "param"),
    [("io_exits", "io_hz"), ("mmio_exits", "mmio_hz"), ("notifies", "notify_hz"),
     ("ipis", "ipi_hz")],
)  # fmt: skip
def test_exit_rates_per_second_of_guest_time(stat, param):
    m = io_heavy()
    guest = guest_seconds(m.schedule).sum()
    assert guest > 3.0  # 4 busy vCPUs for a second, less their exits and preemptions
    count = sum(st[stat] for st in m.schedule.stats.values())
    expected = m.values[param] * guest
    assert count == pytest.approx(expected, rel=4 / expected**0.5)


def test_in_kernel_exit_rate():
    m = io_heavy()
    inner = inner_exits(m.schedule, m.values["exit_hz"], m.values["exit_us"],
                        generators(m.seed)[1])  # fmt: skip
    expected = m.values["exit_hz"] * guest_seconds(m.schedule).sum()
    assert (inner["kind"] == R_EXIT).sum() == pytest.approx(expected, rel=4 / expected**0.5)


def test_in_kernel_exit_handling_time():
    m = io_heavy()
    inner = inner_exits(m.schedule, m.values["exit_hz"], m.values["exit_us"],
                        generators(m.seed)[1])  # fmt: skip
    n = int((inner["kind"] == R_EXIT).sum())
    exits, entries = inner["ts"][:n], inner["ts"][n:]
    assert len(entries) == n  # none cut by the end here
    # uniform in 0.5..1.5 exit_us: the mean is exit_us
    assert (entries - exits).mean() / 1000 == pytest.approx(m.values["exit_us"], rel=0.02)


def test_halts_follow_the_guest_timer():
    """Mostly idle guests halt once per tick: 500 Hz -> 500 halts a second, each blocking."""
    m = generate("idle", seed=3, duration_ms=2000, params=["timer_hz=500", "timer_hz_max=0"])
    for st in m.schedule.stats.values():
        assert st["halts"] / 2.0 == pytest.approx(500, rel=0.02)
        assert st["blocks"] / 2.0 == pytest.approx(500, rel=0.02)


def test_timeslices_on_an_overcommitted_host():
    """3 CPU-bound vCPUs per CPU: a preemption per CPU per 3 ms timeslice, a third each."""
    quiet = ["kthread_hz=0", "io_hz=0", "mmio_hz=0", "notify_hz=0", "ipi_hz=0", "signal_hz=0",
             "vmm_main_hz=0"]  # fmt: skip
    m = generate("overcommit", seed=4, duration_ms=1000, params=quiet)
    s = m.schedule
    preemptions = sum(st["preemptions"] for st in s.stats.values())
    assert preemptions == pytest.approx(4 * 1000 / 3.0, rel=0.02)
    guest = guest_seconds(s)[s.vcpu_tasks()]
    assert guest.sum() == pytest.approx(4.0, rel=0.01)  # the CPUs never idle
    assert guest.mean() == pytest.approx(1 / 3, rel=0.01)
    assert guest.min() > 0.8 / 3 and guest.max() < 1.2 / 3  # load balancing keeps shares even


def test_host_process_duty_cycle():
    """Bursts of 500 us every 5 ms: each process runs 10% of the time on a quiet host."""
    m = generate("idle", seed=5, duration_ms=8000,
                 params=["host_tasks=4", "host_busy_us=500", "host_sleep_us=4500"])  # fmt: skip
    run = run_seconds(m.schedule)
    hosts = [i for i, t in enumerate(m.schedule.tasks) if t.role == ROLE_HOST]
    assert len(hosts) == 4
    share = run[hosts] / 8.0
    assert share == pytest.approx([0.10] * 4, rel=0.10)
    assert share.mean() == pytest.approx(0.10, rel=0.05)


def test_kworker_wakeups():
    m = generate("idle", seed=6, duration_ms=5000)
    s = m.schedule
    sw = s.kind == R_SWITCH
    kworkers = [i for i, t in enumerate(s.tasks) if t.role == ROLE_KWORKER]
    wakes = sum(int((s.b[sw] == k).sum()) for k in kworkers)
    expected = m.values["kthread_hz"] * 5.0 * len(kworkers)
    assert wakes == pytest.approx(expected, rel=4 / expected**0.5)


@pytest.mark.parametrize("seed", [1, 2])
def test_ping_pong_round_trip(seed):
    """Half a round trip: the partner's wake latency, its entry, its work (lat distributions,
    means 4, 1 and 4.5 us); so 2 x 9.5 = 19 us per round trip ("~20 us")."""
    m = generate("pingpong", seed=seed, duration_ms=300)
    v = m.values
    half_us = v["wake_latency_us"] + v["entry_us"] + v["guest_busy_us"]
    trips = m.schedule.host_stats["pingpong_round_trips"]
    assert m.duration_ns / trips / 1000 == pytest.approx(2 * half_us, rel=0.03)
    # and every halt blocks: two blocking halts per round trip
    blocks = sum(st["blocks"] for st in m.schedule.stats.values())
    assert blocks / trips == pytest.approx(2.0, rel=0.01)
