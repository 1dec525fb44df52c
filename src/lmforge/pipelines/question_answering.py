"""The question-answering pipeline: transformers' `pipeline("question-answering")` call and output
over a span model (an imported BertForQuestionAnswering, or a `data.task = "qa"` run).

    >>> qa = pipeline("question-answering", model="runs/demo-qa")
    >>> qa(question="Who kept the crown?", context="The old king kept his crown in a tower.")
    {'score': 0.93, 'start': 4, 'end': 12, 'answer': 'old king'}

Inputs, as transformers takes them: `question=` and `context=` (strings, a list of questions on one
context, or two lists of equal length), a dict {"question", "context"} or a list of dicts, or two
strings, or a generator or dataset of dicts (an iterator of results: streaming.py). One example
gives its result, several give a list; a result is the best answer's dict, or
a list of dicts when there are several (top_k > 1). Options (at construction as defaults, or per
call): top_k, max_answer_len, max_seq_len, doc_stride, handle_impossible_answer, align_to_words,
batch_size; inference/qa.py says what each does.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model
from lmforge.inference.options import FIRST_ITEM, check_keywords
from lmforge.inference.qa import QAOptions, answer_questions, check_qa_options, window_sizes
from lmforge.model.span import SpanModel
from lmforge.pipelines.streaming import streams

OPTIONS = [f.name for f in dataclasses.fields(QAOptions)]


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise LmforgeError(f"{what} must be a string, not {type(value).__name__}")
    if not value.strip():
        raise LmforgeError(f"{what} is empty")
    return value


def read_inputs(args: tuple[Any, ...], question: Any, context: Any) -> tuple[list[tuple[str, str]], bool]:
    """((question, context) pairs, whether one example was given), from any of transformers' forms."""
    if args and (question is not None or context is not None):
        raise LmforgeError("give the inputs either as question=/context= or positionally, not both")
    if len(args) == 2 and all(isinstance(a, str) for a in args):
        question, context = args
    elif len(args) == 1:
        if not isinstance(args[0], list | tuple | dict):  # generators and datasets: streaming.py
            raise LmforgeError(
                f"the input is a {type(args[0]).__name__}: give a dict, a list of dicts, a generator or"
                " dataset of dicts, or question= and context="
            )
        items = args[0] if isinstance(args[0], list | tuple) else [args[0]]
        pairs = []
        for n, item in enumerate(items, FIRST_ITEM.get()):
            if not isinstance(item, dict) or "question" not in item or "context" not in item:
                raise LmforgeError(f"input {n} must be a dict with 'question' and 'context'")
            pairs.append((_text(item["question"], f"question {n}"), _text(item["context"], f"context {n}")))
        return pairs, len(pairs) == 1
    elif args:
        raise LmforgeError("give question= and context= (or a dict, a list of dicts, or two strings)")
    if question is None or context is None:
        raise LmforgeError("question-answering needs both question= and context=")
    if isinstance(question, str) and isinstance(context, str):
        return [(_text(question, "question"), _text(context, "context"))], True
    if isinstance(question, str) and not isinstance(context, list | tuple):
        raise LmforgeError(f"context must be a string or a list of strings, not {type(context).__name__}")
    if isinstance(question, str):  # and a list of contexts: transformers refuses this too
        raise LmforgeError("context is a list: give question as a list of the same length (one per context)")
    if not isinstance(question, list | tuple):
        raise LmforgeError(f"question must be a string or a list of strings, not {type(question).__name__}")
    if isinstance(context, str):
        context = [context] * len(question)
    if not isinstance(context, list | tuple) or len(context) != len(question):
        raise LmforgeError("question and context must be lists of the same length (or one context)")
    pairs = [
        (_text(q, f"question {n}"), _text(c, f"context {n}"))
        for n, (q, c) in enumerate(zip(question, context, strict=True), 1)
    ]
    return pairs, len(pairs) == 1


class QuestionAnsweringPipeline:
    def __init__(
        self,
        model: str | Path,
        top_k: int = 1,
        max_answer_len: int = 15,
        max_seq_len: int | None = None,
        doc_stride: int | None = None,
        handle_impossible_answer: bool = False,
        align_to_words: bool = True,
        batch_size: int = 32,
    ) -> None:
        self.defaults = QAOptions(
            top_k,
            max_answer_len,
            handle_impossible_answer,
            max_seq_len,
            doc_stride,
            align_to_words,
            batch_size,
        )
        check_qa_options(self.defaults)
        self.model, self.tokenizer = load_model(model)
        if not isinstance(self.model, SpanModel):
            raise LmforgeError(
                f"{model}: not a question-answering model (import a BertForQuestionAnswering, or train"
                " one with data.task = 'qa')"
            )
        self._check_sizes(self.defaults)

    def _check_sizes(self, options: QAOptions) -> None:
        window_sizes(self.model, options)  # raises for sizes the model cannot run

    @streams(  # a generator or dataset of dicts: an iterator of results
        lambda pipe: pipe.defaults.batch_size,
        listed=lambda pipe, items, **options: pipe.answers(items, **options),
    )
    def __call__(
        self, *args: Any, question: Any = None, context: Any = None, **options: Any
    ) -> dict[str, Any] | list[Any]:
        """Answers, in transformers' shapes (see the module doc)."""
        opts = self._options(options)
        pairs, single = read_inputs(args, question, context)
        results = self._answer(pairs, opts)
        return results[0] if single else results

    def answers(self, items: list[Any], **options: Any) -> list[Any]:
        """Each {"question", "context"} dict's result, in a list even for one (a stream's batch)."""
        opts = self._options(options)
        return self._answer(read_inputs((items,), None, None)[0], opts)

    def _options(self, options: dict[str, Any]) -> QAOptions:
        check_keywords(options, ["question", "context", *OPTIONS], "question-answering")
        opts = dataclasses.replace(self.defaults, **options)
        check_qa_options(opts)
        self._check_sizes(opts)
        return opts

    def _answer(self, pairs: list[tuple[str, str]], opts: QAOptions) -> list[Any]:
        """Each pair's result: the best answer's dict, or a list of top_k dicts."""
        return [
            answers[0] if len(answers) == 1 else answers
            for answers in answer_questions(self.model, self.tokenizer, pairs, opts)
        ]
