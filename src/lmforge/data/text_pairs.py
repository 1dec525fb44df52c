"""Text pairs for a cross-encoder (an NLI model, a reranker), as transformers' text-classification
pipeline takes them ({"text": a, "text_pair": b}): each pair encoded as
`tokenizer(a, text_pair=b, truncation=True)` encodes it, through the tokenizer's own pair template
(BERT's `[CLS] a [SEP] b [SEP]` with token types 0 then 1, RoBERTa's `<s> a </s></s> b </s>`; the
two texts one after the other where the tokenizer has none: GPT-2's, lmforge's own), cut to the
model's context by the `tokenizers` library's truncation, which transformers' fast tokenizers call
(`longest_first`: a token comes off the longer text, one at a time). The question-answering windows
(qa_features.py) encode their (question, context) pairs on the same private copy of the tokenizer.
"""

from __future__ import annotations

import weakref

import torch
from tokenizers import Tokenizer as HFTokenizer

from lmforge.data.labelled import Item, encode_text, pad_rows
from lmforge.errors import LmforgeError
from lmforge.tokenization.tokenizer import Tokenizer

__all__ = ["PAIR_STRATEGIES", "Item", "encode_items", "private_copy"]
PAIR_STRATEGIES = ("longest_first", "only_first", "only_second")  # transformers' truncation of a pair
_COPIES: weakref.WeakKeyDictionary[Tokenizer, HFTokenizer] = weakref.WeakKeyDictionary()


def private_copy(tokenizer: Tokenizer) -> HFTokenizer:
    """A copy of the tokenizer's `tokenizers.Tokenizer` without padding, whose truncation a caller
    sets for each call (the shared one is left as it is)."""
    hf = HFTokenizer.from_str(tokenizer.hf.to_str())
    hf.no_padding()
    return hf


def _pair_tokenizer(tokenizer: Tokenizer) -> HFTokenizer:
    """One private copy per tokenizer, kept while the tokenizer lives: a large vocabulary takes
    a while to copy, and a pipeline encodes a batch at a time."""
    if tokenizer not in _COPIES:
        _COPIES[tokenizer] = private_copy(tokenizer)
    return _COPIES[tokenizer]


def encode_items(
    tokenizer: Tokenizer,
    items: list[Item],
    context: int,
    pad_id: int | None = None,
    strategy: str = "longest_first",
    type_vocab_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention_mask, token_type_ids), each (B, T), right-padded as labelled.encode_batch
    pads: a text as encode_batch encodes it (token types 0), a pair as the module doc says, cut to
    `context` tokens by `strategy` (one of PAIR_STRATEGIES; a text alone keeps its first tokens). A
    model with fewer than 2 token types (`type_vocab_size`: RoBERTa's 1) gets types 0, as
    transformers gives a RoBERTa none (its tokenizer does not ask for them)."""
    after = tokenizer.text_affixes()[1]
    hf = _pair_tokenizer(tokenizer)
    hf.enable_truncation(context, strategy=strategy)
    rows, types = [], []
    for n, item in enumerate(items, start=1):
        if isinstance(item, str):
            rows.append(encode_text(tokenizer, item, context, after))
            types.append([0] * len(rows[-1]))
            continue
        for text in item:  # a one-line error for text that is not UTF-8; a char vocabulary's warning
            tokenizer.encode(text)
        try:
            encoding = hf.encode(*item)
        except Exception as e:  # tokenizers raises plain Exception: a pair that cannot be cut so
            raise LmforgeError(
                f"pair {n}: cannot cut it to the model's context of {context} tokens with"
                f" truncation={strategy!r} ({e})"
            ) from None
        tokenizer.check_rows(encoding.ids)
        rows.append(encoding.ids)
        types.append(encoding.type_ids)
    ids, mask, kinds = pad_rows(rows, pad_id if pad_id is not None else tokenizer.pad_id, types)
    if type_vocab_size is not None and int(kinds.max()) >= type_vocab_size:  # no rows for them
        kinds.zero_()
    return ids, mask, kinds
