"""The dataset directory: hive-partitioned zstd Parquet plus ``manifest.json``.

Every change is built aside and swapped in whole: a new or replaced dataset
is written to a staging directory next to it, and adding sources to an
existing one starts from hard links of its (immutable) files.  The staging
directory then replaces the dataset with one atomic ``renameat2`` exchange
(two renames where the filesystem lacks it), so readers see the old dataset
or the new one, never a mix, and an interrupted ingest leaves the old one.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from ingest.errors import InputError

#: 2: partitions gained the `host=` level (events/host=H/source=ID/).
SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
#: Host of a source whose host neither --host, its path nor its header names.
UNKNOWN_HOST = "unknown"
#: Per-run scratch directory inside a staged dataset; never committed.
INCOMING = "_incoming"
TABLES = ("events", "rejects", "runs", "fpu_ops", "validation", "audit")
PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "compression_level": 3}
#: Sorted or nearly sorted integers: delta encoding makes them almost free.
DELTA_COLUMNS = ("line_no", "ts_ns")
#: Columns readers filter on; statistics elsewhere only cost write time.
STATS_COLUMNS = ("line_no", "ts_ns", "cpu", "pid", "event")


def parquet_options(names: list[str]) -> dict[str, Any]:
    """Writer options for a table with columns ``names``."""
    delta = [c for c in DELTA_COLUMNS if c in names]
    opts = dict(PARQUET_OPTIONS, write_statistics=[c for c in STATS_COLUMNS if c in names])
    if delta:
        opts["column_encoding"] = dict.fromkeys(delta, "DELTA_BINARY_PACKED")
        opts["use_dictionary"] = [c for c in names if c not in delta]
    return opts


def tool_version() -> str:
    """The installed fpureplay version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fpureplay")
    except PackageNotFoundError:
        return "0+unknown"


def source_id(path: str, sha256: str) -> str:
    """A stable, path-safe id for one input: its file stem and a digest prefix."""
    stem = Path(path).name if path not in ("-", "<stdin>") else "stdin"
    for suffix in (".gz", ".zst", ".txt", ".dat"):
        stem = stem.removesuffix(suffix)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "trace"
    return f"{stem[:48]}-{sha256[:12]}"


_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def host_key(name: str) -> str:
    """``name`` as a host partition value; InputError unless it is a plain host name.

    Host names become directory names (``host=NAME``) that Spark, Trino and
    DuckDB parse, so only hostname characters are accepted.
    """
    if not _HOST_NAME.fullmatch(name):
        raise InputError(
            repr(name), "is not a usable host name (letters, digits, '.', '_', '-'; at most 63)"
        )
    return name


def safe_host(name: str | None) -> str:
    """A host name taken from a trace or a path, made path-safe (never an error).

    Trace headers are untrusted: anything outside hostname characters becomes
    ``_``, and an empty result is :data:`UNKNOWN_HOST`.
    """
    if not name:
        return UNKNOWN_HOST
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")[:63]
    return cleaned or UNKNOWN_HOST


def read_manifest(dataset: Path) -> dict[str, Any]:
    """The manifest of ``dataset``; InputError when it is not a dataset."""
    path = Path(dataset) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(str(dataset), "is not an fpureplay dataset (no manifest.json)") from None
    except (OSError, ValueError) as exc:
        raise InputError(str(path), f"unreadable manifest: {exc}") from exc
    if manifest.get("schema_version") != SCHEMA_VERSION:
        hint = " (a dataset from before hosts: ingest its traces again)" if manifest.get(
            "schema_version"
        ) == 1 else ""
        raise InputError(
            str(path),
            f"schema_version {manifest.get('schema_version')!r} is not {SCHEMA_VERSION}{hint}",
        )
    return manifest


def partition_dir(
    root: Path, table: str, source: str, *, host: str, policy: str | None = None
) -> Path:
    """Where a table's files for one host's source (and policy) live."""
    base = root / table
    if policy is not None:
        base = base / f"policy={policy}"
    return base / f"host={host}" / f"source={source}"


def source_partitions(
    root: Path, source: str, host: str, tables: Sequence[str] = TABLES
) -> list[Path]:
    """The partition directories of one source in ``tables`` (every policy of fpu_ops)."""
    found = []
    for table in tables:
        base = Path(root) / table
        if table == "fpu_ops":
            found += sorted(base.glob(f"policy=*/host={host}/source={source}"))
        else:
            found.append(base / f"host={host}" / f"source={source}")
    return [p for p in found if p.is_dir()]


def incoming_dir(root: Path) -> Path:
    """A fresh, private directory for one task's files inside the staged ``root``.

    A task writes its whole partition tree there and the coordinator moves
    it into place (:func:`adopt`) once the task has succeeded, so a task
    killed half way leaves nothing but this directory, which is never
    committed.
    """
    path = Path(root) / INCOMING / uuid.uuid4().hex
    path.mkdir(parents=True)
    return path


