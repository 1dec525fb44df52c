"""The norm layers: LayerNorm (GPT-2, BERT), RMSNorm (Llama) and RMSNorm with its weight stored as an
offset from 1 (Gemma: `model.norm_unit_offset`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.RMSNorm):
    """RMSNorm as Llama's reference computes it: the statistics in fp32 even when the weights are
    bf16 (in bf16 throughout, SmolLM2's answers degrade), then the weight in the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return super().forward(x)
        normed = F.rms_norm(x.float(), self.normalized_shape, None, self.eps)
        return self.weight * normed.to(x.dtype)


class OffsetRMSNorm(nn.Module):
    """RMSNorm scaling by (1 + weight), the weight kept as Hugging Face's Gemma keeps it (so import and
    export copy it as it is, and a new one starts at 0): normed and scaled in fp32, then cast to the
    input's dtype, as transformers' Gemma3RMSNorm (Llama's casts before it scales)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.normalized_shape, self.eps = (dim,), eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.rms_norm(x.float(), self.normalized_shape, None, self.eps)
        return (normed * (1.0 + self.weight.float())).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, scale=1+weight"


def rms_norm(dim: int, eps: float, unit_offset: bool = False) -> nn.Module:
    return OffsetRMSNorm(dim, eps) if unit_offset else RMSNorm(dim, eps=eps)


def make_norm(kind: str, n_embd: int, bias: bool, eps: float = 1e-5, unit_offset: bool = False) -> nn.Module:
    """`layernorm` (GPT-2, BERT) or `rmsnorm` (Llama: no mean, no bias; Gemma's with unit_offset)."""
    if kind == "rmsnorm":
        return rms_norm(n_embd, eps, unit_offset)
    return nn.LayerNorm(n_embd, eps=eps, bias=bias)
