"""Dataset-level replay: events in; `runs`, `fpu_ops`, `validation` and `audit` out.

Each source is replayed on its own (memory bounded by the largest source).
The new tables are written into a staged copy of the dataset and swapped in
whole, like ingest does (ingest.dataset), so a failed or interrupted replay
leaves the previous tables and manifest in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from ingest import dataset as ds
from ingest.errors import InputError
from ingest.fleet import FleetOptions, Job, executor_for, run_jobs
from ingest.load import SourceReport
from pipeline.audit import audit, write_audit
from pipeline.cost import CostModel
from pipeline.detect import POLICY_NAMES
from pipeline.replay import ReplayResult, replay
from pipeline.validate import validate

#: Manifest keys of a source's replay facts (the rest of `info` is global).
_GLOBAL_INFO = ("policies", "cost_model")
#: The tables a replay writes (ingest writes `events` and `rejects`).
_DERIVED = ("runs", "fpu_ops", "validation", "audit")


def read_events(dataset: Path, source_id: str, host: str) -> pl.DataFrame:
    """The `events` rows of one source, in file order."""
    part = ds.partition_dir(Path(dataset), "events", source_id, host=host)
    if not part.is_dir():
        raise InputError(str(part), "missing: the dataset lists this source but has no events")
    return pl.read_parquet(part / "*.parquet")


@dataclass(frozen=True)
class ReplayTask:
    """How to replay each source (everything a worker needs besides the source)."""

    policies: tuple[str, ...] = POLICY_NAMES
    cost_model: CostModel = field(default_factory=CostModel.default)
    recorded_policy: str | None = None

    def describe(self, rules: set[str]) -> dict[str, Any]:
        """The manifest's global `replay` entry, given the sources' guest-run rules."""
        return {
            "policies": list(self.policies),
            "guest_run_rule": next(iter(rules)) if len(rules) == 1 else "per source",
            "cost_model": self.cost_model.describe(),
            "recorded_policy_override": self.recorded_policy,
        }


def replay_source(
    events_root: Path, out_root: Path, entry: dict[str, Any], task: ReplayTask
) -> dict[str, Any]:
    """Replay one source; write its `runs`, `fpu_ops`, `validation` and `audit` partitions.

    Events are read below ``events_root`` and the tables written below
    ``out_root`` (a task's incoming tree).  Returns the keys the source's
    manifest entry gains: `recorded_policy`, its evidence, `replay` (with
    the validation verdict) and `audit`.
    """
    sid, host, kernel = entry["id"], entry["host"], entry.get("kernel")
    events = read_events(events_root, sid, host)
    try:
        result = replay(
            events,
            policies=task.policies,
            cost_model=task.cost_model,
            recorded_policy=task.recorded_policy,
            kernel=kernel,
        )
    except ValueError as exc:
        raise InputError(entry["path"], str(exc)) from exc
    write_result(out_root, sid, host, result)
    check = validate(events, result, kernel=kernel)
    path = ds.partition_dir(out_root, "validation", sid, host=host) / "part-0.parquet"
    ds.write_frame(path, check.table.with_columns(pl.lit(check.policy).alias("policy")))
    # The migration-safety audit reuses the replay's timeline, and staying
    # in step with the replay keeps it from going stale.
    audited = audit(events, result, policies=task.policies, kernel=kernel)
    write_audit(out_root, sid, host, audited)
    info = result.info
    replay_info = {k: v for k, v in info.items() if k not in _GLOBAL_INFO}
    replay_info["validation"] = {"policy": check.policy, "ok": check.ok, "notes": check.notes}
    return {
        "recorded_policy": info["recorded_policy"],
        "recorded_policy_evidence": info["recorded_policy_evidence"],
        "replay": replay_info,
        "audit": audited.info,
    }


def replay_job(root: Path, entry: dict[str, Any], task: ReplayTask) -> SourceReport:
    """A fleet task: replay one source of the staged dataset ``root`` into an incoming tree."""
    incoming = ds.incoming_dir(root)
    updates = replay_source(root, incoming, entry, task)
    return SourceReport.of_entry(entry, status="replayed", incoming=str(incoming), replay=updates)


def replay_sources(
    stage: ds.Staging,
    ex: Executor | None,
    sources: list[dict[str, Any]],
    task: ReplayTask,
    options: FleetOptions,
) -> list[SourceReport]:
    """Replay ``sources`` (entries of the staged manifest) as fleet tasks.

    Their earlier derived partitions are removed first (the staged hard
    links only; the live dataset is untouched), and each finished task's
    tables are moved into place and its manifest entry updated.
    """
    for entry in sources:
        for part in ds.source_partitions(stage.path, entry["id"], entry["host"], _DERIVED):
            ds.remove_tree(part)
    jobs = [Job(e["path"], replay_job, (stage.path, e, task)) for e in sources]
    # A worker process sends back a copy of the entry: the staged manifest's
    # own entry is the one to update.
    entries = {e["id"]: e for e in sources}

    def accept(report: SourceReport) -> SourceReport:
        assert report.incoming is not None
        ds.adopt(Path(report.incoming), stage.path)
        entries[report.id].update(report.replay or {})
        return report

    return run_jobs(ex, jobs, options, accept=accept)


def replay_dataset(
    dataset: Path,
    *,
    policies: Sequence[str] = POLICY_NAMES,
    cost_model: CostModel | None = None,
    recorded_policy: str | None = None,
    options: FleetOptions | None = None,
) -> dict[str, Any]:
    """Replay every source of ``dataset``; returns the new manifest.

    Earlier `runs`, `fpu_ops`, `validation` and `audit` tables are replaced
    as a whole, so the dataset never mixes replays made with different
    policies or costs.  `validation` compares the replay of the recording
    kernel's policy with the kernel's own events (pipeline.validate), per
    vCPU thread; `audit` checks every FPU-state ioctl against the vCPU mutex
    rule (pipeline.audit).  Each source is a fleet task (ingest.fleet):
    ``options`` choose the executor; by default they run here, in order.
    """
    dataset = Path(dataset)
    ds.read_manifest(dataset)
    task = ReplayTask(tuple(policies), cost_model or CostModel.default(), recorded_policy)
    options = options or FleetOptions()
    options.check()
    with ds.staging(dataset, copy_existing=True) as stage:
        for table in _DERIVED:
            # Unlinking the staged hard links leaves the live files alone.
            ds.remove_tree(stage.path / table)
        sources = stage.manifest["sources"]
        with executor_for(options, len(sources)) as ex:
            replay_sources(stage, ex, sources, task, options)
        stage.manifest["replay"] = task.describe(_rules(sources))
        manifest = stage.manifest
        stage.commit()
    return manifest


def write_result(root: Path, source_id: str, host: str, result: ReplayResult) -> None:
    """Write one source's `runs` and per-policy `fpu_ops` partitions under ``root``."""
    runs = ds.partition_dir(root, "runs", source_id, host=host) / "part-0.parquet"
    ds.write_frame(runs, result.runs)
    for policy in result.info["policies"]:
        ops = result.fpu_ops.filter(pl.col("policy") == policy).drop("policy")
        path = ds.partition_dir(root, "fpu_ops", source_id, host=host, policy=policy)
        ds.write_frame(path / "part-0.parquet", ops)


def _rules(sources: list[dict[str, Any]]) -> set[str]:
    return {s["replay"]["guest_run_rule"] for s in sources if "replay" in s}


def policy_summary(dataset: Path) -> list[dict[str, Any]]:
    """The policy summary the CLI prints: per source and policy, with ops per second."""
    import queries

    manifest = ds.read_manifest(Path(dataset))
    spans = {
        s["id"]: (s["last_ts_ns"] - s["first_ts_ns"]) / 1e9
        for s in manifest["sources"]
        if s.get("first_ts_ns") is not None and s.get("last_ts_ns") is not None
    }
    rows = queries.run(dataset, "policy_summary").to_dicts()
    out = []
    for r in rows:
        span = spans.get(r["source"])
        out.append(
            {
                "source": r["source"],
                "policy": r["policy"],
                "ops": r["ops"],
                "saves": r["saves"],
                "restores": r["restores"],
                "redundant": r["redundant_ops"],
                "redundant_pct": round(r["redundant_pct"], 2),
                "cost_us": round(r["cost_us"], 3),
                "ops_per_s": round(r["ops"] / span, 1) if span else None,
            }
        )
    return out
