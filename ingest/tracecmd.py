"""``trace-cmd report`` text (reference §5.2), and ``.dat`` files through trace-cmd.

The lines are tracefs lines without the flag column, behind an
``INSTANCE: `` prefix when the capture used ``-B``; the file opens with
``cpus=N``.  sched_switch and sched_wakeup usually come in the libtraceevent
plugin form, whose state letters :mod:`ingest.events` maps back to the
kernel's.  ``.dat`` input is converted by ``trace-cmd report -N -t``
(kernel print formats, nanosecond timestamps).
"""

from __future__ import annotations

import shutil
import subprocess
from typing import IO

from ingest.errors import InputError
from ingest.tracefs import HEADER as TRACEFS_HEADER

NAME = "trace-cmd"
DAT_MAGIC = b"\x17\x08\x44tracing"

#: Instance-buffer prefix.  A top-level line starts with the right-aligned
#: comm (at least one space, since a comm has at most 15 characters).
INSTANCE_PREFIX = r"^(?P<instance>[^\s:][^\s]*?): "

HEADER = TRACEFS_HEADER


def report_command(path: str) -> list[str]:
    """The command that turns a trace-cmd ``.dat`` file into report text."""
    return ["trace-cmd", "report", "-N", "-t", "-i", path]


def open_dat(path: str) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """Start ``trace-cmd report`` on ``path``; raise InputError without trace-cmd."""
    if shutil.which("trace-cmd") is None:
        raise InputError(
            path,
            "is a trace-cmd .dat file and trace-cmd is not installed; install it "
            "(Debian: apt-get install trace-cmd) or pass the text of `trace-cmd report`",
        )
    proc = subprocess.Popen(
        report_command(path), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    return proc, proc.stdout


def dat_uname(path: str) -> str | None:
    """The recording kernel's release from a ``.dat`` file, when trace-cmd can tell."""
    if shutil.which("trace-cmd") is None:
        return None
    out = subprocess.run(
        ["trace-cmd", "report", "--uname", "-i", path], capture_output=True, text=True
    )
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "Linux":
            return parts[2]
    return None


def finish_dat(proc: subprocess.Popen[bytes], path: str) -> None:
    """Wait for trace-cmd; raise InputError when it failed."""
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.wait() != 0:
        raise InputError(path, f"trace-cmd report failed: {err.strip()[-400:]}")
