"""Detecting the recording kernel's policy (reference §7.2) and validating against it."""

from __future__ import annotations

import polars as pl
import pytest

from ingest import parse_text
from pipeline import timeline
from pipeline.detect import detect, policy_for_version
from pipeline.replay import replay
from pipeline.validate import validate
from tests.replay_traces import Task, TraceWriter, closed_form_trace

A, K = Task("CPU 0/KVM", 4321), Task("kworker/0:1", 87)


@pytest.mark.parametrize(
    ("kernel", "policy", "variant"),
    [
        ("4.14.5", "legacy", "L"),
        ("4.15.0-rc1", "vcpu_run", "V"),
        ("5.1.21", "vcpu_run", "V"),
        ("5.2.0", "deferred", "D52"),
        ("5.4.18-generic", "deferred", "D53"),
        ("5.4.19", "deferred", "D56"),
        ("5.15.167", "deferred", "D56"),
        ("6.18.44-fc-v595", "deferred", "S"),
    ],
)
def test_policy_for_version(kernel: str, policy: str, variant: str) -> None:
    assert policy_for_version(kernel) == (policy, variant)


def test_unknown_or_pre_411_versions_map_to_nothing() -> None:
    assert policy_for_version("4.9.0") is None
    assert policy_for_version("unknown") is None


def _one_run(style: str, x86: str | None = None) -> pl.DataFrame:
    w = TraceWriter(style=style)
    w.run_start(A, 0)
    w.enter(A, 0)
    if x86 == "initialized":  # <= 5.1 prints the task's fpu->initialized
        w.emit(A, 0, "x86_fpu_regs_deactivated",
               "x86/fpu: ffff88003a5c8c00 initialized: 1 xfeatures: 7 xcomp_bv: 0")  # fmt: skip
    w.enter(A, 0, "IO_INSTRUCTION")
    w.run_end(A, 0)
    return w.events()


def test_end_order_tells_legacy_from_the_rest() -> None:
    legacy = detect(timeline.prepare(_one_run("legacy")))
    assert legacy.policy == "legacy" and legacy.variant == "L"
    assert any("kvm_userspace_exit before" in e for e in legacy.evidence)
    swap = detect(timeline.prepare(_one_run("swap")))
    assert swap.policy == "deferred"  # unload first, and the 5-character flags of >= 5.13
    assert any("5-character" in e for e in swap.evidence)


def test_x86_fpu_format_tells_vcpu_run_from_deferred() -> None:
    w = TraceWriter(style="legacy")  # 4-character flags: no date from the format
    w.emit(A, 0, "kvm_fpu", "load")
    w.enter(A, 0, "IO_INSTRUCTION")
    w.emit(A, 0, "x86_fpu_regs_deactivated",
           "x86/fpu: ffff88003a5c8c00 initialized: 1 xfeatures: 7 xcomp_bv: 0")  # fmt: skip
    w.emit(A, 0, "kvm_fpu", "unload")
    w.emit(A, 0, "kvm_userspace_exit", "reason KVM_EXIT_IO (2)")
    d = detect(timeline.prepare(w.events()))
    assert d.policy == "vcpu_run"
    assert any("initialized:" in e for e in d.evidence)


def test_undetermined_without_evidence_and_the_version_decides() -> None:
    w = TraceWriter(style="legacy")
    w.emit(A, 0, "kvm_fpu", "load")
    w.enter(A, 0, "IO_INSTRUCTION")
    w.emit(A, 0, "kvm_fpu", "unload")
    w.emit(A, 0, "kvm_userspace_exit", "reason KVM_EXIT_IO (2)")
    df = timeline.prepare(w.events())
    assert detect(df).policy == "undetermined"
    assert detect(df, kernel="4.19.0").policy == "vcpu_run"
    # >= 4.15 order on a 4.14 kernel: a 4.14.y with the 2017 patch backported
    d = detect(df, kernel="4.14.120")
    assert (d.policy, d.variant) == ("vcpu_run", "V")
    assert any("backport" in e for e in d.evidence)
    # and the order of a legacy recording wins over a version that says otherwise
    d = detect(timeline.prepare(_one_run("legacy")), kernel="5.10.0")
    assert d.policy == "legacy"
    assert any("overrides the kernel version" in e for e in d.evidence)


def test_recorded_policy_override_and_a_failing_validation() -> None:
    events = parse_text(closed_form_trace("swap", 2, 1), "tracefs")
    assert validate(events).ok
    forced = replay(events, recorded_policy="legacy")
    assert forced.info["recorded_policy"] == "legacy"
    assert forced.info["recorded_policy_evidence"][0] == "given by the caller (detected: deferred)"
    check = validate(events, forced)
    assert check.policy == "legacy"
    assert not check.ok
    table = check.table.filter(pl.col("check").str.starts_with("kvm_fpu"))
    # legacy would have loaded and put the guest 1 + P times; the 6.x kernel did once
    assert table.select("check", "predicted", "observed", "difference").rows() == [
        ("kvm_fpu_load", 3, 1, 2),
        ("kvm_fpu_unload", 3, 1, 2),
    ]
    assert "no x86_fpu_regs_deactivated events" in check.notes[0]
    with pytest.raises(ValueError, match="recorded policy"):
        replay(events, recorded_policy="D53")
    with pytest.raises(ValueError, match="unknown policy"):
        replay(events, policies=["eager"])
