"""`lmforge ask`: answer a question from a folder of documents with an instruct model, or with an
extractive question-answering model.

The documents are indexed into passages and searched with BM25 (inference/retrieval.py; the index
is saved beside them and reused), or with `retriever="hybrid"` by BM25 and sentence embeddings
together (inference/embeddings.py). The best `k` passages go, numbered, into one user message in
the model's own chat template (inference/chat.py), with the question; the model answers greedily.
The reply comes back with the passages it was given (source, offsets, retrieval score), each marked
`cited` when the answer (or what follows its last colon, as in "The answer is: Ahab.") appears in
it word for word (after SQuAD's normalisation: case, punctuation, articles): a check anyone can
repeat. Passages that do not fit the model's context with the answer's tokens are left out,
lowest-ranked first; a question that leaves no room for the answer's tokens is refused. When no
passage is given, the result's `note` says why. An extractive model (model/span.py) reads the
passages together as the question-answering pipeline reads one long context and answers with its
best span (`read_spans`): it can only copy, so it never answers without a passage. With
`handle_impossible_answer` a model trained on unanswerable questions (SQuAD v2.0) may decline:
its null answer, where that outscores every span in every window, is "" and a `note`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import torch

from lmforge.errors import LmforgeError, counted
from lmforge.formats.directory import load_model, resolve_model_dir
from lmforge.inference.autotune import to_inference_dtype
from lmforge.inference.chat import ChatSpec
from lmforge.inference.embeddings import Embedder
from lmforge.inference.generate import generate_ids
from lmforge.inference.options import check_options, check_some_new_tokens
from lmforge.inference.qa import QAOptions, answer_questions
from lmforge.inference.retrieval import Passage, PassageIndex
from lmforge.inference.squad_metric import normalize_answer
from lmforge.model.kinds import require_decoder
from lmforge.model.span import SpanModel
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


CITATION = re.compile(r"\[\d+(?:\s*[,-]\s*\d+)*\]")  # "[1]", "[1, 3]": the passages' numbers in a reply


def cited(answer: str, passages: list[Passage]) -> list[bool]:
    """Whether each passage holds the answer word for word (SQuAD-normalised, passage numbers such
    as "[1]" left out), or what follows a lead-in's colon ("The answer is: Ahab."): a colon and a
    space after at most 8 words, and 3 characters or more after it (not the "30" of "12:30", nor
    "no"); all False for an empty answer."""
    answer = CITATION.sub(" ", answer)
    spans = {normalize_answer(answer)}
    head, colon, tail = answer.rpartition(": ")
    if colon and len(head.split()) <= 8 and len(normalize_answer(tail)) >= 3:
        spans.add(normalize_answer(tail))
    spans -= {""}
    texts = [normalize_answer(CITATION.sub(" ", p.text)) for p in passages]  # "see note [1]" alike
    return [any(f" {s} " in f" {t} " for s in spans) for t in texts]


RETRIEVERS = ("bm25", "hybrid")
JOIN = "\n\n"  # between passages read by an extractive model as one context
CANDIDATES = 20  # spans considered, best first, for one that lies within a single passage


def read_spans(
    net: SpanModel,
    tokenizer: Tokenizer,
    question: str,
    passages: list[Passage],
    handle_impossible_answer: bool = False,
) -> tuple[str, float | None, bool]:
    """(answer, score, declined): an extractive model's best span in the passages, read as one
    context (joined by a blank line) as `pipeline("question-answering")` reads a long document:
    windows, their spans' scores (p_start * p_end) compared across them; when its best runs from one
    passage into the next, the best of its top CANDIDATES that lies within one passage. ("", None,
    False) with no passage or no such span. With handle_impossible_answer the null answer competes
    as the pipeline scores it (p_start * p_end of [CLS], its smallest over the windows), and when
    it wins the model declines: ("", its score, True).
    On the held-out set this answered more questions than reading each passage alone and taking
    the best of their spans (benchmarks/README.md, `lmforge ask`)."""
    if not passages:
        return "", None, False
    bounds, at = [], 0  # each passage's (start, end) in the joined text
    for passage in passages:
        bounds.append((at, at + len(passage.text)))
        at += len(passage.text) + len(JOIN)
    context = JOIN.join(p.text for p in passages)
    # the pipeline's own best first (top_k changes which spans' scores add up); more only if it crosses
    for top_k in (1, CANDIDATES):
        options = QAOptions(top_k=top_k, handle_impossible_answer=handle_impossible_answer)
        [answers] = answer_questions(net, tokenizer, [(question, context)], options)
        for answer in answers:
            if answer["start"] == answer["end"] == 0 and not answer["answer"]:  # the null answer
                return "", answer["score"], True
            if any(start <= answer["start"] and answer["end"] <= end for start, end in bounds):
                return answer["answer"].strip(), answer["score"], False
    return "", None, False


def ask(
    model: str | Path,
    question: str,
    docs: str | Path | list[str | Path],
    k: int = 3,
    index: str | Path | None = None,
    passage_words: int = 200,
    text_field: str = "text",
    max_new_tokens: int | None = None,
    system: str | None = None,
    dtype: str = "auto",
    quiet: bool = False,
    handle_impossible_answer: bool = False,
    retriever: str = "bm25",
    embedder: str | Path | None = None,
) -> dict[str, Any]:
    """Answer `question` from the documents in `docs` (files, folders, globs as `lmforge prep`
    reads them): BM25 finds the best `k` passages of at most `passage_words` words, and the model
    reads them. An instruct model reads them in its chat template and answers greedily (at most
    `max_new_tokens`, default 64, after an optional `system` prompt); an extractive
    question-answering model (a `data.task = "qa"` run, an HF ...ForQuestionAnswering) copies the
    best-scoring span of them (`read_spans`) in fp32, and takes neither option; with
    `handle_impossible_answer` it may decline (answer "", and `note` says so) where its null
    answer outscores every span, as a SQuAD v2.0 model does for an unanswerable question.
    `retriever="hybrid"` ranks the passages by BM25 and by sentence embeddings (`embedder`, an
    encoder directory; default all-MiniLM-L6-v2) and fuses the two rankings (the passages'
    `score` is then the fused one); the embeddings are kept in the index.
    The index is kept in `index` (default: DOCS.lmforge-index beside DOCS), reused while the
    documents are unchanged and updated when one changes. Returns the answer, the reader
    (`instruct` or `extractive`) and the span's `score` (None for an instruct model), the passages
    given (source, character offsets, BM25 score, whether the answer appears in it), what indexing
    did, and `note`: why no passage was given (None when one was). A question that, even without
    passages, leaves no room for `max_new_tokens` in the model's context is refused."""
    check_options(dtype=dtype)
    if isinstance(docs, list | tuple):  # --docs given more than once: the last alone was read
        if len(docs) != 1:
            raise LmforgeError(
                f"docs: {len(docs)} given; ask indexes one file, folder or glob (put the documents in"
                " one folder, or give a glob)"
            )
        docs = docs[0]
    if max_new_tokens is not None:
        check_some_new_tokens(max_new_tokens, "the answer")
    if not question.strip():
        raise LmforgeError("the question is empty")
    if k < 1:
        raise LmforgeError(f"k={k} must be >= 1")
    if retriever not in RETRIEVERS:
        raise LmforgeError(f"retriever={retriever!r} must be one of {', '.join(RETRIEVERS)}")
    if embedder is not None and retriever != "hybrid":
        raise LmforgeError("--embedder is for --retriever hybrid: BM25 needs no model")
    if not isinstance(handle_impossible_answer, bool):
        raise LmforgeError(f"handle_impossible_answer={handle_impossible_answer!r}: must be True or False")
    directory = resolve_model_dir(model)
    net, tokenizer = load_model(directory)
    if handle_impossible_answer and not isinstance(net, SpanModel):
        raise LmforgeError(
            f"{model}: --handle-impossible-answer lets an extractive question-answering model decline;"
            " an instruct model says so in its own words"
        )
    embed = Embedder(embedder) if retriever == "hybrid" else None  # its errors before any indexing
    if isinstance(net, SpanModel):
        if max_new_tokens is not None or system is not None or dtype == "bf16":
            raise LmforgeError(
                f"{model}: an extractive question-answering model copies its answer from a passage, in"
                " fp32: --max-new-tokens, --system and --dtype bf16 are for instruct models"
            )
        store = PassageIndex.build(docs, index, passage_words, text_field, quiet)  # checks its arguments
        say_index(store, quiet)
        found = search(store, question, k, embed)
        passages = [p for p, _ in found]
        answer, score, declined = read_spans(
            net.eval(), tokenizer, question, passages, handle_impossible_answer
        )
        note = None if found else "no passage shares a word with the question: nothing to copy an answer from"
        if declined:
            note = (
                f"the model declined: its null answer (score {score:.3g}) outscored every span of the"
                f" {len(found)} passages"
            )
        return answered(answer, "extractive", score, found, len(found), note, store, retriever)
    net = require_decoder(net, model, "so it cannot answer")
    max_new_tokens = 64 if max_new_tokens is None else max_new_tokens
    spec = ChatSpec.read(directory, tokenizer)
    context = net.config.block_size
    spec.require_template(
        "so it cannot answer: lmforge ask needs an instruct model or an extractive question-answering one"
    )  # before indexing
    store = PassageIndex.build(docs, index, passage_words, text_field, quiet)  # checks its arguments
    check_room(prompt_ids(spec, tokenizer, question, [], system), context, max_new_tokens)
    say_index(store, quiet)
    found = search(store, question, k, embed)
    limit = context - max_new_tokens
    prompt, given_passages = fit_prompt(spec, tokenizer, question, [p for p, _ in found], limit, system)
    note = None
    if not found:
        note = "no passage shares a word with the question: answered without documents"
    elif not given_passages:
        note = (
            f"no passage fits in the {limit - len(prompt)} tokens of the model's context left after the"
            f" question and --max-new-tokens {max_new_tokens}: answered without documents"
        )
    net = to_inference_dtype(net, dtype)[0]
    with torch.inference_mode():
        new = generate_ids(net, [prompt], max_new_tokens, temperature=0.0, eos_id=spec.stops)[0]
    answer = tokenizer.decode(new).strip()
    return answered(answer, "instruct", None, found, len(given_passages), note, store, retriever)


