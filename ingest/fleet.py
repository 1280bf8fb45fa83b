"""Many traces at once: one independent task per input, on any ``concurrent.futures`` executor.

The coordinator (this module, in the calling process) stages the dataset
(ingest.dataset.staging), submits one task per input and, as each finishes,
moves the partition tree the task wrote under ``_incoming/`` into place and
adds the source to the manifest.  Tasks take paths and return small
reports; no frame ever crosses a process boundary.

Executors: this process (``jobs=1``, and always for stdin), local worker
processes (``jobs=N``), or a Dask cluster through ``Client.get_executor()``
(``executor="dask"``, the optional ``fpureplay[dask]`` extra, imported only
here and only then).  Dask workers must see the dataset's directory at the
same path (shared storage).

Errors: ``on_error="raise"`` stops at the first failed input and leaves the
dataset exactly as it was; ``"skip"`` commits every input that went in and
reports the others as failed, so a rerun completes the rest (inputs already
present are skipped by sha256).  A task killed half way (SIGKILL, OOM) leaves
only its ``_incoming/<uuid>`` directory, which is never committed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from ingest import dataset as ds
from ingest.errors import InputError
from ingest.inputs import TraceFile, expand
from ingest.load import IngestTask, Progress, SourceReport, ingest_source, new_manifest

EXECUTORS = ("local", "dask")
ON_ERROR = ("raise", "skip")


@dataclass(frozen=True)
class FleetOptions:
    """Where the per-input tasks run and what a failure does."""

    jobs: int = 1  # local worker processes (1: in this process); Dask: LocalCluster workers
    executor: str = "local"  # "local" or "dask"
    scheduler: str | None = None  # Dask scheduler address; None starts a LocalCluster
    on_error: str = "raise"  # "raise" or "skip"
    progress: Progress | None = None

    def check(self) -> None:
        """InputError for an unknown executor or error mode."""
        if self.executor not in EXECUTORS:
            raise InputError("--executor", f"{self.executor!r} is not one of {EXECUTORS}")
        if self.on_error not in ON_ERROR:
            raise InputError("--on-error", f"{self.on_error!r} is not one of {ON_ERROR}")
        if self.jobs < 1:
            raise InputError("--jobs", f"{self.jobs} is not a positive number of processes")


class FleetError(InputError):
    """An input failed with ``on_error="raise"``; the dataset was left as it was.

    ``reports`` says what happened to every input up to then (the failed one
    has status "failed" and its reason).
    """

    def __init__(self, first: InputError, reports: list[SourceReport]) -> None:
        super().__init__(first.path, first.reason, line=first.line)
        self.reports = reports


@dataclass
class Job:
    """One task: ``fn(*args, **kwargs)`` returns a SourceReport with its incoming tree."""

    label: str  # what the summary calls it: the input path
    fn: Callable[..., SourceReport]
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    size: int = 0  # bytes, for the progress bar
    inline: bool = False  # must run in this process (stdin)


def run_ingest(
    paths: Sequence[str],
    out: Path,
    task: IngestTask,
    options: FleetOptions,
    *,
    force: bool = False,
    fn: Callable[..., SourceReport] = ingest_source,
    extra: dict[str, Any] | None = None,
    after: Callable[[ds.Staging, Executor | None, list[SourceReport]], None] | None = None,
) -> list[SourceReport]:
    """Ingest ``paths`` (files, directories, globs) into ``out``, one task per input.

    ``fn`` is the task (ingest_source, or pipeline.fleet's ingest-and-replay)
    and ``extra`` its further keyword arguments; ``after`` runs on the
    staged dataset before it is committed (the replay of sources already
    there, for `fpureplay run`).
    """
    options.check()
    if task.host is not None:
        ds.host_key(task.host)
    files = expand(list(paths))
    existing = check_target(out, force)
    with ds.staging(out, copy_existing=existing) as stage:
        manifest = stage.manifest or new_manifest()
        stage.manifest = manifest
        known = {s["sha256"]: s for s in manifest["sources"]}
        jobs = [_ingest_job(f, stage.path, task, known, fn, extra or {}) for f in files]
        with executor_for(options, len(jobs)) as ex:
            reports = run_jobs(ex, jobs, options, accept=_adder(stage, known))
            if after is not None:
                after(stage, ex, reports)
        manifest["tool_version"] = ds.tool_version()
        stage.commit()
    return reports


def check_target(out: Path, force: bool) -> bool:
    """Whether ``out`` is an existing dataset to add to (False: a new one, or ``force``).

    InputError when ``out`` is something else: a file, a directory with other
    things in it, or a dataset of another schema version.
    """
    out = Path(out)
    not_dataset = out.exists() and not (out / ds.MANIFEST).exists()
    if not_dataset and (not out.is_dir() or any(out.iterdir())):
        raise InputError(str(out), "exists and is not an fpureplay dataset; not touching it")
    existing = not force and (out / ds.MANIFEST).exists()
    if existing:
        ds.read_manifest(out)  # validates the schema version before any work
    return existing


def _ingest_job(
    file: TraceFile,
    root: Path,
    task: IngestTask,
    known: dict[str, dict[str, Any]],
    fn: Callable[..., SourceReport],
    extra: dict[str, Any],
) -> Job:
    stdin = file.path == "-"
    size = 0 if stdin else os.path.getsize(file.path)
    # The shas only: a worker needs no entry to skip a trace (accept adds it),
    # and every job's arguments are pickled for its worker.
    kwargs = {"path_host": file.path_host, "known": frozenset(known), **extra}
    return Job(file.path, fn, (file.path, root, task), kwargs, size=size, inline=stdin)


def _adder(
    stage: ds.Staging, known: dict[str, dict[str, Any]]
) -> Callable[[SourceReport], SourceReport]:
    def accept(report: SourceReport) -> SourceReport:
        first = known.get(report.sha256)
        if first is not None:  # in the dataset already, or named twice in this run
            if report.incoming:
                ds.remove_tree(Path(report.incoming))
            return SourceReport.of_entry(first, status="already present", path=report.path)
        if report.incoming:
            ds.adopt(Path(report.incoming), stage.path)
        entry = report.manifest_entry()
        known[report.sha256] = entry
        stage.manifest["sources"].append(entry)
        return replace(report, incoming=None)

    return accept


def run_jobs(
    ex: Executor | None,
    jobs: list[Job],
    options: FleetOptions,
    *,
    accept: Callable[[SourceReport], SourceReport],
) -> list[SourceReport]:
    """Run ``jobs`` on ``ex`` (None: here, one after the other); reports in job order.

    ``accept`` takes each finished job's report in the coordinator (moving
    its files into place) and returns the report to keep.  It sees them in
    job order once all are done, whatever order they finished in, so the
    same inputs make the same dataset (and the same manifest order) on any
    executor, and of two identical inputs the first named is the one added.
    """
    reports: list[SourceReport | None] = [None] * len(jobs)
    total = sum(j.size for j in jobs)
    done_bytes = 0

    def finish(i: int, report: SourceReport) -> None:
        nonlocal done_bytes
        reports[i] = report
        done_bytes += jobs[i].size
        if options.progress and ex is not None:
            options.progress(f"{len(jobs)} traces", done_bytes, total)

    def failed(i: int, exc: BaseException) -> None:
        reports[i] = _failure(jobs[i].label, exc)
        if options.on_error == "raise":
            if ex is not None:
                for f in futures:
                    f.cancel()
                # Running tasks finish before the staging directory goes.
                ex.shutdown(wait=True)
            done = [r for r in reports if r is not None]
            if isinstance(exc, InputError):
                raise FleetError(exc, done) from exc
            if _worker_died(exc):
                raise FleetError(InputError(jobs[i].label, _reason(exc)), done) from exc
            raise exc

    futures: dict[Future[SourceReport], int] = {}
    if ex is not None:
        for i, job in enumerate(jobs):
            if job.inline:
                continue
            try:
                futures[ex.submit(job.fn, *job.args, **job.kwargs)] = i
            except Exception as exc:  # a pool broken by an earlier task's death
                failed(i, exc)
    for i, job in enumerate(jobs):
        if ex is None or job.inline:
            kwargs = dict(job.kwargs)
            if options.progress and ex is None:
                kwargs["progress"] = options.progress
            try:
                finish(i, job.fn(*job.args, **kwargs))
            except Exception as exc:  # reported per input, or re-raised
                failed(i, exc)
    for fut in as_completed(futures):
        i = futures[fut]
        try:
            report = fut.result()
        except Exception as exc:  # reported per input, or re-raised
            failed(i, exc)
        else:
            finish(i, report)
    done = [r for r in reports if r is not None]
    return [accept(r) if r.status != "failed" else r for r in done]


def _failure(label: str, exc: BaseException) -> SourceReport:
    return SourceReport(
        id="",
        path=label,
        status="failed",
        stats=None,
        entry=None,
        sha256="",
        compression=None,
        truncated=False,
        lines=0,
        error=_reason(exc),
    )


def _worker_died(exc: BaseException) -> bool:
    return isinstance(exc, BrokenProcessPool) or type(exc).__name__ == "KilledWorker"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, InputError):
        return str(exc)
    if _worker_died(exc):
        return f"the worker process died ({type(exc).__name__}: killed, or out of memory?)"
    return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def executor_for(options: FleetOptions, n_jobs: int) -> Iterator[Executor | None]:
    """The executor ``options`` ask for; None means: run here, in order."""
    if options.executor == "dask":
        with _dask_executor(options) as ex:
            yield ex
        return
    workers = min(options.jobs, n_jobs)
    if workers <= 1:
        yield None
        return
    # spawn, not fork: a forked child of a process running polars' thread
    # pool can deadlock.
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as ex:
        yield ex


@contextlib.contextmanager
def _dask_executor(options: FleetOptions) -> Iterator[Executor]:
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError(
            "--executor dask", "needs the optional extra: pip install 'fpureplay[dask]'"
        ) from None
    with contextlib.ExitStack() as stack:
        if options.scheduler:
            try:
                client = stack.enter_context(Client(options.scheduler, timeout="10s"))
            except OSError as exc:
                raise InputError(options.scheduler, f"no Dask scheduler there: {exc}") from None
        else:
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=options.jobs,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                )
            )
            client = stack.enter_context(Client(cluster))
        # pure=False: two inputs with the same arguments are still two tasks.
        yield client.get_executor(pure=False)
