"""Phi-3 (`model_type: phi3`, `Phi3ForCausalLM`: Phi-3-mini-4k/128k, Phi-3.5-mini, Phi-4-mini) as
lmforge's GPT: Llama's shape (grouped-query attention, SwiGLU, RMSNorm, no biases) with

- one fused `qkv_proj` (query rows, then key, then value: lmforge's own `attn.qkv` layout, copied
  as it is) and one fused `gate_up_proj` (gate rows, then up: split into `mlp.gate` and `mlp.up`
  on import, fused again on export; the family's `row_parts`);
- `partial_rotary_factor` (Phi-4-mini: 0.75): the first int(head_dim x factor) dimensions of each
  head rotate (`rope_partial_factor`);
- LongRoPE (`rope_type: longrope`, or Phi3Config's older "su" / "yarn" names for it): per-frequency
  short and long factors and the attention factor (model/rope_scaling.py); the original context
  is config.json's top-level `original_max_position_embeddings` (4096 where absent), which
  Phi3Config puts over the scaling's own;
- `sliding_window` on every layer (Phi-3-mini-4k: 2047), where it is shorter than the context;
- one dropout: `resid_pdrop` and `attention_dropout` must agree (`embd_pdrop`, which transformers 5
  reads nowhere, is checked for its type only).

Phi3Config's defaults apply to keys config.json leaves out.
"""

from __future__ import annotations

from typing import Any

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.formats.hf_family import Family, config_key, require, typed_key
from lmforge.model.rope_scaling import RopeScaling

ORIGINAL_CONTEXT = 4096  # Phi3Config.original_max_position_embeddings


def _factors(scaling: dict[str, Any], key: str, where: str, count: int, file: str) -> list[float]:
    values = scaling.get(key)
    ok = isinstance(values, list) and len(values) == count
    if not ok or any(isinstance(v, bool) or not isinstance(v, int | float) or v <= 0 for v in values):
        raise LmforgeError(
            f"{file}: config key '{where}.{key}' must list {count} numbers > 0 (half the rotary"
            " dimensions: head_dim x partial_rotary_factor / 2)"
        )
    return [float(v) for v in values]


