"""Compressed input files: the suffixes read (.gz, .xz, .bz2, .zst) and their openers.

gzip, lzma and bz2 come from the standard library; zstandard's stream reader is wrapped so that a
truncated .zst file raises as the others do (ZstdFile).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
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
