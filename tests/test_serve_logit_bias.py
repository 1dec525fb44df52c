"""OpenAI's `logit_bias` on /v1/completions and /v1/chat/completions: greedy tokens are
transformers' `generate(sequence_bias=...)` with one-token sequences (the same addition to the
logits, before the repetition penalty, as vLLM orders them); a sampled row never draws a token
biased by -100; logprobs stay the model's own (vLLM's raw logprobs); bad keys, values and ids are
400s naming logit_bias."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("fastapi")
transformers = pytest.importorskip("transformers")
from fastapi.testclient import TestClient  # noqa: E402
from test_chat import make_chat_llama  # noqa: E402

from lmforge.formats.directory import load_model  # noqa: E402
from lmforge.server.app import Settings, create_app  # noqa: E402
from lmforge.server.models import load_models  # noqa: E402
from lmforge.server.schemas import MAX_BIASES  # noqa: E402

PROMPT = "the king is"
NEW = 8


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("bias") / "llama"
    make_chat_llama(directory)
    return directory


@pytest.fixture(scope="module")
def api(llama: Path) -> Any:
    with TestClient(create_app(load_models([llama], dtype="fp32"), Settings())) as c:
        yield c


def theirs(llama: Path, bias: dict[int, float], **options: Any) -> list[int]:
    """transformers' greedy tokens after PROMPT, up to an end-of-turn id (left out)."""
    tok = transformers.AutoTokenizer.from_pretrained(llama)
    hf = transformers.AutoModelForCausalLM.from_pretrained(llama, dtype=torch.float32).eval()
    ids = tok(PROMPT, add_special_tokens=False)["input_ids"]
    sequence_bias = {(t,): float(b) for t, b in bias.items()} or None
    with torch.inference_mode():
        out = hf.generate(
            torch.tensor([ids]), max_new_tokens=NEW, do_sample=False, eos_token_id=[2, 0], pad_token_id=2,
            sequence_bias=sequence_bias, **options,
        )[0, len(ids) :].tolist()  # fmt: skip
    return out[: min((out.index(e) for e in (0, 2) if e in out), default=len(out))]


def ours(api: TestClient, bias: dict[int, float], **fields: Any) -> dict[str, Any]:
    body = {"model": "llama", "prompt": PROMPT, "max_tokens": NEW, "temperature": 0, **fields}
    r = api.post("/v1/completions", json={**body, "logit_bias": {str(t): b for t, b in bias.items()}})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]


def test_greedy_tokens_are_transformers_sequence_bias(api: TestClient, llama: Path) -> None:
    tok = transformers.AutoTokenizer.from_pretrained(llama)
    plain = theirs(llama, {})
    assert ours(api, {})["text"] == tok.decode(plain)
    cases = [{plain[0]: -100}, {plain[1]: -100, plain[2]: -3.5}, {7: 100}, {plain[0]: -100, 11: 2.25}]
    for bias in cases:
        expected = theirs(llama, bias)
        assert expected != plain
        assert ours(api, bias)["text"] == tok.decode(expected)
    bias = {plain[0]: -1.5, 40: 4}  # added before the repetition penalty, in transformers and vLLM
    assert ours(api, bias, repetition_penalty=1.7)["text"] == tok.decode(
        theirs(llama, bias, repetition_penalty=1.7)
    )
    chat = api.post("/v1/chat/completions", json={
        "model": "llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0,
        "logit_bias": {"7": 100},
    })  # fmt: skip
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"] == tok.decode([7] * 4)


def test_a_sampled_row_draws_only_unbanned_tokens_and_logprobs_stay_the_models(
    api: TestClient, llama: Path
) -> None:
    net, tok = load_model(llama)
    vocab = net.config.vocab_size
    keep = list(range(40, 60))
    banned = {t: -100 for t in range(vocab) if t not in keep}  # 300 entries, OpenAI's most
    assert len(banned) == MAX_BIASES
    for seed in (1, 2, 3):
        drawn = ours(api, banned, temperature=1.5, seed=seed, max_tokens=12, logprobs=0)["logprobs"]["tokens"]
        assert len(drawn) == 12 and set(drawn) <= {tok.decode([t]) for t in keep}
    ids = tok.encode(PROMPT)
    with torch.inference_mode():
        raw = torch.log_softmax(net(torch.tensor([ids]))[0, -1].float(), dim=-1)
    forced = ours(api, {7: 100}, max_tokens=1, logprobs=2)["logprobs"]
    assert forced["tokens"] == [tok.decode([7])]
    assert forced["token_logprobs"][0] == pytest.approx(
        float(raw[7]), abs=1e-4
    )  # the model's, not the bias's
    assert float(raw[7]) < float(raw.max()) - 1  # so the bias chose it


@pytest.mark.parametrize(
    ("bias", "message"),
    [
        ({"abc": 1}, "'abc' is not a token id"),
        ({"-1": 1}, "'-1' is not a token id"),
        ({"9999999999": 1}, "token id 9999999999 is outside the vocabulary"),
        ({"00000000005": 1, "7" * 5000: 1}, "token id 777777777777... is outside the vocabulary"),
        ({"5": 101}, "less than or equal to 100"),
        ({"5": -100.5}, "greater than or equal to -100"),
        ({"5": "1"}, "valid number"),
        ({str(i): 1 for i in range(MAX_BIASES + 1)}, f"at most {MAX_BIASES} token ids"),
        (
            {"320": 1, "5": 1},
            "logit_bias: token id(s) [320] are outside the model's vocabulary of 320 tokens",
        ),
    ],
)
def test_bad_logit_bias_is_a_400_naming_it(api: TestClient, bias: dict[str, Any], message: str) -> None:
    body = {"model": "llama", "prompt": PROMPT, "max_tokens": 2, "logit_bias": bias}
    r = api.post("/v1/completions", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "logit_bias" and message in error["message"], error
