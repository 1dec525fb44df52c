"""transformers' min_p, min_new_tokens and no_repeat_ngram_size: on the same logits lmforge keeps
the tokens transformers' processors keep; greedy decoding gives transformers' `generate` tokens
(generate_ids, the pipeline with generation_config.json; the compiled step and ONNX Runtime give
generate_ids' tokens: test_penalties.py); a
left-padded row bans by its own tokens, not its padding; the server takes vLLM's min_p and
min_tokens (which holds back stop strings too) and no_repeat_ngram_size, and refuses bad values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hf_helpers import REPEATING_PROMPTS as PROMPTS
from hf_helpers import make_hf_model

from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model
from lmforge.inference.bans import Bans, History
from lmforge.inference.generate import generate, generate_ids
from lmforge.inference.sampling import sample_next
from lmforge.pipelines import pipeline

transformers = pytest.importorskip("transformers")
from transformers.generation.logits_process import (  # noqa: E402
    MinNewTokensLengthLogitsProcessor,
    MinPLogitsWarper,
    NoRepeatNGramLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
)

NEW = 20


def test_min_p_keeps_and_draws_what_transformers_keeps() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 60) * 3
    for temperature, top_k, min_p in [(1.0, 0, 0.1), (0.6, 0, 0.3), (1.4, 12, 0.05), (1.0, 0, 1.0)]:
        theirs = TemperatureLogitsWarper(temperature)(None, logits.clone())
        if top_k:
            theirs = TopKLogitsWarper(top_k)(None, theirs)
        theirs = MinPLogitsWarper(min_p)(None, theirs)
        probs = theirs.softmax(-1)
        assert (probs > 0).sum() < (logits > -1e9).sum()  # min_p dropped some: the check can fail
        for seed in range(30):  # the same draws: the same distribution, to the bit
            ours = sample_next(
                logits, temperature, top_k, generator=torch.Generator().manual_seed(seed), min_p=min_p
            )
            g = torch.Generator().manual_seed(seed)
            assert ours.tolist() == torch.multinomial(probs, 1, generator=g)[:, 0].tolist()


def test_bans_are_transformers_processors_on_the_same_ids() -> None:
    torch.manual_seed(1)
    row = [4, 7, 4, 7, 9, 4, 7, 2, 4]  # a prompt of 5, then 4 new tokens
    scores = torch.randn(1, 12)
    for n in (1, 2, 3):
        history = History.start(row[:5], n)
        history.extend(row[5:])
        theirs = NoRepeatNGramLogitsProcessor(n)(torch.tensor([row]), scores.clone())
        assert torch.equal(Bans(n).apply(scores, [history]), theirs)
    for m in (3, 4, 5, 9):
        history = History.start(row[:5], 0)
        history.extend(row[5:])
        theirs = MinNewTokensLengthLogitsProcessor(5, m, [2, 9])(torch.tensor([row]), scores.clone())
        assert torch.equal(Bans(0, m, frozenset({2, 9})).apply(scores, [history]), theirs)


def theirs_greedy(hf: Any, prompt: list[int], eos: int, **options: Any) -> list[int]:
    """transformers' greedy tokens, up to its EOS (left out), as generate_ids stops."""
    with torch.inference_mode():
        out = hf.generate(
            torch.tensor([prompt]), max_new_tokens=NEW, do_sample=False, pad_token_id=eos, eos_token_id=eos,
            **options,
        )[0, len(prompt) :].tolist()  # fmt: skip
    return out[: out.index(eos)] if eos in out else out


def early_eos(net: Any, prompt: list[int]) -> int:
    """An id greedy decoding takes as its third token: as the EOS, it ends the text early."""
    return generate_ids(net, [prompt], 3, 0.0)[0][2]


OPTIONS = [
    {"no_repeat_ngram_size": 2},
    {"no_repeat_ngram_size": 3},
    {"min_new_tokens": 8},
    {"min_new_tokens": 6, "no_repeat_ngram_size": 1},
]


@pytest.mark.parametrize("options", OPTIONS)
def test_greedy_tokens_are_transformers(family: tuple[Path, Any], options: dict[str, int]) -> None:
    directory, hf = family
    net, _ = load_model(directory)
    changed = False
    for prompt in PROMPTS:
        eos = early_eos(net, prompt) if "min_new_tokens" in options else 0  # 0: the usual one
        ours = generate_ids(net, [prompt], NEW, 0.0, eos_id=eos, **options)[0]
        assert ours == theirs_greedy(hf, prompt, eos, **options)
        changed |= ours != generate_ids(net, [prompt], NEW, 0.0, eos_id=eos)[0]
    # the option changed something, so the comparison can fail (gpt2's random weights repeat n-grams
    # within 20 tokens; llama's do not: there it checks that nothing is banned wrongly)
    assert changed or (directory.name.startswith("llama") and "min_new_tokens" not in options)


