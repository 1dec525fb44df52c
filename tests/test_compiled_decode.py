"""Compiled decoding (inference/compiled_decode.py): the same tokens as eager decoding, its cache,
and a one-line error where it does not apply. Each model shape compiles once (10-30 s cold)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmforge import cli
from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.formats.directory import write_model_dir
from lmforge.inference.compiled_decode import LayerCache, compiled_step, layer_cache, next_logits
from lmforge.inference.generate import generate_ids, prefill
from lmforge.model.gpt import GPT
from lmforge.tokenization.tokenizer import Tokenizer

GPT2_LIKE = ModelConfig(n_layer=2, n_head=4, n_embd=64, block_size=48, vocab_size=97)
LLAMA_LIKE = ModelConfig(
    n_layer=2, n_head=4, n_kv_head=2, n_embd=64, block_size=48, vocab_size=97,
    pos="rope", mlp="swiglu", norm="rmsnorm", bias=False, tie_embeddings=False,
)  # fmt: skip


def _model(config: ModelConfig, dtype: torch.dtype = torch.float32) -> GPT:
    torch.manual_seed(0)
    return GPT(config).eval().to(dtype)


def test_the_layer_cache_holds_what_the_model_cache_holds() -> None:
    model = _model(GPT2_LIKE)
    ours, theirs = layer_cache(model, 2, 10), model.new_cache(2, 10)
    for t in (3, 1, 1):  # a prefill, then two steps
        k, v = torch.randn(2, 4, t, 16), torch.randn(2, 4, t, 16)
        for layer in range(2):
            got, want = ours.update(layer, k, v), theirs.update(layer, k, v)
            assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
        ours.advance(t)
        theirs.advance(t)
    with pytest.raises(ValueError, match="holds 10 positions"):
        ours.update(0, torch.randn(2, 4, 6, 16), torch.randn(2, 4, 6, 16))


@pytest.mark.parametrize("config", [GPT2_LIKE, LLAMA_LIKE], ids=["gpt2-like", "llama-like"])
def test_compiled_greedy_decoding_gives_the_eager_tokens(config: ModelConfig) -> None:
    """60 new tokens after 6 pass the context of 48, so the window slides and re-prefills too."""
    model = _model(config)
    prompt = [5, 17, 3, 88, 41, 9]
    eager = generate_ids(model, [prompt], 60, temperature=0)
    assert generate_ids(model, [prompt], 60, temperature=0, compile=True) == eager


def test_a_compiled_step_computes_the_eager_logits() -> None:
    model = _model(LLAMA_LIKE)
    with torch.inference_mode():
        ids = torch.tensor([[5, 17, 3, 88]])
        ours, theirs = layer_cache(model, 1, 20), model.new_cache(1, 20)
        prefill(model, ids, ours, None)
        prefill(model, ids, theirs, None)
        for token in (7, 61, 2):
            step = torch.tensor([[token]])
            got = compiled_step()(model, step, ours)
            want = next_logits(model, step, theirs)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert ours.length == theirs.length == 7


def test_compiled_sampling_draws_what_each_row_draws_in_a_batch() -> None:
    """Several prompts decode in turn, each with the generator its row has in a batch."""
    model = _model(GPT2_LIKE)
    prompts = [[5, 17, 3], [88, 41, 9, 12, 60]]
    seen: list[tuple[int, int]] = []
    kwargs = {"temperature": 0.9, "top_k": 20, "seed": 7}
    ours = generate_ids(model, prompts, 12, compile=True, on_token=lambda i, t: seen.append((i, t)), **kwargs)
    assert ours == generate_ids(model, prompts, 12, **kwargs)
    assert seen == [(i, t) for i, row in enumerate(ours) for t in row]


def test_compiled_bf16_decoding_runs_near_eager_bf16() -> None:
    """bf16: the step skips the attention probe (its timing cannot be traced); the logits are the
    eager step's up to bf16 rounding."""
    model = _model(LLAMA_LIKE, torch.bfloat16)
    with torch.inference_mode():
        ids = torch.tensor([[5, 17, 3, 88]])
        ours, theirs = layer_cache(model, 1, 20), model.new_cache(1, 20)
        prefill(model, ids, ours, None)
        prefill(model, ids, theirs, None)
        got = compiled_step()(model, torch.tensor([[7]]), ours)
        want = next_logits(model, torch.tensor([[7]]), theirs)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want.float(), rtol=0.02, atol=0.02)


def test_compiled_decoding_refuses_what_it_cannot_do_in_one_line() -> None:
    model = _model(GPT2_LIKE)
    with pytest.raises(LmforgeError, match="needs the KV cache"):
        generate_ids(model, [[1, 2]], 3, compile=True, use_cache=False)
    with pytest.raises(LmforgeError, match="compile=.yes.: must be True or False"):
        generate_ids(model, [[1, 2]], 3, compile="yes")  # type: ignore[arg-type]
    assert isinstance(layer_cache(model, 1), LayerCache)


def test_generate_refuses_compile_without_the_cache_before_it_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tok = Tokenizer.train_char(["hi there"])
    config = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=tok.vocab_size)
    write_model_dir(tmp_path / "gpt", config, GPT(config).state_dict(), tok)
    argv = ["generate", str(tmp_path / "gpt"), "--prompt", "hi", "--compile", "--no-cache"]
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert (
        out == ""
        and err == "lmforge: error: compiled decoding needs the KV cache: drop --no-cache (use_cache=False)\n"
    )


def test_compiled_decoding_without_a_cpp_compiler_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXX", "no-such-compiler++")
    with pytest.raises(LmforgeError, match=r"needs a C\+\+ compiler: no-such-compiler\+\+ was not found"):
        generate_ids(_model(GPT2_LIKE), [[1, 2]], 3, compile=True)
