"""The corpus formats practitioners bring to `lmforge prep` beyond text, jsonl, csv and parquet:
.json arrays (checked against the standard library's json.load), .tsv (against csv.writer),
Common Crawl's WARC files (written with warcio's own writer), and main-content extraction of
web pages with trafilatura (prep.html_extractor)."""

from __future__ import annotations

import csv
import gzip
import json
import re
from io import BytesIO
from pathlib import Path

import pytest
from test_prep import _docs

from lmforge import LmforgeError
from lmforge.data.clean import Markup
from lmforge.data.input_files import input_notes, list_files
from lmforge.data.pairs import read_pairs
from lmforge.data.prep import prep
from lmforge.data.report import Report, StageStats
from lmforge.data.sources import read_documents

ALPACA = [
    {"instruction": "Name a colour.", "input": "", "output": "Blue, as the sky on a clear day."},
    {"instruction": "Translate.", "input": "chat", "output": "cat \u2014 the animal, \u00e9t\u00e9 aside"},
    {"instruction": "Add.", "input": "2+2", "output": "4"},
]


def _texts(inputs: object, field: str = "text") -> tuple[list[str], Report]:
    report = Report()
    return [d.text for d in read_documents(inputs, field, report)], report  # type: ignore[arg-type]


def test_a_json_array_of_records_or_strings_is_one_document_an_element(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "alpaca.json").write_text(json.dumps(ALPACA, indent=4, ensure_ascii=False))
    (corpus / "strings.json.gz").write_bytes(gzip.compress(json.dumps(["one", "two\nlines"]).encode()))
    passed_over: list[Path] = []
    files = list_files(corpus, passed_over)
    assert not passed_over and not input_notes(files, passed_over)  # read, not passed over
    texts, report = _texts(corpus / "alpaca.json", "output")
    assert texts == [r["output"] for r in json.loads((corpus / "alpaca.json").read_text())]
    assert not report.problem_counts
    texts, report = _texts(corpus / "strings.json.gz")
    assert texts == json.loads(gzip.decompress((corpus / "strings.json.gz").read_bytes()))
    assert not report.problem_counts


def test_json_lines_named_json_are_read_as_json_lines(tmp_path: Path) -> None:
    """`datasets`' to_json() writes one record a line by default, into a file named .json."""
    (tmp_path / "d.json").write_text("".join(json.dumps(r) + "\n" for r in ALPACA))
    texts, report = _texts(tmp_path / "d.json", "output")
    assert texts == [r["output"] for r in ALPACA] and not report.problem_counts


