"""Replay one source's events under the FPU switching policies.

``replay(events)`` rebuilds the timeline once (pipeline.timeline), runs each
policy's state machine over it (pipeline.policies) and returns the `runs`
and `fpu_ops` tables of architecture.md plus the facts the manifest's
``replay`` section records.  Everything is per source; the caller adds the
``source`` column.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from pipeline import cost, prepare, timeline
from pipeline.codes import STATE_NAMES
from pipeline.cost import CostModel
from pipeline.detect import POLICY_NAMES, Detection, detect
from pipeline.policies import POLICIES, OpLog
from pipeline.policies import sites as S
from pipeline.tasks import KIND_NAMES, Kind
from pipeline.timeline import Timeline

_OP = pl.Series(["save", "restore", "save", "restore"])
_CONTEXT = pl.Series(["user", "user", "guest", "guest"])
_TRIGGER = pl.Series([s.trigger for s in S.SITES])
_SITE = pl.Series([s.tag for s in S.SITES])
# index 0: no sched-out yet (state -1); then pipeline.codes S_* in order
_STATE = pl.Series([None, *(STATE_NAMES[k] for k in sorted(STATE_NAMES))], dtype=pl.String)

#: fpu-model.md, "What the replay cannot see": said in every report.
UNSEEN = (
    "not visible to kvm/sched events, so not counted: kernel_fpu_begin() users, halt"
    " polling, AMX idle release, signal frames; restore and context-switch counts of"
    " deferred are lower bounds (kernel-fpu-reference.md §8)"
)

FPU_OPS_SCHEMA = pl.Schema(
    {
        "policy": pl.String(),
        "pid": pl.Int32(),
        "cpu": pl.Int32(),
        "ts_ns": pl.Int64(),
        "op": pl.String(),
        "context": pl.String(),
        "trigger": pl.String(),
        "site": pl.String(),
        "redundant": pl.Boolean(),
        "reason": pl.String(),
        "bytes": pl.Int32(),
        "cost_ns": pl.Float64(),
        "run_idx": pl.Int32(),
        "line_no": pl.Int64(),
        "sched_out_line": pl.Int64(),
        "sched_out_state": pl.String(),
    }
)


@dataclass
class ReplayResult:
    """The tables and manifest facts of one source's replay."""

    runs: pl.DataFrame
    fpu_ops: pl.DataFrame
    info: dict[str, Any]
    timeline: Timeline = field(repr=False)
    detection: Detection = field(repr=False)


def replay(
    events: pl.DataFrame,
    policies: Sequence[str] = POLICY_NAMES,
    cost_model: CostModel = CostModel.default(),  # noqa: B008 - frozen, shared safely
    recorded_policy: str | None = None,
    kernel: str | None = None,
) -> ReplayResult:
    """Replay ``events`` (one source, ingest.schema columns) under ``policies``.

    ``recorded_policy`` overrides the detected policy of the recording kernel
    (``--recorded-policy``); ``kernel`` is its release string when known.
    """
    with _gc_paused():
        return _replay(events, policies, cost_model, recorded_policy, kernel)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while the replay allocates.

    The replay builds millions of small tuples (steps, ops) that hold only
    ints: refcounting frees them, yet each allocation burst triggers a
    generation scan that costs ~15% of the run and finds nothing.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _replay(
    events: pl.DataFrame,
    policies: Sequence[str],
    cost_model: CostModel,
    recorded_policy: str | None,
    kernel: str | None,
) -> ReplayResult:
    policies = list(dict.fromkeys(policies))
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown policy {unknown[0]!r}; expected {', '.join(POLICIES)}")
    df, xstate = prepare.prepare_with_xstate(events)
    detection = detect(df, kernel, events)
    if recorded_policy is not None:
        if recorded_policy not in POLICY_NAMES:
            raise ValueError(
                f"unknown recorded policy {recorded_policy!r}; expected {', '.join(POLICY_NAMES)}"
            )
        detection = Detection(
            recorded_policy,
            [f"given by the caller (detected: {detection.policy})", *detection.evidence],
            detection.variant if detection.policy == recorded_policy else None,
        )
    tl = timeline.build(events, detection.run_rules, df=df)
    evidence = xstate_evidence(xstate, tl)
    frames = [
        cost.apply(ops_frame(name, POLICIES[name](tl).run(), tl), evidence, cost_model)
        for name in policies
    ]
    ops = (
        pl.concat(frames).select(FPU_OPS_SCHEMA.names())
        if frames
        else pl.DataFrame(schema=FPU_OPS_SCHEMA)
    )
    info = _info(tl, detection, list(policies), cost_model, ops, kernel)
    return ReplayResult(tl.runs, ops, info, tl, detection)


_OPS_CORE = pl.Schema({k: v for k, v in FPU_OPS_SCHEMA.items() if k not in ("bytes", "cost_ns")})


