"""Gemma 3's text models (`model_type: gemma3_text`, `Gemma3ForCausalLM`: Gemma 3 270M and 1B) as
lmforge's GPT with Gemma's options (model/gpt.py, config/model_section.py):

- RMSNorms that scale by (1 + weight) in fp32 (`norm_unit_offset`; the weights copied as they are);
- four norms a block: input, post-attention, pre-feedforward, post-feedforward (`sandwich_norm`);
- token embeddings times sqrt(hidden_size) (`scale_embedding`), a GeGLU MLP (`geglu_tanh`),
  RMSNorm over each query and key head (`qk_norm`), `head_dim` apart from hidden / heads;
- attention scores over sqrt(query_pre_attn_scalar) (`attn_scale_dim`);
- `layer_types`: sliding-window layers (`sliding_window`) with their own rotary base, and every
  Nth layer full (`sliding_window_pattern`), whose rotary may be scaled (Gemma 3 4B+: linear 8).

config.json spells the layers and rotary bases two ways: transformers 5's `layer_types` and
`rope_parameters` per layer type, or 4.x's `sliding_window_pattern` (layer i full when (i + 1) %
pattern == 0; 6 where absent), `rope_theta` (1e6), `rope_local_base_freq` (1e4) and a
`rope_scaling` for the full layers. Both are read; export writes both. Logit softcapping (Gemma 2's,
formats/hf_gemma2.py; null in Gemma 3) and bidirectional attention (EmbeddingGemma) are refused,
not ignored.
"""

from __future__ import annotations

from typing import Any

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.formats.hf_family import Family, attention_dropout, config_key, every_nth, require, typed_key
from lmforge.formats.hf_rope import rope_in, rope_out

SLIDING, FULL = "sliding_attention", "full_attention"
GLOBAL_THETA, LOCAL_THETA = 1_000_000.0, 10_000.0  # Gemma3TextConfig's default_theta
DEFAULT_PATTERN = 6


def layer_pattern(raw: dict[str, Any], layers: int, file: str) -> int:
    """sliding_window_pattern from layer_types (or the 4.x key): N where layer i is full exactly
    when (i + 1) % N == 0; 0 when every layer slides, 1 when none does."""
    types = raw.get("layer_types")
    if types is None:
        pattern = typed_key(raw, "sliding_window_pattern", file, int, DEFAULT_PATTERN)
        require(pattern >= 1, file, f"sliding_window_pattern={pattern} (must be >= 1)")
        return pattern
    if not isinstance(types, list) or len(types) != layers or any(t not in (SLIDING, FULL) for t in types):
        raise LmforgeError(
            f"{file}: config key 'layer_types' must list {layers} entries (num_hidden_layers), each"
            f" {SLIDING!r} or {FULL!r}"
        )
    pattern = every_nth([t == FULL for t in types])
    if pattern is None:
        raise LmforgeError(
            f"{file}: unsupported layer_types {types} (lmforge reads every Nth layer full, the others"
            " sliding, as Gemma 3's)"
        )
    return pattern


def _rotary(raw: dict[str, Any], file: str, context: int) -> tuple[dict[str, Any], float]:
    """(ModelConfig's rope keys of the full-attention layers, the sliding layers' base), as
    Gemma3TextConfig.convert_rope_params_to_dict reads them."""
    params = typed_key(raw, "rope_parameters", file, dict, {})
    full = typed_key(params, FULL, file, dict, {}, name=f"rope_parameters.{FULL}")
    local = typed_key(params, SLIDING, file, dict, {}, name=f"rope_parameters.{SLIDING}")
    if params and not (full or local):  # one dict for every layer: not how Gemma 3 writes it
        raise LmforgeError(f"{file}: config key 'rope_parameters' must hold {FULL!r} and {SLIDING!r} entries")
    full = dict(full) | typed_key(raw, "rope_scaling", file, dict, {})  # 4.x: the full layers' scaling
    theta = typed_key(raw, "rope_theta", file, float, GLOBAL_THETA)
    full.setdefault("rope_theta", theta)
    kind = local.get("rope_type", local.get("type", "default"))
    require(kind == "default", file, f"rope type {kind!r} for the sliding-window layers")
    local_theta = typed_key(local, "rope_theta", file, float, name=f"rope_parameters.{SLIDING}.rope_theta")
    if local_theta is None:
        local_theta = typed_key(raw, "rope_local_base_freq", file, float, LOCAL_THETA)
    return rope_in({"rope_parameters": full}, file, context), local_theta


