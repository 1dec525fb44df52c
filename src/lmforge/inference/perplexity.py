"""`lmforge eval`: perplexity and bits per byte of a decoder language model on text.

The text is any input `lmforge prep` reads (.txt, .md, .jsonl, .csv, .parquet, compressed,
folders, globs), as one token stream: each document between the tokens the tokenizer puts before a
text (Llama's BOS) and after it (a GGUF's add_eos_token EOS), as transformers' `tokenizer(text)`
gives them, else after an EOS, as prep's shards separate documents, so every text token is scored
and the first document is scored from its first token. Scoring slides windows of `context` tokens
forward by `stride` tokens, as in Hugging Face's perplexity guide
(https://huggingface.co/docs/transformers/perplexity): the first window scores its tokens after
the first; each later window scores only the `stride` tokens past the previous window's end, with
the `context - stride` tokens before them as left context. Every token is scored exactly once; a
smaller stride gives more context and costs more. One difference from the guide: the last window
starts `context` tokens before the stream's end (the guide starts it a stride after the previous
one), so its tokens get a full left context.

perplexity = exp(total nll / scored tokens); bits per byte = the text tokens' nll / ln 2 / UTF-8
bytes of the scored text (the separators' and a character vocabulary's `<|unk|>` predictions count in
the nll and have no bytes, as in training's val_bpb), so bpb compares models with different tokenizers.
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from lmforge.data.encode import make_encoder, ordinary_hf
from lmforge.data.report import Report
from lmforge.data.sources import read_documents
from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model
from lmforge.inference.options import check_options, is_int
from lmforge.model.gpt import GPT
from lmforge.model.kinds import require_decoder
from lmforge.tokenization.tokenizer import Tokenizer, UnknownChars

Window = tuple[int, int, int]
"""(begin, first scored, end): inputs ids[begin:end]; targets ids[first:end] are scored."""


def windows(n: int, context: int, stride: int) -> list[Window]:
    """The sliding windows over a stream of n tokens (n >= 2). Targets are positions 1..n-1;
    a window predicts its tokens after the first, so stride must be below context."""
    end = min(context, n)
    out = [(0, 1, end)]
    while end < n:
        new_end = min(end + stride, n)
        out.append((max(0, new_end - context), end, new_end))
        end = new_end
    return out


def _check(context: int | None, stride: int | None, max_tokens: int | None, batch_size: int) -> None:
    for name, value in (("context", context), ("stride", stride), ("max_tokens", max_tokens)):
        if value is not None and not (is_int(value) and value >= 1):
            raise LmforgeError(f"{name}={value!r}: must be an integer >= 1")
    if context is not None and context < 2:
        raise LmforgeError(f"context={context}: must be at least 2 (a token and one to predict)")
    check_options(batch_size=batch_size)


def _settings(model: GPT, context: int | None, stride: int | None) -> tuple[int, int]:
    block = model.config.block_size
    context = block if context is None else context
    if context > block:
        raise LmforgeError(f"context={context}: longer than the model's context of {block}")
    stride = context // 2 if stride is None else stride
    if stride >= context:
        raise LmforgeError(
            f"stride={stride}: must be below context={context} (each window needs at least one token"
            f" of left context before the tokens it scores; stride {context - 1} gives the least overlap)"
        )
    return context, stride


def token_stream(
    tokenizer: Tokenizer, documents: Iterator[str], max_tokens: int | None
) -> tuple[list[int], int, int, UnknownChars]:
    """(ids, UTF-8 bytes of the scored text, documents used, the characters that became
    `<|unk|>`, for the caller's warning): each document between the
    `separators(tokenizer)`, the stream cut after `max_tokens` scored tokens. A cut inside a
    document counts the bytes its kept tokens stand for (`_bytes_of`). Documents are encoded as
    prep encodes them (data/encode.py), as ordinary text: a `<|endoftext|>` in the text is its
    characters, not the EOS id. A character vocabulary's `<|unk|>` counts no bytes, as in
    training's val_bpb (its shards hold ids: the character an unk stood for is gone)."""
    before, after = separators(tokenizer)
    _, encode = make_encoder(tokenizer)
    unknown = UnknownChars(tokenizer)  # a character vocabulary may lack some, as in prep
    sizes = _token_sizes(tokenizer)
    ids: list[int] = []
    nbytes = used = 0
    for text in documents:
        if not text:
            continue
        doc = np.asarray(encode([text])[0], dtype=np.int64).tolist()
        tokenizer.check_rows(doc)  # a token past the model's embedding rows: one line
        unknown.add(text, doc)
        if before:
            ids += before
        elif not ids:  # no EOS: the first token is context only, and its bytes are not scored
            nbytes -= _bytes_of(tokenizer, sizes, text, doc, 1)
        room = None if max_tokens is None else max_tokens + 1 - len(ids)
        if room is not None and room < len(doc):
            if room > 0:  # room 0: the stream ends on the EOS that closes the previous document
                ids += doc[:room]
                nbytes += _bytes_of(tokenizer, sizes, text, doc, room)
                used += 1
            break
        used += 1
        ids += doc
        nbytes += _bytes_of(tokenizer, sizes, text, doc, len(doc))
        ids += after if max_tokens is None else after[: max_tokens + 1 - len(ids)]
        if max_tokens is not None and len(ids) > max_tokens:
            break
    return ids, nbytes, used, unknown


def separators(tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """The ids before and after each document: those the tokenizer puts around a text, as
    transformers' `tokenizer(text)` gives them (Llama 3's, Llama 2's and Mistral's BOS before:
    their models never saw a document start without it; a GGUF's add_eos_token EOS after), else an
    EOS before (lmforge's own and SmolLM2's tokenizers add none: prep's shards separate documents
    with EOS), else none."""
    before, after = tokenizer.text_affixes()
    if not before and not after and tokenizer.eos_id is not None:
        before = [tokenizer.eos_id]
    return before, after


def _token_sizes(tokenizer: Tokenizer) -> np.ndarray | None:
    """The UTF-8 bytes each id stands for where that is exact and training counts them so
    (`token_bytes`: byte-level BPE, one byte a character of its alphabet; a character vocabulary,
    `<|unk|>` 0), else None: an imported tokenizer's pieces (SentencePiece's leading U+2581, a
    <0xNN> byte) are not their text's bytes, so its text is measured by offsets."""
    if tokenizer.kind not in ("bpe", "char"):
        return None
    return np.asarray(tokenizer.token_bytes(), dtype=np.int64)


def _bytes_of(tokenizer: Tokenizer, sizes: np.ndarray | None, text: str, doc: list[int], count: int) -> int:
    """The UTF-8 bytes of `text` that its first `count` tokens `doc[:count]` stand for: their own
    bytes where `sizes` has them (a cut inside a character's byte-level tokens counts the bytes
    kept, not the whole character), else from the offsets (`_offset_bytes`); a whole document of a
    BPE or other tokenizer is its text's bytes."""
    if sizes is not None and (tokenizer.kind == "char" or count < len(doc)):
        return int(sizes[np.asarray(doc[:count], dtype=np.int64)].sum())
    if count == len(doc):
        return len(text.encode("utf-8"))
    return _offset_bytes(tokenizer, text, count)


BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")  # a SentencePiece byte-fallback token: one byte


def _offset_bytes(tokenizer: Tokenizer, text: str, count: int) -> int:
    """The bytes of `text` its first `count` tokens cover, from the offsets of the ordinary-text
    encoding token_stream uses (HF's, which make_encoder's encoders equal). Offsets are in
    characters, and the tokens of one character share its offsets: a cut between them (the
    byte-fallback tokens <0xE4><0xB8> of 中) counts the characters before it and one byte a kept
    <0xNN>; a Metaspace U+2581 put before the text, which shares its first character, counts none."""
    encoding = ordinary_hf(tokenizer).encode(text, add_special_tokens=False)
    offsets, pieces = encoding.offsets, encoding.tokens
    end = offsets[count - 1][1]
    if count < len(offsets) and offsets[count][0] < end:  # the next token shares a kept character
        start = offsets[count][0]
        kept = sum(1 for j in range(count) if offsets[j][0] >= start and BYTE_PIECE.fullmatch(pieces[j]))
        return len(text[:start].encode("utf-8")) + kept
    return len(text[:end].encode("utf-8"))


class Scores(NamedTuple):
    nll: float  # total, in nats, over every scored token
    tokens: int  # scored
    windows: int
    untext_nll: float  # the part of nll that predicts `untext` ids: separators, <|unk|> (no bytes of text)


@torch.inference_mode()
def score(
    model: GPT,
    ids: list[int],
    context: int,
    stride: int,
    batch_size: int = 1,
    progress: bool = False,
    untext: list[int] | None = None,
) -> Scores:
    """The nll of the stream `ids` under `model`, and how much of it predicts `untext` ids."""
    model.eval()
    device = next(model.parameters()).device
    stream = torch.tensor(ids, dtype=torch.long, device=device)
    marks = torch.tensor(untext or [], dtype=torch.long, device=device)
    spans = windows(len(ids), context, stride)
    total, count, untext_total = 0.0, 0, 0.0
    shown = None if progress else True  # None: only on a terminal, not into a pipe or a file
    bar = tqdm(total=len(ids) - 1, unit="tok", desc="eval", disable=shown, file=sys.stderr)
    for i in range(0, len(spans), batch_size):
        group = spans[i : i + batch_size]  # every window has min(context, len(ids)) tokens
        inputs = torch.stack([stream[b:e] for b, _, e in group])  # (B, T)
        hidden = model.hidden_states(inputs)  # (B, T, C)
        for row, (b, first, e) in enumerate(group):
            # position p predicts token p + 1: only the scored targets go through the head
            logits = model.cap_logits(
                model.lm_head(hidden[row, first - 1 - b : e - 1 - b])
            ).float()  # (n, vocab)
            losses = F.cross_entropy(logits, stream[first:e], reduction="none")  # (n,)
            total += float(losses.double().sum())
            if len(marks):
                untext_total += float(losses[torch.isin(stream[first:e], marks)].double().sum())
            count += e - first
            bar.update(e - first)
    bar.close()
    return Scores(total, count, len(spans), untext_total)


def evaluate(
    model: str | Path,
    data: str | Path | list[str | Path],
    context: int | None = None,
    stride: int | None = None,
    max_tokens: int | None = None,
    text_field: str = "text",
    batch_size: int = 1,
    dtype: str = "fp32",
    quiet: bool = False,
) -> dict[str, Any]:
    """Perplexity and bits per byte of a decoder model on text, with sliding windows.

    model: run, checkpoint or model directory (lmforge's, imported, or Hugging Face's).
    data: files, folders or globs that `lmforge prep` reads (.txt .md .jsonl .json .csv .tsv .parquet
    .warc; .gz .xz .bz2 .zst); text_field names the field of .jsonl/.json/.csv/.tsv/.parquet.
    context: tokens per window (default: the model's block_size); stride: new tokens scored per
    window (default context // 2; must be below context); max_tokens: score only the first this many tokens.
    dtype fp32 by default: a metric should not move with the CPU's bf16 units.
    Returns tokens, bytes, nll (total nats), nll_per_token, ppl, bpb, unknown_tokens (the scored
    `<|unk|>` of a character vocabulary, which bpb leaves out as training's val_bpb does) and the settings.
    """
    _check(context, stride, max_tokens, batch_size)
    check_options(dtype=dtype)
    start = time.perf_counter()
    net, tokenizer = load_model(model)
    net = require_decoder(net, model)
    context, stride = _settings(net, context, stride)
    if dtype != "fp32":
        from lmforge.hardware import resolve_dtype
        from lmforge.model import kernels

        net = kernels.for_inference(net.to(resolve_dtype(dtype, net.config)[0]))
    report = Report()
    docs = (d.text for d in read_documents(data, text_field, report))
    ids, nbytes, used, unknown = token_stream(tokenizer, docs, max_tokens)
    for line in report.skipped():
        print(f"lmforge: warning: {line}", file=sys.stderr)
    unk = [] if tokenizer.unk_id is None else [tokenizer.unk_id]  # no bytes, as in training's val_bpb
    if len(ids) < 2 or nbytes <= 0:
        where = ", ".join(map(str, data)) if isinstance(data, list) else str(data)
        if len(ids) >= 2 and unk and unk[0] in ids:
            raise LmforgeError(
                f"{where}: no text to score: every scored character is outside the model's character"
                " vocabulary (each became <|unk|>, which has no bytes)"
            )
        raise LmforgeError(f"{where}: no text to score (empty documents, or none with field {text_field!r})")
    if unknown.count:  # after the checks: an error is one line
        print(
            f"lmforge: warning: {unknown.message()}; bits per byte leaves out each <|unk|>'s loss and"
            " bytes, as training's val_bpb does (perplexity keeps them)",
            file=sys.stderr,
        )
    before, after = separators(tokenizer)
    nll, tokens, nwindows, untext_nll = score(
        net, ids, context, stride, batch_size, not quiet, before + after + unk
    )
    per_token = nll / tokens
    return {
        "model": str(model),
        "documents": used,
        "tokens": tokens,
        "bytes": nbytes,
        "nll": nll,
        "nll_per_token": per_token,
        "ppl": math.exp(per_token),
        "bpb": (nll - untext_nll) / math.log(2) / nbytes,  # text alone, as training's val_bpb
        "unknown_tokens": ids[1:].count(unk[0]) if unk else 0,  # scored <|unk|>, left out of bpb
        "context": context,
        "stride": stride,
        "windows": nwindows,
        "dtype": str(next(net.parameters()).dtype).removeprefix("torch."),
        "seconds": round(time.perf_counter() - start, 2),
    }
