"""`logprobs` in OpenAI's shapes: each generated token's log-probability and its top alternatives
equal a direct forward pass's log_softmax (within 1e-4) on tiny random models, whatever the
temperature; a stream's per-chunk logprobs joined equal the unstreamed ones; rows decoded together
in one batch get the logprobs they get alone; the official `openai` client reads them; bad values
are 400s."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402
from serve_helpers import make_model_dirs, running  # noqa: E402

from lmforge.formats.directory import load_model  # noqa: E402
from lmforge.inference.chat import ChatSpec  # noqa: E402
from lmforge.inference.generate import generate_ids  # noqa: E402
from lmforge.server.app import Settings, create_app  # noqa: E402
from lmforge.server.models import load_models  # noqa: E402

PROMPT = "ROMEO:\nthe king"
HELLO = [{"role": "user", "content": "Who is the king?"}]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    made = make_model_dirs(tmp_path_factory.mktemp("logprobs"))
    return {k: made[k] for k in ("gpt", "llama")}


@pytest.fixture(scope="module")
def app(dirs: dict[str, Path]) -> Any:
    return create_app(load_models(list(dirs.values()), dtype="fp32"), Settings(max_tokens_limit=100))


@pytest.fixture(scope="module")
def api(app: Any) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def url(app: Any) -> Iterator[str]:
    """The same app behind uvicorn (one server for the module: stopping it closes the batcher)."""
    with running(app) as where:
        yield where


def direct(directory: Path, prompt: list[int], generated: list[int]) -> torch.Tensor:
    """log_softmax of one forward pass over prompt + generated: (len(generated), vocab), row i the
    distribution token i was drawn from."""
    net, _ = load_model(directory)
    with torch.no_grad():
        logits = net(torch.tensor([prompt + generated]))[0].float()  # (T, vocab)
    return torch.log_softmax(logits, dim=-1)[len(prompt) - 1 : len(prompt) - 1 + len(generated)]


def shown(tok: Any, token: int) -> str:
    """A char token's text in the logprobs: the character, or a special token's name."""
    return tok.decode([token]) or tok.hf.id_to_token(token)


def raw_bytes(tok: Any, token: int) -> bytes:
    """A byte-level BPE token's bytes, by transformers' own byte map (GPT-2's bytes_to_unicode)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    piece = tok.hf.id_to_token(token)
    return bytes(byte_of[c] for c in piece) if all(c in byte_of for c in piece) else piece.encode()


def openai_text(raw: bytes) -> str:
    """OpenAI's text for a token: UTF-8, or `bytes:\\xNN...` for part of a character."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)


def sse(text: str) -> list[dict[str, Any]]:
    return [json.loads(b[6:]) for b in text.split("\n\n") if b.startswith("data: {")]


def completion(api: TestClient, **fields: Any) -> dict[str, Any]:
    body = {"model": "gpt", "prompt": PROMPT, "max_tokens": 12, "temperature": 0, "logprobs": 3, **fields}
    r = api.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("temperature", [0, 0.7])
def test_completion_logprobs_equal_a_forward_pass(
    api: TestClient, dirs: dict[str, Path], temperature: float
) -> None:
    got = completion(api, temperature=temperature, seed=3)
    choice = got["choices"][0]
    lp = choice["logprobs"]
    assert set(lp) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    _, tok = load_model(dirs["gpt"])
    prompt = tok.encode(PROMPT)
    ids = [tok.hf.token_to_id(t) for t in lp["tokens"]]  # a character, or a special token's name
    stopped = ids[-1] == tok.eos_id  # the EOS a completion stops at is listed (as OpenAI's), not counted
    assert len(ids) == got["usage"]["completion_tokens"] + stopped and None not in ids
    assert "".join(tok.decode([i]) for i in ids) == choice["text"]  # specials shown, not in the text
    assert lp["text_offset"] == [len(tok.decode(ids[:i])) for i in range(len(ids))]
    want = direct(dirs["gpt"], prompt, ids)
    # the raw distribution's log-probabilities, before temperature (vLLM's default logprobs_mode)
    assert lp["token_logprobs"] == pytest.approx(
        want.gather(1, torch.tensor(ids)[:, None])[:, 0].tolist(), abs=1e-4
    )
    for row, top in zip(want, lp["top_logprobs"], strict=True):
        values, index = row.topk(3)
        best = {shown(tok, i): v for i, v in zip(index.tolist(), values.tolist(), strict=True)}
        assert set(best) <= set(top) and len(top) <= 4  # the top 3, and the chosen token if not among them
        assert [top[k] for k in best] == pytest.approx(list(best.values()), abs=1e-4)


def test_chat_logprobs_equal_a_forward_pass_streamed_or_not(api: TestClient, dirs: dict[str, Path]) -> None:
    body = {"model": "llama", "messages": HELLO, "max_tokens": 15, "temperature": 0, "logprobs": True}
    plain = api.post("/v1/chat/completions", json={**body, "top_logprobs": 2}).json()
    logprobs = plain["choices"][0]["logprobs"]
    content = logprobs["content"]
    assert logprobs["refusal"] is None
    net, tok = load_model(dirs["llama"])
    spec = ChatSpec.read(dirs["llama"], tok)
    prompt = tok.encode(spec.render(HELLO))
    ids = generate_ids(net, [prompt], 15, 0.0, eos_id=spec.stops)[0]
    assert [c["bytes"] for c in content] == [list(raw_bytes(tok, i)) for i in ids]
    assert [c["token"] for c in content] == [openai_text(raw_bytes(tok, i)) for i in ids]
    joined = b"".join(bytes(c["bytes"]) for c in content).decode(errors="replace")
    text = plain["choices"][0]["message"]["content"]  # without a last, unfinished character
    assert joined.startswith(text) and set(joined[len(text) :]) <= {"\ufffd"}
    want = direct(dirs["llama"], prompt, ids)
    chosen = want.gather(1, torch.tensor(ids)[:, None])[:, 0].tolist()
    assert [c["logprob"] for c in content] == pytest.approx(chosen, abs=1e-4)
    for c, row in zip(content, want, strict=True):
        values, index = row.topk(2)
        assert [t["bytes"] for t in c["top_logprobs"]] == [list(raw_bytes(tok, i)) for i in index.tolist()]
        assert [t["logprob"] for t in c["top_logprobs"]] == pytest.approx(values.tolist(), abs=1e-4)
        assert c["top_logprobs"][0]["token"] == c["token"]  # greedy: the chosen token is the likeliest

    chunks = sse(api.post("/v1/chat/completions", json={**body, "top_logprobs": 2, "stream": True}).text)
    with_text = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert all(c["logprobs"]["content"] for c in with_text)  # each text chunk carries its tokens'
    joined = [
        e
        for c in chunks
        if c["choices"] and c["choices"][0]["logprobs"]
        for e in c["choices"][0]["logprobs"]["content"]
    ]
    assert joined == content
    no_top = api.post("/v1/chat/completions", json=body).json()["choices"][0]["logprobs"]["content"]
    assert [c["top_logprobs"] for c in no_top] == [[]] * len(content)  # top_logprobs defaults to 0
    off = api.post("/v1/chat/completions", json={**body, "logprobs": False}).json()
    assert off["choices"][0]["logprobs"] is None


def test_streamed_completion_logprobs_equal_the_unstreamed(api: TestClient) -> None:
    plain = completion(api, stop="ng")["choices"][0]
    body = {"model": "gpt", "prompt": PROMPT, "max_tokens": 12, "temperature": 0, "logprobs": 3}
    chunks = sse(api.post("/v1/completions", json={**body, "stop": "ng", "stream": True}).text)
    joined: dict[str, list[Any]] = {k: [] for k in plain["logprobs"]}
    for c in chunks:
        for k, v in (c["choices"][0]["logprobs"] or {}).items():
            joined[k] += v
    assert joined == plain["logprobs"]
    assert "".join(c["choices"][0]["text"] for c in chunks) == plain["text"]


def test_rows_in_one_batch_get_the_logprobs_they_get_alone(app: Any, url: str) -> None:
    bodies = [
        {"model": "gpt", "prompt": "a", "max_tokens": 20, "temperature": 0, "logprobs": 2},
        {"model": "gpt", "prompt": PROMPT, "max_tokens": 9, "temperature": 1.0, "seed": 4, "logprobs": 1},
        {"model": "gpt", "prompt": "KING:\nwhat say you", "max_tokens": 14, "temperature": 0},
    ]
    state = app.state.lmforge
    alone = [httpx.post(url + "/v1/completions", json=b, timeout=30).json()["choices"] for b in bodies]
    gate = threading.Event()  # hold the decode loop so that all three join one batch
    state.decoder.batcher.submit(gate.wait, 30)
    together: list[Any] = [None] * len(bodies)

    def send(i: int) -> None:
        together[i] = httpx.post(url + "/v1/completions", json=bodies[i], timeout=30).json()["choices"]

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while state.decoder.admitted < len(bodies) and time.monotonic() < deadline:
        time.sleep(0.01)
    state.decoder.batcher.peak = 0
    gate.set()
    for t in threads:
        t.join(30)
    assert state.decoder.batcher.peak == 3
    for a, b in zip(alone, together, strict=True):
        assert a[0]["text"] == b[0]["text"]
        if a[0]["logprobs"] is None:
            assert b[0]["logprobs"] is None
            continue
        assert a[0]["logprobs"]["tokens"] == b[0]["logprobs"]["tokens"]
        assert b[0]["logprobs"]["token_logprobs"] == pytest.approx(
            a[0]["logprobs"]["token_logprobs"], abs=1e-4
        )
        for x, y in zip(a[0]["logprobs"]["top_logprobs"], b[0]["logprobs"]["top_logprobs"], strict=True):
            assert x.keys() == y.keys() and list(y.values()) == pytest.approx(list(x.values()), abs=1e-4)


def test_the_openai_client_reads_them(url: str) -> None:
    openai = pytest.importorskip("openai")
    c = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    chat = c.chat.completions.create(
        model="llama", messages=HELLO, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3
    )
    content = chat.choices[0].logprobs.content
    joined = b"".join(bytes(t.bytes) for t in content).decode(errors="replace")
    assert joined.startswith(chat.choices[0].message.content)
    assert all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in content)
    stream = c.chat.completions.create(
        model="llama",
        messages=HELLO,
        max_tokens=8,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        stream=True,
    )
    streamed = [
        t for ch in stream if ch.choices and ch.choices[0].logprobs for t in ch.choices[0].logprobs.content
    ]
    assert streamed == content
    done = c.completions.create(model="gpt", prompt=PROMPT, max_tokens=6, temperature=0, logprobs=2)
    lp = done.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.text_offset) == done.usage.completion_tokens
    assert all(len(t) in (2, 3) for t in lp.top_logprobs)


BAD = [
    ("/v1/completions", {"model": "gpt", "prompt": "hi", "logprobs": 6}, "logprobs"),
    ("/v1/completions", {"model": "gpt", "prompt": "hi", "logprobs": -1}, "logprobs"),
    ("/v1/chat/completions", {"model": "llama", "messages": HELLO, "logprobs": 2}, "logprobs"),
    (
        "/v1/chat/completions",
        {"model": "llama", "messages": HELLO, "logprobs": True, "top_logprobs": 21},
        "top_logprobs",
    ),
    ("/v1/chat/completions", {"model": "llama", "messages": HELLO, "top_logprobs": 2}, None),
]


@pytest.mark.parametrize("route,body,param", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_logprobs_are_400(api: TestClient, route: str, body: dict[str, Any], param: str | None) -> None:
    r = api.post(route, json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_value" and error["param"] == param
    assert "logprobs" in error["message"], error


def test_a_token_holding_part_of_a_character_is_shown_as_its_bytes() -> None:
    from lmforge.server.logprobs import pieces
    from lmforge.tokenization.tokenizer import Tokenizer

    tok = Tokenizer.train_bpe(["caf\u00e9 na\u00efve the cat " * 20], vocab_size=300)
    first = tok.hf.token_to_id("\u00c3")  # byte 0xC3 in the byte-level alphabet: half of 'é'
    assert pieces(tok)(first) == ("bytes:\\xc3", [0xC3])
    space_the = tok.hf.token_to_id("\u0120the")  # ' the'
    assert space_the is not None and pieces(tok)(space_the) == (" the", list(b" the"))
