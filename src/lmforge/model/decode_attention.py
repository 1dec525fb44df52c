"""Which kernel runs bf16 attention for one new query per row (a decoding step) on this CPU,
chosen by measurement.

PyTorch's CPU flash-attention kernel is fast in fp32 but, in bf16, for a single query it ran 4-5x
slower than in fp32 on a 2-core AMD EPYC with AVX512_BF16 (batch 8 of SmolLM2's 9 query and 3
key/value heads, 130 keys: 434 us against 85), so bf16 decoding spent a quarter of its time
there. The other route is the formula as two batched matmuls over the grouped heads (`grouped`):
a query head's group shares its key/value head, so (B, H, 1, hs) is viewed as (B, KV, H/KV, hs)
and multiplied with the cache as it is, with no repeated heads. Neither wins everywhere (on that
EPYC: grouped 133 against 434 us at batch 8, but 106 against 56 us for 6 heads at batch 1), so
the first bf16 single-query call of each shape (batch, heads, key/value heads, head size) times
both on its own tensors and keeps the faster for the process; `grouped` must be MARGIN faster.
fp32 and every other case stay on `scaled_dot_product_attention`. `LMFORGE_DECODE_ATTENTION=sdpa`
or `grouped` skips the probe. The routes' sums differ only in order (bf16 rounding).
"""

from __future__ import annotations

import os
import time

import torch
import torch.nn.functional as F

from lmforge.errors import LmforgeError

ROUTES = ("sdpa", "grouped")
MARGIN = 1.15  # grouped must be this much faster to be chosen: sdpa is PyTorch's own route
ROUNDS = 3
_chosen: dict[tuple[int, ...], str] = {}  # (B, H, KV, hs) -> route, for this process


def grouped_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """q (B, H, 1, hs), k and v (B, KV, T, hs), mask (B, 1, 1, T) bool or None -> (B, H, 1, hs)."""
    b, h, _, hs = q.shape
    kv = k.size(1)
    scores = (q.reshape(b, kv, h // kv, hs) @ k.transpose(-1, -2)) * hs**-0.5  # (B, KV, H/KV, T)
    scores = scores.float()  # the softmax in fp32, as the fused kernel keeps it
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    return (probs @ v).reshape(b, h, 1, hs)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    gqa = {"enable_gqa": True} if q.size(1) != k.size(1) else {}
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **gqa)


def _measure(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> str:
    kernels = {"sdpa": _sdpa, "grouped": grouped_attention}
    best = dict.fromkeys(kernels, float("inf"))
    for turn in range(ROUNDS + 1):  # turn 0 warms up; the routes take turns
        for route, kernel in kernels.items():
            start = time.perf_counter()
            kernel(q, k, v, mask)
            if turn:
                best[route] = min(best[route], time.perf_counter() - start)
    return "grouped" if best["sdpa"] > MARGIN * best["grouped"] else "sdpa"


def route_for(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> str:
    """The route for this single-query bf16 call on the CPU, measured at its shape's first call."""
    forced = os.environ.get("LMFORGE_DECODE_ATTENTION", "")
    if forced:
        if forced not in ROUTES:
            raise LmforgeError(f"LMFORGE_DECODE_ATTENTION={forced!r}: expected one of {', '.join(ROUTES)}")
        return forced
    key = (q.size(0), q.size(1), k.size(1), q.size(-1))
    if key not in _chosen:
        _chosen[key] = _measure(q, k, v, mask)
    return _chosen[key]


def applies(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> bool:
    """A decoding step in bf16 on the CPU: one query per row after cached keys, a padding mask of
    (B, 1, 1, T) or none, and key/value heads that divide the query heads."""
    return (
        q.device.type == "cpu"
        and q.dtype == torch.bfloat16
        and q.size(-2) == 1
        and k.size(-2) > 1
        and q.size(1) % k.size(1) == 0
        and (mask is None or (mask.dtype == torch.bool and mask.dim() == 4 and mask.size(-2) == 1))
    )


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Attention of one query per row over all of k and v (no causal mask needed: the query is the
    last position), by the route measured fastest for this shape."""
    if route_for(q, k, v, mask) == "grouped":
        return grouped_attention(q, k, v, mask)
    return _sdpa(q, k, v, mask)
