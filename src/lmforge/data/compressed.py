"""Compressed input files: the suffixes read (.gz, .xz, .bz2, .zst), their openers, and how much
of a damaged file's text its checks vouch for (stream_damage, open_compressed).

gzip, lzma and bz2 come from the standard library; zstandard's stream reader is wrapped so that a
truncated .zst file raises as the others do (ZstdFile).

A damaged stream is only known at its check, after the text it garbled has been given out: gzip's
CRC is at the end of its member (of the whole file, as gzip writes it), so zlib had turned 100
flipped bytes into thousands of lines kept as text; a bz2 block, an xz block and a zstd frame are
likewise given out before their checks fail. So a compressed file is read through once first, unit
by unit (gzip member, bz2 or xz stream, zstd frame), and where one fails its check the readers see
the file end there, with that error, after the units before it, which passed theirs.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zstandard


class ZstdFile(io.RawIOBase):
    """A .zst file's decompressed bytes, frame after frame, raising EOFError where the file ends
    inside a frame: zstandard's own reader ends a truncated file as if it were whole (a .txt.zst
    cut mid-line was read to its cut, unsaid), where gzip, lzma and bz2 raise."""

    def __init__(self, path: str | Path, mode: str = "rb") -> None:
        self.file = open(path, "rb")  # noqa: SIM115 - closed in close()
        self.frame = zstandard.ZstdDecompressor().decompressobj()
        self.pending = b""  # decompressed, not yet read
        self.started = False  # the current frame has had input

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.pending:
            rest = b""
            if self.frame.eof:  # the next frame, which may begin in what the last one left
                rest = self.frame.unused_data
                self.frame, self.started = zstandard.ZstdDecompressor().decompressobj(), False
            data = rest or self.file.read(1 << 17)
            if not data:
                if self.started:
                    raise EOFError("the file ends inside a zstd frame (truncated)")
                return 0
            self.started = True
            self.pending = self.frame.decompress(data)
        n = min(len(buffer), len(self.pending))
        buffer[:n], self.pending = self.pending[:n], self.pending[n:]
        return n

    def close(self) -> None:
        self.file.close()
        super().close()


COMPRESSION = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open, ".zst": ZstdFile}


def stream_damage(path: Path) -> tuple[int, BaseException] | None:
    """(bytes of text in the units before the first one that fails its check, the error it fails
    with) for a compressed file, read to its end; None where every unit passes, or the file is cut
    short (the readers name that, and keep what precedes the cut: it is what was written) or
    cannot be opened (the readers name that too)."""
    suffix = path.suffix.lower()
    new = _UNITS[suffix]
    good = 0  # bytes of text in the units whose checks passed
    try:
        with open(path, "rb") as f:
            data, unit, size = b"", None, 0
            while True:
                if not data:
                    data = f.read(1 << 16)
                    if not data:
                        return None
                if unit is None:
                    if suffix == ".gz":  # gzip skips zero padding between members
                        data = data.lstrip(b"\0")
                        if not data:
                            continue
                    elif good and suffix in _MAGIC:  # bz2 and lzma end the file at what follows a
                        data += f.read(8)  # stream that is not one (xz's padding): trailing data
                        if not data.startswith(_MAGIC[suffix]):
                            return None
                    unit, size = new(), 0
                size += _feed(unit, data, suffix)
                data = unit.unused_data if unit.eof else b""
                if unit.eof:
                    good, unit = good + size, None
    except OSError as e:  # bz2's "Invalid data stream" has no errno; a file it cannot open has one
        return None if e.errno is not None else (good, _said(e, good))
    except (lzma.LZMAError, zstandard.ZstdError, zlib.error) as e:
        return good, _said(e, good)


def _said(error: BaseException, good: int) -> BaseException:
    """`error` saying what is kept: the text before the part whose check failed."""
    kept = (
        f"only the {good:,} bytes of text before it, whose checks passed, are kept"
        if good
        else "none is kept"
    )
    return type(error)(f"{error}; the damage may lie anywhere before the failed check, so {kept}")


_UNITS: dict[str, Any] = {
    ".gz": lambda: zlib.decompressobj(31),  # a gzip member: its header, deflate data and CRC
    ".bz2": bz2.BZ2Decompressor,
    ".xz": lzma.LZMADecompressor,
    ".zst": lambda: zstandard.ZstdDecompressor().decompressobj(),
}
_MAGIC = {".bz2": b"BZh", ".xz": b"\xfd7zXZ\x00"}  # how a stream starts
_OUT = 1 << 22  # bytes of text decompressed at a time (a small file can hold a great deal)


def _feed(unit: Any, data: bytes, suffix: str) -> int:
    """Bytes of text `data` decompresses to in `unit`, until it is used up or the unit ends."""
    size = 0
    if suffix == ".zst":  # zstandard's decompressobj takes no output limit
        size += len(unit.decompress(data))
    elif suffix != ".gz":  # bz2's and lzma's
        size += len(unit.decompress(data, _OUT))
        while not unit.eof and not unit.needs_input:
            size += len(unit.decompress(b"", _OUT))
    else:  # zlib's
        while data and not unit.eof:
            size += len(unit.decompress(data, _OUT))
            data = unit.unconsumed_tail
    return size


class _Cut(io.RawIOBase):
    """A compressed file's text that raises `error` after its first `good` bytes: what its
    checks vouch for."""

    def __init__(self, raw: Any, good: int, error: BaseException) -> None:
        self.raw, self.left, self.error = raw, good, error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self.left:
            raise self.error
        data = self.raw.read(min(len(buffer), self.left))
        buffer[: len(data)] = data
        self.left -= len(data)
        return len(data)

    def close(self) -> None:
        self.raw.close()
        super().close()


_DAMAGED: dict[str, tuple[int, BaseException]] = {}  # path -> what stream_damage said, while read


@contextlib.contextmanager
def reading_damaged(path: Path, damage: tuple[int, BaseException]) -> Iterator[None]:
    """While in it, open_compressed(path) ends `path`'s text where `damage` says."""
    _DAMAGED[str(path)] = damage
    try:
        yield
    finally:
        _DAMAGED.pop(str(path), None)


def open_compressed(path: Path) -> Any:
    """A compressed file's text as a raw stream (cut where reading_damaged says)."""
    raw = COMPRESSION[path.suffix.lower()](path, "rb")
    damage = _DAMAGED.get(str(path))
    return raw if damage is None else _Cut(raw, *damage)
