"""The rotary keys of a Llama / Qwen2 / Qwen3 config.json: `rope_parameters` (transformers 5) or
an older `rope_scaling` (transformers 4, Llama 3.2's and Qwen2.5's files on the Hub) into
ModelConfig's `rope_*` keys, and back (model/rope_scaling.py computes what they mean).
"""

from __future__ import annotations

from typing import Any

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.formats.hf_family import require, typed_key
from lmforge.model.rope_scaling import KINDS, YARN_BETA_FAST, YARN_BETA_SLOW, yarn_mscale


def rope_in(raw: dict[str, Any], file: str, context: int, *, dynamic: bool = False) -> dict[str, Any]:
    """ModelConfig's rope keys as transformers 5 reads them: an older rope_scaling, where it is
    not empty, replaces rope_parameters whole (its theta then the top-level rope_theta); its
    `rope_type`, else `type`, names the kind; llama3's and yarn's `original_max_position_embeddings`
    comes from the top level first, then the scaling, then max_position_embeddings (`context`).
    `dynamic` (read where the caller says its family takes it): its base grows past
    max_position_embeddings (`context`, whatever original_max_position_embeddings says)."""
    scaling = typed_key(raw, "rope_scaling", file, dict, {})
    where = "rope_scaling" if scaling else "rope_parameters"
    scaling = scaling or typed_key(raw, "rope_parameters", file, dict, {})
    kind = typed_key(scaling, "rope_type", file, str, name=f"{where}.rope_type") or typed_key(
        scaling, "type", file, str, "default", name=f"{where}.type"
    )
    kinds = [k for k in KINDS if k != "longrope" and (dynamic or k != "dynamic")]  # longrope: hf_phi3.py
    require(kind in kinds, file, f"rope type {kind!r} (lmforge reads {', '.join(kinds)}), longrope for phi3")
    theta = typed_key(scaling, "rope_theta", file, float, name=f"{where}.rope_theta")
    if theta is None:  # a 0 is the file's and refused as such (it read as 10000 until 2026-12-07)
        theta = typed_key(raw, "rope_theta", file, float)
    out: dict[str, Any] = {"rope_theta": 10000.0 if theta is None else theta}
    if kind == "default":
        return out

    def read(key: str, kind_of: type = float, default: Any = None) -> Any:
        value = typed_key(scaling, key, file, kind_of, default, name=f"{where}.{key}")
        if value is None:
            raise LmforgeError(f"{file}: missing config key '{where}.{key}' (rope type {kind!r})")
        return value

    # yarn without a factor (DeepSeek's files): the positions over the original, as transformers
    out |= {"rope_type": kind, "rope_factor": read("factor", float, 0.0 if kind == "yarn" else None)}
    if kind in ("llama3", "yarn"):
        original = typed_key(raw, "original_max_position_embeddings", file, int)
        out["rope_original_context"] = original or read("original_max_position_embeddings", int, context)
    if kind == "dynamic":
        out["rope_original_context"] = context
    if kind == "yarn" and not out["rope_factor"]:
        out["rope_factor"] = context / out["rope_original_context"]
    if kind == "llama3":
        out |= {
            "rope_low_freq_factor": read("low_freq_factor"),
            "rope_high_freq_factor": read("high_freq_factor"),
        }
    if kind == "yarn":
        out |= _yarn(scaling, where, out["rope_factor"], file)
    return out


def _yarn(scaling: dict[str, Any], where: str, factor: float, file: str) -> dict[str, Any]:
    """YaRN's keys as transformers' _compute_yarn_parameters reads them: beta_fast/beta_slow 32/1
    where absent or 0; the attention factor given, else from mscale / mscale_all_dim where both
    are set (read here into one number), else 0.1 ln(factor) + 1 (0 in model.rope_attention_factor);
    `truncate` true where absent (a null is false, as transformers tests it)."""
    number = lambda key: typed_key(scaling, key, file, float, name=f"{where}.{key}")  # noqa: E731
    attention = number("attention_factor")
    require(attention is None or attention > 0, file, f"{where}.attention_factor={attention} (must be > 0)")
    mscale, mscale_all_dim = number("mscale"), number("mscale_all_dim")
    if attention is None and mscale and mscale_all_dim:
        attention = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
    truncate = typed_key(scaling, "truncate", file, bool, name=f"{where}.truncate")  # None: absent or null
    return {
        "rope_attention_factor": attention or 0.0,
        "rope_beta_fast": number("beta_fast") or YARN_BETA_FAST,
        "rope_beta_slow": number("beta_slow") or YARN_BETA_SLOW,
        "rope_truncate": truncate if truncate is not None else "truncate" not in scaling,
    }


def rope_out(c: ModelConfig) -> dict[str, Any]:
    """The scaling's keys in rope_parameters / rope_scaling (none for plain rotary)."""
    if c.rope_type == "default":
        return {}
    keys: dict[str, Any] = {"factor": c.rope_factor}  # dynamic: max_position_embeddings its context
    if c.rope_type == "llama3":
        keys |= {
            "low_freq_factor": c.rope_low_freq_factor,
            "high_freq_factor": c.rope_high_freq_factor,
            "original_max_position_embeddings": c.rope_original_context,
        }
    if c.rope_type == "yarn":  # attention_factor and truncate only where not their default
        keys |= {
            "original_max_position_embeddings": c.rope_original_context,
            "beta_fast": c.rope_beta_fast,
            "beta_slow": c.rope_beta_slow,
            **({"attention_factor": c.rope_attention_factor} if c.rope_attention_factor else {}),
            **({} if c.rope_truncate else {"truncate": False}),
        }
    return keys
