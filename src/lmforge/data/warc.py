"""Read a .warc file (Common Crawl's WARC files, `.warc.gz` as they ship; its `.warc.wet.gz` of
extracted text too) with warcio, record by record, as datatrove's WarcReader does.

Each HTTP `response` record whose body is an HTML page (or plain text) with a 2xx status is one
document, and each WET `conversion` record of plain text is one: the body's `Content-Encoding`
is undone (gzip, deflate, zstd, and brotli's `br` where the `brotli` package is installed, as
warcio itself decodes it then; a body in another, in `br` without it, or whose compression is
damaged, is skipped and counted: warcio passed such bytes on as they were, binary garbage),
then it is decoded by its byte order mark, else its charset (the HTTP header's, else the page's
`<meta charset>`, else UTF-8, else windows-1252 as browsers fall back), as the WHATWG encoding
standard orders them, a charset label meaning what that standard says (webencodings, html5lib's
table: `gb2312` is GBK, `shift_jis` windows-31J, `iso-8859-9` windows-1254, `iso-8859-1`
windows-1252; Python's codecs of the same names lost or garbled their pages' characters), and goes
through the `markup` stage as an .html file does. A page in a charset that the standard maps to
its `replacement` encoding (`iso-2022-kr`, `hz-gb-2312`: browsers show no text of it) is skipped
and counted. The other records
(request, metadata, warcinfo, revisit; responses that are images, PDFs, redirects, errors) are
skipped and counted in the report's `read` row, not named one by one: a Common Crawl file holds a
request and a metadata record beside every response.
"""

from __future__ import annotations

import codecs
import io
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import webencodings
import zstandard
from warcio.archiveiterator import ArchiveIterator
from warcio.bufferedreaders import ChunkedDataReader
from warcio.exceptions import ArchiveLoadFailed
from warcio.statusandheaders import StatusAndHeadersParserException

from lmforge.data.compressed import open_compressed
from lmforge.data.input_files import suffixes
from lmforge.data.report import Report
from lmforge.data.sources import READ_ERRORS, Document, _error_kind

try:  # optional (lmforge[html]): Google's brotli, the one warcio decodes `br` with
    import brotli
except ImportError:
    brotli = None

PAGE_TYPES = {"text/html", "application/xhtml+xml", "text/plain"}
WARC_ERRORS = (ArchiveLoadFailed, StatusAndHeadersParserException, *READ_ERRORS)
# HTML's prescan (WHATWG "prescan a byte stream"): a charset in a <meta> of the first 1024 bytes
_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([\w.:-]+)""", re.I)
# WHATWG's GBK decoder is its gb18030 decoder (four-byte sequences too); webencodings gives gbk's
_GB18030 = codecs.lookup("gb18030")
# WHATWG's BOM sniffing: a byte order mark outranks any declared charset
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
NOT_DECODED = "WARC body in a Content-Encoding not decoded"
DAMAGED = "WARC body's compression damaged"
NO_BROTLI = "WARC body in brotli (br) not decoded: pip install 'lmforge[html]' (or brotli)"
NO_DECODER = "WARC page in a charset browsers do not decode (WHATWG's replacement)"


class _Guarded:
    """A file's (decompressed) bytes that end, rather than raise, where the file is damaged,
    keeping the error: warcio takes an EOFError for the end of the records (and prints zlib's
    errors on its own gzip reading), so a truncated .warc.gz ended there unsaid."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        if self.error is not None:
            return b""
        try:  # read1: a buffered read that fails mid-way loses the part it had (gzip's does)
            read1 = getattr(self.f, "read1", None)
            return read1(size) if read1 is not None else self.f.read(size)
        except READ_ERRORS as e:
            self.error = e
            return b""


