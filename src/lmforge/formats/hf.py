"""Hugging Face state-dict adapters: one small `Family` mapping per architecture.

A family says how an HF config.json becomes a ModelConfig (and back) and which HF module holds each
lmforge module. The mapping is by module, so `.weight` and `.bias` follow together; a tuple of HF
modules is fused along the output rows (HF's separate q, k, v projections -> lmforge's one `qkv`);
`transposed` names GPT-2's Conv1D modules, which store weights as (in, out). Adding a family is
one more `Family` entry in FAMILIES. Marian (opus-mt) maps onto lmforge's Seq2Seq (its Marian
options: model/seq2seq.py), with a second layer stack (`stacks`: the decoder's).

The encoder families (BERT, DistilBERT, RoBERTa) are in formats/hf_encoders.py, GPT-2 in
formats/hf_gpt2.py, Gemma 3 in formats/hf_gemma.py, Gemma 2 in formats/hf_gemma2.py, SmolLM3's keys
(Llama's shape with NoPE layers) in formats/hf_smollm3.py, Phi-3 (fused projections, partial
rotary, LongRoPE) in formats/hf_phi3.py, the `Family` record in formats/hf_family.py, the rotary
keys (rope_parameters / rope_scaling) in formats/hf_rope.py.
formats/hf_convert.py converts state dicts (`hf_to_lmforge` / `lmforge_to_hf`); formats/hf_files.py
reads and writes the directories.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.formats.hf_encoders import BERT, DISTILBERT, DISTILBERT_EPS, ROBERTA
from lmforge.formats.hf_family import Family, attention_dropout, config_key, require, typed_key
from lmforge.formats.hf_gemma import GEMMA3, is_gemma_shaped
from lmforge.formats.hf_gemma2 import GEMMA2
from lmforge.formats.hf_gpt2 import GPT2
from lmforge.formats.hf_phi3 import PHI3, is_phi3_shaped
from lmforge.formats.hf_rope import rope_in, rope_out
from lmforge.formats.hf_smollm3 import smollm3_out, smollm3_raw


# --- Llama, Mistral, Qwen2, Qwen3, SmolLM3 ---------------------------------------------------
def is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


QWEN_WINDOW, QWEN_FULL_LAYERS = 4096, 28  # Qwen2Config's and Qwen3Config's sliding_window, max_window_layers


def _qwen_layer_types(raw: dict[str, Any], file: str, window: int | None) -> list[str]:
    """layer_types as Qwen2Config and Qwen3Config derive them where config.json has none: with a
    window (use_sliding_window's), layer i slides when i >= max_window_layers (28 where absent)."""
    n_layer = config_key(raw, "num_hidden_layers", file, kind=int)
    first = typed_key(raw, "max_window_layers", file, int, QWEN_FULL_LAYERS)
    slides = window is not None  # None without use_sliding_window
    return ["sliding_attention" if slides and i >= first else "full_attention" for i in range(n_layer)]


def _llama_in(raw: dict[str, Any], file: str) -> ModelConfig:
    n_embd = config_key(raw, "hidden_size", file, kind=int)
    n_head = config_key(raw, "num_attention_heads", file, kind=int)
    qwen3 = raw.get("model_type") == "qwen3"
    require(raw.get("hidden_act", "silu") == "silu", file, f"hidden_act={raw.get('hidden_act')!r}")
    biased = typed_key(raw, "attention_bias", file, bool) or typed_key(raw, "mlp_bias", file, bool)
    require(not biased, file, "attention_bias/mlp_bias")
    require(is_count(n_head), file, f"num_attention_heads={n_head!r}")  # 0 read as a head_dim problem
    # an explicit head_dim may differ from hidden_size / heads (Qwen3's; its config class says 128)
    head_dim = typed_key(raw, "head_dim", file, int, 128 if qwen3 else None)
    require(head_dim is None or is_count(head_dim), file, f"head_dim={head_dim}")
    require(head_dim is not None or n_embd % n_head == 0, file,
            f"hidden_size / num_attention_heads = {n_embd} / {n_head} without a head_dim")  # fmt: skip
    head_dim = head_dim or n_embd // n_head
    context = positions = config_key(raw, "max_position_embeddings", file, kind=int)
    # only Mistral slides without saying so: Qwen2's and Qwen3's config classes default to false,
    # and Llama has no sliding window (a sliding_window key in its config.json changes nothing)
    sliding = typed_key(raw, "use_sliding_window", file, bool, False) or raw.get("model_type") == "mistral"
    window = typed_key(raw, "sliding_window", file, int)  # its type checked, used or not
    window = window if sliding else None
    qwen = raw.get("model_type") in ("qwen2", "qwen3")
    if qwen and sliding and "sliding_window" not in raw:  # their config classes' default (null: none)
        window = QWEN_WINDOW
    # transformers 5 names each layer's attention: a Qwen2 with use_sliding_window whose
    # max_window_layers covers every layer slides in none of them, and attends the whole context
    layers = raw.get("layer_types")
    if layers is None and qwen:  # transformers 4's files: derived as transformers 5 derives them
        layers = _qwen_layer_types(raw, file, window)
    if isinstance(layers, list) and layers and "sliding_attention" not in layers:
        window = None
    rope = rope_in(raw, file, positions, dynamic=True)  # the model's positions, not the window's cap
    original = rope.get("rope_original_context", 0)
    if rope.get("rope_type") == "yarn" and positions <= original:  # Qwen2.5's files: positions the
        # original, which transformers does not cap at; the context is the original stretched
        # (vLLM's max_model_len). A longer one (DeepSeek's, an lmforge export's) is the model's own.
        context = max(context, int(original * rope["rope_factor"]))
    if rope.get("rope_type") == "dynamic":  # transformers does not cap it past its positions either:
        context = max(positions, int(positions * rope["rope_factor"]))  # stretched: vLLM's max_model_len
    if window:  # within the window, sliding-window attention is plain causal attention
        context = min(context, window)
    return ModelConfig(
        n_layer=config_key(raw, "num_hidden_layers", file),
        n_head=n_head,
        n_embd=n_embd,
        n_kv_head=raw.get("num_key_value_heads") or n_head,
        block_size=context,
        vocab_size=config_key(raw, "vocab_size", file),
        bias=False,
        qkv_bias=raw.get("model_type") == "qwen2",
        head_dim=0 if head_dim * n_head == n_embd else head_dim,  # 0: n_embd / n_head, as lmforge's own
        qk_norm=qwen3,
        pos="rope",
        **rope,
        mlp="swiglu",
        mlp_hidden=config_key(raw, "intermediate_size", file),
        norm="rmsnorm",
        norm_eps=raw.get("rms_norm_eps", 1e-6),
        tie_embeddings=raw.get("tie_word_embeddings", False),
        dropout=attention_dropout(raw, file, str(raw.get("model_type", "llama"))),
    )


def _smollm3_in(raw: dict[str, Any], file: str) -> ModelConfig:
    filled, interval = smollm3_raw(raw, file)
    return dataclasses.replace(_llama_in(filled, file), nope_interval=interval)


def _rotary_model_type(c: ModelConfig) -> str:
    """The HF model_type of a rotary model: smollm3 (NoPE layers), qwen3 (q/k norms), qwen2 (q/k/v
    biases) or llama."""
    return "smollm3" if c.nope_interval else "qwen3" if c.qk_norm else "qwen2" if c.qkv_bias else "llama"


def _llama_out(c: ModelConfig) -> dict[str, Any]:
    ok = c.pos == "rope" and c.mlp == "swiglu" and c.norm == "rmsnorm" and not c.bias
    if ok and c.qk_norm and c.qkv_bias:
        raise LmforgeError(
            "this model has no Hugging Face equivalent: it has q/k norms (Qwen3's) and q/k/v biases"
            " (Qwen2's), and no transformers family has both"
        )
    if not ok:
        raise LmforgeError(
            "this model has no Hugging Face equivalent: with rope positions it would be Llama/Qwen2/Qwen3"
            f" (needs swiglu, RMSNorm, no bias; it has {c.mlp}, {c.norm}, bias={c.bias}), and GPT-2"
            " needs learned positions, biases, LayerNorm and gelu: train with one of these"
            " recipes to export (docs/huggingface.md)"
        )
    hidden = c.mlp_hidden or 64 * -(-(8 * c.n_embd // 3) // 64)
    smollm3 = smollm3_out(c) if c.nope_interval else {}  # raises for what SmolLM3 lacks
    return {
        "model_type": _rotary_model_type(c),
        "hidden_size": c.n_embd,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_kv_head or c.n_head,
        "head_dim": c.head_size(),
        "intermediate_size": hidden,
        # dynamic NTK's base grows past max_position_embeddings: the original context, not the model's
        "max_position_embeddings": c.rope_original_context if c.rope_type == "dynamic" else c.block_size,
        "vocab_size": c.vocab_size,
        "hidden_act": "silu",
        "rms_norm_eps": c.norm_eps,
        "rope_theta": c.rope_theta,
        "rope_parameters": {"rope_type": c.rope_type, "rope_theta": c.rope_theta, **rope_out(c)},
        # transformers 4 and llama.cpp's converter read the scaling here
        **({"rope_scaling": {"rope_type": c.rope_type, **rope_out(c)}} if c.rope_type != "default" else {}),
        "tie_word_embeddings": c.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": c.dropout,
        **({"use_sliding_window": False, "sliding_window": None} if c.qkv_bias or c.qk_norm else {}),
        **smollm3,
    }


# --- Marian (opus-mt) ---------------------------------------------------------------------------
_MARIAN_ACT = {"swish": "silu", "silu": "silu", "gelu": "gelu"}


def _marian_in(raw: dict[str, Any], file: str) -> ModelConfig:
    for key in ("layers", "attention_heads", "ffn_dim"):  # lmforge's two stacks share one shape
        a, b = raw.get(f"encoder_{key}"), raw.get(f"decoder_{key}")
        require(a == b, file, f"encoder_{key}={a} != decoder_{key}={b}")
    shared = typed_key(raw, "share_encoder_decoder_embeddings", file, bool, True)
    require(shared, file, "share_encoder_decoder_embeddings=false")
    require(typed_key(raw, "tie_word_embeddings", file, bool, True), file, "tie_word_embeddings=false")
    vocab = config_key(raw, "vocab_size", file)
    require(raw.get("decoder_vocab_size") in (None, vocab), file, "decoder_vocab_size != vocab_size")
    act = typed_key(raw, "activation_function", file, str, "gelu")
    require(act in _MARIAN_ACT, file, f"activation_function={act!r}")
    return ModelConfig(
        arch="seq2seq",
        n_layer=config_key(raw, "encoder_layers", file),
        n_head=config_key(raw, "encoder_attention_heads", file),
        n_embd=config_key(raw, "d_model", file),
        block_size=raw.get("max_position_embeddings", 1024),
        vocab_size=vocab,
        mlp=_MARIAN_ACT[act],
        mlp_hidden=config_key(raw, "encoder_ffn_dim", file),
        pos="sinusoidal",
        post_norm=True,
        final_norm=False,
        logits_bias=True,
        scale_embedding=typed_key(raw, "scale_embedding", file, bool, False),
        # MarianConfig's 0.1 where absent; lmforge's one dropout also acts where Marian has its
        # attention_dropout and activation_dropout (0.0 in opus-mt). Not read until 2026-12-07: a
        # fine-tune ran without dropout and an export wrote 0.0.
        dropout=typed_key(raw, "dropout", file, float, 0.1),
    )


def _marian_out(c: ModelConfig) -> dict[str, Any]:
    ok = c.arch == "seq2seq" and c.pos == "sinusoidal" and c.post_norm and not c.final_norm
    ok = ok and c.bias and c.norm == "layernorm" and c.norm_eps == 1e-5 and c.mlp in ("silu", "gelu")
    if not (ok and c.tie_embeddings and not c.n_kv_head):
        raise LmforgeError(
            "this encoder-decoder has no Marian equivalent (needs sinusoidal positions, post-LN blocks"
            " without a final norm, biases, silu or gelu, tied embeddings)"
        )
    shape = {"layers": c.n_layer, "attention_heads": c.n_head, "ffn_dim": c.mlp_hidden or 4 * c.n_embd}
    return {
        "d_model": c.n_embd,
        **{f"{side}_{k}": v for side in ("encoder", "decoder") for k, v in shape.items()},
        "max_position_embeddings": c.block_size,
        "vocab_size": c.vocab_size,
        "decoder_vocab_size": c.vocab_size,
        "activation_function": "swish" if c.mlp == "silu" else "gelu",
        "scale_embedding": c.scale_embedding,
        "share_encoder_decoder_embeddings": True,
        "tie_word_embeddings": True,
        "dropout": c.dropout,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "is_encoder_decoder": True,
    }


LLAMA = Family(
    architecture="LlamaForCausalLM",
    kind="gpt",
    top={"wte": "model.embed_tokens", "ln_f": "model.norm", "lm_head": "lm_head"},
    layer={
        "ln_1": "input_layernorm",
        "attn.qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
        "attn.proj": "self_attn.o_proj",
        "ln_2": "post_attention_layernorm",
        "mlp.gate": "mlp.gate_proj",
        "mlp.up": "mlp.up_proj",
        "mlp.down": "mlp.down_proj",
    },
    layer_prefix="model.layers.{i}.",
    config_in=_llama_in,
    config_out=_llama_out,
    ignored=(".rotary_emb.inv_freq",),
)
QWEN3 = dataclasses.replace(  # Llama's shape with an RMSNorm over each query and key head
    LLAMA,
    architecture="Qwen3ForCausalLM",
    layer={**LLAMA.layer, "attn.q_norm": "self_attn.q_norm", "attn.k_norm": "self_attn.k_norm"},
)
SMOLLM3 = dataclasses.replace(LLAMA, architecture="SmolLM3ForCausalLM", config_in=_smollm3_in)
_ATTN = {
    "attn.qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "attn.proj": "self_attn.out_proj",
    "ln_1": "self_attn_layer_norm",
    "mlp.up": "fc1",
    "mlp.down": "fc2",
}
MARIAN = Family(
    architecture="MarianMTModel",
    kind="seq2seq",
    top={"wte": "model.shared", "lm_head": "lm_head", "": ""},  # "": final_logits_bias
    layer={**_ATTN, "ln_2": "final_layer_norm"},
    layer_prefix="model.encoder.layers.{i}.",
    config_in=_marian_in,
    config_out=_marian_out,
    layer_ours="encoder.blocks.{i}.",
    stacks=(
        (
            "decoder.blocks.{i}.",
            {
                **_ATTN,
                "cross.q": "encoder_attn.q_proj",
                "cross.kv": ("encoder_attn.k_proj", "encoder_attn.v_proj"),
                "cross.proj": "encoder_attn.out_proj",
                "ln_2": "encoder_attn_layer_norm",
                "ln_3": "final_layer_norm",
            },
            "model.decoder.layers.{i}.",
        ),
    ),
    ignored=("embed_positions.weight",),  # the sinusoidal tables, recomputed
    tied={
        "model.shared.weight": (
            "model.encoder.embed_tokens.weight",
            "model.decoder.embed_tokens.weight",
            "lm_head.weight",
        )
    },
)
# HF model_type -> family. Mistral and Qwen2 are Llama shapes (Qwen2: q/k/v biases, from config_in).
FAMILIES: dict[str, Family] = {"gpt2": GPT2, "llama": LLAMA, "mistral": LLAMA, "qwen2": LLAMA, "bert": BERT}
FAMILIES["qwen3"] = QWEN3
FAMILIES["smollm3"] = SMOLLM3  # Llama's with NoPE layers: formats/hf_smollm3.py
FAMILIES["gemma3_text"] = GEMMA3  # formats/hf_gemma.py
FAMILIES["gemma2"] = GEMMA2  # formats/hf_gemma2.py
FAMILIES["phi3"] = PHI3  # formats/hf_phi3.py
FAMILIES.update(marian=MARIAN, distilbert=DISTILBERT, roberta=ROBERTA)  # encoders: formats/hf_encoders.py


def family_for(model_type: Any, file: str) -> Family:
    if isinstance(model_type, str) and model_type.startswith("lmforge-"):  # nothing to convert
        raise LmforgeError(
            f"{file}: already an lmforge model ({model_type}): load, train or serve its folder as it is;"
            " `lmforge export` writes it in transformers' layout"
        )
    if model_type is not None and not isinstance(model_type, str):  # a list is unhashable
        raise LmforgeError(f"{file}: config key 'model_type' must be a string, not {model_type!r}")
    if model_type not in FAMILIES:
        known = ", ".join(sorted(FAMILIES))
        raise LmforgeError(f"{file}: unknown architecture model_type={model_type!r} (supported: {known})")
    return FAMILIES[model_type]


def export_family(config: ModelConfig, kind: str) -> tuple[str, Family]:
    """(HF model_type, family) an lmforge model exports as."""
    if kind == "encoder":  # DistilBERT: no token types, its fixed LayerNorm epsilon
        if not config.type_vocab_size and config.norm_eps == DISTILBERT_EPS:
            return "distilbert", DISTILBERT
        return "bert", BERT
    if kind == "seq2seq":
        return "marian", MARIAN
    if is_phi3_shaped(config):  # partial rotary, longrope, every layer sliding: its config_out names the rest
        return "phi3", PHI3
    if is_gemma_shaped(config):  # q/k norms: Gemma 3; none: Gemma 2 (config_out names what else it needs)
        return ("gemma3_text", GEMMA3) if config.qk_norm else ("gemma2", GEMMA2)
    if config.pos == "learned":
        return "gpt2", GPT2
    model_type = _rotary_model_type(config)
    return model_type, {"smollm3": SMOLLM3, "qwen3": QWEN3}.get(model_type, LLAMA)