def test_a_padded_row_bans_by_its_own_tokens_only(family: tuple[Path, Any]) -> None:
    """Padding (id 0) left of a short prompt is no token of it: counted, no_repeat_ngram_size=1
    would ban id 0 in every padded row, and bigrams across the padding would ban others."""
    net, _ = load_model(family[0])
    for options in ({"no_repeat_ngram_size": 1}, {"no_repeat_ngram_size": 2, "min_new_tokens": 5}):
        alone = [generate_ids(net, [p], NEW, 0.0, eos_id=0, **options)[0] for p in PROMPTS]
        assert generate_ids(net, PROMPTS, NEW, 0.0, eos_id=0, **options) == alone
    # one-token prompts (no padding among them) whose texts take id 0, then padded beside a long one
    singles = generate_ids(net, [[k] for k in range(1, 80)], NEW, 0.0, no_repeat_ngram_size=1)
    taking = [[k] for k, out in zip(range(1, 80), singles, strict=True) if 0 in out][:3]
    assert taking  # rows the padding's id would change
    padded = generate_ids(net, [PROMPTS[2], *taking], NEW, 0.0, no_repeat_ngram_size=1)[1:]
    assert padded == [out for k, out in zip(range(1, 80), singles, strict=True) if [k] in taking]


def test_sampling_takes_them(family: tuple[Path, Any]) -> None:
    """Seeded sampling with min_p draws the same tokens again, and other ones than without it.
    (The compiled step and ONNX Runtime: test_penalties.py, which compiles and exports anyway.)"""
    net, _ = load_model(family[0])
    prompt = [PROMPTS[0]]
    sampled = generate_ids(net, prompt, NEW, 1.0, seed=3, min_p=0.3, no_repeat_ngram_size=2)
    assert sampled == generate_ids(net, prompt, NEW, 1.0, seed=3, min_p=0.3, no_repeat_ngram_size=2)
    assert generate_ids(net, prompt, NEW, 1.0, seed=3, min_p=0.3) != generate_ids(
        net, prompt, NEW, 1.0, seed=3
    )


def test_the_pipeline_takes_generation_configs_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_chat import USER, make_chat_llama, set_generation

    make_chat_llama(tmp_path)
    set_generation(tmp_path, do_sample=False, max_new_tokens=16, no_repeat_ngram_size=1, min_new_tokens=12)
    ours = pipeline("text-generation", tmp_path, dtype="fp32")([USER])
    assert ours == transformers.pipeline("text-generation", model=str(tmp_path), dtype=torch.float32)([USER])
    off = pipeline("text-generation", tmp_path, dtype="fp32")(
        [USER], no_repeat_ngram_size=0, min_new_tokens=0
    )
    assert ours != off  # the file's values are applied
    assert "not applied" not in capsys.readouterr().err
    text = pipeline("text-generation", tmp_path, dtype="fp32")("the king", no_repeat_ngram_size=2)
    assert text == transformers.pipeline("text-generation", model=str(tmp_path), dtype=torch.float32)(
        "the king", no_repeat_ngram_size=2
    )


def test_bad_values_are_one_line(tmp_path: Path) -> None:
    make_hf_model("gpt2", tmp_path)
    net, _ = load_model(tmp_path)
    for name, bad, allowed in [
        ("min_p", 1.5, r"a number in \[0, 1\]"), ("min_p", -0.1, r"a number in \[0, 1\]"),
        ("min_p", float("nan"), r"a number in \[0, 1\]"), ("min_new_tokens", -1, "an integer >= 0"),
        ("no_repeat_ngram_size", -2, "an integer >= 0"), ("no_repeat_ngram_size", 1.5, "an integer >= 0"),
    ]:  # fmt: skip
        with pytest.raises(LmforgeError, match=rf"^{name}={bad!r}: must be {allowed}"):
            generate_ids(net, [PROMPTS[0]], 2, **{name: bad})
    with pytest.raises(LmforgeError, match=r"^min_p=2: must be"):
        generate(tmp_path, "x", min_p=2)
    with pytest.raises(LmforgeError, match=r"^no_repeat_ngram_size=-1: must be"):
        pipeline("text-generation", tmp_path)("x", no_repeat_ngram_size=-1)