def ops_frame(policy: str, log: OpLog, tl: Timeline) -> pl.DataFrame:
    """The op log of one policy as `fpu_ops` rows (without bytes and cost)."""
    if not log.ops:
        return pl.DataFrame(schema=_OPS_CORE)
    # One int64 array of the op tuples: far faster than zip(*ops) into columns.
    arr = np.array(log.ops, dtype=np.int64)
    task, ts, line, cpu, code, site, run_idx, out_line, out_state = (arr[:, j] for j in range(9))
    n = len(arr)
    code_s = pl.Series(code, dtype=pl.UInt32)
    red_idx = pl.Series(list(log.redundant), dtype=pl.UInt32)
    red_code = pl.Series(list(log.redundant.values()), dtype=pl.Int64)
    ops = pl.DataFrame(
        {
            "policy": pl.repeat(policy, n, dtype=pl.String, eager=True),
            "pid": pl.Series(tl.task_pid, dtype=pl.Int32).gather(pl.Series(task, dtype=pl.UInt32)),
            "cpu": pl.Series(cpu, dtype=pl.Int32),
            "ts_ns": pl.Series(ts, dtype=pl.Int64),
            "op": _OP.gather(code_s),
            "context": _CONTEXT.gather(code_s),
            "trigger": _TRIGGER.gather(pl.Series(site, dtype=pl.UInt32)),
            "site": _SITE.gather(pl.Series(site, dtype=pl.UInt32)),
            "redundant": pl.zeros(n, dtype=pl.Boolean, eager=True).scatter(red_idx, True),
            "_reason": pl.Series([None] * n, dtype=pl.Int64).scatter(red_idx, red_code),
            "run_idx": pl.Series(run_idx, dtype=pl.Int32),
            "line_no": pl.Series(line, dtype=pl.Int64),
            "sched_out_line": pl.Series(out_line, dtype=pl.Int64),
            "sched_out_state": _STATE.gather(pl.Series(out_state + 1, dtype=pl.UInt32)),
        }
    )
    # Words for each distinct (reason, context): a handful per policy.
    pairs = ops.filter(pl.col("redundant")).select("_reason", "context").unique()
    words = pairs.with_columns(
        reason=pl.Series([S.reason_text(r, c) for r, c in pairs.iter_rows()], dtype=pl.String)
    )
    return (
        ops.join(words, on=["_reason", "context"], how="left", maintain_order="left")
        .with_columns(
            run_idx=pl.col("run_idx").replace(-1, None),
            sched_out_line=pl.col("sched_out_line").replace(-1, None),
        )
        .drop("_reason")
    )


def xstate_evidence(xstate: pl.DataFrame, tl: Timeline) -> pl.DataFrame:
    """(pid, context, ts_ns, xbytes) from the x86_fpu lines of vCPU threads.

    ``xstate`` comes from pipeline.prepare.prepare_with_xstate.  The
    activated line printed by the KVM swap right before a kvm_fpu load
    carries the guest's xfeatures, before an unload the user's; other x86_fpu
    lines of the thread carry the guest's inside a run and the user's outside.
    """
    if xstate.height == 0:
        return pl.DataFrame(
            schema={"pid": pl.Int32, "context": pl.String, "ts_ns": pl.Int64, "xbytes": pl.Int32}
        )
    runs = tl.runs.select("pid", start="start_ns", end="end_ns").sort("start")
    x = xstate.sort("ts_ns", "line_no").join_asof(
        runs, left_on="ts_ns", right_on="start", by="pid", check_sortedness=False
    )
    inside = (pl.col("ts_ns") > pl.col("start")) & (pl.col("ts_ns") < pl.col("end"))
    guest = (
        pl.when(pl.col("next_load").is_not_null())
        .then(pl.col("next_load"))
        .otherwise(inside.fill_null(False))
    )
    return x.select(
        pl.col("pid").cast(pl.Int32),
        context=pl.when(guest).then(pl.lit("guest")).otherwise(pl.lit("user")),
        ts_ns="ts_ns",
        xbytes=pl.col("xstate_bytes").cast(pl.Int32),
    )


def _info(
    tl: Timeline,
    det: Detection,
    policies: list[str],
    model: CostModel,
    ops: pl.DataFrame,
    kernel: str | None,
) -> dict[str, Any]:
    runs = tl.runs
    incomplete = runs.filter(~pl.col("complete"))
    inc_keys = incomplete.select("pid", "run_idx")
    from_incomplete = (
        ops.join(inc_keys, on=["pid", "run_idx"], how="semi").group_by("policy").len()
        if ops.height
        else pl.DataFrame({"policy": [], "len": []})
    )
    per_policy = dict(from_incomplete.iter_rows())
    kinds: dict[str, int] = {}
    for k in tl.task_kind:
        kinds[KIND_NAMES[k]] = kinds.get(KIND_NAMES[k], 0) + 1
    runs_per_pid = dict(runs.group_by("pid").len().iter_rows())
    vcpus = [
        {
            "pid": tl.task_pid[t],
            "comm": tl.task_comm[t],
            "kind": KIND_NAMES[Kind.VCPU],
            # per pid: a pid reused by a second vCPU thread lists the runs of both
            "runs": runs_per_pid.get(tl.task_pid[t], 0),
            "in_run_at_start": t in tl.run_at_start,
        }
        for t in tl.vcpu_tasks()
    ]
    return {
        "policies": policies,
        "recorded_policy": det.policy,
        "recorded_policy_evidence": det.evidence,
        "recorded_policy_variant": det.variant,
        "kernel": kernel,
        "guest_run_rule": tl.guest_run_rule,
        "user_return_rule": tl.user_return_rule,
        "cost_model": model.describe(),
        "events": tl.n_events,
        "inferred_switch_ins": tl.inferred_switch_ins,
        "lost_markers": tl.lost_markers,
        "runs": runs.height,
        "incomplete_runs": incomplete.height,
        "ops_from_incomplete_runs": {p: int(per_policy.get(p, 0)) for p in policies},
        "vcpu_threads": vcpus,
        "task_kinds": kinds,
        "notes": [*tl.notes, UNSEEN],
    }
