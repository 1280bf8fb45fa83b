"""Tell the trace format from the first lines."""

from __future__ import annotations

import re

from ingest import perfscript, tracecmd, tracefs

FORMATS = (tracefs.NAME, tracecmd.NAME, perfscript.NAME)

_TRACEFS = re.compile(tracefs.HEADER)
_PERF = re.compile(perfscript.HEADER)
_INSTANCE = re.compile(tracecmd.INSTANCE_PREFIX)
_PERF_EVENT = re.compile(r"\[\d+\]\s+\d+\.\d+:\s+(?:\d+\s+)?[\w-]+:[\w.-]+:")
#: Characters of a line the patterns look at.  The marks are in a line's
#: header (real headers, instance prefix included, stay well under 200
#: characters), and Python's backtracking engine takes time quadratic in the
#: length of a line such as ``[1] 1.1: a:b: a`` + blanks + ``1`` + blanks
#: (half a minute at 40 KB, minutes for one 64 KiB line).
_HEAD_CHARS = 512


def detect_format(head: list[str]) -> str | None:
    """The format of a trace whose first lines are ``head``, or None if unknown.

    trace-cmd report opens with ``cpus=N`` and prefixes instance buffers
    with ``NAME: ``; tracefs has its ``# tracer:`` header or a ``comm-pid
    [cpu]`` task column; perf script has ``comm tid [cpu]`` and
    ``subsystem:event:``.  Text in the ftrace layout without any of these
    marks (trace_pipe with irq-info off) parses the same either way and is
    called tracefs.
    """
    for line in (full[:_HEAD_CHARS] for full in head):
        stripped = line.strip()
        if not stripped:
            continue
        if re.match(r"^(cpus=\d+|version = \d+)$", stripped):
            return tracecmd.NAME
        if stripped.startswith("# tracer:"):
            return tracefs.NAME
        if stripped.startswith("#"):
            continue
        if _PERF_EVENT.search(line) and _PERF.match(line):
            return perfscript.NAME
        prefixed = _INSTANCE.match(line)
        if prefixed and _TRACEFS.match(line[prefixed.end() :]):
            return tracecmd.NAME
        if _TRACEFS.match(line):
            return tracefs.NAME
    return None
