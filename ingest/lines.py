"""Cut a block of trace bytes into a frame of numbered lines, without a Python loop.

The lines are not copied: numpy finds the newlines, and each line becomes a
16-byte Arrow *view* (length, first bytes, offset into the block) over the
block's own bytes, which polars adopts as its ``String`` / ``Binary``
columns as they are.  A 16 MiB block costs about 2 MiB of views instead of
two copies of its text, and no time beyond the newline scan.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
from numpy.lib.stride_tricks import sliding_window_view

#: Arrow view layout: strings up to this length live inside the view itself.
_INLINE = 12
#: The newline scan runs over slices of this size, so its temporary is small.
_SCAN = 1 << 20
#: A view addresses its buffer with an int32: bigger blocks (one line of over
#: 2 GiB, say) take the copying path.
_MAX_VIEW_BUFFER = 2**31 - 1


def _newlines(buf: np.ndarray) -> np.ndarray:
    """Offsets of the newline bytes in ``buf``."""
    parts = [
        np.flatnonzero(buf[i : i + _SCAN] == 10) + i for i in range(0, len(buf), _SCAN)
    ]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def _views(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Arrow string-view structs for the slices ``buf[start : start + len]``.

    A view is four little-endian int32: the length, then for a string of at
    most 12 bytes its bytes inline, else its first 4 bytes, the data buffer
    index (0) and the offset of the string in that buffer.
    """
    n = len(starts)
    views = np.empty((n, 16), dtype=np.uint8)
    head = _gather(buf, starts, _INLINE)  # each line's first 12 bytes
    _zero_past(head, lens)  # an inline string is padded with zeros
    views[:, 4:] = head
    words = views.view("<i4")
    words[:, 0] = lens
    long = lens > _INLINE
    words[:, 2] = np.where(long, 0, words[:, 2])
    words[:, 3] = np.where(long, starts, words[:, 3])
    return views


def _view_series(kind: pa.DataType, data: bytes, views: np.ndarray) -> pl.Series:
    arr = pa.Array.from_buffers(
        kind, len(views), [None, pa.py_buffer(views), pa.py_buffer(data)]
    )
    return pl.Series(arr)