def remove_tree(path: Path) -> None:
    """Remove a directory tree if it is there."""
    shutil.rmtree(path, ignore_errors=True)


def adopt(incoming: Path, root: Path) -> None:
    """Move a finished task's partition tree from ``incoming`` into ``root``.

    Partitions are directories (``.../source=ID``): each is renamed whole,
    replacing a partition of the same source left by an earlier replay.
    """
    incoming = Path(incoming)
    for part in sorted(incoming.rglob("source=*")):
        dest = Path(root) / part.relative_to(incoming)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(part, dest)
    shutil.rmtree(incoming)


class PartitionWriter:
    """Appends frames to one Parquet file, in row groups of about ``ROW_GROUP_ROWS``.

    Frames are buffered until they hold that many rows: fewer, bigger row
    groups cost less to encode (the writer sets up its encoders and a zstd
    context per column chunk).
    """

    #: rows gathered before a row group is written (each batch waiting holds its
    #: block's text alive: 128k rows let ingest use bigger blocks in less memory)
    ROW_GROUP_ROWS = 128 * 1024

    def __init__(self, path: Path, schema: pl.Schema) -> None:
        self.path = path
        self.schema = schema
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def write(self, frame: pl.DataFrame | pa.Table) -> None:
        """Append ``frame`` (columns in schema order), or :meth:`arrow` of it."""
        table = frame if isinstance(frame, pa.Table) else self.arrow(frame)
        if self._writer is None:
            self._open(table.schema)
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        if self._pending_rows >= self.ROW_GROUP_ROWS:
            self._flush()

    def _open(self, schema: pa.Schema) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(
            self.path, schema, store_schema=False, **parquet_options(schema.names)
        )
        # The Arrow schema stored for readers stays the one of polars' default
        # conversion (large_string, large_binary), as before views were
        # written: only the in-memory form differs.
        stored = pl.DataFrame(schema=pl.from_arrow(schema.empty_table()).schema).to_arrow()
        self._writer.add_key_value_metadata(
            {"ARROW:schema": base64.b64encode(stored.schema.serialize()).decode()}
        )

    def _flush(self) -> None:
        if not self._pending:
            return
        assert self._writer is not None
        table = self._pending[0] if len(self._pending) == 1 else pa.concat_tables(self._pending)
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self._pending = []
        self._pending_rows = 0

    @staticmethod
    def arrow(frame: pl.DataFrame) -> pa.Table:
        """``frame`` as the Arrow table :meth:`write` writes (callable from any thread).

        polars' own string views, not copied into Arrow's ``large_string``
        (which cost about a tenth of ingest's CPU time).
        """
        return frame.to_arrow(compat_level=pl.CompatLevel.newest())

    def close(self) -> None:
        """Finish the file; an empty table still gets a file with its schema."""
        if self._writer is None:
            self.write(self.schema.to_frame())
        self._flush()
        assert self._writer is not None
        self._writer.close()


class BackgroundWriter:
    """Feeds PartitionWriters from a thread of their own, in submission order.

    Encoding and compressing row groups is a third of ingest's CPU time;
    done by the thread that also reads the input and hands blocks to the
    parsers, it left the parsers idle while it ran.  The queue holds at
    most ``depth`` batches, which bounds the memory it adds.  An error in
    the writer thread (a full disk) is raised by the next :meth:`put` or
    by :meth:`close`.
    """

    def __init__(self, *writers: PartitionWriter, depth: int = 2) -> None:
        import queue
        import threading

        self.writers = writers
        self._queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="parquet-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain: the producer learns of the error on its next put
            try:
                for writer, table in zip(self.writers, batch, strict=True):
                    if table is not None:
                        writer.write(table)
            except BaseException as exc:  # re-raised in the producer's thread
                self._error = exc

    def put(self, *tables: Any) -> None:
        """Queue one table (or None) per writer; raises the writer thread's error."""
        self._raise()
        self._queue.put(tables)

    def close(self) -> None:
        """Write what is queued, finish every file, and raise any error."""
        self._queue.put(None)
        self._thread.join()
        self._raise()
        for writer in self.writers:
            writer.close()

    def abandon(self) -> None:
        """Stop the thread without finishing the files (an error elsewhere)."""
        self._error = self._error or RuntimeError("abandoned")
        self._queue.put(None)
        self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error


