"""Read text inputs (the files input_files.py lists; plain or compressed) as a stream of documents.

Formats: a .txt, .md, .html or .htm file is one document (the markup stage strips tags); each
line of a .jsonl file is one document (its text field), as is each element of a .json array
(json_array.py); each row of a .parquet (a named column, parquet.py) or .csv/.tsv (a named
column, header row; csv_table.py) file is one document; each HTML or text response of a .warc
file is one (warc.py); a .pdf, .docx or .epub file is one (documents.py, epub.py). Compression:
.gz, .xz, .bz2, .zst (not of the last three). Everything is streamed line by line, element by
element or batch by batch, never loaded whole; a text file larger than `max_doc_bytes` becomes several
documents cut at line ends.

Bad input never stops a run: a binary file, an empty file, an unreadable or truncated file, a
line longer than `max_line_bytes`, a jsonl line that is not JSON or lacks the field, each is
skipped and recorded in the `Report` with its file (and line); invalid UTF-8 is repaired (the
bad bytes become U+FFFD) and recorded the same way. Only a missing input path is an error.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import itertools
import json
import lzma
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import zstandard

from lmforge.data.compressed import open_compressed, reading_damaged, stream_damage
from lmforge.data.input_files import DOCUMENTS, JSON_LINES, TABLES, WARC, list_files, suffixes
from lmforge.data.report import Report
from lmforge.errors import LmforgeError

UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
# a file or its compressed stream damaged (zlib.error: a .gz whose deflate data is corrupt, not cut
# short, raised it from every reader); READ_ERRORS adds what the readers' parsers raise
STREAM_ERRORS = (OSError, EOFError, lzma.LZMAError, zstandard.ZstdError, zlib.error)
READ_ERRORS = (*STREAM_ERRORS, ValueError, csv.Error)
MAX_LINE_BYTES = 1 << 24  # 16 MiB: longer lines are skipped (a 100 MB single line is not a document)
MAX_DOC_BYTES = 1 << 26  # 64 MiB: a longer text file is cut into several documents at line ends


@dataclass
class Document:
    text: str
    source: str
    """Where it came from: `path` or `path:line`."""


def _open_binary(path: Path) -> IO[bytes]:
    raw = open_compressed(path) if suffixes(path)[1] else open(path, "rb", buffering=0)  # noqa: SIM115 - caller closes
    # A small buffer: a truncated stream loses only what the failing read held.
    return io.BufferedReader(raw, 1 << 16)  # type: ignore[arg-type] - all are raw-readable streams


def open_text(path: Path, newline: str = "") -> IO[str]:
    """A (possibly compressed) file as strict UTF-8 text, for readers that want a bad byte to be an
    error rather than a repair (the sentence-pair reader). newline is open()'s: "" (a line ends at
    an LF, a CRLF or a lone CR, each kept) for prep's corpus readers, LF alone for strict_lines and
    the sentence-pair readers (lf_lines)."""
    return io.TextIOWrapper(_open_binary(path), encoding="utf-8-sig", errors="strict", newline=newline)


def lf_lines(f: IO[str]) -> Iterator[str]:
    """The lines of `f` (opened with newline="\\n") as the sentence-pair readers take them: only an
    LF ends one, as `wc -l` counts them, so a stray CR inside a sentence is text; but a file with
    no LF at all that holds a CR (an old Mac export: each line ends in a lone CR) is read a CR a
    line, as `open()` and the csv module read it, rather than as one line."""
    first = f.readline()
    if first.endswith("\n") or "\r" not in first:
        yield from itertools.chain([first] if first else [], f)
    else:  # the whole file, without an LF: its CRs end the lines
        yield from (line for line in re.split(r"(?<=\r)", first) if line)


def strict_lines(path: Path, what: str = "a text file") -> Iterator[tuple[int, str]]:
    """(line number, line) of a (possibly compressed) file read as strict UTF-8, for the readers
    that refuse bad bytes: a missing file, a folder (`what` says what was wanted), a bad byte (its
    line named) or a damaged stream is a one-line error. What the caller raises while reading the
    lines is its own and goes through untouched. Only an LF ends a line, as sacrebleu's smart_open,
    `wc -l` and JSON Lines count them: a lone CR is text in its line (it ended one, so translate
    --file gave more lines than it read), and a CRLF's CR stays on the line for the caller to
    strip, as sacrebleu rstrips it."""
    if not path.is_file():
        if path.is_dir():
            raise LmforgeError(f"{path}: a folder, not {what}")
        # a run resumed from another directory reads its recipe's relative paths from there
        where = "" if path.is_absolute() else f" in the working directory, {Path.cwd()}"
        raise LmforgeError(f"{path}: no such file{where}")
    try:
        with open_text(path, "\n") as f:
            yield from enumerate(f, 1)
    except UnicodeDecodeError:  # decoded a chunk ahead of the lines read: find the line itself
        raise LmforgeError(utf8_error(path) or f"{path}: not valid UTF-8") from None
    except READ_ERRORS as e:  # a damaged .gz/.xz/.zst too
        raise LmforgeError(f"{path}: unreadable: {e}") from None


def utf8_error(path: Path) -> str | None:
    """Where a file's first invalid UTF-8 byte is, as `path:line: not valid UTF-8 (byte N)` with N
    counted from the file's start (of its decompressed text), or None if it has none: for readers
    that refuse bad bytes rather than repair them. None too for a binary or UTF-16 file (a NUL in
    its first 8 KiB), which the readers name as such ("convert it to UTF-8" does not fix a binary)."""
    try:
        with _open_binary(path) as f:
            if b"\x00" in f.read(8192):
                return None
    except READ_ERRORS:
        return None
    offset = 0
    try:
        with _open_binary(path) as f:
            for number, line in enumerate(f, start=1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as e:
                    return f"{path}:{number}: not valid UTF-8 (byte {offset + e.start} of the file)"
                offset += len(line)
    except READ_ERRORS:
        pass  # the caller's own message then
    return None


_SURROGATE = re.compile("[\ud800-\udfff]")


def whole_characters(text: str, where: str, report: Report) -> str:
    """`text` with each lone surrogate (JSON's `\\ud800` escapes with no pair: a tweet cut inside
    an emoji) as U+FFFD, reported: no UTF-8 encodes one, so prep stopped with a traceback."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        fixed, n = _SURROGATE.subn("\ufffd", text)
        report.problem(where, "lone surrogate", f"{n} escape(s) \\ud800-\\udfff without a pair: U+FFFD")
        return fixed


