"""Phi-3 (`model_type: phi3`): fused qkv_proj and gate_up_proj, partial rotary (Phi-4-mini's 0.75),
LongRoPE's short and long factors, a sliding window on every layer, checked against transformers'
Phi3ForCausalLM on tiny random models: logits, greedy tokens (cached, uncached, a left-padded
batch, across the original context), export back, fine-tuning, the plan's counts and refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import make_text
from hf_helpers import VOCAB, assert_same_weights, hf_greedy, load_whole, save_randomised

import lmforge
from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.formats.hf_export import export_hf
from lmforge.formats.hf_files import import_hf
from lmforge.inference.generate import generate_ids
from lmforge.model.gpt import GPT
from lmforge.tools import plan_model

transformers = pytest.importorskip("transformers")

PROMPTS = [[5, 9, 9, 12, 30, 7, 44, 3], [40, 41, 17]]  # different lengths: a left-padded batch
ORIGINAL = 16  # longrope's original context: prompts + 14 new tokens cross it while decoding
LONGROPE = {
    "original_max_position_embeddings": ORIGINAL,
    "rope_parameters": {
        "rope_type": "longrope",
        "rope_theta": 10000.0,
        "short_factor": [1.0 + 0.1 * i for i in range(8)],  # 16-wide heads: 8 frequencies
        "long_factor": [1.5 + 0.5 * i for i in range(8)],
    },
}
CONFIGS: dict[str, dict[str, Any]] = {
    "mini": {"sliding_window": 5},  # Phi-3-mini-4k's shape: every layer slides
    "phi4": {"partial_rotary_factor": 0.75, "tie_word_embeddings": True},  # GQA (2 kv heads), tied
    "longrope": LONGROPE,
}


def make_phi3(directory: Path, **changes: Any) -> torch.nn.Module:
    """A random Phi3ForCausalLM (norms moved off 1) saved with a tiny tokenizer; returned in eval."""
    config = transformers.Phi3Config(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        initializer_range=0.2,
        eos_token_id=0,
        bos_token_id=0,
        pad_token_id=0,
        **changes,
    )
    torch.manual_seed(0)
    return save_randomised(transformers.Phi3ForCausalLM(config).eval(), directory)


def _max_difference(ours: GPT, hf: torch.nn.Module, length: int = 24) -> float:
    ids = torch.randint(0, VOCAB, (2, length), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return (ours(ids) - hf(input_ids=ids).logits).abs().max().item()


def _check_parity(hf: torch.nn.Module, ours: GPT) -> None:
    """Logits within 1e-4 (sequences shorter and longer than longrope's original context); 14
    greedy tokens as transformers' generate, cached, uncached and in a left-padded batch."""
    for length in (12, 30):
        assert _max_difference(ours, hf, length) <= 1e-4
    theirs = [hf_greedy(hf, p, 14) for p in PROMPTS]
    assert generate_ids(ours, PROMPTS[:1], 14, temperature=0.0, eos_id=None) == theirs[:1]
    assert generate_ids(ours, PROMPTS[:1], 14, temperature=0.0, use_cache=False, eos_id=None) == theirs[:1]
    assert generate_ids(ours, PROMPTS, 14, temperature=0.0, eos_id=None) == theirs  # cached, padded


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_parity_import_export_roundtrip(kind: str, tmp_path: Path) -> None:
    hf_dir, ours_dir, back_dir = tmp_path / "hf", tmp_path / "lmforge", tmp_path / "back"
    hf = make_phi3(hf_dir, **CONFIGS[kind])
    model, _ = lmforge.load(hf_dir)
    c = model.config
    assert model.blocks[0].attn.qkv.weight.shape == ((4 + 2 * 2) * 16, 64)
    assert (c.sliding_window, c.rope_partial_factor, c.rope_type) == {
        "mini": (5, 1.0, "default"),
        "phi4": (0, 0.75, "default"),
        "longrope": (0, 1.0, "longrope"),
    }[kind]
    assert c.tie_embeddings == (kind == "phi4")
    _check_parity(hf, model)

    import_hf(hf_dir, ours_dir)
    imported, _ = lmforge.load(ours_dir)
    assert imported.config == c
    export_hf(ours_dir, back_dir)
    raw = json.loads((back_dir / "config.json").read_text())
    assert (raw["model_type"], raw["architectures"], raw["pad_token_id"]) == ("phi3", ["Phi3ForCausalLM"], 0)
    back = load_whole(transformers.AutoModelForCausalLM, back_dir)
    assert type(back) is transformers.Phi3ForCausalLM
    _check_parity(back, imported)
    assert_same_weights(hf_dir, back_dir)


def test_a_longrope_cache_is_recomputed_where_transformers_recomputes(tmp_path: Path) -> None:
    """Past the original context the whole sequence rotates with the long factors: a cache filled
    with the short ones is refused in one line, and generate recomputes it (as transformers'
    generate does), so cached decoding gives the uncached logits."""
    make_phi3(tmp_path / "hf", **LONGROPE)
    model, _ = lmforge.load(tmp_path / "hf")
    ids = torch.randint(0, VOCAB, (1, ORIGINAL + 1), generator=torch.Generator().manual_seed(4))
    cache = model.new_cache(1)
    with torch.no_grad():
        model(ids[:, :ORIGINAL], cache)
        with pytest.raises(
            LmforgeError, match=r"^longrope: a KV cache rotated with the short factors .*=16;"
        ):
            model(ids[:, ORIGINAL:], cache)
        whole = model(ids)[:, -1]
        cache = model.new_cache(1)
        model(ids[:, : ORIGINAL - 1], cache)  # a cache that stays within the original context
        step = model(ids[:, ORIGINAL - 1 : ORIGINAL], cache)
        assert torch.allclose(step, model(ids[:, :ORIGINAL])[:, -1:], atol=1e-5)
    assert model.stale_cache(ORIGINAL) and not model.stale_cache(ORIGINAL + 1)
    assert whole.shape == (1, VOCAB)


def test_the_server_rotates_long_throughout_as_vllm(tmp_path: Path) -> None:
    """A served LongRoPE model whose context passes the original takes the long factors at every
    length, as vLLM does (its rows keep their caches, which a switch would make stale): a request
    crossing the original context is answered, with what the uncached forward gives at each step,
    and a sequence past the original still gets transformers' logits."""
    from fastapi.testclient import TestClient

    from lmforge.server.app import Settings, create_app
    from lmforge.server.models import load_models

    hf = make_phi3(tmp_path / "phi", **LONGROPE)
    models = load_models([tmp_path / "phi"], dtype="fp32")
    served = models["phi"]
    assert "LongRoPE's long factors at every length" in served.decoding
    prompt = PROMPTS[0] + [1, 2]  # 10 tokens + 20 new: past the original 16
    body = {"model": "phi", "prompt": prompt, "max_tokens": 20, "temperature": 0}
    reply = TestClient(create_app(models, Settings(max_tokens_limit=300))).post("/v1/completions", json=body)
    assert reply.status_code == 200, reply.text
    uncached = generate_ids(served.net, [prompt], 20, temperature=0.0, eos_id=None, use_cache=False)[0]
    assert reply.json()["choices"][0]["text"] == served.tokenizer.decode(uncached)
    long = torch.randint(0, VOCAB, (1, ORIGINAL + 8), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(served.net(long), hf(long).logits, rtol=1e-4, atol=1e-4)
        short = long[:, :ORIGINAL]  # within the original: the long factors, unlike transformers'
        assert not torch.allclose(served.net(short), hf(short).logits, atol=1e-3)


def test_a_phi3_config_json_reads_as_transformers_does(tmp_path: Path) -> None:
    """The older rope_scaling with `type: su`, whose original context is the top-level key, and a
    window as long as the context (Phi-3.5's), which slides nothing."""
    hf_dir = tmp_path / "hf"
    hf = make_phi3(hf_dir, **LONGROPE)
    raw = json.loads((hf_dir / "config.json").read_text())
    scaling = {k: v for k, v in LONGROPE["rope_parameters"].items() if k != "rope_type"} | {"type": "su"}
    older = {k: v for k, v in raw.items() if k != "rope_parameters"} | {"rope_scaling": scaling}
    (hf_dir / "config.json").write_text(json.dumps(older | {"sliding_window": 64}))
    model, _ = lmforge.load(hf_dir)
    assert (model.config.rope_type, model.config.rope_original_context, model.config.sliding_window) == (
        "longrope",
        ORIGINAL,
        0,
    )
    assert _max_difference(model, hf, 30) <= 1e-4


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0}}, r"unsupported rope type 'dynamic'"),
        (
            {"rope_parameters": {**LONGROPE["rope_parameters"], "short_factor": [1.0, 2.0]}},
            r"'rope_parameters.short_factor' must list 8 numbers > 0",
        ),
        (  # transformers reads rope_parameters' own over the top-level key, as lmforge
            {"rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.1}},
            r"unsupported partial_rotary_factor=0.1 \(head_dim 16 x it must",
        ),
        ({"resid_pdrop": 0.1}, r"unsupported resid_pdrop=0.1 != attention_dropout=0.0"),
        ({"hidden_act": "gelu"}, r"unsupported hidden_act='gelu'"),
    ],
)
def test_what_lmforge_does_not_compute_is_refused_in_one_line(
    change: dict, error: str, tmp_path: Path
) -> None:
    hf_dir = tmp_path / "hf"
    make_phi3(hf_dir)
    raw = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps(raw | change))
    with pytest.raises(LmforgeError, match=r"^" + str(hf_dir / "config.json") + ": .*" + error):
        lmforge.load(hf_dir)


