"""A prompt of P tokens and the max_tokens K it runs under must fit the model's context N (P + K <= N),
as OpenAI's API and vLLM refuse it (vLLM's `_validate_input`: "'max_tokens' or
'max_completion_tokens' is too large"): a 400 `context_length_exceeded` naming the field, before
anything is decoded, for /v1/completions (one prompt, a batch, n > 1, streamed) and
/v1/chat/completions (max_tokens, max_completion_tokens). A completion's default 16 counts; a chat
without max_tokens, or an explicit null, fills the context, N - P (vLLM's get_max_tokens), each
prompt of a batch its own. Until 2026-12-07 such a request was accepted and ended at the context
with finish_reason "length"."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from serve_helpers import make_model_dirs  # noqa: E402

from lmforge.formats.directory import load_model  # noqa: E402
from lmforge.inference.chat import ChatSpec  # noqa: E402
from lmforge.server.app import Settings, create_app  # noqa: E402
from lmforge.server.models import load_models  # noqa: E402

PROMPT = "ROMEO:\nthe king"  # 15 characters of the char GPT's context of 32: room for 17 tokens


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_model_dirs(tmp_path_factory.mktemp("room"))


@pytest.fixture(scope="module")
def api(dirs: dict[str, Path]) -> Iterator[TestClient]:
    models = load_models([dirs["gpt"], dirs["llama"]], dtype="fp32")
    with TestClient(create_app(models, Settings(max_tokens_limit=300))) as c:
        yield c


def refused(r: Any, param: str) -> str:
    """The 400's message, checked to be OpenAI's context_length_exceeded naming `param`."""
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/json"), r.text
    error = r.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "context_length_exceeded",
        param,
    ), error
    return str(error["message"])


def test_a_completion_over_the_room_its_prompt_leaves_is_a_400(api: TestClient) -> None:
    body = {"model": "gpt", "prompt": PROMPT, "max_tokens": 18, "temperature": 0}
    for fields in ({}, {"stream": True}, {"n": 3}, {"stream": True, "n": 2}):  # before a stream starts
        message = refused(api.post("/v1/completions", json={**body, **fields}), "max_tokens")
        assert message == (
            "This model's maximum context length is 32 tokens. However, you requested 33 tokens"
            " (15 in the prompt, 18 in the completion: max_tokens=18). Please reduce the length of"
            " the prompt or the completion (max_tokens at most 17)."
        )
    fits = api.post("/v1/completions", json={**body, "max_tokens": 17})
    assert fits.status_code == 200 and fits.json()["usage"]["total_tokens"] <= 32, fits.text
    long = "the king is dead and long live t"  # 32: no room; without max_tokens the default 16 counts
    message = refused(api.post("/v1/completions", json={"model": "gpt", "prompt": long[:20]}), "max_tokens")
    assert "(20 in the prompt, 16 in the completion: the default max_tokens of 16)" in message
    echo = {"model": "gpt", "prompt": long, "max_tokens": 0, "echo": True}  # generates nothing: fits
    assert api.post("/v1/completions", json=echo).json()["usage"]["prompt_tokens"] == 32


def test_each_prompt_of_a_batch_is_checked(api: TestClient) -> None:
    body = {"model": "gpt", "prompt": ["the king", PROMPT, "a"], "max_tokens": 20, "temperature": 0}
    message = refused(api.post("/v1/completions", json=body), "max_tokens")
    assert "(15 in prompt item 1, 20 in the completion: max_tokens=20)" in message, message
    assert "max_tokens at most 17" in message
    ids = [[5] * 30, [6] * 2]  # token-id prompts count the same
    assert "(30 in prompt item 0, 3 in" in refused(
        api.post("/v1/completions", json={**body, "prompt": ids, "max_tokens": 3}), "max_tokens"
    )


def test_a_chat_names_the_field_it_was_given(api: TestClient, dirs: dict[str, Path]) -> None:
    _, tok = load_model(dirs["llama"])
    talk = [{"role": "user", "content": "Who is the king? " * 12}]
    n = len(tok.encode(ChatSpec.read(dirs["llama"], tok).render(talk)))
    room = 256 - n  # the Llama's context
    assert 0 < room < 300
    body = {"model": "llama", "messages": talk, "temperature": 0}
    for key in ("max_tokens", "max_completion_tokens"):
        for stream in (False, True):
            r = api.post("/v1/chat/completions", json={**body, key: room + 1, "stream": stream})
            message = refused(r, key)
            assert f"({n} in the messages, {room + 1} in the completion: {key}={room + 1})" in message
            assert f"the messages or the completion ({key} at most {room})" in message
    r = api.post("/v1/chat/completions", json={**body, "max_tokens": room})
    assert r.status_code == 200, r.text


def test_a_chat_without_max_tokens_fills_the_context(api: TestClient, dirs: dict[str, Path]) -> None:
    """vLLM's get_max_tokens: the context less the prompt (here under --max-tokens-limit's 300); the
    reply ends with "length" there, never past it."""
    _, tok = load_model(dirs["llama"])
    spec = ChatSpec.read(dirs["llama"], tok)
    talk = [{"role": "user", "content": "Who is the king? " * 12}]
    n = len(tok.encode(spec.render(talk)))
    banned = {str(i): -100 for i in spec.stops}
    body = {"model": "llama", "messages": talk, "temperature": 0, "logit_bias": banned}
    r = api.post("/v1/chat/completions", json=body).json()  # its end of turn banned: it runs to the end
    assert r["choices"][0]["finish_reason"] == "length"
    assert r["usage"] == {"prompt_tokens": n, "completion_tokens": 256 - n, "total_tokens": 256}
    full = [{"role": "user", "content": talk[0]["content"] + "a" * (256 - n)}]  # one token an "a"
    assert len(tok.encode(spec.render(full))) == 256
    message = refused(api.post("/v1/chat/completions", json={**body, "messages": full}), "messages")
    assert "resulted in 256 tokens, which leaves no room for a reply" in message


def test_an_explicit_null_max_tokens_fills_the_room(api: TestClient) -> None:
    """vLLM: only an absent max_tokens means a completion's 16; null fills the context less the
    prompt (the playground's empty Max tokens sends it)."""
    body = {"model": "gpt", "prompt": PROMPT, "temperature": 0, "max_tokens": None, "min_tokens": 17}
    reply = api.post("/v1/completions", json=body).json()
    assert reply["usage"]["completion_tokens"] == 17 and reply["choices"][0]["finish_reason"] == "length"
    absent = {k: v for k, v in body.items() if k != "max_tokens"} | {"min_tokens": 16}
    assert api.post("/v1/completions", json=absent).json()["usage"]["completion_tokens"] == 16
    chat = {"model": "llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": None}
    assert api.post("/v1/chat/completions", json=chat).status_code == 200


def test_a_null_max_tokens_gives_each_prompt_of_a_batch_its_own_room(api: TestClient) -> None:
    """vLLM's get_max_tokens per prompt: a batch's short prompt runs to its own room, not to its
    longest prompt's (each of its n choices, streamed or not); until 2026-12-07 every prompt got the
    longest prompt's room and a shorter one ended early with "length"."""
    batch = [PROMPT, PROMPT + " king"]  # 15 and 20 tokens of a context of 32: rooms of 17 and 12
    # min_tokens up to the smaller room bans an early EOS: each row runs to its own room
    body = {"model": "gpt", "prompt": batch, "temperature": 0, "max_tokens": None, "min_tokens": 12}
    body |= {"n": 2, "logprobs": 0}
    reply = api.post("/v1/completions", json=body).json()
    got = [(len(c["logprobs"]["tokens"]), c["finish_reason"]) for c in reply["choices"]]
    assert got == [(17, "length")] * 2 + [(12, "length")] * 2, reply
    assert reply["usage"] == {"prompt_tokens": 35, "completion_tokens": 58, "total_tokens": 93}
    streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
    events = api.post("/v1/completions", json=streamed).text.split("\n\n")
    chunks = [json.loads(e[len("data: ") :]) for e in events if e.startswith("data: {")]
    tokens, finish = [0] * 4, [None] * 4
    for chunk in chunks:
        for c in chunk["choices"]:
            tokens[c["index"]] += len((c["logprobs"] or {}).get("tokens", []))
            finish[c["index"]] = finish[c["index"]] or c["finish_reason"]
    assert tokens == [17, 17, 12, 12] and finish == ["length"] * 4, chunks
    assert chunks[-1]["usage"]["completion_tokens"] == 58
    full = "the king is dead and long live t"  # 32 tokens: no room for one
    r = api.post("/v1/completions", json={**body, "prompt": [PROMPT, full]})
    message = refused(r, "prompt")
    assert "However, prompt item 1 resulted in 32 tokens, which leaves no room for a reply." in message


def test_min_tokens_over_the_max_tokens_a_request_runs_under_is_a_400(api: TestClient) -> None:
    """An absent max_tokens (16) or a null one (the prompt's room) is the limit min_tokens must fit
    under, as vLLM checks it on the max_tokens it settles (the explicit case was refused already):
    both were answered with fewer tokens than min_tokens, ending "length"."""
    long = PROMPT + "s and queens."  # 28 characters: room for 4
    for fields in (
        {"max_tokens": None, "prompt": long},
        {"prompt": PROMPT},
        {"max_tokens": None, "prompt": [PROMPT, long]},
    ):
        r = api.post(
            "/v1/completions",
            json={"model": "gpt", "min_tokens": 5 if "max_tokens" in fields else 17, **fields},
        )
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert (error["param"], error["code"]) == ("min_tokens", "invalid_value"), error
        assert error["message"].startswith("min_tokens="), error
    ok = api.post(
        "/v1/completions", json={"model": "gpt", "prompt": long, "max_tokens": None, "min_tokens": 4}
    )
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 4, ok.text
