"""Build ``data/austen.jsonl.xz``: Jane Austen's six novels, one document per chapter.

Source: the Debian package ``r-cran-janeaustenr`` 1.0.0-1 (the CRAN package janeaustenr by Julia
Silge, MIT; the novels are public domain), fetched with ``apt-get download`` and checked against a
pinned sha256. The novels are character vectors (one element per line) in R's lazy-load
database ``data/Rdata.rdb`` (index ``Rdata.rdx``); each record is a 4-byte length + zlib stream
of R serialization, read with the ``rdata`` package (no R needed; never unpickled: rdata parses
the format). Lines are joined with ``\\n``, trailing spaces removed, and each novel is cut into
chapters at lines ``CHAPTER n``/``Chapter n`` (the title lines go with the first chapter). Written as
``{"id", "title", "text"}`` per chapter into an xz file (preset 9), byte-for-byte reproducible.

Rebuild (needs the Debian archive and ``pip install rdata``):
``.venv/bin/python data/build_austen.py``
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import re
import subprocess
import tempfile
import warnings
import zlib
from pathlib import Path

DEB = "r-cran-janeaustenr_1.0.0-1_all.deb"
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
OUTPUT = Path(__file__).resolve().parent / "austen.jsonl.xz"


def _r_object(raw: bytes) -> object:
    import rdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Unknown file type: assumed RDS" for bare streams
        return rdata.conversion.convert(rdata.parser.parse_data(raw))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", "r-cran-janeaustenr=1.0.0-1"], cwd=tmp, check=True)
        deb = Path(tmp) / DEB
        digest = hashlib.sha256(deb.read_bytes()).hexdigest()
        if digest != SHA256:
            raise SystemExit(f"{DEB}: sha256 {digest} != pinned {SHA256}")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(Path(tmp) / "x")], check=True)
        base = Path(tmp) / "x" / DATA
        index = _r_object(gzip.decompress(base.with_suffix(".rdx").read_bytes()))
        db = base.with_suffix(".rdb").read_bytes()
        novels = {}
        for name, (offset, length) in index["variables"].items():  # type: ignore[index]
            record = db[int(offset) : int(offset) + int(length)]
            lines = _r_object(zlib.decompress(record[4:]))
            novels[str(name)] = [str(line) for line in lines]  # type: ignore[union-attr]
    docs = []
    for name, title in TITLES.items():
        chapters: list[list[str]] = [[]]
        has_heading = False  # the current chunk already holds a chapter heading
        for line in novels[name]:
            if CHAPTER.match(line.strip()):
                if has_heading:
                    chapters.append([])
                has_heading = True
            chapters[-1].append(line.rstrip())
        for number, lines in enumerate(chapters, start=1):
            text = re.sub(r"\n{4,}", "\n\n\n", "\n".join(lines)).strip("\n") + "\n"
            docs.append({"id": f"{name}_{number:02d}", "title": title, "text": text})
    payload = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode("utf-8")
    packed = lzma.compress(payload, format=lzma.FORMAT_XZ, preset=9)
    OUTPUT.write_bytes(packed)
    chars = sum(len(d["text"]) for d in docs)
    print(f"{OUTPUT.name}: {len(docs)} chapters of {len(TITLES)} novels, {chars} characters")
    print(f"jsonl {len(payload)} bytes, xz {len(packed)} bytes, sha256 {hashlib.sha256(packed).hexdigest()}")


if __name__ == "__main__":
    main()
