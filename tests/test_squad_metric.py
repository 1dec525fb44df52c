"""The SQuAD metric against cases worked by hand from the official v1.1 and v2.0 scripts."""

from __future__ import annotations

import pytest

from lmforge.errors import LmforgeError
from lmforge.inference.squad_metric import (
    check_dataset,
    dataset_version,
    exact_match,
    f1,
    normalize_answer,
    squad_scores,
)


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("The  Quick, brown-fox!", "quick brownfox"),  # punctuation goes before the articles
        ("an apple a day", "apple day"),
        ("Theatre and Anthem", "theatre and anthem"),  # articles only as whole words
        ("a.m.", "am"),  # "a.m." loses its dots and is then no article
        ("  tabs\tand\nnewlines  ", "tabs and newlines"),
        ("“curly” quotes", "“curly” quotes"),  # only ASCII punctuation is removed
        ("THE", ""),
    ],
)
def test_normalize_answer(raw: str, normal: str) -> None:
    assert normalize_answer(raw) == normal


def test_f1_bag_of_tokens() -> None:
    # pred -> [cat, sat, on, mat], gold -> [cat, on, mat]: P = 3/4, R = 1, F1 = 6/7
    assert f1("The cat sat on the mat.", ["a cat on a mat"]) == pytest.approx(6 / 7)
    # repeated tokens count once each: common = 1, P = 1/3, R = 1, F1 = 1/2
    assert f1("dog dog dog", ["dog"]) == pytest.approx(0.5)
    assert f1("two dogs", ["one cat"]) == 0.0


def test_max_over_gold_answers() -> None:
    golds = ["Paris, France", "paris", "the city of Paris"]
    assert exact_match("Paris", golds) == 1.0
    assert f1("Paris", golds) == 1.0
    # best F1 is against "Paris, France": P = 1, R = 1/2 -> 2/3 (vs 1/2 against the third)
    assert f1("Paris", ["Paris, France", "the city of Paris"]) == pytest.approx(2 / 3)
    assert exact_match("Paris", ["Paris, France"]) == 0.0


def test_v2_no_answer() -> None:
    assert exact_match("", []) == 1.0 and f1("", []) == 1.0
    assert exact_match("Ahab", []) == 0.0 and f1("Ahab", []) == 0.0
    # a gold that normalises to "" is dropped, leaving the question unanswerable
    assert exact_match("", ["the"]) == 1.0 and f1("", ["the"]) == 1.0
    # an empty prediction on an answerable question scores 0
    assert exact_match("", ["Ahab"]) == 0.0 and f1("", ["Ahab"]) == 0.0


def test_v1_keeps_empty_golds_as_written() -> None:
    # v1.1: "the" vs "" normalise equal (EM 1) but F1 of two empty bags is 0
    assert exact_match("", ["the"], version="1.1") == 1.0
    assert f1("", ["the"], version="1.1") == 0.0
    with pytest.raises(LmforgeError, match="no gold answers"):
        f1("x", [], version="1.1")


def _article(qas: list[dict]) -> dict:
    return {"title": "t", "paragraphs": [{"context": "c", "qas": qas}]}


V2 = {
    "version": "v2.0",
    "data": [
        _article(
            [
                {"id": "q1", "answers": [{"text": "Captain Ahab", "answer_start": 0}]},
                {"id": "q2", "answers": [{"text": "the white whale", "answer_start": 0}]},
                {"id": "q3", "answers": [], "is_impossible": True},
            ]
        ),
        _article([{"id": "q4", "answers": [], "is_impossible": True}]),
    ],
}


