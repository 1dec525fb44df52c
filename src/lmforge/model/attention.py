"""Scaled dot-product attention, softmax(Q K^T / sqrt(d_k)) V (Vaswani et al., 2017).

`reference_attention` is the formula written out; `attention` dispatches to PyTorch's fused
`scaled_dot_product_attention` (same maths, tested equal) unless the reference is asked for.
`KVCache` keeps past keys and values so generation costs one token's work per step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def causal_mask(t_q: int, t_k: int, device: torch.device | None = None) -> torch.Tensor:
    """(t_q, t_k) bool, True where attention is allowed. The queries are the last t_q positions
    of a sequence of t_k, so query i sits at position t_k - t_q + i and sees keys up to it."""
    q_pos = torch.arange(t_k - t_q, t_k, device=device)[:, None]
    k_pos = torch.arange(t_k, device=device)[None, :]
    return k_pos <= q_pos


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    mask: torch.Tensor | None = None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """q (B, nh, Tq, hs), k and v (B, nh, Tk, hs) -> (B, nh, Tq, hs). mask: bool, True = attend."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, nh, Tq, Tk)
    if causal:
        scores = scores.masked_fill(~causal_mask(q.size(-2), k.size(-2), q.device), float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).to(v.dtype)
    return F.dropout(probs, dropout) @ v


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    mask: torch.Tensor | None = None,
    dropout: float = 0.0,
    reference: bool = False,
) -> torch.Tensor:
    if reference:
        return reference_attention(q, k, v, causal, mask, dropout)
    t_q, t_k = q.size(-2), k.size(-2)
    if causal and mask is None and t_q == t_k:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
    if causal and t_q > 1:  # queries after a cached prefix: build the offset causal mask
        offset = causal_mask(t_q, t_k, q.device)
        mask = offset if mask is None else mask & offset
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)


class KVCache:
    """Preallocated keys and values for every layer: (layers, B, nh, max_len, hs) each."""

    def __init__(
        self,
        n_layer: int,
        batch: int,
        n_head: int,
        max_len: int,
        head_size: int,
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
    ) -> None:
        shape = (n_layer, batch, n_head, max_len, head_size)
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.length = 0  # tokens already cached (same for every layer once a forward finishes)
        self.max_len = max_len

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append k, v (B, nh, T, hs) at the current length; return all keys and values so far."""
        end = self.length + k.size(-2)
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {end} requested")
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        self.length += n
