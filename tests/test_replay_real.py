"""The replay on the real 6.18 captures, against their ground truth and their own events.

Every capture is replayed under `deferred` (the recording kernel's policy):
its KVM_RUN entry guest restores and exit guest saves equal the ground
truth's kvm_fpu loads and unloads exactly, per vCPU thread; `validate`
passes; and on the tracefs captures the context-switch saves it predicts
agree with the kernel's x86_fpu_regs_deactivated lines for >= 95% of each
vCPU thread's sched-outs (docs/replay.md records the measured figures).
"""

from __future__ import annotations

import json

import polars as pl
import pytest

from ingest import parse_file
from pipeline.replay import replay
from pipeline.validate import validate
from tests.conftest import REAL, REAL_FORMATS, WORKLOADS, needs_shared

pytestmark = [needs_shared, pytest.mark.real]

CAPTURES = [
    pytest.param(w, suffix, truth, id=f"{w}-{truth}")
    for w in WORKLOADS
    for suffix, truth, _ in REAL_FORMATS
]


@pytest.fixture(scope="module")
def replayed():
    cache: dict[str, tuple] = {}

    def get(workload: str, suffix: str, truth: str):
        key = f"{workload}.{suffix}"
        if key not in cache:
            events = parse_file(str(REAL / key))
            result = replay(events, policies=["deferred"], kernel="6.18.44")
            gt = json.loads((REAL / f"{workload}.{truth}.groundtruth.json").read_text())
            cache[key] = (events, result, gt)
        return cache[key]

    return get


@pytest.mark.parametrize(("workload", "suffix", "truth"), CAPTURES)
def test_ioctl_swaps_equal_ground_truth_kvm_fpu(replayed, workload, suffix, truth):
    _, result, gt = replayed(workload, suffix, truth)
    assert result.info["recorded_policy"] == "deferred"
    assert result.info["recorded_policy_variant"] == "S"
    assert result.info["guest_run_rule"] == "synthesised"
    ops = result.fpu_ops
    for vcpu in gt["vcpu_threads"]:
        own = ops.filter(pl.col("pid") == vcpu["pid"])
        guest = own.filter(pl.col("context") == "guest")
        entry = guest.filter((pl.col("trigger") == "ioctl_entry") & (pl.col("op") == "restore"))
        exit_ = guest.filter((pl.col("trigger") == "ioctl_exit") & (pl.col("op") == "save"))
        assert entry.height == vcpu["kvm_fpu_load"], vcpu["comm"]
        assert exit_.height == vcpu["kvm_fpu_unload"], vcpu["comm"]
        runs = result.runs.filter(pl.col("pid") == vcpu["pid"])
        assert runs.height == vcpu["kvm_run_returns"]
        assert runs["complete"].all()
        assert (
            dict(runs.group_by("exit_reason").len().iter_rows())
            == vcpu["kvm_userspace_exit_reasons"]
        )
    vcpus = sorted(v["pid"] for v in result.info["vcpu_threads"])
    assert vcpus == sorted(v["pid"] for v in gt["vcpu_threads"])


@pytest.mark.parametrize(("workload", "suffix", "truth"), CAPTURES)
def test_validate_passes(replayed, workload, suffix, truth):
    events, result, _ = replayed(workload, suffix, truth)
    check = validate(events, result)
    assert check.policy == "deferred"
    assert check.ok, check.table
    kvm = check.table.filter(pl.col("check").str.starts_with("kvm_fpu"))
    assert (kvm["difference"] == 0).all()


@pytest.mark.parametrize(("workload", "suffix", "truth"), CAPTURES)
def test_observed_context_switch_saves_are_the_kernels(replayed, workload, suffix, truth):
    """The observed side: x86_fpu_regs_deactivated lines right after the thread's switches."""
    events, result, gt = replayed(workload, suffix, truth)
    cs = validate(events, result).table.filter(pl.col("check") == "cs_saves")
    restores = validate(events, result).table.filter(pl.col("check") == "deferred_restores")
    for vcpu in gt["vcpu_threads"]:
        split = vcpu["x86_fpu_regs_deactivated_split"]
        logged = split["at_sched_out_in_kvm_run"] + split["at_sched_out_in_userspace"]
        assert cs.filter(pl.col("pid") == vcpu["pid"])["observed"].item() == logged
        # and the deferred restores: activated lines other than the KVM swap's
        split = vcpu["x86_fpu_regs_activated_split"]
        logged = split["in_kvm_run"] + split["outside_kvm_run"]
        assert restores.filter(pl.col("pid") == vcpu["pid"])["observed"].item() == logged


@pytest.mark.parametrize("workload", WORKLOADS)
def test_context_switch_saves_agree_on_tracefs(replayed, workload):
    events, result, gt = replayed(workload, "tracefs.txt", "tracefs")
    table = validate(events, result).table
    cs = table.filter(pl.col("check") == "cs_saves")
    assert sorted(cs["pid"].to_list()) == sorted(v["pid"] for v in gt["vcpu_threads"])
    assert (cs["agreement_pct"] >= 95.0).all(), cs
    restores = table.filter(pl.col("check") == "deferred_restores")
    assert (restores["agreement_pct"] >= 95.0).all(), restores