class _Decoder:
    """UTF-8 decoding that repairs bad bytes and remembers where, for one report line per file."""

    def __init__(self) -> None:
        self.bad_lines = 0
        self.first_bad = 0
        self.first_byte = 0

    def __call__(self, line: bytes, number: int, offset: int) -> str:
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError as e:
            self.bad_lines += 1
            if not self.first_bad:
                self.first_bad, self.first_byte = number, offset + e.start
            return line.decode("utf-8", errors="replace")

    def report(self, path: Path, report: Report) -> None:
        if self.bad_lines:
            # the likeliest other encoding, as the UTF-16 hint names its converter (a guess could
            # misread a damaged UTF-8 file, so the file is named rather than decoded as cp1252)
            convert = f"if it is Latin-1 or Windows-1252: iconv -f WINDOWS-1252 -t UTF-8 {path}"
            detail = (
                f"first at byte {self.first_byte}; {self.bad_lines} line(s) repaired with U+FFFD; {convert}"
            )
            report.problem(f"{path}:{self.first_bad}", "invalid UTF-8", detail)


def _lines(f: IO[bytes], path: Path, report: Report, max_line: int) -> Iterator[tuple[int, int, bytes]]:
    """(line number, byte offset, bytes) for every line, skipping (and reporting) lines over
    `max_line` bytes."""
    number = offset = 0
    while line := f.readline(max_line + 1):
        number += 1
        start = offset
        offset += len(line)
        if number == 1 and line.startswith(UTF8_BOM):  # Excel's and PowerShell's UTF-8 starts so
            line, start = line[len(UTF8_BOM) :], start + len(UTF8_BOM)
        if len(line) > max_line and not line.endswith(b"\n"):
            skipped = len(line)
            while line and not line.endswith(b"\n"):
                line = f.readline(1 << 20)
                skipped += len(line)
            offset = start + skipped
            report.problem(f"{path}:{number}", "line too long", f"{skipped:,} bytes > {max_line:,}")
            continue
        yield number, start, line


