"""`fpureplay run` at fleet scale: each input is ingested and replayed in one task.

A task parses its trace into its incoming tree and replays it from there
(pipeline.orchestrate.replay_source), so the events are read back by the
same worker and nothing but a small report returns to the coordinator
(ingest.fleet).  Sources already in the dataset are replayed too when the
dataset's last replay used other policies, costs or overrides, so that the
whole dataset always reflects one replay.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from concurrent.futures import Executor
from pathlib import Path

from ingest import dataset as ds
from ingest.fleet import FleetOptions, run_ingest
from ingest.load import IngestTask, Progress, SourceReport, ingest_source
from pipeline.orchestrate import ReplayTask, replay_source, replay_sources


def ingest_and_replay(
    path: str,
    root: Path,
    task: IngestTask,
    *,
    replay_task: ReplayTask,
    path_host: str | None = None,
    known: Collection[str] = (),
    progress: Progress | None = None,
) -> SourceReport:
    """A fleet task: ingest one input (ingest.load.ingest_source), then replay it.

    Stdin is only known to be a source already there once it has been read:
    it is not replayed then (the coordinator drops it).
    """
    report = ingest_source(path, root, task, path_host=path_host, known=known, progress=progress)
    if report.status == "added" and report.incoming and report.sha256 not in known:
        incoming = Path(report.incoming)
        report.replay = replay_source(incoming, incoming, report.manifest_entry(), replay_task)
    return report


def run_traces(
    paths: Sequence[str],
    out: Path,
    task: IngestTask,
    replay_task: ReplayTask,
    options: FleetOptions,
    *,
    force: bool = False,
) -> list[SourceReport]:
    """Ingest and replay ``paths`` into ``out``; one report per input, in order."""

    def replay_the_rest(
        stage: ds.Staging, ex: Executor | None, reports: list[SourceReport]
    ) -> None:
        manifest = stage.manifest
        new = {r.sha256 for r in reports if r.status == "added"}
        wanted = replay_task.describe(set())
        previous = manifest.get("replay") or {}
        same = all(previous.get(k) == wanted[k] for k in wanted if k != "guest_run_rule")
        stale = [
            s for s in manifest["sources"]
            if s["sha256"] not in new and not (same and "replay" in s)
        ]  # fmt: skip
        replay_sources(stage, ex, stale, replay_task, options)
        rules = {s["replay"]["guest_run_rule"] for s in manifest["sources"] if "replay" in s}
        manifest["replay"] = replay_task.describe(rules)

    return run_ingest(
        paths,
        Path(out),
        task,
        options,
        force=force,
        fn=ingest_and_replay,
        extra={"replay_task": replay_task},
        after=replay_the_rest,
    )
