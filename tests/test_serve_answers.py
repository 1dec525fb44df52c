"""`POST /v1/answers` takes every option the question-answering pipeline takes (align_to_words and
batch_size were 200s that ignored them) and, being lmforge's own route, refuses a field it does not
know with a 400 naming it (a misspelt `topk` was a 200 answering with top_k=1)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from serve_helpers import QA_FIXTURE  # noqa: E402

from lmforge.pipelines import pipeline  # noqa: E402
from lmforge.pipelines.question_answering import OPTIONS  # noqa: E402
from lmforge.server.app import Settings, create_app  # noqa: E402
from lmforge.server.models import load_models  # noqa: E402

# the tiny fixture's best span starts inside "naïve": words kept whole or not give two answers
CONTEXT = "Élodie rode south with KNIGHTS—naïve café owners, and Zoë smiled."
ASK = {"model": "bert-qa", "question": "Who?", "context": CONTEXT}


@pytest.fixture(scope="module")
def api() -> Iterator[TestClient]:
    with TestClient(create_app(load_models([QA_FIXTURE], dtype="fp32"), Settings())) as c:
        yield c


def test_every_pipeline_option_is_taken_and_used(api: TestClient) -> None:
    qa = pipeline("question-answering", model=QA_FIXTURE)
    answers = set()
    for options in (
        {"align_to_words": True},
        {"align_to_words": False},
        {"align_to_words": False, "batch_size": 1},
    ):
        r = api.post("/v1/answers", json={**ASK, **options})
        assert r.status_code == 200, r.text
        want = qa(question=ASK["question"], context=CONTEXT, **options)
        got = r.json()["results"]
        assert (got["answer"], got["start"], got["end"]) == (want["answer"], want["start"], want["end"])
        assert got["score"] == pytest.approx(want["score"], abs=1e-6)
        answers.add(got["answer"])
    assert len(answers) == 2  # align_to_words changed the answer, as it does the pipeline's
    every = {name: None for name in OPTIONS}  # null: the pipeline's default, for each option it takes
    assert api.post("/v1/answers", json={**ASK, **every}).status_code == 200


@pytest.mark.parametrize(
    ("field", "value", "hint"),
    [
        ("topk", 3, "did you mean 'top_k'? "),
        ("alignToWords", False, "did you mean 'align_to_words'? "),
        ("temperature", 0, ""),
    ],
)
def test_an_unknown_field_is_a_400_naming_it(api: TestClient, field: str, value: Any, hint: str) -> None:
    r = api.post("/v1/answers", json={**ASK, field: value})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["param"], error["code"]) == (field, "unknown_parameter")
    assert error["message"].startswith(
        f"{field}: is not a field of /v1/answers ({hint}it takes model, question"
    )
    assert "\n" not in error["message"]


def test_the_batch_size_is_bounded(api: TestClient) -> None:
    r = api.post("/v1/answers", json={**ASK, "batch_size": 10_000})
    assert r.status_code == 400 and r.json()["error"]["param"] == "batch_size", r.text
