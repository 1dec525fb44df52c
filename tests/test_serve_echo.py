"""/v1/completions' prompt side: `echo` with `logprobs` (the prompt's log-probabilities, what
lm-evaluation-harness's local-completions reads to score choices) and token-id prompts. On tiny
random models: the prompt's log-probabilities equal log_softmax of one forward pass over it (the
first null), offsets and tokens match the text, a continuation's sum equals `lmforge eval`'s own
scoring, token ids give the text prompt's reply, streaming equals the unstreamed reply, and every
bad prompt is a 400 naming its place."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from serve_helpers import make_model_dirs  # noqa: E402

from lmforge.formats.directory import load_model  # noqa: E402
from lmforge.inference.perplexity import score  # noqa: E402
from lmforge.server.app import Settings, create_app  # noqa: E402
from lmforge.server.models import load_models  # noqa: E402

PROMPT = "ROMEO:\nthe king"
CAFE = "ROMEO: the café"  # é is two byte-level tokens in the llama's BPE: the offset rule for them


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    made = make_model_dirs(tmp_path_factory.mktemp("echo"))
    return {k: made[k] for k in ("gpt", "llama")}


@pytest.fixture(scope="module")
def api(dirs: dict[str, Path]) -> Iterator[TestClient]:
    app = create_app(load_models(list(dirs.values()), dtype="fp32"), Settings(max_tokens_limit=100))
    with TestClient(app) as c:
        yield c


def post(api: TestClient, **fields: Any) -> dict[str, Any]:
    body = {"model": "gpt", "prompt": PROMPT, "max_tokens": 0, "temperature": 0, "echo": True, **fields}
    r = api.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def forward(directory: Path, ids: list[int]) -> torch.Tensor:
    """log_softmax of the model's own forward pass over ids: (len(ids), vocab), row i the
    distribution of token i + 1."""
    net, _ = load_model(directory)
    with torch.no_grad():
        return torch.log_softmax(net(torch.tensor([ids]))[0].float(), dim=-1)


@pytest.mark.parametrize("model,prompt", [("gpt", PROMPT), ("llama", CAFE)])
def test_the_prompts_logprobs_equal_a_forward_pass(
    api: TestClient, dirs: dict[str, Path], model: str, prompt: str
) -> None:
    got = post(api, model=model, prompt=prompt, logprobs=2)
    choice, lp = got["choices"][0], got["choices"][0]["logprobs"]
    assert choice["text"] == prompt and choice["finish_reason"] == "length"  # max_tokens 0: the prompt alone
    _, tok = load_model(dirs[model])
    ids = tok.encode(prompt)
    assert got["usage"] == {"prompt_tokens": len(ids), "completion_tokens": 0, "total_tokens": len(ids)}
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(ids)
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None  # nothing predicts the first
    want = forward(dirs[model], ids)[:-1]  # row i scores token i + 1
    chosen = want.gather(1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()
    assert lp["token_logprobs"][1:] == pytest.approx(chosen, abs=1e-4)
    for row, top, token in zip(want, lp["top_logprobs"][1:], lp["tokens"][1:], strict=True):
        values = row.topk(2).values.tolist()
        assert sorted(top.values(), reverse=True)[:2] == pytest.approx(values, abs=1e-4)
        assert token in top and len(top) <= 3  # the top 2 and the chosen token
    # each token's bytes, and where its text starts: a token that completes a character shares the
    # offset of the one that began it
    raw = [tok.hf.decode([i]).encode() if model == "gpt" else _bytes(tok, i) for i in ids]
    assert b"".join(raw).decode() == prompt
    assert lp["text_offset"] == [len(b"".join(raw[:i]).decode(errors="ignore")) for i in range(len(ids))]
    if model == "llama":
        assert any(t.startswith("bytes:") for t in lp["tokens"])  # é split: shown as its bytes


def _bytes(tok: Any, token: int) -> bytes:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    return bytes(byte_of[c] for c in tok.hf.id_to_token(token))


def test_echo_then_generated_tokens_line_up(api: TestClient, dirs: dict[str, Path]) -> None:
    """With max_tokens > 0 the generated tokens follow the prompt's, as without echo; offsets count
    the echoed prompt, and the whole row equals one forward pass over prompt + reply."""
    plain = post(api, echo=False, max_tokens=8, logprobs=1)["choices"][0]
    got = post(api, max_tokens=8, logprobs=1)["choices"][0]
    assert got["text"] == PROMPT + plain["text"]
    _, tok = load_model(dirs["gpt"])
    ids, p = tok.encode(PROMPT), len(tok.encode(PROMPT))
    lp = got["logprobs"]
    assert lp["tokens"][p:] == plain["logprobs"]["tokens"]
    assert lp["token_logprobs"][p:] == plain["logprobs"]["token_logprobs"]
    assert lp["text_offset"][p:] == [len(PROMPT) + o for o in plain["logprobs"]["text_offset"]]
    assert lp["text_offset"][:p] == list(range(p))  # a char model: one character a token
    full = ids + [tok.hf.token_to_id(t) for t in plain["logprobs"]["tokens"]]
    want = forward(dirs["gpt"], full)[:-1].gather(1, torch.tensor(full[1:])[:, None])[:, 0]
    assert lp["token_logprobs"][1:] == pytest.approx(want.tolist(), abs=1e-4)


def test_offsets_index_an_echoed_prompt_with_characters_the_vocabulary_lacks(api: TestClient) -> None:
    """A char model reads them as <|unk|>, which decodes to nothing: the offsets came from that
    decoding ([0, 0, 0, 0, 1] for these five characters), not from the text echoed."""
    prompt = "\u65e5\u672c\u8a9e \U0001f600ROMEO"  # 3 ideographs, a space, an emoji, then known text
    got = post(api, prompt=prompt, logprobs=1)["choices"][0]
    assert got["text"] == prompt
    assert got["logprobs"]["text_offset"] == list(range(len(prompt)))  # one character a token


def test_lm_evals_request_runs_the_prompt_through_the_model_once(
    api: TestClient, dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """lm-eval's loglikelihood request (echo, logprobs, max_tokens 1): the prompt is scored from
    its prefill's hidden states, not by a second forward pass over it; the same log-probabilities
    as max_tokens 0 (its own forward pass, no cache)."""
    from lmforge.model.gpt import GPT

    _, tok = load_model(dirs["gpt"])
    passes: list[int] = []
    real = GPT.hidden_states

    def counted(self: GPT, idx: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        passes.append(idx.size(1))
        return real(self, idx, *args, **kwargs)

    alone = post(api, logprobs=2)["choices"][0]["logprobs"]
    monkeypatch.setattr(GPT, "hidden_states", counted)
    got = post(api, max_tokens=1, logprobs=2)["choices"][0]["logprobs"]
    assert passes.count(len(tok.encode(PROMPT))) == 1
    p = len(tok.encode(PROMPT))
    assert got["tokens"][:p] == alone["tokens"] and got["text_offset"][:p] == alone["text_offset"]
    assert got["token_logprobs"][1:p] == pytest.approx(alone["token_logprobs"][1:], abs=1e-5)
    for mine, theirs in zip(got["top_logprobs"][1:p], alone["top_logprobs"][1:], strict=True):
        assert mine.keys() == theirs.keys()
        assert list(mine.values()) == pytest.approx(list(theirs.values()), abs=1e-5)


def test_a_continuations_sum_equals_lmforges_own_scoring(api: TestClient, dirs: dict[str, Path]) -> None:
    """What lm-eval computes for a choice: the sum of the continuation's log-probabilities after
    the context, here against `lmforge eval`'s scorer (inference/perplexity.py) on the same ids."""
    context, continuation = "KING:\nwhat say", " you of the king"
    net, tok = load_model(dirs["gpt"])
    ctx, full = tok.encode(context), tok.encode(context + continuation)
    assert full[: len(ctx)] == ctx
    lp = post(api, prompt=context + continuation, logprobs=0)["choices"][0]["logprobs"]
    served = sum(lp["token_logprobs"][len(ctx) :])
    nll_full, n_full, *_ = score(net, full, len(full), len(full) - 1)
    nll_ctx, n_ctx, *_ = score(net, ctx, len(ctx), len(ctx) - 1)
    assert n_full - n_ctx == len(full) - len(ctx)
    assert served == pytest.approx(-(nll_full - nll_ctx), abs=1e-3)
    assert all(len(t) == 1 for t in lp["top_logprobs"][1:])  # logprobs 0: the chosen token alone


