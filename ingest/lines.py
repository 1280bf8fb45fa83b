"""Cut a block of trace bytes into a frame of numbered lines, without a Python loop."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa


def _split(data: bytes, string: bool) -> pl.Series:
    buf = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10)
    if len(data) and (len(ends) == 0 or ends[-1] != len(data) - 1):
        ends = np.append(ends, len(data))  # a last line without its newline
    # Arrow offsets are contiguous, so each slice keeps its newline; the
    # caller strips it with a vectorized expression.
    offsets = np.empty(len(ends) + 1, dtype=np.int64)
    offsets[0] = 0
    offsets[1:] = np.minimum(ends + 1, len(data))
    typ = pa.large_string() if string else pa.large_binary()
    arr = pa.Array.from_buffers(
        typ, len(ends), [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data)]
    )
    return pl.Series(arr)


def split_lines(data: bytes, first_line_no: int) -> tuple[pl.DataFrame, int]:
    """Number the lines of ``data`` (which holds whole lines) from ``first_line_no``.

    Returns the frame (``line_no``, ``line``: text with its newline and any
    trailing CR removed, ``raw``: the exact bytes) and how many lines held
    invalid UTF-8 (their ``line`` has U+FFFD in place of the bad bytes).
    """
    if not data:
        empty = pl.DataFrame(
            schema={"line_no": pl.Int64, "line": pl.String, "raw": pl.Binary}
        )
        return empty, 0
    raw = _split(data, string=False)
    try:
        data.decode("utf-8")
        text = _split(data, string=True)
        invalid = 0
    except UnicodeDecodeError:
        # Replacement keeps every newline, so the line count is unchanged.
        fixed = data.decode("utf-8", "replace").encode("utf-8")
        text = _split(fixed, string=True)
        replaced = text.str.contains("\ufffd", literal=True) & ~raw.bin.contains(
            "\ufffd".encode()
        )
        invalid = int(replaced.sum())
    # The newline is the last byte of each slice (offsets point past it).
    frame = pl.DataFrame({"line": text, "raw": raw}).with_columns(
        pl.col("line").str.strip_suffix("\n").str.strip_suffix("\r"),
        pl.col("raw").bin.slice(
            0, pl.col("raw").bin.size() - pl.col("raw").bin.ends_with(b"\n").cast(pl.UInt32)
        ),
        pl.int_range(first_line_no, first_line_no + len(raw), dtype=pl.Int64).alias("line_no"),
    )
    return frame.select("line_no", "line", "raw"), invalid

