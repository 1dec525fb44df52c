"""Dynamic NTK rotary scaling (transformers' rope_type "dynamic"; model/rope_scaling.py): imported
Llama-family models give transformers' logits within and past max_position_embeddings, and its
generate()'s step logits and greedy tokens across the crossing, cached keys keeping the base they
were rotated with. It was refused in one line before."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch
import transformers
from hf_helpers import VOCAB, save_randomised

import lmforge
from lmforge.errors import LmforgeError
from lmforge.formats.hf_export import export_hf
from lmforge.inference.generate import generate_ids
from lmforge.inference.prefill import prefill
from lmforge.model.gpt import GPT

ORIGINAL = 32  # max_position_embeddings: the base grows past it
LLAMA = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": ORIGINAL,
    "rms_norm_eps": 1e-6,
    "initializer_range": 0.2,
    "eos_token_id": 0,
    "bos_token_id": 0,
}
DYNAMIC = {"rope_type": "dynamic", "factor": 4.0}


def _hf(directory: Path, old_style: bool = False) -> None:
    """A random Llama with dynamic scaling saved to directory (old_style: transformers 4's
    rope_scaling with `type`, as the Hub's files have it)."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**LLAMA, rope_parameters={"rope_theta": 500.0, **DYNAMIC})
    save_randomised(transformers.LlamaForCausalLM(config).eval(), directory)
    if old_style:
        raw = json.loads((directory / "config.json").read_text())
        params = raw.pop("rope_parameters")
        raw |= {"rope_theta": params.pop("rope_theta"), "rope_scaling": {"type": "dynamic", "factor": 4.0}}
        (directory / "config.json").write_text(json.dumps(raw))


def _fresh(directory: Path) -> torch.nn.Module:
    """transformers' model, loaded anew: its dynamic rotary keeps the longest length it saw."""
    model = transformers.LlamaForCausalLM.from_pretrained(directory).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def _ids(t: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (1, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("old_style", [False, True])
def test_dynamic_logits_match_transformers_within_and_past_the_original_context(
    old_style: bool, tmp_path: Path
) -> None:
    _hf(tmp_path / "hf", old_style)
    model, _ = lmforge.load(tmp_path / "hf")
    c = model.config
    assert (c.rope_type, c.rope_factor, c.rope_original_context, c.block_size) == ("dynamic", 4.0, 32, 128)
    plain = GPT(dataclasses.replace(c, rope_type="default", rope_factor=1.0, rope_original_context=8192))
    plain.load_state_dict(model.state_dict())
    for t in (20, 32, 50, 100):  # within, at, and past max_position_embeddings
        ids = _ids(t)
        with torch.no_grad():
            theirs = _fresh(tmp_path / "hf")(input_ids=ids).logits
            assert (theirs - model(ids)).abs().max().item() <= 1e-4, t
            # the scaling matters at these sizes: a fixed base is what it is up to 32 only
            assert ((theirs - plain(ids)).abs().max().item() > 1e-2) == (t > ORIGINAL), t


@pytest.mark.parametrize("prompt", [24, 40])
def test_cached_decoding_matches_transformers_generate_across_the_crossing(
    prompt: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers' generate recomputes inv_freq at each step from the length reached and keeps
    the cache's keys as they were rotated: each step's logits and the greedy tokens are its. A
    prompt past the original context is prefilled in one forward, not in chunks (each would take
    the base of its own end)."""
    monkeypatch.setattr(sys.modules[prefill.__module__], "PREFILL_CHUNK", 16)  # the module's
    _hf(tmp_path / "hf")
    model, _ = lmforge.load(tmp_path / "hf")
    ids, new = _ids(prompt, seed=2), 20
    hf = _fresh(tmp_path / "hf")
    with torch.no_grad():
        out = hf.generate(
            ids, max_new_tokens=new, do_sample=False, output_logits=True, return_dict_in_generate=True
        )
    theirs = out.sequences[0, prompt:].tolist()
    assert generate_ids(model, [ids[0].tolist()], new, temperature=0.0, eos_id=None)[0] == theirs
    with torch.no_grad():  # step by step through the cache: every step's logits
        cache = model.new_cache(1, prompt + new)
        logits = prefill(model, ids, cache, None)
        for step, token in enumerate(theirs):
            assert (logits - out.logits[step]).abs().max().item() <= 1e-4, step
            logits = model(torch.tensor([[token]]), cache, True)[:, -1]
        # the cache is what makes it so: one forward over the same tokens rotates all with one base
        whole = model(out.sequences[:, :-1])[:, -1]
        assert (whole - out.logits[-1]).abs().max().item() > 1e-3


def test_a_padded_batch_decodes_each_row_as_alone(tmp_path: Path) -> None:
    """Left-padded rows of different lengths: each row's base from its own length."""
    _hf(tmp_path / "hf")
    model, _ = lmforge.load(tmp_path / "hf")
    prompts = [_ids(40, seed=3)[0].tolist(), _ids(22, seed=4)[0].tolist()]
    together = generate_ids(model, prompts, 16, temperature=0.0, eos_id=None)
    assert together == [generate_ids(model, [p], 16, temperature=0.0, eos_id=None)[0] for p in prompts]


def test_a_batch_whose_longest_row_slides_past_the_context_leaves_the_others_as_alone(tmp_path: Path) -> None:
    """Past block_size the window slides by a full forward over every row, which under dynamic NTK
    rotates a row's keys with one base where its cache kept older ones: the short rows changed
    with a long batchmate (M4's adversarial pass). Such a batch decodes its rows in turn."""
    _hf(tmp_path / "hf")
    model, _ = lmforge.load(tmp_path / "hf")
    prompts = [_ids(20, seed=5)[0].tolist(), _ids(60, seed=6)[0].tolist(), _ids(110, seed=7)[0].tolist()]
    together = generate_ids(model, prompts, 40, temperature=0.0, eos_id=None)  # 110 + 40 > 128
    assert together == [generate_ids(model, [p], 40, temperature=0.0, eos_id=None)[0] for p in prompts]


def test_dynamic_exports_back_and_transformers_reads_it(tmp_path: Path) -> None:
    _hf(tmp_path / "hf", old_style=True)
    model, _ = lmforge.load(tmp_path / "hf")
    export_hf(tmp_path / "hf", tmp_path / "out")
    raw = json.loads((tmp_path / "out" / "config.json").read_text())
    assert raw["max_position_embeddings"] == ORIGINAL
    assert raw["rope_parameters"] == {"rope_type": "dynamic", "rope_theta": 500.0, "factor": 4.0}
    again, _ = lmforge.load(tmp_path / "out")
    assert again.config == model.config
    ids = _ids(60)
    with torch.no_grad():
        assert (_fresh(tmp_path / "out")(input_ids=ids).logits - model(ids)).abs().max().item() <= 1e-4


def test_compiled_decoding_and_onnx_refuse_dynamic(tmp_path: Path) -> None:
    from lmforge.formats.onnx_export import export_onnx

    _hf(tmp_path / "hf")
    model, _ = lmforge.load(tmp_path / "hf")
    prompt = _ids(8)[0].tolist()
    with pytest.raises(LmforgeError, match=r"^compiled decoding does not cover model.rope_type='dynamic'"):
        generate_ids(model, [prompt], 4, temperature=0, compile=True)
    assert generate_ids(model, [prompt], 4, temperature=0, compile="auto")  # auto: eager
    with pytest.raises(LmforgeError, match=r"the ONNX export does not cover model.rope_type='dynamic'"):
        export_onnx(tmp_path / "hf", tmp_path / "onnx")


def test_the_servers_prefill_takes_a_prompt_past_the_original_context_whole(tmp_path: Path) -> None:
    """The server prefills in turns of a few tokens; past the original context in one forward,
    with the base of the whole prompt, as transformers' prefill."""
    from lmforge.inference.batching import Prefill, Sequence

    _hf(tmp_path / "hf")
    model, _ = lmforge.load(tmp_path / "hf")
    ids = _ids(40, seed=5)
    with torch.no_grad():
        whole = model(ids)[:, -1]
        short, long = (
            Prefill(model, [Sequence(ids[0, :30].tolist())]),
            Prefill(model, [Sequence(ids[0].tolist())]),
        )
        assert not short.step(16)  # within it: in turns
        assert long.step(16)
        assert (model.lm_head(long.states[-1])[:, -1] - whole).abs().max().item() <= 1e-5
