"""Open a trace input (file, ``-``, gzip, zstd, trace-cmd ``.dat``) as blocks of whole lines.

The sha256 is taken over the bytes as stored (the compressed file, the
``.dat`` file), so it identifies the input a user has, and the blocks are of
bounded size whatever the input size.
"""

from __future__ import annotations

import hashlib
import os
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import zstandard

from ingest import tracecmd
from ingest.errors import InputError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: 12 MiB: with 128k-row row groups, the fastest size whose peak RSS stays
#: well under 512 MB (10M lines: 5.1 s and ~450 MB; 8 MiB: 5.5 s, ~390 MB;
#: 16 MiB: 4.9 s but ~505 MB; bench/RESULTS.md)
DEFAULT_BLOCK_BYTES = 12 << 20


@dataclass
class Block:
    """Whole lines of the input, numbered from ``first_line_no``."""

    #: 0 when the block came from ``blocks(count_lines=False)``: the consumer numbers it
    first_line_no: int
    #: bytes, or a bytearray read in place (never changed once yielded)
    data: bytes | bytearray
    #: the input ended without a newline after the last line of this block
    truncated: bool = False


@dataclass
class TraceInput:
    """One input trace being read; fills ``sha256``, ``bytes`` and ``lines`` as it goes."""

    path: str
    format: str | None = None
    compression: str | None = None
    is_dat: bool = False
    sha256: str = ""
    bytes: int = 0
    lines: int = 0
    truncated: bool = False
    kernel: str | None = None
    _hash: hashlib._Hash = field(default_factory=hashlib.sha256, repr=False)

    @property
    def display_path(self) -> str:
        """The path as the user gave it (``-`` is shown as ``<stdin>``)."""
        return "<stdin>" if self.path == "-" else self.path

    def blocks(
        self, block_bytes: int = DEFAULT_BLOCK_BYTES, *, count_lines: bool = True
    ) -> Iterator[Block]:
        """Yield the input's lines in blocks of about ``block_bytes``.

        With ``count_lines=False`` the blocks are not numbered
        (``first_line_no`` is 0) and ``lines`` is left to the consumer, which
        counts them anyway (:func:`ingest.lines.split_lines`): the reader then
        spares a pass over every byte.
        """
        raw = self._open_raw()
        try:
            head = raw.read(max(block_bytes, 1 << 16))
            if head.startswith(tracecmd.DAT_MAGIC):
                yield from self._dat_blocks(raw, head, block_bytes, count_lines)
                return
            if not head.startswith((GZIP_MAGIC, ZSTD_MAGIC)) and hasattr(raw, "readinto"):
                yield from self._plain_blocks(raw, head, block_bytes, count_lines)
                return
            yield from self._split(self._text_chunks(raw, head, block_bytes), count_lines)
        finally:
            if raw is not sys.stdin.buffer:
                raw.close()

    # -- raw bytes -----------------------------------------------------------------
    def _open_raw(self) -> IO[bytes]:
        if self.path == "-":
            return sys.stdin.buffer
        if os.path.isdir(self.path):
            raise InputError(self.path, "is a directory, not a trace file")
        try:
            return open(self.path, "rb")
        except OSError as exc:
            raise InputError(self.path, exc.strerror or str(exc)) from exc

    def _read_raw(self, raw: IO[bytes], size: int) -> bytes:
        data = raw.read(size)
        self._hash.update(data)
        self.bytes += len(data)
        return data

    def _text_chunks(self, raw: IO[bytes], head: bytes, size: int) -> Iterator[bytes]:
        self._hash.update(head)
        self.bytes += len(head)
        if head.startswith(GZIP_MAGIC):
            self.compression = "gzip"
            yield from self._decompressed(raw, head, size, _gzip_member, "gzip")
        elif head.startswith(ZSTD_MAGIC):
            self.compression = "zstd"
            yield from self._decompressed(raw, head, size, _zstd_frame, "zstd")
        else:
            data = head
            while data:
                yield data
                data = self._read_raw(raw, size)
        self.sha256 = self._hash.hexdigest()

    def _decompressed(
        self, raw: IO[bytes], head: bytes, size: int, start: Callable[[], Any], kind: str
    ) -> Iterator[bytes]:
        """The decompressed text of every gzip member or zstd frame of the stream, in order.

        ``gzip -d`` and ``zstd -d`` decode concatenated members and frames
        (``cat a.gz b.gz``, appended logs); a decompressor object stops at the
        end of its first one and leaves the rest in ``unused_data``, whose
        lines must not vanish.  Bytes after a member that start no new one
        (other than gzip's zero padding) are a corrupt stream.  A stream cut
        off inside its last member or frame (a ``record`` killed before it
        closed its frame) yields what it holds: its flushed blocks decode.
        """
        decomp, data = start(), head
        try:
            while data:
                if decomp.eof:
                    if kind == "gzip":
                        data = data.lstrip(b"\0")
                    if not data:
                        data = self._read_raw(raw, size)
                        continue
                    decomp = start()
                out = decomp.decompress(data)
                if out:
                    yield out
                data = decomp.unused_data if decomp.eof else b""
                if not data:
                    data = self._read_raw(raw, size)
        except (zlib.error, zstandard.ZstdError) as exc:
            raise InputError(self.display_path, f"corrupt {kind} stream: {exc}") from exc

    def _plain_blocks(
        self, raw: IO[bytes], head: bytes, size: int, count_lines: bool
    ) -> Iterator[Block]:
        """Uncompressed text: read each block in place, after the previous one's tail.

        The same blocks as :meth:`_split` over :meth:`_text_chunks`, with one
        copy of the bytes (the read) instead of three.
        """
        self._hash.update(head)
        self.bytes += len(head)
        carry = b""
        buf = bytearray(head)
        while True:
            if buf is None:
                buf = bytearray(len(carry) + size)
                buf[: len(carry)] = carry
                with memoryview(buf) as view:
                    got = raw.readinto(view[len(carry) :]) or 0
                    self._hash.update(view[len(carry) : len(carry) + got])
                self.bytes += got
                if not got:
                    break
                del buf[len(carry) + got :]
            cut = buf.rfind(b"\n") + 1
            if cut == 0:
                carry, buf = bytes(buf), None  # a very long line: keep reading
                continue
            carry = bytes(buf[cut:])
            del buf[cut:]
            yield self._numbered(buf, count_lines)
            buf = None
        self.sha256 = self._hash.hexdigest()
        if carry:
            self.truncated = True
            yield self._numbered(carry, count_lines, truncated=True)

    def _numbered(
        self, data: bytes | bytearray, count_lines: bool, truncated: bool = False
    ) -> Block:
        if not count_lines:
            return Block(0, data, truncated=truncated)
        block = Block(self.lines + 1, data, truncated=truncated)
        self.lines += 1 if truncated else data.count(b"\n")
        return block

    def _dat_blocks(
        self, raw: IO[bytes], head: bytes, size: int, count_lines: bool = True
    ) -> Iterator[Block]:
        if self.path == "-":
            raise InputError(
                "<stdin>", "a trace-cmd .dat file cannot be read from stdin; pass its path"
            )
        self.is_dat = True
        self._hash.update(head)
        self.bytes += len(head)
        while self._read_raw(raw, 1 << 20):
            pass
        self.sha256 = self._hash.hexdigest()
        proc, out = tracecmd.open_dat(self.path)
        self.kernel = tracecmd.dat_uname(self.path)
        try:
            yield from self._split(iter(lambda: out.read(size), b""), count_lines)
        finally:
            out.close()
        tracecmd.finish_dat(proc, self.path)

    # -- lines ---------------------------------------------------------------------
    def _split(self, chunks: Iterator[bytes], count_lines: bool = True) -> Iterator[Block]:
        carry = b""
        for chunk in chunks:
            data = carry + chunk if carry else chunk
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                carry = data  # a very long line: keep reading
                continue
            block, carry = data[:cut], data[cut:]
            yield self._numbered(block, count_lines)
        if carry:
            self.truncated = True
            yield self._numbered(carry, count_lines, truncated=True)


def _gzip_member() -> Any:
    """A decompressor for one gzip member (wbits 47: a gzip or zlib header)."""
    return zlib.decompressobj(wbits=47)


def _zstd_frame() -> Any:
    """A decompressor for one zstd frame."""
    return zstandard.ZstdDecompressor().decompressobj()
