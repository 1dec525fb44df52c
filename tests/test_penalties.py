"""Penalties on tokens already seen: transformers' repetition_penalty gives transformers' tokens
(generate, the pipeline, chat's generation_config.json, the compiled step, ONNX Runtime), a
left-padded row is penalised for its own tokens, not its padding; the server's repetition,
frequency and presence penalties and top_k give what a plain loop over the model gives. The compiled
step and ONNX Runtime are checked here for min_p, min_new_tokens and no_repeat_ngram_size too
(test_decoding_bans.py checks those against transformers), sharing the compile and the export."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from hf_helpers import REPEATING_PROMPTS as PROMPTS
from hf_helpers import make_hf_model

from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model
from lmforge.inference.generate import generate, generate_ids
from lmforge.inference.penalties import Penalties, Tally, penalize_repeats, seen_tokens
from lmforge.pipelines import pipeline

transformers = pytest.importorskip("transformers")

NEW = 24


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """One family for the paths whose penalty code knows no family (the compiled step, ONNX)."""
    directory = tmp_path_factory.mktemp("gpt2-only")
    return directory, make_hf_model("gpt2", directory)


def theirs(hf: Any, prompt: list[int], penalty: float) -> list[int]:
    """transformers' greedy tokens, up to its EOS (0, left out) as generate_ids stops."""
    with torch.inference_mode():
        out = hf.generate(
            torch.tensor([prompt]), max_new_tokens=NEW, do_sample=False, repetition_penalty=penalty,
            pad_token_id=0, eos_token_id=0,
        )[0, len(prompt) :].tolist()  # fmt: skip
    return out[: out.index(0)] if 0 in out else out


@pytest.mark.parametrize("penalty", [1.6, 0.7])
def test_greedy_tokens_are_transformers(family: tuple[Path, Any], penalty: float) -> None:
    directory, hf = family
    net, _ = load_model(directory)
    for prompt in PROMPTS:
        ours = generate_ids(net, [prompt], NEW, 0.0, eos_id=0, repetition_penalty=penalty)[0]
        assert ours == theirs(hf, prompt, penalty)
    plain = [generate_ids(net, [p], NEW, 0.0, eos_id=0)[0] for p in PROMPTS]
    penalised = [generate_ids(net, [p], NEW, 0.0, eos_id=0, repetition_penalty=penalty)[0] for p in PROMPTS]
    assert plain != penalised  # the penalty changed something: the comparison above can fail


def test_a_padded_row_is_penalised_for_its_own_tokens_only(family: tuple[Path, Any]) -> None:
    """Padding (id 0) left of a short prompt is no token of it: a penalty below 1 would pull
    the padding's id up in every padded row."""
    net, _ = load_model(family[0])
    for penalty in (0.05, 1.6):
        alone = [generate_ids(net, [p], NEW, 0.0, repetition_penalty=penalty)[0] for p in PROMPTS]
        assert generate_ids(net, PROMPTS, NEW, 0.0, repetition_penalty=penalty) == alone


def test_sampling_and_the_compiled_step_take_it(gpt2: tuple[Path, Any]) -> None:
    net, _ = load_model(gpt2[0])
    prompt = [PROMPTS[0]]
    eager = generate_ids(net, prompt, NEW, 0.0, repetition_penalty=1.6)
    assert generate_ids(net, prompt, NEW, 0.0, repetition_penalty=1.6, compile=True) == eager
    sampled = generate_ids(net, prompt, NEW, 0.9, top_k=20, seed=3, repetition_penalty=3.0)
    assert sampled == generate_ids(net, prompt, NEW, 0.9, top_k=20, seed=3, repetition_penalty=3.0)
    assert sampled != generate_ids(net, prompt, NEW, 0.9, top_k=20, seed=3)
    eos = generate_ids(net, prompt, 3, 0.0)[0][2]  # greedy's third token: an EOS ending it early
    for options in (
        {"no_repeat_ngram_size": 2, "min_new_tokens": 10},
        {"min_p": 0.3, "no_repeat_ngram_size": 1},
        {"typical_p": 0.5, "eta_cutoff": 0.05, "suppress_tokens": [eos]},
    ):
        eager = generate_ids(net, prompt, NEW, 0.9, eos_id=eos, seed=4, **options)
        assert generate_ids(net, prompt, NEW, 0.9, eos_id=eos, seed=4, compile=True, **options) == eager
        assert eager != generate_ids(net, prompt, NEW, 0.9, eos_id=eos, seed=4)


def test_penalties_count_a_token_once_for_repetition_and_each_time_for_frequency() -> None:
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    out = penalize_repeats(logits, seen_tokens(torch.tensor([[0, 1, 1, 0]]), 4), 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0, 0.5]]
    tally = Tally()  # a row: prompt [3], then the reply 1, 1, 0 token by token
    ids = [3]
    for token in (1, 1, 0):
        ids.append(token)
        tally.update(ids, 1, 4, torch.device("cpu"))
    assert tally.seen.tolist() == [[True, True, False, True]] and tally.counts.tolist() == [[1, 2, 0, 0]]
    out = Penalties(2.0, 0.5, 0.25).apply(logits, tally)
    assert out.tolist() == [[1.0 - 0.5 - 0.25, -4.0 - 1.0 - 0.25, 1.0, 0.25]]