def test_bad_json_elements_are_named_by_index_and_the_rest_kept(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_bytes(
        b'[{"text": "kept one"}, 7, {"body": "x"}, {"text": " "}, {"text": "caf\xe9"}, "kept two"]'
    )
    (tmp_path / "b.json").write_text('[{"text": "before"}, {"text": "cut')  # truncated
    (tmp_path / "c.json").write_text('[{"text": "a"} {"text": "b"}]')  # a comma missing
    (tmp_path / "d.json").write_text('{\n  "data": [{"text": "a"}]\n}\n')
    texts, report = _texts(sorted(tmp_path.iterdir()))
    assert texts == ["kept one", "caf\ufffd", "kept two", "before", "a"]
    assert report.problems == [
        f"{tmp_path}/a.json:[1]: no string field ('text'; the element is a JSON int, not an object or a"
        " string)",
        f"{tmp_path}/a.json:[2]: no string field ('text'; the element has 'body')",
        f"{tmp_path}/a.json:[3]: empty text ('text')",
        f"{tmp_path}/a.json: invalid UTF-8 (1 byte sequence(s) repaired with U+FFFD)",
        f"{tmp_path}/b.json:[1]: truncated or corrupt (the file ends inside the element)",
        f"{tmp_path}/c.json:[1]: not valid JSON ('{{' after an element, not ',' or ']', line 1)",
        f"{tmp_path}/d.json: not a JSON array (a JSON object whose first line is not one whole record: give"
        " --json-field data (prep.json_field) to read its array under 'data', an array of records"
        " ([{...}, {...}]) or one record a line)",
    ]


def test_a_lone_surrogate_escape_is_repaired_and_named(tmp_path: Path) -> None:
    """JSON may escape half of an emoji (`\\ud83d` alone: a tweet cut inside one), which no UTF-8
    encodes: prep stopped with a UnicodeEncodeError traceback. A pair stays the emoji it is. (In a
    .json array ijson's C parser read the half as '?', unreported, until 2026-12-06.)"""
    line = '{"text": "lone \\ud800 half, a pair \\ud83d\\ude00 whole"}'
    (tmp_path / "a.jsonl").write_text(line + '\n{"text": "fine"}\n')
    (tmp_path / "b.json").write_text(f"[{line}]")
    texts, report = _texts(sorted(tmp_path.iterdir()))
    assert texts == [
        "lone \ufffd half, a pair \U0001f600 whole",
        "fine",
        "lone \ufffd half, a pair \U0001f600 whole",
    ]
    detail = "1 escape(s) \\ud800-\\udfff without a pair: U+FFFD"
    assert report.problems == [
        f"{tmp_path}/a.jsonl:1: lone surrogate ({detail})",
        f"{tmp_path}/b.json:[0]: lone surrogate ({detail})",
    ]
    assert report.skipped() == [f"repaired {p}" for p in report.problems]  # kept: eval scores them
    prep(tmp_path / "a.jsonl", tmp_path / "out", stages="none", workers=1, quiet=True)  # no traceback


# what ijson's C parser could not read as json.loads does: it stopped at the first two numbers (and
# NaN), losing every later element, and made '?', U+10000 or an unreadable file of the surrogates
ODD_ELEMENTS = (
    '[{"text": "u64", "id": 18446744073709551615}, {"text": "big", "n": 1e400}, {"text": "nan", "n": NaN},'
    ' {"text": "hi \\ud800 x"}, {"text": "\\ud800\\ud800"}, {"text": "lone low \\udc00 x"},'
    ' {"text": "pair \\ud83d\\ude00 caf\\u00e9 \u00e9t\u00e9", "x": [true, null, -1.5e-3, {"k": "]"}]},'
    ' 12345678901234567890123, "last \\"quoted\\""]'
)


NOT_A_RECORD = "the element is a JSON int, not an object or a string"


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 16])  # every element cut at every place
def test_a_json_array_element_is_what_json_loads_reads(tmp_path: Path, chunk: int, monkeypatch) -> None:
    monkeypatch.setattr("lmforge.data.json_array.CHUNK", chunk)
    (tmp_path / "a.json").write_text(ODD_ELEMENTS)
    texts, report = _texts(tmp_path / "a.json")
    elements = json.loads(ODD_ELEMENTS)
    expected = [e["text"] if isinstance(e, dict) else e for e in elements]
    assert texts == [re.sub("[\ud800-\udfff]", "\ufffd", t) for t in expected if isinstance(t, str)]
    assert report.problems == [
        f"{tmp_path}/a.json:[{i}]: lone surrogate ({n} escape(s) \\ud800-\\udfff without a pair: U+FFFD)"
        for i, n in [(3, 1), (4, 2), (5, 1)]
    ] + [f"{tmp_path}/a.json:[7]: no string field ('text'; {NOT_A_RECORD})"]


