"""Read text inputs (files, folders, globs; plain or compressed) as a stream of documents.

A .txt or .md file is one document; each line of a .jsonl file is one document (its text
field). Files are streamed, never loaded whole, apart from a single .txt document itself.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import io
import json
import lzma
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from lmforge.errors import LmforgeError

TEXT_SUFFIXES = {".txt", ".md", ".jsonl"}
COMPRESSION = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}


@dataclass
class Document:
    text: str
    source: str
    """Where it came from: `path` or `path:line`."""


def _suffixes(path: Path) -> tuple[str, str]:
    """(format suffix, compression suffix or '') for names like `a.jsonl.gz`."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSION:
        return (suffixes[-2] if len(suffixes) > 1 else "", suffixes[-1])
    return (suffixes[-1] if suffixes else "", "")


def list_files(inputs: str | Path | list[str | Path]) -> list[Path]:
    """Expand files, folders (recursively) and globs into a sorted list of readable text files."""
    items = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            candidates = sorted(p for p in path.rglob("*") if p.is_file())
            files += [p for p in candidates if _suffixes(p)[0] in TEXT_SUFFIXES]
        elif path.is_file():
            files.append(path)
        else:
            matches = sorted(Path(p) for p in glob.glob(str(item), recursive=True))
            if not matches:
                raise LmforgeError(f"{item}: no such file, folder or glob match")
            files += [p for p in matches if p.is_file()]
    if not files:
        raise LmforgeError(f"{inputs}: no .txt, .md or .jsonl files found")
    return files


def _open_text(path: Path) -> IO[str]:
    opener = COMPRESSION.get(_suffixes(path)[1])
    raw = opener(path, "rb") if opener else open(path, "rb")  # noqa: SIM115 - caller closes
    return io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")


def read_documents(inputs: str | Path | list[str | Path], text_field: str = "text") -> Iterator[Document]:
    """Yield every document of the inputs in a stable order; bad input is a one-line error."""
    for path in list_files(inputs):
        kind = _suffixes(path)[0]
        try:
            with _open_text(path) as f:
                if kind == ".jsonl":
                    yield from _read_jsonl(f, path, text_field)
                else:
                    yield Document(f.read(), str(path))
        except UnicodeDecodeError as e:
            raise LmforgeError(f"{path}: not valid UTF-8 (byte {e.start})") from None
        except (OSError, EOFError, lzma.LZMAError) as e:
            raise LmforgeError(f"{path}: cannot read: {e}") from None


def _read_jsonl(f: IO[str], path: Path, text_field: str) -> Iterator[Document]:
    for number, line in enumerate(f, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise LmforgeError(f"{path}:{number}: not valid JSON") from None
        text = record.get(text_field) if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise LmforgeError(f"{path}:{number}: no string field {text_field!r}")
        yield Document(text, f"{path}:{number}")
