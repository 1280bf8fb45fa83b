"""The model is deterministic, its schedule is independent of what is logged, and its
ground truth obeys the closed forms of reference §3.3."""

from __future__ import annotations

import json

import pytest

from pipeline.model.api import generate


def _outputs(seed: int, tmp, name: str) -> dict[str, bytes]:
    m = generate("mixed", seed=seed, duration_ms=20)
    out = {}
    for fmt in ("tracefs", "perf-script"):
        path = tmp / f"{name}.{fmt}"
        m.write(path, fmt)
        out[fmt] = path.read_bytes()
        out[fmt + ".truth"] = (tmp / f"{name}.{fmt}.truth.json").read_bytes()
    return out


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = _outputs(7, tmp_path, "a")
    b = _outputs(7, tmp_path, "b")
    c = _outputs(8, tmp_path, "c")
    assert a == b
    for key in a:
        assert a[key] != c[key], key


def test_same_seed_same_dataset_rows():
    a = generate("io-heavy", seed=3, duration_ms=10).events()
    b = generate("io-heavy", seed=3, duration_ms=10).events()
    assert a.equals(b)


def test_logging_options_do_not_change_the_schedule():
    """Trace content is a view of the run: switching events off changes no truth count."""
    full = generate("mixed", seed=2, duration_ms=30).truth()
    quiet = generate(
        "mixed", seed=2, duration_ms=30,
        params=["entry_events=0", "fpu_events=0", "ioctl_events=0", "wakeup_events=0"],
    ).truth()  # fmt: skip
    assert quiet["vcpus"] == full["vcpus"]
    assert quiet["trace_lines"] < full["trace_lines"]


def test_the_recording_policy_does_not_change_the_schedule():
    m = generate("overcommit", seed=2, duration_ms=30)
    truths = [m.recorded_as(p).truth() for p in ("legacy", "vcpu_run", "deferred")]
    assert truths[0]["vcpus"] == truths[1]["vcpus"] == truths[2]["vcpus"]


def test_truth_document_has_the_architecture_keys(tmp_path):
    m = generate("pingpong", seed=1, duration_ms=5)
    m.write(tmp_path / "t.txt", "tracefs")
    doc = json.loads((tmp_path / "t.txt.truth.json").read_text())
    assert list(doc)[:6] == ["seed", "preset", "params", "policy", "vcpus", "totals"]
    assert (doc["seed"], doc["preset"], doc["policy"]) == (1, "pingpong", "deferred")
    assert doc["params"]["pingpong"] == 1
    v = doc["vcpus"][0]
    assert list(v)[:6] == ["pid", "comm", "runs", "preemptions", "blocks", "ops"]
    assert v["comm"] == "CPU 0/KVM"
    for policy in ("legacy", "vcpu_run", "deferred"):
        ops = v["ops"][policy]
        assert list(ops) == [
            "ops", "save_user", "restore_user", "save_guest", "restore_guest", "redundant",
        ]  # fmt: skip
        parts = ops["save_user"] + ops["restore_user"] + ops["save_guest"] + ops["restore_guest"]
        assert ops["ops"] == parts


@pytest.mark.parametrize("seed", [1, 2])
def test_ping_pong_obeys_the_closed_forms(seed):
    """Two vCPUs, one KVM_RUN each, idle CPUs: every halt blocks and re-enters.

    Per sched-out inside KVM_RUN that re-enters the guest legacy does
    XS_g, XR_u, XS_u (put + context-switch save) and XS_u, XR_g (load at the
    entry) where vcpu_run does XS_g: 4 more.  One still out when the trace
    ends has done only the first three (legacy) against one: 2 more.  Both
    start the run with XS_u, XR_g, and restore the same k times.  vcpu_run
    never does a redundant operation; legacy's are 3P + k.
    """
    truth = generate("pingpong", seed=seed, duration_ms=30).truth()
    for v in truth["vcpus"]:
        assert v["runs"] == 1
        p = v["preemptions"] + v["blocks"]
        pending = v["reentry_pending"]
        legacy, vcpu_run = v["ops"]["legacy"], v["ops"]["vcpu_run"]
        assert p > 1000
        assert legacy["ops"] - vcpu_run["ops"] == 4 * p - 2 * pending
        assert vcpu_run["save_guest"] == p  # one XS_g per sched-out; the run has not ended
        assert vcpu_run["save_user"] == 1 and vcpu_run["redundant"] == 0
        k = vcpu_run["restore_guest"] - 1  # restores at switch-in beyond the run's first
        # the put's XR_u, then XR_u at invalid switch-ins, on top of the restores the two
        # policies share before KVM_RUN (the thread's first switch-in)
        assert legacy["restore_user"] == vcpu_run["restore_user"] + p + k
        assert legacy["save_user"] == 1 + 2 * p - pending
        # redundant: XR_u and XS_u of each put, the XS_u of each re-entry, XR_u at invalid
        # switch-ins (3P + k); a sched-out still pending has had no re-entry yet
        assert legacy["redundant"] == 3 * p - pending + k


def test_spurious_halt_wakeups_are_what_deferred_saves_over_vcpu_run():
    """Reference §8.2: a vCPU woken in kvm_vcpu_block() without an event is switched in
    and out again with no guest entry.  vcpu_run restores eagerly if needed and saves the
    guest again (redundant); deferred does nothing (TIF set, no save).  On a 1-CPU host
    whose only FPU user is the vCPU the registers stay valid, so vcpu_run does exactly one
    extra XS_g per spurious wakeup; legacy, which put the guest at the first block, does
    one XS_u there, so it is level with vcpu_run on those and 4 ahead per real halt."""
    quiet = ["cpus=1", "vms=1", "vcpus_per_vm=1", "host_tasks=0", "vmm_main_hz=0",
             "notify_hz=0", "spurious_hz=500"]  # fmt: skip
    (v,) = generate("idle", seed=3, duration_ms=300, params=quiet).truth()["vcpus"]
    spurious = v["spurious_wakes"]
    assert spurious > 100
    legacy, vcpu_run, deferred = (v["ops"][p] for p in ("legacy", "vcpu_run", "deferred"))
    assert vcpu_run["ops"] - deferred["ops"] == spurious
    assert vcpu_run["save_guest"] - deferred["save_guest"] == spurious
    assert (vcpu_run["redundant"], deferred["redundant"]) == (spurious, 0)
    real = v["preemptions"] + v["blocks"] - spurious  # sched-outs that re-entered (or pend)
    assert legacy["ops"] - vcpu_run["ops"] == 4 * real - 2 * v["reentry_pending"]