def _corrupt_gzip(text: str) -> bytes:
    """A gzip of `text`'s first half, then a member whose deflate data is damaged (a reserved block
    type): zlib's "invalid block type" after the first half, not a file cut short."""
    half = text.rfind("\n", 0, len(text) // 2) + 1 or len(text) // 2  # at a line's end
    return gzip.compress(text[:half].encode()) + gzip.compress(text[half:].encode())[:10] + b"\xff" * 64


@pytest.mark.parametrize("name", ["a.txt.gz", "b.jsonl.gz", "c.json.gz", "d.csv.gz"])
def test_a_corrupt_gzip_is_named_and_its_documents_before_the_damage_kept(tmp_path: Path, name: str) -> None:
    """zlib's error was a traceback from every reader (prep, train's data, a translation's pairs)."""
    rows = [f"row {i} of the text, some words" for i in range(20_000)]
    text = {
        "a.txt.gz": "\n".join(rows),
        "b.jsonl.gz": "".join(json.dumps({"text": r}) + "\n" for r in rows),
        "c.json.gz": json.dumps([{"text": r} for r in rows]),
        "d.csv.gz": "text\n" + "\n".join(f'"{r}"' for r in rows),  # its "," quoted: one field
    }[name]
    (tmp_path / name).write_bytes(_corrupt_gzip(text))
    texts, report = _texts(tmp_path / name)
    said = "truncated or corrupt (Error -3 while decompressing data: invalid block type; the damage"
    assert [p for p in report.problems if p.startswith(str(tmp_path / name)) and said in p]
    assert texts and all(t.strip() in text for t in texts)  # what came before the damage, unaltered
    pairs = tmp_path / "p.jsonl.gz"
    pairs.write_bytes(_corrupt_gzip("".join(json.dumps({"en": r, "fr": r}) + "\n" for r in rows)))
    with pytest.raises(LmforgeError, match=rf"^{re.escape(str(pairs))}: cannot read: .*invalid block type"):
        list(read_pairs(pairs, "en", "fr"))


def test_a_compressed_parquet_is_read(tmp_path: Path) -> None:
    """Parquet's footer is at the file's end, which a compressed stream cannot seek to: a
    `.parquet.gz`, which the docs name, was skipped as unreadable."""
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"text": ["first row", "second row"]}), tmp_path / "t.parquet")
    (tmp_path / "z.parquet.gz").write_bytes(gzip.compress((tmp_path / "t.parquet").read_bytes()))
    texts, report = _texts(tmp_path)
    assert texts == ["first row", "second row"] * 2 and not report.problem_counts


def test_a_tsv_is_one_row_a_line_without_quoting(tmp_path: Path) -> None:
    """IANA's TSV, as corpora write it (Tatoeba, OPUS): a `"` is text. CSV's quoting merged a row
    starting `"Wait,` with the rows after it (the next id inside its text), unreported."""
    rows = [["1", '"Wait, he said'], ["2", "she left"], ["3", '"Hello," she said.'], ["4", "plain 'words'"]]
    (tmp_path / "t.tsv").write_text("id\ttext\n" + "".join(f"{i}\t{t}\n" for i, t in rows))
    (tmp_path / "u.tsv.gz").write_bytes(gzip.compress(b"text\tid\nzipped row\t1\n"))
    texts, report = _texts(tmp_path)
    assert texts == [t for _, t in rows] + ["zipped row"] and not report.problem_counts
    with open(tmp_path / "t.tsv", newline="") as f:  # the oracle: Python's csv, told TSV has no quoting
        assert [r["text"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)] == texts[:4]


CYRILLIC = (
    '<html><head><meta charset="windows-1251"></head><body><p>\u041f\u0440\u0438\u0432\u0435\u0442</p>'
    "</body></html>"
)


