"""Compiled decoding (inference/compiled_decode.py): the same tokens as eager decoding, its cache,
the store that keeps compiled steps between processes (inference/compiled_store.py), and a
one-line error where it does not apply. Each model shape compiles once (10-30 s cold)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmforge import cli
from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.formats.directory import write_model_dir
from lmforge.inference import compiled_decode, compiled_store
from lmforge.inference.compiled_decode import LayerCache, compiled_step, layer_cache, next_logits
from lmforge.inference.generate import generate_ids
from lmforge.inference.prefill import prefill
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
            got = compiled_step(model)(model, step, ours)
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
        got = compiled_step(model)(model, torch.tensor([[7]]), ours)
        want = next_logits(model, torch.tensor([[7]]), theirs)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want.float(), rtol=0.02, atol=0.02)


def test_compiled_decoding_refuses_what_it_cannot_do_in_one_line() -> None:
    model = _model(GPT2_LIKE)
    with pytest.raises(LmforgeError, match="needs the KV cache"):
        generate_ids(model, [[1, 2]], 3, compile=True, use_cache=False)
    with pytest.raises(LmforgeError, match="compile='yes': must be True, False or 'auto'"):
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


def test_every_step_runs_compiled_from_one_token_prompts_to_a_full_cache() -> None:
    """No step falls back to eager: not a one-token prompt's first (cache length 1), nor a reply's
    last, which fills its cache (without a spare position it failed the guards and recompiled),
    nor the steps after the window slides."""
    model = _model(GPT2_LIKE)
    step = compiled_step(model)
    before = step.eager_steps
    for prompt, new in (([5], 10), ([5, 17, 3, 88, 41, 9], 20), (list(range(40)), 30)):
        assert generate_ids(model, [prompt], new, temperature=0, compile=True) == generate_ids(
            model, [prompt], new, temperature=0
        )
    assert step.eager_steps == before


def test_the_step_is_traced_on_sizes_no_model_dimension_has() -> None:
    """Traced on a cache whose sizes equal one of the model's (a 12-head model, 11 + 1 positions),
    the graph was fixed to that size and every real cache's steps failed its guards."""
    twelve_heads = _model(ModelConfig(n_layer=1, n_head=12, n_embd=48, block_size=30, vocab_size=13))
    _, cache = compiled_decode._example(twelve_heads)
    sizes = {n for p in twelve_heads.parameters() for n in p.shape} | {12}
    assert not {cache.length, cache.length + 1, cache.max_len, cache.k[0].size(2)} & sizes
    prompt = [3, 1, 4, 1, 5]
    eager = generate_ids(twelve_heads, [prompt], 20, temperature=0)
    assert generate_ids(twelve_heads, [prompt], 20, temperature=0, compile=True) == eager
    assert compiled_step(twelve_heads).eager_steps == 0


def _fresh_process(monkeypatch: pytest.MonkeyPatch) -> list[GPT]:
    """Forget this process's compiled steps; record every compile instead of running it again."""
    compiled: list[GPT] = []
    kept = dict(compiled_decode._steps)
    monkeypatch.setattr(compiled_decode, "_steps", {})

    def compile_again(model: GPT) -> object:  # the step this process already compiled, not 10 s more
        compiled.append(model)
        return kept[compiled_store.step_path(model)].compiled

    monkeypatch.setattr(compiled_decode, "_compile", compile_again)
    return compiled


def test_a_new_process_loads_the_kept_step_instead_of_compiling(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(GPT2_LIKE)
    first = compiled_step(model)
    path = compiled_store.step_path(model)
    assert path.parent == compiled_store.store_dir() and path.is_file()
    compiled = _fresh_process(monkeypatch)
    loaded = compiled_step(model)
    assert compiled == [] and loaded is not first
    with torch.inference_mode():
        ids = torch.tensor([[5, 17, 3, 88]])
        ours, theirs = layer_cache(model, 1, 20), model.new_cache(1, 20)
        prefill(model, ids, ours, None)
        prefill(model, ids, theirs, None)
        got, want = loaded(model, torch.tensor([[7]]), ours), next_logits(model, torch.tensor([[7]]), theirs)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert loaded.eager_steps == 0


def test_a_broken_or_foreign_kept_step_is_compiled_again_and_replaced(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gpt2, llama = _model(GPT2_LIKE), _model(LLAMA_LIKE)
    compiled_step(gpt2), compiled_step(llama)
    gpt2_path, llama_path = compiled_store.step_path(gpt2), compiled_store.step_path(llama)
    assert gpt2_path != llama_path
    compiled = _fresh_process(monkeypatch)
    gpt2_path.write_bytes(b"not a compiled step")
    compiled_step(gpt2)
    assert f"compiling again: {gpt2_path} did not load" in capsys.readouterr().err
    llama_path.write_bytes(gpt2_path.read_bytes())  # another shape's step: its guards refuse llama
    compiled_step(llama)
    assert compiled == [gpt2, llama]
    compiled.clear()
    monkeypatch.setattr(compiled_decode, "_steps", {})
    compiled_step(gpt2), compiled_step(llama)
    assert compiled == []  # both files were replaced by steps that load and fit their models


def test_the_kept_step_depends_on_the_dtype_and_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(GPT2_LIKE)
    fp32 = compiled_store.step_path(model)
    assert compiled_store.step_path(_model(GPT2_LIKE, torch.bfloat16)) != fp32
    monkeypatch.setattr(torch, "get_num_threads", lambda: 99)  # part of tuning.machine_key
    threads = compiled_store.step_path(model)
    assert threads != fp32
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")  # kernels capped below the CPU's units
    assert compiled_store.step_path(model) not in (fp32, threads)


def test_the_store_keeps_the_most_recently_used_steps_and_nothing_else_is_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saving a step deletes the steps past the KEEP most recently used; a load marks its file used;
    files the store did not name (another suffix, another name) stay."""
    import os

    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(compiled_store, "KEEP", 3)
    store = compiled_store.store_dir()
    store.mkdir(parents=True)
    steps = [store / f"{i:032x}.step" for i in range(4)]
    others = [store / "notes.txt", store / "mine.step"]
    for age, path in enumerate([*steps, *others]):  # steps[0] the newest
        path.write_bytes(b"x")
        os.utime(path, (1e9 - age * 100, 1e9 - age * 100))
    monkeypatch.setattr(torch.compiler, "load_compiled_function", lambda f: "a compiled function")
    assert compiled_store.load(steps[3]) == "a compiled function"  # the oldest, used now

    class Fake:
        def save_compiled_function(self, path: str) -> None:
            Path(path).write_bytes(b"y")

    new = store / f"{99:032x}.step"
    compiled_store.save(new, Fake())
    kept = [new, steps[3], steps[0], *others]
    assert sorted(p.name for p in store.iterdir()) == sorted(p.name for p in kept)
