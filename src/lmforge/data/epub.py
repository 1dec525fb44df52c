"""Read an EPUB book as one document: its XHTML chapters' text in the order of its spine.

An EPUB is a zip: META-INF/container.xml names the package file (content.opf), whose manifest
maps ids to files and whose spine lists the ids in reading order, which need not be the order of
the files in the zip or of their names. Read with the standard library (zipfile, ElementTree,
html.parser): ebooklib, the usual reader, is AGPL-licensed, and lmforge is Apache-2.0.

One document a book, as a .txt file is one: a book is the long context that a model learns to
follow, and its chapters are not separate texts (a book over `max_doc_bytes` is cut at chapter
ends). Chapters are joined with a blank line; a chapter's paragraphs, headings and list items
are a line each, a table row a line with tab-separated cells, and its <head> (the title repeated
on every chapter), scripts and styles are left out. The text is taken here rather than by the
markup stage, which strips tags from text files that merely hold some: a chapter is all markup
(an XML declaration, namespaced SVG covers, whitespace that HTML collapses), and with
`--stages none` the book would be trained on as XHTML.

Bad input is named in the report, never a traceback: a damaged zip, a missing or broken
container.xml or package file (the book skipped), a chapter the spine names that the zip lacks or
cannot give (the others kept), a book whose chapters are encrypted (DRM), a book with no text.
The work is bounded: a chapter over `max_doc_bytes` unzipped (as its zip declares it, which
zipfile holds it to) is skipped and named.
"""

from __future__ import annotations

import posixpath
import re
import zipfile
import zlib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote
from xml.etree import ElementTree

from lmforge.data.documents import opening, parts, said
from lmforge.data.html_blocks import BLOCK_TAGS, CELL_TAGS
from lmforge.data.report import Report
from lmforge.data.sources import Document
from lmforge.errors import counted

CONTAINER = "META-INF/container.xml"
ENCRYPTION = "META-INF/encryption.xml"  # DRM; or obfuscated fonts only, which do not matter here
CHAPTER_TYPES = ("application/xhtml+xml", "text/html")
# a book's damage: zipfile's and ElementTree's own errors, a missing member (KeyError), a
# compression method zipfile lacks (NotImplementedError), bad deflate data (zlib.error)
DAMAGE = (zipfile.BadZipFile, KeyError, ElementTree.ParseError, NotImplementedError, zlib.error, EOFError)


def read_epub(path: Path, report: Report, max_doc: int) -> Iterator[Document]:
    if opening(path, report) is None:
        return
    try:
        book = zipfile.ZipFile(path)
    except (*DAMAGE, OSError) as e:
        report.problem(str(path), "truncated or corrupt", f"not an EPUB (zip) file: {said(e)}")
        return
    with book:
        try:
            chapters = _spine(book)
            locked = _encrypted(book)
        except (*DAMAGE, ValueError) as e:
            report.problem(str(path), "truncated or corrupt", said(e))
            return
        if any(name in locked for name in chapters):
            report.problem(str(path), "encrypted EPUB", "its chapters are locked (DRM): not read")
            return
        missing: list[str] = []
        found = False
        texts = (text for name in chapters if (text := _chapter(book, name, max_doc, missing)).strip())
        for doc in parts(path, texts, max_doc, "\n\n"):
            found = True
            yield doc
    if missing:
        detail = f"{counted(len(missing), 'chapter')} of {len(chapters)} not read; the first: {missing[0]}"
        report.problem(str(path), "truncated or corrupt", detail)
    if not found and len(missing) < len(chapters):
        report.problem(
            str(path), "no text", f"{counted(len(chapters), 'chapter')} in its spine, none with text"
        )
    elif not chapters:
        report.problem(str(path), "no text", "its spine names no XHTML chapter")