def test_the_pipeline_and_chat_take_generation_configs_penalty(tmp_path: Path) -> None:
    from test_chat import USER, make_chat_llama, set_generation

    make_chat_llama(tmp_path)
    set_generation(tmp_path, do_sample=False, max_new_tokens=16, repetition_penalty=1.8)
    ours = pipeline("text-generation", tmp_path, dtype="fp32")([USER])
    assert ours == transformers.pipeline("text-generation", model=str(tmp_path), dtype=torch.float32)([USER])
    # the file's value is applied: the same as the keyword, not as no penalty
    off = pipeline("text-generation", tmp_path, dtype="fp32")([USER], repetition_penalty=1.0)
    assert ours != off
    text = pipeline("text-generation", tmp_path, dtype="fp32")("the king", repetition_penalty=1.8)
    assert text == transformers.pipeline("text-generation", model=str(tmp_path), dtype=torch.float32)(
        "the king", repetition_penalty=1.8
    )


def test_bad_values_are_one_line(family: tuple[Path, Any]) -> None:
    net, _ = load_model(family[0])
    for bad in (0, -1.0, float("nan"), "2", True):
        with pytest.raises(LmforgeError, match=r"^repetition_penalty=.*: must be a finite number > 0"):
            generate_ids(net, [PROMPTS[0]], 2, repetition_penalty=bad)
    with pytest.raises(LmforgeError, match="repetition_penalty=0: must be"):
        generate(family[0], "x", repetition_penalty=0)


