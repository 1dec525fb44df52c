"""Build ``austen.jsonl.xz``: Jane Austen's six novels, one document per chapter.

Source: the Debian package ``r-cran-janeaustenr`` 1.0.0-1 (the CRAN package janeaustenr by Julia
Silge, MIT; the novels are public domain), fetched with ``apt-get download`` and checked against a
pinned sha256. The novels are character vectors (one element per line) in R's lazy-load database
``data/Rdata.rdb`` (index ``Rdata.rdx``); each record is a 4-byte length + zlib stream of R
serialization, read with the ``rdata`` package (no R needed; never unpickled: rdata parses the
format; rdata 1.1.0 gave the shipped file). Lines are joined with ``\\n``, trailing spaces removed,
and each novel is cut into chapters at lines ``CHAPTER n``/``Chapter n`` (the title lines go with the
first chapter). Written as ``{"id", "title", "text"}`` per chapter into an xz file (preset 9),
byte-for-byte reproducible.

Rebuild (needs the Debian archive, ``dpkg-deb`` and ``pip install rdata==1.1.0``):
``.venv/bin/python data/build_austen.py [--out DIR]`` (or ``python -m data.build_austen``).
"""

from __future__ import annotations

import gzip
import re
import sys
import tempfile
import warnings
import zlib
from pathlib import Path
from types import ModuleType

if __package__:  # python -m data.build_austen, or imported as data.build_austen
    from . import fetch
else:  # python data/build_austen.py, or loaded from its path: fetch.py is the file beside this one
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fetch

PACKAGE = "r-cran-janeaustenr"
VERSION = "1.0.0-1"
SHA256 = "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95"
DATA = "usr/lib/R/site-library/janeaustenr/data/Rdata"
TITLES = {
    "sensesensibility": "Sense and Sensibility",
    "prideprejudice": "Pride and Prejudice",
    "mansfieldpark": "Mansfield Park",
    "emma": "Emma",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}
CHAPTER = re.compile(r"^(CHAPTER|Chapter) ([IVXLC]+|\d+)\.?$")
OUTPUT_NAME = "austen.jsonl.xz"


def require_rdata() -> ModuleType:
    """The rdata package; without it, a one-line exit (checked before anything is downloaded)."""
    try:
        import rdata
    except ImportError as err:
        why = f"build_austen.py needs the Python package rdata ({err}): pip install rdata==1.1.0"
        raise SystemExit(why) from None
    return rdata


def _r_object(raw: bytes) -> object:
    rdata = require_rdata()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Unknown file type: assumed RDS" for bare streams
        return rdata.conversion.convert(rdata.parser.parse_data(raw))


def novels(deb: Path, tmp: Path) -> dict[str, list[str]]:
    """Every character vector of the package's lazy-load database, by name: the novels' lines."""
    fetch.extract_deb(deb, tmp / "x")
    base = tmp / "x" / DATA
    index = _r_object(gzip.decompress(base.with_suffix(".rdx").read_bytes()))
    db = base.with_suffix(".rdb").read_bytes()
    found = {}
    for name, (offset, length) in index["variables"].items():  # type: ignore[index]
        record = db[int(offset) : int(offset) + int(length)]
        lines = _r_object(zlib.decompress(record[4:]))
        found[str(name)] = [str(line) for line in lines]  # type: ignore[union-attr]
    return found


def chapters(name: str, title: str, lines: list[str]) -> list[dict[str, str]]:
    """One document per chapter; the lines before the first chapter go with it."""
    parts: list[list[str]] = [[]]
    has_heading = False  # the current chunk already holds a chapter heading
    for line in lines:
        if CHAPTER.match(line.strip()):
            if has_heading:
                parts.append([])
            has_heading = True
        parts[-1].append(line.rstrip())
    docs = []
    for number, part in enumerate(parts, start=1):
        text = re.sub(r"\n{4,}", "\n\n\n", "\n".join(part)).strip("\n") + "\n"
        docs.append({"id": f"{name}_{number:02d}", "title": title, "text": text})
    return docs


def main(out: Path) -> None:
    require_rdata()  # before the download, not after it
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        deb = fetch.apt_download({PACKAGE: SHA256}, VERSION, tmp)[PACKAGE]
        lines = novels(deb, tmp)
    docs = [doc for name, title in TITLES.items() for doc in chapters(name, title, lines[name])]
    print(f"{len(docs)} chapters of {len(TITLES)} novels, {sum(len(d['text']) for d in docs)} characters")
    fetch.write_xz(out / OUTPUT_NAME, fetch.pack(docs))


if __name__ == "__main__":
    fetch.run(main, __doc__)
