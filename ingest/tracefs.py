"""tracefs ``trace`` / ``trace_pipe`` text (reference §5.1).

``comm-pid [(tgid)] [cpu] [flags] secs.usecs: event: args``: the comm is
right-aligned to 16 columns and may hold spaces, dashes, slashes and colons,
the pid is 5 (≤5.10) or 7 wide, the TGID column is optional, the irq-flag
column has 4 or 5 characters or is absent (``irq-info`` off).  Syscall events
print as ``sys_ioctl(fd: 3, ...)`` and ``sys_ioctl -> 0x0``.

The line is described in pieces that :mod:`ingest.parse` uses two ways:

* :data:`HEADER` = comm + :data:`TASK` + :data:`TIME` + :data:`EVENT`, one
  regular expression with named groups that accepts every variant (and comms
  of any length).  It defines the format and is the parser's per-line
  fallback.
* The fast path.  The kernel prints ``"%16s-"``, so for every comm of at most
  16 characters (all kernel comms: ``TASK_COMM_LEN`` is 16 with the NUL) the
  task separator is column 16 and the line splits, without a regex, at the
  first ``": "`` after it into a *prefix* (task, CPU, flags), the timestamp
  and a *tail* (event and args).  Prefixes and tails repeat heavily in real
  traces (a few hundred distinct tails per ten thousand lines), so
  :data:`PREFIX` and :data:`EVENT` run once per distinct value.  PREFIX is
  stricter than TASK (printable ASCII, no ``:``), which is what makes the
  split exact; a line it refuses takes the fallback.
"""

from __future__ import annotations

NAME = "tracefs"

#: Width of the right-aligned comm field.
COMM_WIDTH = 16

#: From the task separator to the timestamp.  Numbers are ASCII digits
#: (``\d`` would also take other scripts' digits, which no tracer prints).
TASK = (
    r"-(?P<pid>[0-9]+)\s+(?:\(\s*(?P<tgid>[0-9]+|-+)\)\s+)?"
    r"\[(?P<cpu>[0-9]+)\]\s+(?:(?P<flags>[^\s0-9]\S{3,4})\s+)?"
)
#: The timestamp and its colon (shared by the three formats).
TIME = r"(?P<secs>[0-9]+)(?:\.(?P<frac>[0-9]+))?:"
#: After the timestamp's colon: the event name and its separator.
EVENT = r"\s+(?P<event>[A-Za-z_][\w.-]*)(?P<sep>:|\(|\s+->)"

#: The line header up to and including the separator after the event name.
#: The comm is matched lazily, so the pid is the first ``-digits`` that is
#: followed by the CPU column (trace text after the header cannot shift it).
HEADER = rf"^(?P<hdr>(?P<comm>.*?){TASK}{TIME}{EVENT})"

#: The fast path's prefix (comm field through the flags and the blanks before
#: the timestamp), matched whole.
PREFIX = (
    r"^(?P<comm>[ -~]{16})-(?P<pid>[0-9]+) +(?:\( *(?P<tgid>[0-9]+|-+)\) +)?"
    r"\[(?P<cpu>[0-9]+)\] +(?:(?P<flags>[!-/;-~][!-9;-~]{3,4}) +)?$"
)
