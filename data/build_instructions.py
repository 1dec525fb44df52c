"""Build ``data/instructions.jsonl.xz``: a small instruction-tuning set from the project's own data.

Two kinds of single-turn conversations, each line ``{"kind", "split", "source", "messages"}``:

- ``translation``: "Translate to French: <English>" -> the French reference, from
  ``data/en-fr.jsonl.xz`` (Bible verses and LibreOffice help; English 15-160 characters, French at
  most 200, at least three English words);
- ``sentiment``: "Is this review positive or negative? <snippet>" -> "positive" / "negative", from
  ``data/rt_sentiment.jsonl.xz``.

The test split is fixed by hashing: a translation pair is a test item when its *document* hashes
into the first tenth (so a Bible chapter or a help page is wholly train or wholly test), a review
snippet when its id does. Within each kind and split, items are taken in the order of the sha256
of their text, which is fixed and unrelated to the source order. Train items whose normalised
prompt or answer (lower case, words only) equals a test item's are dropped, as are repeats
within the train split, so nothing of the test split is trained on. Output: xz preset 9,
byte-for-byte reproducible.

Rebuild (offline, from the two shipped files): ``.venv/bin/python data/build_instructions.py``
"""

from __future__ import annotations

import hashlib
import json
import lzma
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "instructions.jsonl.xz"
SIZES = {"train": 1500, "test": 200}  # items per kind and split
TEST_TENTH = 0.1


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_test(key: str) -> bool:
    return int(sha(key)[:8], 16) / 2**32 < TEST_TENTH


def norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.casefold()))


def read(name: str) -> Iterator[dict[str, Any]]:
    with lzma.open(HERE / name, "rt", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def item(kind: str, split: str, source: str, prompt: str, answer: str) -> dict[str, Any]:
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return {"kind": kind, "split": split, "source": source, "messages": messages}


def translation_candidates() -> Iterator[tuple[str, dict[str, Any]]]:
    for n, pair in enumerate(read("en-fr.jsonl.xz"), 1):
        en, fr = pair["en"], pair["fr"]
        if 15 <= len(en) <= 160 and len(fr) <= 200 and len(en.split()) >= 3:
            split = "test" if is_test(pair["doc"]) else "train"
            source = f"en-fr.jsonl.xz line {n} ({pair['doc']})"
            yield split, item("translation", split, source, f"Translate to French: {en}", fr)


def sentiment_candidates() -> Iterator[tuple[str, dict[str, Any]]]:
    for row in read("rt_sentiment.jsonl.xz"):
        split = "test" if is_test(str(row["id"])) else "train"
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
        for record in sorted(by_split[split], key=lambda r: sha(r["messages"][0]["content"])):
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
    """(the file's bytes, its records)."""
    records = select(translation_candidates()) + select(sentiment_candidates())
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return lzma.compress(text.encode("utf-8"), preset=9), records


def main() -> None:
    data, records = build()
    OUTPUT.write_bytes(data)
    counts: dict[str, int] = {}
    for r in records:
        counts[f"{r['kind']}/{r['split']}"] = counts.get(f"{r['kind']}/{r['split']}", 0) + 1
    print(f"{OUTPUT}: {len(records)} items {counts}, {OUTPUT.stat().st_size:,} bytes,"
          f" sha256 {hashlib.sha256(OUTPUT.read_bytes()).hexdigest()}")  # fmt: skip


if __name__ == "__main__":
    main()
