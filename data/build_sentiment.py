"""Build ``data/rt_sentiment.jsonl.xz``: Rotten Tomatoes review snippets labelled by sentiment.

Source: the PyPI sdist ``vadersentiment==3.3.2`` (C.J. Hutto, MIT licence), member
``additional_resources/hutto_ICWSM_2014.tar.gz``, file ``movieReviewSnippets_GroundTruth.txt``:
10,605 snippets (Pang & Lee's Rotten Tomatoes sentences) with the mean of 20 human ratings on
-4..+4 (Hutto & Gilbert, ICWSM 2014). The sdist is fetched with pip and checked against a pinned
sha256. A snippet is `positive` when its score is >= +0.5, `negative` when <= -0.5; the near-neutral
ones in between are dropped. Output: one JSON object per kept snippet, in source order,
``{"id", "text", "label", "score"}``, xz preset 9; byte-for-byte reproducible.

Rebuild (needs PyPI access): ``.venv/bin/python data/build_sentiment.py``
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import tarfile
import tempfile
from pathlib import Path

from fetch import pip_download

REQUIREMENT = "vadersentiment==3.3.2"
SDIST_NAME = "vaderSentiment-3.3.2.tar.gz"
SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
MEMBER = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
NEUTRAL = 0.5  # |score| below this is near-neutral and dropped
OUTPUT = Path(__file__).resolve().parent / "rt_sentiment.jsonl.xz"


def fetch_sdist(dest: Path) -> Path:
    return pip_download(REQUIREMENT, SDIST_NAME, SDIST_SHA256, dest)


def records(raw: bytes) -> list[dict[str, object]]:
    """Parse `id<TAB>score<TAB>text` lines; keep the clearly positive and negative snippets."""
    out = []
    for n, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise SystemExit(f"{MEMBER}:{n}: expected 3 tab-separated fields, got {len(fields)}")
        ident, score, text = fields[0], float(fields[1]), fields[2].strip()
        if abs(score) < NEUTRAL:
            continue
        out.append(
            {"id": int(ident), "text": text, "label": "positive" if score > 0 else "negative", "score": score}
        )
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sdist = fetch_sdist(Path(tmp))
        with tarfile.open(sdist) as outer:
            inner = outer.extractfile(INNER).read()  # type: ignore[union-attr]
        with tarfile.open(fileobj=io.BytesIO(inner)) as archive:
            raw = archive.extractfile(MEMBER).read()  # type: ignore[union-attr]
    rows = records(raw)
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    OUTPUT.write_bytes(lzma.compress(body, preset=9))
    counts = {label: sum(r["label"] == label for r in rows) for label in ("negative", "positive")}
    digest = hashlib.sha256(OUTPUT.read_bytes()).hexdigest()
    print(f"{OUTPUT.name}: {len(rows)} snippets {counts}, {OUTPUT.stat().st_size:,} bytes, sha256 {digest}")


if __name__ == "__main__":
    main()
