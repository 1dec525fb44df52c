"""Read a .json file: a JSON array of records (the text under the text field, as .jsonl) or of
strings, one document an element, as `datasets`' `to_json(lines=False)` and instruction sets such
as Alpaca's write them.

The array is streamed element by element, never loaded whole: the standard library's JSON decoder
reads each element from a window of the file's text that is refilled as it is used, so only one
element (and a chunk around it) is held at a time, and each element is what `json.loads` makes of
it: integers past 64 bits, `1e400`, `NaN` and lone surrogate escapes included (ijson's C parser,
used until 2026-12-06, stopped the file at the first of the numbers and turned the surrogates
into '?' or the wrong character). A .json file whose first line is a whole JSON object is JSON
Lines, as `datasets`' `to_json()` writes by default and as its json loader reads such a file, and
is read as .jsonl. With a `json_field` (prep.json_field, as `datasets`' `field=`), a .json object's
array under that key is read (`{"version": 1, "data": [...]}`), streamed as a top-level array is;
the members before it are read one by one and dropped, and what follows it is not read.

Bad input never stops a run: an element that is not a record with a string text field (nor a
string), or whose text is empty, is skipped and recorded with its index (`data.json:[3]`,
counted from 0 as `data[3]`); JSON broken mid-array ends the file's read there, the elements
before it kept; invalid UTF-8 is repaired (U+FFFD) and recorded, as in the other readers, and so
is a lone surrogate escape.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO

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
CHUNK = 1 << 16
# An error this near the window's end may be the window's end (`tru|e`, `\\u12|34`, `-Infin|ity`)
LOOKAHEAD = 16
_SPACE = re.compile(r"[ \t\r\n]*")  # JSON's whitespace, as the json module's own
_DECODER = json.JSONDecoder()  # json.loads' settings: NaN, Infinity and big integers read


class _Broken(Exception):
    """JSON the array cannot be read past: (kind, detail), and whether it is after the array."""

    def __init__(self, kind: str, detail: str, after_end: bool = False) -> None:
        super().__init__(kind, detail)
        self.kind, self.detail, self.after_end = kind, detail, after_end


class _Window:
    """The file's text from its array's `[`, decoded from UTF-8 a chunk at a time (invalid bytes
    as U+FFFD, counted, as the other readers repair them), and read off one JSON value at a time."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""
        self.pos = 0
        self.eof = False
        self.line = 1  # the line of text[0], for error messages
        self.repaired = 0  # bad byte sequences (a real U+FFFD cut by a chunk's end counts too: rare)

    def more(self) -> bool:
        """Drop the text before `pos` and read more after it, at least as much as is kept (a long
        element, parsed again after each read, then costs linear time); False at the file's end."""
        if self.eof:
            return False
        self.line += self.text.count("\n", 0, self.pos)
        kept = self.text[self.pos :]
        raw = self.f.read(max(CHUNK, len(kept)))
        piece = self.decoder.decode(raw, final=not raw)
        self.repaired += piece.count("\ufffd") - raw.count(REPLACEMENT)
        self.text, self.pos, self.eof = kept + piece, 0, not raw
        return True

    def next_char(self) -> str:
        """The next character that is not whitespace, left at `pos` ('' at the file's end)."""
        while True:
            self.pos = _SPACE.match(self.text, self.pos).end()  # type: ignore[union-attr] - * matches
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.more():
                return ""

    def value(self) -> object:
        """The JSON value at `pos` (after whitespace), as json.loads reads it; `pos` past it."""
        while True:
            self.next_char()
            try:
                value, end = _DECODER.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as e:
                cut = e.msg.startswith("Unterminated string") or e.pos >= len(self.text) - LOOKAHEAD
                if cut and self.more():
                    continue
                # at the file's end: cut there, or wrong before it (`[1,]`, `tru]`)
                if e.msg.startswith("Unterminated string") or not self.text[e.pos :].strip():
                    raise _Broken("truncated or corrupt", "the file ends inside the element") from None
                raise _Broken("not valid JSON", f"{e.msg}, line {self.line_at(e.pos)}") from None
            except RecursionError:  # the decoder's own limit on nesting
                raise _Broken("not valid JSON", f"nested too deep, line {self.line_at(self.pos)}") from None
            # a number at the window's end may go on (`12|34`, `12.|5`, `1e|5`: the decoder stops
            # before a `.` or `e` with nothing after it): decoded again with the next chunk
            number = isinstance(value, int | float) and not isinstance(value, bool)
            followed = _SPACE.match(self.text, end).end() < len(self.text)  # type: ignore[union-attr]
            if self.eof or (followed and not (number and len(self.text) - end <= LOOKAHEAD)):
                self.pos = end
                return value
            self.more()

    def line_at(self, pos: int) -> int:
        return self.line + self.text.count("\n", 0, pos)


def _elements(window: _Window, top: bool = True) -> Iterator[object]:
    """The array's elements; raises _Broken where the JSON is broken (`top`: text after the array
    is too; an array under a key ends the read, the rest of its object unread)."""
    window.next_char()
    window.pos += 1  # the `[`
    if window.next_char() == "]":
        window.pos += 1
    else:
        while True:
            yield window.value()
            after = window.next_char()
            window.pos += 1
            if after == "]":
                break
            if after == "":
                raise _Broken("truncated or corrupt", "the file ends before the array's ']'")
            if after != ",":
                where = f"line {window.line_at(window.pos - 1)}"
                raise _Broken("not valid JSON", f"{after!r} after an element, not ',' or ']', {where}")
    if top and window.next_char():
        raise _Broken("not valid JSON", "text after the array's end", after_end=True)


