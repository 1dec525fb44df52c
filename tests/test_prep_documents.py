"""PDF, Word (.docx) and EPUB inputs to `lmforge prep`, each written by a library that writes the
format (fpdf2, pypdf, python-docx; an EPUB by zipfile as the EPUB standard lays it out): read
with their text in order, through the CLI and lmforge.prep; damaged, encrypted and image-only
files named in the report, the other files' documents still written."""

from __future__ import annotations

import gzip
import json
import sys
import zipfile
from pathlib import Path

import pytest
from test_prep import _docs

from lmforge import LmforgeError, prep
from lmforge.cli import main
from lmforge.data.input_files import input_notes, list_files
from lmforge.data.report import Report
from lmforge.data.sources import read_documents
from lmforge.inference.retrieval import PassageIndex

fpdf = pytest.importorskip("fpdf")
pypdf = pytest.importorskip("pypdf")
docx = pytest.importorskip("docx")

PAGES = ["The first page speaks of whales.", "The second page speaks of ships."]
PDF_TEXT = "\n\n".join(PAGES)
DOCX_TEXT = "A paragraph first.\nname\tship\nAhab\tPequod\nBoth columns\nAfter the table."
EPUB_TEXT = "Chapter One\nCall me Ishmael & friends.\nSome years ago.\n\nChapter Two\nIt was a dark night."


def write_pdf(path: Path, pages: list[str], compress: bool = True) -> Path:
    pdf = fpdf.FPDF()
    pdf.set_compression(compress)
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 10, text)
    pdf.output(str(path))
    return path


def write_image_pdf(path: Path) -> Path:
    """A scanned page: an image, no text layer."""
    from PIL import Image

    pdf = fpdf.FPDF()
    pdf.add_page()
    pdf.image(Image.new("L", (64, 64), 200), x=10, y=10, w=100)
    pdf.output(str(path))
    return path


def write_encrypted_pdf(path: Path, user_password: str) -> Path:
    writer = pypdf.PdfWriter(clone_from=write_pdf(path, PAGES))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="AES-128")
    writer.write(path)
    return path


def write_docx(path: Path) -> Path:
    document = docx.Document()
    document.sections[0].header.paragraphs[0].text = "A running header, on every page"
    document.add_paragraph("A paragraph first.")
    table = document.add_table(rows=2, cols=2)
    for r, row in enumerate([["name", "ship"], ["Ahab", "Pequod"]]):
        for c, text in enumerate(row):
            table.cell(r, c).text = text
    merged = table.add_row().cells  # one cell over both columns: read once
    merged[0].merge(merged[1]).text = "Both columns"
    document.add_paragraph("After the table.")
    document.save(str(path))
    return path


CONTAINER = (
    '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
    '<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
    "</rootfiles></container>"
)


def _chapter(title: str, body: str, heading: bool = True) -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE html>\n<html xmlns="http://www.w3.org/1999/xhtml">'
        f"<head><title>{title} | The Book</title><style>p {{ margin: 0 }}</style></head>\n<body>\n"
        f"  {f'<h1>{title}</h1>' if heading else ''}\n{body}\n</body></html>"
    )


