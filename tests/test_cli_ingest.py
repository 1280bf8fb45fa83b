"""`fpureplay ingest`: exact summaries, exit codes and bad-input handling."""

from __future__ import annotations

import gzip
import hashlib
import json

import polars as pl

from tests.conftest import EXAMPLES

LINES = [
    "# tracer: nop",
    "#",
    "       CPU 0/KVM-4321    [000] ..... 5123.000100: kvm_fpu: load",
    "       CPU 0/KVM-4321    [000] d..2. 5123.000160: sched_switch: prev_comm=CPU 0/KVM"
    " prev_pid=4321 prev_prio=120 prev_state=R ==> next_comm=kworker/0:1 next_pid=87"
    " next_prio=120",
    "     kworker/0:1-87      [000] d..2. 5123.000300: sched_switch: prev_comm=kworker/0:1"
    " prev_pid=87 prev_prio=120 prev_state=I ==> next_comm=CPU 0/KVM next_pid=4321"
    " next_prio=120",
    "       CPU 0/KVM-4321    [000] ..... 5123.000611: kvm_fpu: unload",
    "       CPU 0/KVM-4321    [000] ..... 5123.000612: kvm_userspace_exit: reason KVM_EXIT_IO (2)",
]
TRACE = ("\n".join(LINES) + "\n").encode()


def sid(stem: str, data: bytes) -> str:
    return f"{stem}-{hashlib.sha256(data).hexdigest()[:12]}"


def summary(result) -> list[dict]:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_json_summary_of_a_small_trace(runner, tmp_path):
    (tmp_path / "t.txt").write_bytes(TRACE)
    out = runner(
        "ingest", str(tmp_path / "t.txt"), "-o", str(tmp_path / "ds"), "--summary-format", "json"
    )
    assert summary(out) == [
        {
            "source": sid("t", TRACE),
            "host": "unknown",
            "path": str(tmp_path / "t.txt"),
            "status": "added",
            "format": "tracefs",
            "lines": 7,
            "events": 5,
            "rejects": 0,
            "lost_markers": 0,
            "vcpu_threads": 1,
            "span_s": 0.000512,
            "reason": None,
        }
    ]


def test_csv_summary_and_reingest_is_a_noop(runner, tmp_path):
    (tmp_path / "t.txt").write_bytes(TRACE)
    args = (
        "ingest",
        str(tmp_path / "t.txt"),
        "-o",
        str(tmp_path / "ds"),
        "--summary-format",
        "csv",
    )
    runner(*args)
    again = runner(*args)
    assert again.exit_code == 0
    assert again.stdout == (
        "source,host,path,status,format,lines,events,rejects,lost_markers,vcpu_threads,span_s,"
        "reason\n"
        f"{sid('t', TRACE)},unknown,{tmp_path / 't.txt'},already present,tracefs,7,5,0,0,1,"
        "0.000512,\n"
    )
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert [s["id"] for s in manifest["sources"]] == [sid("t", TRACE)]


def test_stdin_gzip_and_zstd_inputs(runner, tmp_path):
    gz = gzip.compress(TRACE, mtime=0)  # gzip stores a time: fix it, the sha256 depends on it
    (tmp_path / "t.txt.gz").write_bytes(gz)
    out = runner(
        "ingest",
        "-",
        str(tmp_path / "t.txt.gz"),
        str(EXAMPLES / "mixed-small.tracefs.txt.zst"),
        "-o",
        str(tmp_path / "ds"),
        "--summary-format",
        "json",
        input=TRACE,
    )
    rows = summary(out)
    assert [(r["source"], r["status"], r["events"]) for r in rows] == [
        (sid("stdin", TRACE), "added", 5),
        # same text, but the sha256 is of the stored (compressed) bytes
        (sid("t", gz), "added", 5),
        (
            sid("mixed-small.tracefs", (EXAMPLES / "mixed-small.tracefs.txt.zst").read_bytes()),
            "added",
            1910,
        ),
    ]
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert [s["compression"] for s in manifest["sources"]] == [None, "gzip", "zstd"]
    assert manifest["sources"][0]["path"] == "<stdin>"


