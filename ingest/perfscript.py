"""``perf script`` text of tracepoints (reference §5.3).

``comm tid [cpu] secs.usecs: subsystem:event: args``: the comm is
right-aligned to 16 columns and may hold spaces; the tid is the number
before the CPU column (``pid/tid`` when ``-F pid,tid``); the event name is
right-aligned to the longest selected name.  The idle task is ``swapper 0``.
"""

from __future__ import annotations

NAME = "perf-script"

HEADER = (
    r"^(?P<hdr>\s*(?P<comm>.*?)\s+(?:-?\d+/)?(?P<pid>-?\d+)\s+\[(?P<cpu>\d+)\]\s+"
    r"(?P<secs>\d+)(?:\.(?P<frac>\d+))?:\s+(?:\d+\s+)?(?:[\w-]+:)?"
    r"(?P<event>[A-Za-z_][\w.-]*)(?P<sep>:))"
)
