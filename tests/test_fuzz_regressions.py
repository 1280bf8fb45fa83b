"""What fuzzing the input formats found (fuzz/README.md), each pinned with exact rows,
and the whole saved corpus (fuzz/corpus) replayed through the fuzz property."""

from __future__ import annotations

import gzip
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import zstandard

from ingest.detect import detect_format
from ingest.errors import InputError
from ingest.lines import split_lines
from ingest.parse import parse_block
from ingest.reader import TraceInput

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # fuzz/ is a top-level directory, not an installed package
    sys.path.insert(0, str(ROOT))

from fuzz import targets  # noqa: E402

LOAD = "       CPU 0/KVM-4321    [000] d..2.  5123.000100: kvm_fpu: load\n"
UNLOAD = "       CPU 0/KVM-4321    [000] d..2.  5123.000200: kvm_fpu: unload\n"


def lines_of(path: Path) -> tuple[int, bytes, bool]:
    """(lines, text, truncated) as the reader gives them."""
    source = TraceInput(str(path))
    text = b"".join(bytes(b.data) for b in source.blocks())
    return source.lines, text, source.truncated


# -- found by atheris ------------------------------------------------------------------


def test_timestamp_window_inside_a_multibyte_character_is_a_reject_not_a_crash():
    # The fast path learns the block's timestamp layout (11 bytes here) and
    # cut every line 11 bytes before its colon; in line 3 that cut fell in
    # the middle of "é" and the invalid prefix raised polars' "invalid utf8"
    # for the whole block (atheris, tracefs target, 108th input: a run of
    # 0xff bytes in a timestamp, U+FFFD once decoded).
    text = (
        "       CPU 0/KVM-30799   [001] .....  2195.279431: kvm_fpu: unload\n"
        "       CPU 0/KVM-30799   [001] .....  2195.279432: kvm_fpu: load\n"
        "       CPU 0/KVM-30799   [001] .....  2é195.279433: kvm_fpu: unload\n"
    )
    frame, invalid = split_lines(text.encode(), 1)
    chunk = parse_block(frame, "tracefs")
    assert chunk.events.select("line_no", "ts_ns", "event", "args").rows() == [
        (1, 2195279431000, "kvm_fpu", "unload"),
        (2, 2195279432000, "kvm_fpu", "load"),
    ]
    assert chunk.rejects.rows() == [
        (
            3,
            "       CPU 0/KVM-30799   [001] .....  2é195.279433: kvm_fpu: unload",
            "       CPU 0/KVM-30799   [001] .....  2é195.279433: kvm_fpu: unload".encode(),
            "not a tracefs event line",
        ),
    ]
    assert (invalid, chunk.meta_lines) == (0, 0)


# -- found while writing the property's oracles --------------------------------------------


def test_every_gzip_member_and_zstd_frame_is_read(tmp_path: Path):
    # `cat a.gz b.gz` is one valid gzip file (gzip -d reads both); the
    # reader stopped at the end of the first member and dropped the rest
    # without a word.  Same for zstd frames.
    one, two = (LOAD * 2).encode(), UNLOAD.encode()
    gz, zst = tmp_path / "t.txt.gz", tmp_path / "t.txt.zst"
    gz.write_bytes(gzip.compress(one, mtime=0) + b"\0\0" + gzip.compress(two, mtime=0))
    z = zstandard.ZstdCompressor()
    zst.write_bytes(z.compress(one) + z.compress(two))
    assert lines_of(gz) == (3, one + two, False)  # gzip's zero padding between members too
    assert lines_of(zst) == (3, one + two, False)


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_bytes_after_the_last_member_or_frame_are_a_corrupt_stream(tmp_path: Path, suffix: str):
    path = tmp_path / f"t.txt{suffix}"
    packed = gzip.compress(LOAD.encode()) if suffix == ".gz" else zstandard.compress(LOAD.encode())
    path.write_bytes(packed + b"trailing text")
    kind = "gzip" if suffix == ".gz" else "zstd"
    with pytest.raises(InputError, match=f"corrupt {kind} stream"):
        lines_of(path)


