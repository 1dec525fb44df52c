"""The SQuAD paper's sliding-window baseline (inference/qa_baseline.py), on cases worked by hand,
and `eval-qa --baseline sliding-window`. IC(w) = log(1 + 1/count(w)); every word below occurs
once in its context unless said, so each word of S found in a window adds log 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge import eval_qa
from lmforge.errors import LmforgeError
from lmforge.inference.qa_baseline import sliding_window_answer, words


def test_words_keep_offsets_sentences_and_punctuation_runs() -> None:
    text = "Mrs. Dashwood's son, he said.\nNext line"
    got = [(w.text, text[w.start : w.end], w.sentence, w.chunk) for w in words(text)]
    # "Mrs." ends nothing; the comma ends a run (chunk), the full stop a sentence, the line end too
    assert got == [
        ("mrs", "Mrs", 0, 0), ("dashwood's", "Dashwood's", 0, 0), ("son", "son", 0, 0),
        ("he", "he", 0, 1), ("said", "said", 0, 1), ("next", "Next", 1, 3), ("line", "line", 1, 3),
    ]  # fmt: skip


def test_the_overlap_picks_the_sentence_and_leaves_the_question_words_out() -> None:
    # sentence 1 keeps "hugo" (overlap 1) for the candidates without it; sentence 0 overlaps nothing.
    # Among lives / lives in / lives in Fenwick / in / in Fenwick / Fenwick, "lives in Fenwick"
    # (|S| = 4 + 3 = 7) has the window "ada ... fenwick" holding hugo, lives, in, fenwick: 4 log 2;
    # "in Fenwick" (|S| = 6) reaches 3 log 2 at best.
    assert sliding_window_answer("Where does Hugo live?", "Ada sells wine. Hugo lives in Fenwick.") == (
        "lives in Fenwick"
    )
    # one word at most: lives, in and Fenwick each score hugo + itself = 2 log 2; the earliest wins
    assert (
        sliding_window_answer("Where does Hugo live?", "Ada sells wine. Hugo lives in Fenwick.", 1) == "lives"
    )


def test_bigrams_count_and_a_candidate_never_crosses_punctuation() -> None:
    # "Tom" leaves sold, the, blue, boat: unigrams sold/the/boat + bigram (sold, the) = 4;
    # "Ann" leaves sold, the, red, boat: 4 unigrams + (sold, the), (the, red), (red, boat) = 7,
    # and every other candidate of that sentence removes a matched word: only "Ann" keeps 7.
    assert (
        sliding_window_answer("Who sold the red boat?", "Tom sold the blue boat. Ann sold the red boat.")
        == "Ann"
    )
    # "lives in Fenwick by the sea" would win without the comma; with it, "lives in Fenwick" and
    # "by the sea" both find hugo + 3 words in the window from the start (|S| = 7): the earliest wins
    context = "Hugo lives in Fenwick, by the sea. Ada sells wine."
    assert sliding_window_answer("Where does Hugo live?", context, max_words=8) == "lives in Fenwick"


def test_the_window_weighs_words_by_rarity_and_ties_go_to_the_earliest() -> None:
    # both sentences keep overlap 1 ("ann") for met / met X / X. ann and met occur twice (IC
    # log 1.5 = 0.405), Bob and Cal once (log 2 = 0.693). "met Bob" and "met Cal" (|S| = 6, the
    # whole context) both score 4 x 0.405 + 0.693 = 2.31; "met" 4 x 0.405 = 1.62 (|S| = 5);
    # "Bob" 0.405 + 0.693 + 0.405 = 1.50. The tie goes to the earliest start: "met Bob".
    context = "Ann met Bob. Ann met Cal."
    assert sliding_window_answer("Who did Ann meet?", context) == "met Bob"


@pytest.mark.parametrize(("question", "context", "message"), [
    (" ", "Ada.", "the question is empty"), ("Who?", "", "the context is empty"),
])  # fmt: skip
def test_empty_input_is_one_line(question: str, context: str, message: str) -> None:
    with pytest.raises(LmforgeError, match=message):
        sliding_window_answer(question, context)


def squad(path: Path) -> Path:
    paragraphs = [
        ("Tom sold the blue boat. Ann sold the red boat.", "Who sold the red boat?", "Ann"),
        ("Ada sells wine. Hugo lives in Fenwick.", "Where does Hugo live?", "Fenwick"),
    ]
    data = [{"title": f"t{n}", "paragraphs": [{"context": c, "qas": [
        {"id": f"q{n}", "question": q, "answers": [{"text": a, "answer_start": c.index(a)}]}]}]}
        for n, (c, q, a) in enumerate(paragraphs)]  # fmt: skip
    path.write_text(json.dumps({"version": "1.1", "data": data}))
    return path


def test_eval_qa_scores_the_baseline(tmp_path: Path) -> None:
    # q0: "Ann" = gold (EM 1, F1 1); q1: "lives in Fenwick" vs "Fenwick": EM 0, F1 2 (1/3) / (4/3) = 0.5
    data = squad(tmp_path / "squad.json")
    scores = eval_qa(data=data, baseline="sliding-window", out=tmp_path / "predictions.json")
    assert (scores["exact"], scores["f1"], scores["total"]) == (50.0, 75.0, 2)
    assert scores["model"] == "sliding-window baseline"
    assert json.loads((tmp_path / "predictions.json").read_text()) == {"q0": "Ann", "q1": "lives in Fenwick"}
    with pytest.raises(LmforgeError, match="needs a model or --baseline sliding-window, not both"):
        eval_qa(tmp_path, data, baseline="sliding-window")
    with pytest.raises(LmforgeError, match="needs a model or --baseline sliding-window$"):
        eval_qa(data=data)
    with pytest.raises(LmforgeError, match="baseline='bm25': not one of sliding-window"):
        eval_qa(data=data, baseline="bm25")


def test_eval_qa_cli_runs_the_baseline_without_a_model(tmp_path: Path) -> None:
    data = squad(tmp_path / "squad.json")
    result = subprocess.run(
        [sys.executable, "-m", "lmforge", "eval-qa", "--baseline", "sliding-window", "--data", str(data)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["f1"] == 75.0
