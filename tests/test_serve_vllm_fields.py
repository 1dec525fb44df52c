"""vLLM's request fields on /v1/completions and /v1/chat/completions: ignore_eos, stop_token_ids and
include_stop_str_in_output decode as vLLM's SamplingParams define them (streamed and not, with n > 1
and a batch of prompts); the fields lmforge does not implement (bad_words, allowed_token_ids,
use_beam_search, prompt_logprobs; on chat echo, chat_template, modalities other than text, and
add_generation_prompt / continue_final_message asking for a prompt it does not render) are a 400
`unsupported_parameter` naming the field, their off values still taken; a message's text parts are
joined by newlines, as vLLM joins them. On a tiny random Llama with a ChatML template, whose EOS
ids (2, 0) a logit_bias forces."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from test_chat import make_chat_llama  # noqa: E402

from lmforge.server.app import Settings, create_app  # noqa: E402
from lmforge.server.models import load_models  # noqa: E402

ROUTES = ["/v1/completions", "/v1/chat/completions"]
HELLO = [{"role": "user", "content": "Who is the king?"}]
EOS_FIRST = {"logit_bias": {"2": 100, "0": 100}}  # the model's EOS ids (and ChatML's end of turn)


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("vllm") / "llama"
    make_chat_llama(directory)
    return directory


@pytest.fixture(scope="module")
def api(llama: Path) -> Iterator[TestClient]:
    app = create_app(load_models([llama], dtype="fp32"), Settings(max_tokens_limit=100))
    with TestClient(app) as c:
        yield c


def body(route: str, **fields: Any) -> dict[str, Any]:
    base = {"model": "llama", "temperature": 0, "max_tokens": 8}
    base |= {"messages": HELLO} if "chat" in route else {"prompt": "the king"}
    return {**base, **fields}


def post(api: TestClient, route: str, **fields: Any) -> dict[str, Any]:
    r = api.post(route, json=body(route, **fields))
    assert r.status_code == 200, r.text
    return r.json()


def texts(reply: dict[str, Any]) -> list[tuple[str, str]]:
    """(text, finish_reason) of each choice."""
    return [
        (c["message"]["content"] if "message" in c else c["text"], c["finish_reason"])
        for c in reply["choices"]
    ]


def streamed(api: TestClient, route: str, **fields: Any) -> list[tuple[str, str]]:
    """(text, finish_reason) of each choice, as the stream's chunks add up."""
    got: dict[int, list[str]] = {}
    with api.stream("POST", route, json=body(route, stream=True, **fields)) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            for c in json.loads(line[6:])["choices"]:
                text = c["delta"].get("content") if "delta" in c else c["text"]
                got.setdefault(c["index"], ["", ""])[0] += text or ""
                got[c["index"]][1] = c["finish_reason"] or got[c["index"]][1]
    return [(t, f) for t, f in (got[i] for i in sorted(got))]


def every_way(api: TestClient, route: str, **fields: Any) -> list[tuple[str, str]]:
    """The one (text, finish_reason) of a request, checked alike streamed and not, with n: 2 and
    (completions) a batch of two prompts."""
    one = texts(post(api, route, **fields))
    assert len(one) == 1
    many = {"n": 2} | ({"prompt": ["the king", "the king"]} if "chat" not in route else {})
    count = 4 if "chat" not in route else 2
    assert texts(post(api, route, **fields, **many)) == one * count
    assert streamed(api, route, **fields) == one
    assert streamed(api, route, **fields, **many) == one * count
    return one[0]


def greedy(api: TestClient, route: str, llama: Path) -> tuple[list[int], list[str]]:
    """The greedy reply's token ids and texts (of 8 tokens: none ends it)."""
    from transformers import AutoTokenizer

    logprobs = {"logprobs": True} if "chat" in route else {"logprobs": 0}
    reply = post(api, route, **logprobs)["choices"][0]
    assert reply["finish_reason"] == "length"
    tokens = (
        [e["token"] for e in reply["logprobs"]["content"]] if "chat" in route else reply["logprobs"]["tokens"]
    )
    return AutoTokenizer.from_pretrained(llama).convert_tokens_to_ids(tokens), tokens


@pytest.mark.parametrize("route", ROUTES)
def test_ignore_eos_runs_past_the_eos_to_max_tokens(api: TestClient, route: str) -> None:
    """vLLM's: the EOS is a token as any other, detokenized without special tokens (so no text)."""
    assert every_way(api, route, **EOS_FIRST) == ("", "stop")
    assert every_way(api, route, **EOS_FIRST, ignore_eos=True) == ("", "length")
    assert post(api, route, **EOS_FIRST, ignore_eos=True)["usage"]["completion_tokens"] == 8
    assert texts(post(api, route, ignore_eos=False)) == texts(post(api, route))


@pytest.mark.parametrize("route", ROUTES)
def test_stop_token_ids_end_the_reply_before_the_token(api: TestClient, route: str, llama: Path) -> None:
    ids, tokens = greedy(api, route, llama)
    # a token after whole ASCII ones, seen there for the first time: the text before it is theirs
    i = next(
        i
        for i in range(1, len(ids))
        if tokens[i].isascii()
        and tokens[: i + 1] == [t for t in tokens[: i + 1] if t.isascii()]
        and ids[i] not in ids[:i]
    )
    before = "".join(tokens[:i])
    assert every_way(api, route, stop_token_ids=[ids[i]]) == (before, "stop")
    assert post(api, route, stop_token_ids=[ids[i]])["usage"]["completion_tokens"] == i
    kept = every_way(api, route, stop_token_ids=[ids[i]], include_stop_str_in_output=True)
    assert kept == (before + tokens[i], "stop")
    assert every_way(api, route, stop_token_ids=[ids[i]], ignore_eos=True, **EOS_FIRST) == ("", "length")


