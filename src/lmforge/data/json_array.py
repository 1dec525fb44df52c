"""Read a .json file: a JSON array of records (the text under the text field, as .jsonl) or of
strings, one document an element, as `datasets`' `to_json(lines=False)` and instruction sets such
as Alpaca's write them.

The array is streamed element by element (ijson), never loaded whole: only one element is held at
a time. A .json file whose first line is a whole JSON object is JSON Lines, as `datasets`'
`to_json()` writes by default and as its json loader reads such a file, and is read as .jsonl.

Bad input never stops a run: an element that is not a record with a string text field (nor a
string), or whose text is empty, is skipped and recorded with its index (`data.json:[3]`,
counted from 0 as `data[3]`); JSON broken mid-array ends the file's read there, the elements
before it kept; invalid UTF-8 is repaired (U+FFFD) and recorded, as in the other readers.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import ijson

from lmforge.data.report import Report
from lmforge.data.sources import (
    READ_ERRORS,
    UTF8_BOM,
    Document,
    _error_kind,
    _field_detail,
    _not_text,
    _open_binary,
    _read_jsonl,
    whole_characters,
)

REPLACEMENT = "\ufffd".encode()
WHITESPACE = b" \t\r\n"


class _Repaired:
    """A binary stream's bytes with invalid UTF-8 replaced by U+FFFD (and a BOM dropped), for
    ijson, which stops at a bad byte where the other readers repair it and go on."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self.repaired = 0  # bad byte sequences (a real U+FFFD cut by a chunk's end counts too: rare)

    def read(self, size: int = -1) -> bytes:
        if size == 0:  # ijson's probe: bytes or text?
            return b""
        raw = self.f.read(size if size > 0 else 1 << 16)
        text = self.decoder.decode(raw, final=not raw).encode("utf-8")
        self.repaired += text.count(REPLACEMENT) - raw.count(REPLACEMENT)
        return text


def read_json(path: Path, field: str, report: Report, max_line: int) -> Iterator[Document]:
    """The documents of a .json file: its array's elements, or its lines if it is JSON Lines."""
    try:
        with _open_binary(path) as f:
            if not f.peek(1):  # type: ignore[attr-defined] - BufferedReader.peek
                report.problem(str(path), "empty file")
                return
            if _not_text(f, path, report):
                return
            first = _first_byte(f)
            if first == b"[":
                yield from _array(f, path, field, report)
                return
            line = f.readline(max_line + 1).strip()
    except READ_ERRORS as e:
        report.problem(str(path), _error_kind(e), str(e))
        return
    if first == b"{" and _is_object(line):
        yield from _read_jsonl(path, field, report, max_line)
    elif first == b"{":  # `{"data": [...]}`, or one record over several lines
        report.problem(
            str(path),
            "not a JSON array",
            "a JSON object over several lines: give an array of records ([{...}, {...}]) or one"
            " record a line",
        )
    elif first:
        report.problem(str(path), "not a JSON array", f"it starts with {first.decode(errors='replace')!r}")
    else:
        report.problem(str(path), "blank file (only whitespace)")


def _array(f: IO[bytes], path: Path, field: str, report: Report) -> Iterator[Document]:
    """The array's elements, streamed; `f` is at its `[`."""
    stream = _Repaired(f)
    seen = 0
    try:
        for element in ijson.items(stream, "item", use_float=True):
            where = f"{path}:[{seen}]"
            seen += 1
            text = element.get(field) if isinstance(element, dict) else element
            if not isinstance(text, str):
                report.problem(where, "no string field", _element_detail(element, field))
            elif not text.strip():
                report.problem(where, "empty text", repr(field) if isinstance(element, dict) else "")
            else:
                yield Document(whole_characters(text, where, report), where)
    except ijson.JSONError as e:  # in element `seen`: ijson yields an element once it is whole
        why = str(e).strip().split("\n")[0]
        if "trailing garbage" in why:
            report.problem(str(path), "not valid JSON", f"text after the array's end ({seen} elements)")
        else:
            kind = "truncated or corrupt" if "premature EOF" in why else "not valid JSON"
            report.problem(f"{path}:[{seen}]", kind, why)
    except READ_ERRORS as e:  # a damaged .gz/.xz/.zst
        report.problem(f"{path}:[{seen}]", _error_kind(e), str(e))
    if stream.repaired:
        report.problem(str(path), "invalid UTF-8", f"{stream.repaired} byte sequence(s) repaired with U+FFFD")


def _element_detail(element: object, field: str) -> str:
    """Why an element has no text: _field_detail's words, for an element rather than a line."""
    if isinstance(element, dict):
        return _field_detail(element, field).replace("the line has", "the element has")
    kind = "null" if element is None else type(element).__name__
    return f"{field!r}; the element is a JSON {kind}, not an object or a string"


def _first_byte(f: IO[bytes]) -> bytes:
    """The first byte after a BOM and whitespace, left unread in `f` (b'' for none)."""
    head = f.peek(len(UTF8_BOM))[: len(UTF8_BOM)]  # type: ignore[attr-defined] - BufferedReader.peek
    if head == UTF8_BOM:
        f.read(len(UTF8_BOM))
    while chunk := f.peek(1 << 16):  # type: ignore[attr-defined]
        blank = len(chunk) - len(chunk.lstrip(WHITESPACE))
        if blank < len(chunk):
            f.read(blank)
            return chunk[blank : blank + 1]
        f.read(len(chunk))
    return b""


def _is_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:  # not JSON, or not UTF-8
        return False
