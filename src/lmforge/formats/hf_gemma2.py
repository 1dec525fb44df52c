"""Gemma 2 (`model_type: gemma2`, `Gemma2ForCausalLM`: gemma-2-2b, 9b and 27b, base and -it) as
lmforge's GPT with Gemma's options, Gemma 3's (formats/hf_gemma.py) without the q/k norms and
with two soft caps, as transformers' modeling_gemma2.py computes them:

- RMSNorms that scale by (1 + weight) in fp32, four a block (`norm_unit_offset`, `sandwich_norm`);
  token embeddings times sqrt(hidden_size) (`scale_embedding`); a GeGLU MLP (`geglu_tanh`);
- attention scores over sqrt(query_pre_attn_scalar) (`attn_scale_dim`: the 27B's 144 against its
  head_dim of 128), then capped, 50 * tanh(score / 50) before the mask (`attn_logit_softcapping`
  -> `attn_softcap`), so the attention forms its scores (model/attention.py);
- the logits capped likewise, 30 * tanh(logit / 30) (`final_logit_softcapping` -> `logit_softcap`),
  in the training loss too: transformers' forward caps the logits it hands its loss;
- `layer_types`; where absent, Gemma2Config's alternation: layers 0, 2, 4, ... slide over
  `sliding_window` keys (4096), 1, 3, 5, ... attend the whole context (`sliding_window_pattern`
  2: every 2nd layer full, not Gemma 3's 6th); one rotary base for every layer (`rope_theta`, 1e4).

An absent soft-cap key is Gemma2Config's default (50, 30); a null one is no cap.
"""

from __future__ import annotations

import math
from typing import Any

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.formats.hf_family import Family, config_key
from lmforge.formats.hf_gemma import GEMMA3, gemma_keys, gemma_needs, gemma_out_keys, layer_pattern
from lmforge.formats.hf_rope import rope_in, rope_out

ATTN_CAP, FINAL_CAP, WINDOW = 50.0, 30.0, 4096  # Gemma2Config's defaults
PATTERN = 2  # Gemma2Config's layer_types: layer i slides when (i + 1) % 2, else attends everything


def _softcap(raw: dict[str, Any], key: str, file: str, default: float) -> float:
    """A soft cap: the class default where the key is absent, 0.0 (none) where it is null."""
    value = raw.get(key, default)  # a null stays None
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise LmforgeError(f"{file}: config key {key!r} must be a number > 0 or null, not {value!r}")
    return float(value)


def _gemma2_in(raw: dict[str, Any], file: str) -> ModelConfig:
    caps = {"attn_softcap": _softcap(raw, "attn_logit_softcapping", file, ATTN_CAP),
            "logit_softcap": _softcap(raw, "final_logit_softcapping", file, FINAL_CAP)}  # fmt: skip
    layers = config_key(raw, "num_hidden_layers", file, kind=int)
    pattern = PATTERN if raw.get("layer_types") is None else layer_pattern(raw, layers, file)
    keys, _ = gemma_keys(raw, file, "Gemma 2", 8192, 256_000, WINDOW, pattern)
    # one rotary for every layer: rope_parameters or rope_theta
    return ModelConfig(**keys, **rope_in(raw, file, keys["block_size"]), **caps)


def gemma2_out(c: ModelConfig) -> dict[str, Any]:
    """config.json keys of a Gemma-shaped decoder without q/k norms, or a one-line error naming
    what else Gemma 2 needs."""
    needs = {
        **gemma_needs(c),
        "model.rope_local_theta=0": not c.rope_local_theta,  # one rotary base for every layer
    }
    lacks = [key for key, ok in needs.items() if not ok]
    if lacks:
        raise LmforgeError(
            "this model has no Hugging Face equivalent: its Gemma options without q/k norms would make"
            f" it Gemma 2 (gemma2), which also needs {', '.join(lacks)} (with model.qk_norm: Gemma 3)"
        )
    return {
        **gemma_out_keys(c),
        "rope_parameters": {"rope_type": c.rope_type, "rope_theta": c.rope_theta, **rope_out(c)},
        "rope_theta": c.rope_theta,  # transformers 4 and llama.cpp's converter read these
        **({"rope_scaling": {"rope_type": c.rope_type, **rope_out(c)}} if c.rope_type != "default" else {}),
        "attn_logit_softcapping": c.attn_softcap or None,
        "final_logit_softcapping": c.logit_softcap or None,
    }


# Gemma 3's module names, less the q/k norms Gemma 2 has not
GEMMA2 = Family(
    architecture="Gemma2ForCausalLM",
    kind="gpt",
    top=GEMMA3.top,
    layer={k: v for k, v in GEMMA3.layer.items() if k not in ("attn.q_norm", "attn.k_norm")},
    layer_prefix=GEMMA3.layer_prefix,
    config_in=_gemma2_in,
    config_out=gemma2_out,
    ignored=GEMMA3.ignored,
)