def read_warc(path: Path, report: Report, max_doc: int) -> Iterator[Document]:
    """The pages of a (possibly compressed) WARC file, one document each."""
    stats = report.stage("read")
    number = 0
    stream = None
    opener = (lambda p, _: open_compressed(p)) if suffixes(path)[1] else open
    try:
        # no BufferedReader between: the bytes it held when the damage was hit would be lost
        with opener(path, "rb") as f:
            stream = _Guarded(f)
            for number, record in enumerate(ArchiveIterator(stream), 1):  # noqa: B007 - named on errors
                where = f"{path}: record {number}"
                if record.format != "warc":  # warcio reads any text as ARC records, not a WARC's
                    line = " ".join(v for _, v in record.rec_headers.headers)[:60]
                    wrong = (str(path), "not a WARC file") if number == 1 else (where, "not a WARC record")
                    report.problem(*wrong, f"it starts with {line!r}")
                    return
                skip = _skipped(record)
                if skip:
                    stats.dropped[skip] += 1
                    continue
                body = _body(record, max_doc + 1)
                if isinstance(body, str):  # why it is skipped
                    stats.dropped[body] += 1
                    continue
                if len(body) > max_doc:
                    report.problem(where, "record too long", f"over {max_doc:,} bytes")
                    continue
                decoded = _decode(body, record)
                if decoded is None:
                    stats.dropped[NO_DECODER] += 1
                    continue
                text, repaired = decoded
                if repaired:
                    stats.edits["WARC pages with bytes invalid in their charset"] += 1
                if not text.strip():
                    stats.dropped["WARC empty page"] += 1
                    continue
                yield Document(text, where)
    except WARC_ERRORS as e:
        cause = stream.error if stream is not None and stream.error is not None else e  # a record cut short
        why = str(cause).strip().split("\n")[0]
        damaged = isinstance(cause, ArchiveLoadFailed) and not number
        kind = "not a WARC file" if damaged else _error_kind(cause)
        report.problem(f"{path}: record {number + 1}" if number else str(path), kind, why)
        return
    if stream.error is not None:  # the records before the damage were read
        report.problem(f"{path}: record {number + 1}", _error_kind(stream.error), str(stream.error))
    elif not number:
        report.problem(str(path), "empty file")


def _skipped(record: Any) -> str | None:
    """Why a record is not a document (counted under that reason), or None for a page."""
    if record.rec_type == "conversion":  # a WET file's extracted text
        kind = _media_type(record.rec_headers.get_header("Content-Type"))
        return None if kind == "text/plain" else "WARC conversion record not text"
    if record.rec_type != "response":
        return f"WARC {record.rec_type} record"
    if record.http_headers is None:  # a response of another protocol (dns:, ftp:)
        return "WARC response not HTTP"
    if not record.http_headers.get_statuscode().startswith("2"):
        return "WARC response not 2xx (redirect, error)"
    # Common Crawl's own sniffing of the body, else what the server said
    identified = record.rec_headers.get_header("WARC-Identified-Payload-Type")
    kind = _media_type(identified or record.http_headers.get_header("Content-Type"))
    return None if kind in PAGE_TYPES else "WARC response not HTML or text"


def _media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


def _body(record: Any, limit: int) -> bytes | str:
    """A record's body (at most `limit` bytes), its transfer and content encodings undone, or
    why it is skipped: warcio's content_stream() passes a body in an encoding it cannot decode on
    as it is, and a gzip body damaged at its start too: they became pages of binary garbage."""
    headers = record.http_headers
    if headers is None:  # a WET conversion record
        return record.raw_stream.read(limit)
    value = headers.get_header("Content-Encoding") or ""
    codings = [c.strip().lower() for c in value.split(",") if c.strip().lower() not in ("", "identity")]
    if brotli is None and "br" in codings:
        return NO_BROTLI
    if any(c not in _DECOMPRESS for c in codings):
        return NOT_DECODED
    chunked = (headers.get_header("Transfer-Encoding") or "").strip().lower() == "chunked"
    body = (ChunkedDataReader(record.raw_stream) if chunked else record.raw_stream).read(limit)
    try:
        for coding in reversed(codings):  # applied in the order listed
            body = _DECOMPRESS[coding](body, limit)
    except (zlib.error, zstandard.ZstdError, *_BROTLI_ERRORS):
        return DAMAGED
    return body


