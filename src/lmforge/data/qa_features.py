"""Question-answering features: a question and a context as model inputs, windowed with a doc stride.

As transformers' question-answering pipeline and its `run_qa.py` example do it with a fast
tokenizer: `[CLS] question [SEP] context [SEP]`, the context cut to fit `max_seq_len` tokens and,
when it is longer, continued in further windows that overlap the previous one by `doc_stride`
tokens (the tokenizer's own truncation with stride, so the windows are transformers' windows). Each
window keeps its `tokenizers.Encoding`: its offsets map tokens back to characters of the original
context, which is how answers come back as character spans.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Encoding

from lmforge.data.text_pairs import private_copy
from lmforge.errors import LmforgeError
from lmforge.tokenization.tokenizer import Tokenizer

NO_ANSWER = (0, 0)  # training target of a window without the answer: the [CLS] token


@dataclass
class Window:
    """One model input of one example."""

    example: int
    encoding: Encoding
    ids: list[int]
    type_ids: list[int]
    answerable: list[bool]  # the token may be part of an answer: a context token, or [CLS]


@dataclass
class Inputs:
    """A window's model inputs alone, all a training batch needs: a Window of 384 tokens holds
    ~45 KB (its Encoding keeps the tokens' strings, offsets and words for decoding answers), these
    ~2 KB, which is 0.2 GB instead of 4 GB for SQuAD v1.1's 88k training questions."""

    ids: np.ndarray  # (T,) int32
    type_ids: np.ndarray  # (T,) int8

    @classmethod
    def of(cls, window: Window) -> Inputs:
        return cls(np.array(window.ids, dtype=np.int32), np.array(window.type_ids, dtype=np.int8))


class WindowMaker:
    """Windows of (question, context) pairs for one tokenizer (a private copy: truncation is set on it)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer  # its check_rows: ids past the model's embedding rows
        self.hf = private_copy(tokenizer)
        # the null answer's token, which transformers' pipeline keeps answerable: BERT's [CLS], RoBERTa's <s>
        names = (tokenizer.encoder_specials().get("cls_token"), "[CLS]", "<s>")
        self.cls_id = next((i for t in names if t and (i := self.hf.token_to_id(t)) is not None), None)
        self.specials = self.hf.num_special_tokens_to_add(is_pair=True)

    def windows(
        self,
        example: int,
        question: str,
        context: str,
        max_seq_len: int,
        doc_stride: int,
        name: str | None = None,
        stride_note: str = "",
        keys: tuple[str, str] = ("doc_stride", "max_seq_len"),
        size: str | None = None,
    ) -> list[Window]:
        """name: how an error names the question (default "question N", N = example + 1);
        stride_note: said after doc_stride's value (where the caller derived it); keys: the
        caller's names of doc_stride and max_seq_len (training's are data.doc_stride, data.max_len);
        size: how an error names the window's size where it is no value of max_seq_len's key
        (training's data.max_len cut to the model's context), and then advises no larger one."""
        stride_key, len_key = keys
        name = name or f"question {example + 1}"
        larger = f"a larger {len_key} or " if size is None else ""
        size = size or f"{len_key}={max_seq_len}"
        self.hf.no_truncation()  # the previous call's only_second truncation fails on a question alone
        question_tokens = len(self.hf.encode(question, add_special_tokens=False).ids)
        room = max_seq_len - question_tokens - self.specials  # context tokens per window
        if room <= 0:
            raise LmforgeError(f"{name} has {question_tokens} tokens: no room for the context in {size}")
        if doc_stride >= room:
            raise LmforgeError(
                f"{stride_key}={doc_stride}{stride_note} must be smaller than the {room} context tokens"
                f" a window of {size} holds beside {name}: give {larger}a smaller {stride_key}"
            )
        self.hf.enable_truncation(max_seq_len, stride=doc_stride, strategy="only_second")
        first = self.hf.encode(question, context)
        for enc in (first, *first.overflowing):
            self.tokenizer.check_rows(enc.ids)
        out = []
        for enc in (first, *first.overflowing):
            answerable = [s == 1 or i == self.cls_id for s, i in zip(enc.sequence_ids, enc.ids, strict=True)]
            out.append(Window(example, enc, enc.ids, enc.type_ids, answerable))
        return out


def span_targets(window: Window, answer_start: int, answer_end: int) -> tuple[int, int]:
    """Token (start, end) of the characters [answer_start, answer_end) of the context in this window,
    or NO_ANSWER when the window does not hold the whole answer (as transformers' run_qa.py)."""
    tokens = [i for i, s in enumerate(window.encoding.sequence_ids) if s == 1]
    if not tokens or answer_end <= answer_start:
        return NO_ANSWER
    offsets = window.encoding.offsets
    if offsets[tokens[0]][0] > answer_start or offsets[tokens[-1]][1] < answer_end:
        return NO_ANSWER
    start = next(i for i in tokens if offsets[i][1] > answer_start)
    end = next(i for i in reversed(tokens) if offsets[i][0] < answer_end)
    return start, end


def pad_windows(
    windows: Sequence[Window] | Sequence[Inputs], width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, token_type_ids, attention_mask) of the windows, each (B, width), right-padded with 0."""
    ids = torch.zeros(len(windows), width, dtype=torch.long)
    types, mask = torch.zeros_like(ids), torch.zeros_like(ids)
    for row, w in enumerate(windows):
        n = len(w.ids)
        ids[row, :n], types[row, :n], mask[row, :n] = torch.as_tensor(w.ids), torch.as_tensor(w.type_ids), 1
    return ids, types, mask
