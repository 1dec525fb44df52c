"""`lmforge eval-qa` refuses what it cannot score honestly in one line, before answering anything:
window sizes the model cannot run (the pipeline's own check), two questions with one id, and a
SQuAD v1.1 question without a gold answer; with a model and with --baseline alike."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from lmforge import eval_qa
from lmforge.errors import LmforgeError
from lmforge.inference import qa_eval

FIXTURE = Path(__file__).parent / "fixtures" / "bert-qa"  # a tiny BertForQuestionAnswering, context 64
CONTEXT = "Hugo lives in Fenwick. Ada sells wine at the market."


def question(qid: str, text: str, answer: str | None) -> dict[str, Any]:
    answers = [] if answer is None else [{"text": answer, "answer_start": CONTEXT.index(answer)}]
    return {"id": qid, "question": text, "answers": answers}


def write(path: Path, version: str, *qas: dict[str, Any]) -> Path:
    data = [{"title": "t", "paragraphs": [{"context": CONTEXT, "qas": list(qas)}]}]
    path.write_text(json.dumps({"version": version, "data": data}))
    return path


def no_answering(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make answering (model or baseline) fail the test: the errors must come before it."""

    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("eval-qa answered questions before refusing its input")

    monkeypatch.setattr(qa_eval, "answer_questions", fail)
    monkeypatch.setattr(qa_eval, "sliding_window_answer", fail)


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return write(
        tmp_path / "good.json",
        "1.1",
        question("a", "Where does Hugo live?", "Fenwick"),
        question("b", "Who sells wine?", "Ada"),
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_seq_len": 65}, "max_seq_len=65: longer than the model's context of 64 tokens"),
        ({"max_seq_len": 600}, "max_seq_len=600: longer than the model's context of 64 tokens"),
        ({"max_seq_len": 32, "doc_stride": 40}, "doc_stride=40 is larger than max_seq_len=32"),
    ],
)
def test_window_sizes_the_model_cannot_run_are_the_pipelines_one_line(
    good: Path, monkeypatch: pytest.MonkeyPatch, options: dict[str, int], message: str
) -> None:
    no_answering(monkeypatch)  # before: a traceback from the encoder, mid-run
    with pytest.raises(LmforgeError, match=f"^{re.escape(message)}$"):
        eval_qa(FIXTURE, good, **options)
    from lmforge import pipeline  # the pipeline says the same, from the same check

    with pytest.raises(LmforgeError, match=f"^{re.escape(message)}$"):
        pipeline("question-answering", model=FIXTURE, **options)


def test_the_context_itself_is_a_valid_max_seq_len(good: Path) -> None:
    assert eval_qa(FIXTURE, good, max_seq_len=64, doc_stride=16)["max_seq_len"] == 64


@pytest.mark.parametrize("baseline", [None, "sliding-window"])
def test_two_questions_with_one_id_are_refused_naming_the_file_and_the_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, baseline: str | None
) -> None:
    data = write(
        tmp_path / "dup.json",
        "v2.0",
        question("a", "Where does Hugo live?", "Fenwick"),
        question("b", "Who sells wine?", "Ada"),
        question("a", "Who lives in Fenwick?", "Hugo"),
    )
    no_answering(monkeypatch)  # before: one prediction kept, both questions scored against it
    model = None if baseline else FIXTURE
    with pytest.raises(LmforgeError) as e:
        eval_qa(model, data, baseline=baseline, out=tmp_path / "predictions.json")
    assert str(e.value) == (
        f"{data}: data[0].paragraphs[0].qas[2]: id 'a' is also the id of data[0].paragraphs[0].qas[0]"
        " (each question needs its own id: predictions are keyed by id)"
    )
    assert not (tmp_path / "predictions.json").exists()


@pytest.mark.parametrize("baseline", [None, "sliding-window"])
def test_a_v11_question_without_gold_answers_names_the_file_and_the_question(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, baseline: str | None
) -> None:
    data = write(
        tmp_path / "noans.json",
        "1.1",
        question("a", "Where does Hugo live?", "Fenwick"),
        question("q-7", "What colour is the sky?", None),
    )
    no_answering(monkeypatch)
    with pytest.raises(LmforgeError) as e:
        eval_qa(None if baseline else FIXTURE, data, baseline=baseline)
    assert str(e.value) == (
        f"{data}: data[0].paragraphs[0].qas[1] (id 'q-7'): no gold answers, which SQuAD v1.1 needs"
        ' (a file with unanswerable questions is "version": "v2.0")'
    )


def test_a_v2_question_without_gold_answers_is_unanswerable_and_scored(tmp_path: Path) -> None:
    data = write(tmp_path / "v2.json", "v2.0", question("a", "What colour is the sky?", None))
    scores = eval_qa(data=data, baseline="sliding-window")
    assert (scores["total"], scores["NoAns_total"], scores["exact"]) == (1, 1, 0.0)


def test_files_the_official_scripts_score_are_scored(tmp_path: Path) -> None:
    """Answers without an integer answer_start (scoring reads only the texts) and HF's version
    names ("squad_v2") were refused: 'needs answer_start (int)', 'unknown version' naming no file."""
    unlocated = [{"text": "Fenwick"}, {"text": "Fenwick", "answer_start": "14"}]
    data = write(
        tmp_path / "hf.json",
        "squad_v2",
        {"id": "a", "question": "Where does Hugo live?", "answers": unlocated},
        question("b", "What colour is the sky?", None),
    )
    scores = eval_qa(data=data, baseline="sliding-window")
    assert (scores["version"], scores["total"], scores["HasAns_total"], scores["NoAns_total"]) == (
        "v2.0",
        2,
        1,
        1,
    )
    named = {"1.1": "1.1", "v1.1": "1.1", "SQuAD v2.0": "v2.0", "squad": "1.1", "3.0": "1.1"}
    for version, read in named.items():  # a version naming neither: read as a file without one
        data = write(tmp_path / "v.json", version, {"id": "a", "question": "Where?", "answers": unlocated})
        assert eval_qa(data=data, baseline="sliding-window")["version"] == read, version