def _gunzip(body: bytes, limit: int) -> bytes:
    stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
    return _whole(stream.decompress(body, limit), stream.eof, body, limit)


def _inflate(body: bytes, limit: int) -> bytes:
    try:  # HTTP's deflate is zlib's format; some servers send raw deflate
        stream = zlib.decompressobj()
        out = stream.decompress(body, limit)
    except zlib.error:
        stream = zlib.decompressobj(-zlib.MAX_WBITS)
        out = stream.decompress(body, limit)
    return _whole(out, stream.eof, body, limit)


def _whole(out: bytes, finished: bool, body: bytes, limit: int) -> bytes:
    """`out`, unless the compressed body ended before its stream did (a body cut short: its page
    half there), where neither the body nor the output was cut at `limit` by this reader."""
    if not finished and len(out) < limit and len(body) < limit:
        raise zlib.error("the compressed body ends before its stream")
    return out


def _unzstd(body: bytes, limit: int) -> bytes:
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body), read_across_frames=True)
    parts: list[bytes] = []
    size = 0
    while size < limit and (part := reader.read(limit - size)):  # bounded: a small body may unpack to GBs
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def _unbrotli(body: bytes, limit: int) -> bytes:
    decompressor = brotli.Decompressor()
    try:  # bounded, as the others: a small body may unpack to GBs
        out = decompressor.process(body, output_buffer_limit=limit)[:limit]
    except TypeError:  # brotli before 1.2 has no limit
        out = decompressor.process(body)[:limit]
    return _whole(out, decompressor.is_finished(), body, limit)


_DECOMPRESS = {"gzip": _gunzip, "x-gzip": _gunzip, "deflate": _inflate, "zstd": _unzstd, "br": _unbrotli}
_BROTLI_ERRORS: tuple[type[Exception], ...] = (brotli.error,) if brotli is not None else ()


def _decode(body: bytes, record: Any) -> tuple[str, bool] | None:
    """(text, whether bytes invalid in its charset were replaced by U+FFFD), or None for a page in
    the WHATWG's replacement encoding."""
    for bom, codec in _BOMS:
        if body.startswith(bom):
            text = body[len(bom) :].decode(codec, errors="replace")
            return text, "\ufffd" in text
    declared = None
    if record.http_headers is not None:
        declared = webencodings.lookup(
            _param(record.http_headers.get_header("Content-Type") or "", "charset")
        )
    if declared is None and (meta := _META_CHARSET.search(body[:1024])):
        declared = _prescanned(webencodings.lookup(meta.group(1).decode("ascii", "replace")))
    if declared is not None and declared.name == "replacement":
        return None
    codec = (_GB18030 if declared.name == "gbk" else declared.codec_info) if declared else None
    utf8 = webencodings.UTF8.codec_info
    for info in [codec, utf8] if codec is not None and codec.name != "utf-8" else [utf8]:
        try:  # the declared charset, then UTF-8: mislabelled UTF-8 is common
            return info.decode(body)[0], False
        except UnicodeDecodeError:
            pass
    text = (codec or webencodings.lookup("windows-1252").codec_info).decode(body, "replace")[0]
    return text, "\ufffd" in text


def _prescanned(encoding: webencodings.Encoding | None) -> webencodings.Encoding | None:
    """A `<meta charset>`'s encoding as HTML's prescan takes it: a page that names UTF-16 in its
    own bytes is not UTF-16 (its ASCII tag was read), it is UTF-8; x-user-defined is windows-1252."""
    if encoding is None:
        return None
    if encoding.name in ("utf-16le", "utf-16be"):
        return webencodings.UTF8
    return webencodings.lookup("windows-1252") if encoding.name == "x-user-defined" else encoding


def _param(header: str, name: str) -> str:
    """A parameter of a header (`text/html; charset=UTF-8` -> `UTF-8`), or ''."""
    for part in header.split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == name:
            return value.strip().strip("\"'")
    return ""