def write_epub(
    path: Path, chapters: dict[str, str] | None = None, extra: dict[str, str] | None = None
) -> Path:
    """Two chapters whose spine order (b then a) is neither the zip's order nor the names' order,
    a cover page of an SVG image, and a table of contents outside the spine."""
    chapters = chapters or {
        "text/a.xhtml": _chapter("Chapter Two", "<p>It was a dark\n   night.</p><script>track()</script>"),
        "text/b.xhtml": _chapter(
            "Chapter One", "<p>Call me Ishmael &amp; friends.</p>\n<p>Some years ago.</p>"
        ),
        "cover.xhtml": _chapter("Cover", '<svg><image width="60" xlink:href="c.jpg"/></svg>', False),
        "nav.xhtml": _chapter("Contents", "<nav><ol><li>Chapter One</li></ol></nav>"),
    }
    manifest = "".join(
        f'<item id="{name.replace("/", "-")}" href="{name}" media-type="application/xhtml+xml"/>'
        for name in chapters
    )
    spine = "".join(f'<itemref idref="{n}"/>' for n in ("cover.xhtml", "text-b.xhtml", "text-a.xhtml"))
    opf = (
        '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
        f"<manifest>{manifest}</manifest><spine>{spine}</spine></package>"
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as book:
        book.writestr("mimetype", "application/epub+zip", zipfile.ZIP_STORED)
        book.writestr("META-INF/container.xml", CONTAINER)
        book.writestr("OEBPS/content.opf", opf)
        for name, text in chapters.items():
            book.writestr(f"OEBPS/{name}", text)
        for name, text in (extra or {}).items():
            book.writestr(name, text)
    return path


def _corpus(folder: Path) -> Path:
    folder.mkdir()
    write_pdf(folder / "paper.pdf", PAGES)
    write_docx(folder / "report.docx")
    write_epub(folder / "book.epub")
    return folder


@pytest.mark.parametrize("how", ["api", "cli"])
def test_a_pdf_a_docx_and_an_epub_are_read_whole_with_their_text_in_order(tmp_path: Path, how: str) -> None:
    corpus = _corpus(tmp_path / "corpus")
    write_encrypted_pdf(corpus / "owner-only.pdf", user_password="")  # opens without a password
    out = tmp_path / "out"
    if how == "api":
        prep(corpus, out, "char", val_fraction=0.25, stages="none", quiet=True)
    else:
        argv = ["prep", str(corpus), "--out", str(out), "--tokenizer", "char", "--val-fraction", "0.25"]
        assert main([*argv, "--stages", "none", "--quiet"]) == 0
    assert sorted(_docs(out)) == sorted([PDF_TEXT, PDF_TEXT, DOCX_TEXT, EPUB_TEXT])
    report = json.loads((out / "report.json").read_text())
    assert report["problem_list"] == [] and "input_notes" not in report


def test_damaged_encrypted_and_image_only_files_are_named_and_the_others_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = _corpus(tmp_path / "corpus")
    data = (corpus / "paper.pdf").read_bytes()
    (corpus / "cut.pdf").write_bytes(data[: len(data) // 2])
    (corpus / "fake.pdf").write_text("not a PDF at all\n")
    write_encrypted_pdf(corpus / "locked.pdf", user_password="secret")
    write_image_pdf(corpus / "scan.pdf")
    data = (corpus / "report.docx").read_bytes()
    (corpus / "cut.docx").write_bytes(data[: len(data) // 2])
    (corpus / "old.docx").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600))  # a Word 97 .doc
    data = (corpus / "book.epub").read_bytes()
    (corpus / "cut.epub").write_bytes(data[: len(data) // 2])
    with zipfile.ZipFile(corpus / "bare.epub", "w") as book:
        book.writestr("mimetype", "application/epub+zip")
    out = tmp_path / "out"
    argv = ["prep", str(corpus), "--out", str(out), "--tokenizer", "char", "--val-fraction", "0.25"]
    assert main([*argv, "--stages", "none"]) == 0
    assert sorted(_docs(out)) == sorted([PDF_TEXT, DOCX_TEXT, EPUB_TEXT])
    problems = json.loads((out / "report.json").read_text())["problem_list"]
    cut_pdf = f"{corpus}/cut.pdf: truncated or corrupt (pypdf: "  # then pypdf's words, which may change
    assert [p for p in problems if p.startswith(cut_pdf)] == [problems[3]]
    assert problems[:3] + problems[4:] == [
        f"{corpus}/bare.epub: truncated or corrupt (There is no item named 'META-INF/container.xml' in the"
        " archive)",
        f"{corpus}/cut.docx: truncated or corrupt (File is not a zip file)",
        f"{corpus}/cut.epub: truncated or corrupt (not an EPUB (zip) file: File is not a zip file)",
        f"{corpus}/fake.pdf: not a PDF file (no %PDF- header in its first 1,024 bytes)",
        f"{corpus}/locked.pdf: encrypted PDF (it needs a password: decrypt it with one first (qpdf"
        " --decrypt))",
        f"{corpus}/old.docx: not a .docx (zip) file (a Word 97-2003 .doc, or a .docx with a password: save it"
        " as .docx without one)",
        f"{corpus}/scan.pdf: no text layer (1 page without text: a scanned or image-only PDF? OCR it first"
        " (ocrmypdf))",
    ]
    out_text = capsys.readouterr().out
    assert (
        "bad input skipped or repaired: 8 (" in out_text and f"  {corpus}/scan.pdf: no text layer" in out_text
    )


def test_a_book_keeps_the_chapters_it_can_read_and_a_locked_book_is_named(tmp_path: Path) -> None:
    missing = write_epub(tmp_path / "missing.epub")
    with zipfile.ZipFile(missing) as book:  # the same book less its chapter text/a.xhtml
        kept = {i.filename: book.read(i) for i in book.infolist() if not i.filename.endswith("a.xhtml")}
    with zipfile.ZipFile(missing, "w") as book:
        for name, data in kept.items():
            book.writestr(name, data)
    encryption = (
        '<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container"'
        ' xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData><enc:CipherData>'
        '<enc:CipherReference URI="OEBPS/text/b.xhtml"/></enc:CipherData></enc:EncryptedData></encryption>'
    )
    write_epub(tmp_path / "locked.epub", extra={"META-INF/encryption.xml": encryption})
    report = Report()
    docs = list(read_documents([tmp_path / "missing.epub", tmp_path / "locked.epub"], report=report))
    assert [(d.source, d.text) for d in docs] == [(str(missing), EPUB_TEXT.split("\n\n")[0])]
    assert report.problems == [
        f"{missing}: truncated or corrupt (1 chapter of 3 not read; the first: OEBPS/text/a.xhtml: There"
        " is no item named 'OEBPS/text/a.xhtml' in the archive)",
        f"{tmp_path}/locked.epub: encrypted EPUB (its chapters are locked (DRM): not read)",
    ]


def test_a_long_document_is_cut_at_page_ends(tmp_path: Path) -> None:
    """As a long text file is cut at line ends: max_doc_bytes holds for every reader."""
    path = write_pdf(tmp_path / "long.pdf", PAGES * 2)
    docs = list(read_documents(path, max_doc_bytes=len(PDF_TEXT)))
    assert [(d.source, d.text) for d in docs] == [(f"{path}#1", PDF_TEXT), (f"{path}#2", PDF_TEXT)]


def test_a_missing_library_refuses_the_read_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = _corpus(tmp_path / "corpus")
    write_pdf(corpus / "second.pdf", PAGES)
    monkeypatch.setitem(sys.modules, "pypdf", None)  # import pypdf raises ImportError
    with pytest.raises(LmforgeError) as e:
        prep(corpus, tmp_path / "out", "char", stages="none", quiet=True)
    assert str(e.value) == (
        f"{corpus}/paper.pdf and 1 other .pdf file: reading .pdf files needs pypdf, which cannot be imported"
        " (import of pypdf halted; None in sys.modules): pip install 'lmforge[documents]'"
    )
    assert not (tmp_path / "out").exists()


def test_a_compressed_document_is_named_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "paper.pdf.gz"
    path.write_bytes(gzip.compress(write_pdf(tmp_path / "paper.pdf", PAGES).read_bytes()))
    report = Report()
    assert [d.text for d in read_documents([path, tmp_path / "paper.pdf"], report=report)] == [PDF_TEXT]
    assert report.problems == [f"{path}: compressed .pdf file (not read: decompress it first (.gz))"]


def test_a_folder_lists_the_documents_and_its_note_names_them_as_read(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "corpus")
    (corpus / "notes.rst").write_text("reStructuredText\n")
    passed_over: list[Path] = []
    files = list_files(corpus, passed_over)
    assert [f.name for f in files] == ["book.epub", "paper.pdf", "report.docx"]
    [note] = input_notes(files, passed_over)
    assert note.endswith(
        f"(or compressed: .gz, .xz, .bz2, .zst), .docx, .epub, .pdf ({corpus / 'notes.rst'})"
    )


def test_ask_indexes_a_pdf_for_its_text(tmp_path: Path) -> None:
    """A PDF's bytes are not UTF-8 (its header's binary comment): `ask` had skipped it, 'convert it
    to UTF-8'."""
    docs = tmp_path / "docs"
    docs.mkdir()
    write_pdf(docs / "paper.pdf", PAGES, compress=False)
    index = PassageIndex.build(docs, passage_words=6, quiet=True)
    assert index.stats["files"] == 1 and not index.stats["skipped"]
    best = index.search("Which page speaks of ships?", k=1)[0][0]
    assert best.source == str(docs / "paper.pdf") and "ships" in best.text


W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
DATE = 'w:author="A" w:date="2026-01-01T00:00:00Z"'
# Word's "All Markup" with every change accepted: insertions in, deletions out; content controls,
# fields' results and links read in place; a paragraph whose mark is deleted joins the next one.
TRACKED = [
    f'<w:r><w:t xml:space="preserve">The meeting is on </w:t></w:r><w:del w:id="1" {DATE}><w:r>'
    f'<w:delText>Monday</w:delText></w:r></w:del><w:ins w:id="2" {DATE}><w:r><w:t>Tuesday at noon</w:t>'
    "</w:r></w:ins><w:r><w:t>.</w:t></w:r>",
    '<w:r><w:t xml:space="preserve">Name: </w:t></w:r><w:sdt><w:sdtPr/><w:sdtContent><w:r><w:t>Jane'
    '</w:t></w:r></w:sdtContent></w:sdt><w:r><w:t xml:space="preserve">, see </w:t></w:r><w:fldSimple'
    ' w:instr=" REF _Ref1 \\h "><w:r><w:t>Section 2</w:t></w:r></w:fldSimple><w:r><w:t xml:space="preserve">'
    ' on page </w:t></w:r><w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText> PAGEREF _Ref1'
    ' </w:instrText></w:r><w:r><w:fldChar w:fldCharType="separate"/></w:r><w:r><w:t>7</w:t></w:r><w:r>'
    '<w:fldChar w:fldCharType="end"/></w:r><w:r><w:t xml:space="preserve">, at </w:t></w:r><w:hyperlink'
    ' w:anchor="x"><w:r><w:t>the link</w:t></w:r></w:hyperlink><w:moveFrom w:id="3" w:author="A"><w:r>'
    "<w:t>moved away</w:t></w:r></w:moveFrom><w:r><w:t>.</w:t></w:r>",
    f'<w:pPr><w:rPr><w:del w:id="4" {DATE}/></w:rPr></w:pPr><w:r><w:t xml:space="preserve">Joined </w:t>'
    "</w:r>",
]


def test_a_docx_reads_as_word_shows_it_with_tracked_changes_accepted(tmp_path: Path) -> None:
    """python-docx's paragraph text has only runs and links: a tracked insertion, a content
    control and a field's result were lost (`The meeting is on .`, `Name: , see .`)."""
    from docx.oxml import parse_xml

    document = docx.Document()
    document.add_paragraph("First.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(1, 0).text = "kept row", "deleted row"
    table.rows[1]._tr.get_or_add_trPr().append(parse_xml(f'<w:del {W} w:id="5" {DATE}/>'))
    cell = table.cell(0, 1)._tc  # a content control around a cell's paragraph
    cell.append(
        parse_xml(
            f"<w:sdt {W}><w:sdtContent><w:p><w:r><w:t>in a control</w:t></w:r></w:p></w:sdtContent></w:sdt>"
        )
    )
    body = document.element.body
    for xml in TRACKED:
        body[-1].addprevious(parse_xml(f"<w:p {W}>{xml}</w:p>"))
    block = f"<w:sdt {W}><w:sdtContent><w:p><w:r><w:t>with the next.</w:t></w:r></w:p></w:sdtContent></w:sdt>"
    body[-1].addprevious(parse_xml(block))
    path = tmp_path / "tracked.docx"
    document.save(str(path))
    [doc] = read_documents(path)
    assert doc.text == (
        "First.\nkept row\tin a control\nThe meeting is on Tuesday at noon.\n"
        "Name: Jane, see Section 2 on page 7, at the link.\nJoined with the next."
    )


def test_a_docx_page_or_column_break_inside_a_paragraph_ends_a_line(tmp_path: Path) -> None:
    """python-docx's run text drops a page or column break (only a line break is a newline), so
    the last word of a page was glued to the first of the next: `endStart`."""
    from docx.enum.text import WD_BREAK

    document = docx.Document()
    run = document.add_paragraph().add_run("end of a page")
    run.add_break(WD_BREAK.PAGE)
    run.add_text("Start of the next")
    run.add_break(WD_BREAK.COLUMN)
    run.add_text("a column")
    run.add_break()
    run.add_text("a line")
    path = tmp_path / "breaks.docx"
    document.save(str(path))
    [doc] = read_documents(path)
    assert doc.text == "end of a page\nStart of the next\na column\na line"


def test_a_docx_text_box_is_read_after_its_paragraph_once(tmp_path: Path) -> None:
    """A text box's paragraphs were left out (a flyer's text lost); Word writes each box twice,
    as DrawingML and as a VML fallback: read once, after the paragraph it is anchored in."""
    from docx.oxml import parse_xml

    ns = (
        f"{W} xmlns:mc='http://schemas.openxmlformats.org/markup-compatibility/2006'"
        " xmlns:wps='http://schemas.microsoft.com/office/word/2010/wordprocessingShape'"
        " xmlns:v='urn:schemas-microsoft-com:vml'"
    )

    def box(text: str) -> str:
        return f"<w:txbxContent><w:p><w:r><w:t>{text}</w:t></w:r></w:p></w:txbxContent>"

    drawn = f"<w:drawing><wps:txbx>{box('nested')}</wps:txbx></w:drawing>"
    inner = f"<w:p><w:r><w:t>Inner</w:t></w:r><w:r>{drawn}</w:r></w:p>"
    anchored = (
        f"<w:p {ns}><w:r><w:t xml:space='preserve'>Anchor </w:t></w:r><w:r><mc:AlternateContent>"
        f"<mc:Choice Requires='wps'><w:drawing><wps:txbx><w:txbxContent>{inner}"
        "<w:p><w:r><w:t>Sale on Friday</w:t></w:r></w:p></w:txbxContent></wps:txbx></w:drawing></mc:Choice>"
        f"<mc:Fallback><w:pict><v:shape><v:textbox>{box('Sale on Friday')}</v:textbox></v:shape></w:pict>"
        "</mc:Fallback></mc:AlternateContent></w:r><w:r><w:t>text.</w:t></w:r></w:p>"
    )
    vml = f"<w:pict><v:shape><v:textbox>{box('Old box')}</v:textbox></v:shape></w:pict>"
    vml_only = f"<w:p {ns}><w:r>{vml}</w:r></w:p>"
    document = docx.Document()
    document.add_paragraph("Before.")
    body = document.element.body
    for xml in (anchored, vml_only):
        body[-1].addprevious(parse_xml(xml))
    document.add_paragraph("After.")
    path = tmp_path / "boxes.docx"
    document.save(str(path))
    [doc] = read_documents(path)
    assert doc.text == "Before.\nAnchor text.\nInner\nnested\nSale on Friday\n\nOld box\nAfter."
