"""The text-classification pipeline: HF's `[{"label": ..., "score": ...}]` over a classifier directory
(written by `lmforge finetune-classify`, or an HF ...ForSequenceClassification). Keywords: top_k,
batch_size and function_to_apply, as in transformers, at construction (the defaults of every call)
or per call; any other is an error naming it. The scores are transformers': a softmax over the
labels, a sigmoid per label for a multi-label or one-output head (a reward model), the raw
outputs for a regression, or what function_to_apply names (inference/classify.py).

A text pair, as transformers takes it (`{"text": a, "text_pair": b}`, or a list of such dicts, strings
among them or not), is read as a cross-encoder (an NLI model, a reranker) reads it: the
tokenizer's pair template, with token types for BERT (data/text_pairs.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmforge.data.text_pairs import PAIR_STRATEGIES, Item
from lmforge.errors import LmforgeError
from lmforge.inference.classify import checked_function, label_probabilities, load_classifier, ranked_labels
from lmforge.inference.options import (
    FIRST_ITEM,
    check_keywords,
    check_options,
    is_int,
    keyword_names,
)
from lmforge.pipelines.streaming import streams


class _Default:
    """top_k not given: transformers then gives a list of texts one dict each, not a list each."""

    def __repr__(self) -> str:  # what help() shows as the default: it acts as 1
        return "1"


DEFAULT = _Default()


PAIR_KEYS = ("text", "text_pair")
PAIR = '{"text": "My text", "text_pair": "My pair"}'  # transformers' words for the pair form


def check_inputs(inputs: Any) -> list[Item]:
    """A string, a {"text", "text_pair"} dict, or a list of them, as a list of texts and (text,
    text_pair) pairs; else a one-line error naming the bad item (transformers' own refusals: a
    dict without "text", a value that is not a string; and a key it would ignore, a typo's)."""
    if not isinstance(inputs, str | dict | list | tuple):
        raise LmforgeError(
            f"text must be a string, a text pair {PAIR} or a list, not {type(inputs).__name__}"
        )
    if isinstance(inputs, str):
        return [inputs]
    many = not isinstance(inputs, dict)
    items: list[Item] = []
    for n, item in enumerate(inputs if many else [inputs], start=FIRST_ITEM.get()):
        where = f"text item {n}" if many else "the text pair"
        if isinstance(item, str):
            items.append(item)
            continue
        if not isinstance(item, dict):
            kind = type(item).__name__
            raise LmforgeError(f"{where} is of type {kind}, not a string or a text pair {PAIR}")
        extra = [k for k in item if k not in PAIR_KEYS]
        if extra or "text" not in item:
            what = f"has the key(s) {', '.join(map(repr, extra))}" if extra else "has no 'text'"
            raise LmforgeError(f"{where} {what}: a text pair is {PAIR}")
        pair = item.get("text_pair")  # None: one text, as transformers reads it
        for key, value in (("text", item["text"]), ("text_pair", pair)):
            if not isinstance(value, str) and not (key == "text_pair" and value is None):
                raise LmforgeError(f"{where}: {key!r} is of type {type(value).__name__}, not a string")
        items.append(item["text"] if pair is None else (item["text"], pair))
    return items


def check_top_k(top_k: object) -> None:
    if not isinstance(top_k, _Default) and top_k is not None and not (is_int(top_k) and top_k >= 1):
        raise LmforgeError(f"top_k={top_k!r}: must be an integer >= 1 (labels per text) or None (all)")


class TextClassificationPipeline:
    def __init__(
        self,
        model: str | Path,
        batch_size: int = 32,
        top_k: int | None | _Default = DEFAULT,
        function_to_apply: str | None = None,
    ) -> None:
        check_options(batch_size=batch_size)
        check_top_k(top_k)
        self.function = checked_function(function_to_apply)  # None: the model's own (its problem_type)
        self.model, self.tokenizer = load_classifier(model)
        self.batch_size = batch_size
        self.top_k = top_k  # pipeline(..., top_k=None): every call gives every label, as transformers

    @streams(lambda pipe: pipe.batch_size)  # a generator or dataset: an iterator of results
    def __call__(
        self,
        text: str | dict[str, str] | list[str | dict[str, str]] | None = None,
        *,
        top_k: int | None | _Default = DEFAULT,
        batch_size: int | None = None,
        truncation: bool | str = True,
        function_to_apply: str | None = None,
        **unknown: Any,
    ) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """A string gives [{"label", "score"}] (the best label; top_k=None gives every label, best
        first, as a list of dicts; with top_k given to pipeline() and not to the call, that list
        inside a list, as transformers'); a list of strings gives one result per string, as HF does:
        a dict each when top_k is not given, a list of top_k dicts each when it is (even top_k=1).
        A text longer than the model's context is cut to its first tokens (truncation=True, the only
        choice; transformers' default raises). A pair {"text": a, "text_pair": b} gives what a
        string gives, but a dict alone and not a list of one when top_k is not given (as
        transformers); a pair over the context loses tokens from its longer text first
        (truncation=True, "longest_first"), or from one text alone ("only_first", "only_second": a
        reranker's query kept whole beside a long passage).
        function_to_apply ("softmax", "sigmoid", "none") overrides how the outputs become scores
        (see the module doc)."""
        if text is None:  # transformers' name for it
            text = unknown.pop("inputs", None)
        check_keywords(unknown, keyword_names(TextClassificationPipeline.__call__), "text-classification")
        if text is None:
            raise LmforgeError("text-classification needs a text or a list of texts to label")
        if truncation not in (True, *PAIR_STRATEGIES):  # transformers' keyword and its
            # strategies for one text; lmforge always keeps a text's first tokens
            raise LmforgeError(
                f"truncation={truncation!r}: text-classification always cuts a text to the model's context"
                " (its first tokens), as transformers' truncation=True; a pair by 'longest_first',"
                " 'only_first' or 'only_second'"
            )
        check_top_k(top_k)
        per_call = not isinstance(top_k, _Default)
        top_k = self.top_k if isinstance(top_k, _Default) else top_k
        given = not isinstance(top_k, _Default)
        top_k = top_k if given else 1  # type: ignore[assignment]
        if batch_size is not None:
            check_options(batch_size=batch_size)
        function = checked_function(function_to_apply) or self.function
        texts = check_inputs(text)
        if not texts:
            return []
        strategy = "longest_first" if truncation is True else str(truncation)
        scores = self.probabilities(texts, batch_size, function, strategy)
        results: list[Any] = [ranked_labels(self.model.labels, row, top_k) for row in scores]  # type: ignore[arg-type]
        if isinstance(text, str):  # transformers wraps a string's labels in a list unless top_k was
            return results[0] if per_call or not given else [results[0]]  # given to the call
        if isinstance(text, dict):  # a pair's labels, never wrapped; its best label alone by default
            return results[0] if given else results[0][0]
        return results if given else [r[0] for r in results]  # transformers' shapes, both

    def probabilities(
        self,
        texts: list[Item],
        batch_size: int | None = None,
        function: str | None = None,
        truncation: str = "longest_first",
    ) -> torch.Tensor:
        """(len(texts), labels) scores: the logits through `function`, or the pipeline's (None);
        an item may be a (text, text_pair) pair, cut by `truncation`."""
        size = batch_size or self.batch_size
        fn = function or self.function
        return label_probabilities(self.model, self.tokenizer, texts, size, fn, truncation)