def test_compiled_decoding_and_onnx_refuse_longrope(tmp_path: Path) -> None:
    from lmforge.formats.onnx_export import export_onnx

    make_phi3(tmp_path / "hf", **LONGROPE)
    model, _ = lmforge.load(tmp_path / "hf")
    with pytest.raises(LmforgeError, match=r"^compiled decoding does not cover model.rope_type='longrope'"):
        generate_ids(model, PROMPTS[:1], 4, temperature=0, compile=True)
    assert generate_ids(model, PROMPTS[:1], 4, temperature=0, compile="auto")  # auto: eager
    with pytest.raises(LmforgeError, match=r"the ONNX export does not cover model.rope_type='longrope'"):
        export_onnx(tmp_path / "hf", tmp_path / "onnx")


def test_full_and_lora_fine_tunes_run_and_export(tmp_path: Path) -> None:
    """A few steps from a Phi-4-mini-like directory, the whole model and LoRA adapters: both train;
    the full run exports as a Phi3ForCausalLM and the adapters (o_proj, down_proj) as PEFT's, each
    with lmforge's logits; adapters on the fused qkv_proj have no PEFT equivalent, said in one line."""
    hf_dir = tmp_path / "hf"
    make_phi3(hf_dir, **CONFIGS["phi4"])
    (tmp_path / "text.txt").write_text(make_text(lines=200))
    common = [f"--data.input={tmp_path / 'text.txt'}", f"--train.init_from={hf_dir}", "--train.max_steps=3"]
    common += ["--train.batch_size=2", "--train.eval_batches=1", "--train.dtype=fp32", "--data.seq_len=16"]
    lmforge.train(None, [*common, "--train.lr=1e-3"], out=tmp_path / "full", quiet=True)
    tuned, _ = lmforge.load(tmp_path / "full")
    start, _ = lmforge.load(hf_dir)
    assert tuned.config == start.config
    assert not torch.equal(tuned.blocks[0].mlp.gate.weight, start.blocks[0].mlp.gate.weight)
    export_hf(tmp_path / "full", tmp_path / "back")
    assert _max_difference(tuned, load_whole(transformers.AutoModelForCausalLM, tmp_path / "back")) <= 1e-4
    lora = [*common, "--lora.enabled=true", "--lora.targets=o_proj,down_proj"]
    lmforge.train(
        None, [*lora, "--train.lr=5e-2", "--train.warmup_steps=0"], out=tmp_path / "lora", quiet=True
    )
    adapted, _ = lmforge.load(tmp_path / "lora")
    assert _max_difference(adapted, load_whole(transformers.AutoModelForCausalLM, hf_dir)) > 1e-2  # trained
    peft = pytest.importorskip("peft")
    export_hf(tmp_path / "lora", tmp_path / "adapter")
    base = load_whole(transformers.AutoModelForCausalLM, hf_dir)
    assert _max_difference(adapted, peft.PeftModel.from_pretrained(base, tmp_path / "adapter").eval()) <= 1e-4
    fused = [*common, "--lora.enabled=true", "--lora.targets=q_proj,gate_proj"]
    lmforge.train(None, fused, out=tmp_path / "q", quiet=True)
    with pytest.raises(
        LmforgeError, match=r"is one fused module in Phi3ForCausalLM \(model.layers.0.self_attn"
    ):
        export_hf(tmp_path / "q", tmp_path / "q_adapter")