def test_token_id_prompts_get_the_text_prompts_reply(api: TestClient, dirs: dict[str, Path]) -> None:
    _, tok = load_model(dirs["llama"])
    texts = [CAFE, "JULIET:\nthe night"]
    ids = [tok.encode(t) for t in texts]
    fields = {"model": "llama", "max_tokens": 6, "logprobs": 2, "n": 2, "temperature": 0.8, "seed": 5}
    by_text = post(api, prompt=texts, **fields)
    by_ids = post(api, prompt=ids, **fields)
    assert len(by_ids["choices"]) == 4 and by_ids["choices"] == by_text["choices"]  # echo: decoded text
    assert by_ids["usage"] == by_text["usage"]
    one = post(api, prompt=ids[1], **{**fields, "n": 1, "echo": False})
    assert one["choices"][0]["text"] == by_text["choices"][2]["text"].removeprefix(texts[1])
    # n choices and lists of prompts: each prompt's part is the prompt's alone
    alone = post(api, model="llama", prompt=texts[1], logprobs=2)["choices"][0]["logprobs"]
    p = len(ids[1])
    for c in by_ids["choices"][2:]:
        assert {k: v[:p] for k, v in c["logprobs"].items()} == alone


def sse(text: str) -> list[dict[str, Any]]:
    return [json.loads(b[6:]) for b in text.split("\n\n") if b.startswith("data: {")]


