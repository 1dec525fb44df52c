"""What llama.cpp's `gemma2`, `gemma3`, `smollm3` and `phi3` GGUF files hold beside a Llama file's
metadata, as the config.json keys of lmforge's Gemma 2, Gemma 3, SmolLM3 and Phi-3 families
(formats/hf_gemma2.py, hf_gemma.py, hf_smollm3.py, hf_phi3.py).

The first three leave part of the model to llama.cpp's loader (src/llama-model.cpp) rather than
to metadata, so it is read here as llama.cpp reads it:

- gemma3 (convert_hf_to_gguf.py's Gemma3Model): every `*norm.weight` is stored as 1 + weight; it
  is read back minus 1 onto `norm_unit_offset`, as transformers' GGUF loader does, so the model is
  the one a Hugging Face folder imports and exports back to gemma3_text; the scale is llama.cpp's
  stored w' either way (w' - 1 is exact for 0.5 <= w' <= 2, and 1 + that gives w' back).
  Sliding-window layers exist only where
  `attention.sliding_window` is > 0, then every 6th layer is full and the sliding layers rotate
  with base 1e4 (`rope.freq_base_swa` where a file writes one); `rope.freq_base` and a linear
  `rope.scaling` are the full layers'. The attention scale is 1/sqrt(key_length), except for the
  62-layer 27B: 1/sqrt(embedding_length / head_count) (its query_pre_attn_scalar). The embedding
  scale sqrt(embedding_length) is the family's own; q and k are not permuted.
- gemma2 (Gemma2Model): the norms stored as 1 + weight, read back as gemma3's. Every 2nd layer is
  full, the others slide over `attention.sliding_window` keys (4096 where a file has none); the
  soft caps are `attn_logit_softcapping` and `final_logit_softcapping` (50 and 30 where absent:
  llama.cpp applies both always); one rotary base, `rope.freq_base` (1e4 where absent). The
  attention scale is 1/sqrt(key_length), except for the 46-layer 27B: embedding_length /
  head_count, as for gemma3's 27B.
- smollm3 (SmolLM3Model, a LlamaModel: q/k permuted as Llama's): every 4th layer has no rotary
  positions (`n_no_rope_layer_step = 4`, a literal: no GGUF key says so).

phi3 (convert_hf_to_gguf.py's Phi3MiniModel) keeps Hugging Face's fused tensors as they are:
`attn_qkv` (query, key, value rows) and `ffn_up` (gate rows, then up: llama.cpp's swiglu takes silu
of the first half), read back as `qkv_proj` and `gate_up_proj`. The rotated share of each head is
`rope.dimension_count` (int(partial_rotary_factor x n_embd) // n_head); LongRoPE is two F32 tensors,
`rope_factors_long` and `rope_factors_short`, with `rope.scaling.original_context_length` and
`rope.scaling.attn_factor` (cos and sin times it, as llama.cpp's rope and transformers' do; 1 where
absent, llama.cpp's default). `attention.sliding_window` is the Hugging Face window (0: none, Phi-4's);
a file older than that key gets llama.cpp's old default, 2047 for the 32- and 40-layer 4k models.
Unlike llama.cpp (which has run Phi-3 without its window since its PR 13676) and transformers' GGUF
loader (which reads neither window, partial rotary nor LongRoPE), the window and the choice of short
or long factors are the Hugging Face model's (formats/hf_phi3.py), the model the file was written from.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.errors import LmforgeError

MODEL_TYPES = {"gemma3": "gemma3_text"}  # GGUF architecture -> config.json model_type, where not the same
GEMMA_PATTERN, GEMMA_LOCAL_THETA = 6, 10_000.0  # llama.cpp's set_swa_pattern(6), rope_freq_base_train_swa
GEMMA_27B_LAYERS = {"gemma2": 46, "gemma3": 62}  # llama.cpp scales the 27Bs' attention by n_embd / n_head
GEMMA2_WINDOW, GEMMA2_CAPS = 4096, {"attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0}
GEMMAS = ("gemma2", "gemma3")  # norms stored as 1 + weight, Gemma's four norms a block
SMOLLM3_NOPE_STEP = 4  # llama.cpp's n_no_rope_layer_step for smollm3
# Gemma's norms beside Llama's names (post_attention_norm is Gemma's, ffn_norm its pre-feedforward)
GEMMA_LAYER = {
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}


PHI3_LAYER = {"attn_qkv": "self_attn.qkv_proj", "ffn_up": "mlp.gate_up_proj"}  # fused, as Phi3ForCausalLM's
ROPE_FACTORS = ("rope_factors_long.weight", "rope_factors_short.weight")  # LongRoPE's, one a frequency
PHI3_OLD_WINDOW = 2047  # llama.cpp's n_swa for phi3 files without the key (its PR 8931): the 4k models


def layer_names(arch: str) -> dict[str, str]:
    """GGUF layer tensor -> Hugging Face name, where the architecture differs from Llama's."""
    if arch == "phi3":
        return PHI3_LAYER
    return GEMMA_LAYER if arch in GEMMAS else {}


