"""SIGKILL during ingest, replay, run, sweep, dashboard, simulate, query -o: nothing half written.

Each command runs as a subprocess in a session of its own (so that a kill
takes its worker processes too) and is SIGKILLed at several points of its
work: when a sign of progress appears on disk (the hidden staging
directory, a task's files in it, its manifest; a file's hidden temporary;
the target changing) and after a fixed fraction of an uninterrupted run's
duration.  After every kill the target is exactly as it was (same files,
bytes and inodes) or exactly what the uninterrupted run wrote, and nothing
else visible is beside it.  SIGKILL runs no cleanup code, so hidden
leftovers (``.NAME.staging-*``, ``.NAME.tmp-*``) may stay; the next
successful run removes them and writes what an uninterrupted run writes.

The traces are small model traces (150 ms of the `mixed` preset, 30k
events), so that each command takes about a second, most of it start-up.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from pipeline.model.api import generate

FPUREPLAY = str(Path(sys.executable).with_name("fpureplay"))  # the console script
#: Seconds between two looks for a sign of progress.
POLL = 0.002
#: Every killed run is also given up on after this long (a hung command fails the test).
TIMEOUT = 120.0

T = TypeVar("T")
#: path relative to the target -> (sha256 or "dir", inode); None when the target is absent.
Snapshot = dict[str, tuple[str, int]] | None


def _sha256(path: Path, normalise: Callable[[bytes], bytes] | None = None) -> str:
    data = path.read_bytes()
    return hashlib.sha256(normalise(data) if normalise else data).hexdigest()


def _walk(path: Path, entry: Callable[[Path], T]) -> dict[str, T] | None:
    """``entry`` of ``path`` (a file) or of everything under it (a tree); None when absent."""
    if not path.exists():
        return None
    if path.is_file():
        return {".": entry(path)}
    return {str(p.relative_to(path)): entry(p) for p in sorted(path.rglob("*"))}


def snapshot(path: Path) -> Snapshot:
    """Every file and directory of ``path`` with its sha256 and inode."""
    return _walk(path, lambda p: ("dir" if p.is_dir() else _sha256(p), p.stat().st_ino))


def contents(
    path: Path, normalise: Callable[[bytes], bytes] | None = None
) -> dict[str, str] | None:
    """:func:`snapshot` without the inodes (what another run can reproduce), normalised."""
    return _walk(path, lambda p: "dir" if p.is_dir() else _sha256(p, normalise))


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies excepted)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@dataclass(frozen=True)
class Kill:
    """When to SIGKILL a run: a glob gaining a match, a target changing, or a delay."""

    sign: str | None = None  # glob under the work directory; fires on a match not there at start
    on_change: bool = False  # fire when a target's inode, size or mtime changes
    fraction: float | None = None  # of the uninterrupted run's duration
    group: bool = True  # the whole process group, or only the command (its workers live on)
    argv: tuple[str, ...] | None = None  # instead of the case's command
    must_kill: bool = False  # the sign always comes before the end: the run must die of it
    expect: tuple[str, ...] | None = None  # per target "old" or "new" when timing cannot matter


@dataclass
class Case:
    """A command, what it writes, and the state it starts from."""

    argv: list[str]
    targets: tuple[str, ...]  # names in the work directory
    prepare: Callable[[Path], None]  # puts the targets' old state (if any) in the work directory
    kills: tuple[Kill, ...]
    normalise: Callable[[bytes], bytes] | None = None  # for comparing with the reference


def run_and_kill(argv: list[str], work: Path, kill: Kill, targets: tuple[str, ...],
                 duration: float) -> int:  # fmt: skip
    """Run ``argv`` in ``work`` and SIGKILL it as ``kill`` says; its exit status (-9: killed)."""
    initial = set(work.glob(kill.sign)) if kill.sign else set()
    stats = [_stat(work / t) for t in targets]
    proc = subprocess.Popen(
        argv, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    start = time.monotonic()
    deadline = start + (kill.fraction * duration if kill.fraction is not None else TIMEOUT)
    while proc.poll() is None:
        fire = time.monotonic() >= deadline
        fire = fire or (kill.sign is not None and bool(set(work.glob(kill.sign)) - initial))
        fire = fire or (kill.on_change and [_stat(work / t) for t in targets] != stats)
        if fire:
            (os.killpg if kill.group else os.kill)(proc.pid, signal.SIGKILL)
            break
        time.sleep(POLL)
    status = proc.wait(timeout=TIMEOUT)
    # Workers orphaned by a kill of the command alone still write into the
    # (hidden) staging directory while the state is checked; end them before
    # the next run.
    if not kill.group:
        _check_leftovers_hidden(work, targets)
    with contextlib.suppress(ProcessLookupError):  # a worker outliving a kill of the command
        os.killpg(proc.pid, signal.SIGKILL)
    give_up = time.monotonic() + 10
    while _group_alive(proc.pid) and time.monotonic() < give_up:
        time.sleep(0.01)
    return status


def _check_leftovers_hidden(work: Path, targets: tuple[str, ...]) -> None:
    """Only the targets are visible; anything else is hidden and named after a target."""
    names = {p.name for p in work.iterdir()}
    assert {n for n in names if not n.startswith(".")} == {t for t in targets if t in names}
    for name in names - set(targets):
        assert any(name.startswith(f".{t}.") for t in targets), name


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def check_interrupted(case: Case, tmp: Path) -> list[tuple[Kill, int, tuple[str, ...]]]:
    """Run ``case`` uninterrupted, then killed at each of its points, then once more.

    Returns what each kill left: (kill, exit status, per target "old" or "new").
    """
    ref = tmp / "reference"
    ref.mkdir()
    case.prepare(ref)
    start = time.monotonic()
    done = subprocess.run(case.argv, cwd=ref, capture_output=True, text=True, check=False)
    duration = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    reference = {t: contents(ref / t, case.normalise) for t in case.targets}
    assert None not in reference.values()

    work = tmp / "work"
    work.mkdir()
    case.prepare(work)
    before = {t: snapshot(work / t) for t in case.targets}
    outcomes = []
    for kill in case.kills:
        argv = list(kill.argv) if kill.argv else case.argv
        status = run_and_kill(argv, work, kill, case.targets, duration)
        if kill.must_kill:
            assert status == -signal.SIGKILL, f"{kill}: the run ended ({status}) before its kill"
        assert status in (0, -signal.SIGKILL), f"{kill}: exit status {status}"
        _check_leftovers_hidden(work, case.targets)
        states = []
        for t in case.targets:
            if snapshot(work / t) == before[t]:
                states.append("old")
            else:
                # Changed, so it must be the whole new version: not a prefix, not a mix.
                got = contents(work / t, case.normalise)
                assert got == reference[t], f"{kill}: {t} is neither the old nor the new version"
                states.append("new")
        if status == 0:
            assert states == ["new"] * len(case.targets), f"{kill}: finished but {states}"
        if kill.expect is not None:
            assert tuple(states) == kill.expect, kill
        outcomes.append((kill, status, tuple(states)))
        if "new" in states:  # start the next kill from the old state again
            for t in case.targets:
                _remove(work / t)
            case.prepare(work)
            before = {t: snapshot(work / t) for t in case.targets}

    # The next run works, cleans up the kills' hidden leftovers and writes the same.
    again = subprocess.run(case.argv, cwd=work, capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr
    assert {t: contents(work / t, case.normalise) for t in case.targets} == reference
    assert {p.name for p in work.iterdir()} == {p.name for p in ref.iterdir()}
    return outcomes


# -- inputs -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Traces a.txt and b.txt, and datasets ds_a (a ingested) and replayed (ds_a replayed)."""
    from ingest.load import ingest_traces
    from pipeline.orchestrate import replay_dataset

    root = tmp_path_factory.mktemp("inputs")
    for name, seed in (("a", 1), ("b", 2)):
        generate("mixed", seed=seed, duration_ms=150).write(root / f"{name}.txt", "tracefs")
    ingest_traces([str(root / "a.txt")], root / "ds_a")
    shutil.copytree(root / "ds_a", root / "replayed")
    replay_dataset(root / "replayed")
    return root


