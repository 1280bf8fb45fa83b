"""tracefs ``trace`` / ``trace_pipe`` text (reference §5.1).

``comm-pid [(tgid)] [cpu] [flags] secs.usecs: event: args``: the comm is
right-aligned to 16 columns and may hold spaces, dashes, slashes and colons,
the pid is 5 (≤5.10) or 7 wide, the TGID column is optional, the irq-flag
column has 4 or 5 characters or is absent (``irq-info`` off).  Syscall events
print as ``sys_ioctl(fd: 3, ...)`` and ``sys_ioctl -> 0x0``.
"""

from __future__ import annotations

NAME = "tracefs"

#: The line header up to and including the separator after the event name.
#: The comm is matched lazily, so the pid is the first ``-digits`` that is
#: followed by the CPU column (trace text after the header cannot shift it).
HEADER = (
    r"^(?P<hdr>(?P<comm>.*?)-(?P<pid>\d+)\s+(?:\(\s*(?P<tgid>\d+|-+)\)\s+)?"
    r"\[(?P<cpu>\d+)\]\s+(?:(?P<flags>[^\s\d]\S{3,4})\s+)?"
    r"(?P<secs>\d+)(?:\.(?P<frac>\d+))?:\s+(?P<event>[A-Za-z_][\w.-]*)(?P<sep>:|\(|\s+->))"
)