def test_squad_scores_v2_breakdown() -> None:
    preds = {"q1": "Ahab", "q2": "The White Whale!", "q3": "", "q4": "Ishmael"}
    # q1: EM 0, F1 2/3; q2: EM 1, F1 1; q3: EM 1, F1 1; q4: EM 0, F1 0
    out = squad_scores(preds, V2)
    assert out["version"] == "v2.0" and out["total"] == 4 and out["missing"] == 0
    assert out["exact"] == pytest.approx(50.0)
    assert out["f1"] == pytest.approx(100 * (2 / 3 + 1 + 1 + 0) / 4)
    assert out["HasAns_total"] == 2 and out["HasAns_exact"] == pytest.approx(50.0)
    assert out["HasAns_f1"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert out["NoAns_total"] == 2 and out["NoAns_exact"] == pytest.approx(50.0)
    assert out["NoAns_f1"] == pytest.approx(50.0)


def test_squad_scores_v2_leaves_missing_out_of_the_total() -> None:
    out = squad_scores({"q2": "white whale"}, V2)
    assert out["total"] == 1 and out["missing"] == 3
    assert out["exact"] == 100.0 and "NoAns_total" not in out


def test_squad_scores_v1_counts_missing_as_zero() -> None:
    v1 = {
        "version": "1.1",
        "data": [
            _article(
                [
                    {"id": "a", "answers": [{"text": "Pequod"}]},
                    {"id": "b", "answers": [{"text": "Nantucket"}]},
                ]
            )
        ],
    }
    out = squad_scores({"a": "the Pequod"}, v1)
    assert out == {"exact": 50.0, "f1": 50.0, "total": 2, "missing": 1, "version": "1.1"}


def test_version_detection() -> None:
    assert dataset_version(V2) == "v2.0"
    assert dataset_version(V2["data"]) == "v2.0"  # no "version": an unanswerable question
    assert dataset_version([_article([{"id": "a", "answers": [{"text": "x"}]}])]) == "1.1"


def test_bad_data_names_the_place() -> None:
    with pytest.raises(LmforgeError, match=r"data\[0\]\.paragraphs\[0\]\.qas\[0\] has no \"id\""):
        squad_scores({}, {"data": [_article([{"answers": []}])]})
    with pytest.raises(LmforgeError, match=r"needs \"answers\""):
        squad_scores({}, {"data": [_article([{"id": "a", "answers": "x"}])]})
    with pytest.raises(LmforgeError, match="not a string"):
        squad_scores({"q1": 3}, V2)  # type: ignore[dict-item]


def test_an_id_used_twice_is_refused_naming_both_places() -> None:
    # predictions are keyed by id: both questions would be scored against one answer
    data = {
        "data": [
            _article([{"id": "q1", "answers": [{"text": "x"}]}]),
            _article([{"id": "q1", "answers": []}]),
        ]
    }
    message = (
        r"^dev\.json: data\[1\]\.paragraphs\[0\]\.qas\[0\]: id 'q1' is also the id of"
        r" data\[0\]\.paragraphs\[0\]\.qas\[0\] "
    )
    with pytest.raises(LmforgeError, match=message):
        squad_scores({"q1": "x"}, data, source="dev.json")
    with pytest.raises(LmforgeError, match=message):
        check_dataset(data, "v2.0", "dev.json")
    with pytest.raises(LmforgeError, match="id '7' is also"):  # ids are compared as predictions key them
        squad_scores({}, [_article([{"id": 7, "answers": []}, {"id": "7", "answers": []}])])


def test_a_v11_question_without_gold_answers_names_the_file_and_the_question() -> None:
    data = {
        "version": "1.1",
        "data": [_article([{"id": "a", "answers": [{"text": "x"}]}, {"id": "b", "answers": []}])],
    }
    message = (
        r"^dev\.json: data\[0\]\.paragraphs\[0\]\.qas\[1\] \(id 'b'\): no gold answers,"
        r" which SQuAD v1\.1 needs"
    )
    with pytest.raises(LmforgeError, match=message):
        squad_scores({"a": "x", "b": "y"}, data, source="dev.json")
    with pytest.raises(LmforgeError, match=message):  # unanswered too: the file cannot be scored as v1.1
        squad_scores({"a": "x"}, data, source="dev.json")
    check_dataset(data, "v2.0")  # as v2.0 the question is unanswerable, which is fine
    assert squad_scores({"a": "x", "b": ""}, data, version="v2.0")["exact"] == 100.0
