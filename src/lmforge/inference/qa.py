"""Extractive question answering: the best answer spans of a span model (model/span.py) in a context.

The decoding is transformers' question-answering pipeline's (4.x `select_starts_ends`,
`decode_spans`, `postprocess`), step for step, so an imported model gives the same answers:

1. every window (data/qa_features.py) gets softmax probabilities over its answerable tokens
   (context tokens and [CLS]) for the start and for the end;
2. a span (s, e) scores p_start(s) * p_end(e), with s <= e < s + max_answer_len; the best
   `2 * top_k + 10` spans of each window are kept;
3. each span is widened to whole words and becomes characters of the original context (the
   tokenizer's offsets); spans with the same text (ignoring case) add their scores;
4. with `handle_impossible_answer` the null answer ("" at 0..0) scores the smallest
   p_start([CLS]) * p_end([CLS]) over the windows;
5. the answers, best first, `top_k` of them.

Windows of many examples run through the model together, padded; each window's logits are cut
back to its own length before decoding, as the pipeline decodes each unpadded window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lmforge.data.qa_features import Window, WindowMaker, pad_windows
from lmforge.errors import LmforgeError
from lmforge.inference.options import is_int
from lmforge.model.span import SpanModel
from lmforge.tokenization.tokenizer import Tokenizer

DEFAULT_MAX_SEQ_LEN = 384  # transformers' default, capped by the model's context


@dataclass
class QAOptions:
    top_k: int = 1
    max_answer_len: int = 15
    handle_impossible_answer: bool = False
    max_seq_len: int | None = None  # None: min(384, the model's context)
    doc_stride: int | None = None  # None: min(max_seq_len // 2, 128)
    align_to_words: bool = True
    batch_size: int = 32


def check_qa_options(options: QAOptions) -> None:
    """One-line errors for option values transformers also refuses (or would fail on later)."""
    for name in ("top_k", "max_answer_len", "batch_size"):
        value = getattr(options, name)
        if not (is_int(value) and value >= 1):
            raise LmforgeError(f"{name}={value!r}: must be an integer >= 1")
    if options.max_seq_len is not None and not (is_int(options.max_seq_len) and options.max_seq_len >= 4):
        raise LmforgeError(f"max_seq_len={options.max_seq_len!r}: must be an integer >= 4 or None")
    if options.doc_stride is not None and not (is_int(options.doc_stride) and options.doc_stride >= 0):
        raise LmforgeError(f"doc_stride={options.doc_stride!r}: must be an integer >= 0 or None")
    for name in ("handle_impossible_answer", "align_to_words"):
        if not isinstance(getattr(options, name), bool):
            raise LmforgeError(f"{name}={getattr(options, name)!r}: must be True or False")


def window_sizes(model: SpanModel, options: QAOptions) -> tuple[int, int]:
    """(max_seq_len, doc_stride) after defaults, as transformers chooses them; one-line errors for
    sizes the model cannot run (every caller, the pipeline and eval-qa, checks here before work)."""
    context = model.config.block_size
    max_seq_len = options.max_seq_len or min(DEFAULT_MAX_SEQ_LEN, context)
    doc_stride = options.doc_stride if options.doc_stride is not None else min(max_seq_len // 2, 128)
    if max_seq_len > context:  # else the encoder fails mid-run with a traceback
        raise LmforgeError(f"max_seq_len={max_seq_len}: longer than the model's context of {context} tokens")
    if doc_stride > max_seq_len:
        raise LmforgeError(f"doc_stride={doc_stride} is larger than max_seq_len={max_seq_len}")
    return max_seq_len, doc_stride


@torch.no_grad()  # not inference_mode: sharded engines gather weights inside forward
def window_logits(
    model: torch.nn.Module, windows: Sequence[Window], batch_size: int, device: torch.device | None = None
) -> list[np.ndarray]:
    """(start, end) logits of each window, as a float32 array (2, T) of the window's own length."""
    device = device or next(model.parameters()).device
    out: list[np.ndarray] = []
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]
        ids, types, mask = pad_windows(chunk, max(len(w.ids) for w in chunk))
        logits = model(ids.to(device), mask.to(device), types.to(device)).float().cpu()  # (B, T, 2)
        out.extend(logits[row, : len(w.ids)].T.numpy() for row, w in enumerate(chunk))
    return out


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _top_spans(
    start: np.ndarray, end: np.ndarray, answerable: np.ndarray, k: int, max_answer_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k best (start, end, score) with start <= end < start + max_answer_len, then only spans
    whose two ends are answerable (transformers' decode_spans: it filters after choosing k)."""
    candidates = np.tril(np.triu(np.outer(start, end)), max_answer_len - 1)  # (T, T)
    flat = candidates.flatten()
    if k == 1:
        order = np.array([np.argmax(flat)])
    elif len(flat) < k:
        order = np.argsort(-flat)
    else:
        picked = np.argpartition(-flat, k)[0:k]
        order = picked[np.argsort(-flat[picked])]
    starts, ends = np.unravel_index(order, candidates.shape)
    keep = answerable[starts] & answerable[ends]
    starts, ends = starts[keep], ends[keep]
    return starts, ends, candidates[starts, ends]


def _char_span(window: Window, s: int, e: int, align_to_words: bool) -> tuple[int, int]:
    enc = window.encoding
    if align_to_words:
        start_word, end_word = enc.token_to_word(s), enc.token_to_word(e)
        if start_word is not None and end_word is not None:
            first = enc.word_to_chars(start_word, sequence_index=1)
            last = enc.word_to_chars(end_word, sequence_index=1)
            if first is not None and last is not None:
                return first[0], last[1]
    return enc.offsets[s][0], enc.offsets[e][1]  # [CLS] and words the tokenizer cannot name


def decode_example(
    context: str, windows: Sequence[Window], logits: Sequence[np.ndarray], options: QAOptions
) -> list[dict[str, Any]]:
    """The answers for one example from its windows' logits: [{"score", "start", "end", "answer"}],
    best first, at most top_k."""
    null_score = 1000000.0  # large and positive: the smallest over windows wins
    answers: list[dict[str, Any]] = []
    by_text: dict[str, dict[str, Any]] = {}
    k = options.top_k * 2 + 10 if options.align_to_words else options.top_k
    for window, (start_logits, end_logits) in zip(windows, logits, strict=True):
        answerable = np.array(window.answerable)
        start = _softmax(np.where(answerable, start_logits, np.float32(-10000.0)))
        end = _softmax(np.where(answerable, end_logits, np.float32(-10000.0)))
        if options.handle_impossible_answer:
            null_score = min(null_score, float(start[0] * end[0]))
        start[0] = end[0] = 0.0  # [CLS] is the null answer, never a span
        for s, e, score in zip(*_top_spans(start, end, answerable, k, options.max_answer_len), strict=True):
            begin, stop = _char_span(window, int(s), int(e), options.align_to_words)
            text = context[begin:stop]
            same = by_text.get(text.lower())
            if same is not None:  # the same answer from another span or window: scores add up
                same["score"] += float(score)
            else:
                by_text[text.lower()] = entry = {
                    "score": float(score),
                    "start": begin,
                    "end": stop,
                    "answer": text,
                }
                answers.append(entry)
    if options.handle_impossible_answer:
        answers.append({"score": null_score, "start": 0, "end": 0, "answer": ""})
    return sorted(answers, key=lambda a: a["score"], reverse=True)[: options.top_k]


def answer_questions(
    model: SpanModel, tokenizer: Tokenizer, pairs: Sequence[tuple[str, str]], options: QAOptions
) -> list[list[dict[str, Any]]]:
    """For each (question, context): its answers, best first (see the module doc)."""
    max_seq_len, doc_stride = window_sizes(model, options)
    maker = WindowMaker(tokenizer)
    # a derived stride says so: the user gave max_seq_len only
    note = "" if options.doc_stride is not None else " (not given: min(max_seq_len // 2, 128))"
    windows = [
        w
        for n, (q, c) in enumerate(pairs)
        for w in maker.windows(n, q, c, max_seq_len, doc_stride, stride_note=note)
    ]
    logits = window_logits(model, windows, options.batch_size)
    grouped: list[list[int]] = [[] for _ in pairs]
    for i, w in enumerate(windows):
        grouped[w.example].append(i)
    return [
        decode_example(c, [windows[i] for i in grouped[n]], [logits[i] for i in grouped[n]], options)
        for n, (_, c) in enumerate(pairs)
    ]
