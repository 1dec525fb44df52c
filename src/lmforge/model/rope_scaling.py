"""Scaled rotary frequencies: how a model trained at one context was stretched to a longer one.

Five kinds, as transformers computes them (`modeling_rope_utils.py`), with its float32
arithmetic, so that imported models give its logits:
- `linear` (Position Interpolation, Chen et al., 2023; long-context Llama 2 variants): every
  frequency divided by `factor`, as if positions were.
- `llama3` (Llama 3.1, 3.2, 3.3): wavelengths longer than `original_context / low_freq_factor`
  are divided by `factor`, those shorter than `original_context / high_freq_factor` kept, and
  the ones between interpolated smoothly.
- `yarn` (YaRN, Peng et al., 2023; Qwen2.5's and Qwen3's long contexts): the dimensions that turn
  fewer than `beta_slow` times over the original context are divided by `factor`, those that turn
  more than `beta_fast` times kept, a linear ramp between; and cos and sin are multiplied by the
  attention factor (0.1 ln(factor) + 1 unless given), which sharpens the attention's softmax.

- `longrope` (LongRoPE, Ding et al., 2024; Phi-3-128k, Phi-3.5, Phi-4-mini): each frequency
  divided by its own `short_factor` entry, or its `long_factor` entry once the sequence is longer
  than `original_context`, and cos and sin multiplied by sqrt(1 + ln(factor) / ln(original_context))
  unless given. Which set applies depends on the running length: transformers picks it per forward
  from the longest position, and its generate() recomputes the whole cache the step a sequence
  crosses `original_context`. The model keeps both tables (model/layers.py `Rotary`) and picks per
  row; a cache filled with the short set is refused past the crossing (GPT.stale_cache), where the
  decoding loop recomputes it as transformers does.

- `dynamic` (dynamic NTK scaling, /u/bloc97 and /u/emozilla, 2023; transformers'
  `_compute_dynamic_ntk_parameters`): plain rotary up to `original_context` (transformers'
  max_position_embeddings); past it the base grows with the sequence's length L,
  base * (factor * L / original_context - (factor - 1)) ** (d / (d - 2)). A forward takes L as its
  last position + 1 (each row's own, with per-row positions): the tokens it adds are rotated with
  that base, and keys already in a KV cache keep the base they were rotated with, which is what
  transformers' generate() does (it recomputes inv_freq at every step). A full forward over the
  same tokens rotates them all with the one base of its length, so it differs from cached decoding
  past the original context, in transformers as here (`dynamic_frequencies`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lmforge.config import ModelConfig

KINDS = ("default", "linear", "llama3", "yarn", "longrope", "dynamic")
YARN_BETA_FAST, YARN_BETA_SLOW = 32.0, 1.0  # the paper's, transformers' defaults


@dataclass(frozen=True)
class RopeScaling:
    kind: str  # "linear", "llama3", "yarn", "longrope" or "dynamic"
    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_context: int = 8192  # dynamic: transformers' max_position_embeddings
    attention_factor: float = 0.0  # yarn: what cos and sin are multiplied by; 0: yarn_mscale(factor)
    beta_fast: float = YARN_BETA_FAST
    beta_slow: float = YARN_BETA_SLOW
    truncate: bool = True  # yarn: the ramp's ends rounded out to whole dimensions
    short_factor: tuple[float, ...] = ()  # longrope: divisors per frequency, at most original_context
    long_factor: tuple[float, ...] = ()  # longrope: divisors per frequency, past it

    @classmethod
    def of(cls, c: ModelConfig) -> RopeScaling | None:
        """The model's scaling, None for plain rotary positions."""
        if c.rope_type == "default":
            return None
        return cls(
            c.rope_type,
            c.rope_factor,
            c.rope_low_freq_factor,
            c.rope_high_freq_factor,
            c.rope_original_context,
            c.rope_attention_factor,
            c.rope_beta_fast,
            c.rope_beta_slow,
            c.rope_truncate,
            tuple(c.rope_short_factor),
            tuple(c.rope_long_factor),
        )

    def attention(self) -> float:
        """The factor cos and sin are multiplied by (1 but for yarn and longrope)."""
        if self.kind == "longrope":  # transformers' _compute_longrope_parameters
            if self.attention_factor or self.factor <= 1.0:
                return self.attention_factor or 1.0
            return math.sqrt(1 + math.log(self.factor) / math.log(self.original_context))
        if self.kind != "yarn":
            return 1.0
        return self.attention_factor or yarn_mscale(self.factor)

    def __str__(self) -> str:
        if self.kind == "linear":
            return f"linear x{self.factor:g}"
        if self.kind == "dynamic":
            return f"dynamic x{self.factor!r} from {self.original_context}"
        if self.kind == "longrope":  # every value, exactly, as yarn's
            return (
                f"longrope x{self.factor!r} from {self.original_context}, attention {self.attention()!r},"
                f" short {list(self.short_factor)!r}, long {list(self.long_factor)!r}"
            )
        if self.kind == "yarn":  # every value, exactly: repr(model) keys the compiled steps on disk
            ends = "" if self.truncate else ", untruncated"
            return (
                f"yarn x{self.factor!r} from {self.original_context}, beta {self.beta_fast!r}/"
                f"{self.beta_slow!r}, attention {self.attention()!r}{ends}"
            )
        return (
            f"llama3 x{self.factor:g}, low {self.low_freq_factor:g}, high {self.high_freq_factor:g},"
            f" from {self.original_context}"
        )


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN's attention factor for a context stretched `scale` times (the paper's Eq. 21, and
    transformers' yarn_get_mscale): 0.1 mscale ln(scale) + 1, 1 where nothing was stretched."""
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def frequencies(head_size: int, base: float, device: torch.device | None = None) -> torch.Tensor:
    """Plain rotary inverse frequencies (hs/2,) float32, HF LlamaRotaryEmbedding's arithmetic."""
    return 1.0 / base ** (torch.arange(0, head_size, 2, device=device).float() / head_size)