def test_empty_file_is_an_error_and_creates_nothing(runner, tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    out = runner("ingest", str(tmp_path / "empty.txt"), "-o", str(tmp_path / "ds"))
    assert out.exit_code == 2
    assert out.stderr == f"error: {tmp_path / 'empty.txt'}: is empty: no trace lines\n"
    assert not (tmp_path / "ds").exists()
    # No staging left behind: only the hidden write lock beside the dataset.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.lock", "empty.txt"]


def test_binary_garbage_cannot_be_detected(runner, tmp_path):
    (tmp_path / "bin").write_bytes(bytes(range(256)) * 4)
    out = runner("ingest", str(tmp_path / "bin"), "-o", str(tmp_path / "ds"))
    assert out.exit_code == 2
    assert out.stderr.startswith(f"error: {tmp_path / 'bin'}:1: cannot tell the trace format")


def test_forced_format_turns_garbage_into_rejects_keeping_the_bytes(runner, tmp_path):
    garbage = b"\x00\x01binary\xff\xfe junk\n" + TRACE + b"not an event\n"
    (tmp_path / "g.txt").write_bytes(garbage)
    out = runner(
        "ingest",
        str(tmp_path / "g.txt"),
        "-o",
        str(tmp_path / "ds"),
        "--format",
        "tracefs",
        "--summary-format",
        "json",
    )
    [row] = summary(out)
    assert (row["lines"], row["events"], row["rejects"]) == (9, 5, 2)
    rejects = pl.read_parquet(
        tmp_path / "ds" / "rejects" / "host=*" / f"source={row['source']}" / "*.parquet"
    )
    assert rejects.to_dicts() == [
        {
            "line_no": 1,
            "text": "\x00\x01binary\ufffd\ufffd junk",
            "raw": b"\x00\x01binary\xff\xfe junk",
            "reason": "not a tracefs event line",
        },
        {
            "line_no": 9,
            "text": "not an event",
            "raw": b"not an event",
            "reason": "not a tracefs event line",
        },
    ]
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["sources"][0]["invalid_utf8_lines"] == 1
    assert manifest["sources"][0]["meta_lines"] == 2


def test_strict_refuses_rejects_naming_file_and_line(runner, tmp_path):
    (tmp_path / "t.txt").write_bytes(TRACE + b"oops\n")
    out = runner("ingest", str(tmp_path / "t.txt"), "-o", str(tmp_path / "ds"), "--strict")
    assert out.exit_code == 2
    assert out.stderr == (
        f"error: {tmp_path / 't.txt'}:8: rejected line (not a tracefs event line) [--strict]\n"
    )
    assert not (tmp_path / "ds").exists()


def test_lost_events_marker_is_reported_and_strict_refuses_it(runner, tmp_path):
    lost = TRACE.replace(b"#\n", b"#\nCPU:0 [LOST 12 EVENTS]\n")
    (tmp_path / "l.txt").write_bytes(lost)
    [row] = summary(
        runner(
            "ingest",
            str(tmp_path / "l.txt"),
            "-o",
            str(tmp_path / "ds"),
            "--summary-format",
            "json",
        )
    )
    assert (row["events"], row["lost_markers"]) == (6, 1)
    events = pl.read_parquet(
        tmp_path / "ds" / "events" / "host=*" / f"source={row['source']}" / "*.parquet"
    )
    marker = (
        events.filter(pl.col("event") == "lost_events")
        .select("line_no", "cpu", "ts_ns", "lost_count")
        .to_dicts()
    )
    # the marker takes the time of the event after the gap
    assert marker == [{"line_no": 3, "cpu": 0, "ts_ns": 5123000100000, "lost_count": 12}]
    strict = runner("ingest", str(tmp_path / "l.txt"), "-o", str(tmp_path / "ds2"), "--strict")
    assert strict.exit_code == 2
    assert strict.stderr == f"error: {tmp_path / 'l.txt'}:3: lost-events marker [--strict]\n"


def test_truncated_last_line_is_a_reject_that_says_so(runner, tmp_path):
    cut = TRACE + LINES[3][:100].encode()
    (tmp_path / "cut.txt").write_bytes(cut)
    [row] = summary(
        runner(
            "ingest",
            str(tmp_path / "cut.txt"),
            "-o",
            str(tmp_path / "ds"),
            "--summary-format",
            "json",
        )
    )
    rejects = pl.read_parquet(
        tmp_path / "ds" / "rejects" / "host=*" / f"source={row['source']}" / "*.parquet"
    )
    assert rejects.select("line_no", "reason").to_dicts() == [
        {
            "line_no": 8,
            "reason": "truncated last line (no newline at end of input); "
            "sched_switch: arguments match no known format of this event",
        }
    ]
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["sources"][0]["truncated"] is True


def test_megabyte_line_nul_bytes_and_backwards_time(runner, tmp_path):
    big = b"x" * 1_000_000
    back = LINES[2].replace("5123.000100", "5122.999999").encode()
    data = TRACE + big + b"\n" + b"a\x00b\n" + back + b"\n"
    (tmp_path / "m.txt").write_bytes(data)
    [row] = summary(
        runner(
            "ingest",
            str(tmp_path / "m.txt"),
            "-o",
            str(tmp_path / "ds"),
            "--summary-format",
            "json",
        )
    )
    assert (row["lines"], row["events"], row["rejects"]) == (10, 6, 2)
    rejects = pl.read_parquet(
        tmp_path / "ds" / "rejects" / "host=*" / f"source={row['source']}" / "*.parquet"
    )
    assert rejects["text"].str.len_bytes().to_list() == [1_000_000, 3]
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["sources"][0]["ts_backwards"] == 1


def test_refuses_a_directory_that_is_not_a_dataset(runner, tmp_path):
    (tmp_path / "t.txt").write_bytes(TRACE)
    (tmp_path / "notds").mkdir()
    (tmp_path / "notds" / "precious").write_text("keep")
    out = runner("ingest", str(tmp_path / "t.txt"), "-o", str(tmp_path / "notds"))
    assert out.exit_code == 2
    assert out.stderr == (
        f"error: {tmp_path / 'notds'}: exists and is not an fpureplay dataset; not touching it\n"
    )
    assert (tmp_path / "notds" / "precious").read_text() == "keep"


def test_unknown_format_option(runner, tmp_path):
    out = runner("ingest", "x", "-o", str(tmp_path / "ds"), "--format", "ftrace")
    assert out.exit_code == 2
    assert out.stderr == (
        "error: unknown --format 'ftrace'; expected auto, tracefs, trace-cmd, perf-script\n"
    )


def test_missing_file(runner, tmp_path):
    out = runner("ingest", str(tmp_path / "nope.txt"), "-o", str(tmp_path / "ds"))
    assert out.exit_code == 2
    assert out.stderr == f"error: {tmp_path / 'nope.txt'}: No such file or directory\n"
