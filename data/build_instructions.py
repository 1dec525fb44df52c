"""Build ``instructions.jsonl.xz``: a small instruction-tuning set from the project's own data.

Two kinds of single-turn conversations, each line ``{"kind", "split", "source", "messages"}``:

- ``translation``: "Translate to French: <English>" -> the French reference, from
  ``data/en-fr.jsonl.xz`` (Bible verses and LibreOffice help; English 15-160 characters, French at
  most 200, at least three English words);
- ``sentiment``: "Is this review positive or negative? <snippet>" -> "positive" / "negative", from
  ``data/rt_sentiment.jsonl.xz``.

The test split is fixed by hashing: a translation pair is a test item when its *document* hashes
into the first tenth (so a Bible chapter or a help page is wholly train or wholly test), a review
snippet when its id does. Within each kind and split, items are taken in the order of the sha256
of their prompt, which is fixed and unrelated to the source order. Test items are chosen first; an
item whose normalised prompt (lower case, words only) equals that of an item already chosen (test
or train) is skipped, and, for translation only, so is one whose normalised answer does (the
sentiment answers are just "positive" and "negative"). So no test item, or a copy of one, is
trained on. Output: xz preset 9, byte-for-byte reproducible.

Rebuild (offline, from the two shipped files of data/):
``.venv/bin/python data/build_instructions.py [--out DIR]`` (or ``python -m data.build_instructions``).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__:  # python -m data.build_instructions, or imported as data.build_instructions
    from . import fetch
else:  # python data/build_instructions.py, or loaded from its path: fetch.py is the file beside this one
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fetch

OUTPUT = fetch.HERE / "instructions.jsonl.xz"  # the shipped file (tests compare build() with it)
SIZES = {"train": 1500, "test": 200}  # items per kind and split


def norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.casefold()))


def item(kind: str, split: str, source: str, prompt: str, answer: str) -> dict[str, Any]:
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return {"kind": kind, "split": split, "source": source, "messages": messages}


def translation_candidates() -> Iterator[tuple[str, dict[str, Any]]]:
    for n, pair in enumerate(fetch.read("en-fr.jsonl.xz"), 1):
        en, fr = pair["en"], pair["fr"]
        if 15 <= len(en) <= 160 and len(fr) <= 200 and len(en.split()) >= 3:
            split = "test" if fetch.is_test(pair["doc"]) else "train"
            source = f"en-fr.jsonl.xz line {n} ({pair['doc']})"
            yield split, item("translation", split, source, f"Translate to French: {en}", fr)


def sentiment_candidates() -> Iterator[tuple[str, dict[str, Any]]]:
    for row in fetch.read("rt_sentiment.jsonl.xz"):
        split = "test" if fetch.is_test(str(row["id"])) else "train"
        prompt = f"Is this review positive or negative? {row['text']}"
        yield split, item("sentiment", split, f"rt_sentiment.jsonl.xz id {row['id']}", prompt, row["label"])


def select(candidates: Iterator[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """SIZES[split] items per split in sha256 order; train deduplicated against test and itself."""
    by_split: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    for split, record in candidates:
        by_split[split].append(record)
    chosen: dict[str, list[dict[str, Any]]] = {}
    taken: set[str] = set()
    for split in ("test", "train"):  # test first: train is deduplicated against it
        chosen[split] = []
        for record in sorted(by_split[split], key=lambda r: fetch.sha(r["messages"][0]["content"])):
            user, answer = (norm(m["content"]) for m in record["messages"])
            keys = {f"q:{user}"} | ({f"a:{answer}"} if record["kind"] == "translation" else set())
            if keys & taken:
                continue
            taken |= keys
            chosen[split].append(record)
            if len(chosen[split]) == SIZES[split]:
                break
    return chosen["train"] + chosen["test"]


def build() -> tuple[bytes, list[dict[str, Any]]]:
    """(the file's bytes, its records), nothing written."""
    records = select(translation_candidates()) + select(sentiment_candidates())
    return fetch.pack(records), records


def main(out: Path) -> None:
    data, records = build()
    counts: dict[str, int] = {}
    for r in records:
        counts[f"{r['kind']}/{r['split']}"] = counts.get(f"{r['kind']}/{r['split']}", 0) + 1
    print(f"{len(records)} items {counts}")
    fetch.write_xz(out / OUTPUT.name, data)


if __name__ == "__main__":
    fetch.run(main, __doc__)
