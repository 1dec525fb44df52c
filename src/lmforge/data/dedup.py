"""Corpus-level stages: they need to have seen other documents.

exact_dedup  drop a document whose text (whitespace-normalised) was seen before: a set of
             128-bit xxhash digests, ~100 bytes per kept document.
near_dedup   drop a document whose MinHash signature shares an LSH band with an earlier one
             (FineWeb's setting: 14 bands x 8 rows, Jaccard threshold (1/14)^(1/8) = 0.72) and whose
             Jaccard similarity with that one is at the threshold or above: exact where both have
             at most 56 shingles, else estimated from the 112 hashes. Shingles are the
             8 bytes starting at each word of the lower-cased text (the first and last words
             too), and at each character of
             scripts written without spaces (Chinese, Japanese, Thai); signatures are computed in
             the worker processes with numpy, bands are looked up in the main process
             (~2 KB per kept document: band digests, signature, a short one's shingles).
boilerplate  remove lines (>= min_chars) that occur in at least max(min_docs, fraction x docs)
             distinct documents. It needs every document first: a counting pass fills a count-min
             sketch (4 x 2^22 counters, 64 MB whatever the corpus size), then the removal pass
             queries it. A document given again (exact_dedup's key) counts once: it runs before
             exact_dedup, and ten copies of one article made its every line "boilerplate", so
             all copies, the first too, were dropped.

Each stage splits into `key(text)` (pure, runs in workers) and a decision in the main process,
so documents are deduplicated in input order: the first copy is kept.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import xxhash

from lmforge.data.report import StageStats

_MERSENNE = np.uint64((1 << 61) - 1)


class ExactDedup:
    name = "exact_dedup"

    def __init__(self) -> None:
        self.seen: set[int] = set()

    @staticmethod
    def key(text: str) -> int:
        return xxhash.xxh3_128_intdigest(" ".join(text.split()).encode())

    def keep(self, key: int, stats: StageStats) -> bool:
        if key in self.seen:
            stats.dropped["exact duplicate"] += 1
            return False
        self.seen.add(key)
        return True


class NearKey(NamedTuple):
    """What a worker computes for `NearDedup.keep`: LSH band digests, the full MinHash
    signature, and the shingles themselves for a document with few of them."""

    bands: tuple[int, ...]
    signature: np.ndarray  # (bands * rows,) uint32
    shingles: np.ndarray | None  # sorted uint64, when there are at most FEW_SHINGLES


class NearDedup:
    name = "near_dedup"
    # A document of at most this many shingles keeps them (8 bytes each: no more than its
    # 448-byte signature), and is compared with another such one by their exact Jaccard.
    FEW_SHINGLES = 56

    def __init__(self, bands: int = 14, rows: int = 8, seed: int = 1) -> None:
        self.bands, self.rows = bands, rows
        rng = np.random.default_rng(seed)
        n = bands * rows
        # Universal hashes h(x) = (a*x + b) mod 2^64, keeping the high 32 bits.
        self.a = rng.integers(1, 1 << 63, size=n, dtype=np.uint64) | np.uint64(1)
        self.b = rng.integers(0, 1 << 63, size=n, dtype=np.uint64)
        # band digest -> the kept document (or documents) holding it
        self.tables: list[dict[int, int | list[int]]] = [{} for _ in range(bands)]
        self.signatures = np.zeros((0, n), dtype=np.uint32)  # row i: kept document i's
        self.shingles: dict[int, np.ndarray] = {}  # kept documents with few shingles
        self.count = 0

    def threshold(self) -> float:
        return (1 / self.bands) ** (1 / self.rows)

    def key(self, text: str) -> NearKey | None:
        """The document's LSH bands and signature, or None when it is too short to shingle."""
        data = np.frombuffer(text.lower().encode("utf-8"), dtype=np.uint8)
        if len(data) < 16:
            return None
        # 8-byte shingles starting at each word start (the text's start, or after a space or
        # newline; to its end, zero-padded), and at each character of three UTF-8 bytes or more:
        # Chinese, Japanese and Thai write no spaces. Leaving out the first word and the words of
        # the last 8 bytes made short documents that differ there near duplicates ("Paris is the
        # capital of France." and "Rome is the capital of Italy.").
        before = np.concatenate([np.full(1, 32, np.uint8), data[:-1]])
        words = np.flatnonzero((before <= 32) & (data > 32))
        starts = np.union1d(words, np.flatnonzero(data >= 0xE0))
        if len(starts) == 0:
            return None
        padded = np.concatenate([data, np.zeros(8, np.uint8)])
        view = np.lib.stride_tricks.sliding_window_view(padded, 8)[starts]
        shingles = np.unique(view.copy().view("<u8").ravel())  # (S,)
        sig = np.empty(len(self.a), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for lo in range(0, len(self.a), 16):  # (16, S) at a time bounds memory
                hashed = self.a[lo : lo + 16, None] * shingles[None, :] + self.b[lo : lo + 16, None]
                sig[lo : lo + 16] = (hashed >> np.uint64(32)).min(axis=1)
        signature = sig.astype(np.uint32)
        bands = tuple(xxhash.xxh64_intdigest(band.tobytes()) for band in signature.reshape(self.bands, -1))
        return NearKey(bands, signature, shingles if len(shingles) <= self.FEW_SHINGLES else None)

    def near(self, key: NearKey, candidates: set[int]) -> bool:
        """Whether a kept candidate's Jaccard similarity with the document reaches the threshold:
        exact where both have few shingles, else the share of equal MinHash values (an estimate:
        +-0.05 at 0.6 with 112 hashes). One numpy pass over all candidates: a template's short
        documents can share a band with thousands of kept ones."""
        others = np.fromiter(candidates, dtype=np.int64, count=len(candidates))
        estimate = (self.signatures[others] == key.signature).mean(axis=1)
        limit = self.threshold()
        if key.shingles is None:
            return bool((estimate >= limit).any())
        for other, guess in zip(others.tolist(), estimate.tolist(), strict=True):
            theirs = self.shingles.get(other)
            if theirs is None:
                if guess >= limit:
                    return True
            elif guess >= limit - 0.25:  # exact Jaccard >= limit is 5+ sigma above such a guess
                common = len(np.intersect1d(key.shingles, theirs, assume_unique=True))
                if common / (len(key.shingles) + len(theirs) - common) >= limit:
                    return True
        return False

    def keep(self, key: NearKey | None, stats: StageStats) -> bool:
        if key is None:
            return True
        # A shared band only nominates candidates: with few shingles, distinct documents of
        # Jaccard 0.4-0.6 (a template's words around a name or a number) share one often, and
        # were dropped. A drop needs the pair's similarity at the threshold or above.
        candidates: set[int] = set()
        for band, table in zip(key.bands, self.tables, strict=True):
            held = table.get(band)
            if held is not None:
                candidates.update(held if isinstance(held, list) else (held,))
        if candidates and self.near(key, candidates):
            stats.dropped["near duplicate"] += 1
            return False
        index = self.count
        self.count += 1
        for band, table in zip(key.bands, self.tables, strict=True):
            held = table.setdefault(band, index)
            if isinstance(held, list):
                held.append(index)
            elif held != index:
                table[band] = [held, index]
        if index == len(self.signatures):  # grow by doubling
            grown = np.zeros((max(64, 2 * index), self.signatures.shape[1]), dtype=np.uint32)
            grown[:index] = self.signatures
            self.signatures = grown
        self.signatures[index] = key.signature
        if key.shingles is not None:
            self.shingles[index] = key.shingles
        return True


class Boilerplate:
    name = "boilerplate"
    WIDTH_BITS, DEPTH = 22, 4

    def __init__(self, min_docs: int = 10, fraction: float = 0.01, min_chars: int = 20) -> None:
        self.min_docs, self.fraction, self.min_chars = min_docs, fraction, min_chars
        self.sketch = np.zeros((self.DEPTH, 1 << self.WIDTH_BITS), dtype=np.uint32)
        rng = np.random.default_rng(7)
        self.salts = rng.integers(1, 1 << 63, size=(self.DEPTH, 1), dtype=np.uint64) | np.uint64(1)
        self.docs = 0
        self.counted: set[int] = set()  # ExactDedup keys of the documents counted
        self.limit = 0

    def line_keys(self, text: str) -> tuple[int, np.ndarray]:
        """(the document's ExactDedup key, distinct hashes of its candidate lines: stripped, >= min_chars)."""
        lines = {line.strip() for line in text.split("\n")}
        keys = [xxhash.xxh64_intdigest(line.encode()) for line in lines if len(line) >= self.min_chars]
        return ExactDedup.key(text), np.asarray(keys, dtype=np.uint64)

    def _slots(self, keys: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return ((self.salts * keys[None, :]) >> np.uint64(64 - self.WIDTH_BITS)).astype(np.int64)

    def count(self, documents: list[tuple[int, np.ndarray]]) -> None:
        """Counting pass: add one batch's documents' line keys (each distinct document once)."""
        fresh = []
        for digest, lines in documents:
            if digest not in self.counted:
                self.counted.add(digest)
                fresh.append(lines)
        self.docs += len(fresh)
        keys = np.concatenate(fresh) if fresh else np.zeros(0, np.uint64)
        if len(keys):
            slots = self._slots(keys)
            for row in range(self.DEPTH):
                self.sketch[row] += np.bincount(slots[row], minlength=self.sketch.shape[1]).astype(np.uint32)

    def freeze(self) -> int:
        """End of the counting pass: the number of documents a line must be in to be boilerplate."""
        self.counted = set()  # the workers of the removal pass inherit the stage: nothing to copy
        self.limit = max(self.min_docs, math.ceil(self.fraction * self.docs))
        return self.limit

    def apply(self, text: str, stats: StageStats) -> str | None:
        lines = text.split("\n")
        stripped = [line.strip() for line in lines]
        keys = [xxhash.xxh64_intdigest(s.encode()) if len(s) >= self.min_chars else 0 for s in stripped]
        arr = np.asarray(keys, dtype=np.uint64)
        counts = self.sketch[np.arange(self.DEPTH)[:, None], self._slots(arr)].min(axis=0)
        drop = (counts >= self.limit) & (arr != 0)
        if not drop.any():
            return text
        stats.edits["boilerplate lines"] += int(drop.sum())
        kept = "\n".join(line for line, d in zip(lines, drop, strict=True) if not d)
        if not kept.strip():
            stats.dropped["only boilerplate"] += 1
            return None
        return kept
