"""Command-line inputs to trace files: files, globs and directories, each with its host.

A fleet's traces usually arrive as a tree (``traces/host=web-7/2026-11-29.txt.zst``),
so a directory is searched recursively for trace files, and a ``host=NAME``
component in a path names the host its traces come from.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from ingest.dataset import safe_host
from ingest.errors import InputError

#: File names a directory search takes as traces (after .gz / .zst): what the
#: capture tools and `fpureplay record|simulate` write, plus names with no
#: suffix at all (`trace`, `trace_pipe` copies).  Explicitly named files are
#: always taken, whatever their name.
TRACE_SUFFIXES = (".txt", ".trace", ".log", ".dat", ".report", ".perf")
_COMPRESSED = (".gz", ".zst")


@dataclass(frozen=True)
class TraceFile:
    """One input: its path (``-`` for stdin) and the host its path names, if any."""

    path: str
    path_host: str | None = None


def expand(args: list[str]) -> list[TraceFile]:
    """The trace files ``args`` stand for, in order, each once.

    A directory stands for the trace files below it (sorted, hidden entries
    skipped); a pattern with ``*``, ``?`` or ``[`` that names no existing
    file is a glob (``**`` recurses).  An argument that matches nothing is an
    InputError, so a typo never silently shrinks a fleet run.
    """
    found: list[str] = []
    for arg in args:
        if arg == "-" or os.path.isfile(arg):
            found.append(arg)
        elif os.path.isdir(arg):
            below = _trace_files(Path(arg))
            if not below:
                raise InputError(arg, "directory holds no trace files (" + _suffix_hint() + ")")
            found += below
        elif any(c in arg for c in "*?["):
            matches = sorted(glob.glob(arg, recursive=True))
            if not matches:
                raise InputError(arg, "matches no file")
            for m in matches:
                found += _trace_files(Path(m)) if os.path.isdir(m) else [m]
        else:
            raise InputError(arg, "No such file or directory")
    unique = list(dict.fromkeys(found))
    return [TraceFile(p, None if p == "-" else path_host(p)) for p in unique]


def path_host(path: str) -> str | None:
    """The host a path names by its innermost ``host=NAME`` directory, if any."""
    for part in reversed(Path(path).parent.parts):
        if part.startswith("host=") and len(part) > 5:
            return safe_host(part[5:])
    return None


def is_trace_name(name: str) -> bool:
    """Whether a directory search takes a file called ``name`` as a trace."""
    if name.startswith("."):
        return False
    for suffix in _COMPRESSED:
        name = name.removesuffix(suffix)
    suffix = Path(name).suffix
    return suffix == "" or suffix in TRACE_SUFFIXES


def _trace_files(root: Path) -> list[str]:
    out = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [os.path.join(dirpath, f) for f in files if is_trace_name(f)]
    return sorted(out)


def _suffix_hint() -> str:
    return "names ending in " + ", ".join(TRACE_SUFFIXES) + ", optionally .gz/.zst, or no suffix"
