"""Record a real trace from this host's tracefs, leaving tracing exactly as it was.

Everything happens in a private ftrace instance, ``instances/fpureplay-<pid>-<rand>``:
its own ring buffer, its own event switches and options.  The top-level
buffer, the global event switches, the current tracer and every other file
outside the instance are never written.  When tracefs is not mounted the
recorder does not mount it on the host either: it makes a *detached* mount
(``fsopen``/``fsmount``) that no other process can see and that disappears
when the recorder's file descriptor closes.

The instance's ``trace_pipe`` is streamed to the output file (``.zst``
compressed when the name ends so), a few KiB per read, so memory stays
bounded however long the capture runs.  The instance is removed on success,
on error, and on SIGINT, SIGTERM or SIGHUP (signal handlers plus
``try``/``finally``); only SIGKILL can leave it behind, and the next run
warns about it.

The output is tracefs text that ``fpureplay ingest`` reads, preceded by
comment lines that say where it came from and followed by one that says how
it ended::

    # tracer: nop
    # fpureplay-record: kernel=6.18.44 cpu_model="AMD EPYC" xstate_bytes=2432 ... events=default
    # fpureplay-record-events: enabled=kvm:kvm_fpu,... [missing=kvm:kvm_entry,...]
    ...trace_pipe lines...
    # fpureplay-record-end: stopped_by=duration elapsed_s=2.004 lines=9876 lost_events=0 ...

:func:`parse_record_line` reads those comment lines back.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import errno
import io
import json
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import zstandard

# -- what is recorded ------------------------------------------------------------------

#: The event sets of ``--events``.  minimal: the FPU and KVM_RUN boundaries and
#: the context switches, what a replay cannot do without; default adds what
#: ``validate`` compares against (x86_fpu_*) and the rest of the model's input;
#: full adds the ioctl syscalls (all of them, system-wide: large) and the
#: rarely firing x86_fpu save events.
EVENT_SETS: dict[str, tuple[str, ...]] = {
    "minimal": ("kvm:kvm_fpu", "kvm:kvm_userspace_exit", "sched:sched_switch"),
}
EVENT_SETS["default"] = (
    *EVENT_SETS["minimal"],
    "kvm:kvm_entry",
    "kvm:kvm_exit",
    "x86_fpu:x86_fpu_regs_activated",
    "x86_fpu:x86_fpu_regs_deactivated",
    "sched:sched_wakeup",
)
EVENT_SETS["full"] = (
    *EVENT_SETS["default"],
    "x86_fpu:x86_fpu_before_save",
    "x86_fpu:x86_fpu_after_save",
    "syscalls:sys_enter_ioctl",
    "syscalls:sys_exit_ioctl",
)
#: Without these the recording is refused; the others are enabled when the
#: kernel has them and listed as ``missing`` otherwise.
REQUIRED_EVENTS: dict[str, tuple[str, ...]] = {
    "minimal": EVENT_SETS["minimal"],
    "default": EVENT_SETS["minimal"],
    "full": (*EVENT_SETS["minimal"], "syscalls:sys_enter_ioctl", "syscalls:sys_exit_ioctl"),
}

DEFAULT_BUFFER_KB = 4096  #: per CPU; streaming keeps it from filling, so it need not be large
MIN_BUFFER_KB = 16
DEFAULT_WORKLOAD_DURATION = 2.0
INSTANCE_PREFIX = "fpureplay-"
_INSTANCE_NAME = re.compile(r"^fpureplay-(\d+)-[0-9a-f]+$")

#: Instance options the output format depends on (the instance inherits the
#: top level's flags, which an administrator may have changed).  Only
#: per-instance options: record-cmd, record-tgid and the like are global.
INSTANCE_OPTIONS = {
    "context-info": "1",  # task, pid, CPU and timestamp columns
    "irq-info": "1",  # the flags column
    "overwrite": "1",  # a full buffer overwrites, and trace_pipe reports it as LOST
    "raw": "0",
    "hex": "0",
    "bin": "0",
    "latency-format": "0",
    "verbose": "0",
    "stacktrace": "0",
    "userstacktrace": "0",
}

_PERIOD_S = 0.1  # between two drains of trace_pipe
_DRAIN_SLICE_BYTES = 8 << 20  # then look at signals and the child again
_FLUSH_EVERY_S = 1.0  # so that the file on disk is readable while recording
_CHILD_GRACE_S = 10.0  # for a workload or command to end after being asked
_READY_TIMEOUT_S = 60.0
_RMDIR_TRIES = 50
_LOST = re.compile(rb"^CPU:(\d+) \[LOST (\d+) EVENTS\]$", re.M)


class RecordRefused(Exception):
    """The recording cannot start here; nothing was changed.  The CLI exits 2."""


class RecordError(Exception):
    """The recording started but failed (the output so far is kept).  The CLI exits 1."""


# -- tracefs access through one directory fd ------------------------------------------


class Tracefs:
    """A tracefs root opened as a directory fd; every access is relative to it.

    Going through the fd works the same for the host's mount and for a
    detached private mount that has no path at all.
    """

    def __init__(self, fd: int, where: str, *, private: bool) -> None:
        self.fd = fd
        self.where = where
        self.private = private

    def show(self, rel: str) -> str:
        """``rel`` as a path for messages."""
        return f"{self.where}/{rel}"

    def exists(self, rel: str) -> bool:
        """Whether ``rel`` exists."""
        try:
            os.stat(rel, dir_fd=self.fd)
        except OSError:
            return False
        return True

    def read(self, rel: str) -> str:
        """The text of file ``rel``."""
        fd = os.open(rel, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.fd)
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            return b"".join(chunks).decode("utf-8", "replace")
        finally:
            os.close(fd)

    def write(self, rel: str, value: str) -> None:
        """Write ``value`` to control file ``rel`` (one write, as ``echo`` does)."""
        fd = os.open(rel, os.O_WRONLY | os.O_CLOEXEC, dir_fd=self.fd)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)

    def listdir(self, rel: str) -> list[str]:
        """Entries of directory ``rel``."""
        fd = os.open(rel, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.fd)
        try:
            return os.listdir(fd)
        finally:
            os.close(fd)

    def mkdir(self, rel: str) -> None:
        """Create directory ``rel`` (in ``instances/``: a new ftrace instance)."""
        os.mkdir(rel, dir_fd=self.fd)

    def rmdir(self, rel: str) -> None:
        """Remove directory ``rel`` (in ``instances/``: delete the instance)."""
        os.rmdir(rel, dir_fd=self.fd)

    def open_pipe(self, rel: str) -> int:
        """Open a ``trace_pipe`` for non-blocking reads."""
        return os.open(rel, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self.fd)

    def close(self) -> None:
        """Close the root fd (a private mount vanishes with it)."""
        os.close(self.fd)


def _unescape_mountinfo(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def tracefs_mounts() -> list[str]:
    """Mount points of tracefs (whole-filesystem mounts) in this mount namespace."""
    found = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if right.split()[:1] == ["tracefs"] and len(fields) > 4 and fields[3] == "/":
                found.append(_unescape_mountinfo(fields[4]))
    # The standard places first, then any other mount point.
    preferred = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
    return [p for p in preferred if p in found] + sorted(set(found) - set(preferred))


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_SYS_FSOPEN, _SYS_FSCONFIG, _SYS_FSMOUNT = 430, 431, 432  # x86-64
_FSOPEN_CLOEXEC, _FSCONFIG_CMD_CREATE, _FSMOUNT_CLOEXEC = 1, 6, 1


def _private_tracefs_mount() -> int:
    """A detached tracefs mount (new mount API): an fd, attached to no path, seen by no one."""
    fs = _libc.syscall(_SYS_FSOPEN, b"tracefs", _FSOPEN_CLOEXEC)
    if fs < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fsopen(tracefs): {os.strerror(err)}")
    try:
        if _libc.syscall(_SYS_FSCONFIG, fs, _FSCONFIG_CMD_CREATE, None, None, 0) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"fsconfig(tracefs): {os.strerror(err)}")
        mnt = _libc.syscall(_SYS_FSMOUNT, fs, _FSMOUNT_CLOEXEC, 0)
        if mnt < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"fsmount(tracefs): {os.strerror(err)}")
        return int(mnt)
    finally:
        os.close(fs)


def open_tracefs(root: str | None = None) -> Tracefs:
    """The tracefs to use: ``root`` if given, the mounted one, or a private detached mount.

    Raises :class:`RecordRefused` when there is none (and none can be made).
    """
    if root is not None:
        try:
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise RecordRefused(f"tracefs root {root}: {exc.strerror}") from exc
        fs = Tracefs(fd, root, private=False)
    else:
        fs = None
        for mount in tracefs_mounts():
            with contextlib.suppress(OSError):
                fd = os.open(mount, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                fs = Tracefs(fd, mount, private=False)
                break
        if fs is None:
            fs = _mount_private()
    if not fs.exists("instances"):
        fs.close()
        raise RecordRefused(
            f"{fs.show('instances')} does not exist: this tracefs cannot make private "
            "instances, and fpureplay will not use the host's top-level buffer"
        )
    return fs


def _mount_private() -> Tracefs:
    with contextlib.suppress(OSError), open("/proc/filesystems") as f:
        if not any(line.split()[-1:] == ["tracefs"] for line in f):
            raise RecordRefused(
                "this kernel has no tracefs (CONFIG_TRACING / CONFIG_FTRACE off): "
                "nothing to record from"
            )
    try:
        return Tracefs(_private_tracefs_mount(), "<private tracefs mount>", private=True)
    except OSError as exc:
        raise RecordRefused(
            f"tracefs is not mounted and a private mount failed ({exc.strerror or exc}); "
            "mount it with: mount -t tracefs nodev /sys/kernel/tracing"
        ) from exc


# -- the host --------------------------------------------------------------------------


def host_fields(events: str, buffer_kb: int, workload: str | None) -> dict[str, Any]:
    """The ``# fpureplay-record:`` fields: kernel, CPU model, XSAVE sizes, settings."""
    from ingest.dataset import tool_version
    from ingest.kvm.host import cpu_model, kvm_module, xstate

    xs = xstate()
    release = os.uname().release
    return {
        "kernel": re.sub(r"\s", "_", release),  # ingest reads it as one \S+ token
        "host": re.sub(r"\s", "_", os.uname().nodename),  # the fleet's `host` dimension
        "cpu_model": cpu_model(),
        "xstate_bytes": xs.xstate_bytes if xs else None,
        "xsaves_bytes": xs.xsaves_bytes if xs else None,
        "xfeatures": f"{xs.xfeatures:#x}" if xs else None,
        "events": events,
        "clock": None,  # filled from the instance
        "buffer_kb": buffer_kb,
        "cpus": os.cpu_count(),
        "kvm_module": kvm_module(),
        "workload": workload,
        "tool_version": tool_version(),
        "started": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


# -- header lines ----------------------------------------------------------------------

_QUOTED = {"cpu_model"}
_INT_FIELDS = {
    "xstate_bytes", "xsaves_bytes", "buffer_kb", "cpus", "lines", "lost_markers",
    "lost_events", "overrun", "dropped", "commit_overrun", "bytes",
}  # fmt: skip
_FLOAT_FIELDS = {"elapsed_s"}
_LIST_FIELDS = {"enabled", "missing"}
_RECORD_LINE = re.compile(r"^#\s*fpureplay-record(?P<kind>-[a-z]+)?:\s?(?P<body>.*?)\s*$")
_FIELD = re.compile(r'([A-Za-z_][\w.-]*)=("(?:[^"\\]|\\.)*"|\S*)')


def format_record_line(kind: str, fields: dict[str, Any]) -> str:
    """``# fpureplay-record[-kind]: key=value ...`` (None values left out, a newline at the end).

    Values are bare tokens; ``cpu_model`` and any value with spaces, quotes
    or ``=`` is a JSON string; lists are comma-joined.
    """
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(value)
        text = str(value)
        if key in _QUOTED or not text or re.search(r'[\s"\\=]', text):
            text = json.dumps(text)
        parts.append(f"{key}={text}")
    tag = "fpureplay-record" + (f"-{kind}" if kind != "record" else "")
    return f"# {tag}: {' '.join(parts)}\n"


def parse_record_line(line: str) -> tuple[str, dict[str, Any]] | None:
    """``(kind, fields)`` of a ``# fpureplay-record...:`` comment line, else None.

    ``kind`` is ``record`` (the header), ``record-events`` or ``record-end``
    (the trailer).  Numbers come back as int/float, ``enabled``/``missing``
    as lists, ``xfeatures`` as an int.

    >>> parse_record_line('# fpureplay-record: kernel=6.18.44 cpu_model="AMD EPYC" '
    ...                   'xstate_bytes=2432 events=default')
    ('record', {'kernel': '6.18.44', 'cpu_model': 'AMD EPYC', 'xstate_bytes': 2432, \
'events': 'default'})
    """
    m = _RECORD_LINE.match(line.rstrip("\n"))
    if m is None:
        return None
    kind = "record" + (m.group("kind") or "")
    out: dict[str, Any] = {}
    for key, raw in _FIELD.findall(m.group("body")):
        value: Any = raw
        try:
            if raw.startswith('"'):
                value = json.loads(raw)  # what `format_record_line` wrote, escapes included
            if key in _INT_FIELDS:
                value = int(value)
            elif key in _FLOAT_FIELDS:
                value = float(value)
            elif key == "xfeatures":
                value = int(value, 16)
            elif key in _LIST_FIELDS:
                value = [v for v in value.split(",") if v]
        except ValueError:
            pass  # keep the text: a reader should not fail on one odd field
        out[key] = value
    return kind, out


def parse_record_header(line: str) -> dict[str, Any]:
    """The fields of a ``# fpureplay-record:`` header line; ``{}`` for any other line."""
    parsed = parse_record_line(line)
    return parsed[1] if parsed and parsed[0] == "record" else {}


# -- output ----------------------------------------------------------------------------


class _Sink:
    """The output file, plain or zstd, flushed about once a second."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.raw: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.zst: Any = None
        if path.name.endswith(".zst"):
            self.zst = zstandard.ZstdCompressor(level=3).stream_writer(self.raw, closefd=False)
        self.bytes = 0
        self._flushed = time.monotonic()

    def write(self, data: bytes) -> None:
        (self.zst or self.raw).write(data)
        self.bytes += len(data)
        if time.monotonic() - self._flushed >= _FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        # A zstd block flush makes everything so far decodable from the file.
        if self.zst is not None:
            self.zst.flush(zstandard.FLUSH_BLOCK)
        self.raw.flush()
        self._flushed = time.monotonic()

    def close(self) -> None:
        try:
            if self.zst is not None:
                self.zst.flush(zstandard.FLUSH_FRAME)
        finally:
            self.raw.close()


# -- signals ---------------------------------------------------------------------------

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _StopSignals:
    """SIGINT/SIGTERM/SIGHUP ask for a clean stop instead of killing the process.

    The third signal gives up on the clean stop (KeyboardInterrupt), but
    never while the instance is being removed: ``cleaning`` blocks that.
    """

    def __init__(self) -> None:
        self.received: list[str] = []
        self.cleaning = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signal.Signals(signum).name)
        if len(self.received) >= 3 and not self.cleaning:
            raise KeyboardInterrupt

    @property
    def stop(self) -> str | None:
        """The name of the first signal received, if any."""
        return self.received[0] if self.received else None

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# -- the recording ---------------------------------------------------------------------


@dataclass
class RecordResult:
    """What a recording produced."""

    output: str
    header: str  #: the ``# fpureplay-record:`` line as written
    tracefs: str
    instance: str
    events: list[str]
    missing_events: list[str]
    stopped_by: str  #: duration, workload finished, command exited, SIGINT, SIGTERM, SIGHUP
    elapsed_s: float  #: tracing on to tracing off
    lines: int = 0  #: lines streamed from trace_pipe (events and LOST markers)
    text_bytes: int = 0  #: uncompressed bytes written, header and trailer included
    file_bytes: int = 0  #: size of the output file
    lost_markers: int = 0  #: ``CPU:N [LOST M EVENTS]`` lines
    lost_events: int = 0  #: the sum of their M
    overrun: int = 0  #: ring-buffer ``overrun`` counters summed over CPUs
    dropped: int = 0  #: ring-buffer ``dropped events`` summed over CPUs
    commit_overrun: int = 0
    command_rc: int | None = None
    workload_rc: int | None = None
    workload_report: dict[str, Any] | None = None
    workload_report_path: str | None = None
    warnings: list[str] = field(default_factory=list)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def record_trace(
    output: str | os.PathLike[str],
    *,
    duration: float | None = None,
    command: Sequence[str] | None = None,
    workload: str | None = None,
    events: str = "default",
    buffer_kb: int = DEFAULT_BUFFER_KB,
    tracefs_root: str | None = None,
    kvm_device: str = "/dev/kvm",
    log: Callable[[str], None] = _stderr,
) -> RecordResult:
    """Record until ``duration`` passes, ``command`` exits, or ``workload`` has run.

    With none of the three it records until SIGINT/SIGTERM/SIGHUP.  A
    workload runs for ``duration`` seconds (default 2) and its report is
    written beside the output as ``OUTPUT.workload.json``.  A stop signal
    ends the recording cleanly (the output is complete, with its trailer).

    Raises :class:`RecordRefused` before changing anything when this host
    cannot record (not root, no tracefs, no kvm events, bad arguments), and
    :class:`RecordError` when the recording failed after it started.
    """
    out = Path(output)
    command = list(command or [])
    _check_arguments(out, duration, command, workload, events, buffer_kb, kvm_device)
    fs = open_tracefs(tracefs_root)
    try:
        enabled, missing = _check_events(fs, events)
        warnings = _stale_instances(fs)
        for w in warnings:
            log(f"warning: {w}")
        if missing:
            log(f"note: this kernel has no {', '.join(missing)}; recording without them")
        fields = host_fields(events, buffer_kb, workload)
        with _StopSignals() as signals:
            session = _Session(fs, out, fields, enabled, missing, buffer_kb, signals, log)
            session.result.warnings.extend(warnings)
            return session.run(duration, command, workload)
    finally:
        fs.close()


def _check_arguments(
    out: Path,
    duration: float | None,
    command: list[str],
    workload: str | None,
    events: str,
    buffer_kb: int,
    kvm_device: str,
) -> None:
    if events not in EVENT_SETS:
        raise RecordRefused(f"unknown --events {events!r}; expected minimal, default or full")
    if command and (duration is not None or workload is not None):
        raise RecordRefused("give either a COMMAND or --duration/--workload, not both")
    if duration is not None and not duration > 0:
        raise RecordRefused(f"--duration must be > 0, got {duration}")
    if workload is not None:
        from ingest.kvm.workload import WORKLOADS

        if workload not in WORKLOADS:
            raise RecordRefused(
                f"unknown --workload {workload!r}; expected one of {', '.join(WORKLOADS)}"
            )
    if command and shutil.which(command[0]) is None:
        raise RecordRefused(f"command not found: {command[0]}")
    if buffer_kb < MIN_BUFFER_KB:
        raise RecordRefused(f"--buffer-kb must be >= {MIN_BUFFER_KB}, got {buffer_kb}")
    if os.geteuid() != 0:
        raise RecordRefused(
            "recording needs root (tracefs instances and kernel events are root-only); "
            "nothing was changed"
        )
    if workload is not None and not os.path.exists(kvm_device):
        raise RecordRefused(f"--workload needs {kvm_device}, which does not exist (no KVM here)")
    total_kb = buffer_kb * (os.cpu_count() or 1)
    available = _mem_available_kb()
    if available is not None and total_kb > available // 4:
        raise RecordRefused(
            f"--buffer-kb {buffer_kb} x {os.cpu_count()} CPUs = {total_kb // 1024} MiB of ring "
            f"buffer, more than a quarter of the {available // 1024} MiB available"
        )
    if out.is_dir():
        raise RecordRefused(f"{out} is a directory; -o takes a trace file name")
    if not out.parent.is_dir():
        raise RecordRefused(f"{out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise RecordRefused(f"{out.parent} is not writable")


def _mem_available_kb() -> int | None:
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return None


def _check_events(fs: Tracefs, events: str) -> tuple[list[str], list[str]]:
    present = [e for e in EVENT_SETS[events] if fs.exists("events/" + e.replace(":", "/"))]
    absent = [e for e in REQUIRED_EVENTS[events] if e not in present]
    if absent:
        hint = ""
        if any(e.startswith("kvm:") for e in absent):
            hint = " (is the kvm module loaded? `modprobe kvm_intel` or `kvm_amd`)"
        raise RecordRefused(
            f"this kernel has no {', '.join(absent)} event{'s' * (len(absent) > 1)} in "
            f"{fs.show('events')}{hint}; nothing to record"
        )
    return present, [e for e in EVENT_SETS[events] if e not in present]


def _stale_instances(fs: Tracefs) -> list[str]:
    """Instances of recorders that died without cleaning up (SIGKILL): reported, not removed."""
    found = []
    with contextlib.suppress(OSError):
        for name in fs.listdir("instances"):
            m = _INSTANCE_NAME.match(name)
            if m and not os.path.exists(f"/proc/{m.group(1)}"):
                found.append(
                    f"{fs.show('instances/' + name)} was left by a recorder (pid {m.group(1)}) "
                    f"that is gone; remove it with: rmdir {fs.show('instances/' + name)}"
                )
    return found


class _Session:
    """One recording: instance setup, the pump loop, and the teardown that always runs."""

    def __init__(
        self,
        fs: Tracefs,
        out: Path,
        fields: dict[str, Any],
        enabled: list[str],
        missing: list[str],
        buffer_kb: int,
        signals: _StopSignals,
        log: Callable[[str], None],
    ) -> None:
        self.fs = fs
        self.out = out
        self.fields = fields
        self.enabled = enabled
        self.buffer_kb = buffer_kb
        self.signals = signals
        self.log = log
        self.name = f"{INSTANCE_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        self.inst = f"instances/{self.name}"
        self.created = False
        self.pipe: int | None = None
        self.sink: _Sink | None = None
        self.child: subprocess.Popen[bytes] | None = None
        self.child_kind: str | None = None
        self.child_stop_sent = 0.0
        self.result = RecordResult(
            output=str(out),
            header="",
            tracefs=fs.where,
            instance=self.name,
            events=enabled,
            missing_events=missing,
            stopped_by="",
            elapsed_s=0.0,
        )

    # -- the whole run, with its guaranteed teardown ---------------------------------
    def run(self, duration: float | None, command: list[str], workload: str | None) -> RecordResult:
        """Record, then always tear down; the first failure is the one raised."""
        try:
            self._record(duration, command, workload)
        except BaseException as exc:
            self.signals.cleaning = True
            try:
                self._teardown()
            except RecordError as also:  # e.g. the same full disk again: say it, raise the first
                self.log(f"error: {also}")
            if isinstance(exc, OSError):
                raise RecordError(f"recording failed: {exc}") from exc
            raise
        self.signals.cleaning = True
        self._teardown()
        self._collect_workload_report()
        return self.result

    def _record(self, duration: float | None, command: list[str], workload: str | None) -> None:
        self.fs.mkdir(self.inst)
        self.created = True
        self._configure()
        self.pipe = self.fs.open_pipe(f"{self.inst}/trace_pipe")
        self.sink = _Sink(self.out)
        self._write_header()
        if workload is not None:
            self._start_workload(workload, duration or DEFAULT_WORKLOAD_DURATION)
            if self.signals.stop:  # stopped while the VM was being built
                self.result.stopped_by = self.signals.stop
        if not self.result.stopped_by:
            self.fs.write(f"{self.inst}/tracing_on", "1")
            t0 = time.monotonic()
            if workload is not None:
                self._go()
            elif command:
                self.child = subprocess.Popen(command)
                self.child_kind = "command"
            until = "" if workload or command or duration else "; Ctrl-C stops"
            self.log(f"recording to {self.out} through {self.fs.show(self.inst)}{until}")
            self._pump(None if workload else duration)
            self.fs.write(f"{self.inst}/tracing_on", "0")
            self.result.elapsed_s = round(time.monotonic() - t0, 6)
            self._drain()
        self._read_stats()
        self._write_trailer()

    # -- setup -----------------------------------------------------------------------
    def _configure(self) -> None:
        inst = self.inst
        self.fs.write(f"{inst}/tracing_on", "0")  # nothing before the header is written
        for option, value in INSTANCE_OPTIONS.items():
            path = f"{inst}/options/{option}"
            if self.fs.exists(path):
                with contextlib.suppress(OSError):  # a kernel may refuse some: not needed
                    self.fs.write(path, value)
        try:
            self.fs.write(f"{inst}/buffer_size_kb", str(self.buffer_kb))
        except OSError as exc:
            raise RecordError(f"cannot size the ring buffer to {self.buffer_kb} KiB per CPU: "
                              f"{exc.strerror}") from exc  # fmt: skip
        clock = re.search(r"\[(\S+)\]", self.fs.read(f"{inst}/trace_clock"))
        self.fields["clock"] = clock.group(1) if clock else None
        for event in self.enabled:
            self.fs.write(f"{inst}/events/{event.replace(':', '/')}/enable", "1")

    def _write_header(self) -> None:
        assert self.sink is not None
        header = format_record_line("record", self.fields)
        self.result.header = header.rstrip("\n")
        events = {"enabled": self.enabled, "missing": self.result.missing_events or None}
        # "# tracer:" first, as in a tracefs `trace` file: format detection
        # then works even for a capture without a single event.
        text = "# tracer: nop\n" + header + format_record_line("events", events)
        self.sink.write(text.encode())
        self.sink.flush()

    def _start_workload(self, name: str, duration: float) -> None:
        report = Path(f"{self.out}.workload.json")
        self.result.workload_report_path = str(report)
        with contextlib.suppress(FileNotFoundError):
            report.unlink()  # an old report must not pass for this run's
        cmd = [sys.executable, "-m", "ingest.kvm", name, "--duration", str(duration),
               "--report", str(report), "--wait-go"]  # fmt: skip
        self.child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.child_kind = "workload"
        assert self.child.stdout is not None
        # The VM and its named vCPU threads are built before tracing starts;
        # wait for "ready" without blocking signal handling.
        fd = self.child.stdout.fileno()
        deadline = time.monotonic() + _READY_TIMEOUT_S
        seen = b""
        while b"\n" not in seen:
            if self.signals.stop:
                return
            if self.child.poll() is not None:
                raise RecordError(
                    f"the {name} workload exited with status {self.child.returncode} "
                    "before starting (its error is above)"
                )
            if time.monotonic() > deadline:
                raise RecordError(f"the {name} workload did not get ready in {_READY_TIMEOUT_S} s")
            if select.select([fd], [], [], 0.1)[0]:
                seen += os.read(fd, 64)
        if seen.strip() != b"ready":
            raise RecordError(f"the {name} workload said {seen!r} instead of 'ready'")

    def _go(self) -> None:
        assert self.child is not None and self.child.stdin is not None
        self.child.stdin.write(b"go\n")
        self.child.stdin.close()

    # -- streaming -------------------------------------------------------------------
    def _pump(self, duration: float | None) -> None:
        """Copy trace_pipe to the output until the stop condition, keeping up all along."""
        deadline = time.monotonic() + duration if duration is not None else None
        while True:
            if self.child is not None:
                if self.child.poll() is not None:
                    if not self.result.stopped_by:
                        self.result.stopped_by = (
                            "workload finished" if self.child_kind == "workload"
                            else "command exited"
                        )  # fmt: skip
                    break
                self._stop_child_if_asked()
            elif self.signals.stop:
                self.result.stopped_by = self.signals.stop
                break
            elif deadline is not None and time.monotonic() >= deadline:
                self.result.stopped_by = "duration"
                break
            # Sleep, do not poll(): trace_pipe is readable after every event,
            # and each of our own wakeups would log sched events that wake us
            # again.  A fixed period keeps the recorder's share of the trace
            # at a few events per period.
            wait = _PERIOD_S
            if deadline is not None:
                wait = max(0.0, min(wait, deadline - time.monotonic()))
            time.sleep(wait)
            self._drain(_DRAIN_SLICE_BYTES)

    def _stop_child_if_asked(self) -> None:
        # A stop signal ends a workload or command too; the pump keeps
        # draining while it winds down, so its last KVM_RUNs are recorded.
        assert self.child is not None
        now = time.monotonic()
        if self.signals.stop and not self.child_stop_sent:
            self.result.stopped_by = self.signals.stop
            self.child_stop_sent = now
            sig = signal.SIGTERM if self.child_kind == "workload" else signal.Signals[
                self.signals.stop]  # fmt: skip
            with contextlib.suppress(ProcessLookupError):
                self.child.send_signal(sig)
        elif self.child_stop_sent and now - self.child_stop_sent > _CHILD_GRACE_S:
            self.log(
                f"warning: the {self.child_kind} did not stop in {_CHILD_GRACE_S} s; killing it"
            )
            with contextlib.suppress(ProcessLookupError):
                self.child.kill()
            self.child_stop_sent = now + 3600  # once

    def _drain(self, limit: int | None = None) -> None:
        """Read trace_pipe until it is empty (or ``limit`` bytes), writing every chunk out."""
        assert self.pipe is not None and self.sink is not None
        done = 0
        while limit is None or done < limit:
            try:
                chunk = os.read(self.pipe, 1 << 16)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            if not chunk:
                return
            done += len(chunk)
            self.result.lines += chunk.count(b"\n")
            if b"LOST" in chunk:
                for m in _LOST.finditer(chunk):
                    self.result.lost_markers += 1
                    self.result.lost_events += int(m.group(2))
            self.sink.write(chunk)

    # -- the end ---------------------------------------------------------------------
    def _read_stats(self) -> None:
        per_cpu = f"{self.inst}/per_cpu"
        with contextlib.suppress(OSError):
            for cpu in self.fs.listdir(per_cpu):
                with contextlib.suppress(OSError):
                    stats = self.fs.read(f"{per_cpu}/{cpu}/stats")
                    values = dict(
                        (k.strip(), v.strip())
                        for k, _, v in (line.partition(":") for line in stats.splitlines())
                    )
                    self.result.overrun += int(values.get("overrun", 0))
                    self.result.dropped += int(values.get("dropped events", 0))
                    self.result.commit_overrun += int(values.get("commit overrun", 0))

    def _write_trailer(self) -> None:
        if self.sink is None:
            return
        r = self.result
        trailer = format_record_line(
            "end",
            {
                "stopped_by": r.stopped_by,
                "elapsed_s": f"{r.elapsed_s:.6f}",
                "lines": r.lines,
                "lost_markers": r.lost_markers,
                "lost_events": r.lost_events,
                "overrun": r.overrun,
                "dropped": r.dropped,
                "commit_overrun": r.commit_overrun,
            },
        )
        self.sink.write(trailer.encode())

    def _teardown(self) -> None:
        """Always: stop the child, close the pipe, remove the instance, close the output.

        Every step runs even when an earlier one fails (a full disk must not
        leave the instance behind); the first failure is raised at the end,
        a failure to remove the instance before any other.
        """
        steps: list[Callable[[], None]] = [self._reap_child, self._close_pipe]
        if self.created:
            steps.append(self._remove_instance)
        steps.append(self._close_sink)
        errors: list[BaseException] = []
        for step in steps:
            try:
                step()
            except Exception as exc:
                errors.append(exc)
        if errors:
            first = next((e for e in errors if isinstance(e, RecordError)), errors[0])
            if isinstance(first, RecordError):
                raise first
            raise RecordError(f"recording failed while finishing: {first}") from first

    def _close_pipe(self) -> None:
        if self.pipe is not None:
            os.close(self.pipe)  # an open trace_pipe would keep the instance busy
            self.pipe = None

    def _close_sink(self) -> None:
        if self.sink is None:
            return
        try:
            self.sink.close()
        finally:
            self.result.text_bytes = self.sink.bytes
            with contextlib.suppress(OSError):
                self.result.file_bytes = self.out.stat().st_size

    def _reap_child(self) -> None:
        child = self.child
        if child is None:
            return
        if child.stdin is not None and not child.stdin.closed:
            with contextlib.suppress(OSError):
                child.stdin.close()  # a workload still waiting for "go" gives up
        if child.poll() is None and not self.child_stop_sent:
            with contextlib.suppress(ProcessLookupError):
                child.terminate()  # we are ending on an error: it must not run on alone
        # After a third signal the user wants out: no grace period.
        grace = 0.5 if len(self.signals.received) >= 3 else _CHILD_GRACE_S
        try:
            child.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                child.terminate()
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if child.stdout is not None:
            child.stdout.close()
        if self.child_kind == "workload":
            self.result.workload_rc = child.returncode
        else:
            self.result.command_rc = child.returncode

    def _remove_instance(self) -> None:
        with contextlib.suppress(OSError):
            self.fs.write(f"{self.inst}/tracing_on", "0")
        for attempt in range(_RMDIR_TRIES):
            try:
                self.fs.rmdir(self.inst)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                # EBUSY while a reader still holds a file of the instance open
                if exc.errno != errno.EBUSY or attempt == _RMDIR_TRIES - 1:
                    raise RecordError(
                        f"could not remove {self.fs.show(self.inst)}: {exc.strerror}; "
                        f"remove it with: rmdir {self.fs.show(self.inst)}"
                    ) from exc
                time.sleep(0.1)

    def _collect_workload_report(self) -> None:
        path = self.result.workload_report_path
        if path is None:
            return
        try:
            self.result.workload_report = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            self.result.workload_report = None
        rc = self.result.workload_rc
        if rc not in (0, None) and self.result.workload_report is None and not self.signals.stop:
            raise RecordError(f"the workload failed (exit status {rc}); see its error above")
        report = self.result.workload_report
        if report is not None and report.get("error"):
            raise RecordError(f"the workload failed: {report['error']}")


def iter_record_lines(path: str | os.PathLike[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The ``# fpureplay-record...`` lines of a recorded file (plain or .zst), in order."""
    p = Path(path)
    with open(p, "rb") as raw:
        stream: IO[bytes] = raw
        if p.name.endswith(".zst"):
            stream = zstandard.ZstdDecompressor().stream_reader(raw)  # type: ignore[assignment]
        for line in io.TextIOWrapper(stream, encoding="utf-8", errors="replace"):
            if line.startswith("#"):
                parsed = parse_record_line(line)
                if parsed is not None:
                    yield parsed
