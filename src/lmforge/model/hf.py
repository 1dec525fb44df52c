"""Hugging Face state-dict adapters: one small `Family` mapping per architecture.

A family says how an HF config.json becomes a ModelConfig (and back) and which HF module holds each
lmforge module. The mapping is by module, so `.weight` and `.bias` follow together; a tuple of HF
modules is fused along the output rows (HF's separate q, k, v projections -> lmforge's one `qkv`);
`transposed` names GPT-2's Conv1D modules, which store weights as (in, out). Adding a family
(Marian, say, once the encoder-decoder exists) is one more `Family` entry in FAMILIES.

`hf_to_lmforge` / `lmforge_to_hf` convert state dicts; model/hf_files.py reads and writes the
directories.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError

Modules = dict[str, str | tuple[str, ...]]


@dataclass(frozen=True)
class Family:
    architecture: str
    """HF class written to config.json `architectures` on export."""
    kind: str
    """lmforge model class: `gpt` (decoder) or `encoder`."""
    top: Modules
    """lmforge module -> HF module, outside the layers."""
    layer: Modules
    """lmforge module inside `blocks.{i}.` -> HF module inside `layer_prefix`."""
    layer_prefix: str
    config_in: Callable[[dict[str, Any], str], ModelConfig]
    config_out: Callable[[ModelConfig], dict[str, Any]]
    transposed: frozenset[str] = frozenset()
    alt_prefix: tuple[str, str] = ("", "")
    """(prefix of our exported names, what other checkpoints put there instead): GPT-2's original
    files lack `transformer.`, BertFor* models add `bert.`."""
    ignored: tuple[str, ...] = ()
    """Suffixes of HF tensors that are buffers, not weights (safe to skip on import)."""
    optional: frozenset[str] = field(default_factory=frozenset)
    """lmforge modules an HF checkpoint may lack (left at their initialisation)."""


def _get(raw: dict[str, Any], key: str, file: str, default: Any = None) -> Any:
    value = raw.get(key, default)
    if value is None:
        raise LmforgeError(f"{file}: missing config key {key!r}")
    return value


def _require(ok: bool, file: str, what: str) -> None:
    if not ok:
        raise LmforgeError(f"{file}: unsupported {what}")


_ACT_IN = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
_ACT_OUT = {"gelu": "gelu", "gelu_tanh": "gelu_new"}


# --- GPT-2 ------------------------------------------------------------------------------------
def _gpt2_in(raw: dict[str, Any], file: str) -> ModelConfig:
    act = raw.get("activation_function", "gelu_new")
    _require(act in _ACT_IN, file, f"activation_function={act!r}")
    _require(not raw.get("scale_attn_by_inverse_layer_idx"), file, "scale_attn_by_inverse_layer_idx=true")
    _require(raw.get("scale_attn_weights", True), file, "scale_attn_weights=false")
    return ModelConfig(
        n_layer=_get(raw, "n_layer", file),
        n_head=_get(raw, "n_head", file),
        n_embd=_get(raw, "n_embd", file),
        block_size=_get(raw, "n_positions", file),
        vocab_size=_get(raw, "vocab_size", file),
        mlp=_ACT_IN[act],
        mlp_hidden=raw.get("n_inner") or 0,
        norm_eps=raw.get("layer_norm_epsilon", 1e-5),
        tie_embeddings=raw.get("tie_word_embeddings", True),
    )


def _gpt2_out(c: ModelConfig) -> dict[str, Any]:
    ok = c.pos == "learned" and c.bias and c.norm == "layernorm" and c.mlp in _ACT_OUT and not c.n_kv_head
    if not ok:
        raise LmforgeError(
            "this model has no GPT-2 equivalent (needs learned positions, biases, LayerNorm, gelu)"
        )
    return {
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_embd": c.n_embd,
        "n_positions": c.block_size,
        "vocab_size": c.vocab_size,
        "n_inner": c.mlp_hidden or None,
        "activation_function": _ACT_OUT[c.mlp],
        "layer_norm_epsilon": c.norm_eps,
        "tie_word_embeddings": c.tie_embeddings,
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": c.dropout,
    }


# --- Llama, Mistral, Qwen2 --------------------------------------------------------------------
def _rope_theta(raw: dict[str, Any], file: str) -> float:
    params = raw.get("rope_parameters") or {}
    scaling = raw.get("rope_scaling") or {}
    kind = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    _require(kind == "default", file, f"rope type {kind!r} (only plain rotary positions)")
    return float(params.get("rope_theta") or raw.get("rope_theta") or 10000.0)


def _llama_in(raw: dict[str, Any], file: str) -> ModelConfig:
    n_embd, n_head = _get(raw, "hidden_size", file), _get(raw, "num_attention_heads", file)
    _require(raw.get("hidden_act", "silu") == "silu", file, f"hidden_act={raw.get('hidden_act')!r}")
    _require(not raw.get("attention_bias") and not raw.get("mlp_bias"), file, "attention_bias/mlp_bias")
    head_dim = raw.get("head_dim") or n_embd // n_head
    _require(head_dim * n_head == n_embd, file, f"head_dim={head_dim} != hidden_size / heads")
    context = _get(raw, "max_position_embeddings", file)
    window = raw.get("sliding_window") if raw.get("use_sliding_window", True) else None
    if window:  # within the window, sliding-window attention is plain causal attention
        context = min(context, window)
    return ModelConfig(
        n_layer=_get(raw, "num_hidden_layers", file),
        n_head=n_head,
        n_embd=n_embd,
        n_kv_head=raw.get("num_key_value_heads") or n_head,
        block_size=context,
        vocab_size=_get(raw, "vocab_size", file),
        bias=False,
        qkv_bias=raw.get("model_type") == "qwen2",
        pos="rope",
        rope_theta=_rope_theta(raw, file),
        mlp="swiglu",
        mlp_hidden=_get(raw, "intermediate_size", file),
        norm="rmsnorm",
        norm_eps=raw.get("rms_norm_eps", 1e-6),
        tie_embeddings=raw.get("tie_word_embeddings", False),
    )


def _llama_out(c: ModelConfig) -> dict[str, Any]:
    ok = c.pos == "rope" and c.mlp == "swiglu" and c.norm == "rmsnorm" and not c.bias
    if not ok:
        raise LmforgeError("this model has no Llama/Qwen2 equivalent (needs rope, swiglu, RMSNorm, no bias)")
    hidden = c.mlp_hidden or 64 * -(-(8 * c.n_embd // 3) // 64)
    return {
        "model_type": "qwen2" if c.qkv_bias else "llama",
        "hidden_size": c.n_embd,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_kv_head or c.n_head,
        "head_dim": c.n_embd // c.n_head,
        "intermediate_size": hidden,
        "max_position_embeddings": c.block_size,
        "vocab_size": c.vocab_size,
        "hidden_act": "silu",
        "rms_norm_eps": c.norm_eps,
        "rope_theta": c.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
        "tie_word_embeddings": c.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": c.dropout,
        **({"use_sliding_window": False, "sliding_window": None} if c.qkv_bias else {}),
    }


# --- BERT -------------------------------------------------------------------------------------
def _bert_in(raw: dict[str, Any], file: str) -> ModelConfig:
    act = raw.get("hidden_act", "gelu")
    _require(act in _ACT_IN, file, f"hidden_act={act!r}")
    kind = raw.get("position_embedding_type", "absolute")
    _require(kind == "absolute", file, f"position_embedding_type={kind!r}")
    return ModelConfig(
        n_layer=_get(raw, "num_hidden_layers", file),
        n_head=_get(raw, "num_attention_heads", file),
        n_embd=_get(raw, "hidden_size", file),
        block_size=_get(raw, "max_position_embeddings", file),
        vocab_size=_get(raw, "vocab_size", file),
        type_vocab_size=raw.get("type_vocab_size", 2),
        mlp=_ACT_IN[act],
        mlp_hidden=_get(raw, "intermediate_size", file),
        norm_eps=raw.get("layer_norm_eps", 1e-12),
        tie_embeddings=False,
    )


def _bert_out(c: ModelConfig) -> dict[str, Any]:
    if not (c.bias and c.norm == "layernorm" and c.mlp in _ACT_OUT and c.type_vocab_size):
        raise LmforgeError("this encoder has no BERT equivalent (needs biases, LayerNorm, gelu, token types)")
    return {
        "hidden_size": c.n_embd,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "intermediate_size": c.mlp_hidden or 4 * c.n_embd,
        "max_position_embeddings": c.block_size,
        "vocab_size": c.vocab_size,
        "type_vocab_size": c.type_vocab_size,
        "hidden_act": _ACT_OUT[c.mlp],
        "layer_norm_eps": c.norm_eps,
        "hidden_dropout_prob": c.dropout,
        "attention_probs_dropout_prob": c.dropout,
        "position_embedding_type": "absolute",
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
# HF model_type -> family. Mistral and Qwen2 are Llama shapes (Qwen2: q/k/v biases, from config_in).
FAMILIES: dict[str, Family] = {"gpt2": GPT2, "llama": LLAMA, "mistral": LLAMA, "qwen2": LLAMA, "bert": BERT}


def family_for(model_type: Any, file: str) -> Family:
    if model_type not in FAMILIES:
        known = ", ".join(sorted(FAMILIES))
        raise LmforgeError(f"{file}: unknown architecture model_type={model_type!r} (supported: {known})")
    return FAMILIES[model_type]


def export_family(config: ModelConfig, kind: str) -> tuple[str, Family]:
    """(HF model_type, family) an lmforge model exports as."""
    if kind == "encoder":
        return "bert", BERT
    if config.pos == "learned":
        return "gpt2", GPT2
    return ("qwen2" if config.qkv_bias else "llama"), LLAMA


def _plan(family: Family, config: ModelConfig) -> dict[str, str | tuple[str, ...]]:
    """lmforge module path -> HF module path(s), for every layer."""
    plan = dict(family.top)
    for i in range(config.n_layer):
        prefix = family.layer_prefix.format(i=i)
        for ours, theirs in family.layer.items():
            full = tuple(prefix + t for t in theirs) if isinstance(theirs, tuple) else prefix + theirs
            plan[f"blocks.{i}.{ours}"] = full
    return plan


def _local(module: str) -> str:
    """`blocks.3.attn.qkv` -> `attn.qkv` (the module's path inside its layer)."""
    return module.split(".", 2)[2] if module.startswith("blocks.") else module


def _split_sizes(config: ModelConfig) -> list[int]:
    hs = config.n_embd // config.n_head
    kv = (config.n_kv_head or config.n_head) * hs
    return [config.n_embd, kv, kv]


def hf_to_lmforge(
    family: Family,
    config: ModelConfig,
    hf: dict[str, torch.Tensor],
    wanted: dict[str, torch.Tensor],
    file: str,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Build the lmforge state dict `wanted` (name -> tensor of the right shape) from HF tensors.
    Returns (state, HF names left unused). A missing tensor raises, naming it."""
    ours_prefix, alt = family.alt_prefix

    def fetch(name: str) -> torch.Tensor | None:
        if name in hf:
            return hf[name]
        if name.startswith(ours_prefix):  # the same tensor under the other prefix convention
            return hf.get(alt + name[len(ours_prefix) :])
        return None

    used: set[int] = set()
    state: dict[str, torch.Tensor] = {}
    plan = _plan(family, config)
    for name, target in wanted.items():
        module, _, param = name.rpartition(".")
        if module == "lm_head" and config.tie_embeddings:
            continue  # tied to wte; HF checkpoints store it once
        if module not in plan:
            raise LmforgeError(f"{file}: no HF tensor maps to lmforge's {name!r}")
        theirs = plan[module]
        names = [f"{t}.{param}" for t in (theirs if isinstance(theirs, tuple) else (theirs,))]
        parts = [fetch(n) for n in names]
        gone = [n for n, p in zip(names, parts, strict=True) if p is None]
        if gone:
            if module.split(".")[0] in family.optional:
                continue
            raise LmforgeError(f"{file}: missing tensor {gone[0]!r}")
        used.update(id(p) for p in parts)
        tensor = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
        if _local(module) in family.transposed and param == "weight":
            tensor = tensor.t()
        if tensor.shape != target.shape:
            raise LmforgeError(
                f"{file}: tensor {names[0]!r} has shape {tuple(tensor.shape)}, expected {tuple(target.shape)}"
            )
        state[name] = tensor.contiguous()
    unused = [n for n, t in hf.items() if id(t) not in used and not n.endswith(family.ignored)]
    return state, unused


def lmforge_to_hf(
    family: Family, config: ModelConfig, state: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """HF names and layouts for an lmforge state dict (a tied lm_head is left out, as HF saves it)."""
    plan = _plan(family, config)
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        module, _, param = name.rpartition(".")
        if module == "lm_head" and config.tie_embeddings:
            continue
        if module not in plan:
            raise LmforgeError(f"lmforge tensor {name!r} has no place in the HF {family.architecture} layout")
        if _local(module) in family.transposed and param == "weight":
            tensor = tensor.t()
        theirs = plan[module]
        if isinstance(theirs, tuple):
            for t, part in zip(theirs, tensor.split(_split_sizes(config), dim=0), strict=True):
                out[f"{t}.{param}"] = part.contiguous()
        else:
            out[f"{theirs}.{param}"] = tensor.contiguous()
    return out
