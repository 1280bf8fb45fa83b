"""Dataset-level replay: events in; `runs`, `fpu_ops`, `validation` and `audit` out.

Each source is replayed on its own (memory bounded by the largest source).
The new tables are written into a staged copy of the dataset and swapped in
whole, like ingest does (ingest.dataset), so a failed or interrupted replay
leaves the previous tables and manifest in place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from ingest import dataset as ds
from ingest.errors import InputError
from pipeline.audit import audit, write_audit
from pipeline.cost import CostModel
from pipeline.detect import POLICY_NAMES
from pipeline.replay import ReplayResult, replay
from pipeline.validate import validate

#: Manifest keys of a source's replay facts (the rest of `info` is global).
_GLOBAL_INFO = ("policies", "cost_model")


def read_events(dataset: Path, source_id: str) -> pl.DataFrame:
    """The `events` rows of one source, in file order."""
    part = ds.partition_dir(Path(dataset), "events", source_id)
    if not part.is_dir():
        raise InputError(str(part), "missing: the dataset lists this source but has no events")
    return pl.read_parquet(part / "*.parquet")


def replay_dataset(
    dataset: Path,
    *,
    policies: Sequence[str] = POLICY_NAMES,
    cost_model: CostModel | None = None,
    recorded_policy: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Replay every source of ``dataset``; returns the new manifest.

    Earlier `runs`, `fpu_ops` and `validation` tables are replaced as a
    whole, so the dataset never mixes replays made with different policies
    or costs.  `validation` compares the replay of the recording kernel's
    policy with the kernel's own events (pipeline.validate), per vCPU thread;
    `audit` checks every FPU-state ioctl against the vCPU mutex rule
    (pipeline.audit).
    """
    dataset = Path(dataset)
    manifest = ds.read_manifest(dataset)
    model = cost_model or CostModel.default()
    with ds.staging(dataset, copy_existing=True) as stage:
        for table in ("runs", "fpu_ops", "validation", "audit"):
            # Unlinking the staged hard links leaves the live files alone.
            _remove_tree(stage.path / table)
        rules: set[str] = set()
        for source in stage.manifest["sources"]:
            if progress:
                progress(source["id"])
            events = read_events(dataset, source["id"])
            try:
                result = replay(
                    events,
                    policies=policies,
                    cost_model=model,
                    recorded_policy=recorded_policy,
                    kernel=source.get("kernel"),
                )
            except ValueError as exc:
                raise InputError(source["path"], str(exc)) from exc
            write_result(stage.path, source["id"], result)
            check = validate(events, result, kernel=source.get("kernel"))
            path = ds.partition_dir(stage.path, "validation", source["id"]) / "part-0.parquet"
            ds.write_frame(path, check.table.with_columns(pl.lit(check.policy).alias("policy")))
            _record(source, result)
            # The migration-safety audit reuses the replay's timeline, and
            # staying in step with the replay keeps it from going stale.
            audited = audit(events, result, policies=policies, kernel=source.get("kernel"))
            write_audit(stage.path, source["id"], audited)
            source["audit"] = audited.info
            source["replay"]["validation"] = {
                "policy": check.policy,
                "ok": check.ok,
                "notes": check.notes,
            }
            rules.add(result.info["guest_run_rule"])
        stage.manifest["replay"] = {
            "policies": list(policies),
            "guest_run_rule": rules.pop() if len(rules) == 1 else "per source",
            "cost_model": model.describe(),
            "recorded_policy_override": recorded_policy,
        }
        manifest = stage.manifest
        stage.commit()
    return manifest


def write_result(root: Path, source_id: str, result: ReplayResult) -> None:
    """Write one source's `runs` and per-policy `fpu_ops` partitions under ``root``."""
    ds.write_frame(ds.partition_dir(root, "runs", source_id) / "part-0.parquet", result.runs)
    for policy in result.info["policies"]:
        ops = result.fpu_ops.filter(pl.col("policy") == policy).drop("policy")
        path = ds.partition_dir(root, "fpu_ops", source_id, policy=policy) / "part-0.parquet"
        ds.write_frame(path, ops)


def _record(source: dict[str, Any], result: ReplayResult) -> None:
    info = result.info
    source["recorded_policy"] = info["recorded_policy"]
    source["recorded_policy_evidence"] = info["recorded_policy_evidence"]
    source["replay"] = {k: v for k, v in info.items() if k not in _GLOBAL_INFO}


def _remove_tree(path: Path) -> None:
    import shutil

    if path.exists():
        shutil.rmtree(path)


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
