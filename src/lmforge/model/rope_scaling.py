"""Scaled rotary frequencies: how a model trained at one context was stretched to a longer one.

Three static kinds, the ones transformers computes once at load (`modeling_rope_utils.py`), with
its float32 arithmetic, so that imported models give its logits:
- `linear` (Position Interpolation, Chen et al., 2023; long-context Llama 2 variants): every
  frequency divided by `factor`, as if positions were.
- `llama3` (Llama 3.1, 3.2, 3.3): wavelengths longer than `original_context / low_freq_factor`
  are divided by `factor`, those shorter than `original_context / high_freq_factor` kept, and
  the ones between interpolated smoothly.
- `yarn` (YaRN, Peng et al., 2023; Qwen2.5's and Qwen3's long contexts): the dimensions that turn
  fewer than `beta_slow` times over the original context are divided by `factor`, those that turn
  more than `beta_fast` times kept, a linear ramp between; and cos and sin are multiplied by the
  attention factor (0.1 ln(factor) + 1 unless given), which sharpens the attention's softmax.

The kinds whose angles depend on the running length (`dynamic`, `longrope`) are not here: import
refuses them by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lmforge.config import ModelConfig

KINDS = ("default", "linear", "llama3", "yarn")
YARN_BETA_FAST, YARN_BETA_SLOW = 32.0, 1.0  # the paper's, transformers' defaults


@dataclass(frozen=True)
class RopeScaling:
    kind: str  # "linear", "llama3" or "yarn"
    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_context: int = 8192
    attention_factor: float = 0.0  # yarn: what cos and sin are multiplied by; 0: yarn_mscale(factor)
    beta_fast: float = YARN_BETA_FAST
    beta_slow: float = YARN_BETA_SLOW
    truncate: bool = True  # yarn: the ramp's ends rounded out to whole dimensions

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
        )

    def attention(self) -> float:
        """The factor cos and sin are multiplied by (1 but for yarn)."""
        if self.kind != "yarn":
            return 1.0
        return self.attention_factor or yarn_mscale(self.factor)

    def __str__(self) -> str:
        if self.kind == "linear":
            return f"linear x{self.factor:g}"
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
    head_size: int, base: float, s: RopeScaling | None, device: torch.device | None = None
) -> torch.Tensor:
    """The model's rotary inverse frequencies (hs/2,) float32, scaled as s says."""
    if s is not None and s.kind == "yarn":
        return _yarn(head_size, base, s, device)
    return scaled(frequencies(head_size, base, device), s)


def scaled(inv_freq: torch.Tensor, s: RopeScaling | None) -> torch.Tensor:
    """inv_freq (hs/2,) float32, scaled as s says (unchanged for None); linear and llama3 only."""
    if s is None:
        return inv_freq
    assert s.kind != "yarn", "yarn's frequencies are inverse_frequencies'"
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