def _copy(src: Path, name: str) -> Callable[[Path], None]:
    def prepare(work: Path) -> None:
        if src.is_dir():
            shutil.copytree(src, work / name)
        else:
            shutil.copyfile(src, work / name)

    return prepare


def _old_files(*names: str) -> Callable[[Path], None]:
    """Earlier results under the target names: they must stay or be replaced whole."""

    def prepare(work: Path) -> None:
        for name in names:
            (work / name).write_bytes(f"an earlier {name}\n".encode())

    return prepare


def _nothing(work: Path) -> None:
    pass


STAGING = ".ds.staging-*"
#: A task's partitions in the staging directory (ingest and replay tasks write there first).
TASK_FILES = ".ds.staging-*/_incoming/*/*"
#: Written at the commit, just before the swap.
STAGED_MANIFEST = ".ds.staging-*/manifest.json"

DATASET_KILLS = (
    # Before the commit the dataset is untouched (an absent one stays absent: "old").
    Kill(sign=STAGING, must_kill=True, expect=("old",)),
    Kill(sign=TASK_FILES, must_kill=True, expect=("old",)),
    # Between the staged manifest and the swap, or just after it.
    Kill(sign=STAGED_MANIFEST, on_change=True),
    # Just after the swap, while the old version is being deleted: the new one is whole.
    Kill(on_change=True, expect=("new",)),
    Kill(fraction=0.5),
)


