"""Ground truth: the shared policy state machines driven by the model's own schedule.

The replay (pipeline.timeline) rebuilds replay *steps* from a trace's events;
the model already knows them, so it hands its steps to the very same
:class:`~pipeline.policies.base.Policy` classes through a
:class:`~pipeline.timeline.Timeline` built directly (no text, no parsing).
Nothing about the policies is written twice: the truth is what those classes
count on the true schedule, and a replay of the generated trace must count
the same.

The recording policy is also run with every FPU-using task's operations
logged (not only the vCPU threads'), because the x86_fpu lines a kernel
prints depend on every task's saves and restores (pipeline.model.lines).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.model.schedule import ROLE_VCPU, Schedule

#: OpLog codes: 0 save user, 1 restore user, 2 save guest, 3 restore guest.
OP_FIELDS = ("save_user", "restore_user", "save_guest", "restore_guest")
POLICY_ORDER = ("legacy", "vcpu_run", "deferred")


def timeline(sched: Schedule):
    """A Timeline holding the schedule's steps, as pipeline.timeline.build would make one.

    Every CPU starts with its idle task, which is the model's real state at
    time 0.  Slice ids are -1: in the model every task switched in outside
    KVM_RUN returns to userspace, which is what -1 means to the policies.
    Only the fields the Timeline dataclass declares are passed, so that a
    field it drops does not break the model (the tables stay empty: the
    policies do not read them).
    """
    import dataclasses

    from pipeline.steps import RUNS_SCHEMA
    from pipeline.tasks import Kind
    from pipeline.timeline import Timeline

    known: dict[str, Any] = {
        "steps": sched.steps,
        "slice_returns": [],
        "task_pid": [t.pid for t in sched.tasks],
        "task_comm": [t.comm for t in sched.tasks],
        "task_kind": [Kind(t.kind) for t in sched.tasks],
        "initial_cpu": dict.fromkeys(range(sched.n_cpus), 0),
        "run_at_start": {},
        "runs": RUNS_SCHEMA.to_frame(),
        "guest_run_rule": "model",
        "user_return_rule": "model",
        "inferred_switch_ins": 0,
        "first_ts": 0,
        "last_ts": sched.end_ns,
        "n_events": sched.n_records,
        "lost_markers": 0,
        "n_cpus": sched.n_cpus,
    }
    fields = {f.name: f for f in dataclasses.fields(Timeline)}
    missing = [
        name
        for name, f in fields.items()
        if name not in known
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise RuntimeError(f"pipeline.timeline.Timeline needs {missing}: update model.truth")
    return Timeline(**{k: v for k, v in known.items() if k in fields})


def _every_task(cls: type) -> type:
    """``cls`` logging the operations of every FPU-using task, not only vCPU threads'.

    Policy.save/restore skip tasks that are not vCPU threads; their state
    changes are the same either way, so widening the log changes no count.
    """

    class EveryTask(cls):  # type: ignore[misc, valid-type]
        def __init__(self, tl: Any) -> None:
            super().__init__(tl)
            self.is_vcpu = list(self.fpu)

    EveryTask.__name__ = f"{cls.__name__}EveryTask"
    return EveryTask


@dataclass
class Ops:
    """One policy's operations on the schedule, as numpy columns."""

    policy: str
    task: np.ndarray
    line: np.ndarray  # the anchoring record's index
    code: np.ndarray
    site: np.ndarray
    redundant: np.ndarray


def run_policy(name: str, sched: Schedule, *, every_task: bool = False, tl: Any = None) -> Ops:
    """Replay the schedule's steps under policy ``name`` with the shared state machine."""
    from pipeline.policies import POLICIES

    cls = POLICIES[name]
    if every_task:
        cls = _every_task(cls)
    log = cls(tl if tl is not None else timeline(sched)).run()
    # OpLog.ops: (task, ts, line, cpu, code, site, ...); .redundant: index -> reason
    width = len(log.ops[0]) if log.ops else 6
    arr = np.array(log.ops, dtype=np.int64).reshape(-1, width)
    redundant = np.zeros(len(arr), dtype=bool)
    if log.redundant:
        redundant[np.fromiter(log.redundant.keys(), dtype=np.int64)] = True
    return Ops(
        policy=name,
        task=arr[:, 0].copy(),
        line=arr[:, 2].copy(),
        code=arr[:, 4].copy(),
        site=arr[:, 5].copy(),
        redundant=redundant,
    )


def all_policies(sched: Schedule, recorded: str) -> tuple[dict[str, Ops], Ops]:
    """Every policy's vCPU operations, and the recording policy's every-task operations."""
    tl = timeline(sched)
    full = run_policy(recorded, sched, every_task=True, tl=tl)
    is_vcpu = np.array([t.role == ROLE_VCPU for t in sched.tasks])
    keep = is_vcpu[full.task] if len(full.task) else np.zeros(0, dtype=bool)
    ops: dict[str, Ops] = {}
    for name in POLICY_ORDER:
        if name == recorded:
            ops[name] = Ops(name, full.task[keep], full.line[keep], full.code[keep],
                            full.site[keep], full.redundant[keep])  # fmt: skip
        else:
            ops[name] = run_policy(name, sched, tl=tl)
    return ops, full


def counts(ops: Ops, n_tasks: int) -> dict[int, dict[str, int]]:
    """Per task: ops, the four kinds and redundant (architecture.md truth fields)."""
    by = np.bincount(ops.task * 4 + ops.code, minlength=4 * n_tasks).reshape(n_tasks, 4)
    red = np.bincount(ops.task, weights=ops.redundant, minlength=n_tasks)
    out = {}
    for t in np.flatnonzero(by.sum(axis=1) + red):
        row = {"ops": int(by[t].sum())}
        row.update({f: int(by[t, i]) for i, f in enumerate(OP_FIELDS)})
        row["redundant"] = int(red[t])
        out[int(t)] = row
    return out


def _zero() -> dict[str, int]:
    return {"ops": 0, **dict.fromkeys(OP_FIELDS, 0), "redundant": 0}


def truth_document(
    sched: Schedule,
    ops: dict[str, Ops],
    *,
    seed: int,
    preset: str,
    params: dict[str, Any],
    policy: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``TRACE.truth.json`` document (architecture.md: the model's ground truth).

    The fixed keys come first; the rest (per-vCPU exit and halt counts,
    totals, host figures) are extras the contract welcomes.
    """
    n = len(sched.tasks)
    per = {name: counts(o, n) for name, o in ops.items()}
    vcpus = []
    totals = {name: _zero() for name in ops}
    for tid in sched.vcpu_tasks():
        info, st = sched.tasks[tid], sched.stats[tid]
        row: dict[str, Any] = {
            "pid": info.pid,
            "comm": info.comm,
            "runs": st["runs"],
            "preemptions": st["preemptions"],
            "blocks": st["blocks"],
            "ops": {name: per[name].get(tid, _zero()) for name in ops},
            "tgid": info.tgid,
            "vm": info.vm,
            "vcpu_id": info.vcpu_id,
        }
        row.update({k: v for k, v in st.items() if k not in ("runs", "preemptions", "blocks")})
        vcpus.append(row)
        for name in ops:
            for k, v in row["ops"][name].items():
                totals[name][k] += v
    doc: dict[str, Any] = {
        "seed": seed,
        "preset": preset,
        "params": params,
        "policy": policy,
        "vcpus": vcpus,
        "totals": totals,
        "duration_ns": sched.end_ns,
        "cpus": sched.n_cpus,
        "host": sched.host_stats,
    }
    if extra:
        doc.update(extra)
    return doc
