"""pipeline("question-answering") gives transformers' answers: tests/fixtures/bert-qa/golden.json holds
what transformers 4.57.1's pipeline (the last with this task; build.py there) answered on the tiny
random BertForQuestionAnswering beside it, for single and listed inputs, dicts, a long context in
many windows, top_k, max_answer_len, doc_stride/max_seq_len and handle_impossible_answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from qa_answers import assert_like

import lmforge
from lmforge import pipeline
from lmforge.errors import LmforgeError

FIXTURE = Path(__file__).parent / "fixtures" / "bert-qa"
GOLDEN = json.loads((FIXTURE / "golden.json").read_text())["cases"]


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lmforge.import_hf(FIXTURE, tmp_path_factory.mktemp("qa") / "model")


@pytest.mark.parametrize("source", ["hf", "imported"])
def test_answers_equal_transformers_pipeline(imported: Path, source: str) -> None:
    qa = pipeline("question-answering", model=FIXTURE if source == "hf" else imported)
    for n, case in enumerate(GOLDEN):
        got = qa(*case.get("args", []), **case.get("call", {}), **case.get("options", {}))
        assert_like(got, case["expected"], f"case {n}")


def test_long_context_uses_several_windows_and_answers_point_into_it() -> None:
    case = next(c for c in GOLDEN if c.get("options", {}).get("doc_stride") == 16)
    context = case["call"]["context"]
    qa = pipeline("question-answering", model=FIXTURE, max_seq_len=40, doc_stride=16)
    from lmforge.data.qa_features import WindowMaker

    windows = WindowMaker(qa.tokenizer).windows(0, case["call"]["question"], context, 40, 16)
    assert len(windows) > 10  # the whole document is read, window by window
    answers = qa(question="Where did the council meet?", context=context, top_k=5, max_answer_len=4)
    for a in answers:
        assert context[a["start"] : a["end"]] == a["answer"] and a["answer"]
    assert max(a["end"] for a in answers) > len(context) // 2 or min(a["start"] for a in answers) > 0


def test_defaults_at_construction_and_per_call() -> None:
    qa = pipeline("question-answering", model=FIXTURE, top_k=2)
    two = qa(question="Who kept the crown?", context=GOLDEN[0]["call"]["context"])
    assert isinstance(two, list) and len(two) == 2
    one = qa(question="Who kept the crown?", context=GOLDEN[0]["call"]["context"], top_k=1)
    assert_like(one, GOLDEN[0]["expected"], "top_k=1 per call")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ({"question": "", "context": "Some text."}, "question is empty"),
        ({"question": "Who?", "context": "   "}, "context is empty"),
        ({"question": ["Who?", ""], "context": "Some text."}, "question 2 is empty"),
        ({"question": ["a", "b"], "context": ["x"]}, "same length"),
        (
            {"question": "Who?", "context": ["x", "y"]},
            "context is a list: give question as a list of the same length",
        ),
        ({"question": "Who?"}, "needs both question= and context="),
        ({"question": 3, "context": "x"}, "question must be a string"),
        ({"question": "Who?", "context": 5}, "^context must be a string or a list of strings, not int$"),
        ({"question": "Who?", "context": "x", "top_k": 0}, "top_k=0: must be an integer >= 1"),
        ({"question": "Who?", "context": "x", "max_answer_len": 0}, "max_answer_len=0"),
        (
            {"question": "Who?", "context": "x", "doc_stride": 50, "max_seq_len": 40},
            "larger than max_seq_len",
        ),
        ({"question": "Who?", "context": "x", "max_seq_len": 500}, "longer than the model's context of 64"),
        ({"question": "Who?", "context": "x y " * 100, "doc_stride": 38, "max_seq_len": 40}, "doc_stride=38"),
        ({"question": "who " * 80, "context": "x"}, "no room for the context"),
        ({"question": ["Who?", "who " * 80], "context": "x"}, r"question 2 has \d+ tokens: no room"),
        ({"question": "Who?", "context": "x", "max_length": 3}, "unknown keyword max_length"),
    ],
)
def test_bad_input_is_one_clear_line(call: dict[str, Any], message: str) -> None:
    qa = pipeline("question-answering", model=FIXTURE)
    with pytest.raises(LmforgeError, match=message):
        qa(**call)


def test_no_inputs_give_no_answers() -> None:
    """An empty list is an empty result, as for the other pipelines (tests/test_generation_options.py)."""
    qa = pipeline("question-answering", model=FIXTURE)
    assert qa([]) == [] == qa(question=[], context=[]) == qa(question=[], context="Some text.")


def test_dict_inputs_need_both_keys_and_other_models_are_refused(tmp_path: Path) -> None:
    qa = pipeline("question-answering", model=FIXTURE)
    with pytest.raises(LmforgeError, match="input 1 must be a dict with 'question' and 'context'"):
        qa({"question": "Who?"})
    with pytest.raises(LmforgeError, match="context 1 is empty"):
        qa([{"question": "Who?", "context": ""}])
    from test_qa_model import random_bert_qa

    hf = random_bert_qa(tmp_path / "hf", 0)
    config = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps(config | {"architectures": ["BertModel"]}))
    with pytest.raises(LmforgeError, match="not a question-answering model"):
        pipeline("question-answering", model=hf)