def _file_kills(name: str) -> tuple[Kill, ...]:
    # The hidden temporary appearing, or the target itself changing: a writer
    # that wrote the target in place would be caught half way by the latter.
    return (Kill(sign=f".{name}.tmp-*", on_change=True), Kill(fraction=0.6))


# -- datasets ---------------------------------------------------------------------------------


def test_ingest_into_an_existing_dataset(inputs, tmp_path):
    """Adding a trace: the dataset keeps its files (same inodes) or has both traces."""
    case = Case(
        [FPUREPLAY, "ingest", str(inputs / "b.txt"), "-o", "ds", "-j", "1"],
        ("ds",), _copy(inputs / "ds_a", "ds"), DATASET_KILLS,
    )  # fmt: skip
    check_interrupted(case, tmp_path)


def test_replay(inputs, tmp_path):
    """Replaying: the dataset is the ingested one, untouched, or the replayed one."""
    case = Case(
        [FPUREPLAY, "replay", "ds", "-j", "1"],
        ("ds",), _copy(inputs / "ds_a", "ds"), DATASET_KILLS,
    )  # fmt: skip
    check_interrupted(case, tmp_path)


def test_run_into_a_new_dataset(inputs, tmp_path):
    """Ingest and replay of two traces into a new dataset: absent, or whole."""
    argv = [FPUREPLAY, "run", str(inputs / "a.txt"), str(inputs / "b.txt"), "-o", "ds"]
    case = Case(
        [*argv, "-j", "1"], ("ds",), _nothing,
        (
            *DATASET_KILLS,
            # The coordinator alone, while its two worker processes are busy:
            # they finish their tasks into the hidden staging directory, which
            # is never committed.
            Kill(sign=TASK_FILES, group=False, argv=(*argv, "-j", "2"), must_kill=True,
                 expect=("old",)),
        ),
    )  # fmt: skip
    check_interrupted(case, tmp_path)


# -- files ------------------------------------------------------------------------------------


_NONCE = re.compile(rb'nonce="([A-Za-z0-9_-]+)"')
_FLOAT = re.compile(rb"\d+\.\d+(?:e[-+]?\d+)?")


def _dashboard_bytes(data: bytes) -> bytes:
    """A dashboard without what two runs over one dataset do not share.

    The page's CSP nonce is random, and DuckDB adds floats in parallel, in
    no fixed order, so sums differ in their last bits: floats are compared
    to 9 significant digits.
    """
    found = _NONCE.search(data)
    if found:
        data = data.replace(found[1], b"NONCE")
    return _FLOAT.sub(lambda m: b"%.9g" % float(m[0]), data)


def test_dashboard(inputs, tmp_path):
    """Over an earlier page: the earlier page, or the whole new one."""
    case = Case(
        [FPUREPLAY, "dashboard", str(inputs / "replayed"), "-o", "report.html"],
        ("report.html",), _old_files("report.html"), _file_kills("report.html"),
        normalise=_dashboard_bytes,
    )  # fmt: skip
    check_interrupted(case, tmp_path)


def test_simulate(tmp_path):
    """Over an earlier trace and truth: each is the earlier file or the whole new one."""
    trace, truth = "sim.txt", "sim.txt.truth.json"
    case = Case(
        [FPUREPLAY, "simulate", "--preset", "mixed", "--seed", "3", "--duration-ms", "100",
         "-o", trace],
        (trace, truth), _old_files(trace, truth),
        (Kill(sign=f".{trace}.tmp-*", on_change=True),
         Kill(sign=f".{truth}.tmp-*"), Kill(fraction=0.6)),
    )  # fmt: skip
    outcomes = check_interrupted(case, tmp_path)
    # The trace is renamed into place first, then its truth: never a new truth
    # beside an old trace.
    assert all(states != ("old", "new") for _, _, states in outcomes)


EVENTS_SQL = "SELECT line_no, ts_ns, cpu, pid, event, args FROM events ORDER BY source, line_no"


