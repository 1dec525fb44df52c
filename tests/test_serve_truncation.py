"""vLLM's truncate_prompt_tokens on /v1/completions and /v1/chat/completions: the prompt keeps its
LAST k tokens (vLLM's left truncation for generation), so the reply at temperature 0 is lmforge's own
decoding of those k tokens, usage counts k, echo gives their text; -1 keeps the context less the
reply's max_tokens (vLLM's max_model_len - max_tokens); 0 or more than the context is a 400 naming
the field. (/v1/embeddings' truncation: test_serve_embeddings.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from serve_helpers import make_model_dirs  # noqa: E402

from lmforge.formats.directory import load_model  # noqa: E402
from lmforge.inference.chat import ChatSpec  # noqa: E402
from lmforge.inference.generate import generate_ids  # noqa: E402
from lmforge.server.app import Settings, create_app  # noqa: E402
from lmforge.server.models import load_models  # noqa: E402

LONG = "ROMEO:\nthe king is dead and long live the king\n"  # 47 characters: over the char GPT's 32
TALK = [{"role": "user", "content": "Who is the king? " * 3}]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_model_dirs(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def api(dirs: dict[str, Path]) -> Iterator[TestClient]:
    models = load_models([dirs["gpt"], dirs["llama"]], dtype="fp32")
    with TestClient(create_app(models, Settings(max_tokens_limit=300))) as c:
        yield c


def complete(api: TestClient, **fields: Any) -> Any:
    """A completion of LONG; max_tokens=ABSENT leaves the field out (an explicit null fills the room)."""
    body = {"model": "gpt", "prompt": LONG, "max_tokens": 6, "temperature": 0, **fields}
    return api.post("/v1/completions", json={k: v for k, v in body.items() if v is not ABSENT})


ABSENT = object()


def test_a_completion_keeps_the_prompt_s_last_tokens(api: TestClient, dirs: dict[str, Path]) -> None:
    net, tok = load_model(dirs["gpt"])
    ids = tok.encode(LONG)
    assert len(ids) > 32 and complete(api).status_code == 400  # over the context, and not cut
    r = complete(api, truncate_prompt_tokens=10)
    assert r.status_code == 200, r.text
    body = r.json()
    want = generate_ids(net, [ids[-10:]], 6, 0.0, eos_id=tok.eos_id)[0]
    assert body["choices"][0]["text"] == tok.decode(want)
    assert body["usage"]["prompt_tokens"] == 10
    echo = complete(api, truncate_prompt_tokens=10, echo=True).json()["choices"][0]["text"]
    assert echo == tok.decode(ids[-10:]) + tok.decode(want) and echo.endswith("the king\n" + tok.decode(want))
    by_ids = complete(api, prompt=ids, truncate_prompt_tokens=10).json()  # token ids are cut the same
    assert by_ids["choices"] == body["choices"]
    whole = complete(api, truncate_prompt_tokens=-1, max_tokens=1).json()  # -1: the context less 1
    assert whole["usage"]["prompt_tokens"] == 31
    short = complete(api, prompt="the king", truncate_prompt_tokens=20).json()  # shorter: unchanged
    assert short["choices"] == complete(api, prompt="the king").json()["choices"]


def test_a_chat_keeps_the_conversation_s_last_tokens(api: TestClient, dirs: dict[str, Path]) -> None:
    net, tok = load_model(dirs["llama"])
    spec = ChatSpec.read(dirs["llama"], tok)
    prompt = tok.encode(spec.render(TALK))
    k = len(prompt) // 2
    body = {"model": "llama", "messages": TALK, "max_tokens": 8, "temperature": 0}
    r = api.post("/v1/chat/completions", json={**body, "truncate_prompt_tokens": k})
    assert r.status_code == 200, r.text
    want = generate_ids(net, [prompt[-k:]], 8, 0.0, eos_id=spec.stops)[0]
    assert r.json()["choices"][0]["message"]["content"] == tok.decode(want)
    assert r.json()["usage"]["prompt_tokens"] == k


def test_minus_one_leaves_the_reply_its_max_tokens(api: TestClient, dirs: dict[str, Path]) -> None:
    """-1 kept the whole context, so a reply stopped at its first token ("length"); vLLM keeps
    max_model_len - max_tokens (vllm/renderers/params.py, TokenizeParams.max_input_tokens)."""
    net, tok = load_model(dirs["gpt"])
    ids = tok.encode(LONG)
    r = complete(api, truncate_prompt_tokens=-1)  # max_tokens 6 of the context's 32
    assert r.status_code == 200, r.text
    want = generate_ids(net, [ids[-26:]], 6, 0.0, eos_id=tok.eos_id)[0]
    assert r.json()["choices"][0]["text"] == tok.decode(want)
    assert r.json()["usage"] == {
        "prompt_tokens": 26,
        "completion_tokens": len(want),
        "total_tokens": 26 + len(want),
    }
    default = complete(api, truncate_prompt_tokens=-1, max_tokens=ABSENT).json()  # OpenAI's default, 16
    assert default["usage"]["prompt_tokens"] == 16
    assert (
        complete(api, truncate_prompt_tokens=-1, max_tokens=0, echo=True).json()["usage"]["prompt_tokens"]
        == 32
    )

    net, tok = load_model(dirs["llama"])
    spec = ChatSpec.read(dirs["llama"], tok)
    talk = [{"role": "user", "content": "Who is the king? " * 60}]
    prompt = tok.encode(spec.render(talk))
    assert len(prompt) > 256  # the Llama's context
    body = {"model": "llama", "messages": talk, "temperature": 0, "truncate_prompt_tokens": -1}
    r = api.post("/v1/chat/completions", json={**body, "max_completion_tokens": 8})
    assert r.status_code == 200, r.text
    want = generate_ids(net, [prompt[-248:]], 8, 0.0, eos_id=spec.stops)[0]
    assert r.json()["choices"][0]["message"]["content"] == tok.decode(want)
    assert r.json()["usage"]["prompt_tokens"] == 248
    # no room: the reply's tokens fill the context (a chat's default is --max-tokens-limit, 300 here)
    for r in (
        api.post("/v1/chat/completions", json=body),
        complete(api, truncate_prompt_tokens=-1, max_tokens=32),
    ):
        error = r.json()["error"]
        assert r.status_code == 400 and error["param"] == "truncate_prompt_tokens", error
        assert "leaves no prompt" in error["message"], error


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/v1/completions", {"model": "gpt", "prompt": "the king", "truncate_prompt_tokens": 0}),
        ("/v1/completions", {"model": "gpt", "prompt": "the king", "truncate_prompt_tokens": 33}),
        ("/v1/completions", {"model": "gpt", "prompt": "the king", "truncate_prompt_tokens": -2}),
        ("/v1/chat/completions", {"model": "llama", "messages": TALK, "truncate_prompt_tokens": 0}),
    ],
)
def test_a_bad_truncation_is_a_400_naming_it(api: TestClient, route: str, body: dict[str, Any]) -> None:
    r = api.post(route, json=body)
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "truncate_prompt_tokens", error


def test_a_k_that_leaves_the_reply_no_room_is_a_400(api: TestClient, dirs: dict[str, Path]) -> None:
    """k over the context less max_tokens ended the reply at its first token ("length"); vLLM
    refuses it (vllm/renderers/params.py: k <= max_model_len - max_output_tokens), counting a
    completion's default of 16 and, for a chat, only the max_tokens it names."""
    for fields in ({"truncate_prompt_tokens": 32}, {"truncate_prompt_tokens": 27}):  # 32 - 6 = 26 fit
        error = complete(api, **fields).json()["error"]
        assert error["param"] == "truncate_prompt_tokens" and "at most 26" in error["message"], error
    assert complete(api, truncate_prompt_tokens=26).json()["usage"]["prompt_tokens"] == 26
    error = complete(api, truncate_prompt_tokens=17, max_tokens=ABSENT).json()["error"]  # default 16
    assert "at most 16" in error["message"], error
    talk = [{"role": "user", "content": "Who is the king? " * 60}]
    body = {"model": "llama", "messages": talk, "temperature": 0, "truncate_prompt_tokens": 256}
    r = api.post("/v1/chat/completions", json={**body, "max_tokens": 8})
    assert r.status_code == 400 and "at most 248" in r.json()["error"]["message"], r.text
    r = api.post("/v1/chat/completions", json={**body, "truncate_prompt_tokens": 248, "max_tokens": 8})
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 248, r.text
    # no max_tokens: vLLM's 0 for k, then the reply fills the context; one that is full is a 400
    r = api.post("/v1/chat/completions", json={**body, "truncate_prompt_tokens": 255})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 1, r.text
    error = api.post("/v1/chat/completions", json=body).json()["error"]
    assert (error["param"], error["code"]) == ("messages", "context_length_exceeded"), error