def test_onnx_runtime_takes_it(gpt2: tuple[Path, Any], tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from lmforge.formats.onnx_export import export_onnx
    from lmforge.inference.onnx_runner import OnnxModel, generate_ids_onnx

    directory = gpt2[0]
    export_onnx(directory, tmp_path / "onnx")
    onnx = OnnxModel(tmp_path / "onnx", "decoder")
    net, _ = load_model(directory)
    for penalty in (1.6, 0.05):
        expected = generate_ids(net, PROMPTS, 12, 0.0, eos_id=0, repetition_penalty=penalty)
        assert generate_ids_onnx(onnx, PROMPTS, 12, 0.0, repetition_penalty=penalty) == expected
    eos = [generate_ids(net, [p], 3, 0.0)[0][2] for p in PROMPTS]  # EOS ids that end rows early
    onnx.meta["stop_token_ids"] = eos
    for options in ({"no_repeat_ngram_size": 1}, {"no_repeat_ngram_size": 2, "min_new_tokens": 6}):
        expected = generate_ids(net, PROMPTS, 12, 0.0, eos_id=eos, **options)
        assert generate_ids_onnx(onnx, PROMPTS, 12, 0.0, **options) == expected
    sampled = generate_ids(net, PROMPTS, 12, 1.0, eos_id=eos, seed=2, min_p=0.2, min_new_tokens=6)
    assert generate_ids_onnx(onnx, PROMPTS, 12, 1.0, seed=2, min_p=0.2, min_new_tokens=6) == sampled
    assert sampled != generate_ids(net, PROMPTS, 12, 1.0, eos_id=eos, seed=2)
    cut = {"typical_p": 0.6, "epsilon_cutoff": 0.01, "eta_cutoff": 0.03}
    sampled = generate_ids(net, PROMPTS, 12, 1.0, eos_id=eos, seed=2, **cut)
    assert generate_ids_onnx(onnx, PROMPTS, 12, 1.0, seed=2, **cut) == sampled
    assert sampled != generate_ids(net, PROMPTS, 12, 1.0, eos_id=eos, seed=2)


def reference_loop(net: Any, prompt: list[int], new: int, rep: float, freq: float, pres: float) -> list[int]:
    """Greedy decoding by full forward passes, the penalties written out token by token."""
    ids = list(prompt)
    for _ in range(new):
        with torch.inference_mode():
            logits = net(torch.tensor([ids]))[0, -1].float().tolist()
        counts = Counter(ids[len(prompt) :])
        for token in set(ids):
            logits[token] = logits[token] * rep if logits[token] < 0 else logits[token] / rep
        for token, count in counts.items():
            logits[token] -= freq * count + pres
        ids.append(max(range(len(logits)), key=logits.__getitem__))
    return ids[len(prompt) :]


def test_the_server_applies_openai_and_vllm_penalties(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from lmforge.server.app import Settings, create_app
    from lmforge.server.models import load_models

    directory = tmp_path / "gpt2"
    make_hf_model("gpt2", directory)
    config = json.loads((directory / "config.json").read_text())
    config["eos_token_id"] = None  # no EOS: every reply runs to max_tokens
    (directory / "config.json").write_text(json.dumps(config))
    net, tok = load_model(directory)
    prompt = tok.encode("the king the king")
    with TestClient(create_app(load_models([directory], dtype="fp32"), Settings())) as api:

        def reply(**fields: Any) -> str:
            body = {"model": "gpt2", "prompt": prompt, "max_tokens": 16, "temperature": 0, **fields}
            r = api.post("/v1/completions", json=body)
            assert r.status_code == 200, r.text
            return r.json()["choices"][0]["text"]

        plain = reply()
        for rep, freq, pres in [(1.7, 0, 0), (1, 1.5, 0), (1, 0, 1.2), (1.3, -0.5, 0.8)]:
            got = reply(repetition_penalty=rep, frequency_penalty=freq, presence_penalty=pres)
            assert got == tok.decode(reference_loop(net, prompt, 16, rep, freq, pres))
            assert got != plain
        # top_k with a seed samples as generate_ids does with the same seed (row 0's stream)
        sampled = reply(temperature=0.9, top_k=3, seed=11)  # a last character cut mid-way too
        assert sampled == tok.decode(generate_ids(net, [prompt], 16, 0.9, top_k=3, seed=11)[0])
        assert sampled != reply(temperature=0.9, seed=11)
        reply(temperature=1, repetition_penalty=1e-320, seed=1)  # a 500 before: NaN probabilities
        reply(temperature=1e-300, top_p=1e-300)
        for field, value in [("frequency_penalty", 2.5), ("presence_penalty", -3), ("repetition_penalty", 0)]:
            r = api.post("/v1/completions", json={"model": "gpt2", "prompt": "a", field: value})
            assert r.status_code == 400 and field in r.text


def test_generation_config_keys_lmforge_does_not_apply_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_chat import make_chat_llama, set_generation

    from lmforge.inference.chat import ChatSpec

    make_chat_llama(tmp_path)
    set_generation(
        tmp_path, repetition_penalty=1.2, penalty_alpha=0.6, guidance_scale=1.0, min_length=3,
        encoder_repetition_penalty=1.3, epsilon_cutoff=0.05, min_p=0.1,
    )  # fmt: skip
    spec = ChatSpec.read(tmp_path, load_model(tmp_path)[1])
    assert spec.sampling(do_sample=False)["repetition_penalty"] == 1.2
    note = capsys.readouterr().err
    # min_p, min_length and epsilon_cutoff are applied; guidance_scale=1 changes nothing
    assert "{'penalty_alpha': 0.6, 'encoder_repetition_penalty': 1.3} not applied" in note
    spec.sampling()  # named once for the model, not at every call of a pipeline or chat reply
    assert "not applied" not in capsys.readouterr().err
    set_generation(tmp_path, penalty_alpha=0, encoder_repetition_penalty=None)
    ChatSpec.read(tmp_path, load_model(tmp_path)[1]).sampling()
    assert "not applied" not in capsys.readouterr().err
    set_generation(tmp_path, num_return_sequences=3, stop_strings=["\n\n"])  # dropped unsaid until 2026-12-07
    ChatSpec.read(tmp_path, load_model(tmp_path)[1]).sampling()
    assert "{'num_return_sequences': 3, 'stop_strings': ['\\n\\n']} not applied" in capsys.readouterr().err


def test_values_at_the_edge_of_float32_sample_the_likeliest_tokens_not_nan() -> None:
    """temperature=1e-300, top_p=1e-300 and repetition_penalty=1e-320 are valid and made the
    probabilities NaN: torch.multinomial raised (in the server, for every request beside it)."""
    from lmforge.inference.generate import sample_next

    logits = torch.tensor([[1.0, 3.0, -2.0, 3.0, 0.5]])
    g = torch.Generator().manual_seed(0)
    draws = {int(sample_next(logits, 1e-300, generator=g)) for _ in range(40)}
    assert draws == {1, 3}  # the limit: the two likeliest alike
    assert {int(sample_next(logits, 1.0, top_p=1e-300, generator=g)) for _ in range(20)} == {1}
    assert int(sample_next(logits, 1e-300, top_k=1, generator=g)) in {1, 3}  # tied: top-k keeps both
    # a penalty past float32's range keeps the seen tokens' order: its limit, the likeliest seen token
    scores = torch.tensor([[5.0, 2.0, 0.1, -1.0, 0.0]])
    seen = seen_tokens(torch.tensor([[0, 1, 2, 4]]), 5)
    for penalty in (1e-38, 1e-40, 1e-320, 5e-324):
        out = penalize_repeats(scores, seen, penalty)
        assert not out.isnan().any() and out.argmax().item() == 0
        assert {int(sample_next(out, 1.0, generator=g)) for _ in range(50)} == {0}
    out = penalize_repeats(scores, seen, 1e300)  # positive seen logits to ~0, negative ones far down
    assert torch.isfinite(out).all() and out[0, 3] == -1.0
    # unchanged where nothing overflows: the same draws as the plain formula
    for t in (0.7, 1.0, 1.3):
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        plain = torch.multinomial((logits / t).softmax(-1), 1, generator=g1).item()
        assert int(sample_next(logits, t, generator=g2)) == plain
