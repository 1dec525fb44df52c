"""prep's readers keep the user's text or name what they drop (tester C4's findings, 2026-12-07):
a Parquet cell of bad UTF-8, CSV/TSV rows with more fields than the header, WARC charset labels
read as the WHATWG encoding standard reads them, a .jsonl of blank lines."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest

from lmforge.data import warc
from lmforge.data.report import Report
from lmforge.data.sources import read_documents


def _read(inputs: object, **kwargs: object) -> tuple[list[str], Report]:
    report = Report()
    texts = [d.text for d in read_documents(inputs, report=report, **kwargs)]  # type: ignore[arg-type]
    return texts, report


@pytest.mark.parametrize("large", [False, True])
def test_a_parquet_cell_of_bad_utf8_is_repaired_and_named_by_its_row(tmp_path: Path, large: bool) -> None:
    """3,000 rows, row 1501 with bytes \\xff\\xfe (a writer that does not check UTF-8): 1,024 rows
    came out, the report named row 1025 (its batch's start), and 1,975 rows were lost unsaid."""
    np = pytest.importorskip("numpy")
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    cells = [f"row {i} some text here".encode() for i in range(3000)]
    cells[1500] = b"bad \xff\xfe byte row"
    offsets = np.cumsum([0] + [len(c) for c in cells]).astype(np.int64 if large else np.int32)
    kind = pa.large_string() if large else pa.string()
    buffers = [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(cells))]
    pq.write_table(pa.table({"text": pa.Array.from_buffers(kind, 3000, buffers)}), tmp_path / "t.parquet")
    texts, report = _read(tmp_path / "t.parquet")
    assert texts == [c.decode("utf-8", errors="replace") for c in cells]
    assert texts[1500] == "bad \ufffd\ufffd byte row"
    where = f"{tmp_path / 't.parquet'}: row 1501: invalid UTF-8 (byte 4 of the cell; repaired with U+FFFD)"
    assert report.problems == [where] and report.problem_counts == {"invalid UTF-8": 1}
    assert report.skipped() == [f"repaired {where}"]


def test_csv_and_tsv_rows_with_more_fields_than_the_header_are_named_not_cut(tmp_path: Path) -> None:
    """DictReader puts a row's extra fields under the key None: `1,Hello, world and more text`
    became the document 'Hello', and a TSV line with a tab in its text 'It was a', unsaid."""
    rows = 'id,text\n1,Hello, world and more text\n2,Second row fine\n3,"Quoted, kept"\n'
    (tmp_path / "a.csv").write_text(rows)
    (tmp_path / "b.tsv").write_text("text\tlang\nIt was a\ttab-containing line\ten\nplain\ten\nshort row\n")
    texts, report = _read(tmp_path)
    assert texts == ["Second row fine", "Quoted, kept", "plain"]
    header = "3 fields, the header has 2"
    assert report.problems == [
        f"{tmp_path / 'a.csv'}:2: too many fields ({header}: a ',' in a field that is not in quotes?)",
        f"{tmp_path / 'b.tsv'}:2: too many fields ({header}: a tab inside a field?)",
        f"{tmp_path / 'b.tsv'}:4: too few fields (1 field, the header has 2: a line break inside a field?)",
    ]
    assert report.problem_counts == {"too many fields": 2, "too few fields": 1}


def test_tsv_rows_with_fewer_fields_than_the_header_are_named_with_a_hint_of_csv_quoting(
    tmp_path: Path,
) -> None:
    """A .tsv is read without quoting (IANA's TSV): a row with too many fields was named, one with
    too few passed unsaid, `"first cell` of a csv-quoted cell running over two lines among them."""
    rows = 'text\tlabel\n"first cell\nspans two lines"\t1\n"He said ""hi""\tand tabbed"\t2\nplain\t3\n'
    (tmp_path / "p.tsv").write_text(rows)
    texts, report = _read(tmp_path / "p.tsv")
    assert texts == ['spans two lines"', "plain"]
    quoted = (
        "the file looks csv-quoted (a cell opens a quote it does not close); a .tsv is read without quoting"
    )
    assert report.problems == [
        f"{tmp_path / 'p.tsv'}:2: too few fields (1 field, the header has 2: {quoted})",
        f"{tmp_path / 'p.tsv'}:4: too many fields (3 fields, the header has 2: {quoted})",
    ]


def test_warc_charset_labels_mean_what_the_whatwg_standard_says(tmp_path: Path) -> None:
    """The tester's pages, each encoded as browsers read its label: Python's codecs of the same
    names gave U+FFFD for GBK's characters in a gb2312 page, windows-1252 mojibake for x-sjis,
    C1 controls for iso-8859-9's € – “ ”; a gb2312 page may hold GB 18030's four-byte forms too
    (WHATWG's GBK decoder is its gb18030 decoder). A label that WHATWG maps to its `replacement`
    encoding (browsers show nothing) is skipped and counted; a <meta> naming UTF-16 is UTF-8."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    pages = [  # (charset label, text, the codec that wrote it: WHATWG's encoder for the label)
        ("gb2312", "<p>朱镕基总理说：这是一个测试页面。😀</p>", "gb18030"),
        ("shift_jis", "<p>①髙橋さんのページです。</p>", "cp932"),
        ("euc-kr", "<p>똠방각하 페이지입니다.</p>", "cp949"),
        ("x-sjis", "<p>日本語のページです。</p>", "shift_jis"),
        ("iso-8859-9", "<p>Fiyat: 5€ – “alıntı”</p>", "cp1254"),
        ("ISO-8859-1", "<p>Price: 5€ – “quote”</p>", "cp1252"),
    ]
    meta_utf16 = '<meta charset="utf-16"><p>Café – ok</p>'
    with open(tmp_path / "cs.warc.gz", "wb") as f:
        writer = WARCWriter(f, gzip=True)

        def response(body: bytes, kind: str) -> None:
            http = StatusAndHeaders("200 OK", [("Content-Type", kind)], protocol="HTTP/1.1")
            writer.write_record(
                writer.create_warc_record("http://x/", "response", payload=BytesIO(body), http_headers=http)
            )

        for label, text, codec in pages:
            response(text.encode(codec), f"text/html; charset={label}")
        response(meta_utf16.encode(), "text/html")
        response(b"<p>\x1b$)C\x0e8H\x0f</p>", "text/html; charset=iso-2022-kr")
    texts, report = _read(tmp_path)
    assert texts == [text for _, text, _ in pages] + [meta_utf16]
    assert not report.problem_counts and not report.stage("read").edits
    assert report.stage("read").dropped == {warc.NO_DECODER: 1}


def test_a_jsonl_of_blank_lines_is_named(tmp_path: Path) -> None:
    """A blank .txt was named ("blank file (only whitespace)"), a .jsonl of blank lines skipped
    unsaid; a .jsonl whose only line is too long is named for that line alone."""
    (tmp_path / "blank.jsonl").write_text("\n   \n\t\n")
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "long.jsonl").write_text('{"text": "' + "x" * 300 + '"}\n')
    texts, report = _read(tmp_path, max_line_bytes=100)
    assert texts == []
    assert report.problems == [
        f"{tmp_path / 'blank.jsonl'}: blank file (only whitespace)",
        f"{tmp_path / 'empty.jsonl'}: empty file",
        f"{tmp_path / 'long.jsonl'}:1: line too long (313 bytes > 100)",
    ]
