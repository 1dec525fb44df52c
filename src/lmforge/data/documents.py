"""Read PDF and Word (.docx) files as documents, one a file (EPUB books: epub.py).

A PDF's text is what pypdf extracts from each page, the pages joined with a blank line (not a form
feed: the markup stage removes control characters, which would glue the last word of a page to
the first of the next). A .docx is its body in order as Word shows it with tracked changes
accepted (docx_text.py): a paragraph a line, a table a row a line with its cells separated by
tabs (as Word's own plain-text export writes them), a merged cell once; headers, footers,
footnotes and comments are left out (page furniture and asides, repeated on every page or cut off
from the text they belong to). A document longer than `max_doc_bytes` is cut into several at page
or paragraph ends, as a long text file is.

Bad input is skipped and named in the report, never a traceback: a damaged file (what pypdf or
python-docx raise on it: a damaged file can make either raise almost anything, so every
Exception from their calls is taken for damage), an encrypted PDF that needs a password, a PDF
with no text layer (scanned pages: OCR it first), a compressed one (`a.pdf.gz`). The work is
bounded: pypdf's own limits (75 MB a decompressed stream, 10,000 objects for a broken file's
recovery), MAX_PAGES pages a PDF (the rest named, not read), and a .docx's parts declared by its
zip at most MAX_UNZIPPED bytes in all. The libraries are optional (`pip install
'lmforge[documents]'`): a file whose reader cannot be imported stops the read before any file is
read, in one line.
"""

from __future__ import annotations

import importlib
import logging
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lmforge.data.input_files import suffixes
from lmforge.data.report import Report
from lmforge.data.sources import Document  # sources imports this module lazily, as parquet.py
from lmforge.errors import LmforgeError, counted

INSTALL = "pip install 'lmforge[documents]'"
LIBRARIES = {".pdf": "pypdf", ".docx": "docx"}  # the module each reader imports (.epub: the standard library)
MAX_PAGES = 10_000  # a PDF's pages read (a long book has ~1,500); pypdf can take seconds on one page
MAX_UNZIPPED = 1 << 30  # a .docx's parts, uncompressed, as its zip declares them: python-docx holds them all
OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # a Word 97-2003 .doc, or a password-protected .docx


def check_libraries(files: list[Path]) -> None:
    """A one-line error when a reader the files need cannot be imported, naming the first such file."""
    for kind, module in LIBRARIES.items():
        needing = [f for f in files if suffixes(f) == (kind, "")]
        if not needing:
            continue
        try:
            importlib.import_module(module)
        except ImportError as e:
            more = f" and {counted(len(needing) - 1, 'other ' + kind + ' file')}" if len(needing) > 1 else ""
            raise LmforgeError(
                f"{needing[0]}{more}: reading {kind} files needs {module}, which cannot be imported"
                f" ({str(e).splitlines()[0]}): {INSTALL}"
            ) from None


def read_document(path: Path, report: Report, max_doc: int) -> Iterator[Document]:
    """A PDF, .docx or EPUB file's documents (compressed ones are named and skipped)."""
    kind, compression = suffixes(path)
    if compression:  # a zip inside a zip, or a PDF (compressed inside already) gzipped whole
        report.problem(str(path), f"compressed {kind} file", f"not read: decompress it first ({compression})")
        return iter(())
    if kind == ".epub":
        from lmforge.data.epub import read_epub  # imports parts() from here

        return read_epub(path, report, max_doc)
    return read_pdf(path, report, max_doc) if kind == ".pdf" else read_docx(path, report, max_doc)


def parts(path: Path, pieces: Iterable[str], max_doc: int, sep: str) -> Iterator[Document]:
    """`pieces` (pages, paragraphs, chapters) joined with `sep` into one document, or into several
    (`path#1`, `path#2`, ...) cut at a piece's end once one reaches `max_doc` bytes."""
    held: list[str] = []
    size = part = 0
    for piece in pieces:
        size += len(piece.encode("utf-8")) + (len(sep) if held else 0)
        held.append(piece)
        if size >= max_doc:
            part += 1
            yield Document(sep.join(held), f"{path}#{part}")
            held, size = [], 0
    if held:
        yield Document(sep.join(held), f"{path}#{part + 1}" if part else str(path))