@pytest.mark.parametrize(("fmt", "name"), [("csv", "events.csv"), ("parquet", "events.parquet")])
def test_query_output(inputs, tmp_path, fmt, name):
    """30k rows over an earlier result: the earlier file, or the whole new one."""
    case = Case(
        [FPUREPLAY, "query", str(inputs / "replayed"), "--sql", EVENTS_SQL, "-f", fmt, "-o", name],
        (name,), _old_files(name), _file_kills(name),
    )  # fmt: skip
    check_interrupted(case, tmp_path)


def test_sweep_writes_only_its_table_to_stdout(tmp_path):
    """`sweep` writes no file: killed, it leaves nothing, and stdout has nothing until the end."""
    argv = [FPUREPLAY, "sweep", "-g", "overcommit=1,2", "--no-pingpong", "--duration-ms", "100",
            "-f", "csv"]  # fmt: skip
    work = tmp_path / "work"
    work.mkdir()
    start = time.monotonic()
    done = subprocess.run(argv, cwd=work, capture_output=True, check=False)
    duration = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 3 and lines[0].startswith("overcommit,") and lines[0].endswith(",exact")
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2"]
    assert [line.split(",")[-1] for line in lines[1:]] == ["True", "True"]
    for fraction in (0.4, 0.8):
        out = tmp_path / f"stdout-{fraction}"
        with out.open("wb") as stdout:
            proc = subprocess.Popen(argv, cwd=work, stdout=stdout, stderr=subprocess.DEVNULL,
                                    start_new_session=True)  # fmt: skip
            time.sleep(fraction * duration)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            status = proc.wait(timeout=TIMEOUT)
        assert (status, out.read_bytes()) in ((-signal.SIGKILL, b""), (0, done.stdout))
        assert list(work.iterdir()) == []
    again = subprocess.run(argv, cwd=work, capture_output=True, check=False)
    assert (again.returncode, again.stdout) == (0, done.stdout)
    assert list(work.iterdir()) == []


# -- the helper ---------------------------------------------------------------------------------


def test_atomic_write_keeps_the_old_file_on_error_and_its_permissions_on_success(tmp_path):
    """An exception leaves the old file and no temporary; success keeps the file's mode."""
    from ingest.dataset import atomic_write

    target = tmp_path / "out.csv"
    target.write_text("old\n")
    target.chmod(0o640)
    with pytest.raises(KeyboardInterrupt), atomic_write(target) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]
    assert target.read_text() == "old\n"
    with atomic_write(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(f".out.csv.tmp-{os.getpid()}-")
        assert target.read_text() == "old\n"  # nothing visible until the block ends
        tmp.write_text("new\n")
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]
    assert (target.read_text(), target.stat().st_mode & 0o777) == ("new\n", 0o640)


def test_atomic_write_removes_only_dead_writers_temporaries(tmp_path):
    """Leftovers of a killed writer go; a running writer's temporary stays."""
    from ingest.dataset import atomic_write

    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / f".out.txt.tmp-{dead.pid}-0123abcd").write_text("killed half way")
    (tmp_path / f".out.txt.tmp-{os.getpid()}-4567cdef").write_text("still writing")
    (tmp_path / f".other.txt.tmp-{dead.pid}-0123abcd").write_text("another file's")
    with atomic_write(tmp_path / "out.txt") as tmp:
        tmp.write_text("done\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f".other.txt.tmp-{dead.pid}-0123abcd", f".out.txt.tmp-{os.getpid()}-4567cdef", "out.txt",
    ]  # fmt: skip


def test_atomic_write_follows_symlinks_and_writes_special_files_in_place(tmp_path):
    """A symlink's target is replaced (the link stays); a FIFO or a pipe is written in place."""
    import threading

    from ingest.dataset import atomic_write

    real = tmp_path / "real.html"
    real.write_text("old")
    link = tmp_path / "link.html"
    link.symlink_to(real)
    with atomic_write(link) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".real.html.tmp-")
        tmp.write_text("new")
    assert link.is_symlink() and real.read_text() == "new"

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    with atomic_write(fifo) as path:
        assert path == fifo
        path.write_bytes(b"rows\n")
    reader.join(timeout=10)
    assert got == [b"rows\n"] and fifo.is_fifo()

    # What `-o /dev/stdout` names when stdout is a pipe: a /proc link that
    # os.path.realpath cannot resolve to a path.
    read_end, write_end = os.pipe()
    try:
        with atomic_write(f"/proc/self/fd/{write_end}") as path:
            path.write_bytes(b"piped\n")
        assert os.read(read_end, 100) == b"piped\n"
    finally:
        os.close(read_end)
        os.close(write_end)
