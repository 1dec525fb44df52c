"""The fastest exact encoder for a trained tokenizer: ids equal `tokenizer.json`'s.

- byte-level BPE -> a `tiktoken` Encoding built from the BPE's ranks (HF's ByteLevel
  pre-tokenizer regex is GPT-2's, tiktoken's r50k pattern); whole documents are encoded on two
  threads (tiktoken's Rust core releases the GIL). About 5x HF `tokenizers`' encode_batch on
  2 cores (benchmarks/bench_prep.py).
- character level -> a numpy lookup table from code points to ids (unknown -> UNK).
- anything else -> HF `tokenizers` itself.

Documents are encoded as ordinary text, as nanoGPT's `encode_ordinary`: a `<|endoftext|>` typed
in a scraped page is its characters, not a document boundary or padding the trainer would act on
(the ids HF gives with `encode_special_tokens`). Prompts and chat templates, which mean their
special tokens, are encoded by `Tokenizer.encode`.

`verify` checks an encoder against HF on sample texts; `prep` falls back to HF when it differs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
from tokenizers import Tokenizer as HFTokenizer

from lmforge.tokenization.tokenizer import SPECIALS, UNK, Tokenizer

# GPT-2's pre-tokenization regex, as used by HF's ByteLevel(use_regex=True) pre-tokenizer.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

Encoder = Callable[[list[str]], list[Any]]  # texts -> id sequences (lists or int arrays)


def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: the byte-level alphabet character -> byte."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def tiktoken_encoding(tok: Tokenizer) -> object | None:
    """A tiktoken Encoding with the BPE's ranks, or None when the tokenizer is not plain
    byte-level BPE (then HF is the encoder)."""
    spec = json.loads(tok.hf.to_str())
    model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
    if tok.kind != "bpe" or model.get("type") != "BPE" or pre.get("type") != "ByteLevel":
        return None
    if not pre.get("use_regex", True) or pre.get("add_prefix_space") or spec.get("normalizer"):
        return None
    if any(not t.get("special", False) for t in spec.get("added_tokens", [])):
        return None  # a non-special added token (Qwen3's <think>) is one token to HF, bytes to tiktoken
    import tiktoken

    decoder = _byte_decoder()
    specials = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
    ranks: dict[bytes, int] = {}
    for token, i in model["vocab"].items():
        if token in specials:
            continue
        try:
            ranks[bytes(decoder[c] for c in token)] = i
        except KeyError:
            return None
    if len(ranks) < 256 or any(bytes([b]) not in ranks for b in range(256)):
        return None
    return tiktoken.Encoding(
        name=f"lmforge-{tok.sha256()[:12]}",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens=specials,
    )


def char_table(tok: Tokenizer) -> np.ndarray | None:
    """Code point -> id lookup table for a character tokenizer (UNK where absent)."""
    if tok.kind != "char":
        return None
    vocab = tok.hf.get_vocab(with_added_tokens=False)
    singles = {t: i for t, i in vocab.items() if len(t) == 1 and t not in SPECIALS}
    unk = tok.hf.token_to_id(UNK)
    top = max(ord(c) for c in singles) + 1 if singles else 1
    table = np.full(top, unk, dtype=np.int64)
    for c, i in singles.items():
        table[ord(c)] = i
    return table


def make_encoder(tok: Tokenizer, threads: int = 2) -> tuple[str, Encoder]:
    """(name, encode) where encode(list of texts) -> list of id lists, exactly as HF would with
    special-token strings read as ordinary text."""
    enc = tiktoken_encoding(tok)
    if enc is not None:

        def encode_tiktoken(texts: list[str]) -> list[list[int]]:
            return enc.encode_ordinary_batch(texts, num_threads=threads)  # type: ignore[attr-defined]

        return "tiktoken", encode_tiktoken
    table = char_table(tok)
    if table is not None:
        unk = tok.hf.token_to_id(UNK)

        def encode_chars(texts: list[str]) -> list[Any]:
            out = []
            for text in texts:
                points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
                out.append(np.where(points < len(table), table[np.minimum(points, len(table) - 1)], unk))
            return out

        return "numpy char table", encode_chars
    return hf_encoder(tok)


def ordinary_hf(tok: Tokenizer) -> HFTokenizer:
    """A copy of the tokenizer's HF tokenizer that reads special-token strings as ordinary text."""
    hf = HFTokenizer.from_str(tok.hf.to_str())
    hf.encode_special_tokens = True
    return hf


def hf_encoder(tok: Tokenizer) -> tuple[str, Encoder]:
    """HF `tokenizers` itself: the reference, slower than the encoders above."""
    hf = ordinary_hf(tok)

    def encode_hf(texts: list[str]) -> list[list[int]]:
        return [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]

    return "tokenizers", encode_hf


def verify(tok: Tokenizer, encode: Encoder, texts: list[str]) -> bool:
    """True when `encode` gives HF's ids (special-token strings as ordinary text) on every text."""
    reference = [e.ids for e in ordinary_hf(tok).encode_batch(texts, add_special_tokens=False)]
    return [[int(i) for i in ids] for ids in encode(texts)] == reference