def gemma_keys(
    raw: dict[str, Any], file: str, family: str, context: int, vocab: int, window: int | None, pattern: int
) -> tuple[dict[str, Any], bool]:
    """The ModelConfig keys Gemma 2 and 3 read alike (the block's shape, its norms, MLP, scaled
    embedding and attention, the sliding windows), and whether some layer slides. context, vocab,
    window: the config class's defaults where config.json names none; pattern: the layer pattern."""
    require(not typed_key(raw, "use_bidirectional_attention", file, bool, False), file,
            "use_bidirectional_attention=true (an embedding model's, as EmbeddingGemma)")  # fmt: skip
    require(not typed_key(raw, "attention_bias", file, bool, False), file, "attention_bias=true")
    act = typed_key(raw, "hidden_activation", file, str, "gelu_pytorch_tanh")
    require(act == "gelu_pytorch_tanh", file, f"hidden_activation={act!r} ({family}'s is gelu_pytorch_tanh)")
    n_embd = config_key(raw, "hidden_size", file, kind=int)
    n_head = config_key(raw, "num_attention_heads", file, kind=int)
    layers = config_key(raw, "num_hidden_layers", file, kind=int)
    require(n_head >= 1 and layers >= 1, file, f"num_attention_heads={n_head}, num_hidden_layers={layers}")
    head_dim = typed_key(raw, "head_dim", file, int, 256)  # both config classes' default
    scalar = typed_key(raw, "query_pre_attn_scalar", file, int, 256)
    require(head_dim >= 1 and scalar >= 1, file, f"head_dim={head_dim}, query_pre_attn_scalar={scalar}")
    window = typed_key(raw, "sliding_window", file, int, window)
    slides = any(pattern == 0 or (i + 1) % pattern for i in range(layers))
    require(not slides or (window is not None and window >= 1), file,
            f"sliding_window={window} with sliding-window layers")  # fmt: skip
    keys = dict(
        n_layer=layers,
        n_head=n_head,
        n_embd=n_embd,
        n_kv_head=typed_key(raw, "num_key_value_heads", file, int, n_head),
        block_size=config_key(raw, "max_position_embeddings", file, context, kind=int),
        vocab_size=config_key(raw, "vocab_size", file, vocab, kind=int),
        bias=False,
        head_dim=0 if head_dim * n_head == n_embd else head_dim,
        pos="rope",
        sliding_window=window if slides else 0,
        sliding_window_pattern=pattern if slides else 0,
        attn_scale_dim=0 if scalar == head_dim else scalar,
        mlp="geglu_tanh",
        mlp_hidden=config_key(raw, "intermediate_size", file, kind=int),
        norm="rmsnorm",
        norm_eps=typed_key(raw, "rms_norm_eps", file, float, 1e-6),
        norm_unit_offset=True,
        sandwich_norm=True,
        scale_embedding=True,
        tie_embeddings=typed_key(raw, "tie_word_embeddings", file, bool, True),
        dropout=attention_dropout(raw, file, family),
    )
    return keys, slides


def _gemma3_in(raw: dict[str, Any], file: str) -> ModelConfig:
    for key in ("final_logit_softcapping", "attn_logit_softcapping"):
        value = raw.get(key)
        require(value is None, file, f"{key}={value!r} (Gemma 3 has none; Gemma 2's is model_type gemma2)")
    layers = config_key(raw, "num_hidden_layers", file, kind=int)
    keys, slides = gemma_keys(raw, file, "Gemma 3", 131_072, 262_208, None, layer_pattern(raw, layers, file))
    rope, local_theta = _rotary(raw, file, keys["block_size"])
    return ModelConfig(**keys, qk_norm=True, **rope, rope_local_theta=local_theta if slides else 0.0)


def is_gemma_shaped(c: ModelConfig) -> bool:
    """Whether a decoder has an option of Gemma's, so exports as gemma3_text (with q/k norms) or
    gemma2 (without; formats/hf_gemma2.py) or nowhere."""
    keys = ("norm_unit_offset", "sandwich_norm", "attn_scale_dim", "sliding_window", "rope_local_theta",
            "attn_softcap", "logit_softcap")  # fmt: skip
    default = ModelConfig()
    gemma = c.mlp == "geglu_tanh" or c.scale_embedding
    return gemma or any(getattr(c, k) != getattr(default, k) for k in keys)