def _warc(path: Path) -> None:
    """A small crawl as Common Crawl writes one: warcinfo, then request, response and metadata
    records per page; pages in three charsets, an image, a redirect, and a WET conversion."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    def response(url: str, body: bytes, kind: str, status: str = "200 OK") -> None:
        get = StatusAndHeaders("GET / HTTP/1.1", [("Host", url)], is_http_request=True)
        writer.write_record(writer.create_warc_record(url, "request", http_headers=get))
        headers = StatusAndHeaders(status, [("Content-Type", kind)], protocol="HTTP/1.1")
        writer.write_record(
            writer.create_warc_record(url, "response", payload=BytesIO(body), http_headers=headers)
        )
        meta = BytesIO(b"fetchTimeMs: 12\r\n")
        writer.write_record(writer.create_warc_record(url, "metadata", payload=meta))

    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=path.suffix == ".gz")
        writer.write_record(writer.create_warcinfo_record(path.name, {"software": "lmforge tests"}))
        response(
            "http://a.example/", "<html><body><p>Caf\u00e9 in UTF-8</p></body></html>".encode(), "text/html"
        )
        latin = "<html><body><p>Caf\u00e9 in Latin-1</p></body></html>".encode("latin-1")
        response("http://b.example/", latin, "text/html; charset=ISO-8859-1")
        response("http://c.example/", CYRILLIC.encode("cp1251"), "text/html")
        response("http://d.example/logo.png", b"\x89PNG\r\n\x1a\n\x00\x00", "image/png")
        response("http://e.example/", b"<html>Moved</html>", "text/html", "301 Moved Permanently")
        response("http://f.example/robots.txt", b"plain text page", "text/plain; charset=utf-8")
        wet = BytesIO(b"extracted text of a page")
        record = writer.create_warc_record(
            "http://g/", "conversion", payload=wet, warc_content_type="text/plain"
        )
        writer.write_record(record)


def test_a_warc_file_gives_its_html_and_text_responses_decoded_by_their_charset(tmp_path: Path) -> None:
    _warc(tmp_path / "crawl.warc.gz")
    texts, report = _texts(tmp_path)
    assert texts == [
        "<html><body><p>Caf\u00e9 in UTF-8</p></body></html>",
        "<html><body><p>Caf\u00e9 in Latin-1</p></body></html>",
        CYRILLIC,
        "plain text page",
        "extracted text of a page",
    ]
    assert not report.problem_counts  # skipped records are no bad input: counted, not named
    assert report.stage("read").dropped == {
        "WARC warcinfo record": 1,
        "WARC request record": 6,
        "WARC metadata record": 6,
        "WARC response not HTML or text": 1,
        "WARC response not 2xx (redirect, error)": 1,
    }


def test_prep_reads_a_warc_through_the_markup_stage_and_reports_what_it_skipped(tmp_path: Path) -> None:
    _warc(tmp_path / "crawl.warc")  # uncompressed too
    out = tmp_path / "out"
    prep(tmp_path / "crawl.warc", out, "char", val_fraction=0.2, quiet=True, stages="markup,whitespace")
    assert sorted(d.strip() for d in _docs(out)) == sorted(
        ["Caf\u00e9 in UTF-8", "Caf\u00e9 in Latin-1", "\u041f\u0440\u0438\u0432\u0435\u0442"]
        + ["plain text page", "extracted text of a page"]
    )
    read = json.loads((out / "report.json").read_text())["stages"]["read"]
    assert read["docs_out"] == 5 and read["dropped"]["WARC request record"] == 6


def test_a_damaged_warc_is_named_with_its_record(tmp_path: Path) -> None:
    _warc(tmp_path / "crawl.warc.gz")
    data = (tmp_path / "crawl.warc.gz").read_bytes()
    (tmp_path / "crawl.warc.gz").write_bytes(data[: len(data) * 2 // 3])
    (tmp_path / "page.warc").write_text("<html>a page saved under the wrong suffix</html>\n")
    texts, report = _texts(tmp_path)
    assert texts[:2] == ["<html><body><p>Caf\u00e9 in UTF-8</p></body></html>"] + [
        "<html><body><p>Caf\u00e9 in Latin-1</p></body></html>"
    ]
    first, second = report.problems
    assert first.startswith(f"{tmp_path}/crawl.warc.gz: record ") and ": truncated or corrupt (" in first
    start = "'<html>a page saved under the wrong suffix</html>'"
    assert second == f"{tmp_path}/page.warc: not a WARC file (it starts with {start})"


def test_warc_bodies_are_uncompressed_or_skipped_and_a_bom_outranks_the_charset(tmp_path: Path) -> None:
    """warcio passes a body it cannot uncompress on as it is: `br`, `zstd` and a damaged gzip made
    pages of binary garbage, unreported; a BOM lost to a declared charset (`ï»¿`, `ÿþ<\\x00`)."""
    import zstandard
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    page = "<html><body><p>Caf\u00e9 \u2014 page {}</p></body></html>".format
    pages = [  # (body, headers), and the text each gives, or None where it is skipped
        (gzip.compress(page(1).encode()), [("Content-Encoding", "gzip")], page(1)),
        (zstandard.ZstdCompressor().compress(page(2).encode()), [("Content-Encoding", "zstd")], page(2)),
        # Unix compress's LZW, which no browser asks for (brotli's br: test_web_pages.py)
        (b"\x1f\x9d\x90" + bytes(range(200, 240)), [("Content-Encoding", "compress")], None),
        (gzip.compress(page(3).encode() * 99)[:60] + b"garbage" * 50, [("Content-Encoding", "gzip")], None),
        (bytes(range(128, 200)), [("Content-Encoding", "zstd")], None),
        (b"\xef\xbb\xbf" + page(4).encode(), [("Content-Type", "text/html; charset=windows-1252")], page(4)),
        (page(5).encode("utf-16"), [], page(5)),  # a BOM, and no charset
    ]
    with open(tmp_path / "c.warc.gz", "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for body, headers, _ in pages:
            kind = [("Content-Type", "text/html")] if not any(k == "Content-Type" for k, _ in headers) else []
            http = StatusAndHeaders("200 OK", kind + headers, protocol="HTTP/1.1")
            record = writer.create_warc_record(
                "http://x/", "response", payload=BytesIO(body), http_headers=http
            )
            writer.write_record(record)
    texts, report = _texts(tmp_path)
    assert texts == [text for _, _, text in pages if text is not None] and not report.problem_counts
    assert report.stage("read").dropped == {
        "WARC body in a Content-Encoding not decoded": 1,
        "WARC body's compression damaged": 2,
    }


BOILERPLATE = [
    "Home",
    "Subscribe to our newsletter",
    "We use cookies to improve your experience. Accept all cookies",
    "Copyright 2024 Valley Gazette Ltd. All rights reserved.",
    "Privacy policy",
    "Council votes on bus lanes",
]
ARTICLE = [
    "The river otter returned to the valley in the spring of 2019, after an absence of nearly forty"
    " years. Biologists counted eleven animals along the lower reaches, most of them young males.",
    "Their return follows two decades of work on the water itself. Farmers planted willow along the"
    " banks, the paper mill closed its outfall, and the fish the otters feed on came back first.",
    "Not everyone is pleased. Anglers say the otters take the best fish from the stocked ponds; the"
    " trust answers that a healthy otter population is the surest sign of a recovered river.",
]


def news_page(title: str, article: list[str] = ARTICLE) -> str:
    """A news page: navigation, a cookie banner, a sidebar and a footer around one article."""
    home, subscribe, cookies, copyright, privacy, most_read = BOILERPLATE
    body = "".join(f"<p>{p}</p>" for p in article)
    return (
        f"<!DOCTYPE html>\n<html><head><title>{title}</title><script>var t = 1;</script></head><body>"
        f'<header><nav><ul><li><a href="/">{home}</a></li><li><a href="/news">News</a></li></ul></nav>'
        "</header>"
        f'<div class="cookie-banner"><p>{cookies}</p><button>Accept</button></div>'
        f"<main><article><h1>{title}</h1>{body}</article></main>"
        f'<aside><h3>Most read</h3><ul><li><a href="/a">{most_read}</a></li></ul></aside>'
        f"<footer><p>{subscribe}</p><p>{copyright}</p><a href='/privacy'>{privacy}</a></footer>"
        "</body></html>\n"
    )


def test_only_a_text_that_starts_as_a_page_goes_to_trafilatura() -> None:
    """A Markdown tutorial whose code block holds a page lost every tag of it to trafilatura when
    the opening tags were looked for anywhere in the first 4 KiB."""
    pytest.importorskip("trafilatura")
    page_code = "```html\n<!DOCTYPE html>\n<html><body><p>Hello</p></body></html>\n```\n"
    tutorial = "# A first page\n\nWrite this:\n\n" + page_code
    assert Markup("trafilatura").apply(tutorial, StageStats()) == tutorial
    page = news_page("Otters come back")
    for prolog in ("", "\n  ", '<?xml version="1.0"?>\n', "<!-- saved from a browser -->\n"):
        main = Markup("trafilatura").apply(prolog + page, StageStats())
        assert main is not None and ARTICLE[0] in main and not any(b in main for b in BOILERPLATE)


def test_trafilatura_keeps_a_pages_article_and_drops_its_boilerplate() -> None:
    pytest.importorskip("trafilatura")
    page = news_page("Otters come back")
    stripped = Markup("tags").apply(page, StageStats())
    assert stripped is not None and all(b in stripped for b in BOILERPLATE)  # the tag stripper keeps them
    stats = StageStats()
    main = Markup("trafilatura").apply(page, stats)
    assert main is not None and all(p in main for p in ARTICLE)
    assert not any(b in main for b in BOILERPLATE)
    assert stats.edits == {"pages cut to main content": 1}
    text = "Use <b>bold</b> for <i>emphasis</i>, and keep your lines short."  # no page: tags stripped
    assert (
        Markup("trafilatura").apply(text, StageStats()) == "Use bold for emphasis, and keep your lines short."
    )


def test_prep_html_extractor_on_html_files_and_warc_pages(tmp_path: Path) -> None:
    pytest.importorskip("trafilatura")
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    (tmp_path / "in").mkdir()
    for n, title in enumerate(["Otters come back", "Otters in May", "Otter count", "Otters at dusk"]):
        (tmp_path / "in" / f"{n}.html").write_text(news_page(title))  # both splits get a page
    with open(tmp_path / "in" / "b.warc.gz", "wb") as f:
        writer = WARCWriter(f, gzip=True)
        headers = StatusAndHeaders(
            "200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1"
        )
        page = news_page("Herons too", [p.replace("otter", "heron") for p in ARTICLE]).encode()
        record = writer.create_warc_record(
            "http://x/", "response", payload=BytesIO(page), http_headers=headers
        )
        writer.write_record(record)
    out = tmp_path / "out"
    prep(
        tmp_path / "in",
        out,
        "char",
        val_fraction=0.3,
        quiet=True,
        stages="markup",
        html_extractor="trafilatura",
    )
    joined = "\n".join(_docs(out))
    assert ARTICLE[0] in joined and ARTICLE[0].replace("otter", "heron") in joined
    assert not any(b in joined for b in BOILERPLATE)
    edits = json.loads((out / "report.json").read_text())["stages"]["markup"]["edits"]
    assert edits == {"pages cut to main content": 5}


def test_html_extractor_choices_and_its_stage(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("some text\n")
    with pytest.raises(LmforgeError, match=r"^prep\.html_extractor='readability': 'tags' or 'trafilatura'$"):
        prep(tmp_path / "a.txt", tmp_path / "o", "char", html_extractor="readability")
    with pytest.raises(LmforgeError, match=r"prep\.html_extractor='trafilatura' is for the markup stage"):
        prep(tmp_path / "a.txt", tmp_path / "o", "char", stages="whitespace", html_extractor="trafilatura")
