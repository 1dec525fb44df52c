"""`lmforge ask`: answer a question from a folder of documents with an instruct model.

The documents are indexed into passages and searched with BM25 (inference/retrieval.py; the index
is saved beside them and reused). The best `k` passages go, numbered, into one user message in
the model's own chat template (inference/chat.py), with the question; the model answers greedily.
The reply comes back with the passages it was given (source, offsets, BM25 score), each marked
`cited` when the answer (or what follows its last colon, as in "The answer is: Ahab.") appears in
it word for word (after SQuAD's normalisation: case, punctuation, articles): a check anyone can
repeat. Passages that do not fit the model's context with the answer's tokens are left out,
lowest-ranked first; a question that leaves no room for the answer's tokens is refused. When no
passage is given, the result's `note` says why.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model, resolve_model_dir
from lmforge.inference.autotune import to_inference_dtype
from lmforge.inference.chat import ChatSpec
from lmforge.inference.generate import generate_ids
from lmforge.inference.options import check_options
from lmforge.inference.retrieval import Passage, PassageIndex
from lmforge.inference.squad_metric import normalize_answer
from lmforge.model.kinds import require_decoder
from lmforge.tokenization.tokenizer import Tokenizer

OPEN_BOOK = (
    "Answer the question using the passages below. Reply with the answer only: a few words copied"
    " from the passages.\n\n{passages}\n\nQuestion: {question}"
)
CLOSED_BOOK = "Answer the question. Reply with the answer only: a few words.\n\nQuestion: {question}"


def open_book_message(question: str, passages: list[Passage]) -> str:
    """The user message: the numbered passages, then the question."""
    shown = "\n\n".join(f"[{n}] {p.text}" for n, p in enumerate(passages, start=1))
    return OPEN_BOOK.format(passages=shown, question=question)


def closed_book_message(question: str) -> str:
    return CLOSED_BOOK.format(question=question)


def prompt_ids(
    spec: ChatSpec, tokenizer: Tokenizer, question: str, passages: list[Passage], system: str | None
) -> list[int]:
    """The prompt's token ids: the question with these passages (or none) in the chat template."""
    start = [{"role": "system", "content": system}] if system is not None else []
    text = open_book_message(question, passages) if passages else closed_book_message(question)
    return tokenizer.encode(spec.render([*start, {"role": "user", "content": text}]))


def check_room(closed_book: list[int], context: int, max_new_tokens: int) -> None:
    """Refuse a question that, without any passage, leaves no room for max_new_tokens."""
    room = context - max_new_tokens
    if len(closed_book) > room:
        left = f"leaves {room}" if room > 0 else "leaves none"
        raise LmforgeError(
            f"the question takes {len(closed_book)} tokens in the chat template, but the model's context"
            f" of {context} {left} after --max-new-tokens {max_new_tokens}: shorten the question or lower"
            " --max-new-tokens"
        )


def fit_prompt(
    spec: ChatSpec,
    tokenizer: Tokenizer,
    question: str,
    passages: list[Passage],
    limit: int,
    system: str | None,
) -> tuple[list[int], list[Passage]]:
    """The prompt's token ids with as many of the best passages as fit in `limit` tokens (the
    question alone when none does)."""
    while True:
        ids = prompt_ids(spec, tokenizer, question, passages, system)
        if len(ids) <= limit or not passages:
            return ids, passages
        passages = passages[:-1]


def cited(answer: str, passages: list[Passage]) -> list[bool]:
    """Whether each passage holds the answer word for word (SQuAD-normalised), or what follows its
    last colon ("The answer is: Ahab."); all False for an empty answer."""
    spans = {normalize_answer(answer), normalize_answer(answer.rsplit(":", 1)[-1])} - {""}
    return [any(f" {s} " in f" {normalize_answer(p.text)} " for s in spans) for p in passages]


def ask(
    model: str | Path,
    question: str,
    docs: str | Path,
    k: int = 3,
    index: str | Path | None = None,
    passage_words: int = 200,
    text_field: str = "text",
    max_new_tokens: int = 64,
    system: str | None = None,
    dtype: str = "auto",
    quiet: bool = False,
) -> dict[str, Any]:
    """Answer `question` from the documents in `docs` (files, folders, globs as `lmforge prep`
    reads them) with an instruct model: BM25 finds the best `k` passages of at most
    `passage_words` words, the model reads them in its chat template and answers greedily.
    The index is kept in `index` (default: DOCS.lmforge-index beside DOCS), reused while the
    documents are unchanged and updated when one changes. Returns the answer, the passages given
    (source, character offsets, BM25 score, whether the answer appears in it), what indexing did,
    and `note`: why no passage was given (None when one was). A question that, even without
    passages, leaves no room for `max_new_tokens` in the model's context is refused."""
    check_options(max_new_tokens=max_new_tokens, dtype=dtype)
    if max_new_tokens < 1:
        raise LmforgeError(f"max_new_tokens={max_new_tokens} must be >= 1: the answer is what is generated")
    if not question.strip():
        raise LmforgeError("the question is empty")
    if k < 1:
        raise LmforgeError(f"k={k} must be >= 1")
    directory = resolve_model_dir(model)
    net, tokenizer = load_model(directory)
    net = require_decoder(net, model, "so it cannot answer")
    spec = ChatSpec.read(directory, tokenizer)
    context = net.config.block_size
    spec.require_template("so it cannot answer: lmforge ask needs an instruct model")  # before indexing
    store = PassageIndex.build(docs, index, passage_words, text_field, quiet)  # checks its arguments
    check_room(prompt_ids(spec, tokenizer, question, [], system), context, max_new_tokens)
    if not quiet:
        st = store.stats
        counts = f"{st['read']} read, {st['reused']} unchanged, {st['removed']} removed"
        print(f"lmforge: index {store.directory}: {len(store.passages)} passages ({counts})", file=sys.stderr)
    found = store.search(question, k)
    limit = context - max_new_tokens
    prompt, given = fit_prompt(spec, tokenizer, question, [p for p, _ in found], limit, system)
    note = None
    if not found:
        note = "no passage shares a word with the question: answered without documents"
    elif not given:
        note = (
            f"no passage fits in the {limit - len(prompt)} tokens of the model's context left after the"
            f" question and --max-new-tokens {max_new_tokens}: answered without documents"
        )
    net = to_inference_dtype(net, dtype)[0]
    with torch.inference_mode():
        new = generate_ids(net, [prompt], max_new_tokens, temperature=0.0, eos_id=spec.stops)[0]
    answer = tokenizer.decode(new).strip()
    marks = cited(answer, given)
    passages = [
        {
            "n": n,
            "source": p.source,
            "start": p.start,
            "end": p.end,
            "score": score,
            "cited": mark,
            "text": p.text,
        }
        for n, ((p, score), mark) in enumerate(zip(found, marks, strict=False), start=1)
    ]
    return {
        "answer": answer,
        "passages": passages,
        "note": note,
        "index": str(store.directory),
        "indexing": store.stats,
    }
