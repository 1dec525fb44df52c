"""vLLM's ways to shape a reply, beside OpenAI's response_format: `structured_outputs`
({"choice" | "regex" | "json" | "grammar" | "json_object"}) and the older `guided_choice`,
`guided_regex`, `guided_json` and `guided_grammar` (they were ignored: a client asking for one of
three words got free text). On a tiny random Llama whose free replies match none of them, every
reply is one of the choices, matches the regular expression whole, validates against the schema
(jsonschema) or parses under the grammar, greedy and sampled; two at once, a bad pattern and an
option lmforge does not take are 400s."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

pytest.importorskip("llguidance")
jsonschema = pytest.importorskip("jsonschema")
from fastapi.testclient import TestClient  # noqa: E402
from test_chat import make_chat_llama  # noqa: E402
from test_serve_structured import MESSAGES, NEAR_THE_END, PERSON, chat  # noqa: E402

from lmforge.server.app import Settings, create_app  # noqa: E402
from lmforge.server.models import load_models  # noqa: E402

CHOICES = ["yes", "no", 'maybe "so"', "ünï"]
REGEX = r"[0-9]{3}-[a-z]{2}"
COLORS = 'start: color ("," color)*\ncolor: "red" | "green" | "blue"'  # llguidance's Lark
SAMPLINGS: list[dict[str, Any]] = [{"temperature": 0}, {"temperature": 1.5, "seed": 3, "n": 4}]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Any:
    directory = tmp_path_factory.mktemp("guided") / "llama"
    make_chat_llama(directory)
    with TestClient(create_app(load_models([directory], dtype="fp32"), Settings())) as client:
        yield client


def replies(api: TestClient, **fields: Any) -> list[str]:
    return [c["message"]["content"] for c in chat(api, **fields)["choices"]]


@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_replies_keep_to_the_form(api: TestClient, sampling: dict[str, Any]) -> None:
    free = replies(api, **sampling)
    assert not any(r in CHOICES or re.fullmatch(REGEX, r) for r in free)
    for fields in ({"guided_choice": CHOICES}, {"structured_outputs": {"choice": CHOICES}}):
        assert set(replies(api, **fields, **sampling)) <= set(CHOICES)
    for fields in ({"guided_regex": REGEX}, {"structured_outputs": {"regex": REGEX}}):
        assert all(re.fullmatch(REGEX, r) for r in replies(api, **fields, **sampling))
    for fields in ({"guided_grammar": COLORS}, {"structured_outputs": {"grammar": COLORS}}):
        texts = replies(api, **fields, **sampling)
        assert all(re.fullmatch(r"(red|green|blue)(,(red|green|blue))*", r) for r in texts), texts
    for fields in (
        {"guided_json": PERSON},
        {"guided_json": json.dumps(PERSON)},
        {"structured_outputs": {"json": PERSON}},
    ):
        for text in replies(api, **fields, **sampling):
            jsonschema.validate(json.loads(text), PERSON)
    for text in replies(api, structured_outputs={"json_object": True}, logit_bias=NEAR_THE_END, **sampling):
        assert isinstance(json.loads(text), dict)
    r = api.post(
        "/v1/completions", json={"model": "llama", "prompt": "a", "guided_choice": CHOICES, **sampling}
    )
    assert r.status_code == 200 and {c["text"] for c in r.json()["choices"]} <= set(CHOICES)


@pytest.mark.parametrize(
    ("fields", "param", "says"),
    [
        ({"guided_choice": ["a"], "guided_regex": "a"}, None, "guided_regex and guided_choice: give one way"),
        ({"response_format": {"type": "json_object"}, "guided_json": {}}, None, "response_format and"),
        ({"guided_regex": "(?=a)"}, "guided_regex", "look-around"),
        ({"guided_choice": []}, "guided_choice", "at least 1 item"),
        ({"guided_json": "{not json"}, "guided_json", "guided_json: not JSON"),
        ({"guided_json": "[1]"}, "guided_json", "guided_json: a JSON schema is an object, not list"),
        ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, "structured_outputs", "give one of json"),
        ({"structured_outputs": {"json_object": True, "disable_any_whitespace": True}},
         "structured_outputs.disable_any_whitespace", "xtra inputs are not permitted"),
        ({"guided_grammar": "start: ("}, "guided_grammar", "llguidance cannot follow this grammar"),
        ({"guided_regex": "a", "guided_whitespace_pattern": " "}, "guided_whitespace_pattern", "not suppor"),
        ({"guided_regex": "a", "guided_decoding_backend": "xgrammar"}, "guided_decoding_backend", "not "),
    ],
)  # fmt: skip
def test_a_bad_form_is_a_400_naming_it(
    api: TestClient, fields: dict[str, Any], param: str | None, says: str
) -> None:
    r = api.post("/v1/chat/completions", json={"model": "llama", "messages": MESSAGES, **fields})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and says in error["message"] and "\n" not in error["message"], error