def search(
    store: PassageIndex, question: str, k: int, embedder: Embedder | None
) -> list[tuple[Passage, float]]:
    """The k best passages: by BM25, or with an embedder by BM25 and embeddings fused."""
    return store.search(question, k) if embedder is None else store.search_hybrid(question, k, embedder)


def say_index(store: PassageIndex, quiet: bool) -> None:
    """What indexing did, on stderr (once the question is known to be answerable)."""
    if not quiet:
        st = store.stats
        counts = f"{st['read']} read, {st['reused']} unchanged, {st['removed']} removed"
        print(
            f"lmforge: index {store.directory}: {counted(len(store.passages), 'passage')} ({counts})",
            file=sys.stderr,
        )


def answered(
    answer: str,
    reader: str,
    score: float | None,
    found: list[tuple[Passage, float]],
    given: int,
    note: str | None,
    store: PassageIndex,
    retriever: str = "bm25",
) -> dict[str, Any]:
    """ask's result: the answer and the passages the reader saw (the first `given` found; the rest
    did not fit), each marked where it holds the answer."""
    marks = cited(answer, [p for p, _ in found[:given]])
    passages = [
        {
            "n": n,
            "source": p.source,
            "start": p.start,
            "end": p.end,
            "score": bm25,
            "cited": mark,
            "text": p.text,
        }
        for n, ((p, bm25), mark) in enumerate(zip(found, marks, strict=False), start=1)
    ]
    return {
        "answer": answer,
        "reader": reader,
        "score": score,
        "passages": passages,
        "note": note,
        "retriever": retriever,
        "index": str(store.directory),
        "indexing": store.stats,
    }