def read_documents(
    inputs: str | Path | list[str | Path],
    text_field: str = "text",
    report: Report | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
    max_doc_bytes: int = MAX_DOC_BYTES,
    json_field: str = "",
) -> Iterator[Document]:
    """Yield every document of the inputs in a stable order, skipping and reporting bad input
    (`json_field`: the key of a .json object whose array holds the records, prep.json_field)."""
    report = report if report is not None else Report()
    stats = report.stage("read")
    damaged = 0  # documents of damaged compressed files, dropped
    files = list_files(inputs)
    if any(suffixes(f)[0] in DOCUMENTS for f in files):
        from lmforge.data.documents import check_libraries  # imports this module's Document

        check_libraries(files)  # before any file is read: a missing pypdf is no file's fault
    for path in files:
        with contextlib.suppress(OSError):  # an unreadable file is reported below
            stats.bytes_in += path.stat().st_size
        args = (path, text_field, report, max_line_bytes, max_doc_bytes, json_field)
        # checked before any of it is read (compressed.py); a .parquet.gz is decompressed whole first
        whole = (".parquet", *DOCUMENTS)  # a .pdf.gz is named and skipped
        damage = stream_damage(path) if suffixes(path)[1] and suffixes(path)[0] not in whole else None
        kept = stats.docs_out
        with reading_damaged(path, damage) if damage else contextlib.nullcontext():
            for doc in _read_file(*args):
                stats.docs_out += 1
                stats.bytes_out += len(doc.text.encode("utf-8"))
                yield doc
        if damage:  # the documents after the last unit that passed its check, counted in a
            # read of their own, uncut (its per-line problems are the damage's, not named)
            lost = sum(1 for _ in _read_file(path, text_field, Report(), *args[3:])) - (stats.docs_out - kept)
            if lost > 0:  # a stream that fails before it gives out text loses what none can count
                damaged += lost
                stats.dropped["damaged compressed file"] += lost
    stats.docs_in = stats.docs_out + damaged


def _read_file(
    path: Path, text_field: str, report: Report, max_line_bytes: int, max_doc_bytes: int, json_field: str
) -> Iterator[Document]:
    """One file's documents, by its format."""
    kind = suffixes(path)[0]
    if kind == ".parquet":
        from lmforge.data.parquet import read_parquet  # imports this module's errors

        return read_parquet(path, text_field, report)
    if kind in TABLES:
        from lmforge.data.csv_table import read_csv  # imports this module's readers

        return read_csv(path, text_field, report, max_line_bytes, TABLES[kind])
    if kind in JSON_LINES:
        return _read_jsonl(path, text_field, report, max_line_bytes)
    if kind == ".json":
        from lmforge.data.json_array import read_json  # these two import this module's readers

        return read_json(path, text_field, report, max_line_bytes, json_field)
    if kind in WARC:
        from lmforge.data.warc import read_warc

        return read_warc(path, report, max_doc_bytes)
    if kind in DOCUMENTS:
        from lmforge.data.documents import read_document

        return read_document(path, report, max_doc_bytes)
    return _read_text(path, report, max_line_bytes, max_doc_bytes)


def _not_text(f: IO[bytes], path: Path, report: Report) -> bool:
    """True (and reported) for a file that is not UTF-8 text: UTF-16 (named, since a converter
    fixes it) or binary."""
    head = f.peek(8192)[:8192]  # type: ignore[attr-defined] - BufferedReader.peek
    if head.startswith(UTF16_BOMS) and b"\x00" in head:  # its ASCII is half NULs; else a Latin-1 "ÿþ"
        report.problem(str(path), "UTF-16 text, not UTF-8", f"convert it: iconv -f UTF-16 -t UTF-8 {path}")
    elif (order := _utf16_without_bom(head)) is not None:
        convert = f"convert it: iconv -f {order} -t UTF-8 {path}"
        report.problem(str(path), f"UTF-16 text without a byte order mark ({order}), not UTF-8", convert)
    elif b"\x00" in head:
        report.problem(str(path), "binary file")
    else:
        return False
    return True