def test_a_stream_cut_off_inside_its_frame_yields_what_it_holds(tmp_path: Path):
    # what `record` leaves when killed before it closes its zstd frame: the
    # flushed blocks decode, and the input is not an error
    compressor = zstandard.ZstdCompressor().compressobj()
    flushed = compressor.compress((LOAD + "  CPU 0/KV").encode()) + compressor.flush(
        zstandard.COMPRESSOBJ_FLUSH_BLOCK
    )
    path = tmp_path / "killed.txt.zst"
    path.write_bytes(flushed)
    assert lines_of(path) == (2, (LOAD + "  CPU 0/KV").encode(), True)


def test_invalid_utf8_lines_counts_a_line_that_also_holds_a_real_replacement_character():
    # a line counted when its text had U+FFFD and its bytes did not: a line
    # with both a literal U+FFFD and a bad byte went uncounted
    data = LOAD.encode() + b"\xef\xbf\xbd\xff x\n\xef\xbf\xbd only\n"
    frame, invalid = split_lines(data, 1)
    chunk = parse_block(frame, "tracefs")
    assert invalid == 1
    assert chunk.events["line_no"].to_list() == [1]
    assert chunk.rejects.rows() == [
        (2, "\ufffd\ufffd x", b"\xef\xbf\xbd\xff x", "not a tracefs event line"),
        (3, "\ufffd only", b"\xef\xbf\xbd only", "not a tracefs event line"),
    ]


@pytest.mark.parametrize(
    ("field", "recording"),
    [
        # A quoted field that is not JSON keeps its text; the others still parse.
        ('kernel="\\q"', {"kernel": '"\\q"', "cpus": 2}),
        ('cpu_model="a\tb"', {"cpu_model": '"a\tb"', "cpus": 2}),
    ],
)
def test_record_header_with_a_field_that_is_not_json_stays_a_meta_line(
    field: str, recording: dict
):
    frame, _ = split_lines(f"# fpureplay-record: {field} cpus=2\n{LOAD}".encode(), 1)
    chunk = parse_block(frame, "tracefs")
    assert (chunk.meta_lines, chunk.recording, chunk.rejects.height) == (1, recording, 0)
    assert chunk.events.select("line_no", "event", "args").rows() == [(2, "kvm_fpu", "load")]


def test_detection_of_a_long_pathological_line_takes_no_time():
    # Python's backtracking regex took half a minute on this 40 KB line (the
    # perf-script header pattern is quadratic in its blanks); detection now
    # looks at the first 512 characters of a line, where any header is.
    line = "[1]  1.1:  a:b: a" + " " * 20_000 + "1" + " " * 20_000
    start = time.perf_counter()
    assert detect_format([line]) is None
    assert time.perf_counter() - start < 5
    assert (
        detect_format(
            [
                line[:40],
                "      CPU 0/KVM  4321 [000]  5123.000100:   kvm:kvm_fpu: load" + " " * 1000,
            ]
        )
        == "perf-script"
    )


# -- the property itself ---------------------------------------------------------------------


def test_the_property_catches_a_dropped_line_and_a_changed_raw():
    out = targets.check((LOAD + "not a line\n" + UNLOAD).encode(), "tracefs")
    assert out is not None
    assert (out.source.lines, out.events.height, out.rejects.height) == (3, 2, 1)
    out.rejects = out.rejects.with_columns(raw=pl.lit(b"not a lin"))
    with pytest.raises(targets.PropertyViolation, match="line 2: reject raw"):
        targets.check_accounting(out)
    out.rejects = out.rejects.clear()
    with pytest.raises(targets.PropertyViolation, match="stats count 2 events, 1 rejects"):
        targets.check_accounting(out)


def test_inputs_the_format_cannot_have_are_input_errors_only_under_auto():
    assert targets.check(b"no trace here\n", "auto") is None  # cannot tell the format
    out = targets.check(b"no trace here\n", "perf-script")
    assert out is not None and out.rejects["reason"].to_list() == ["not a perf-script event line"]


CORPUS = sorted(p for p in targets.CORPUS.rglob("*") if p.is_file())


def test_the_saved_corpus_is_small_and_one_directory_per_format():
    assert {p.parent.name for p in CORPUS} == set(targets.FORMATS)
    assert sum(p.stat().st_size for p in CORPUS) < 200_000


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_saved_corpus_keeps_the_property(path: Path):
    # each input as its directory's format forced, and detected
    data = path.read_bytes()
    targets.check(data, path.parent.name)
    targets.check(data, "auto")