def stored_weight(arch: str, hf_name: str, weight: Any) -> Any:
    """A tensor as Hugging Face holds it: Gemma's norms less the 1 llama.cpp's converter added."""
    return weight - 1 if arch in GEMMAS and hf_name.endswith("norm.weight") else weight


def arch_config(
    meta: dict[str, Any], arch: str, raw: dict[str, Any], file: Path, tensors: dict[str, Any] | None = None
) -> dict[str, Any]:
    """config.json `raw` (built from the Llama keys) with the architecture's own keys; `tensors`: the
    file's F32 rotary tensors by name (phi3's ROPE_FACTORS)."""
    if arch == "phi3":
        return _phi3_config(meta, raw, file, tensors or {})
    if arch == "smollm3":
        return raw | {"no_rope_layer_interval": SMOLLM3_NOPE_STEP, "no_rope_layers": None}
    if arch == "gemma2":
        return _gemma2_config(meta, raw, file)
    if arch != "gemma3":
        return raw
    for key in ("final_logit_softcapping", "attn_logit_softcapping"):
        value = meta.get(f"gemma3.{key}")
        if value:  # Gemma 2's; llama.cpp writes it only where config.json had one
            raise LmforgeError(
                f"{file}: GGUF key 'gemma3.{key}' is {value} (Gemma 2's; a gemma3 file has none)"
            )
    window = meta.get("gemma3.attention.sliding_window", 0)
    if not isinstance(window, int) or isinstance(window, bool) or window < 0:
        raise LmforgeError(
            f"{file}: GGUF key 'gemma3.attention.sliding_window' is {window!r}, expected a count"
        )
    local = meta.get("gemma3.rope.freq_base_swa", GEMMA_LOCAL_THETA)
    if not isinstance(local, int | float) or isinstance(local, bool) or local <= 0:
        raise LmforgeError(f"{file}: GGUF key 'gemma3.rope.freq_base_swa' is {local!r}, expected a float > 0")
    full = raw["rope_parameters"]
    scalar = raw["head_dim"]
    if raw["num_hidden_layers"] == GEMMA_27B_LAYERS[arch]:
        scalar = raw["hidden_size"] // raw["num_attention_heads"]
    return {key: value for key, value in raw.items() if key not in ("rope_parameters", "attention_bias")} | {
        "model_type": MODEL_TYPES[arch],
        "query_pre_attn_scalar": scalar,
        "sliding_window": window or None,
        "sliding_window_pattern": GEMMA_PATTERN if window else 1,  # 1: every layer full
        "rope_parameters": {
            "full_attention": full,
            "sliding_attention": {"rope_type": "default", "rope_theta": float(local)},
        },
    }


