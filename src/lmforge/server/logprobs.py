"""OpenAI's `logprobs` objects, from the decoder's (token, log p, top alternatives) per token.

/v1/completions (`logprobs: k`, 0-5): `{"tokens", "token_logprobs", "top_logprobs", "text_offset"}`,
each a list over the generated tokens; `top_logprobs[i]` maps the k most likely tokens' text (and
the chosen one's, so up to k + 1 entries, as OpenAI says) to their log-probabilities. /v1/chat/
completions (`logprobs: true`, `top_logprobs: k`, 0-20): `{"content": [{"token", "logprob",
"bytes", "top_logprobs": [{"token", "logprob", "bytes"}, ...]}], "refusal": None}`.

A token's text is its own bytes as UTF-8; a token that holds part of a character (byte-level BPE
splits some) is written `bytes:\\xe2\\x80`, as OpenAI writes such tokens, and `bytes` gives the raw
bytes either way. Log-probabilities of -inf (a token the model rules out) are sent as -9999.0, as
vLLM sends them: JSON has no infinity.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any
from weakref import WeakKeyDictionary

from lmforge.tokenization.tokenizer import Tokenizer

FLOOR = -9999.0
BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")  # SentencePiece's byte fallback pieces


def _byte_level_table() -> dict[str, int]:
    """GPT-2's byte -> printable character map (bytes_to_unicode), inverted: character -> byte."""
    codes = {
        b: b for b in [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    }
    for b in range(256):  # the other bytes take the code points from 256 up, in order
        codes.setdefault(b, 256 + sum(1 for c in codes.values() if c >= 256))
    return {chr(c): b for b, c in codes.items()}


class Pieces:
    """Each token id's bytes and its text as OpenAI shows it, computed once per id."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        # ensure_ascii=False: escaped, '▁' was "\\u2581" there and never found (tokens showed '▁the')
        decoder = json.dumps(json.loads(tokenizer.hf.to_str()).get("decoder"), ensure_ascii=False)
        self.metaspace = "\u2581" in decoder  # SentencePiece-style: '▁' stands for a space
        self.table = _byte_level_table() if tokenizer.kind == "bpe" else None
        self.cache: dict[int, tuple[str, list[int]]] = {}

    def __call__(self, token: int) -> tuple[str, list[int]]:
        if token not in self.cache:
            raw = self._bytes(token)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:  # part of a character
                text = "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
            self.cache[token] = (text, list(raw))
        return self.cache[token]

    def _bytes(self, token: int) -> bytes:
        piece = self.tokenizer.hf.id_to_token(token)
        if piece is None:
            return self.tokenizer.decode([token]).encode()
        if self.table is not None and all(c in self.table for c in piece):
            return bytes(self.table[c] for c in piece)
        byte = BYTE_TOKEN.match(piece)
        if byte:
            return bytes([int(byte.group(1), 16)])
        return (piece.replace("\u2581", " ") if self.metaspace else piece).encode()


_PIECES: WeakKeyDictionary[Tokenizer, Pieces] = WeakKeyDictionary()


def pieces(tokenizer: Tokenizer) -> Pieces:
    if tokenizer not in _PIECES:
        _PIECES[tokenizer] = Pieces(tokenizer)
    return _PIECES[tokenizer]


def _value(logprob: float) -> float:
    return logprob if math.isfinite(logprob) else FLOOR


def completion_logprobs(tokenizer: Tokenizer, entries: list[Any], base: int = 0) -> dict[str, Any]:
    """/v1/completions' object for entries (TokenLogprob, decoding.py); offsets shifted by `base`
    (the echoed prompt's length). An entry without a log-probability (a prompt's first token,
    which nothing predicts) gives null for it and for its alternatives, as OpenAI sends it."""
    text = pieces(tokenizer)
    tops: list[dict[str, float] | None] = []
    for e in entries:
        if e.logprob is None:
            tops.append(None)
            continue
        top = {text(t)[0]: _value(v) for t, v in e.top}
        top.setdefault(text(e.token)[0], _value(e.logprob))  # the chosen token is always there
        tops.append(top)
    return {
        "tokens": [text(e.token)[0] for e in entries],
        "token_logprobs": [None if e.logprob is None else _value(e.logprob) for e in entries],
        "top_logprobs": tops,
        "text_offset": [base + e.offset for e in entries],
    }


def chat_logprobs(tokenizer: Tokenizer, entries: list[Any]) -> dict[str, Any]:
    """/v1/chat/completions' object for entries (TokenLogprob, decoding.py)."""
    text = pieces(tokenizer)

    def one(token: int, logprob: float) -> dict[str, Any]:
        shown, raw = text(token)
        return {"token": shown, "logprob": _value(logprob), "bytes": raw}

    content = [{**one(e.token, e.logprob), "top_logprobs": [one(t, v) for t, v in e.top]} for e in entries]
    return {"content": content, "refusal": None}
