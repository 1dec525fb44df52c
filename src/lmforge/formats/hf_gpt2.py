"""GPT-2's Hugging Face family (`GPT2LMHeadModel`): its config.json keys and its modules, Conv1D
weights stored (in, out), hence `transposed`."""

from __future__ import annotations

from typing import Any

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.formats.hf_family import ACT_IN, ACT_OUT, Family, config_key, one_dropout, require, typed_key


def _gpt2_in(raw: dict[str, Any], file: str) -> ModelConfig:
    act = typed_key(raw, "activation_function", file, str, "gelu_new")
    require(act in ACT_IN, file, f"activation_function={act!r}")
    inverse = typed_key(raw, "scale_attn_by_inverse_layer_idx", file, bool, False)
    require(not inverse, file, "scale_attn_by_inverse_layer_idx=true")
    require(typed_key(raw, "scale_attn_weights", file, bool, True), file, "scale_attn_weights=false")
    return ModelConfig(
        # embd_pdrop after the embeddings, attn_pdrop on the attention probabilities, resid_pdrop
        # on each attention and MLP output
        dropout=one_dropout(raw, file, ("attn_pdrop", "embd_pdrop", "resid_pdrop"), "resid_pdrop"),
        n_layer=config_key(raw, "n_layer", file),
        n_head=config_key(raw, "n_head", file),
        n_embd=config_key(raw, "n_embd", file),
        block_size=config_key(raw, "n_positions", file),
        vocab_size=config_key(raw, "vocab_size", file),
        mlp=ACT_IN[act],
        mlp_hidden=raw.get("n_inner") or 0,
        norm_eps=raw.get("layer_norm_epsilon", 1e-5),
        tie_embeddings=raw.get("tie_word_embeddings", True),
    )


def _gpt2_out(c: ModelConfig) -> dict[str, Any]:
    ok = c.pos == "learned" and c.bias and c.norm == "layernorm" and c.mlp in ACT_OUT and not c.n_kv_head
    if not ok or c.qk_norm or c.head_size() * c.n_head != c.n_embd:
        raise LmforgeError(
            "this model has no GPT-2 equivalent (needs learned positions, biases, LayerNorm, gelu,"
            " n_embd / n_head heads without q/k norms)"
        )
    return {
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_embd": c.n_embd,
        "n_positions": c.block_size,
        "vocab_size": c.vocab_size,
        "n_inner": c.mlp_hidden or None,
        "activation_function": ACT_OUT[c.mlp],
        "layer_norm_epsilon": c.norm_eps,
        "tie_word_embeddings": c.tie_embeddings,
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": c.dropout,
    }


GPT2 = Family(
    architecture="GPT2LMHeadModel",
    kind="gpt",
    top={
        "wte": "transformer.wte",
        "wpe": "transformer.wpe",
        "ln_f": "transformer.ln_f",
        "lm_head": "lm_head",
    },
    layer={
        "ln_1": "ln_1",
        "attn.qkv": "attn.c_attn",
        "attn.proj": "attn.c_proj",
        "ln_2": "ln_2",
        "mlp.up": "mlp.c_fc",
        "mlp.down": "mlp.c_proj",
    },
    layer_prefix="transformer.h.{i}.",
    config_in=_gpt2_in,
    config_out=_gpt2_out,
    transposed=frozenset({"attn.qkv", "attn.proj", "mlp.up", "mlp.down"}),
    alt_prefix=("transformer.", ""),
    ignored=(".attn.bias", ".attn.masked_bias"),
)
