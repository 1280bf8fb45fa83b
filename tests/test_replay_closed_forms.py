"""The closed forms of kernel-fpu-reference.md §3.3, over P sched-outs and k invalid switch-ins.

One KVM_RUN of thread A; each of its P sched-outs happens after the guest ran
and is followed by a re-entry; k of them find the registers invalid (the
user task B ran on the CPU meanwhile).  Counts per policy:

=========  =====  ======  =====  ======  =========  ==========  ===============
policy     XS_u   XR_u    XS_g   XR_g    total      redundant   kvm_fpu ld/unld
=========  =====  ======  =====  ======  =========  ==========  ===============
legacy     1+2P   1+P+k   1+P    1+P     4+5P+k     3P+k        1+P
vcpu_run   1      1       1+P    1+k     4+P+k      0           1
deferred   1      1       1+P    1+k     4+P+k      0           1
=========  =====  ======  =====  ======  =========  ==========  ===============
"""

from __future__ import annotations

import polars as pl
import pytest

from ingest import parse_text
from pipeline.replay import replay
from tests.replay_traces import closed_form_trace

PK = [(p, k) for p in (0, 1, 2, 5, 12) for k in sorted({0, 1, p // 2, p}) if k <= p]


def expected(policy: str, p: int, k: int) -> dict[str, int]:
    if policy == "legacy":
        counts = (1 + 2 * p, 1 + p + k, 1 + p, 1 + p)
        return dict(zip(("XS_u", "XR_u", "XS_g", "XR_g"), counts, strict=True)) | {
            "total": 4 + 5 * p + k,
            "redundant": 3 * p + k,
            "kvm_fpu": 1 + p,
        }
    counts = (1, 1, 1 + p, 1 + k)
    return dict(zip(("XS_u", "XR_u", "XS_g", "XR_g"), counts, strict=True)) | {
        "total": 4 + p + k,
        "redundant": 0,
        "kvm_fpu": 1,
    }


def measured(ops: pl.DataFrame) -> dict[str, int]:
    def n(op: str, ctx: str) -> int:
        return ops.filter((pl.col("op") == op) & (pl.col("context") == ctx)).height

    restores = ops.filter(pl.col("op") == "restore")
    return {
        "XS_u": n("save", "user"),
        "XR_u": n("restore", "user"),
        "XS_g": n("save", "guest"),
        "XR_g": n("restore", "guest"),
        "total": ops.height,
        "redundant": int(ops["redundant"].sum()),
        "kvm_fpu": restores.filter(
            (pl.col("context") == "guest") & (pl.col("site") == "KVM-load")
        ).height,
    }


@pytest.mark.parametrize("style", ["legacy", "swap"])
@pytest.mark.parametrize("entries", [True, False], ids=["kvm_entry", "synthesised"])
@pytest.mark.parametrize(("p", "k"), PK, ids=[f"P{p}-k{k}" for p, k in PK])
def test_closed_forms(style: str, entries: bool, p: int, k: int) -> None:
    events = parse_text(closed_form_trace(style, p, k, entries=entries), "tracefs")
    result = replay(events)
    assert result.info["guest_run_rule"] == ("kvm_entry" if entries else "synthesised")
    for policy in ("legacy", "vcpu_run", "deferred"):
        ops = result.fpu_ops.filter(pl.col("policy") == policy)
        assert measured(ops) == expected(policy, p, k), policy
    # The kvm_fpu lines the recording kernel logged are those of its own policy.
    fpu = events.filter(pl.col("event") == "kvm_fpu")
    recorded = "legacy" if style == "legacy" else "deferred"
    assert int(fpu["fpu_load"].sum()) == expected(recorded, p, k)["kvm_fpu"]
