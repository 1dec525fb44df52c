"""The sliding-window word-overlap baseline of the SQuAD paper (Rajpurkar et al. 2016, section 5).

It answers with no model and no training, from word overlap alone:

1. candidates: spans of the context (see below);
2. overlap: for each candidate, the unigrams + bigrams shared by the question and the candidate's
   sentence *without the candidate* (lower-cased words; a bigram does not bridge the gap the
   candidate leaves); only the candidates with the largest overlap stay;
3. sliding window (Richardson et al. 2013, MCTest, algorithm "SW"): S = the question's words and
   the candidate's; a window of |S| words slides over the context, scoring the sum of
   IC(w) = log(1 + 1/count(w in context)) over its words that are in S; a candidate scores its
   best window. The best candidate is the answer (ties: the earliest, then the shortest).

What differs from the paper, and why: its candidates are the constituents of Stanford CoreNLP's
parse, a parser lmforge does not have. Here a candidate is any run of 1..`max_words` words that
crosses no punctuation and no sentence or line end; punctuation-delimited runs stand in for
constituents. The paper's baseline never abstains (SQuAD v1.1), nor does this one: on a v2.0 file
every unanswerable question scores 0. Words are `\\w+` runs (an apostrophe inside a word keeps it
whole); everything else but spaces is punctuation, and a full stop ends a sentence unless it
follows a title (Mr., Mrs., Dr., St. ...).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from lmforge.errors import LmforgeError

BASELINES = ("sliding-window",)
DEFAULT_MAX_WORDS = 4  # chosen on data/qa-train.json.xz (docs/question-answering.md#baseline)
_TOKEN = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]|\n")
_SENTENCE_END = frozenset(".!?\n")
# a full stop after these ends neither a sentence nor a chunk ("Mrs. Dashwood")
_ABBREVIATIONS = frozenset(
    ["mr", "mrs", "ms", "messrs", "dr", "st", "rev", "col", "capt", "gen", "lt", "sr", "jr"]
)


@dataclass(frozen=True)
class Word:
    text: str  # lower-cased
    start: int  # character offsets into the context
    end: int
    sentence: int  # index of its sentence
    chunk: int  # index of its punctuation-delimited run: a candidate stays inside one


def words(text: str) -> list[Word]:
    """The words of `text` with offsets, sentence and chunk numbers (punctuation is dropped)."""
    out: list[Word] = []
    sentence = chunk = 0
    for m in _TOKEN.finditer(text):
        token = m.group()
        if token[0].isalnum() or token[0] == "_":
            out.append(Word(token.lower(), m.start(), m.end(), sentence, chunk))
            continue
        if token == "." and out and out[-1].end == m.start() and out[-1].text in _ABBREVIATIONS:
            continue
        chunk += 1  # any other punctuation ends a chunk
        if token in _SENTENCE_END and out and out[-1].sentence == sentence:
            sentence += 1
    return out


def _grams(tokens: list[str]) -> set[tuple[str, ...]]:
    """Unigrams and bigrams of a run of words."""
    return {(t,) for t in tokens} | set(zip(tokens, tokens[1:], strict=False))


def sliding_window_answer(question: str, context: str, max_words: int = DEFAULT_MAX_WORDS) -> str:
    """The baseline's answer to `question`: a span of `context` ("" when the context has no word)."""
    for name, text in (("question", question), ("context", context)):
        if not text.strip():
            raise LmforgeError(f"sliding-window baseline: the {name} is empty")
    if max_words < 1:
        raise LmforgeError(f"max_words={max_words}: must be >= 1")
    passage = words(context)
    if not passage:
        return ""
    q_words = [w.text for w in words(question)]
    q_grams = _grams(q_words)
    texts = [w.text for w in passage]
    # the candidates of the largest overlap, as (start, end): [start, end) indexes `passage`
    sentences: dict[int, list[int]] = {}
    for i, w in enumerate(passage):
        sentences.setdefault(w.sentence, []).append(i)
    best_overlap, kept = -1, []
    for members in sentences.values():
        first, last = members[0], members[-1] + 1
        # the sentence's question grams by position: a unigram at i, a bigram at (i, i + 1)
        unigram = {i: (texts[i],) for i in range(first, last) if (texts[i],) in q_grams}
        bigram = {i: g for i in range(first, last - 1) if (g := (texts[i], texts[i + 1])) in q_grams}
        counts = Counter([*unigram.values(), *bigram.values()])
        for start in range(first, last):
            for end in range(start + 1, min(start + max_words, last) + 1):
                if passage[end - 1].chunk != passage[start].chunk:
                    break
                # the grams of the sentence left and right of the candidate: all but the unigrams in
                # it and the bigrams touching it (one a side bridges no gap); O(span), not O(sentence):
                # an unpunctuated context of 20,000 words took minutes
                gone = Counter(unigram[i] for i in range(start, end) if i in unigram)
                gone.update(bigram[i] for i in range(start - 1, end) if i in bigram)
                overlap = len(counts) - sum(1 for g, n in gone.items() if n == counts[g])
                if overlap > best_overlap:
                    best_overlap, kept = overlap, []
                if overlap == best_overlap:
                    kept.append((start, end))
    # the sliding window over the whole context: (n,) IC of each word, and the question's share
    counts = Counter(texts)
    ic = np.array([math.log(1.0 + 1.0 / counts[t]) for t in texts])
    q_set = set(q_words)
    base = np.where(np.array([t in q_set for t in texts]), ic, 0.0)  # (n,) the question's words
    where: dict[str, list[int]] = {}
    for i, t in enumerate(texts):
        where.setdefault(t, []).append(i)
    best_score, answer = -1.0, kept[0]
    for start, end in sorted(kept, key=lambda span: (span[0], span[1] - span[0])):
        candidate = set(texts[start:end])
        scores = base.copy()  # (n,) words in S: the question's and the candidate's
        for word in candidate - q_set:
            scores[where[word]] = ic[where[word]]
        width = min(len(q_set | candidate), len(scores))  # |S|
        sums = np.convolve(scores, np.ones(width), mode="valid")  # (n - width + 1,) window sums
        score = float(sums.max())
        if score > best_score + 1e-12:
            best_score, answer = score, (start, end)
    return context[passage[answer[0]].start : passage[answer[1] - 1].end]
