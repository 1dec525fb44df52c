"""One source for model options: every family builds its blocks from the same ModelConfig keys,
and a key a family cannot honour is a one-line error, never silently ignored."""

from __future__ import annotations

from dataclasses import asdict, replace

import pytest
import torch

from lmforge.config import ModelConfig, load_config, model_config_from
from lmforge.errors import LmforgeError
from lmforge.model.encoder import Encoder
from lmforge.model.gpt import GPT
from lmforge.model.seq2seq import Seq2Seq

BASE = ModelConfig(n_layer=1, n_head=4, n_embd=32, block_size=16, vocab_size=50, arch="seq2seq")


def test_seq2seq_honours_grouped_query_attention_and_qkv_bias() -> None:
    plain = Seq2Seq(BASE, pad_id=0)
    grouped = Seq2Seq(replace(BASE, n_kv_head=2, qkv_bias=True, bias=False), pad_id=0)
    for stack in (grouped.encoder, grouped.decoder):
        attn = stack.blocks[0].attn
        assert attn.n_kv_head == 2
        assert attn.qkv.weight.shape == ((4 + 2 * 2) * 8, 32)  # 4 query heads, 2 key and 2 value heads
        assert attn.qkv.bias is not None  # qkv_bias even though bias=False
    assert plain.encoder.blocks[0].attn.qkv.weight.shape == (3 * 32, 32)
    src = torch.randint(1, 50, (2, 5))
    assert grouped(src, src).shape == (2, 5, 50)


def test_seq2seq_honours_rope_theta() -> None:
    a = Seq2Seq(replace(BASE, pos="rope", rope_theta=10000.0), pad_id=0)
    b = Seq2Seq(replace(BASE, pos="rope", rope_theta=500.0), pad_id=0)
    rotary_a, rotary_b = a.encoder.blocks[0].attn.rotary, b.encoder.blocks[0].attn.rotary
    assert not torch.allclose(rotary_a.cos, rotary_b.cos)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["--model.post_norm=true"], "model.post_norm"),
        (["--model.final_norm=false"], "model.final_norm"),
        (["--model.logits_bias=true"], "model.logits_bias"),
        # a decoder scales its embeddings too since Gemma 3 (2026-12-07); a seq2seq has no sandwich norms
        (["--model.arch=seq2seq", "--data.task=translation", "--model.sandwich_norm=true"], "sandwich_norm"),
        (["--model.type_vocab_size=2"], "model.type_vocab_size"),
        (["--model.arch=seq2seq", "--data.task=translation", "--model.type_vocab_size=2"], "type_vocab_size"),
    ],
)
def test_a_key_the_model_cannot_honour_is_a_one_line_error(overrides: list[str], key: str) -> None:
    with pytest.raises(LmforgeError, match=rf"{key}=.* is not supported by the (gpt|seq2seq) model"):
        load_config(None, overrides)


def test_every_constructor_checks_the_same() -> None:
    gpt = replace(BASE, arch="gpt")
    with pytest.raises(LmforgeError, match="post_norm=True is not supported by the gpt model"):
        GPT(replace(gpt, post_norm=True))
    with pytest.raises(LmforgeError, match="pos='rope' is not supported by the encoder model"):
        Encoder(replace(gpt, pos="rope"))
    with pytest.raises(LmforgeError, match="vocab_size must be set"):
        Seq2Seq(replace(BASE, vocab_size=0), pad_id=0)


def test_model_config_json_is_type_checked_and_validated() -> None:
    raw = {"model_type": "lmforge-gpt", **asdict(replace(BASE, arch="gpt"))}
    assert model_config_from(raw, "config.json") == replace(BASE, arch="gpt")
    with pytest.raises(LmforgeError, match=r"config.json: model.n_layer='2' must be an integer"):
        model_config_from(dict(raw, n_layer="2"), "config.json")
    with pytest.raises(LmforgeError, match=r"config.json: .*n_embd=30 is not divisible by model.n_head=4"):
        model_config_from(dict(raw, n_embd=30), "config.json")


def test_rmsnorm_in_bf16_equals_llamas_reference() -> None:
    """bf16 weights (inference): the statistics stay in fp32 as in transformers' LlamaRMSNorm."""
    transformers = pytest.importorskip("transformers")
    from lmforge.model.layers import make_norm

    torch.manual_seed(0)
    x = (torch.randn(3, 7, 64) * 4).bfloat16()
    ours = make_norm("rmsnorm", 64, False, 1e-5)
    ours.weight.data = torch.rand(64) * 2
    theirs = transformers.models.llama.modeling_llama.LlamaRMSNorm(64, eps=1e-5)
    theirs.weight.data = ours.weight.data.clone()
    assert torch.equal(ours.bfloat16()(x), theirs.bfloat16()(x))
    assert torch.allclose(ours.float()(x.float()), theirs.float()(x.float()), atol=1e-6)