@pytest.mark.parametrize("max_tokens", [0, 7])
def test_a_stream_sends_the_prompt_first_and_equals_the_unstreamed(api: TestClient, max_tokens: int) -> None:
    fields = {"prompt": [PROMPT, "NURSE:\nmy lord"], "n": 2, "max_tokens": max_tokens, "logprobs": 3}
    plain = post(api, **fields)["choices"]
    body = {"model": "gpt", "temperature": 0, "echo": True, "stream": True, **fields}
    chunks = sse(api.post("/v1/completions", json=body).text)
    for i, want in enumerate(plain):
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == i]
        assert mine[0]["text"] == [PROMPT, "NURSE:\nmy lord"][i // 2]  # the echo, with the prompt's logprobs
        assert mine[0]["logprobs"]["token_logprobs"][0] is None
        assert "".join(c["text"] for c in mine) == want["text"]
        joined: dict[str, list[Any]] = {k: [] for k in want["logprobs"]}
        for c in mine:
            for k, v in (c["logprobs"] or {}).items():
                joined[k] += v
        assert joined == want["logprobs"] and mine[-1]["finish_reason"] == want["finish_reason"]


def test_echo_without_logprobs_and_max_tokens_0(api: TestClient, dirs: dict[str, Path]) -> None:
    got = post(api)["choices"]
    assert got == [{"index": 0, "text": PROMPT, "logprobs": None, "finish_reason": "length"}]
    _, tok = load_model(dirs["gpt"])
    assert post(api, prompt=tok.encode(PROMPT))["choices"] == got


def test_a_completion_that_ends_at_eos_lists_it_last() -> None:
    """As OpenAI's legacy completions and vLLM: lm-eval drops a reply's last entry (max_tokens 1),
    so an EOS left out would cost a prompt token. Chat leaves its end-of-turn token out."""
    from lmforge.server.decoding import Job, Row
    from lmforge.tokenization.tokenizer import Tokenizer

    tok = Tokenizer.train_char(["ab"])
    eos = tok.eos_id
    assert eos is not None
    for listed in (True, False):
        job = Job(None, tok, [[0]], 1, 5, 0.0, 1.0, None, frozenset([eos]), [], 1e18, 1, eos_logprob=listed)
        job.rows = [Row()]
        assert not job.take(0, 1, (-0.5, [(1, -0.5)]))
        assert job.take(0, eos, (-0.1, [(eos, -0.1)]))
        assert [e.token for e in job.rows[0].logprobs] == ([1, eos] if listed else [1])
        assert job.rows[0].ids == [1] and job.rows[0].finish == "stop"  # not counted, not in the text


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_text_offsets_are_the_lengths_of_the_decoded_prefixes(kind: str) -> None:
    """The streamed offsets (one pass) equal their definition, len(decode(ids[:i])) held at the last
    whole character, on any id sequence: split characters, specials, WordPiece's '##' pieces."""
    import random

    from tokenizers import Tokenizer as HFTokenizer

    from lmforge.server.prompt_logprobs import text_offsets
    from lmforge.tokenization.tokenizer import Tokenizer

    if kind == "bpe":
        tok = Tokenizer.train_bpe(["the café ünd 日本語 🎉 naïve\n\n  x"] * 20, 300)
    else:
        tok = Tokenizer(HFTokenizer.from_file(str(Path(__file__).parent / "fixtures/bert-qa/tokenizer.json")))
    rng = random.Random(0)
    for _ in range(200):
        ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randrange(1, 24))]
        prefixes = [tok.hf.decode(ids[:i], skip_special_tokens=True) for i in range(len(ids))]
        expected, last = [], 0
        for text in prefixes:
            last = last if text.endswith("\ufffd") else len(text)
            expected.append(last)
        assert text_offsets(tok, ids) == expected, [tok.hf.id_to_token(i) for i in ids]