def _gemma2_config(meta: dict[str, Any], raw: dict[str, Any], file: Path) -> dict[str, Any]:
    """config.json of a gemma2 file, with what llama.cpp's loader fills in where the file is silent."""
    window = meta.get("gemma2.attention.sliding_window", GEMMA2_WINDOW)
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise LmforgeError(
            f"{file}: GGUF key 'gemma2.attention.sliding_window' is {window!r}, expected a count >= 1"
        )
    caps = {}
    for key, default in GEMMA2_CAPS.items():
        value = meta.get(f"gemma2.{key}", default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
            raise LmforgeError(f"{file}: GGUF key 'gemma2.{key}' is {value!r}, expected a number > 0")
        caps[key] = float(value)
    scalar = raw["head_dim"]
    if raw["num_hidden_layers"] == GEMMA_27B_LAYERS["gemma2"]:
        scalar = raw["hidden_size"] // raw["num_attention_heads"]
    kept = {key: value for key, value in raw.items() if key != "attention_bias"}
    return kept | {"query_pre_attn_scalar": scalar, "sliding_window": window, **caps}


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _phi3_config(
    meta: dict[str, Any], raw: dict[str, Any], file: Path, tensors: dict[str, Any]
) -> dict[str, Any]:
    """config.json of a phi3 file as Phi3Config reads it (formats/hf_phi3.py)."""
    key = f"{file}: GGUF key 'phi3."
    head = raw["head_dim"]
    dims = meta.get("phi3.rope.dimension_count", head)
    if not _count(dims) or not 2 <= dims <= head or dims % 2:
        raise LmforgeError(f"{key}rope.dimension_count' is {dims!r}, expected an even count from 2 to {head}")
    share = dims / head  # the factor whose int(head x it) is dims (n / d x d may fall just short)
    share = share if int(head * share) == dims else math.nextafter(share, 2.0)
    window = meta.get("phi3.attention.sliding_window")
    if window is None:  # written before the key: llama.cpp's loader's value then
        old = raw["num_hidden_layers"] in (32, 40) and raw["max_position_embeddings"] == 4096
        window = PHI3_OLD_WINDOW if old else 0
    if not _count(window):
        raise LmforgeError(f"{key}attention.sliding_window' is {window!r}, expected a count")
    kind = raw["rope_parameters"]["rope_type"]
    if kind != "default":  # linear, or rope_freqs.weight's llama3
        raise LmforgeError(
            f"{file}: rope scaling {kind!r} in a phi3 file (Phi-3 scales by LongRoPE's tensors)"
        )
    rope = {"rope_type": "default", "rope_theta": raw["rope_parameters"]["rope_theta"],
            "partial_rotary_factor": share}  # fmt: skip
    out = raw | {"hidden_act": "silu", "sliding_window": window or None, "partial_rotary_factor": share}
    attention = meta.get("phi3.rope.scaling.attn_factor")
    if attention is not None and (isinstance(attention, bool) or not isinstance(attention, int | float)
                                  or not 0 < attention < math.inf):  # fmt: skip
        raise LmforgeError(f"{key}rope.scaling.attn_factor' is {attention!r}, expected a number > 0")
    long, short = (tensors.get(name) for name in ROPE_FACTORS)
    if long is None and short is None:
        if attention not in (None, 1.0):  # llama.cpp scales cos and sin by it: lmforge with LongRoPE only
            raise LmforgeError(
                f"{key}rope.scaling.attn_factor' is {attention} without LongRoPE's"
                f" tensors {' and '.join(map(repr, ROPE_FACTORS))}, which lmforge cannot follow"
            )
        return out | {"rope_parameters": rope}
    if long is None or short is None:
        have, lacks = ROPE_FACTORS if short is None else ROPE_FACTORS[::-1]
        raise LmforgeError(f"{file}: tensor {have!r} without {lacks!r} (LongRoPE needs both)")
    for name, values in zip(ROPE_FACTORS, (long, short), strict=True):
        bad = values[~(np.isfinite(values) & (values > 0))]
        if values.shape != (dims // 2,) or bad.size:
            fault = f"has shape {tuple(values.shape)}" if values.shape != (dims // 2,) else f"holds {bad[0]}"
            raise LmforgeError(
                f"{file}: tensor {name!r} must hold {dims // 2} numbers > 0 (one per rotated frequency:"
                f" rope.dimension_count {dims} / 2); it {fault}"
            )
    original = meta.get("phi3.rope.scaling.original_context_length", raw["max_position_embeddings"])
    if not _count(original) or original < 1:
        raise LmforgeError(
            f"{key}rope.scaling.original_context_length' is {original!r}, expected a count >= 1"
        )
    longrope = {"rope_type": "longrope", "long_factor": long.tolist(), "short_factor": short.tolist(),
                "attention_factor": float(attention or 1.0)}  # fmt: skip
    return out | {"original_max_position_embeddings": original, "rope_parameters": rope | longrope}
