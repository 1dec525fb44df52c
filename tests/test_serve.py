"""`lmforge serve`: every endpoint on tiny random models (a char GPT, a random Llama with a chat
template, an encoder-decoder, a classifier, tests/fixtures/bert-qa), through FastAPI's TestClient,
and the official `openai` client against a real uvicorn server on a free port: temperature-0 output
equals lmforge's own decoding, usage is exact, streams are OpenAI's chunk format, stop strings cut,
n > 1, /v1/answers equals the question-answering pipeline, every bad request is a 4xx with
OpenAI's error object, a full queue answers 503 at once, and a client that disconnects stops its
generation."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402
from serve_helpers import (  # noqa: E402
    QA_FIXTURE,
    free_port,
    make_endless_gpt,
    make_model_dirs,
    running,
    serve_argv,
    wait_healthy,
)

from lmforge.errors import LmforgeError  # noqa: E402
from lmforge.formats.directory import load_model  # noqa: E402
from lmforge.inference.chat import ChatSpec  # noqa: E402
from lmforge.inference.generate import generate_ids  # noqa: E402
from lmforge.pipelines import pipeline  # noqa: E402
from lmforge.server.app import Settings, create_app  # noqa: E402
from lmforge.server.models import load_models  # noqa: E402

PROMPT = "ROMEO:\nthe king"
HELLO = [{"role": "user", "content": "Who is the king?"}]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {**make_model_dirs(tmp_path_factory.mktemp("serve")), "bert-qa": QA_FIXTURE}


@pytest.fixture(scope="module")
def models(dirs: dict[str, Path]) -> dict[str, Any]:
    return load_models(list(dirs.values()), dtype="fp32")


@pytest.fixture(scope="module")
def endless(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A GPT whose completions run until max_tokens (or its 65,536 positions): a decode still going."""
    return load_models([make_endless_gpt(tmp_path_factory.mktemp("endless"))], dtype="fp32")


ENDLESS = {"model": "endless", "prompt": "a", "max_tokens": 2**16 - 1, "temperature": 0}  # fills its context


def client(models: dict[str, Any], **settings: Any) -> TestClient:
    return TestClient(create_app(models, Settings(**{"max_tokens_limit": 300, **settings})))


@pytest.fixture(scope="module")
def api(models: dict[str, Any]) -> Iterator[TestClient]:
    with client(models) as c:
        yield c


def sse_payloads(text: str) -> list[Any]:
    """The `data:` payloads of an event stream ("[DONE]" kept as a string)."""
    blocks = [b for b in text.split("\n\n") if b.strip()]
    assert all(b.startswith("data: ") for b in blocks), blocks
    return [b[6:] if b[6:] == "[DONE]" else json.loads(b[6:]) for b in blocks]


def reference(directory: Path, prompt_ids: list[int], new: int, eos: Any) -> list[int]:
    net, _ = load_model(directory)
    return generate_ids(net, [prompt_ids], new, 0.0, eos_id=eos)[0]