def gemma_out_keys(c: ModelConfig) -> dict[str, Any]:
    """The config.json keys Gemma 2 and 3 write alike."""
    return {
        "hidden_size": c.n_embd,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_kv_head or c.n_head,
        "head_dim": c.head_size(),
        "intermediate_size": c.mlp_hidden or 64 * -(-(8 * c.n_embd // 3) // 64),
        "max_position_embeddings": c.block_size,
        "vocab_size": c.vocab_size,
        "hidden_activation": "gelu_pytorch_tanh",
        "rms_norm_eps": c.norm_eps,
        "query_pre_attn_scalar": c.attn_scale_dim or c.head_size(),
        # no sliding layer: any window serves (transformers builds the mask regardless)
        "sliding_window": c.sliding_window or c.block_size,
        "layer_types": [SLIDING if c.layer_window(i) else FULL for i in range(c.n_layer)],
        "tie_word_embeddings": c.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": c.dropout,
    }


GEMMA_ROPE = ("default", "linear", "llama3", "yarn")  # not dynamic, longrope


def gemma_needs(c: ModelConfig) -> dict[str, bool]:
    """What Gemma 2 and Gemma 3 both ask of a model's options, each named as its key: ok."""
    return {
        "model.pos='rope'": c.pos == "rope",
        "model.mlp='geglu_tanh'": c.mlp == "geglu_tanh",
        "model.norm='rmsnorm'": c.norm == "rmsnorm",
        "model.norm_unit_offset": c.norm_unit_offset,
        "model.sandwich_norm": c.sandwich_norm,
        "model.scale_embedding": c.scale_embedding,
        "model.bias=false": not c.bias and not c.qkv_bias,
        "model.nope_interval=0": not c.nope_interval,  # both rotate in every layer
        # what lmforge's Gemma import reads back: a dynamic model's max_position_embeddings would
        # be its grown context, not the one its base grows past
        f"model.rope_type in {', '.join(GEMMA_ROPE)}": c.rope_type in GEMMA_ROPE,
    }


def _gemma3_out(c: ModelConfig) -> dict[str, Any]:
    needs = {
        **gemma_needs(c),
        "model.qk_norm": c.qk_norm,
        "model.attn_softcap=0": not c.attn_softcap,  # Gemma 2's caps (no q/k norms there)
        "model.logit_softcap=0": not c.logit_softcap,
    }
    lacks = [key for key, ok in needs.items() if not ok]
    if lacks:
        raise LmforgeError(
            "this model has no Hugging Face equivalent: its Gemma options would make it Gemma 3"
            f" (gemma3_text), which also needs {', '.join(lacks)}"
        )
    local = c.rope_local_theta or c.rope_theta
    if c.sliding_window and not c.rope_local_theta and c.rope_type != "default":
        raise LmforgeError(
            f"this model has no Gemma 3 equivalent: its sliding-window layers rotate with rope_type"
            f" {c.rope_type!r} (Gemma 3 scales the full-attention layers only; set model.rope_local_theta)"
        )
    full = {"rope_type": c.rope_type, "rope_theta": c.rope_theta, **rope_out(c)}
    return {
        **gemma_out_keys(c),
        "rope_parameters": {FULL: full, SLIDING: {"rope_type": "default", "rope_theta": local}},
        # transformers 4.5x reads these instead (every layer sliding: a pattern no layer reaches)
        "sliding_window_pattern": (c.sliding_window_pattern or c.n_layer + 1) if c.sliding_window else 1,
        "rope_theta": c.rope_theta,
        "rope_local_base_freq": local,
        **({"rope_scaling": {"rope_type": c.rope_type, **rope_out(c)}} if c.rope_type != "default" else {}),
        "final_logit_softcapping": None,
        "attn_logit_softcapping": None,
        "use_bidirectional_attention": False,
    }


GEMMA3 = Family(
    architecture="Gemma3ForCausalLM",
    kind="gpt",
    top={"wte": "model.embed_tokens", "ln_f": "model.norm", "lm_head": "lm_head"},
    layer={
        "ln_1": "input_layernorm",
        "attn.qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
        "attn.q_norm": "self_attn.q_norm",
        "attn.k_norm": "self_attn.k_norm",
        "attn.proj": "self_attn.o_proj",
        "ln_attn_out": "post_attention_layernorm",
        "ln_2": "pre_feedforward_layernorm",
        "ln_mlp_out": "post_feedforward_layernorm",
        "mlp.gate": "mlp.gate_proj",
        "mlp.up": "mlp.up_proj",
        "mlp.down": "mlp.down_proj",
    },
    layer_prefix="model.layers.{i}.",
    config_in=_gemma3_in,
    config_out=_gemma3_out,
    ignored=(".rotary_emb.inv_freq", "embed_scale"),
)