def test_the_server_takes_min_p_min_tokens_and_no_repeat_ngram_size(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from lmforge.server.app import Settings, create_app
    from lmforge.server.models import load_models

    directory = tmp_path / "gpt2"
    make_hf_model("gpt2", directory)
    net, tok = load_model(directory)
    prompt = tok.encode("the king the king")
    eos = early_eos(net, prompt)
    config = json.loads((directory / "config.json").read_text())
    config["eos_token_id"] = eos  # plain greedy decoding ends after two tokens
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "generation_config.json").unlink(missing_ok=True)  # its EOS would win
    with TestClient(create_app(load_models([directory], dtype="fp32"), Settings())) as api:

        def reply(**fields: Any) -> str:
            body = {"model": "gpt2", "prompt": prompt, "max_tokens": 16, "temperature": 0, **fields}
            r = api.post("/v1/completions", json=body)
            assert r.status_code == 200, r.text
            return r.json()["choices"][0]["text"]

        for options, fields in [
            ({"min_new_tokens": 9}, {"min_tokens": 9}),
            (
                {"no_repeat_ngram_size": 2, "min_new_tokens": 16},
                {"no_repeat_ngram_size": 2, "min_tokens": 16},
            ),
        ]:
            expected = generate_ids(net, [prompt], 16, 0.0, eos_id=eos, **options)[0]
            assert reply(**fields) == tok.decode(expected)
            assert reply(**fields) != reply()
        sampled = reply(temperature=1.0, min_p=0.3, seed=5, min_tokens=16)
        expected = generate_ids(net, [prompt], 16, 1.0, seed=5, min_p=0.3, eos_id=eos, min_new_tokens=16)[0]
        assert sampled == tok.decode(expected)
        # min_tokens holds back stop strings too (vLLM's v1): none ending in the first min_tokens
        # tokens' text counts, as no EOS among them does
        for min_tokens in (8, 16):
            ids = generate_ids(net, [prompt], 16, 0.0, eos_id=eos, min_new_tokens=min_tokens)[0]
            text, floor = tok.decode(ids), len(tok.decode(ids[:min_tokens]))
            stop = tok.decode(ids[1:2])
            at = text.find(stop, max(floor - len(stop) + 1, 0))
            assert reply(min_tokens=min_tokens, stop=stop) == (text if at < 0 else text[:at])
            assert text.index(stop) < floor  # an early one was there to skip
        limits = {
            "messages": [{"role": "user", "content": "hi"}],
            "max_completion_tokens": 5,
            "min_tokens": 9,
        }
        r = api.post("/v1/chat/completions", json={"model": "gpt2", **limits})
        assert r.status_code == 400 and "min_tokens=9 is more than max_completion_tokens=5" in r.text
        nan = '{"model": "gpt2", "prompt": "a", "min_p": NaN}'
        r = api.post("/v1/completions", content=nan, headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "min_p", r.text
        bad = [("min_p", 1.5), ("min_p", -0.2), ("min_tokens", -1), ("no_repeat_ngram_size", -1)]
        for field, value in [*bad, ("min_tokens", 40)]:  # more than max_tokens
            body = {"model": "gpt2", "prompt": "a", "max_tokens": 20, field: value}
            r = api.post("/v1/completions", json=body)
            assert r.status_code == 400 and field in r.text, r.text


def test_numpy_integers_are_taken_as_integers() -> None:
    """np.int64(0) for min_new_tokens raised `__bool__ should return bool` (a helper's pass)."""
    np = pytest.importorskip("numpy")
    assert not Bans(np.int64(0), np.int64(0), frozenset({1})) and Bans(np.int64(2))
    assert Bans(0, np.int64(3), frozenset({1}))


def test_every_token_banned_is_one_line_not_token_0(tmp_path: Path) -> None:
    """no_repeat_ngram_size=1 runs out of tokens after the vocabulary's size: greedy took token 0
    (the argmax of all -inf) and sampling raised torch's error; the server failed with a 500."""
    from serve_helpers import make_endless_gpt

    from lmforge.server.app import Settings, create_app
    from lmforge.server.models import load_models

    directory = make_endless_gpt(tmp_path, block_size=256)
    net, tok = load_model(directory)
    vocab = net.config.vocab_size
    for temperature in (0.0, 1.0):
        with pytest.raises(
            LmforgeError, match=rf"^no_repeat_ngram_size=1 bans every one of the vocabulary's {vocab} tokens"
        ):
            generate_ids(net, [[1]], vocab + 1, temperature, eos_id=None, no_repeat_ngram_size=1)
    assert (
        len(set(generate_ids(net, [[1]], vocab - 2, 0.0, eos_id=None, no_repeat_ngram_size=1)[0]))
        == vocab - 2
    )
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    with TestClient(create_app(load_models([directory], dtype="fp32"), Settings())) as api:
        body = {"model": directory.name, "prompt": "a", "max_tokens": vocab + 1, "no_repeat_ngram_size": 1}
        r = api.post("/v1/completions", json=body)
        assert r.status_code == 400 and "bans every one" in r.json()["error"]["message"], r.text
