"""`fpureplay record` and the built-in KVM workloads, on this host's real tracefs and KVM.

The recording tests need root, /dev/kvm, tracefs and the kvm events (CI has
them); elsewhere they skip and say which is missing.  Each recording is
checked against the workload's own counts: on a kernel that logs kvm_fpu,
every KVM_RUN call gives one load, one unload and one kvm_userspace_exit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from ingest import ingest_traces
from ingest.kvm import guest, host
from ingest.record import (
    RecordRefused,
    format_record_line,
    iter_record_lines,
    open_tracefs,
    parse_record_header,
    parse_record_line,
    record_trace,
)

RECORDER = [sys.executable, "-m", "ingest.record_cli"]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _why_no_recording() -> str | None:
    if os.geteuid() != 0:
        return "recording needs root (CI runs the suite as root)"
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist: no KVM on this host"
    try:
        fs = open_tracefs()
    except RecordRefused as exc:
        return f"no usable tracefs: {exc}"
    try:
        if not fs.exists("events/kvm/kvm_fpu"):
            return "this kernel has no kvm:kvm_fpu event (kvm module not loaded?)"
    finally:
        fs.close()
    return None


WHY = _why_no_recording()
needs_recording = pytest.mark.skipif(WHY is not None, reason=WHY or "")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

#: Global tracing state the recorder must never change (top-level files of tracefs).
GLOBAL_FILES = (
    "tracing_on",
    "current_tracer",
    "buffer_size_kb",
    "trace_clock",
    "set_event",
    "tracing_cpumask",
    "trace_options",
    "saved_cmdlines_size",
    "buffer_percent",
    "events/kvm/kvm_fpu/enable",
    "events/kvm/kvm_userspace_exit/enable",
    "events/sched/sched_switch/enable",
    "events/x86_fpu/x86_fpu_regs_activated/enable",
    "options/overwrite",
)


def global_state() -> dict[str, str | None]:
    """The global tracefs files above, as text (None when unreadable)."""
    fs = open_tracefs()
    try:
        state: dict[str, str | None] = {}
        for rel in GLOBAL_FILES:
            try:
                state[rel] = fs.read(rel)
            except OSError:
                state[rel] = None
        return state
    finally:
        fs.close()


def instances_of(pid: int) -> list[str]:
    """The tracefs instances a recorder with this pid made (``fpureplay-<pid>-*``)."""
    fs = open_tracefs()
    try:
        return [n for n in fs.listdir("instances") if n.startswith(f"fpureplay-{pid}-")]
    finally:
        fs.close()


def run_recorder(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RECORDER, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def ingest_one(trace: Path, tmp_path: Path) -> tuple[dict[str, Any], pl.DataFrame]:
    """The manifest entry and the events of one recorded trace."""
    [report] = ingest_traces([str(trace)], tmp_path / "ds")
    events = pl.read_parquet(
        tmp_path / "ds" / "events" / "host=*" / f"source={report.id}" / "*.parquet"
    )
    return report.manifest_entry(), events


def check_vcpu_counts(events: pl.DataFrame, report: dict[str, Any]) -> None:
    """Per vCPU thread: kvm_fpu loads == unloads == kvm_userspace_exit == its KVM_RUN calls."""
    for v in report["vcpus"]:
        mine = events.filter(pl.col("pid") == v["tid"])
        fpu = mine.filter(pl.col("event") == "kvm_fpu")
        loads = int(fpu["fpu_load"].sum())
        exits = mine.filter(pl.col("event") == "kvm_userspace_exit")
        assert (loads, fpu.height - loads, exits.height) == (v["kvm_run_calls"],) * 3, v["comm"]
        assert set(mine["comm"].unique()) == {v["comm"]}
        assert re.fullmatch(r"CPU \d+/KVM", v["comm"])
        assert set(exits["exit_reason"].unique()) == {"KVM_EXIT_IO"}


def trace_comments(trace: Path) -> dict[str, dict[str, Any]]:
    """The header, events and end lines of a recorded trace, by kind."""
    return dict(iter_record_lines(trace))


# -- no root needed -------------------------------------------------------------------


def test_record_lines_round_trip_and_ingest_reads_the_kernel(tmp_path):
    fields = {
        "kernel": "6.18.44-fc-v857",
        "cpu_model": 'AMD EPYC "Genoa" 9654 = fast',
        "xstate_bytes": 2432,
        "xsaves_bytes": 2472,
        "xfeatures": "0xe7",
        "events": "default",
        "missing_thing": None,
    }
    line = format_record_line("record", fields)
    assert line.startswith("# fpureplay-record: kernel=6.18.44-fc-v857 cpu_model=")
    assert "missing_thing" not in line
    assert parse_record_header(line) == {
        "kernel": "6.18.44-fc-v857",
        "cpu_model": 'AMD EPYC "Genoa" 9654 = fast',
        "xstate_bytes": 2432,
        "xsaves_bytes": 2472,
        "xfeatures": 0xE7,
        "events": "default",
    }
    end = format_record_line("end", {"stopped_by": "workload finished", "lost_events": 3})
    assert parse_record_line(end) == ("record-end", {"stopped_by": "workload finished",
                                                     "lost_events": 3})  # fmt: skip
    assert parse_record_header(end) == {}
    assert parse_record_line("# tracer: nop") is None

    # ingest takes the kernel from the header line into the manifest
    trace = tmp_path / "t.txt"
    trace.write_text(
        "# tracer: nop\n"
        + line
        + "       CPU 0/KVM-4321    [000] d..1.  5123.000100: kvm_fpu: load\n"
        + end
    )
    entry, _ = ingest_one(trace, tmp_path)
    assert entry["kernel"] == "6.18.44-fc-v857"
    assert (entry["events"], entry["meta_lines"], entry["rejects"]) == (1, 3, 0)


@pytest.mark.skipif(not (shutil.which("as") and shutil.which("objcopy")), reason="no GNU as")
def test_guest_code_is_its_assembled_source(tmp_path):
    src = tmp_path / "guest.S"
    src.write_text(guest.GUEST_ASM)
    subprocess.run(["as", "--64", "-o", tmp_path / "g.o", src], check=True)
    subprocess.run(
        ["objcopy", "-O", "binary", "-j", ".text", tmp_path / "g.o", tmp_path / "g.bin"],
        check=True,
    )
    assert (tmp_path / "g.bin").read_bytes() == guest.GUEST_CODE
    nm = subprocess.run(["nm", tmp_path / "g.o"], capture_output=True, text=True, check=True)
    labels = {name: int(addr, 16) for addr, kind, name in map(str.split, nm.stdout.splitlines())
              if kind == "t"}  # fmt: skip
    assert labels == guest.SYMBOLS


def test_non_root_is_refused_and_nothing_changes(tmp_path):
    out = tmp_path / "t.txt"
    tmp_path.chmod(0o777)  # the refusal must come from the root check, not the directory
    cmd = [*RECORDER, "-o", str(out), "--workload", "pio", "--duration", "1"]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv (util-linux) is not installed")
        cmd = [*NOBODY, *cmd]
        before = global_state()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert stderr.startswith("error: recording needs root")
    assert stdout == ""
    assert not out.exists()
    assert not Path(f"{out}.workload.json").exists()
    if os.geteuid() == 0:
        assert instances_of(proc.pid) == []
        assert global_state() == before


# -- root, tracefs, KVM ---------------------------------------------------------------


@needs_root
def test_refuses_without_tracefs_or_kvm_events_changing_nothing(tmp_path):
    out = tmp_path / "t.txt"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RecordRefused, match="instances does not exist"):
        record_trace(out, duration=1, tracefs_root=str(empty))
    # a tracefs without the kvm module's events
    fake = tmp_path / "fake"
    (fake / "instances").mkdir(parents=True)
    (fake / "events" / "sched" / "sched_switch").mkdir(parents=True)
    tree = sorted(p.relative_to(fake) for p in fake.rglob("*"))
    with pytest.raises(RecordRefused, match=r"no kvm:kvm_fpu, kvm:kvm_userspace_exit events"):
        record_trace(out, duration=1, tracefs_root=str(fake))
    assert sorted(p.relative_to(fake) for p in fake.rglob("*")) == tree
    with pytest.raises(RecordRefused, match="/nonexistent/kvm"):
        record_trace(out, workload="pio", kvm_device="/nonexistent/kvm")
    assert not out.exists()


@needs_recording
@pytest.mark.parametrize("workload", ["halt", "pio"])
def test_recorded_workload_matches_its_own_counts(workload, tmp_path, runner):
    from pipeline.replay import replay

    trace = tmp_path / f"{workload}.txt"
    before = global_state()
    t0 = time.monotonic()
    # A large buffer: exact counts need a capture without lost events even
    # when the machine is busy (the 4 MiB default overflowed at load 7).
    proc = run_recorder(
        "-o", str(trace), "--workload", workload, "--duration", "2", "--buffer-kb", "32768"
    )
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert global_state() == before
    report = json.loads(Path(f"{trace}.workload.json").read_text())
    assert (report["stopped_by"], report["error"]) == ("duration", None)
    assert 2.0 <= report["elapsed_s"] < 2.0 + 5.0 and took < 30

    comments = trace_comments(trace)
    header, end = comments["record"], comments["record-end"]
    xs = host.xstate()
    assert header["kernel"] == os.uname().release
    assert header["cpu_model"] == host.cpu_model()
    assert header["xstate_bytes"] == (xs.xstate_bytes if xs else None)
    assert (header["events"], header["workload"]) == ("default", workload)
    assert "kvm:kvm_fpu" in comments["record-events"]["enabled"]
    assert end["stopped_by"] == "workload finished"
    assert end["lost_events"] == end["overrun"] == end["dropped"] == 0

    entry, events = ingest_one(trace, tmp_path)
    assert entry["kernel"] == os.uname().release
    assert (entry["rejects"], entry["lost_markers"], entry["truncated"]) == (0, 0, False)
    assert entry["lines"] == end["lines"] + 4  # tracer, header, events and end comments
    tids = {v["tid"] for v in report["vcpus"]}
    assert tids <= set(entry["vcpu_threads"])
    check_vcpu_counts(events, report)
    runs_per_vcpu = [v["kvm_run_calls"] for v in report["vcpus"]]
    switches = events.filter(pl.col("event") == "sched_switch")
    if workload == "halt":
        assert len(runs_per_vcpu) == 3 and min(runs_per_vcpu) >= 50
        for v in report["vcpus"]:
            # about ten halts per KVM_RUN, most of them asleep inside it
            assert v["guest_loops"] >= 9 * v["kvm_run_calls"]
            sleeps = switches.filter(
                (pl.col("prev_pid") == v["tid"]) & (pl.col("prev_state") == "S")
            )
            assert sleeps.height >= v["kvm_run_calls"]
    else:
        assert len(runs_per_vcpu) == 2 and min(runs_per_vcpu) >= 100

    # The replay rebuilds exactly these KVM_RUNs, all complete.
    result = replay(events, kernel=entry["kernel"])
    runs = result.runs.filter(pl.col("pid").is_in(list(tids)))
    for v in report["vcpus"]:
        mine = runs.filter(pl.col("pid") == v["tid"])
        assert mine.height == v["kvm_run_calls"] and mine["complete"].all()
    if workload == "halt":
        assert runs["blocks"].sum() >= sum(runs_per_vcpu)

    # fpureplay run / validate end to end: validate passes, kvm_fpu exact per vCPU thread
    done = runner("run", str(trace), "-o", str(tmp_path / "run-ds"), "--format", "json")
    assert done.exit_code == 0, done.stderr
    policies = {row["policy"] for row in json.loads(done.stdout)}
    assert policies == {"legacy", "vcpu_run", "deferred"}
    checked = runner("validate", str(tmp_path / "run-ds"), "--format", "json")
    assert checked.exit_code == 0, checked.stderr
    rows = [r for r in json.loads(checked.stdout) if r["pid"] in tids]
    kvm_fpu = {(r["pid"], r["check"]): (r["predicted"], r["observed"]) for r in rows
               if r["check"].startswith("kvm_fpu")}  # fmt: skip
    assert kvm_fpu == {
        (v["tid"], check): (v["kvm_run_calls"], v["kvm_run_calls"])
        for v in report["vcpus"]
        for check in ("kvm_fpu_load", "kvm_fpu_unload")
    }


@needs_recording
@pytest.mark.parametrize(
    "sig,name", [(signal.SIGINT, "t.txt"), (signal.SIGTERM, "t.txt.zst")], ids=["INT", "TERM"]
)
def test_signal_mid_capture_keeps_output_and_removes_instance(sig, name, tmp_path):
    trace = tmp_path / name
    before = global_state()
    cmd = [*RECORDER, "-o", str(trace), "--workload", "halt", "--duration", "60"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not instances_of(proc.pid):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the recorder never created its instance"
            time.sleep(0.05)
        time.sleep(1.5)  # mid-capture: the workload is running
        assert global_state() == before  # the instance's switches are its own
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert instances_of(proc.pid) == []
    assert global_state() == before
    assert f"stopped by: {sig.name}" in stdout

    end = trace_comments(trace)["record-end"]
    assert end["stopped_by"] == sig.name
    assert 1.0 < end["elapsed_s"] < 10  # stopped early, not after 60 s
    report = json.loads(Path(f"{trace}.workload.json").read_text())
    assert (report["stopped_by"], report["error"]) == ("SIGTERM", None)
    entry, events = ingest_one(trace, tmp_path)
    assert entry["compression"] == ("zstd" if name.endswith(".zst") else None)
    assert (entry["rejects"], entry["truncated"]) == (0, False)
    assert min(v["kvm_run_calls"] for v in report["vcpus"]) > 0
    check_vcpu_counts(events, report)  # the workload wound down inside the capture


@needs_recording
def test_overcommit_is_preempted_inside_kvm_run(tmp_path):
    from pipeline.replay import replay

    trace = tmp_path / "oc.txt.zst"
    proc = run_recorder("-o", str(trace), "--workload", "overcommit", "--duration", "1")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(Path(f"{trace}.workload.json").read_text())
    assert len(report["vcpus"]) == 2 * len(report["cpus"]) + 1 > len(report["cpus"])
    entry, events = ingest_one(trace, tmp_path)
    check_vcpu_counts(events, report)
    runs = replay(events, kernel=entry["kernel"]).runs
    mine = runs.filter(pl.col("pid").is_in([v["tid"] for v in report["vcpus"]]))
    assert mine["preemptions"].sum() > mine.height  # typically several per run


@needs_recording
def test_command_mode_and_a_private_tracefs_mount(tmp_path):
    # -- COMMAND: records until it exits, reports its status
    trace = tmp_path / "cmd.txt"
    proc = run_recorder("-o", str(trace), "--events", "minimal", "--", "sh", "-c", "exit 3")
    assert proc.returncode == 0, proc.stderr
    assert "command exit status: 3" in proc.stdout
    comments = trace_comments(trace)
    assert comments["record-end"]["stopped_by"] == "command exited"
    assert comments["record-events"]["enabled"] == [
        "kvm:kvm_fpu", "kvm:kvm_userspace_exit", "sched:sched_switch",
    ]  # fmt: skip

    # tracefs not mounted (in a private mount namespace): a detached mount, seen by no one
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    mounts_before = Path("/proc/self/mountinfo").read_text().count(" - tracefs ")
    trace = tmp_path / "private.txt"
    script = (
        "for m in $(grep ' - tracefs ' /proc/self/mountinfo | cut -d' ' -f5); do umount $m; done; "
        "grep -q ' - tracefs ' /proc/self/mountinfo && exit 99; "
        f"exec {' '.join(RECORDER)} -o {trace} --duration 0.5; "
    )
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "through <private tracefs mount>/instances/fpureplay-" in proc.stderr
    assert Path("/proc/self/mountinfo").read_text().count(" - tracefs ") == mounts_before
    assert trace_comments(trace)["record-end"]["stopped_by"] == "duration"
    entry, _ = ingest_one(trace, tmp_path)
    assert entry["kernel"] == os.uname().release


@pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="no usable /dev/kvm")
def test_mixed_workload_runs_every_role(tmp_path):
    out = tmp_path / "mixed.json"
    proc = subprocess.run(
        [sys.executable, "-m", "ingest.kvm", "mixed", "--duration", "0.5", "--report", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert [v["role"] for v in report["vcpus"]] == ["pio", "halt", "spin", "halt"]
    for v in report["vcpus"]:
        # every KVM_RUN ended in port I/O: ticks plus the final PORT_DONE
        assert v["io_ports"]["0xf1"] == 1 and v["kicked"] == 0
        assert v["exits"] == {"KVM_EXIT_IO": v["kvm_run_calls"]}
        assert v["kvm_run_calls"] >= 2


@needs_recording
def test_failure_mid_capture_still_removes_the_instance(tmp_path):
    # The output is a FIFO whose reader goes away mid-capture: writes fail (EPIPE).
    fifo = tmp_path / "out.txt"
    os.mkfifo(fifo)
    before = global_state()
    cmd = [*RECORDER, "-o", str(fifo), "--workload", "pio", "--duration", "30"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with open(fifo, "rb") as reader:
            assert reader.readline() == b"# tracer: nop\n"
            assert reader.readline().startswith(b"# fpureplay-record: kernel=")
            assert len(instances_of(proc.pid)) == 1  # recording now
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert "error: recording failed: [Errno 32] Broken pipe" in stderr
    assert instances_of(proc.pid) == []
    assert global_state() == before
    report = json.loads(Path(f"{fifo}.workload.json").read_text())
    assert report["stopped_by"] == "SIGTERM"  # the workload was stopped, not left running


@needs_recording
def test_lost_events_are_counted_three_ways(tmp_path):
    # 16 KiB per CPU cannot hold 100 ms of the halt workload: the ring buffer overwrites.
    trace = tmp_path / "lost.txt"
    proc = run_recorder(
        "-o", str(trace), "--workload", "halt", "--duration", "1", "--buffer-kb", "16"
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning: events were lost" in proc.stderr
    end = trace_comments(trace)["record-end"]
    assert end["lost_markers"] >= 1
    # trace_pipe's LOST markers add up to the ring buffer's own overrun counters
    assert end["lost_events"] == end["overrun"] > 0
    entry, events = ingest_one(trace, tmp_path)
    assert (entry["lost_markers"], entry["lost_events"]) == (
        end["lost_markers"],
        end["lost_events"],
    )
    assert events.filter(pl.col("event") == "lost_events").height == end["lost_markers"]