def test_the_plan_counts_the_built_model() -> None:
    c = ModelConfig(
        vocab_size=97, n_layer=2, n_head=4, n_kv_head=2, n_embd=64, block_size=32, pos="rope", mlp="swiglu",
        bias=False, norm="rmsnorm", rope_partial_factor=0.75, rope_type="longrope", rope_original_context=16,
        rope_factor=2.0, rope_short_factor=[1.0] * 6, rope_long_factor=[2.0] * 6, sliding_window=8,
    )  # fmt: skip
    model = GPT(c)
    assert plan_model.count(c).params == sum(p.numel() for p in model.parameters())
    assert model.blocks[0].attn.rotary.cos.shape == (32, 12)  # 0.75 of 16 dimensions turn


def test_partial_rotary_keeps_the_last_dimensions() -> None:
    """With rope_partial_factor 0.5, a query's last half is the projection's own, at every position."""
    c = ModelConfig(vocab_size=97, n_layer=1, n_head=2, n_embd=32, block_size=16, pos="rope",
                    rope_partial_factor=0.5)  # fmt: skip
    rotary = GPT(c).blocks[0].attn.rotary
    x = torch.randn(1, 2, 10, 16)
    turned = rotary(x, 3)
    assert torch.equal(turned[..., 8:], x[..., 8:]) and not torch.allclose(turned[..., :8], x[..., :8])


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"rope_partial_factor": 0.0}, r"^model.rope_partial_factor=0.0 must be in \(0, 1\]$"),
        ({"rope_partial_factor": 0.5}, r"^model.rope_partial_factor=0.5 changes nothing without model.pos"),
        (
            {"pos": "rope", "rope_short_factor": [1.0]},
            r"^model.rope_short_factor=\[1.0\] changes nothing with",
        ),
        (
            {
                "pos": "rope",
                "rope_type": "longrope",
                "rope_short_factor": [1.0] * 16,
                "rope_long_factor": [0.0] * 16,
            },
            r"^model.rope_long_factor must list 16 numbers > 0 \(one per rotary frequency\), not 16$",
        ),
    ],
)
def test_bad_rotary_keys_are_one_line(change: dict, error: str) -> None:
    from lmforge.config.model_checks import check_model

    with pytest.raises(LmforgeError, match=error):
        check_model(ModelConfig(vocab_size=97, **change))
