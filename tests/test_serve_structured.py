"""OpenAI's `response_format` (json_object, json_schema) on /v1/chat/completions and
/v1/completions, with llguidance masking the tokens. The oracle is `jsonschema`: on a tiny random
Llama, whose plain replies are garbage (checked: not JSON), every reply under response_format
parses and validates, greedy and seeded, n > 1, streamed, next to a plain request in one batch
(which decodes as alone), and cut by max_tokens ("length", a prefix of the whole reply). Bad
schemas and a server without llguidance are one-line 400s naming response_format."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("transformers")
pytest.importorskip("llguidance")
jsonschema = pytest.importorskip("jsonschema")
from fastapi.testclient import TestClient  # noqa: E402
from test_chat import make_chat_llama  # noqa: E402

from lmforge.server.app import Settings, create_app  # noqa: E402
from lmforge.server.models import ServedModel, load_models  # noqa: E402

PROMPT = "Once upon a time"
MESSAGES = [{"role": "user", "content": "Who are you? Answer in JSON."}]
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
SCHEMA = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
QUOTE, CLOSE = 4, 95  # the tiny Llama's ids of '"' and '}'
# json_object allows any object: on random weights a string can run past any max_tokens, so these
# tokens are made likelier (which alone does not make JSON: checked below)
NEAR_THE_END = {str(QUOTE): 6, str(CLOSE): 6}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ServedModel]:
    directory = tmp_path_factory.mktemp("structured") / "llama"
    make_chat_llama(directory)
    return load_models([directory], dtype="fp32")


@pytest.fixture(scope="module")
def api(models: dict[str, ServedModel]) -> Any:
    with TestClient(create_app(models, Settings())) as c:
        yield c


def chat(api: TestClient, **fields: Any) -> dict[str, Any]:
    body = {"model": "llama", "messages": MESSAGES, "max_tokens": 140, **fields}  # the room the 116 leave
    r = api.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 1, "seed": 7}])
def test_json_schema_replies_validate(api: TestClient, sampling: dict[str, Any]) -> None:
    plain = chat(api, n=3, **sampling)["choices"]
    assert not any(is_json(c["message"]["content"]) for c in plain)  # the model alone makes garbage
    choices = chat(api, n=3, response_format=SCHEMA, **sampling)["choices"]
    assert len(choices) == 3
    for c in choices:
        assert c["finish_reason"] == "stop"
        jsonschema.validate(json.loads(c["message"]["content"]), PERSON)
    texts = {c["message"]["content"] for c in choices}
    assert len(texts) == (1 if sampling["temperature"] == 0 else 3)  # seeded rows draw their own
    again = chat(api, n=3, response_format=SCHEMA, **sampling)["choices"]
    assert [c["message"]["content"] for c in again] == [c["message"]["content"] for c in choices]
    body = {"model": "llama", "prompt": PROMPT, "max_tokens": 200, "response_format": SCHEMA, **sampling}
    r = api.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    (c,) = r.json()["choices"]
    assert c["finish_reason"] == "stop"
    jsonschema.validate(json.loads(c["text"]), PERSON)


@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 1, "seed": 2}])
def test_json_object_replies_are_objects(api: TestClient, sampling: dict[str, Any]) -> None:
    plain = chat(api, n=3, logit_bias=NEAR_THE_END, **sampling)["choices"]
    assert not any(is_json(c["message"]["content"]) for c in plain)
    fmt = {"type": "json_object"}
    for c in chat(api, n=3, logit_bias=NEAR_THE_END, response_format=fmt, **sampling)["choices"]:
        assert c["finish_reason"] == "stop"
        assert isinstance(json.loads(c["message"]["content"]), dict)
    # {"type": "text"} is plain text, as before
    same = chat(api, n=3, logit_bias=NEAR_THE_END, response_format={"type": "text"}, **sampling)["choices"]
    assert same == plain


def test_a_stream_is_the_reply(api: TestClient) -> None:
    body = {"model": "llama", "messages": MESSAGES, "max_tokens": 140, "n": 2, "temperature": 1, "seed": 3,
            "response_format": SCHEMA}  # fmt: skip
    whole = chat(api, **{k: v for k, v in body.items() if k not in ("model", "messages", "max_tokens")})
    texts, finish = ["", ""], [None, None]
    with api.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                (c,) = json.loads(line[6:])["choices"]
                texts[c["index"]] += c["delta"].get("content") or ""
                finish[c["index"]] = c["finish_reason"] or finish[c["index"]]
    assert texts == [c["message"]["content"] for c in whole["choices"]]
    assert finish == ["stop", "stop"]
    for text in texts:
        jsonschema.validate(json.loads(text), PERSON)


def test_max_tokens_cuts_the_reply_short(api: TestClient) -> None:
    whole = chat(api, temperature=0, response_format=SCHEMA)["choices"][0]
    assert whole["finish_reason"] == "stop"
    usage = chat(api, temperature=0, response_format=SCHEMA)["usage"]["completion_tokens"]
    assert usage > 4
    cut = chat(api, temperature=0, max_tokens=4, response_format=SCHEMA)
    (c,) = cut["choices"]
    assert c["finish_reason"] == "length" and cut["usage"]["completion_tokens"] == 4
    assert whole["message"]["content"].startswith(c["message"]["content"])
    assert not is_json(c["message"]["content"])  # OpenAI's too: a cut reply is not whole JSON


def test_a_row_with_a_schema_and_a_plain_row_share_the_batch(models: dict[str, ServedModel]) -> None:
    """A plain request decoding in one batch with a response_format request gets its reply alone."""
    from lmforge.server.batcher import Batcher
    from lmforge.server.jobs import new_job
    from lmforge.server.schemas import CompletionRequest

    served = models["llama"]
    prompt = [served.tokenizer.encode_prompt(PROMPT)]

    def job(**fields: Any) -> Any:
        body = CompletionRequest.model_validate({"model": "llama", "prompt": PROMPT, **fields})
        return new_job(served, body, prompt, 200, False, None, 1024, 300.0)

    def alone(**fields: Any) -> list[int]:
        one, batcher = job(**fields), Batcher()
        batcher.add(one)
        batcher.run(until=one.future.done)
        return one.future.result()[0].ids

    for sampling in ({"temperature": 0}, {"temperature": 1, "seed": 5}):
        plain, guided, batcher = job(**sampling), job(response_format=SCHEMA, **sampling), Batcher()
        batcher.add(plain)
        batcher.add(guided)
        batcher.run(until=lambda: plain.future.done() and guided.future.done())  # noqa: B023
        assert batcher.peak == 2
        assert plain.future.result()[0].ids == alone(**sampling)
        (row,) = guided.future.result()
        assert row.finish == "stop"
        jsonschema.validate(json.loads(row.text), PERSON)
        assert row.ids == alone(response_format=SCHEMA, **sampling)


def schema(value: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": value}}


@pytest.mark.parametrize(
    ("fmt", "param", "says"),
    [
        (schema({"type": "objectx"}), "response_format", "Invalid type: objectx"),
        (schema({"type": "array", "uniqueItems": True}), "response_format", "Unimplemented keys: [\"unique"),
        (schema({"type": "string", "pattern": "(?=a)"}), "response_format",
         "look-around, including look-ahead and look-behind, is not supported"),
        (schema([{"type": "object"}]), "response_format.json_schema.schema", "should be a valid dictionary"),
        ({"type": "json_schema", "json_schema": {"name": "x"}},
         "response_format.json_schema.schema", "missing required parameter"),
        ({"type": "json_schema"}, "response_format", 'type "json_schema" needs json_schema'),
        ({"type": "xml"}, "response_format.type", "Input should be 'text', 'json_object' or 'json_schema'"),
    ],
)  # fmt: skip
def test_a_bad_response_format_is_a_400_naming_it(api: TestClient, fmt: Any, param: str, says: str) -> None:
    for route, body in (
        ("/v1/chat/completions", {"messages": MESSAGES}),
        ("/v1/completions", {"prompt": "a"}),
    ):
        r = api.post(route, json={"model": "llama", "response_format": fmt, **body})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == param and says in error["message"], error
        assert "\n" not in error["message"]


def test_without_llguidance_the_400_says_what_to_install(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "llguidance", None)  # import llguidance: ImportError
    r = api.post("/v1/chat/completions", json={"model": "llama", "messages": MESSAGES,
                                                "response_format": {"type": "json_object"}})  # fmt: skip
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == "response_format" and error["code"] == "unsupported_parameter"
    assert "pip install llguidance" in error["message"] and ".[serve]" in error["message"]
    assert chat(api, max_tokens=3)["choices"][0]["finish_reason"] == "length"  # the rest still serves


@pytest.mark.slow
def test_smollm2_fills_in_a_schema(smollm2_dir: Path) -> None:
    """The real SmolLM2-135M-Instruct, greedy: a valid object for the schema."""
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"]}  # fmt: skip
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}
    messages = [{"role": "user", "content": "Make up a person. Reply in JSON with their name and age."}]
    with TestClient(create_app(load_models([smollm2_dir], dtype="fp32"), Settings())) as c:
        body = {"model": smollm2_dir.name, "messages": messages, "max_tokens": 80, "temperature": 0}
        r = c.post("/v1/chat/completions", json={**body, "response_format": fmt})
        assert r.status_code == 200, r.text
        (choice,) = r.json()["choices"]
        assert choice["finish_reason"] == "stop"
        jsonschema.validate(json.loads(choice["message"]["content"]), schema)