def write_frame(path: Path, frame: pl.DataFrame) -> None:
    """Write one frame as one Parquet file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = frame.to_arrow()
    pq.write_table(table, path, **parquet_options(table.schema.names))


@dataclass
class Staging:
    """A dataset being built aside; :meth:`commit` swaps it in."""

    target: Path
    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)

    def commit(self) -> None:
        """Write the manifest and replace the target with the staged dataset."""
        shutil.rmtree(self.path / INCOMING, ignore_errors=True)  # killed tasks' leftovers
        tmp = self.path / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(self.manifest, indent=1, sort_keys=False) + "\n")
        os.replace(tmp, self.path / MANIFEST)
        _fsync_dir(self.path)
        if self.target.exists():
            if _exchange(self.path, self.target):
                shutil.rmtree(self.path)  # now holds the old dataset
            else:
                old = self.target.with_name(f".{self.target.name}.old-{uuid.uuid4().hex[:8]}")
                os.rename(self.target, old)
                os.rename(self.path, self.target)
                shutil.rmtree(old)
        else:
            os.rename(self.path, self.target)
        _fsync_dir(self.target.parent)

    def abort(self) -> None:
        """Drop the staged dataset; the target is untouched."""
        shutil.rmtree(self.path, ignore_errors=True)


@contextlib.contextmanager
def staging(target: Path, *, copy_existing: bool) -> Iterator[Staging]:
    """Stage a new version of ``target``; it is swapped in only by ``commit()``.

    With ``copy_existing`` the staged dataset starts as hard links of the
    current one (its files are never modified in place, so links are safe).
    Any exception, KeyboardInterrupt included, removes the staging directory.
    Only one process at a time writes a dataset (:func:`writer_lock`); an
    OSError while writing (a full disk, a read-only mount) becomes an
    :class:`InputError` that says the dataset was left as it was.
    """
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(target):
        _remove_stale_staging(target)
        path = target.with_name(f".{target.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        stage = Staging(target, path)
        try:
            path.mkdir()
            if copy_existing and target.exists():
                _link_tree(target, path)
                stage.manifest = json.loads((target / MANIFEST).read_text())
            yield stage
        except OSError as exc:
            stage.abort()
            what = f"{exc.filename}: " if exc.filename else ""
            raise InputError(
                str(target),
                f"cannot write the dataset ({what}{exc.strerror or exc});"
                " it was left as it was",
            ) from exc
        except BaseException:
            stage.abort()
            raise
        finally:
            if path.exists():  # not committed
                stage.abort()


@contextlib.contextmanager
def writer_lock(target: Path) -> Iterator[None]:
    """Hold the write lock of dataset ``target``; InputError when another process has it.

    The lock is an ``flock`` on ``.NAME.lock`` beside the dataset (not in it:
    the dataset directory itself is swapped by each commit).  The kernel
    drops it when its holder dies, SIGKILL included, so it is never stale.
    A second writer is refused at once, naming the holder, rather than
    queued: an ingest can take minutes, and silently waiting for it looks
    like a hang.
    """
    import fcntl

    lock = target.with_name(f".{target.name}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise InputError(
                str(target),
                f"another fpureplay process (pid {holder}) is writing this dataset;"
                " run again when it has finished",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def _remove_stale_staging(target: Path) -> None:
    # Under the write lock no other staging directory of this dataset can be
    # in use: any left is from a writer that was killed (SIGKILL, power loss).
    import glob

    for kind in ("staging", "old"):
        for stale in target.parent.glob(f".{glob.escape(target.name)}.{kind}-*"):
            remove_tree(stale)


def _link_tree(src: Path, dst: Path) -> None:
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        for d in dirs:
            (dst / rel / d).mkdir(exist_ok=True)
        for f in files:
            if f == MANIFEST:
                continue
            try:
                os.link(Path(root) / f, dst / rel / f)
            except OSError:
                shutil.copy2(Path(root) / f, dst / rel / f)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2); False when unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    res = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return res == 0


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a hidden path beside ``path`` to write; when the block ends it replaces ``path``.

    For every file written for a person or a program to read (dashboards,
    query results, simulated traces): readers see the old file or the
    whole new one, never a prefix.  The temporary file is
    ``.NAME.tmp-PID-RAND`` in the same directory (a rename is atomic only
    within one filesystem), created empty with the old file's permissions,
    and fsynced before the rename.  An exception (Ctrl-C included) removes
    it; only SIGKILL or a power cut can leave one behind, and the next
    write of ``path`` removes those whose process is gone.  A symlink is
    followed (its target is replaced, the link kept); a path that exists
    and is not a regular file (``/dev/stdout``, a FIFO) is yielded as is
    and written in place, since it cannot be renamed over.
    """
    import glob
    import stat

    try:
        # Through symlinks, as the kernel sees it: /dev/stdout is a pipe or a tty
        # (os.path.realpath cannot name a pipe).
        mode: int | None = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        yield Path(path)
        return
    path = Path(os.path.realpath(path))
    # Leftovers of killed writers: the PID in the name is not running any more.
    for stale in path.parent.glob(f".{glob.escape(path.name)}.tmp-*-*"):
        pid = stale.name.rsplit("-", 2)[-2]
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                stale.unlink()
        except (ValueError, OSError):  # not our name, or a live process of another user
            pass
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        if mode is not None:
            os.chmod(tmp, stat.S_IMODE(mode))
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data is on disk before the name points at it
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
