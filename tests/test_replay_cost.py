"""Bytes and nanoseconds per operation (pipeline.cost)."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.cost import CostModel
from pipeline.replay import replay
from tests.replay_traces import Task, TraceWriter

A, K = Task("CPU 0/KVM", 4321), Task("kworker/0:1", 87)


def test_default_model_makes_an_avx512_op_about_100ns() -> None:
    model = CostModel.default()
    assert model.default_bytes == 2688
    assert 95.0 <= model.ns(2688) <= 105.0  # the 2017 figure for an FPU+xstate load
    assert model.ns(576) < model.ns(832) < model.ns(2688) < model.ns(11008)
    d = model.describe()
    assert d["formula"] == "cost_ns = fixed_ns + ns_per_byte * bytes"
    assert d["cpu_profile"] == "avx512" and d["avx512_op_ns"] == pytest.approx(model.ns(2688), 0.1)


def test_model_from_toml(tmp_path) -> None:
    path = tmp_path / "host.toml"
    path.write_text('[cost]\nfixed_ns = 30.0\nns_per_byte = 0.05\ncpu_profile = "amx"\n')
    model = CostModel.from_toml(path)
    assert model == CostModel(fixed_ns=30.0, ns_per_byte=0.05, cpu_profile="amx")
    assert model.ns(model.default_bytes) == pytest.approx(30.0 + 0.05 * 11008)
    path.write_text("[cost]\nfixed_ns = 30.0\nns_per_bite = 1\n")
    with pytest.raises(ValueError, match="ns_per_bite"):
        CostModel.from_toml(path)
    with pytest.raises(ValueError, match="cpu_profile"):
        CostModel(cpu_profile="avx1024")


def _run_with_xfeatures() -> TraceWriter:
    """One run as 6.18 logs it with x86_fpu events: guest xfeatures 2, QEMU's a3."""
    w = TraceWriter()
    w.x86_fpu(A, 0, "activated", "2", tif=0)  # fpu_swap_kvm_fpstate() installs the guest's
    w.emit(A, 0, "kvm_fpu", "load")
    w.enter(A, 0)
    w.sched_out(A, 0, "R", K)
    w.x86_fpu(A, 0, "deactivated", "2")  # the context switch saves the guest's
    w.switch(0, K, "I", A)
    w.enter(A, 0, "IO_INSTRUCTION")
    w.x86_fpu(A, 0, "activated", "a3", tif=0)  # ... and QEMU's back
    w.emit(A, 0, "kvm_fpu", "unload")
    w.emit(A, 0, "kvm_userspace_exit", "reason KVM_EXIT_IO (2)")
    return w


def test_bytes_from_the_trace_xfeatures() -> None:
    ops = replay(_run_with_xfeatures().events(), policies=["deferred"]).fpu_ops
    # compacted format: 576 (legacy area + header); a3 adds opmask 64 and Hi16_ZMM 1024
    assert ops.select("op", "context", "bytes").rows() == [
        ("save", "user", 1664),  # before any user evidence: the first one logged later
        ("restore", "guest", 576),
        ("save", "guest", 576),
        ("save", "guest", 576),
        ("restore", "user", 1664),
    ]
    model = CostModel.default()
    assert ops["cost_ns"].to_list() == [model.ns(b) for b in ops["bytes"].to_list()]


def test_bytes_from_the_cpu_profile() -> None:
    w = _run_with_xfeatures()
    for model in (CostModel(cpu_profile="sse"), CostModel(use_xfeatures=False, profile_bytes=1000)):
        result = replay(w.events(), policies=["vcpu_run"], cost_model=model)
        if model.use_xfeatures:  # the trace has xfeatures: they win over the profile
            assert set(result.fpu_ops["bytes"].to_list()) == {576, 1664}
        else:
            assert result.fpu_ops["bytes"].unique().to_list() == [1000]
            assert result.fpu_ops["cost_ns"].unique().to_list() == [20.0 + 0.03 * 1000]
        assert result.info["cost_model"] == model.describe()
    plain = TraceWriter()
    plain.run_start(A, 0)
    plain.enter(A, 0, "IO_INSTRUCTION")
    plain.run_end(A, 0)
    ops = replay(plain.events(), cost_model=CostModel(cpu_profile="amx")).fpu_ops
    assert ops["bytes"].unique().to_list() == [11008]
    assert (
        ops.group_by("policy").agg(pl.col("cost_ns").sum()).sort("policy")["cost_ns"].to_list()
        == [pytest.approx(4 * (20.0 + 0.03 * 11008))] * 3
    )
