"""`lmforge embed` / `lmforge.embed`: sentence embeddings of texts with an encoder directory (an HF
BERT-style folder such as all-MiniLM-L6-v2, an lmforge encoder), pooled as sentence-transformers
pools them (the mean of the last hidden states over the real tokens, then scaled to length 1), by
inference/embeddings.py's Embedder, the one `ask --retriever hybrid` uses. The CLI prints one JSON
line per text: {"text", "embedding"}."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.inference.classify import read_texts
from lmforge.inference.embeddings import Embedder
from lmforge.inference.options import check_options, check_texts, is_int


def embed(
    model: str | Path,
    texts: str | list[str] | None = None,
    file: str | Path | None = None,
    text_field: str = "text",
    normalize: bool = True,
    max_length: int | None = None,
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """Embed `texts` (a string or a list), then the texts of `file` (a .jsonl's `text_field`, or
    one per line): [{"text", "embedding": [floats]}], one per text in order. normalize: scale each
    to length 1 (sentence-transformers' Normalize; False: the plain mean). max_length: the tokens
    a text is cut to (default: the directory's sentence_bert_config.json max_seq_length, else the
    model's context; more than the context is an error)."""
    check_options(batch_size=batch_size)
    if not isinstance(normalize, bool):
        raise LmforgeError(f"normalize={normalize!r}: must be True or False")
    if max_length is not None and not (is_int(max_length) and max_length >= 2):
        raise LmforgeError(
            f"max_length={max_length!r}: must be an integer >= 2 (a text and its special tokens)"
        )
    if texts is None and file is None:
        raise LmforgeError("nothing to embed: give some text or --file")
    given = [] if texts is None else check_texts(texts)
    given += [] if file is None else read_texts(file, text_field)  # a bad file before the model loads
    embedder = Embedder(model, max_length=max_length)  # checked even for no texts, as classify does
    context = int(embedder.net.config.block_size)
    if max_length is not None and max_length > context:  # as qa's max_seq_len: not cut down silently
        raise LmforgeError(f"max_length={max_length}: longer than the model's context of {context} tokens")
    rows = embedder.embed(given, normalize, batch_size).tolist()
    return [{"text": text, "embedding": row} for text, row in zip(given, rows, strict=True)]
