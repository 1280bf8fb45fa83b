"""``perf script`` text of tracepoints (reference §5.3).

``comm tid [cpu] secs.usecs: subsystem:event: args``: the comm is
right-aligned to 16 columns (``"%16s "``) and may hold spaces; the tid is the
number before the CPU column (``pid/tid`` when ``-F pid,tid``; ``-1`` for a
thread perf does not know, whose comm prints as ``:-1``); the event name is
right-aligned to the longest selected name.  The idle task is ``swapper 0``.

The pieces play the same parts as in :mod:`ingest.tracefs`: :data:`HEADER`
defines the format and is the fallback, :data:`PREFIX` and :data:`EVENT`
decode the distinct prefixes and tails of the fast path.
"""

from __future__ import annotations

from ingest.tracefs import TIME

NAME = "perf-script"

COMM_WIDTH = 16

TASK = r"\s+(?:-?[0-9]+/)?(?P<pid>-?[0-9]+)\s+\[(?P<cpu>[0-9]+)\]\s+"
#: After the timestamp's colon: an optional sample period, the subsystem, the event.
EVENT = r"\s+(?:[0-9]+\s+)?(?:[\w-]+:)?(?P<event>[A-Za-z_][\w.-]*)(?P<sep>:)"

HEADER = rf"^(?P<hdr>\s*(?P<comm>.*?){TASK}{TIME}{EVENT})"

PREFIX = r"^(?P<comm>[ -~]{16}) +(?:-?[0-9]+/)?(?P<pid>-?[0-9]+) +\[(?P<cpu>[0-9]+)\] +$"