def _rope(raw: dict[str, Any], file: str, context: int, head_dim: int) -> dict[str, Any]:
    """ModelConfig's rope keys as Phi3Config.convert_rope_params_to_dict reads them."""
    scaling = typed_key(raw, "rope_scaling", file, dict, {})
    where = "rope_scaling" if scaling else "rope_parameters"
    scaling = scaling or typed_key(raw, "rope_parameters", file, dict, {})
    kind = typed_key(scaling, "rope_type", file, str, name=f"{where}.rope_type") or typed_key(
        scaling, "type", file, str, "default", name=f"{where}.type"
    )
    kind = "longrope" if kind in ("su", "yarn") else kind  # Phi3Config's older names for it
    require(kind in ("default", "longrope"), file, f"rope type {kind!r} (Phi-3 has default and longrope)")
    theta = typed_key(scaling, "rope_theta", file, float, name=f"{where}.rope_theta")
    share = typed_key(scaling, "partial_rotary_factor", file, float, name=f"{where}.partial_rotary_factor")
    share = share if share is not None else typed_key(raw, "partial_rotary_factor", file, float, 1.0)
    dims = int(head_dim * share)
    what = f"partial_rotary_factor={share} (head_dim {head_dim} x it must be an even count >= 2)"
    require(0 < share <= 1 and dims >= 2 and dims % 2 == 0, file, what)
    if theta is None:  # a 0 is the file's, refused as such (it read as 10000 until 2026-12-07)
        theta = typed_key(raw, "rope_theta", file, float)
    out: dict[str, Any] = {"rope_theta": 10000.0 if theta is None else theta, "rope_partial_factor": share}
    if kind == "default":
        return out
    original = typed_key(raw, "original_max_position_embeddings", file, int, ORIGINAL_CONTEXT)
    require(original >= 1, file, f"original_max_position_embeddings={original}")
    factor = typed_key(scaling, "factor", file, float, name=f"{where}.factor")
    attention = typed_key(scaling, "attention_factor", file, float, name=f"{where}.attention_factor")
    require(attention is None or attention > 0, file, f"{where}.attention_factor={attention} (must be > 0)")
    return out | {
        "rope_type": "longrope",
        "rope_factor": factor if factor is not None else context / original,  # transformers' ratio
        "rope_original_context": original,
        "rope_attention_factor": attention or 0.0,
        "rope_short_factor": _factors(scaling, "short_factor", where, dims // 2, file),
        "rope_long_factor": _factors(scaling, "long_factor", where, dims // 2, file),
    }


def _phi3_in(raw: dict[str, Any], file: str) -> ModelConfig:
    act = typed_key(raw, "hidden_act", file, str, "silu")
    require(act == "silu", file, f"hidden_act={act!r} (Phi-3's is silu)")
    n_embd = config_key(raw, "hidden_size", file, 3072, kind=int)
    n_head = config_key(raw, "num_attention_heads", file, 32, kind=int)
    layers = config_key(raw, "num_hidden_layers", file, 32, kind=int)
    require(n_head >= 1 and layers >= 1, file, f"num_attention_heads={n_head}, num_hidden_layers={layers}")
    head_dim = typed_key(raw, "head_dim", file, int)  # Phi3Attention reads one where config.json has it
    require(head_dim is None or head_dim >= 1, file, f"head_dim={head_dim}")
    require(head_dim is not None or n_embd % n_head == 0, file,
            f"hidden_size / num_attention_heads = {n_embd} / {n_head} without a head_dim")  # fmt: skip
    head_dim = head_dim or n_embd // n_head
    context = config_key(raw, "max_position_embeddings", file, 4096, kind=int)
    window = typed_key(raw, "sliding_window", file, int)
    require(window is None or window >= 1, file, f"sliding_window={window}")
    resid = typed_key(raw, "resid_pdrop", file, float, 0.0)
    attn = typed_key(raw, "attention_dropout", file, float, 0.0)
    typed_key(raw, "embd_pdrop", file, float)  # transformers 5 applies it nowhere
    require(resid == attn, file, f"resid_pdrop={resid} != attention_dropout={attn} (lmforge has one dropout)")
    return ModelConfig(
        n_layer=layers,
        n_head=n_head,
        n_embd=n_embd,
        n_kv_head=typed_key(raw, "num_key_value_heads", file, int, n_head),
        block_size=context,
        vocab_size=config_key(raw, "vocab_size", file, 32064, kind=int),
        dropout=resid,
        bias=False,
        head_dim=0 if head_dim * n_head == n_embd else head_dim,
        pos="rope",
        **_rope(raw, file, context, head_dim),
        # a window as long as the context slides nothing (Phi-3.5's 262144 over 131072 positions)
        sliding_window=window if window is not None and window < context else 0,
        mlp="swiglu",
        mlp_hidden=config_key(raw, "intermediate_size", file, 8192, kind=int),
        norm="rmsnorm",
        norm_eps=typed_key(raw, "rms_norm_eps", file, float, 1e-5),
        tie_embeddings=typed_key(raw, "tie_word_embeddings", file, bool, False),
    )


def is_phi3_shaped(c: ModelConfig) -> bool:
    """Whether a decoder has an option only Phi-3 has among the families lmforge exports: partial
    rotary, LongRoPE, or a sliding window on every layer with a SwiGLU MLP (and no NoPE layers,
    SmolLM3's, whose export names what it lacks)."""
    every_layer = (
        c.sliding_window and not c.sliding_window_pattern and c.mlp == "swiglu" and not c.nope_interval
    )
    return c.rope_partial_factor != 1.0 or c.rope_type == "longrope" or bool(every_layer)


def _phi3_out(c: ModelConfig) -> dict[str, Any]:
    needs = {
        "model.pos='rope'": c.pos == "rope",
        "model.mlp='swiglu'": c.mlp == "swiglu",
        "model.norm='rmsnorm'": c.norm == "rmsnorm",
        "model.bias=false": not c.bias and not c.qkv_bias,
        "model.rope_type 'default' or 'longrope'": c.rope_type in ("default", "longrope"),
        "every layer sliding or none (model.sliding_window_pattern=0)": not c.sliding_window_pattern,
    }
    gemma = ("qk_norm", "norm_unit_offset", "sandwich_norm", "attn_scale_dim", "rope_local_theta",
             "scale_embedding", "nope_interval")  # fmt: skip
    needs |= {f"model.{k} off": not getattr(c, k) for k in gemma}
    lacks = [key for key, ok in needs.items() if not ok]
    if lacks:
        raise LmforgeError(
            "this model has no Hugging Face equivalent: its partial rotary, longrope or sliding window"
            f" would make it Phi-3 (phi3), which also needs {', '.join(lacks)}"
        )
    rope: dict[str, Any] = {
        "rope_type": c.rope_type,
        "rope_theta": c.rope_theta,
        "partial_rotary_factor": c.rope_partial_factor,
    }
    if c.rope_type == "longrope":
        scaling = RopeScaling.of(c)
        assert scaling is not None
        rope |= {
            "short_factor": list(c.rope_short_factor),
            "long_factor": list(c.rope_long_factor),
            "factor": c.rope_factor,
            "attention_factor": scaling.attention(),
            "original_max_position_embeddings": c.rope_original_context,
        }
    head = {"head_dim": c.head_size()} if c.head_dim else {}  # Phi3Config has none of its own
    return {
        "hidden_size": c.n_embd,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_kv_head or c.n_head,
        **head,
        "intermediate_size": c.mlp_hidden or 64 * -(-(8 * c.n_embd // 3) // 64),
        "max_position_embeddings": c.block_size,
        "original_max_position_embeddings": (
            c.rope_original_context if c.rope_type == "longrope" else c.block_size
        ),
        "vocab_size": c.vocab_size,
        "hidden_act": "silu",
        "rms_norm_eps": c.norm_eps,
        "rope_theta": c.rope_theta,
        "partial_rotary_factor": c.rope_partial_factor,
        "rope_parameters": rope,
        # transformers 4 and llama.cpp's converter read the scaling here
        **({"rope_scaling": {"type": "longrope", **rope}} if c.rope_type == "longrope" else {}),
        "sliding_window": c.sliding_window or None,
        "tie_word_embeddings": c.tie_embeddings,
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attention_dropout": c.dropout,
    }


PHI3 = Family(
    architecture="Phi3ForCausalLM",
    kind="gpt",
    top={"wte": "model.embed_tokens", "ln_f": "model.norm", "lm_head": "lm_head"},
    layer={
        "ln_1": "input_layernorm",
        "attn.qkv": "self_attn.qkv_proj",  # q, k, v rows: lmforge's order already
        "attn.proj": "self_attn.o_proj",
        "ln_2": "post_attention_layernorm",
        "mlp.gate": "mlp.gate_up_proj",
        "mlp.up": "mlp.gate_up_proj",
        "mlp.down": "mlp.down_proj",
    },
    layer_prefix="model.layers.{i}.",
    config_in=_phi3_in,
    config_out=_phi3_out,
    ignored=(".rotary_emb.inv_freq",),
    row_parts={"mlp.gate": (0, 2), "mlp.up": (1, 2)},
)