def inverse_frequencies(
    head_size: int,
    base: float,
    s: RopeScaling | None,
    device: torch.device | None = None,
    long: bool = False,
) -> torch.Tensor:
    """The model's rotary inverse frequencies (hs/2,) float32, scaled as s says (longrope: its
    long_factor set with `long`, else its short_factor set; dynamic: the plain ones, its table up to
    the original context, `dynamic_frequencies` past it)."""
    if s is not None and s.kind == "yarn":
        return _yarn(head_size, base, s, device)
    if s is not None and s.kind == "longrope":  # 1 / (ext * base^(2i/d)), transformers' order
        ext = torch.tensor(s.long_factor if long else s.short_factor, dtype=torch.float32, device=device)
        return 1.0 / (ext * base ** (torch.arange(0, head_size, 2, device=device).float() / head_size))
    return scaled(frequencies(head_size, base, device), None if s is not None and s.kind == "dynamic" else s)


def dynamic_frequencies(head_size: int, base: float, s: RopeScaling, length: torch.Tensor) -> torch.Tensor:
    """Dynamic NTK's inverse frequencies (*length.shape, hs/2) float32 for sequences of `length`
    (an int64 tensor, each > s.original_context): transformers' _compute_dynamic_ntk_parameters
    with a tensor seq_len, operation for operation, so its float32 rounding too."""
    grown = base * ((s.factor * length / s.original_context) - (s.factor - 1)) ** (
        head_size / (head_size - 2)
    )
    exponents = torch.arange(0, head_size, 2, dtype=torch.int64, device=length.device).float() / head_size
    return 1.0 / (grown[..., None] ** exponents)


def dynamic_angles(
    head_size: int,
    base: float,
    s: RopeScaling,
    start: int,
    t: int,
    positions: torch.Tensor | None,
    cos: torch.Tensor,
    sin: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic NTK's (cos, sin) float32 once a sequence is longer than s.original_context: (T, hs)
    for positions start..start+T-1 of a sequence of start + T; (B, 1, T, hs) for per-row positions
    (B, T), each row's length its last position + 1, a row within the original context reading the
    plain table (cos, sin) (max_len, hs). HF LlamaRotaryEmbedding's float32 position * inv_freq."""
    if positions is None:
        inv_freq = dynamic_frequencies(head_size, base, s, torch.tensor(start + t, device=cos.device))
        angles = torch.outer(torch.arange(start, start + t, device=cos.device).float(), inv_freq)  # (T, hs/2)
        angles = torch.cat([angles, angles], dim=-1)
        return angles.cos(), angles.sin()
    inv_freq = dynamic_frequencies(head_size, base, s, positions[:, -1] + 1)  # (B, hs/2)
    angles = positions.float()[..., None] * inv_freq[:, None]  # (B, T, hs/2)
    angles = torch.cat([angles, angles], dim=-1)
    short = (positions[:, -1] < s.original_context)[:, None, None]  # (B, 1, 1)
    grown_cos = torch.where(short, cos[positions], angles.cos())
    return grown_cos[:, None], torch.where(short, sin[positions], angles.sin())[:, None]


def scaled(inv_freq: torch.Tensor, s: RopeScaling | None) -> torch.Tensor:
    """inv_freq (hs/2,) float32, scaled as s says (unchanged for None); linear and llama3 only."""
    if s is None:
        return inv_freq
    assert s.kind in ("linear", "llama3"), "yarn's and longrope's frequencies are inverse_frequencies'"
    if s.kind == "linear":
        return inv_freq / s.factor
    low_freq_wavelen = s.original_context / s.low_freq_factor
    high_freq_wavelen = s.original_context / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    long = torch.where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq)
    smooth = (s.original_context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    between = (1 - smooth) * long / s.factor + smooth * long
    medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(medium, between, long)


def _yarn(dim: int, base: float, s: RopeScaling, device: torch.device | None) -> torch.Tensor:
    """transformers' _compute_yarn_parameters, operation for operation (its float32 rounding)."""

    def correction_dim(rotations: float) -> float:  # the dimension that turns `rotations` times
        return (dim * math.log(s.original_context / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(s.beta_fast), correction_dim(s.beta_slow)
    if s.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # as transformers: no division by zero
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    pos_freqs = base ** (torch.arange(0, dim, 2).to(device=device, dtype=torch.float) / dim)
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (s.factor * pos_freqs)
    kept = 1 - ramp.to(device=device, dtype=torch.float)  # 1: the dimension's frequency kept
    return interpolation * (1 - kept) + extrapolation * kept
