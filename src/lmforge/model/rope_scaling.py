"""Scaled rotary frequencies: how a model trained at one context was stretched to a longer one.

Two static kinds, the ones transformers computes once at load (`modeling_rope_utils.py`), with its
float32 arithmetic, so that imported models give its logits:
- `linear` (Position Interpolation, Chen et al., 2023; long-context Llama 2 variants): every
  frequency divided by `factor`, as if positions were.
- `llama3` (Llama 3.1, 3.2, 3.3): wavelengths longer than `original_context / low_freq_factor`
  are divided by `factor`, those shorter than `original_context / high_freq_factor` kept, and
  the ones between interpolated smoothly.

The kinds whose angles depend on the running length (`dynamic`) or that also scale the attention
(`yarn`, `longrope`) are not here: import refuses them by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lmforge.config import ModelConfig

KINDS = ("default", "linear", "llama3")


@dataclass(frozen=True)
class RopeScaling:
    kind: str  # "linear" or "llama3"
    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_context: int

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
        )

    def __str__(self) -> str:
        if self.kind == "linear":
            return f"linear x{self.factor:g}"
        return (
            f"llama3 x{self.factor:g}, low {self.low_freq_factor:g}, high {self.high_freq_factor:g},"
            f" from {self.original_context}"
        )


def frequencies(head_size: int, base: float, device: torch.device | None = None) -> torch.Tensor:
    """Plain rotary inverse frequencies (hs/2,) float32, HF LlamaRotaryEmbedding's arithmetic."""
    return 1.0 / base ** (torch.arange(0, head_size, 2, device=device).float() / head_size)


def scaled(inv_freq: torch.Tensor, s: RopeScaling | None) -> torch.Tensor:
    """inv_freq (hs/2,) float32, scaled as s says (unchanged for None)."""
    if s is None:
        return inv_freq
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