def _utf16_without_bom(head: bytes) -> str | None:
    """ "UTF-16LE" or "UTF-16BE" for text whose every other byte is a NUL, as UTF-16 writes Latin
    text without a BOM (a binary file was all it was called); None otherwise."""
    even, odd = head[0::2], head[1::2]
    if len(odd) < 8:
        return None
    for order, nuls, text in (("UTF-16LE", odd, even), ("UTF-16BE", even, odd)):
        if nuls.count(0) > 0.95 * len(nuls) and text.count(0) == 0:
            return order
    return None


def _read_text(path: Path, report: Report, max_line: int, max_doc: int) -> Iterator[Document]:
    lines: list[str] = []
    size, part, number, failed = 0, 0, 0, False
    too_long = report.problem_counts["line too long"]  # a file of only such lines is named once
    decode = _Decoder()
    try:
        with _open_binary(path) as f:
            if _not_text(f, path, report):
                return
            for number, offset, line in _lines(f, path, report, max_line):
                lines.append(decode(line, number, offset))
                size += len(line)
                if size >= max_doc:  # a huge file becomes several documents, cut at a line end
                    part += 1
                    yield Document("".join(lines), f"{path}#{part}")
                    lines, size = [], 0
    except READ_ERRORS as e:
        report.problem(f"{path}:{number + 1}" if number else str(path), _error_kind(e), str(e))
        failed = True  # what was read before the error is kept
    decode.report(path, report)
    text = "".join(lines)
    if text.strip():
        yield Document(text, f"{path}#{part + 1}" if part else str(path))
    elif not part and not failed and report.problem_counts["line too long"] == too_long:
        # (until 2026-12-07 a file of one over-long line was also called empty: two problems)
        report.problem(str(path), "blank file (only whitespace)" if text else "empty file")


def _read_jsonl(path: Path, field: str, report: Report, max_line: int) -> Iterator[Document]:
    number, failed, blank = 0, False, True  # blank: no line but white space yet
    too_long = report.problem_counts["line too long"]  # a file of only such lines is named so
    decode = _Decoder()
    try:
        with _open_binary(path) as f:
            if _not_text(f, path, report):
                return
            for number, offset, line in _lines(f, path, report, max_line):
                if not line.strip():
                    continue
                blank = False
                try:
                    record = json.loads(decode(line, number, offset))
                except json.JSONDecodeError:
                    report.problem(f"{path}:{number}", "not valid JSON")
                    continue
                text = record.get(field) if isinstance(record, dict) else None
                if not isinstance(text, str):
                    report.problem(f"{path}:{number}", "no string field", _field_detail(record, field))
                    continue
                if not text.strip():  # no document: with --stages none it was one, EOS and nothing
                    report.problem(f"{path}:{number}", "empty text", repr(field))
                    continue
                yield Document(whole_characters(text, f"{path}:{number}", report), f"{path}:{number}")
    except READ_ERRORS as e:
        report.problem(f"{path}:{number + 1}" if number else str(path), _error_kind(e), str(e))
        failed = True
    decode.report(path, report)
    if blank and not failed and report.problem_counts["line too long"] == too_long:
        # a file of blank lines was skipped unnamed, as a blank .txt file is not
        report.problem(str(path), "blank file (only whitespace)" if number else "empty file")


def _field_detail(record: object, field: str) -> str:
    """Why a JSON line has no text: the field asked for, and the keys the line has instead."""
    if not isinstance(record, dict):
        return f"{field!r}; the line is a JSON {type(record).__name__}, not an object"
    if field in record:
        return f"{field!r} is a {type(record[field]).__name__}, not a string"
    keys = ", ".join(map(repr, list(record)[:10]))
    return f"{field!r}; the line has {keys or 'no keys'}"


def _error_kind(e: BaseException) -> str:
    if isinstance(e, EOFError | lzma.LZMAError | zstandard.ZstdError | gzip.BadGzipFile | zlib.error):
        return "truncated or corrupt"
    if isinstance(e, OSError) and e.errno is not None:
        return "unreadable"
    return "truncated or corrupt" if isinstance(e, OSError) else "unreadable"
