"""A .docx body's text as Word shows it with every tracked change accepted, read from python-docx's
XML (documents.py reads the file).

python-docx's `paragraph.text` and `iter_inner_content()` see only a paragraph's runs and
hyperlinks and a body's paragraphs and tables: a tracked insertion (`w:ins`), a content control
(`w:sdt`, around paragraphs or inside one), a simple field's result (`w:fldSimple`) and custom XML
were lost, so `The meeting is on <ins>Tuesday</ins>.` read `The meeting is on .`. Here each element
that holds text is walked in body order: insertions and moves in kept, deletions and moves out
(`w:del`, `w:moveFrom`) left out; a complex field gives its result runs (its code is in
`w:instrText`, which no run's text holds); a paragraph whose mark is deleted joins the next, as
accepting the change joins them. A page or column break is a line end (python-docx's run text
drops it, gluing the last word of a page to the first of the next; Word's plain-text export writes a
line end there). A text box's paragraphs are lines after the paragraph it is anchored in (until
2026-12-07 left out: a flyer's or newsletter's text in boxes was lost); a box's VML fallback copy
(`mc:Fallback`) is not read twice. Footnotes and comments are left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from docx.oxml.ns import qn
from docx.table import Table
from lxml import etree

P, TBL, R, SDT, SDT_CONTENT = qn("w:p"), qn("w:tbl"), qn("w:r"), qn("w:sdt"), qn("w:sdtContent")
CUSTOM_XML, BR, TXBX = qn("w:customXml"), qn("w:br"), qn("w:txbxContent")
# Inline elements whose runs are part of the text: links, insertions, a move's new place, a simple
# field's result, smart tags, custom XML, bidirectional overrides (w:sdt: its w:sdtContent).
INLINE = {
    qn(f"w:{t}") for t in ("hyperlink", "ins", "moveTo", "fldSimple", "smartTag", "customXml", "dir", "bdo")
}
# What accepting the changes removes: a paragraph mark or table row with one of these is deleted.
DELETED = [qn("w:del"), qn("w:moveFrom")]
# A paragraph's text boxes (DrawingML's, or VML's where a file has only those), not their fallback
# copies; boxes inside a box are among them (_boxes keeps the outer ones)
TEXT_BOXES = etree.XPath(
    "descendant::w:txbxContent[not(ancestor::mc:Fallback)]",
    namespaces={
        "w": qn("w:p")[1:].split("}")[0],
        "mc": "http://schemas.openxmlformats.org/markup-compatibility/2006",
    },
)


def body_lines(document: Any) -> Iterator[str]:
    """A python-docx Document's body: a paragraph a line, a table a row a line (`rows`)."""
    return blocks(document.element.body, document)


def blocks(container: Any, parent: Any) -> Iterator[str]:
    """The lines of a body, a table cell or a block content control (`parent`: python-docx's
    owner of the tables, which they need for their part)."""
    held = ""  # paragraphs whose mark is deleted: the next paragraph continues them
    for text, kind in _items(container, parent):
        if kind == "joined":
            held += text
        elif kind == "paragraph":
            yield held + text
            held = ""
        else:  # a table's row: a paragraph held before the table stays a line of its own
            if held:
                yield held
            held = ""
            yield text
    if held:
        yield held


def _items(container: Any, parent: Any) -> Iterator[tuple[str, str]]:
    """Paragraphs ("paragraph", or "joined" where the mark is deleted) and table rows ("row"),
    those inside content controls and custom XML in their place."""
    for child in container:
        if child.tag == P:
            mark = child.find(f"{qn('w:pPr')}/{qn('w:rPr')}")
            joined = mark is not None and any(mark.find(tag) is not None for tag in DELETED)
            yield paragraph_text(child), "joined" if joined else "paragraph"
            for box in _boxes(child):
                yield from ((line, "row") for line in blocks(box, parent))
        elif child.tag == TBL:
            yield from ((line, "row") for line in rows(Table(child, parent), parent))
        elif child.tag == SDT:
            content = child.find(SDT_CONTENT)
            if content is not None:
                yield from _items(content, parent)
        elif child.tag == CUSTOM_XML:
            yield from _items(child, parent)


def _boxes(paragraph: Any) -> Iterator[Any]:
    """The text boxes of a paragraph's own runs: a box inside one of them is read with it."""
    for box in TEXT_BOXES(paragraph):
        up = box.getparent()
        while up is not paragraph and up.tag != TXBX:
            up = up.getparent()
        if up is paragraph:
            yield box


def paragraph_text(p: Any) -> str:
    out: list[str] = []
    _inline(p, out)
    return "".join(out)


def _run_text(run: Any) -> str:
    """python-docx's run text (w:t, tabs, line breaks; no w:delText), where every break, a page's
    or a column's too, is a line end."""
    return "".join(
        "\n" if e.tag == BR else str(e)
        for e in run.xpath("w:br | w:cr | w:noBreakHyphen | w:ptab | w:t | w:tab")
    )


def _inline(element: Any, out: list[str]) -> None:
    for child in element:
        if child.tag == R:
            out.append(_run_text(child))
        elif child.tag == SDT:
            content = child.find(SDT_CONTENT)
            if content is not None:
                _inline(content, out)
        elif child.tag in INLINE:
            _inline(child, out)


def rows(table: Table, parent: Any) -> Iterator[str]:
    """A table's rows, a line each, cells separated by tabs (as Word's plain-text export writes
    them); a deleted row left out. python-docx gives a merged cell once for each column or row it
    spans: read once, where it starts (`_tc`: the cell's XML element)."""
    seen: set[Any] = set()  # the elements themselves: held, so an id is never reused
    for row in table.rows:
        props = row._tr.trPr
        if props is not None and any(props.find(tag) is not None for tag in DELETED):
            continue
        cells = []
        for cell in row.cells:
            if cell._tc in seen:
                continue
            seen.add(cell._tc)
            cells.append(" ".join(line for line in blocks(cell._tc, parent) if line.strip()))
        yield "\t".join(cells)
