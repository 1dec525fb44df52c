"""SmolLM3 (`model_type: smollm3`, `SmolLM3ForCausalLM`: SmolLM3-3B) as lmforge's GPT: Llama's
shape (grouped-query attention, SwiGLU, RMSNorm; formats/hf.py reads it as Llama's) with NoPE
layers, which `nope_interval` builds (model/gpt.py), and SmolLM3Config's own defaults: a rotary
base of 2e6 and tied embeddings where config.json names none.

config.json lists the layers as `no_rope_layers` (1: the layer rotates, 0: NoPE; transformers reads
the first num_hidden_layers entries), or, where that is absent or null, `no_rope_layer_interval`
(4 where absent): layer i is NoPE when (i + 1) % interval == 0. lmforge reads a list of that shape
(SmolLM3-3B's: every 4th layer) and refuses others in one line, as it refuses sliding-window layers
(SmolLM3Config slides its NoPE layers under use_sliding_window; SmolLM3-3B does not).
"""

from __future__ import annotations

from typing import Any

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.formats.hf_family import config_key, every_nth, require, typed_key

DEFAULT_THETA = 2_000_000.0  # SmolLM3Config.default_theta
DEFAULT_INTERVAL = 4  # SmolLM3Config.no_rope_layer_interval


def _interval(raw: dict[str, Any], layers: int, file: str) -> int:
    """nope_interval from no_rope_layers (or no_rope_layer_interval): N where layer i is NoPE
    exactly when (i + 1) % N == 0; 0 when every layer rotates."""
    listed = raw.get("no_rope_layers")
    if listed is None:
        interval = typed_key(raw, "no_rope_layer_interval", file, int, DEFAULT_INTERVAL)
        require(interval >= 1, file, f"no_rope_layer_interval={interval} (must be >= 1)")
        return interval if interval <= layers else 0  # none reached: every layer rotates
    ok = isinstance(listed, list) and len(listed) >= layers
    if not ok or any(isinstance(v, bool) or v not in (0, 1) for v in listed[:layers]):
        raise LmforgeError(
            f"{file}: config key 'no_rope_layers' must list at least {layers} entries (num_hidden_layers),"
            f" each 1 (rotary positions) or 0 (none)"
        )
    interval = every_nth([not v for v in listed[:layers]])
    if interval is None:
        raise LmforgeError(
            f"{file}: unsupported no_rope_layers {listed[:layers]} (lmforge reads every Nth layer"
            " without rotary positions, the others with them, as SmolLM3's)"
        )
    return interval


def smollm3_raw(raw: dict[str, Any], file: str) -> tuple[dict[str, Any], int]:
    """(config.json with SmolLM3Config's defaults where it names none, for the Llama reader;
    nope_interval). Sliding-window layers are refused: lmforge slides all layers or Gemma's pattern."""
    layers = config_key(raw, "num_hidden_layers", file, kind=int)
    require(layers >= 1, file, f"num_hidden_layers={layers}")
    interval = _interval(raw, layers, file)
    window = typed_key(raw, "sliding_window", file, int)
    types = raw.get("layer_types")
    if types is None:  # SmolLM3Config: the NoPE layers slide under use_sliding_window
        sliding = typed_key(raw, "use_sliding_window", file, bool, False) and window is not None
        types = ["sliding_attention" if sliding and (i + 1) % (interval or layers + 1) == 0 else
                 "full_attention" for i in range(layers)]  # fmt: skip
    require(not isinstance(types, list) or "sliding_attention" not in types, file,
            "sliding-window layers (layer_types / use_sliding_window)")  # fmt: skip
    filled = dict(raw)
    filled.setdefault("tie_word_embeddings", True)
    filled["use_sliding_window"] = False  # the Llama reader reads no window then
    if filled.get("rope_theta") is None:  # a theta inside rope_parameters comes first (hf_rope.py)
        filled["rope_theta"] = DEFAULT_THETA
    return filled, interval


def smollm3_out(c: ModelConfig) -> dict[str, Any]:
    """SmolLM3's keys beside Llama's: its NoPE layers both ways, no sliding window, no biases."""
    if c.qk_norm or c.qkv_bias:
        what = "q/k norms (Qwen3's)" if c.qk_norm else "q/k/v biases (Qwen2's)"
        raise LmforgeError(
            f"this model has no Hugging Face equivalent: its NoPE layers (model.nope_interval="
            f"{c.nope_interval}) make it SmolLM3, which has no {what}"
        )
    return {
        "no_rope_layers": [int(not c.layer_nope(i)) for i in range(c.n_layer)],
        "no_rope_layer_interval": c.nope_interval,
        "use_sliding_window": False,
        "sliding_window": None,
        "layer_types": ["full_attention"] * c.n_layer,
        "mlp_bias": False,
    }
