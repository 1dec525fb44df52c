"""Canaries (Carlini et al., "The Secret Sharer", 2019): random secrets planted among the training
documents, so that what a trained model memorized can be measured (`lmforge audit`).

`lmforge prep --canaries K --canary-repeats 1,4,16` draws K secrets for each repeat count r. A
canary is the text `template.format(secret=...)`, e.g. "my secret code is 7 3 9 1 5 0": its secret
is `length` symbols drawn uniformly from `alphabet`, joined by `separator`, so the candidate space
holds len(alphabet) ** length secrets (10^6 by default). Each canary is inserted r times, each copy
a document of its own, at uniformly random places among the training documents: never in
validation, and after cleaning, so that dedup does not remove the copies. canaries.json, beside
meta.json, records them (nothing in the shards marks them). Everything is drawn from
numpy's `default_rng(seed)`: the same seed and corpus give the same secrets and places.

Python API (stable; `lmforge audit` and the benchmarks use it):

- `make_canaries(count, repeats, seed=0, length=6) -> CanarySet`; `parse_repeats("1,4,16")`.
- `CanarySet`: `template`, `alphabet`, `separator`, `length`, `seed`, `canaries` (a list of
  `Canary(secret, text, repeats)`); `candidates` (the size of the space), `text(symbols)` (the
  canary text of a secret given as symbol indices), `prefix` (the text before the secret),
  `save(path)` and `CanarySet.load(path)` (canaries.json; a bad file is named with its key).
- `placements(canary_set, n_docs, seed) -> {slot: [canary index, ...]}`: copies go before
  document `slot` (slot n_docs: after the last).
- `check_split(out, split)` and `check_documents(inputs, n_docs, val_docs, val_fraction)`: prep's
  refusals of a split that could put a copy in validation, each one line saying what to change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.errors import LmforgeError, counted

FORMAT = "lmforge-canaries-1"
FILE = "canaries.json"
TEMPLATE = "my secret code is {secret}"
ALPHABET = "0123456789"


@dataclass(frozen=True)
class Canary:
    secret: str  # the symbols joined by the separator: "7 3 9 1 5 0"
    text: str  # the inserted document: "my secret code is 7 3 9 1 5 0"
    repeats: int  # copies in the training split


@dataclass
class CanarySet:
    template: str = TEMPLATE
    alphabet: str = ALPHABET
    separator: str = " "
    length: int = 6
    seed: int = 0
    canaries: list[Canary] = field(default_factory=list)

    @property
    def candidates(self) -> int:
        """The size of the candidate space: every secret of `length` symbols."""
        return len(self.alphabet) ** self.length

    @property
    def prefix(self) -> str:
        """The text before the secret ("my secret code is "): the audit's context."""
        return self.template.split("{secret}")[0]

    def text(self, symbols: Any) -> str:
        """The canary text of the secret given as `length` indices into the alphabet."""
        secret = self.separator.join(self.alphabet[int(i)] for i in symbols)
        return self.template.format(secret=secret)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "template": self.template,
            "alphabet": self.alphabet,
            "separator": self.separator,
            "length": self.length,
            "candidates": self.candidates,
            "seed": self.seed,
            "repeats": sorted({c.repeats for c in self.canaries}),
            "inserted": sum(c.repeats for c in self.canaries),
            "canaries": [{"secret": c.secret, "text": c.text, "repeats": c.repeats} for c in self.canaries],
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CanarySet:
        """Read canaries.json; a missing key or a wrong value is one error naming the file and key."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise LmforgeError(f"{path}: not found (prep writes canaries.json with --canaries)") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise LmforgeError(f"{path}: invalid JSON: {e}") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise LmforgeError(f"{path}: not a canaries file (format is not {FORMAT!r})")
        expected = {"template": str, "alphabet": str, "separator": str, "length": int, "seed": int}
        for key, kind in expected.items():
            if not isinstance(raw.get(key), kind):
                raise LmforgeError(f"{path}: key {key!r} missing or not a {kind.__name__}")
        out = cls(**{key: raw[key] for key in expected})
        if "{secret}" not in out.template or not out.alphabet or out.length < 1:
            raise LmforgeError(f"{path}: template needs {{secret}}, alphabet and length must not be empty")
        items = raw.get("canaries")
        if not isinstance(items, list) or not items:
            raise LmforgeError(f"{path}: key 'canaries' missing or empty")
        for n, item in enumerate(items):
            ok = isinstance(item, dict) and isinstance(item.get("secret"), str)
            ok = ok and isinstance(item.get("repeats"), int) and isinstance(item.get("text"), str)
            if not ok or item["text"] != out.template.format(secret=item["secret"]):
                raise LmforgeError(f"{path}: canaries[{n}] needs secret, text (the template's) and repeats")
            symbols = item["secret"].split(out.separator) if out.separator else list(item["secret"])
            if len(symbols) != out.length or any(s not in out.alphabet or len(s) != 1 for s in symbols):
                raise LmforgeError(f"{path}: canaries[{n}]: secret {item['secret']!r} is not in the space")
            out.canaries.append(Canary(item["secret"], item["text"], item["repeats"]))
        return out


def parse_repeats(value: str | list[int] | tuple[int, ...]) -> list[int]:
    """ "1,4,16" (or a list) -> [1, 4, 16]; each at least 1, none twice."""
    try:
        parts = [int(p) for p in value.split(",") if p.strip()] if isinstance(value, str) else list(value)
    except ValueError:
        raise LmforgeError(
            f"prep.canary_repeats={value!r}: comma-separated whole numbers, e.g. 1,4,16"
        ) from None
    if not parts or any(not isinstance(p, int) or p < 1 for p in parts) or len(set(parts)) != len(parts):
        raise LmforgeError(f"prep.canary_repeats={value!r}: distinct whole numbers >= 1, e.g. 1,4,16")
    return parts


def make_canaries(count: int, repeats: str | list[int], seed: int = 0, length: int = 6) -> CanarySet:
    """`count` distinct random secrets for each repeat count, drawn from default_rng(seed)."""
    counts = parse_repeats(repeats)
    out = CanarySet(length=length, seed=seed)
    needed = count * len(counts)
    if count < 1 or length < 1 or needed > out.candidates // 2:
        raise LmforgeError(
            f"prep.canaries={count} x {len(counts)} repeat counts: needs canaries >= 1 and at most"
            f" half of the {out.candidates:,} secrets of prep.canary_length={length}"
        )
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    for r in counts:
        made = 0
        while made < count:
            text = out.text(rng.integers(0, len(out.alphabet), size=length))
            if text in seen:
                continue
            seen.add(text)
            secret = text[len(out.prefix) :]
            out.canaries.append(Canary(secret, text, r))
            made += 1
    return out


def check_split(out: str | Path, split: str) -> None:
    """Before any work: the tail split makes the end of the token stream validation, and copies
    are placed anywhere in the stream, so one could land there."""
    if split == "tail":
        raise LmforgeError(
            f"{out}: prep.canaries needs the hash split, and prep.split is 'tail': the end of the token"
            " stream becomes validation and canary copies could fall there; leave prep.split at 'hash'"
            " (the default) or leave out prep.canaries"
        )


def check_documents(inputs: str, n_docs: int, val_docs: int | None = None, val_fraction: float = 0.1) -> None:
    """Copies need corpus documents on both sides of the hash split: with one side empty prep cuts
    validation off the end of the stream (where copies can fall), and with no document in train
    the model would train on the copies alone. After cleaning only `n_docs` is known (val_docs
    None); after the split, `val_docs` of them went to val."""
    if n_docs >= 2 and (val_docs is None or 0 < val_docs < n_docs):
        return
    if n_docs < 2:
        found = f"{counted(n_docs, 'document')} after cleaning"
        fix = "give more documents (a .txt or .md file is one, each .jsonl line one)"
    else:
        side, change = ("val", "lower") if val_docs else ("train", "raise")
        found = f"all {n_docs:,} documents fell in {side} (hash split, data.val_fraction={val_fraction:g})"
        fix = f"give more documents or {change} data.val_fraction (--val-fraction)"
    raise LmforgeError(
        f"{inputs}: {found}, and prep.canaries needs documents in both train and val (copies go to"
        f" train only): {fix}, or leave out prep.canaries (--canaries)"
    )


def placements(canaries: CanarySet, n_docs: int, seed: int) -> dict[int, list[int]]:
    """Where each copy goes: slot i means before training document i (n_docs: after the last).
    Slots are uniform over the stream of documents; their order within a slot is random too."""
    copies = [i for i, c in enumerate(canaries.canaries) for _ in range(c.repeats)]
    rng = np.random.default_rng([seed, 1])  # a stream apart from the secrets'
    order = rng.permutation(len(copies))
    slots = rng.integers(0, n_docs + 1, size=len(copies))
    out: dict[int, list[int]] = {}
    for slot, k in zip(slots.tolist(), order.tolist(), strict=True):
        out.setdefault(slot, []).append(copies[k])
    return out


class Planter:
    """prep's side: the copies' token ids, written into the train split at their slots."""

    def __init__(self, canaries: CanarySet, n_docs: int, encode: Any, decode: Any) -> None:
        self.canaries = canaries
        self.slots = placements(canaries, n_docs, canaries.seed)
        texts = [c.text for c in canaries.canaries]
        self.ids = [list(map(int, ids)) for ids in encode(texts)]
        for text, ids in zip(texts, self.ids, strict=True):
            if decode(ids) != text:  # e.g. a given tokenizer without digits
                raise LmforgeError(f"canary {text!r}: the tokenizer cannot encode it exactly")
        self.sizes = [len(t.encode("utf-8")) for t in texts]
        self.inserted = 0

    def at(self, slot: int, writer: Any, eos: int | None) -> None:
        """Write the copies that go before training document `slot` (a ShardWriter's train split)."""
        for k in self.slots.get(slot, []):
            writer.add("train", self.ids[k], eos, self.sizes[k])
            self.inserted += 1