def _member(window: _Window, key: str | None) -> tuple[str | None, list[str]]:
    """Walk the object at the window's `{` to its member `key` (None: the first whose value is an
    array), the window left at that value: (the member's name or None, the names passed). The
    values passed are read and dropped, an array element by element, another value whole (a
    version, a title: small in such files)."""
    window.next_char()
    window.pos += 1  # the `{`
    names: list[str] = []
    after = window.next_char()
    while after != "}":
        if after == "":
            raise _Broken("truncated or corrupt", "the file ends inside the object")
        name = window.value() if after == '"' else None
        if not isinstance(name, str):
            line = window.line_at(window.pos)
            raise _Broken("not valid JSON", f"{after!r} where a member's name goes, line {line}")
        if window.next_char() != ":":
            raise _Broken("not valid JSON", f"no ':' after {name!r}, line {window.line_at(window.pos)}")
        window.pos += 1
        names.append(name)
        value_start = window.next_char()
        if name == key or (key is None and value_start == "["):
            return name, names
        if value_start == "[":  # another array (a split of its own): passed element by element
            for _ in _elements(window, top=False):
                pass
        else:
            window.value()
        after = window.next_char()
        window.pos += 1
        if after == ",":
            after = window.next_char()
        elif after != "}":
            line = window.line_at(window.pos - 1)
            raise _Broken("not valid JSON", f"{after!r} after a member, not ',' or '}}', line {line}")
    return None, names


def _under_key(f: IO[bytes], path: Path, field: str, key: str, report: Report) -> Iterator[Document]:
    """The documents of the array under `key` of the object `f` is at, streamed."""
    window = _Window(f)
    try:
        found, names = _member(window, key)
        start = window.next_char() if found is not None else ""
    except _Broken as e:
        report.problem(str(path), e.kind, e.detail)
    except READ_ERRORS as e:  # a damaged .gz/.xz/.zst
        report.problem(str(path), _error_kind(e), str(e))
    else:
        if found is None:
            has = ", ".join(map(repr, names[:10])) or "no keys"
            report.problem(str(path), "no such key", f"prep.json_field={key!r}; the object has {has}")
        elif start != "[":
            kind = {"{": "an object", '"': "a string", "": "nothing"}.get(start, "a number or a literal")
            report.problem(str(path), "not a JSON array", f"prep.json_field={key!r} holds {kind}")
        else:
            yield from _array(window, path, field, report, key)
            return
    if window.repaired:
        report.problem(str(path), "invalid UTF-8", f"{window.repaired} byte sequence(s) repaired with U+FFFD")


def _array_hint(path: Path) -> str:
    """' give --json-field NAME ...' where the object's first array is under NAME, else ''."""
    try:
        with _open_binary(path) as f:
            _first_byte(f)
            found, _ = _member(_Window(f), None)
    except (_Broken, *READ_ERRORS):
        return ""
    return f"--json-field {found} (prep.json_field) to read its array under {found!r}, " if found else ""


def read_json(
    path: Path, field: str, report: Report, max_line: int, json_field: str = ""
) -> Iterator[Document]:
    """The documents of a .json file: its array's elements, or its lines if it is JSON Lines;
    with `json_field`, an object's array under that key."""
    try:
        with _open_binary(path) as f:
            if not f.peek(1):  # type: ignore[attr-defined] - BufferedReader.peek
                report.problem(str(path), "empty file")
                return
            if _not_text(f, path, report):
                return
            first = _first_byte(f)
            if first == b"[":
                yield from _array(_Window(f), path, field, report)
                return
            if first == b"{" and json_field:
                yield from _under_key(f, path, field, json_field, report)
                return
            line = f.readline(max_line + 1).strip()
    except READ_ERRORS as e:
        report.problem(str(path), _error_kind(e), str(e))
        return
    if first == b"{" and _is_object(line):
        yield from _read_jsonl(path, field, report, max_line)
    elif first == b"{":  # `{"data": [...]}`, a record over several lines, two on a line
        report.problem(
            str(path),
            "not a JSON array",
            "a JSON object whose first line is not one whole record: give"
            f" {_array_hint(path)}an array of records ([{{...}}, {{...}}]) or one record a line",
        )
    elif first:
        report.problem(str(path), "not a JSON array", f"it starts with {first.decode(errors='replace')!r}")
    else:
        report.problem(str(path), "blank file (only whitespace)")


def _array(window: _Window, path: Path, field: str, report: Report, key: str = "") -> Iterator[Document]:
    """The array's elements, streamed; the window is at its `[` (`key`: the member holding it,
    which names an element as `data.json:data[3]`)."""
    seen = 0
    try:
        for element in _elements(window, top=not key):
            where = f"{path}:{key}[{seen}]"
            seen += 1
            text = element.get(field) if isinstance(element, dict) else element
            if not isinstance(text, str):
                report.problem(where, "no string field", _element_detail(element, field))
            elif not text.strip():
                report.problem(where, "empty text", repr(field) if isinstance(element, dict) else "")
            else:
                yield Document(whole_characters(text, where, report), where)
    except _Broken as e:  # in element `seen`, or after the array
        if e.after_end:
            report.problem(str(path), e.kind, f"{e.detail} ({seen} elements)")
        else:
            report.problem(f"{path}:{key}[{seen}]", e.kind, e.detail)
    except READ_ERRORS as e:  # a damaged .gz/.xz/.zst
        report.problem(f"{path}:{key}[{seen}]", _error_kind(e), str(e))
    if window.repaired:
        report.problem(str(path), "invalid UTF-8", f"{window.repaired} byte sequence(s) repaired with U+FFFD")


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