def _spine(book: zipfile.ZipFile) -> list[str]:
    """The zip names of the book's XHTML chapters, in spine order (a linear="no" one too: notes
    and asides that readers show in place when linked)."""
    container = ElementTree.fromstring(book.read(CONTAINER))
    rootfile = next((e for e in container.iter() if _local(e.tag) == "rootfile"), None)
    opf_name = rootfile.get("full-path") if rootfile is not None else None
    if not opf_name:
        raise ValueError(f"{CONTAINER} names no package file (rootfile full-path)")
    opf = ElementTree.fromstring(book.read(opf_name))
    manifest = {e.get("id"): e for e in opf.iter() if _local(e.tag) == "item"}
    folder = posixpath.dirname(opf_name)
    chapters = []
    for ref in (e for e in opf.iter() if _local(e.tag) == "itemref"):
        item = manifest.get(ref.get("idref"))
        if item is None or item.get("media-type") not in CHAPTER_TYPES or not item.get("href"):
            continue  # an image or SVG page in the spine: no text
        href = unquote(item.get("href", "").split("#")[0])
        chapters.append(posixpath.normpath(posixpath.join(folder, href)))
    return chapters


def _encrypted(book: zipfile.ZipFile) -> set[str]:
    """The zip names that META-INF/encryption.xml lists as encrypted (fonts only, in a book
    without DRM: their obfuscation is the only encryption the EPUB standard defines)."""
    if ENCRYPTION not in book.namelist():
        return set()
    listed = ElementTree.fromstring(book.read(ENCRYPTION))
    return {unquote(e.get("URI", "")) for e in listed.iter() if _local(e.tag) == "CipherReference"}


def _chapter(book: zipfile.ZipFile, name: str, max_doc: int, missing: list[str]) -> str:
    """A chapter's text, or "" (and its name in `missing`) where the zip lacks or cannot give it."""
    try:
        size = book.getinfo(name).file_size
        if size > max_doc:
            missing.append(f"{name}: {size:,} bytes unzipped > {max_doc:,}")
            return ""
        raw = book.read(name)
    except (*DAMAGE, OSError) as e:
        missing.append(f"{name}: {said(e)}")
        return ""
    text = _Text()
    text.feed(_decode(raw))
    text.close()
    return text.result()


_ENCODING = re.compile(rb"""^<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)""")


def _decode(raw: bytes) -> str:
    """XHTML's bytes as text: UTF-8 (XML's default), or the encoding its declaration names (an
    EPUB 2 book may be Latin-1); a bad byte becomes U+FFFD."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16", errors="replace")
    declared = _ENCODING.match(raw.lstrip(b"\xef\xbb\xbf"))
    encoding = declared.group(1).decode() if declared else "utf-8-sig"
    try:
        return raw.decode(encoding, errors="replace")
    except LookupError:  # a name Python does not know
        return raw.decode("utf-8-sig", errors="replace")


class _Text(HTMLParser):
    """A chapter's visible text: a block element (paragraph, heading, list item, row) a line,
    runs of whitespace one space as HTML shows them (but in <pre>), entities decoded."""

    SKIP = {"head", "title", "script", "style"}
    BLOCKS = BLOCK_TAGS  # the markup stage's too

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = self.pre = 0
        self.line_start = True  # nothing yet on the current line
        self.pending = False  # a block ended or began: the next text starts a new line

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skip += 1
        elif tag == "br":
            self.out.append("\n")
            self.line_start, self.pending = True, False
        elif tag in CELL_TAGS and not (self.line_start or self.pending):
            self.out.append("\t")
        elif tag in self.BLOCKS:
            self.pending = True
            self.pre += tag == "pre"

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCKS:
            self.pending = True
            self.pre = max(0, self.pre - (tag == "pre"))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.SKIP:  # <script src="x"/> in XHTML: no content to skip
            self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if not self.pre:
            data = re.sub(r"\s+", " ", data)
            if self.line_start or self.pending:
                data = data.lstrip()
        if not data:
            return
        if self.pending and self.out:
            self.out.append("\n")
        self.pending = False
        self.out.append(data)
        self.line_start = data.endswith("\n")

    def result(self) -> str:
        return re.sub(r" +\n", "\n", "".join(self.out)).strip()


def _local(tag: str) -> str:
    """An XML tag's name without its namespace (`{http://www.idpf.org/2007/opf}item` -> `item`)."""
    return tag.rsplit("}", 1)[-1]
