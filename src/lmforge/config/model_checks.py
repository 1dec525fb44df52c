"""The [model] section's checks: a wrong value is one line naming its key (config/checks.py runs
them with the rest of a config), and the keys each model family cannot honour, which every model's
constructor checks (`check_buildable`), so a recipe, a model directory and an import meet the same
rule."""

from __future__ import annotations

import math

from lmforge.config.model_section import ModelConfig
from lmforge.errors import LmforgeError


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise LmforgeError(message)


def check_model(m: ModelConfig) -> None:
    for key in ("n_layer", "n_head", "n_embd", "block_size"):
        value = getattr(m, key)
        _check(value > 0, f"model.{key}={value} must be > 0")
    _check(m.head_dim >= 0, f"model.head_dim={m.head_dim} must be >= 0 (0: model.n_embd / model.n_head)")
    _check(
        m.head_dim > 0 or m.n_embd % m.n_head == 0,
        f"model.n_embd={m.n_embd} is not divisible by model.n_head={m.n_head}",
    )
    _check(m.vocab_size >= 0, f"model.vocab_size={m.vocab_size} must be >= 0 (0: the tokenizer's)")
    _check(0.0 <= m.dropout < 1.0, f"model.dropout={m.dropout} must be in [0, 1)")
    _check(
        m.pos in ("learned", "rope", "sinusoidal"),
        f"model.pos={m.pos!r} must be 'learned', 'rope' or 'sinusoidal'",
    )
    _check(m.pos != "sinusoidal" or m.arch == "seq2seq", "model.pos='sinusoidal' is for model.arch=seq2seq")
    _check(
        m.mlp in ("gelu", "gelu_tanh", "swiglu", "geglu_tanh", "silu"),
        f"model.mlp={m.mlp!r} must be gelu, gelu_tanh, swiglu, geglu_tanh or silu",
    )
    _check(
        m.pos != "rope" or m.head_size() % 2 == 0,
        f"model.pos='rope' needs an even head size, not"
        f" {'model.head_dim' if m.head_dim else 'model.n_embd / model.n_head'} = {m.head_size()}",
    )
    _check_hf_options(m)
    _check(m.arch in ("gpt", "seq2seq"), f"model.arch={m.arch!r} must be 'gpt' or 'seq2seq'")


def _check_hf_options(m: ModelConfig) -> None:
    _check(m.norm in ("layernorm", "rmsnorm"), f"model.norm={m.norm!r} must be 'layernorm' or 'rmsnorm'")
    _check(0 < m.norm_eps < math.inf, f"model.norm_eps={m.norm_eps} must be > 0 and finite")
    _check(
        m.n_kv_head == 0 or (m.n_kv_head > 0 and m.n_head % m.n_kv_head == 0),
        f"model.n_kv_head={m.n_kv_head} must divide model.n_head={m.n_head}",
    )
    _check(0 < m.rope_theta < math.inf, f"model.rope_theta={m.rope_theta} must be > 0 and finite")
    _check_rope_scaling(m)
    _check_local_layers(m)
    nope = m.nope_interval
    _check(nope >= 0, f"model.nope_interval={nope} must be >= 0 (0: every layer rotates)")
    _check(
        not nope or m.pos == "rope", f"model.nope_interval={nope} changes nothing without model.pos='rope'"
    )
    _check(m.mlp_hidden >= 0 and m.type_vocab_size >= 0, "model.mlp_hidden and type_vocab_size must be >= 0")


_ROPE_KEYS = (
    "rope_type",
    "rope_factor",
    "rope_low_freq_factor",
    "rope_high_freq_factor",
    "rope_original_context",
    "rope_attention_factor",
    "rope_beta_fast",
    "rope_beta_slow",
    "rope_truncate",
    "rope_short_factor",
    "rope_long_factor",
)
_YARN = ("rope_factor", "rope_original_context", "rope_attention_factor", "rope_beta_fast",
         "rope_beta_slow", "rope_truncate")  # fmt: skip
_ROPE_USES = {  # the keys each kind reads (rope_type aside)
    "default": (),
    "linear": ("rope_factor",),
    "llama3": ("rope_factor", "rope_low_freq_factor", "rope_high_freq_factor", "rope_original_context"),
    "yarn": _YARN,
    "dynamic": ("rope_factor", "rope_original_context"),
    "longrope": (
        "rope_factor",
        "rope_original_context",
        "rope_attention_factor",
        "rope_short_factor",
        "rope_long_factor",
    ),
}