@pytest.mark.parametrize("route", ROUTES)
def test_include_stop_str_in_output_keeps_the_stop_string(api: TestClient, route: str) -> None:
    text, _ = texts(post(api, route))[0]
    stop = text[2:4]
    assert stop and stop not in text[:3]
    assert every_way(api, route, stop=stop) == (text[:2], "stop")
    assert every_way(api, route, stop=[stop], include_stop_str_in_output=True) == (text[:4], "stop")


REFUSED = [("bad_words", ["the"], []), ("allowed_token_ids", [5, 6], None), ("use_beam_search", True, False),
           ("prompt_logprobs", 0, None), ("prompt_logprobs", 2, None), ("skip_special_tokens", False, True),
           ("logits_processors", ["x"], []), ("return_tokens_as_token_ids", True, False)]  # fmt: skip
CHAT_REFUSED = [
    ("echo", True, False),
    ("chat_template", "{{ 'x' }}", None),
    ("modalities", ["text", "audio"], ["text"]),
    ("documents", [{"title": "x", "text": "y"}], None),
    ("chat_template_kwargs", {"enable_thinking": False}, {}),
    ("add_special_tokens", True, False),  # vLLM's chat default: the template writes the BOS
]


@pytest.mark.parametrize(
    "route,field,value,off",
    [(r, *f) for r in ROUTES for f in REFUSED]
    + [("/v1/chat/completions", *f) for f in CHAT_REFUSED]
    + [("/v1/completions", "add_special_tokens", False, True)],  # a completion's prompt gets its BOS
)
def test_vllm_fields_lmforge_lacks_are_refused(
    api: TestClient, route: str, field: str, value: Any, off: Any
) -> None:
    """Each got a 200 that ignored it; its off value (vLLM's default) is still taken."""
    r = api.post(route, json=body(route, **{field: value}))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["param"], error["code"]) == (field, "unsupported_parameter"), error
    assert error["message"].startswith(f"{field}: {value!r} is not supported by lmforge serve")
    assert texts(post(api, route, **{field: off})) == texts(post(api, route))


def test_a_prompt_lmforge_does_not_render_is_refused(api: TestClient) -> None:
    """lmforge starts a new turn after a user's message and continues an assistant's: a request for
    the conversation closed (no generation prompt, nothing continued), or for a new turn after an
    assistant's message, got a reply to another prompt. vLLM's way to ask for the continuation gets
    lmforge's."""
    route, continued = "/v1/chat/completions", HELLO + [{"role": "assistant", "content": "The king is"}]
    refused = [
        (HELLO, {"add_generation_prompt": False}, "unsupported_parameter"),
        (continued, {"add_generation_prompt": False}, "unsupported_parameter"),
        (continued, {"continue_final_message": False}, "unsupported_parameter"),  # vLLM: a new turn
        (continued, {"add_generation_prompt": True}, "unsupported_parameter"),
        (HELLO, {"continue_final_message": True, "add_generation_prompt": False}, "invalid_value"),
        (continued, {"continue_final_message": True, "add_generation_prompt": True}, "invalid_value"),
    ]
    for messages, fields, code in refused:
        r = api.post(route, json=body(route, messages=messages, **fields))
        assert r.status_code == 400, (fields, r.text)
        error = r.json()["error"]
        assert error["code"] == code and error["param"] in fields, error
    asked = post(api, route, messages=continued, continue_final_message=True, add_generation_prompt=False)
    assert texts(asked) == texts(post(api, route, messages=continued))
    assert texts(post(api, route, messages=continued, continue_final_message=True)) == texts(asked)
    plain = {"add_generation_prompt": True, "continue_final_message": False}
    assert texts(post(api, route, **plain)) == texts(post(api, route))


def test_text_parts_are_joined_by_newlines_as_vllm_joins_them(api: TestClient) -> None:
    route = "/v1/chat/completions"
    parts = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Who is"}, {"type": "text", "text": "the king?"}],
        }
    ]
    got = post(api, route, messages=parts)
    want = post(api, route, messages=[{"role": "user", "content": "Who is\nthe king?"}])
    assert texts(got) == texts(want) and got["usage"] == want["usage"]


def test_vllms_values_of_logprobs_seed_and_two_limits_are_taken(api: TestClient) -> None:
    """vLLM takes a completion's logprobs false as 0 and true as 1, any signed 64-bit seed (-1: none),
    and max_completion_tokens over a different max_tokens: each was a 400 here."""
    route, chat = "/v1/completions", "/v1/chat/completions"
    for flag, count in ((False, 0), (True, 1)):
        assert post(api, route, logprobs=flag)["choices"] == post(api, route, logprobs=count)["choices"]
    sampled = {"temperature": 1.0, "max_tokens": 12}
    for seed in (-5, -(2**63)):
        assert texts(post(api, route, seed=seed, **sampled)) == texts(post(api, route, seed=seed, **sampled))
    assert post(api, route, seed=-1, **sampled)["usage"]["completion_tokens"] == 12
    r = api.post(route, json=body(route, seed=-(2**63) - 1))
    assert r.status_code == 400 and r.json()["error"]["param"] == "seed", r.text
    both = post(api, chat, **EOS_FIRST, ignore_eos=True, max_tokens=3, max_completion_tokens=5, min_tokens=4)
    assert both["usage"]["completion_tokens"] == 5
