"""The encoder families of Hugging Face's layout (formats/hf.py's FAMILIES): BERT, DistilBERT and
RoBERTa, read as lmforge's `Encoder` (model/encoder.py).

DistilBERT is BERT's block (post-norm, GELU MLP) without token types or a pooler, under other
names: `transformer.layer.{i}.attention.q_lin` for `encoder.layer.{i}.attention.self.query`, and
so on; its LayerNorms' epsilon is fixed at 1e-12 in transformers' code, not in config.json.

RoBERTa is BERT's network and names (under `roberta.`) with one difference: positions count from
padding_idx + 1 (transformers numbers the real tokens padding_idx + 1, + 2, ...; lmforge pads on
the right, so that is every real token), so import drops the table's first padding_idx + 1 rows
and the context is max_position_embeddings - padding_idx - 1 (512 for roberta-base's 514 rows).
lmforge reads RoBERTa but does not write it (export writes encoders as BERT or DistilBERT).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.formats.hf_family import ACT_IN, ACT_OUT, Family, config_key, one_dropout, require, typed_key


# --- BERT -------------------------------------------------------------------------------------
def _bert_in(raw: dict[str, Any], file: str) -> ModelConfig:
    act = typed_key(raw, "hidden_act", file, str, "gelu")
    require(act in ACT_IN, file, f"hidden_act={act!r}")
    kind = raw.get("position_embedding_type", "absolute")
    require(kind == "absolute", file, f"position_embedding_type={kind!r}")
    return ModelConfig(
        n_layer=config_key(raw, "num_hidden_layers", file),
        n_head=config_key(raw, "num_attention_heads", file),
        n_embd=config_key(raw, "hidden_size", file),
        block_size=config_key(raw, "max_position_embeddings", file),
        vocab_size=config_key(raw, "vocab_size", file),
        type_vocab_size=raw.get("type_vocab_size", 2),
        mlp=ACT_IN[act],
        mlp_hidden=config_key(raw, "intermediate_size", file),
        norm_eps=raw.get("layer_norm_eps", 1e-12),
        tie_embeddings=False,
        # after the embeddings and each sublayer's output; on the attention probabilities (until
        # 2026-12-07 neither was read: a fine-tune ran without dropout, an export wrote 0.0)
        dropout=one_dropout(
            raw, file, ("hidden_dropout_prob", "attention_probs_dropout_prob"), "hidden_dropout_prob"
        ),
    )


def _bert_out(c: ModelConfig) -> dict[str, Any]:
    if not (c.bias and c.norm == "layernorm" and c.mlp in ACT_OUT and c.type_vocab_size):
        raise LmforgeError("this encoder has no BERT equivalent (needs biases, LayerNorm, gelu, token types)")
    return {
        "hidden_size": c.n_embd,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "intermediate_size": c.mlp_hidden or 4 * c.n_embd,
        "max_position_embeddings": c.block_size,
        "vocab_size": c.vocab_size,
        "type_vocab_size": c.type_vocab_size,
        "hidden_act": ACT_OUT[c.mlp],
        "layer_norm_eps": c.norm_eps,
        "hidden_dropout_prob": c.dropout,
        "attention_probs_dropout_prob": c.dropout,
        "position_embedding_type": "absolute",
    }


# --- DistilBERT -------------------------------------------------------------------------------
DISTILBERT_EPS = 1e-12  # transformers' DistilBERT hard-codes its LayerNorms' epsilon


def _distilbert_in(raw: dict[str, Any], file: str) -> ModelConfig:
    act = typed_key(raw, "activation", file, str, "gelu")
    require(act in ACT_IN, file, f"activation={act!r}")
    # transformers fills a sinusoidal table into the same weight; lmforge reads only learned positions
    require(
        not typed_key(raw, "sinusoidal_pos_embds", file, bool),
        file,
        "sinusoidal_pos_embds=true (learned positions only)",
    )
    return ModelConfig(
        n_layer=config_key(raw, "n_layers", file),
        n_head=config_key(raw, "n_heads", file),
        n_embd=config_key(raw, "dim", file),
        block_size=config_key(raw, "max_position_embeddings", file),
        vocab_size=config_key(raw, "vocab_size", file),
        type_vocab_size=0,  # DistilBERT has no token types
        mlp=ACT_IN[act],
        mlp_hidden=config_key(raw, "hidden_dim", file),
        norm_eps=DISTILBERT_EPS,
        tie_embeddings=False,
        dropout=one_dropout(raw, file, ("dropout", "attention_dropout"), "dropout"),
    )


def _distilbert_out(c: ModelConfig) -> dict[str, Any]:
    ok = c.bias and c.norm == "layernorm" and c.mlp in ACT_OUT and not c.type_vocab_size
    if not (ok and c.norm_eps == DISTILBERT_EPS):
        raise LmforgeError(
            "this encoder has no DistilBERT equivalent"
            " (needs biases, LayerNorm eps 1e-12, gelu, no token types)"
        )
    return {
        "dim": c.n_embd,
        "n_layers": c.n_layer,
        "n_heads": c.n_head,
        "hidden_dim": c.mlp_hidden or 4 * c.n_embd,
        "max_position_embeddings": c.block_size,
        "vocab_size": c.vocab_size,
        "activation": ACT_OUT[c.mlp],
        "sinusoidal_pos_embds": False,
        "dropout": c.dropout,
        "attention_dropout": c.dropout,
    }


BERT = Family(
    architecture="BertModel",
    kind="encoder",
    top={
        "wte": "embeddings.word_embeddings",
        "wpe": "embeddings.position_embeddings",
        "wtt": "embeddings.token_type_embeddings",
        "ln_e": "embeddings.LayerNorm",
        "pooler": "pooler.dense",
    },
    layer={
        "attn.qkv": ("attention.self.query", "attention.self.key", "attention.self.value"),
        "attn.proj": "attention.output.dense",
        "ln_1": "attention.output.LayerNorm",
        "mlp.up": "intermediate.dense",
        "mlp.down": "output.dense",
        "ln_2": "output.LayerNorm",
    },
    layer_prefix="encoder.layer.{i}.",
    config_in=_bert_in,
    config_out=_bert_out,
    alt_prefix=("", "bert."),
    ignored=("embeddings.position_ids",),
    optional=frozenset({"pooler"}),  # BertModel(add_pooling_layer=False) checkpoints have none
)


def _roberta_in(raw: dict[str, Any], file: str) -> ModelConfig:
    pad = raw.get("pad_token_id", 1)
    require(isinstance(pad, int) and pad >= 0, file, f"pad_token_id={pad!r}")
    config = _bert_in(raw, file)
    require(
        config.block_size > pad + 1, file, f"max_position_embeddings={config.block_size} <= pad_token_id + 1"
    )
    return dataclasses.replace(config, block_size=config.block_size - pad - 1)


def _roberta_out(c: ModelConfig) -> dict[str, Any]:
    raise LmforgeError("lmforge does not write RoBERTa directories (encoders export as BERT or DistilBERT)")


ROBERTA = dataclasses.replace(
    BERT,
    architecture="RobertaModel",
    config_in=_roberta_in,
    config_out=_roberta_out,
    alt_prefix=("", "roberta."),
    ignored=("embeddings.position_ids", "embeddings.token_type_ids"),
    padded_positions=True,
)
DISTILBERT = Family(
    architecture="DistilBertModel",
    kind="encoder",
    top={
        "wte": "embeddings.word_embeddings",
        "wpe": "embeddings.position_embeddings",
        "ln_e": "embeddings.LayerNorm",
    },
    layer={
        "attn.qkv": ("attention.q_lin", "attention.k_lin", "attention.v_lin"),
        "attn.proj": "attention.out_lin",
        "ln_1": "sa_layer_norm",
        "mlp.up": "ffn.lin1",
        "mlp.down": "ffn.lin2",
        "ln_2": "output_layer_norm",
    },
    layer_prefix="transformer.layer.{i}.",
    config_in=_distilbert_in,
    config_out=_distilbert_out,
    alt_prefix=("", "distilbert."),
    ignored=("embeddings.position_ids",),
    optional=frozenset({"pooler"}),  # DistilBERT has no pooler: lmforge's stays unused
)