def _check_rope_scaling(m: ModelConfig) -> None:
    """Scaled rotary frequencies (model/rope_scaling.py); a key the model does not read is refused,
    as it would change nothing."""
    _check(
        m.rope_type in _ROPE_USES, f"model.rope_type={m.rope_type!r} must be one of {', '.join(_ROPE_USES)}"
    )
    read = ("rope_type", *_ROPE_USES[m.rope_type]) if m.pos == "rope" else ()
    defaults = ModelConfig()
    for key in _ROPE_KEYS:
        value = getattr(m, key)
        why = f"model.rope_type={m.rope_type!r}" if m.pos == "rope" else "model.pos other than 'rope'"
        _check(
            key in read or value == getattr(defaults, key),
            f"model.{key}={value!r} changes nothing with {why}",
        )
    _check("rope_factor" not in read or m.rope_factor > 0, f"model.rope_factor={m.rope_factor} must be > 0")
    low, high = m.rope_low_freq_factor, m.rope_high_freq_factor
    _check(
        "rope_low_freq_factor" not in read or 0 < low < high,
        f"model.rope_low_freq_factor={low} must be > 0 and below model.rope_high_freq_factor={high}",
    )
    context = m.rope_original_context
    _check(context >= 1, f"model.rope_original_context={context} must be >= 1")
    attention, fast, slow = m.rope_attention_factor, m.rope_beta_fast, m.rope_beta_slow
    _check(
        attention >= 0, f"model.rope_attention_factor={attention} must be >= 0 (0: 0.1 ln(rope_factor) + 1)"
    )
    _check(
        0 < slow <= fast,
        f"model.rope_beta_slow={slow} must be > 0 and at most model.rope_beta_fast={fast}",
    )
    _check_partial_and_longrope(m, read)


def _check_partial_and_longrope(m: ModelConfig, read: tuple[str, ...]) -> None:
    """rope_partial_factor: a share of the head whose rotated part is an even count; longrope's
    factor lists: one positive number per rotary frequency."""
    share = m.rope_partial_factor
    _check(0 < share <= 1, f"model.rope_partial_factor={share} must be in (0, 1]")
    _check(share == 1.0 or m.pos == "rope", f"model.rope_partial_factor={share} changes nothing without"
           " model.pos='rope'")  # fmt: skip
    dims = m.rotary_dims()
    _check(share == 1.0 or (dims >= 2 and dims % 2 == 0),
           f"model.rope_partial_factor={share} rotates {dims} of {m.head_size()} head dimensions, which"
           " must be an even count of at least 2")  # fmt: skip
    for key in ("rope_short_factor", "rope_long_factor"):
        values = getattr(m, key)
        if key not in read:
            continue
        _check(len(values) == dims // 2 and all(v > 0 for v in values),
               f"model.{key} must list {dims // 2} numbers > 0 (one per rotary frequency), not"
               f" {len(values)}")  # fmt: skip


def _check_local_layers(m: ModelConfig) -> None:
    """Sliding-window layers, their pattern and rotary base, the norms' unit offset, the attention
    scale, the soft caps (Gemma's options): a key that changes nothing is refused, as the rotary
    ones are."""
    for key in ("sliding_window", "sliding_window_pattern", "attn_scale_dim"):
        value = getattr(m, key)
        _check(value >= 0, f"model.{key}={value} must be >= 0")
    for key in ("attn_softcap", "logit_softcap"):
        value = getattr(m, key)
        _check(0 <= value < math.inf, f"model.{key}={value} must be a number >= 0 (0: uncapped)")
    local, window, pattern = m.rope_local_theta, m.sliding_window, m.sliding_window_pattern
    _check(local >= 0, f"model.rope_local_theta={local} must be >= 0 (0: rope_theta)")
    _check(
        window or not pattern,
        f"model.sliding_window_pattern={pattern} changes nothing without model.sliding_window",
    )
    _check(
        not m.rope_local_theta or (window and m.pos == "rope"),
        f"model.rope_local_theta={m.rope_local_theta} changes nothing without model.sliding_window and"
        " model.pos='rope'",
    )
    _check(
        not m.norm_unit_offset or m.norm == "rmsnorm",
        f"model.norm_unit_offset=true is for model.norm='rmsnorm', not {m.norm!r}",
    )


# Keys a model family cannot honour: they must keep their default, or building it is an error
# (a recipe that sets them would otherwise train something other than it says).
_LOCAL = ("sliding_window", "sliding_window_pattern", "rope_local_theta", "sandwich_norm", "norm_unit_offset",
          "attn_scale_dim", "attn_softcap", "logit_softcap")  # fmt: skip
UNSUPPORTED = {
    "gpt": ("post_norm", "final_norm", "logits_bias", "type_vocab_size"),
    "seq2seq": ("type_vocab_size", "head_dim", "qk_norm", "nope_interval", *_LOCAL),
    "encoder": (
        "pos",
        "final_norm",
        "logits_bias",
        "scale_embedding",
        "head_dim",
        "qk_norm",
        "nope_interval",
        *_LOCAL,
    ),  # fmt: skip
}


def check_buildable(m: ModelConfig, family: str) -> None:
    """A model of `family` (gpt, seq2seq, encoder) can be built from `m` exactly as it says: the
    vocabulary is set and no key it cannot honour differs from its default. Every model's
    constructor calls this, so a recipe, a model directory and an import meet the same check."""
    if m.vocab_size <= 0:
        raise LmforgeError("model.vocab_size must be set (the tokenizer's size) before building a model")
    check_supported(m, family)


def check_supported(m: ModelConfig, family: str) -> None:
    default = ModelConfig()
    for key in UNSUPPORTED[family]:
        value = getattr(m, key)
        if value != getattr(default, key):
            raise LmforgeError(
                f"model.{key}={value!r} is not supported by the {family} model"
                f" (it must stay {getattr(default, key)!r})"
            )
