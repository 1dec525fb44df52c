"""`lmforge prep`: raw text in, tokenizer + train/val token shards out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.data.shards import prepare_corpus
from lmforge.errors import LmforgeError


def prep(
    inputs: str | Path | list[str | Path],
    out: str | Path,
    tokenizer: str = "char",
    vocab_size: int = 4096,
    val_fraction: float = 0.1,
    text_field: str = "text",
) -> dict[str, Any]:
    """Read the inputs, train a `char` or `bpe` tokenizer and write shards to `out`.

    Returns the metadata written to out/meta.json.
    """
    if tokenizer not in ("char", "bpe"):
        raise LmforgeError(f"tokenizer={tokenizer!r} must be 'char' or 'bpe'")
    if not 0.0 < val_fraction < 1.0:
        raise LmforgeError(f"val_fraction={val_fraction} must be in (0, 1)")
    return prepare_corpus(inputs, out, tokenizer, vocab_size, val_fraction, text_field)
