"""Web pages that cost or hide their text: a page that holds trafilatura too long (dropped after
prep.trafilatura_timeout, counted; a slow stand-in extractor keeps the test fast), and WARC
bodies compressed with brotli (`br`, written with the brotli package itself)."""

from __future__ import annotations

import gzip
import json
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from test_input_formats import ARTICLE, news_page

from lmforge import LmforgeError
from lmforge.data import warc
from lmforge.data.clean import Markup
from lmforge.data.prep import prep
from lmforge.data.report import Report, StageStats
from lmforge.data.sources import read_documents

SLOW = "A page that holds the extractor"


def _slow_on_marked_pages(real: Any) -> Any:
    """trafilatura.extract, but spinning in Python on a page holding SLOW (as a pathological page
    holds the real one: in its Python code, which a timer can interrupt)."""

    def extract(text: str, **kwargs: Any) -> str | None:
        while SLOW in text:
            pass
        return real(text, **kwargs)

    return extract


def test_a_page_past_the_timeout_is_dropped_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    trafilatura = pytest.importorskip("trafilatura")
    monkeypatch.setattr(trafilatura, "extract", _slow_on_marked_pages(trafilatura.extract))
    markup, stats = Markup("trafilatura", timeout=0.2), StageStats()
    start = time.monotonic()
    assert markup.apply(news_page(SLOW), stats) is None
    assert time.monotonic() - start < 5
    main = markup.apply(news_page("Otters come back"), stats)  # the timer is off again
    time.sleep(0.3)  # no alarm left to go off later
    assert main is not None and ARTICLE[0] in main
    assert stats.dropped == {"main content timed out": 1} and stats.edits == {"pages cut to main content": 1}


def test_prep_reports_the_pages_that_timed_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In prep's cleaning workers (forked: they inherit the stand-in)."""
    trafilatura = pytest.importorskip("trafilatura")
    monkeypatch.setattr(trafilatura, "extract", _slow_on_marked_pages(trafilatura.extract))
    (tmp_path / "in").mkdir()
    for n, title in enumerate(["Otters come back", SLOW, "Otters in May", "Otter count"]):
        (tmp_path / "in" / f"{n}.html").write_text(news_page(title))
    out = tmp_path / "out"
    options = {"stages": "markup", "html_extractor": "trafilatura", "trafilatura_timeout": 0.3}
    prep(tmp_path / "in", out, "char", val_fraction=0.3, quiet=True, workers=2, **options)
    markup = json.loads((out / "report.json").read_text())["stages"]["markup"]
    assert markup["dropped"] == {"main content timed out": 1}
    assert markup["edits"] == {"pages cut to main content": 3}


def test_the_timeout_is_for_trafilatura(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("some text\n")
    with pytest.raises(
        LmforgeError, match=r"^prep\.trafilatura_timeout=5\.0 is for prep\.html_extractor='trafilatura'"
    ):
        prep(tmp_path / "a.txt", tmp_path / "o", "char", trafilatura_timeout=5.0)
    with pytest.raises(LmforgeError, match=r"^prep\.trafilatura_timeout=-1\.0 must be >= 0$"):
        prep(
            tmp_path / "a.txt", tmp_path / "o", "char", html_extractor="trafilatura", trafilatura_timeout=-1.0
        )


def _crawl(path: Path, bodies: list[tuple[bytes, str]]) -> None:
    """A WARC file of one HTML response per (body, Content-Encoding)."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for body, coding in bodies:
            headers = [("Content-Type", "text/html; charset=utf-8"), ("Content-Encoding", coding)]
            http = StatusAndHeaders("200 OK", headers, protocol="HTTP/1.1")
            record = writer.create_warc_record(
                "http://x/", "response", payload=BytesIO(body), http_headers=http
            )
            writer.write_record(record)


PAGE = "<html><body><p>Caf\u00e9 \u2014 page {}</p></body></html>".format


def test_brotli_bodies_are_decoded_where_brotli_is_installed(tmp_path: Path) -> None:
    brotli = pytest.importorskip("brotli")
    damaged = brotli.compress(PAGE(3).encode() * 50)
    bodies = [
        (brotli.compress(PAGE(1).encode()), "br"),
        (brotli.compress(gzip.compress(PAGE(2).encode())), "gzip, br"),  # applied in the order listed
        (damaged[:20] + bytes(range(256)) + damaged[20:], "br"),
        (damaged[: len(damaged) // 2], "br"),  # cut short: half a page, which was kept unsaid
        (gzip.compress(PAGE(4).encode() * 50)[:60], "gzip"),
    ]
    _crawl(tmp_path / "c.warc.gz", bodies)
    report = Report()
    texts = [d.text for d in read_documents(tmp_path / "c.warc.gz", report=report)]
    assert texts == [PAGE(1), PAGE(2)] and not report.problem_counts
    assert report.stage("read").dropped == {"WARC body's compression damaged": 3}


def test_without_brotli_a_br_body_is_skipped_saying_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(warc, "brotli", None)
    _crawl(
        tmp_path / "c.warc.gz",
        [(b"\x1b\x0b\x00\xf8" + bytes(range(200, 240)), "br"), (PAGE(1).encode(), "identity")],
    )
    report = Report()
    texts = [d.text for d in read_documents(tmp_path / "c.warc.gz", report=report)]
    assert texts == [PAGE(1)]
    assert report.stage("read").dropped == {
        "WARC body in brotli (br) not decoded: pip install 'lmforge[html]' (or brotli)": 1
    }


def test_the_timeout_counts_cpu_time_and_leaves_a_callers_alarm_armed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It was a wall-clock SIGALRM timer: a page was kept alone and dropped on a busy machine, and
    a caller's own alarm (a watchdog, pytest-timeout) was cancelled."""
    import signal

    trafilatura = pytest.importorskip("trafilatura")
    real = trafilatura.extract

    def sleepy(text: str, **kwargs: Any) -> str | None:  # waits (as under load) without using CPU
        time.sleep(0.5)
        return real(text, **kwargs)

    monkeypatch.setattr(trafilatura, "extract", sleepy)
    before = signal.signal(signal.SIGALRM, lambda *_: None)
    try:
        signal.setitimer(signal.ITIMER_REAL, 30)
        markup, stats = Markup("trafilatura", timeout=0.2), StageStats()
        main = markup.apply(news_page("Otters come back"), stats)
        assert main is not None and ARTICLE[0] in main and not stats.dropped
        assert 25 < signal.getitimer(signal.ITIMER_REAL)[0] <= 30
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)