def _bounds(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The block as a byte array, and each line's start and length (newline excluded)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    ends = _newlines(buf)
    if len(data) and (len(ends) == 0 or ends[-1] != len(data) - 1):
        ends = np.append(ends, len(data))  # a last line without its newline
    starts = np.empty_like(ends)
    if len(ends):
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
    return buf, starts, (ends - starts).astype(np.int32)


def _strip_cr(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    last = starts + lens - 1
    cr = (lens > 0) & (buf[np.maximum(last, 0)] == 13)
    return lens - cr.astype(np.int32)


def split_lines(data: bytes | bytearray, first_line_no: int) -> tuple[pl.DataFrame, int]:
    """Number the lines of ``data`` (which holds whole lines) from ``first_line_no``.

    Returns the frame (``line_no``, ``line``: text with its newline and any
    trailing CR removed, ``raw``: the exact bytes without the newline) and
    how many lines held invalid UTF-8 (their ``line`` has U+FFFD in place of
    the bad bytes).  ``line`` and ``raw`` are views of ``data``, which must
    not change afterwards.
    """
    if not data:
        empty = pl.DataFrame(schema={"line_no": pl.Int64, "line": pl.String, "raw": pl.Binary})
        return empty, 0
    if len(data) > _MAX_VIEW_BUFFER:
        return _split_copying(bytes(data), first_line_no)
    buf, starts, lens = _bounds(data)
    views = _views(buf, starts, lens)
    raw = _view_series(pa.binary_view(), data, views)
    has_cr = b"\r" in data
    invalid = 0
    if data.isascii() or _is_utf8(data):
        if has_cr:
            views = _views(buf, starts, _strip_cr(buf, starts, lens))
        line = _view_series(pa.string_view(), data, views)
    else:
        # Replacement keeps every newline, so the line count is unchanged.
        fixed = data.decode("utf-8", "replace").encode("utf-8")
        fbuf, fstarts, flens = _bounds(fixed)
        if has_cr:
            flens = _strip_cr(fbuf, fstarts, flens)
        line = _view_series(pa.string_view(), fixed, _views(fbuf, fstarts, flens))
        invalid = _count_invalid(line, raw)
    frame = pl.DataFrame(
        {
            "line_no": np.arange(first_line_no, first_line_no + len(starts), dtype=np.int64),
            "line": line,
            "raw": raw,
        }
    )
    return frame, invalid


def _split_copying(data: bytes, first_line_no: int) -> tuple[pl.DataFrame, int]:
    """:func:`split_lines` through Arrow's 64-bit offsets: the lines are copied."""
    buf = np.frombuffer(data, dtype=np.uint8)
    ends = _newlines(buf)
    if ends.size == 0 or ends[-1] != len(data) - 1:
        ends = np.append(ends, len(data))
    offsets = np.concatenate([[0], np.minimum(ends + 1, len(data))]).astype(np.int64)
    text = data.decode("utf-8", "replace").encode("utf-8") if not _is_utf8(data) else data
    tbuf = np.frombuffer(text, dtype=np.uint8)
    tends = _newlines(tbuf)
    if tends.size == 0 or tends[-1] != len(text) - 1:
        tends = np.append(tends, len(text))
    toffsets = np.concatenate([[0], np.minimum(tends + 1, len(text))]).astype(np.int64)

    def arrow(kind: pa.DataType, blob: bytes, offs: np.ndarray) -> pl.Series:
        bufs = [None, pa.py_buffer(offs.tobytes()), pa.py_buffer(blob)]
        return pl.Series(pa.Array.from_buffers(kind, len(offs) - 1, bufs))

    frame = pl.DataFrame(
        {"line": arrow(pa.large_string(), text, toffsets),
         "raw": arrow(pa.large_binary(), data, offsets)}
    ).with_columns(
        pl.col("line").str.strip_suffix("\n").str.strip_suffix("\r"),
        pl.col("raw").bin.slice(
            0, pl.col("raw").bin.size() - pl.col("raw").bin.ends_with(b"\n").cast(pl.UInt32)
        ),
        pl.int_range(first_line_no, first_line_no + len(ends), dtype=pl.Int64).alias("line_no"),
    )
    return frame.select("line_no", "line", "raw"), _count_invalid(frame["line"], frame["raw"])


def _count_invalid(line: pl.Series, raw: pl.Series) -> int:
    """How many lines hold invalid UTF-8: ``raw`` that does not decode.

    Only a line whose text has U+FFFD can be one; each of those (few, in a
    block that is not UTF-8) is decoded to tell a replaced byte from a U+FFFD
    that was in the input, which a line can hold together with a bad byte.
    """
    suspects = raw.filter(line.str.contains("\ufffd", literal=True))
    return sum(not _is_utf8(r) for r in suspects.to_list())


def _is_utf8(data: bytes | bytearray) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# -- slicing lines by byte offsets, without copying them -------------------------------
#
# polars copies the bytes when it slices strings at per-row offsets.  These
# helpers work on the Arrow views of a String column instead: a slice of a
# line is a new view into the same block buffer, and only its first bytes
# (inline part or 4-byte prefix) are read.


class _ViewColumn:
    """A polars String / Binary column seen as Arrow views (lengths, buffers, offsets)."""

    def __init__(self, series: pl.Series) -> None:
        arr = series.to_arrow(compat_level=pl.CompatLevel.newest())
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        self.n = len(arr)
        raw = np.frombuffer(arr.buffers()[1], dtype=np.uint8).reshape(-1, 16)
        self.views = raw[arr.offset : arr.offset + self.n]
        words = self.views.view("<i4")
        self.lens = words[:, 0].astype(np.int64)
        self.buffer_index = words[:, 2]
        self.offsets = words[:, 3].astype(np.int64)
        self.valid = arr.is_valid().to_numpy(zero_copy_only=False)
        self.buffers = [b for b in arr.buffers()[2:] if b is not None]
        self.data = [np.frombuffer(b, dtype=np.uint8) for b in self.buffers]

    def window(self, start: np.ndarray, width: int) -> np.ndarray:
        """Bytes ``[start, start + width)`` of every string, zero past its end."""
        start = np.clip(start, 0, self.lens)
        inline = self.lens <= _INLINE
        if len(self.data) == 1 and not inline.any():  # the usual case: no row selection
            out = _gather(self.data[0], self.offsets + start, width)
        else:
            out = np.zeros((self.n, width), dtype=np.uint8)
            rows = np.flatnonzero(inline)
            if len(rows):
                padded = np.zeros((len(rows), _INLINE + width), dtype=np.uint8)
                padded[:, :_INLINE] = self.views[rows, 4:]
                out[rows] = sliding_window_view(padded, width, axis=1)[
                    np.arange(len(rows)), start[rows]
                ]
            for b, data in enumerate(self.data):
                rows = np.flatnonzero(~inline & (self.buffer_index == b))
                if len(rows):
                    out[rows] = _gather(data, self.offsets[rows] + start[rows], width)
        _zero_past(out, self.lens - start)
        return out

    def slice(self, start: np.ndarray, stop: np.ndarray | None, kind: pa.DataType) -> pl.Series:
        """Bytes ``[start, stop)`` of every string (``stop`` None: to its end) as views."""
        start = np.clip(start, 0, self.lens)
        stop = self.lens if stop is None else np.clip(stop, start, self.lens)
        length = stop - start
        views = np.empty((self.n, 16), dtype=np.uint8)
        head = self.window(start, _INLINE)
        _zero_past(head, length)
        views[:, 4:] = head
        words = views.view("<i4")
        words[:, 0] = length
        long = length > _INLINE  # only possible for a string that is not inline
        words[:, 2] = np.where(long, self.buffer_index, words[:, 2])
        words[:, 3] = np.where(long, self.offsets + start, words[:, 3])
        return _from_views(kind, views, self.buffers, self.valid)


def _zero_past(window: np.ndarray, length: np.ndarray) -> None:
    """Zero the bytes of each row of ``window`` from column ``length`` on."""
    short = np.flatnonzero(length < window.shape[1])
    if len(short):
        part = window[short]
        part[np.arange(window.shape[1])[None, :] >= length[short, None]] = 0
        window[short] = part


def _gather(buf: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
    """``buf[at + k]`` for ``k < width`` of every offset ``at``, zero past the end of ``buf``."""
    last = len(buf) - width  # the last offset with ``width`` bytes after it
    if len(at) == 0 or (last >= 0 and at.max() <= last):  # the usual case
        return sliding_window_view(buf, width)[at]
    out = np.zeros((len(at), width), dtype=np.uint8)
    near = np.flatnonzero(at > last)
    far = np.flatnonzero(at <= last)
    if len(far):
        out[far] = sliding_window_view(buf, width)[at[far]]
    base = max(last, 0)
    tail = np.zeros(2 * width, dtype=np.uint8)
    tail[: len(buf) - base] = buf[base:]
    out[near] = sliding_window_view(tail, width)[at[near] - base]
    return out


def _from_views(
    kind: pa.DataType, views: np.ndarray, buffers: list[pa.Buffer], valid: np.ndarray
) -> pl.Series:
    validity = None
    if not valid.all():
        validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
        views[~valid] = 0
    arr = pa.Array.from_buffers(kind, len(views), [validity, pa.py_buffer(views), *buffers])
    return pl.Series(arr)


def byte_slices(
    series: pl.Series, start: np.ndarray, stop: np.ndarray | None = None, *, binary: bool = False
) -> pl.Series:
    """``series[i][start[i]:stop[i]]`` in **bytes**, as views of the same memory (no copy).

    Offsets are clipped to each string; a row is null where ``series`` is or
    ``start`` is negative.  A ``String`` result must start and end on
    character boundaries (offsets next to ASCII bytes); ``binary=True``
    gives ``Binary`` for cuts that may not.
    """
    col = _ViewColumn(series)
    valid = col.valid & (start >= 0)
    col.valid = valid
    kind = pa.binary_view() if binary else pa.string_view()
    return col.slice(np.where(valid, start, 0), stop, kind)


def byte_windows(series: pl.Series, start: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` bytes of every string from byte ``start`` (zero past its end)."""
    return _ViewColumn(series).window(np.maximum(start, 0), width)