def test_health_and_models(api: TestClient) -> None:
    assert api.get("/health").json() == {
        "status": "ok",
        "models": ["bert-qa", "clf", "gpt", "llama", "s2s"],
        "admitted": 0,
    }
    data = api.get("/v1/models").json()
    assert data["object"] == "list"
    cards = {m["id"]: m for m in data["data"]}
    assert {k: (v["task"], v["chat"]) for k, v in cards.items()} == {
        "gpt": ("text-generation", False),
        "llama": ("text-generation", True),
        "s2s": ("translation", False),
        "clf": ("text-classification", False),
        "bert-qa": ("question-answering", False),
    }
    assert cards["gpt"]["object"] == "model" and cards["gpt"]["context_length"] == 32
    assert api.get("/v1/models/llama").json() == cards["llama"]  # OpenAI's retrieve model
    r = api.get("/v1/models/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_completion_equals_lmforge_decoding_and_counts_tokens(api: TestClient, dirs: dict[str, Path]) -> None:
    from lmforge import generate

    r = api.post(
        "/v1/completions", json={"model": "gpt", "prompt": PROMPT, "max_tokens": 12, "temperature": 0}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    _, tok = load_model(dirs["gpt"])
    ids = reference(dirs["gpt"], tok.encode(PROMPT), 12, tok.eos_id)
    choice = body["choices"][0]
    assert choice["text"] == tok.decode(ids)
    assert PROMPT + choice["text"] == generate(dirs["gpt"], PROMPT, 12, temperature=0, dtype="fp32")[0]
    assert choice["finish_reason"] == ("length" if len(ids) == 12 else "stop")
    assert body["object"] == "text_completion" and body["model"] == "gpt" and body["id"].startswith("cmpl-")
    n_prompt = len(tok.encode(PROMPT))
    assert body["usage"] == {
        "prompt_tokens": n_prompt,
        "completion_tokens": len(ids),
        "total_tokens": n_prompt + len(ids),
    }
    echo = api.post(
        "/v1/completions",
        json={"model": "gpt", "prompt": PROMPT, "max_tokens": 12, "temperature": 0, "echo": True},
    )
    assert echo.json()["choices"][0]["text"] == PROMPT + choice["text"]


def chat_stream(api: TestClient, **fields: Any) -> list[Any]:
    body = {"model": "llama", "messages": HELLO, "max_tokens": 20, "temperature": 0, "stream": True, **fields}
    r = api.post("/v1/chat/completions", json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.text
    return sse_payloads(r.text)


def test_chat_streamed_equals_not_streamed_and_equals_lmforge(api: TestClient, dirs: dict[str, Path]) -> None:
    plain = api.post(
        "/v1/chat/completions",
        json={"model": "llama", "messages": HELLO, "max_completion_tokens": 20, "temperature": 0},
    )
    assert plain.status_code == 200, plain.text
    body = plain.json()
    net, tok = load_model(dirs["llama"])
    spec = ChatSpec.read(dirs["llama"], tok)
    prompt = tok.encode(spec.render(HELLO))
    ids = generate_ids(net, [prompt], 20, 0.0, eos_id=spec.stops)[0]
    message = body["choices"][0]["message"]
    assert (
        message == {"role": "assistant", "content": tok.decode(ids)} and body["object"] == "chat.completion"
    )
    assert body["usage"] == {
        "prompt_tokens": len(prompt),
        "completion_tokens": len(ids),
        "total_tokens": len(prompt) + len(ids),
    }

    events = chat_stream(api, stream_options={"include_usage": True})
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    choice_chunks = [c for c in chunks if c["choices"]]
    assert [c["choices"][0]["finish_reason"] for c in choice_chunks[:-1]] == [None] * (len(choice_chunks) - 1)
    assert choice_chunks[-1]["choices"][0]["finish_reason"] == body["choices"][0]["finish_reason"]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in choice_chunks)
    assert text == message["content"]
    assert len(choice_chunks) >= 3  # streamed in pieces, not in one block
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == body["usage"]
    assert all(c["usage"] is None for c in chunks[:-1])


def test_stop_strings_cut_the_text(api: TestClient) -> None:
    base = {"model": "gpt", "prompt": PROMPT, "max_tokens": 17, "temperature": 0}  # the room it leaves
    full = api.post("/v1/completions", json=base).json()["choices"][0]["text"]
    assert len(full) >= 8
    stop = full[4:6]
    want = full[: full.index(stop)]
    got = api.post("/v1/completions", json={**base, "stop": [stop, "\u00e9\u00e9"]}).json()
    assert got["choices"][0]["text"] == want and got["choices"][0]["finish_reason"] == "stop"
    assert got["usage"]["completion_tokens"] == len(want) + len(stop)  # char tokens up to the stop
    r = api.post("/v1/completions", json={**base, "stop": stop, "stream": True})
    events = sse_payloads(r.text)
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == want
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


def test_n_choices_and_seed(api: TestClient, dirs: dict[str, Path]) -> None:
    body = {
        "model": "gpt",
        "prompt": ["ROMEO:", "KING:"],
        "max_tokens": 10,
        "n": 3,
        "temperature": 1.0,
        "seed": 7,
    }
    a = api.post("/v1/completions", json=body).json()
    assert [c["index"] for c in a["choices"]] == list(range(6))
    assert a == {**api.post("/v1/completions", json=body).json(), "id": a["id"], "created": a["created"]}
    net, tok = load_model(dirs["gpt"])
    rows = [
        r
        for p in body["prompt"]
        for r in generate_ids(net, [tok.encode(p)] * 3, 10, 1.0, eos_id=tok.eos_id, seed=7)
    ]
    assert [c["text"] for c in a["choices"]] == [tok.decode(r) for r in rows]  # n rows: one sampled batch
    assert len({c["text"] for c in a["choices"][:3]}) > 1
    assert a["usage"]["completion_tokens"] == sum(map(len, rows))
    events = sse_payloads(api.post("/v1/completions", json={**body, "stream": True}).text)
    streamed = [
        "".join(e["choices"][0]["text"] for e in events[:-1] if e["choices"][0]["index"] == i)
        for i in range(6)
    ]
    assert streamed == [c["text"] for c in a["choices"]]


def test_a_completion_that_fills_the_context_ends_with_length(api: TestClient, dirs: dict[str, Path]) -> None:
    """The gpt's context is 32: a 15-token prompt may ask for 17 tokens, which fill it, finish_reason
    "length" (streamed too, n=2); never a window sliding past the context, which would forget the
    prompt's start. One more token is a 400 (tests/test_serve_context_room.py)."""
    _, tok = load_model(dirs["gpt"])
    prompt = tok.encode(PROMPT)
    room = 32 - len(prompt)
    want = reference(dirs["gpt"], prompt, room + 20, tok.eos_id)  # slides past the context
    assert len(want) > room, "the reference must run past the context for this test to mean anything"
    body = {"model": "gpt", "prompt": PROMPT, "max_tokens": room, "temperature": 0, "n": 2}
    r = api.post("/v1/completions", json=body).json()
    assert [c["finish_reason"] for c in r["choices"]] == ["length", "length"]
    assert [c["text"] for c in r["choices"]] == [tok.decode(want[:room])] * 2
    assert r["usage"] == {
        "prompt_tokens": len(prompt),
        "completion_tokens": 2 * room,
        "total_tokens": len(prompt) + 2 * room,
    }
    events = sse_payloads(api.post("/v1/completions", json={**body, "stream": True}).text)
    assert (
        "".join(e["choices"][0]["text"] for e in events[:-1] if e["choices"][0]["index"] == 0)
        == r["choices"][0]["text"]
    )
    assert [e["choices"][0]["finish_reason"] for e in events[:-1] if e["choices"][0]["finish_reason"]] == [
        "length"
    ] * 2
    fits = api.post("/v1/completions", json={**body, "max_tokens": room - 1}).json()
    assert fits["choices"][0]["text"] == tok.decode(want[: room - 1])


def test_translation_and_classification_mirror_the_pipelines(api: TestClient, dirs: dict[str, Path]) -> None:
    r = api.post(
        "/v1/translations", json={"model": "s2s", "input": ["the king", "a queen"], "max_new_tokens": 5}
    )
    assert r.status_code == 200, r.text
    want = pipeline("translation", model=dirs["s2s"])(["the king", "a queen"], max_new_tokens=5)
    assert r.json() == {"object": "translation", "model": "s2s", "results": want}
    body = {"model": "s2s", "input": ["", "the king"], "max_new_tokens": 5}
    blank = api.post("/v1/translations", json=body)
    assert blank.json()["results"] == [{"translation_text": ""}, want[0]]  # a blank line stays blank
    long = "the king and the queen speak"  # 28 characters; the context of 32 less the EOS is 31
    body = {"model": "s2s", "input": long * 2, "max_new_tokens": 5}
    error = api.post("/v1/translations", json=body).json()["error"]
    said = error["message"]
    assert "sentence 1 is 56 tokens" in said and '"truncation": true cuts' in said, error  # its field
    cut = api.post("/v1/translations", json={**body, "truncation": True}).json()["results"]
    assert cut == pipeline("translation", model=dirs["s2s"])(long * 2, max_new_tokens=5, truncation=True)
    r = api.post("/v1/classifications", json={"model": "clf", "input": "the king is good", "top_k": None})
    got = r.json()["results"]
    want = pipeline("text-classification", model=dirs["clf"])("the king is good", top_k=None)
    assert [g["label"] for g in got] == [w["label"] for w in want]
    assert [g["score"] for g in got] == pytest.approx([w["score"] for w in want], abs=1e-6)
    texts = ["the king is good", "a queen"]  # top_k given or not: the pipeline's shapes, as transformers'
    for given in ({}, {"top_k": 1}):
        body = {"model": "clf", "input": texts, **given}
        got = api.post("/v1/classifications", json=body).json()["results"]
        want = pipeline("text-classification", model=dirs["clf"])(texts, **given)
        assert [isinstance(g, list) for g in got] == [isinstance(w, list) for w in want] == [bool(given)] * 2
        labels = [[r["label"]] if isinstance(r, dict) else [x["label"] for x in r] for r in got]
        assert labels == [[r["label"]] if isinstance(r, dict) else [x["label"] for x in r] for r in want]
    body = {"model": "clf", "input": "a queen", "top_k": None, "function_to_apply": "none"}  # raw logits
    got = api.post("/v1/classifications", json=body).json()["results"]
    want = pipeline("text-classification", model=dirs["clf"])("a queen", top_k=None, function_to_apply="none")
    assert [g["score"] for g in got] == pytest.approx([w["score"] for w in want], abs=1e-6)
    assert abs(sum(g["score"] for g in got) - 1) > 1e-3  # not the softmax
    body["function_to_apply"] = "tanh"
    assert api.post("/v1/classifications", json=body).status_code == 400


QUESTIONS = ["Who kept the crown?", "Where was the crown kept?"]
CONTEXT = "The old king kept his crown in a tower by the sea, and the young queen kept the keys."


def test_answers_mirror_the_question_answering_pipeline(api: TestClient) -> None:
    qa = pipeline("question-answering", model=QA_FIXTURE)
    cases = [
        ({"question": QUESTIONS[0], "context": CONTEXT}, {}),
        ({"question": QUESTIONS, "context": CONTEXT}, {"top_k": 2, "max_answer_len": 4}),
        ({"question": QUESTIONS, "context": [CONTEXT, CONTEXT[:40]]}, {"handle_impossible_answer": True}),
        ({"question": QUESTIONS[1], "context": CONTEXT * 3}, {"max_seq_len": 40, "doc_stride": 16}),
    ]
    for given, options in cases:
        r = api.post("/v1/answers", json={"model": "bert-qa", **given, **options})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "answer" and body["model"] == "bert-qa"
        same_answers(body["results"], qa(**given, **options))


def same_answers(got: Any, want: Any) -> None:
    """The pipeline's shape (a dict, or lists of them) with equal answers and offsets; scores to 1e-6."""
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (got, want)
        for g, w in zip(got, want, strict=True):
            same_answers(g, w)
        return
    assert set(got) == {"score", "start", "end", "answer"}, got
    assert (got["answer"], got["start"], got["end"]) == (want["answer"], want["start"], want["end"])
    assert got["score"] == pytest.approx(want["score"], abs=1e-6)


LONG = "the king " * 10  # 90 characters: the context is 32
BAD = [
    ("/v1/completions", b"{not json", 400, None),
    ("/v1/chat/completions", b'{"model": "llama", "messages": [}', 400, None),
    ("/v1/completions", b"[1, 2]", 400, None),
    ("/v1/completions", {"model": "gpt"}, 400, "prompt"),
    ("/v1/completions", {"model": "gpt", "prompt": "hi", "max_tokens": "5"}, 400, "max_tokens"),
    ("/v1/completions", {"model": "gpt", "prompt": "hi", "max_tokens": -1}, 400, "max_tokens"),
    ("/v1/completions", {"model": "gpt", "prompt": "hi", "max_tokens": 10**9}, 400, "max_tokens"),
    (
        "/v1/chat/completions",
        {"model": "llama", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 10**9},
        400,
        "max_completion_tokens",
    ),
    ("/v1/completions", {"model": "gpt", "prompt": "hi", "temperature": -0.5}, 400, "temperature"),
    ("/v1/completions", {"model": "gpt", "prompt": "hi", "temperature": 1e9}, 400, "temperature"),
    ("/v1/completions", {"model": "gpt", "prompt": "hi", "top_p": 0}, 400, "top_p"),
    ("/v1/completions", {"model": "gpt", "prompt": "hi", "n": 0}, 400, "n"),
    ("/v1/completions", {"model": "gpt", "prompt": "hi", "n": 1000}, 400, "n"),
    ("/v1/completions", {"model": "gpt", "prompt": "hi", "stop": ["a", 3]}, 400, "stop.1"),
    ("/v1/completions", {"model": "gpt", "prompt": LONG}, 400, "prompt"),
    ("/v1/completions", {"model": "../gpt", "prompt": "hi"}, 404, "model"),
    ("/v1/completions", {"model": "s2s", "prompt": "hi"}, 400, "model"),
    ("/v1/chat/completions", {"model": "gpt", "messages": HELLO}, 400, "model"),
    ("/v1/chat/completions", {"model": "llama", "messages": "hi"}, 400, "messages"),
    ("/v1/chat/completions", {"model": "llama", "messages": []}, 400, "messages"),
    (
        "/v1/chat/completions",
        {"model": "llama", "messages": [{"role": "wizard", "content": "x"}]},
        400,
        "messages.0.role",
    ),
    ("/v1/chat/completions", {"model": "nope", "messages": HELLO}, 404, "model"),
    ("/v1/translations", {"model": "gpt", "input": "x"}, 400, "model"),
    ("/v1/classifications", {"model": "clf", "input": 5}, 400, "input"),
    ("/v1/answers", {"model": "bert-qa", "question": "Who?"}, 400, "context"),
    ("/v1/answers", {"model": "bert-qa", "question": " ", "context": "The king."}, 400, None),
    ("/v1/answers", {"model": "bert-qa", "question": ["a", "b"], "context": ["c", "d", "e"]}, 400, None),
    ("/v1/answers", {"model": "bert-qa", "question": "Who?", "context": "x", "top_k": 0}, 400, "top_k"),
    ("/v1/answers", {"model": "bert-qa", "question": "Who?", "context": "x", "doc_stride": 900}, 400, None),
    ("/v1/answers", {"model": "bert-qa", "question": "Who?", "context": "x" * 100_001}, 400, "context"),
    ("/v1/answers", {"model": "bert-qa", "question": 3, "context": "x"}, 400, "question"),
    ("/v1/answers", {"model": "gpt", "question": "Who?", "context": "x"}, 400, "model"),
]


@pytest.mark.parametrize(
    ("route", "field", "value"),
    [
        ("/v1/chat/completions", "functions", [{"name": "f"}]),
        ("/v1/completions", "tools", [{"type": "function", "function": {"name": "f"}}]),
        ("/v1/completions", "tool_choice", "required"),
        ("/v1/completions", "best_of", 3),
        ("/v1/completions", "suffix", " the end"),
    ],
)
def test_fields_that_would_change_the_reply_are_refused_not_ignored(
    api: TestClient, route: str, field: str, value: Any
) -> None:
    """Tools and best_of got a 200 that ignored them (so did JSON mode, before response_format was
    implemented: test_serve_structured.py; chat's tools now are: test_serve_tools.py); their "off"
    values (which clients such as LangChain send) are still taken."""
    base = {"model": "llama", "max_tokens": 2, "temperature": 0}
    base |= {"messages": HELLO} if "chat" in route else {"prompt": "the king"}
    r = api.post(route, json={**base, field: value})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["param"], error["code"]) == (field, "unsupported_parameter")
    assert error["message"].startswith(f"{field}: {value!r} is not supported by lmforge serve")
    off = {"frequency_penalty": 0.0, "presence_penalty": 0, "logit_bias": {}, "tools": None, "best_of": 1,
           "response_format": {"type": "text"}, "top_k": -1, "tool_choice": "none"}  # fmt: skip
    with_off = api.post(route, json={**base, **off})
    assert (
        with_off.status_code == 200
        and with_off.json()["choices"] == api.post(route, json=base).json()["choices"]
    )


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/completions"])
def test_vllms_usage_in_every_chunk_is_refused_not_ignored(api: TestClient, route: str) -> None:
    """stream_options.continuous_usage_stats (vLLM's: usage in every chunk) got a stream whose chunks
    had none."""
    base = {"model": "llama", "max_tokens": 2, "temperature": 0, "stream": True}
    base |= {"messages": HELLO} if "chat" in route else {"prompt": "the king"}
    options = {"include_usage": True, "continuous_usage_stats": True}
    error = api.post(route, json={**base, "stream_options": options}).json()["error"]
    field = "stream_options.continuous_usage_stats"
    assert (error["param"], error["code"]) == (field, "unsupported_parameter"), error
    assert error["message"].startswith(f"{field}: True is not supported by lmforge serve")
    options["continuous_usage_stats"] = False
    with api.stream("POST", route, json={**base, "stream_options": options}) as r:
        assert (
            r.status_code == 200 and list(r.iter_lines())[-2:] == ["", "data: [DONE]"] or r.status_code == 200
        )


def test_a_body_that_is_not_utf8_is_invalid_json(api: TestClient) -> None:
    r = api.post("/v1/completions", content=b'{"model": "gpt", "prompt": "a\xff\xfeb"}',
                 headers={"Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json", r.text


def test_json_past_pythons_limits_and_a_form_body_say_what_they_are(api: TestClient) -> None:
    """Valid JSON that Python's json refuses, and curl -d's default form Content-Type, were told
    "not valid JSON in UTF-8" and "must be a JSON object"."""
    json_headers = {"Content-Type": "application/json"}
    FORM = "application/x-www-form-urlencoded"  # noqa: N806
    cases = [
        ('{"model": "gpt", "prompt": "a", "max_tokens": 1' + "0" * 5000 + "}", json_headers,
         "the request body's JSON holds an integer of more than 4,300 digits"),
        ('{"model": "gpt", "prompt": ' + "[" * 10000 + "]" * 10000 + "}", json_headers,
         "the request body's JSON is nested too deeply"),
        ('{"model": "gpt", "prompt": "a", "max_tokens": 2}', {"Content-Type": FORM},
         f"the request Content-Type is '{FORM}', not application/json: send"),
    ]  # fmt: skip
    for body, headers, message in cases:
        r = api.post("/v1/completions", content=body.encode(), headers=headers)
        assert r.status_code == 400 and r.json()["error"]["message"].startswith(message), r.text
    r = api.post("/v1/completions", content=b'{"model": "gpt", "prompt": "a", "max_tokens": 2}')
    assert r.json()["error"]["message"].startswith("the request has no Content-Type: send the JSON body")


@pytest.mark.parametrize("route,body,status,param", BAD, ids=[f"{i}" for i in range(len(BAD))])
def test_bad_requests_get_openai_errors(
    api: TestClient, route: str, body: Any, status: int, param: str | None
) -> None:
    json_bytes = {"Content-Type": "application/json"}
    r = (
        api.post(route, content=body, headers=json_bytes)
        if isinstance(body, bytes)
        else api.post(route, json=body)
    )
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    if param is not None:
        assert error["param"] == param
    else:
        assert error["code"] in ("invalid_json", "invalid_value")
    assert api.get("/health").status_code == 200  # still serving


@pytest.mark.parametrize(
    "body,message",
    [
        ({"stop": list("abcde")}, "stop: List should have at most 4 items, not 5"),
        ({"prompt": ["hi"] * 17}, "prompt: List should have at most 16 items, not 17"),
        ({"stop": ["a", 3]}, "stop.1: Input should be a valid string (got 3)"),
    ],
)
def test_a_list_is_judged_as_a_list(api: TestClient, body: dict[str, Any], message: str) -> None:
    """`str | list[str]` fields given a list: the list's problem, not "should be a valid string"."""
    r = api.post("/v1/completions", json={"model": "gpt", "prompt": "hi", **body})
    assert r.status_code == 400 and r.json()["error"]["message"] == message


def test_a_long_bad_value_is_shortened_whole(api: TestClient) -> None:
    """A 100,001-character context: the message quotes its start and says how long it was (the
    quote was cut mid-value at 200 characters, without its closing quote)."""
    body = {"model": "bert-qa", "question": "Who?", "context": "a" * 100_001}
    message = api.post("/v1/answers", json=body).json()["error"]["message"]
    assert message.startswith("context: String should have at most 100000 characters (got 'aaa")
    assert message.endswith("... (100,001 characters))") and len(message) < 220


def test_null_means_the_default(api: TestClient) -> None:
    """OpenAI's API (and clients that send every field) take null for an optional field as unset."""
    for route, body, nulls in (
        ("/v1/completions", {"model": "gpt", "prompt": PROMPT}, ["echo", "stop", "logprobs"]),
        ("/v1/chat/completions", {"model": "llama", "messages": HELLO}, ["logprobs", "top_logprobs"]),
    ):
        nulls += ["temperature", "top_p", "n", "stream", "stream_options", "seed", "user", "max_tokens"]
        given = {**body, "seed": 7, "max_tokens": 6}
        want = api.post(route, json=given).json()
        got = api.post(route, json={**given, **dict.fromkeys(nulls), "seed": 7, "max_tokens": 6}).json()
        assert got["choices"] == want["choices"] and len(got["choices"]) == 1, got
        r = api.post(route, json={**body, **dict.fromkeys(nulls), "max_tokens": 2})  # seed null too
        assert r.status_code == 200, r.text
    options = {"include_usage": None}  # nested bodies too
    chunks = chat_stream(api, stream_options=options)
    assert chunks[-1] == "[DONE]" and all("usage" not in c for c in chunks[:-1])
    r = api.post("/v1/chat/completions", json={"model": "llama", "messages": None})  # required: no default
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"


def post_raw_json(api: TestClient, route: str, body: Any) -> Any:
    """`body` as JSON with \\u escapes: httpx's json= cannot encode a lone surrogate."""
    return api.post(route, content=json.dumps(body), headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    "route,body,param",
    [
        ("/v1/completions", {"model": "gpt", "prompt": "\ud800"}, "prompt"),
        ("/v1/completions", {"model": "gpt", "prompt": ["ok", "a\udcff"]}, "prompt"),
        ("/v1/chat/completions", {"model": "llama", "messages": [{"role": "user", "content": "\ud800"}]},
         "messages.0.content"),
        ("/v1/chat/completions",
         {"model": "llama", "messages": [{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}]},
         "messages.0.content.0.text"),
        ("/v1/translations", {"model": "s2s", "input": "\ud800"}, "input"),
        ("/v1/classifications", {"model": "clf", "input": ["\ud800"]}, "input"),
        ("/v1/answers", {"model": "bert-qa", "question": "Who?", "context": "\ud800"}, "context"),
    ],
)  # fmt: skip
def test_text_that_is_not_unicode_is_a_400(api: TestClient, route: str, body: Any, param: str) -> None:
    """A lone surrogate in any text (JSON allows "\\ud800"): 400 naming the field, not a 500."""
    r = post_raw_json(api, route, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["code"] == "invalid_value"
    assert (
        error["message"].startswith(f"{param}: ")
        and "is not valid UTF-8 (a lone surrogate U+D" in error["message"]
    )


def test_a_bug_is_a_500_in_openai_shape(models: dict[str, Any]) -> None:
    from dataclasses import replace

    class Broken:
        eos_id = None

        def encode_prompt(self, text: str) -> list[int]:
            raise RuntimeError("a bug")

    broken = {"gpt": replace(models["gpt"], tokenizer=Broken())}
    settings = Settings(allow_origins=("http://localhost:5173",))
    with TestClient(create_app(broken, settings), raise_server_exceptions=False) as c:
        r = c.post(
            "/v1/completions",
            json={"model": "gpt", "prompt": "hi"},
            headers={"Origin": "http://localhost:5173"},
        )
    assert r.status_code == 500
    # with its CORS headers: without them a browser page saw a network error, not this reply
    assert r.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert r.json()["error"] == {
        "message": "the server failed (RuntimeError); its log has the details",
        "type": "server_error",
        "param": None,
        "code": "server_error",
    }


def test_a_huge_body_is_refused(api: TestClient) -> None:
    r = api.post("/v1/completions", json={"model": "gpt", "prompt": "x" * (5 * 2**20)})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

    def chunked(prompt_kib: int) -> Iterator[bytes]:  # no Content-Length: the bytes received count
        yield b'{"model": "gpt", "prompt": "'
        yield from (b"x" * 1024 for _ in range(prompt_kib))
        yield b'hi", "max_tokens": 2}'

    headers = {"content-type": "application/json"}
    r = api.post("/v1/completions", content=chunked(5 * 1024), headers=headers)
    assert r.request.headers["transfer-encoding"] == "chunked" and "content-length" not in r.request.headers
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    assert r.headers["connection"] == "close"
    assert api.post("/v1/completions", content=chunked(0), headers=headers).status_code == 200


def test_the_chat_template_error_names_the_way_out(api: TestClient) -> None:
    error = api.post("/v1/chat/completions", json={"model": "gpt", "messages": HELLO}).json()["error"]
    assert "has no chat template" in error["message"] and error["code"] == "no_chat_template"


def test_api_key(models: dict[str, Any]) -> None:
    with client(models, api_key="s3cret") as c:
        assert c.get("/v1/models").status_code == 401
        r = c.get("/v1/models", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/health").status_code == 200  # for load balancers: no secrets in it


def test_allowed_origins_may_call_from_a_browser_and_others_may_not(models: dict[str, Any]) -> None:
    """A web page served from elsewhere (a dev server on :5173) calls the API only where
    --allow-origin names its origin: the preflight and the answers carry CORS headers, errors
    (a wrong key) too; by default no page of another origin may."""
    page = {"Origin": "http://localhost:5173"}
    preflight = {**page, "Access-Control-Request-Method": "POST",  # the openai JS client's headers too
                 "Access-Control-Request-Headers": "authorization,content-type,x-stainless-lang"}  # fmt: skip
    with client(models, api_key="k", allow_origins=("http://localhost:5173",)) as c:
        r = c.options("/v1/chat/completions", headers=preflight)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == page["Origin"]
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        r = c.get("/v1/models", headers={**page, "Authorization": "Bearer k"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == page["Origin"]
        r = c.get("/v1/models", headers={**page, "Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == page["Origin"]
        other = c.options("/v1/models", headers={**preflight, "Origin": "http://evil.example"})
        assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    with client(models) as c:
        assert "access-control-allow-origin" not in c.get("/v1/models", headers=page).headers
    with client(models, allow_origins=("*",)) as c:
        assert c.get("/v1/models", headers=page).headers["access-control-allow-origin"] == "*"
    from lmforge.server.serve import check_origins

    assert check_origins(["http://a:1", "http://a:1", "*"]) == ("http://a:1", "*")
    assert check_origins(["http://LocalHost:80", "HTTPS://h:443", "app://obsidian.md", "null"]) == (
        "http://localhost", "https://h", "app://obsidian.md", "null")  # fmt: skip
    assert check_origins(["http://x:080", "http://bücher.de"]) == ("http://x", "http://xn--bcher-kva.de")
    for bad in (
        "http://localhost:5173/",
        "localhost:5173",
        "http://x/app",
        "",
        "http://u@h:1",
        "http://x:99999",
    ):
        with pytest.raises(LmforgeError, match=r"^allow_origin=.*: give an origin as a browser sends it"):
            check_origins([bad])


def test_the_banners_try_line_works_for_every_kind(models: dict[str, Any]) -> None:
    """`lmforge serve` prints a curl line for its first model: one that model's route answers, with
    the key as given (from $LMFORGE_API_KEY: the variable; from --api-key: a placeholder)."""
    import shlex

    from lmforge.server.serve import try_command

    with client(models, api_key="k") as c:
        for name, route in (("gpt", "completions"), ("llama", "chat/completions"), ("s2s", "translations"),
                            ("clf", "classifications"), ("bert-qa", "answers")):  # fmt: skip
            line = try_command("http://testserver", models[name], "env")
            argv = shlex.split(line.replace("$LMFORGE_API_KEY", "k"))  # as the shell expands it
            assert argv[:2] == ["curl", f"http://testserver/v1/{route}"]
            headers = dict(argv[i + 1].split(": ", 1) for i, a in enumerate(argv) if a == "-H")
            r = c.post(argv[1], content=argv[argv.index("-d") + 1], headers=headers)
            assert r.status_code == 200, (line, r.text)
    assert "-H 'Authorization: Bearer <your --api-key>'" in try_command("http://h", models["gpt"], "flag")
    assert "Authorization" not in try_command("http://h", models["gpt"], None)


def test_the_api_key_comes_from_the_option_else_the_file_else_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lmforge.server.serve import API_KEY_ENV, read_api_key, start_warnings

    key_file = tmp_path / "key"
    key_file.write_bytes("\ufeff  s3cret \r\n\n".encode())  # a BOM, spaces, CRLF: only the key is kept
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    assert read_api_key(None, None) == (None, None)
    assert read_api_key(None, key_file) == read_api_key(None, str(key_file)) == ("s3cret", "file")
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert read_api_key(None, None) == ("from-env", "env")
    assert read_api_key(None, key_file) == ("s3cret", "file")  # the file before the variable
    assert read_api_key("typed", None) == ("typed", "flag")  # the option before both
    monkeypatch.setenv(API_KEY_ENV, "")
    assert read_api_key(None, None) == (None, None)  # set but empty: no key
    monkeypatch.setenv(API_KEY_ENV, "  ")
    with pytest.raises(LmforgeError, match=r"^\$LMFORGE_API_KEY holds only whitespace"):
        read_api_key(None, None)
    monkeypatch.setenv(API_KEY_ENV, "pässwörd")  # curl sends UTF-8, a browser Latin-1: neither matched
    with pytest.raises(LmforgeError, match=r"^\$LMFORGE_API_KEY: the key holds U\+00E4 \(character 2\)"):
        read_api_key(None, None)
    with pytest.raises(LmforgeError, match=r"^api_key: the key holds U\+0009 \(character 2\)"):
        read_api_key("a\tb", None)
    assert read_api_key("a b~!", None) == ("a b~!", "flag")  # printable ASCII, inner spaces too
    # only a key typed on the command line is warned of; no warning holds a key
    (typed,) = start_warnings("127.0.0.1", "flag")
    assert "--api-key" in typed and "process list" in typed and "--api-key-file" in typed
    assert "$LMFORGE_API_KEY" in typed
    assert start_warnings("127.0.0.1", "file") == start_warnings("127.0.0.1", "env") == []
    assert start_warnings("0.0.0.0", "file") == [] and "not loopback" in start_warnings("0.0.0.0", None)[0]


def _key_file(data: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        (folder / "the key").write_bytes(data)
        return folder / "the key"

    return make


def _folder(folder: Path) -> Path:
    (folder / "the key").mkdir()
    return folder / "the key"


def _unreadable(folder: Path) -> Path:
    _key_file(b"k")(folder).chmod(0)
    return folder / "the key"


ROOT_READS_ANY_FILE = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root")
F = "api_key_file={p}: "  # {p}: the file's path
KEY_FILE_ERRORS = [  # (makes the --api-key-file PATH, the options besides it, the error)
    pytest.param(lambda folder: folder / "none", [], F + "no such file", id="missing"),
    pytest.param(_folder, [], F + "is a folder, not a file holding the key", id="folder"),
    pytest.param(_key_file(b"\xffk\n"), [], F + r"not valid UTF-8 \(byte 0 of the file\)", id="utf8"),
    pytest.param(_key_file(b""), [], F + "the file is empty", id="empty"),
    pytest.param(_key_file(b" \n\t\r\n"), [], F + "the file is empty", id="blank"),
    pytest.param(_key_file(b"k1\nk2\n"), [], F + "the key spans more than one line", id="two-lines"),
    pytest.param(_key_file(b"k" * (64 * 1024 + 1)), [], F + "larger than 64 KiB", id="huge"),
    # no HTTP client can send a key past printable ASCII: named by code point, never shown
    pytest.param(_key_file("ключ-€\n".encode()), [],
                 F + r"the key holds U\+043A \(character 1\), which no HTTP", id="cyrillic"),
    pytest.param(_key_file("k2\u200b".encode()), [], F + r"the key holds U\+200B \(character 3\)", id="zwsp"),
    pytest.param(_unreadable, [], F + r"cannot read it \(Permission denied\)", id="unreadable",
                 marks=ROOT_READS_ANY_FILE),
    pytest.param(lambda folder: _key_file(b"k")(folder) / "key", [],
                 F + r"cannot read it \(Not a directory\)", id="under-a-file"),
    pytest.param(_key_file(b"k"), ["--api-key", "k2"], "api_key and api_key_file are both given: give one",
                 id="both"),
]  # fmt: skip


@pytest.mark.parametrize("make,more,culprit", KEY_FILE_ERRORS)
def test_a_bad_api_key_file_is_one_line_before_any_model_loads(
    make: Callable[[Path], Path],
    more: list[str],
    culprit: str,
    dirs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import re

    from lmforge.cli import main

    def no_load(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model was loaded before the key file was checked")

    path = make(tmp_path)
    monkeypatch.setattr("lmforge.server.models.load_models", no_load)
    capsys.readouterr()
    code = main(["serve", str(dirs["gpt"]), "--api-key-file", str(path), *more])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and "k2" not in err  # a key is never printed
    want = culprit.replace("{p}", re.escape(str(path)))
    assert len(err.splitlines()) == 1 and re.match(f"lmforge: error: {want}", err), err


def test_the_try_line_of_a_key_file_reads_it_in_the_shell(models: dict[str, Any], tmp_path: Path) -> None:
    """With --api-key-file the banner's curl line has `$(cat PATH)` (the path, not the key), quoted
    for the shell: run by bash, it sends the key."""
    import shlex
    import shutil
    import subprocess

    from lmforge.server.serve import try_command

    bash = shutil.which("bash") or pytest.skip("no bash")
    path = tmp_path / "it's a key"
    path.write_text("k\n")
    line = try_command("http://testserver", models["llama"], "file", path)
    assert f'-H "Authorization: Bearer $(cat {shlex.quote(str(path))})"' in line
    assert "Bearer k" not in line
    run = subprocess.run(
        [bash, "-c", "curl() { printf '%s\\0' \"$@\"; }; " + line], capture_output=True, check=True
    )
    argv = run.stdout.decode().split("\0")[:-1]  # curl's arguments, as the shell expanded them
    headers = dict(argv[i + 1].split(": ", 1) for i, a in enumerate(argv) if a == "-H")
    assert headers["Authorization"] == "Bearer k"
    with client(models, api_key="k") as c:
        r = c.post(argv[0], content=argv[argv.index("-d") + 1], headers=headers)
        assert r.status_code == 200, (line, r.text)
    for written in ("\ufeffk\r\n", " k\n"):  # a BOM and CRLF (Windows), a space: cat would send them
        path.write_text(written, newline="")
        line = try_command("http://testserver", models["llama"], "file", path)
        assert f"-H 'Authorization: Bearer <the key in {path}>'".replace("'s", "'\"'\"'s") in line, line


def test_a_request_past_its_timeout_is_504(endless: dict[str, Any]) -> None:
    with client(endless, timeout=0.3, max_tokens_limit=10**6) as c:
        body = ENDLESS
        r = c.post("/v1/completions", json=body)
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        assert r.json()["error"]["message"] == "the request took longer than the server's --timeout of 0.3 s"
        assert r.headers["x-should-retry"] == "false"  # openai's client retried it twice, tripling the wait
        events = sse_payloads(c.post("/v1/completions", json={**body, "stream": True}).text)
        assert (
            events[-1] == "[DONE]" and events[-2]["error"]["code"] == "timeout"
        )  # an error event mid-stream
        assert events[-2]["error"]["message"].endswith("--timeout of 0.3 s")
        assert events[0]["choices"][0]["text"]  # it had started streaming
        assert c.get("/health").json()["admitted"] == 0


# --- a real server on a free port ------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(models: dict[str, Any], endless: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    app = create_app({**models, **endless}, Settings(max_queue=1, max_tokens_limit=10**6))
    with running(app) as url:
        yield url, app.state.lmforge


def test_openai_client_chat_and_streaming(server: tuple[str, Any]) -> None:
    openai = pytest.importorskip("openai")
    url, _ = server
    c = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in c.models.list()] == ["gpt", "s2s", "clf", "llama", "bert-qa", "endless"]
    plain = c.chat.completions.create(model="llama", messages=HELLO, max_tokens=15, temperature=0)
    options = {"include_usage": True}
    stream = c.chat.completions.create(
        model="llama", messages=HELLO, max_tokens=15, temperature=0, stream=True, stream_options=options
    )
    chunks = list(stream)
    assert (
        "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        == plain.choices[0].message.content
    )
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens
    one = c.completions.create(model="gpt", prompt=PROMPT, max_tokens=5, temperature=0)
    many = c.completions.create(model="gpt", prompt=PROMPT, max_tokens=5, n=2, temperature=0)
    assert [ch.text for ch in many.choices] == [one.choices[0].text] * 2
    assert many.usage.completion_tokens == 2 * one.usage.completion_tokens
    with pytest.raises(openai.NotFoundError):
        c.completions.create(model="missing", prompt="hi")
    assert c.models.retrieve("gpt").id == "gpt"
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("missing")


def test_full_queue_is_503_and_a_disconnect_stops_generation(server: tuple[str, Any]) -> None:
    url, state = server
    body = {**ENDLESS, "stream": True}
    with httpx.Client(base_url=url, timeout=10) as h:
        with h.stream("POST", "/v1/completions", json=body) as r:
            lines = r.iter_lines()
            got = [next(lines) for _ in range(6)]  # a few tokens in: the decode is running
            assert any(line.startswith("data: ") for line in got)
            busy = h.post("/v1/completions", json={**body, "stream": False, "max_tokens": 1})
            assert busy.status_code == 503 and busy.json()["error"]["code"] == "queue_full"
            job = state.decoder.last
        deadline = time.monotonic() + 5  # the stream is closed: the decode must stop soon
        while state.decoder.admitted and time.monotonic() < deadline:
            time.sleep(0.02)
        assert state.decoder.admitted == 0 and job.cancel.is_set()
        stopped_at = job.tokens
        assert stopped_at < 10**6
        time.sleep(0.2)
        assert job.tokens == stopped_at
        assert h.get("/health").json()["admitted"] == 0


def test_a_plain_request_whose_client_leaves_stops_decoding(server: tuple[str, Any]) -> None:
    """Not streamed: the connection is polled every 0.25 s while the batcher decodes; a closed one
    frees the request (it was never noticed behind Starlette's BaseHTTPMiddleware)."""
    import socket

    url, state = server
    body = json.dumps(ENDLESS).encode()
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        deadline = time.monotonic() + 10
        while not (state.decoder.admitted and state.decoder.last.tokens > 5) and time.monotonic() < deadline:
            time.sleep(0.02)
        job = state.decoder.last
        assert state.decoder.admitted == 1 and job.tokens > 5  # decoding
    deadline = time.monotonic() + 5  # closed: within a poll or two, its rows are dropped
    while state.decoder.admitted and time.monotonic() < deadline:
        time.sleep(0.02)
    assert state.decoder.admitted == 0 and job.cancel.is_set()
    stopped_at = job.tokens
    time.sleep(0.2)
    assert job.tokens == stopped_at < 10**6


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_the_command_prints_where_it_listens_serves_and_stops_on_ctrl_c(
    dirs: dict[str, Path], api: TestClient, stop: str
) -> None:
    """`lmforge serve` as a process: the banner, a request (decoded in the main thread there), then
    Ctrl-C, or SIGTERM as kill and service managers send it: either stops it cleanly (exit 0), even
    when it was started with SIGINT ignored."""
    import os
    import signal
    import subprocess

    port = free_port()
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "LMFORGE_API_KEY": "k"}
    argv = serve_argv(dirs["gpt"], dirs["llama"], "--port", port)
    # started as a script's background job (`cmd &`) starts it: with SIGINT ignored, which the
    # child inherits (the cause of this test's failures in suites run that way)
    inherited = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc = subprocess.Popen([*argv, "--dtype", "fp32"], env=env, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, inherited)
    try:
        wait_healthy(port)
        body = {"model": "llama", "messages": HELLO, "max_tokens": 12, "temperature": 0}
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        assert httpx.post(url, json=body, timeout=30).status_code == 401
        got = httpx.post(url, json=body, headers={"Authorization": "Bearer k"}, timeout=30).json()
        assert got["choices"] == api.post("/v1/chat/completions", json=body).json()["choices"]
    finally:
        proc.send_signal(getattr(signal, stop))
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "lmforge serve: stopping" in err
    assert f"listening on http://127.0.0.1:{port}" in err
    assert "  gpt: text-generation (" in err and "  llama: text-generation, chat (" in err
    assert f"  gpt: text-generation ({dirs['gpt']}); float32, decoding eagerly" in err  # nothing measured
    assert "curl http://127.0.0.1:" in err and "Bearer $LMFORGE_API_KEY" in err


@pytest.mark.parametrize("given", ["--api-key-file", "--api-key"])
def test_the_command_takes_its_key_from_a_file_and_warns_of_one_on_its_command_line(
    dirs: dict[str, Path], tmp_path: Path, given: str
) -> None:
    """`lmforge serve --api-key-file PATH` as a process: the file's key is the one asked for (before
    $LMFORGE_API_KEY), the banner shows `$(cat PATH)`, no warning. `--api-key KEY`: one warning line,
    that other users can read the key in the process list. Neither ever prints the key."""
    import shlex
    import signal
    import subprocess

    key = "s3cret-9f2c1d"
    path = tmp_path / "secrets" / "api key"
    path.parent.mkdir()
    path.write_text(key + "\n")
    port = free_port()
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "LMFORGE_API_KEY": "from-env"}
    option = [given, str(path) if given == "--api-key-file" else key]
    argv = serve_argv(dirs["gpt"], "--port", port, "--dtype", "fp32")
    proc = subprocess.Popen([*argv, *option], env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(port, proc)
        body = {"model": "gpt", "prompt": "a", "max_tokens": 2}
        url = f"http://127.0.0.1:{port}/v1/completions"
        for wrong in (None, "from-env"):
            headers = {} if wrong is None else {"Authorization": f"Bearer {wrong}"}
            assert httpx.post(url, json=body, headers=headers, timeout=30).status_code == 401
        r = httpx.post(url, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert r.status_code == 200, r.text
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert key not in err
    warnings = [line for line in err.splitlines() if line.startswith("lmforge serve: warning: ")]
    if given == "--api-key-file":
        assert f'-H "Authorization: Bearer $(cat {shlex.quote(str(path))})"' in err
        assert warnings == [], warnings
    else:
        assert "-H 'Authorization: Bearer <your --api-key>'" in err
        assert len(warnings) == 1 and "process list" in warnings[0] and "--api-key-file" in warnings[0]


def test_serve_without_its_extra_is_one_line(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """`pip install -e .` has no fastapi/uvicorn (the [serve] extra): one line naming what to install."""
    import sys

    from lmforge.cli import main

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn raises ImportError
    assert main(["serve", str(dirs["gpt"])]) == 2
    err = capsys.readouterr().err
    assert err == (
        "lmforge: error: lmforge serve needs fastapi and uvicorn (uvicorn is missing): pip install fastapi"
        " uvicorn (in a checkout of lmforge: pip install -e '.[serve]')\n"
    )


def test_two_models_of_one_id_are_one_line_naming_which(
    dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same directory twice was told its id 'is already taken' by itself."""
    with pytest.raises(LmforgeError, match=r": given twice \(as .*\); serve each model once$"):
        load_models([dirs["gpt"], dirs["gpt"]], dtype="fp32")
    namesake = tmp_path / "other" / dirs["gpt"].name
    shutil.copytree(dirs["gpt"], namesake)
    with pytest.raises(LmforgeError, match=r"is already taken by .*; serve directories with different"):
        load_models([dirs["gpt"], namesake], dtype="fp32")
    loaded: list[Any] = []  # said before any model loads (a first compile is a minute a model)
    with monkeypatch.context() as m:
        m.setattr("lmforge.server.models.load_one", lambda *a: loaded.append(a))
        with pytest.raises(LmforgeError, match="already taken"):
            load_models([dirs["gpt"], dirs["llama"], namesake], dtype="fp32")
    assert loaded == []


def test_a_request_without_the_key_is_refused_before_its_body_is_read(models: dict[str, Any]) -> None:
    """As OpenAI's API: a keyless request learns nothing of its body (not JSON, too large, an
    unknown route under /v1/) before the 401; with the key the same bodies get their 400/413/404."""
    from lmforge.server.app import MAX_BODY_BYTES

    key = {"Authorization": "Bearer k"}
    bodies = [("/v1/completions", b"not json"), ("/v1/chat/completions", b"x" * (MAX_BODY_BYTES + 1)),
              ("/v1/nowhere", b"{}")]  # fmt: skip
    with client(models, api_key="k") as c:
        for route, body in bodies:
            r = c.post(route, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (route, r.text)
            assert r.json()["error"]["code"] == "invalid_api_key"
        got = [c.post(route, content=body, headers={**key, "content-type": "application/json"}).status_code
               for route, body in bodies]  # fmt: skip
        assert got == [400, 413, 404]
        assert c.get("/").status_code == 200  # the playground's page asks for the key itself


def test_the_pages_files_are_revalidated(models: dict[str, Any]) -> None:
    """The page and its scripts carry `Cache-Control: no-cache`: a browser asks again each time (a
    304 while a file is unchanged), so after an upgrade it never runs old scripts under the new page
    (until 2026-12-08 the scripts had none, and Chromium kept them for days by heuristic freshness)."""
    from lmforge.server.playground import STATIC

    with client(models) as c:
        assert c.get("/").headers["cache-control"] == "no-cache"
        for path in sorted(STATIC.iterdir()):
            r = c.get(f"/static/{path.name}")
            assert r.status_code == 200 and r.headers["cache-control"] == "no-cache", path.name
            again = c.get(f"/static/{path.name}", headers={"if-none-match": r.headers["etag"]})
            assert again.status_code == 304 and again.headers["cache-control"] == "no-cache", path.name
