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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from ingest.errors import InputError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
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
        raise InputError(
            str(path),
            f"schema_version {manifest.get('schema_version')!r} is not {SCHEMA_VERSION}",
        )
    return manifest


def partition_dir(root: Path, table: str, source: str, policy: str | None = None) -> Path:
    """Where a table's files for one source (and policy) live."""
    base = root / table
    if policy is not None:
        base = base / f"policy={policy}"
    return base / f"source={source}"


class PartitionWriter:
    """Appends frames to one Parquet file, in row groups of about ``ROW_GROUP_ROWS``.

    Frames are buffered until they hold that many rows: fewer, bigger row
    groups cost less to encode (the writer sets up its encoders and a zstd
    context per column chunk).
    """

    #: rows gathered before a row group is written
    ROW_GROUP_ROWS = 256 * 1024

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
    """
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    path = target.with_name(f".{target.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    path.mkdir()
    stage = Staging(target, path)
    try:
        if copy_existing and target.exists():
            _link_tree(target, path)
            stage.manifest = json.loads((target / MANIFEST).read_text())
        yield stage
    except BaseException:
        stage.abort()
        raise
    finally:
        if path.exists():  # not committed
            stage.abort()


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
