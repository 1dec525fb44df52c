"""Verbatim extraction: how often greedy decoding continues a document's prefix with its true next
k tokens (Carlini et al., "Quantifying Memorization Across Neural Language Models", 2023: k-extractable
with a prefix of p tokens), on training documents and on held-out ones as the baseline.

A document is read as the model saw it in training: EOS, then its tokens (after the tokenizer's
text start, Llama's BOS, where it has one). Windows of p + k tokens are drawn uniformly among
every position where one fits inside a document (documents shorter than p + k give none); the
first p tokens are the prompt, the next k the truth. A window is extracted when the k greedy
tokens equal the truth exactly; `mean_matched` is the average length of the
agreeing run before the first difference. Held-out documents share the corpus' style, so their
rate says what a model gets from generalization alone; the gap to the training rate is memorization.

Python API (stable): `Documents` (a token stream cut into documents), `windows(docs, p, k,
samples, seed)`, `extraction(greedy, windows, p) -> dict` with `greedy(prompts (B, p)) -> (B, k)`,
and `model_greedy(model, k, batch_size)` building that from a GPT.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lmforge.inference.generate import generate_ids
from lmforge.model.gpt import GPT

Greedy = Callable[[np.ndarray], np.ndarray]
"""Prompts (B, p) token ids -> the greedy continuations (B, k)."""


@dataclass
class Documents:
    """Documents as one token stream: doc i is stream[starts[i]:ends[i]], its leading EOS included."""

    stream: np.ndarray
    starts: np.ndarray
    ends: np.ndarray

    @classmethod
    def from_stream(cls, ids: np.ndarray, eos: int) -> Documents:
        """prep's shards: each document followed by EOS. An EOS is put in front, so each
        document is (EOS, its tokens) as the model saw it after the previous one; the stream's
        final EOS ends the last document, so N documents give N, as meta.json counts them."""
        stream = np.concatenate([np.asarray([eos], dtype=np.int64), np.asarray(ids, dtype=np.int64)])
        marks = np.flatnonzero(stream == eos)
        ends = np.append(marks[1:], len(stream))
        if stream[-1] == eos:  # the EOS closing the last document starts no new one (count as prep does)
            marks, ends = marks[:-1], ends[:-1]
        return cls(stream, marks, ends)

    @classmethod
    def from_lists(cls, docs: list[list[int]], eos: int | None) -> Documents:
        """Tokenized documents (each gets a leading EOS when the tokenizer has one)."""
        head = [] if eos is None else [eos]
        pieces = [head + d for d in docs]
        lengths = np.asarray([len(p) for p in pieces], dtype=np.int64)
        ends = np.cumsum(lengths)
        stream = np.asarray([t for p in pieces for t in p], dtype=np.int64)
        return cls(stream, ends - lengths, ends)

    def __len__(self) -> int:
        return len(self.starts)


def windows(docs: Documents, p: int, k: int, samples: int, seed: int = 0) -> np.ndarray:
    """Up to `samples` distinct windows (n, p + k), uniform over every place one fits in a document."""
    width = p + k
    fits = np.maximum(docs.ends - docs.starts - width + 1, 0)  # windows each document holds
    total = int(fits.sum())
    if total == 0:
        return np.zeros((0, width), dtype=np.int64)
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(total, size=min(samples, total), replace=False))
    doc = np.searchsorted(np.cumsum(fits), picks, side="right")  # the document each pick falls in
    first = docs.starts[doc] + picks - (np.cumsum(fits) - fits)[doc]
    return docs.stream[first[:, None] + np.arange(width)[None, :]]


def extraction(greedy: Greedy, windows: np.ndarray, p: int, batch_size: int = 64) -> dict[str, Any]:
    """Of the windows, how many the model continues exactly (see the module doc)."""
    n = len(windows)
    matched = np.zeros(n, dtype=np.int64)
    for i in range(0, n, batch_size):
        part = windows[i : i + batch_size]
        truth = part[:, p:]  # (B, k)
        out = np.asarray(greedy(part[:, :p]))  # (B, k)
        same = out == truth
        matched[i : i + len(part)] = np.where(same.all(1), truth.shape[1], same.argmin(1))
    k = windows.shape[1] - p if n else 0
    extracted = int((matched == k).sum()) if n else 0
    return {
        "samples": n,
        "extracted": extracted,
        "rate": round(extracted / n, 4) if n else None,
        "mean_matched": round(float(matched.mean()), 2) if n else None,
    }


def model_greedy(model: GPT, k: int) -> Greedy:
    """Greedy decoding of k tokens with the KV cache, one batch of equal-length prompts at a time."""

    def greedy(prompts: np.ndarray) -> np.ndarray:
        rows = [list(map(int, row)) for row in prompts]
        with torch.inference_mode():
            out = generate_ids(model, rows, k, temperature=0.0, eos_id=None)
        return np.asarray([o + [-1] * (k - len(o)) for o in out], dtype=np.int64)  # (B, k)

    return greedy