def read_pdf(path: Path, report: Report, max_doc: int) -> Iterator[Document]:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError

    head = opening(path, report)
    if head is None:
        return
    if b"%PDF-" not in head:  # pypdf looks for it this far in too
        report.problem(str(path), "not a PDF file", "no %PDF- header in its first 1,024 bytes")
        return
    with _quiet("pypdf"):
        try:
            reader = PdfReader(path)
            pages = len(reader.pages)
        except FileNotDecryptedError:
            locked = "it needs a password: decrypt it with one first (qpdf --decrypt)"
            report.problem(str(path), "encrypted PDF", locked)
            return
        except DependencyError as e:  # AES encryption without the cryptography package
            report.problem(str(path), "encrypted PDF", f"{said(e)}: {INSTALL}")
            return
        except Exception as e:  # noqa: BLE001 - pypdf on a damaged file: see the module's docstring
            report.problem(str(path), "truncated or corrupt", f"pypdf: {said(e)}")
            return
        bad: list[tuple[int, Exception]] = []

        def texts() -> Iterator[str]:
            for number in range(min(pages, MAX_PAGES)):
                try:
                    text = reader.pages[number].extract_text()
                except Exception as e:  # noqa: BLE001 - a damaged page: the others are kept
                    bad.append((number + 1, e))
                    continue
                if text.strip():
                    yield text.rstrip()

        found = False
        for doc in parts(path, texts(), max_doc, "\n\n"):
            found = True
            yield doc
    if bad:
        first, e = bad[0]
        detail = f"{counted(len(bad), 'page')} of {pages:,} not read; the first, page {first}"
        detail += f": pypdf: {said(e)}"
        report.problem(str(path), "truncated or corrupt", detail)
    if pages > MAX_PAGES:
        report.problem(str(path), "too many pages", f"{pages:,}: the first {MAX_PAGES:,} read")
    if not found and len(bad) < min(pages, MAX_PAGES):
        what = f"{counted(pages, 'page')} without text" if pages else "no pages"
        ocr = "a scanned or image-only PDF? OCR it first (ocrmypdf)"
        report.problem(str(path), "no text layer", f"{what}: {ocr}")


def read_docx(path: Path, report: Report, max_doc: int) -> Iterator[Document]:
    import docx

    from lmforge.data.docx_text import body_lines  # imports python-docx, which is optional

    head = opening(path, report)
    if head is None:
        return
    if head.startswith(OLE):
        detail = "a Word 97-2003 .doc, or a .docx with a password: save it as .docx without one"
        report.problem(str(path), "not a .docx (zip) file", detail)
        return
    try:
        with zipfile.ZipFile(path) as package:
            unzipped = sum(info.file_size for info in package.infolist())
        if unzipped > MAX_UNZIPPED:
            report.problem(str(path), "too large", f"{unzipped:,} bytes unzipped > {MAX_UNZIPPED:,}")
            return
        lines = list(body_lines(docx.Document(str(path))))
    except Exception as e:  # noqa: BLE001 - a damaged zip or XML: see the module's docstring
        report.problem(str(path), "truncated or corrupt", said(e))
        return
    if not any(line.strip() for line in lines):
        report.problem(str(path), "empty document", "no text in its body (headers, footers are not read)")
        return
    yield from parts(path, lines, max_doc, "\n")


def opening(path: Path, report: Report) -> bytes | None:
    """A file's first 1,024 bytes, or None (reported) where it cannot be read: a dangling link, a
    folder, no permission, named as a text file's read names them."""
    try:
        with open(path, "rb") as f:
            return f.read(1024)
    except OSError as e:
        report.problem(str(path), "unreadable", e.strerror or said(e))
        return None


def said(e: BaseException) -> str:
    """An exception's first line, or its type where it says nothing (a KeyError of a missing part)."""
    message = e.args[0] if isinstance(e, KeyError) and e.args else e  # str(KeyError) is its repr
    text = str(message).strip().splitlines()
    return text[0] if text else type(e).__name__


@contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """pypdf logs each repair it makes of a damaged file as a warning on stderr, which would break
    into prep's progress bar; the file's problems that matter are in the report."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
