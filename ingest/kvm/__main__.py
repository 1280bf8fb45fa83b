"""Run a built-in KVM workload: ``python -m ingest.kvm WORKLOAD [--duration S] [--report FILE]``.

The report (JSON) goes to ``--report`` or stdout.  With ``--wait-go`` the
process builds the VM and its named vCPU threads, prints ``ready`` and waits
for a ``go`` line on stdin before the first ``KVM_RUN`` (end of input
cancels): that is how ``fpureplay record`` keeps setup out of the trace and
every ``KVM_RUN`` inside it.  SIGINT, SIGTERM and SIGHUP end the run
cleanly (the report is still written); the process also gets SIGTERM when
its parent dies.  Exit status: 0 done, 1 a vCPU failed, 2 could not start.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from ingest.kvm.workload import WORKLOADS, WorkloadError, run_workload

PR_SET_PDEATHSIG = 1


def _write_report(report: dict[str, Any], path: str | None) -> None:
    text = json.dumps(report, indent=1) + "\n"
    if path is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    # Atomic: a reader never sees half a report.
    tmp = Path(f"{path}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the workload, write the report; the exit status."""
    ap = argparse.ArgumentParser(prog="python -m ingest.kvm", description=__doc__)
    ap.add_argument("workload", choices=sorted(WORKLOADS))
    ap.add_argument("--duration", type=float, default=2.0, help="seconds of KVM_RUN (default 2)")
    ap.add_argument("--report", help="write the JSON report here (default: stdout)")
    ap.add_argument("--wait-go", action="store_true", help="print 'ready', wait for 'go' on stdin")
    args = ap.parse_args(argv)
    if args.duration <= 0:
        ap.error("--duration must be > 0")

    # Die with the recorder: a leftover VMM would keep spinning on the host.
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    stop = threading.Event()
    stopped_by: list[str] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopped_by.append(signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    # Kicks (pthread_kill SIGUSR1) must only interrupt KVM_RUN, not kill us.
    signal.signal(signal.SIGUSR1, lambda _s, _f: None)

    def ready() -> bool:
        if not args.wait_go:
            return True
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        return sys.stdin.readline().strip() == "go" and not stop.is_set()

    try:
        report = run_workload(args.workload, args.duration, stop=stop, on_ready=ready)
    except (OSError, WorkloadError) as exc:  # KvmError is an OSError: /dev/kvm, ioctls
        print(f"error: cannot run the {args.workload} workload: {exc}", file=sys.stderr)
        return 2
    if stopped_by and report["stopped_by"] == "stop requested":
        report["stopped_by"] = stopped_by[0]
    _write_report(report, args.report)
    if report["error"]:
        print(f"error: {report['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