BAD = [
    ({"prompt": []}, "prompt: an empty list"),
    ({"prompt": [[3, 4], []]}, "prompt: item 1 is an empty list of token ids"),
    ({"prompt": [3, "a"]}, "prompt: item 1 is a string"),
    ({"prompt": [True, 3]}, "prompt: item 0 is a boolean"),
    ({"prompt": [None, 3]}, "prompt: item 0 is null"),
    ({"prompt": [[3, 4], [5, "x"]]}, "prompt: item 1, position 1: not a token id (got a string)"),
    ({"prompt": [[3, 4], [5, 1.5]]}, "prompt: item 1, position 1: not a token id (got a number)"),
    ({"prompt": {"text": "hi"}}, "prompt: must be a string"),
    (
        {"prompt": [3, 99999]},
        "prompt: position 1: token id 99999 is outside the vocabulary of model 'gpt' (ids 0-42)",
    ),
    ({"prompt": [[3], [4, -1]]}, "prompt: item 1, position 1: token id -1 is outside"),
    ({"prompt": [[3]] * 17}, "prompt: List should have at most 16 items, not 17"),
    ({"echo": False}, "max_tokens: 0 generates nothing; it needs echo: true"),
    ({"max_tokens": -1}, "max_tokens: Input should be greater than or equal to 0"),
    # one request's rows past the batch's 64: it was let in alone, holding every other request back
    ({"prompt": [[3]] * 16, "n": 5}, "n: 16 prompts x n 5 = 80 rows, over the 64 this server decodes"),
    ({"prompt": ["a"] * 5, "n": 13}, "n: 5 prompts x n 13 = 65 rows"),
]


@pytest.mark.parametrize("fields,message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_prompts_are_400(api: TestClient, fields: dict[str, Any], message: str) -> None:
    body = {"model": "gpt", "prompt": PROMPT, "max_tokens": 0, "echo": True, "logprobs": 1, **fields}
    r = api.post("/v1/completions", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_value" and error["message"].startswith(message), error
    assert error["param"] == message.split(":")[0], error  # the field named, also by a cross-field check


def test_a_request_of_64_rows_is_served(api: TestClient) -> None:
    body = {"model": "gpt", "prompt": [[3, 4]] * 16, "n": 4, "max_tokens": 1, "temperature": 0}
    r = api.post("/v1/completions", json=body)
    assert r.status_code == 200 and len(r.json()["choices"]) == 64, r.text


@pytest.mark.parametrize("prompt", ["a" * 40, [3] * 40])
def test_a_prompt_past_the_context_is_400(api: TestClient, prompt: Any) -> None:
    body = {"model": "gpt", "prompt": prompt, "max_tokens": 0, "echo": True, "logprobs": 1}
    error = api.post("/v1/completions", json=body).json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "prompt", error


def test_chat_still_needs_a_token(api: TestClient) -> None:
    body = {"model": "llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}
    r = api.post("/v1/chat/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens", r.text


@pytest.mark.parametrize("stream", [False, True])
def test_a_reply_cut_mid_character_keeps_its_text(stream: bool) -> None:
    """A row that ends (max_tokens) on a token holding half of a character keeps the characters
    that token completed before it, and shows the cut character as U+FFFD, as `generate` and
    transformers' decode do; a stream sends the same text."""
    from lmforge.server.decoding import Job, Row
    from lmforge.tokenization.tokenizer import Tokenizer

    tok = Tokenizer.train_bpe(["caf\u00e9 na\u00efve the cat " * 20], vocab_size=300)
    ids = [tok.hf.token_to_id(t) for t in ("\u0120the", "\u0120na\u00c3")]  # ' the', ' na' + half of 'ï'
    assert tok.decode(ids) == " the na\ufffd"
    sent: list[str] = []
    emit = (lambda event: sent.append(event[2])) if stream else None
    job = Job(None, tok, [[0]], 1, len(ids), 0.0, 1.0, None, frozenset(), [], 1e18, emit=emit)
    job.rows = [Row()]
    assert [job.take(0, t) for t in ids][-1]
    job.finish()
    assert job.future.result()[0].text == tok.decode(ids)
    if stream:
        assert "".join(sent) == tok.decode(ids)
