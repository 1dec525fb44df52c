"""Scaled dot-product attention, softmax(Q K^T / sqrt(d_k)) V (Vaswani et al., 2017).

`reference_attention` is the formula written out; `attention` dispatches to PyTorch's fused
`scaled_dot_product_attention` (same maths, tested equal) unless the reference is asked for.
`KVCache` keeps past keys and values so generation costs one token's work per step.
`capture_attention()` records the probabilities (interpretability, tools/inspect.py); outside it
the fast routes run and no probability matrix is formed. A soft cap on the scores (Gemma 2's
attn_logit_softcapping: cap * tanh(score / cap), before the mask) needs the scores formed, so a
capped attention runs the `bmm` route (or the reference), never the fused kernel.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from lmforge.model import decode_attention, prefill_attention


def causal_mask(t_q: int, t_k: int, device: torch.device | None = None) -> torch.Tensor:
    """(t_q, t_k) bool, True where attention is allowed. The queries are the last t_q positions
    of a sequence of t_k, so query i sits at position t_k - t_q + i and sees keys up to it."""
    q_pos = torch.arange(t_k - t_q, t_k, device=device)[:, None]
    k_pos = torch.arange(t_k, device=device)[None, :]
    return k_pos <= q_pos


def window_mask(t_q: int, t_k: int, window: int, device: torch.device | None = None) -> torch.Tensor:
    """causal_mask narrowed to a sliding window: query i (at position t_k - t_q + i) sees the
    `window` keys ending at its own position (transformers' sliding_window_overlay)."""
    q_pos = torch.arange(t_k - t_q, t_k, device=device)[:, None]
    k_pos = torch.arange(t_k, device=device)[None, :]
    return (k_pos <= q_pos) & (k_pos > q_pos - window)


SDPA_GQA = decode_attention.SDPA_GQA  # scaled_dot_product_attention(enable_gqa=True), torch >= 2.5
_captured = threading.local()  # .probs: the list capture_attention() fills, on this thread only
SEQUENCE_ROUTES = ("bmm", "sdpa")
# The CPU's route for whole sequences under impl="auto"; training measures both and sets the faster
# (train/autotune.py). bmm is the default: it trained faster on every CPU measured before the probe.
_sequence_route = {"cpu": "bmm"}


def set_sequence_route(route: str) -> None:
    """Make `route` (bmm or sdpa) what impl="auto" runs on the CPU over whole sequences."""
    if route not in SEQUENCE_ROUTES:
        raise ValueError(f"attention route {route!r}: expected one of {SEQUENCE_ROUTES}")
    _sequence_route["cpu"] = route


def sequence_route() -> str:
    return _sequence_route["cpu"]


@contextlib.contextmanager
def capture_attention() -> Iterator[list[torch.Tensor]]:
    """Within the block, every attention call on this thread runs the reference formula and
    appends its probabilities, (B, nh, Tq, Tk) fp32, to the list yielded, in call order."""
    previous = getattr(_captured, "probs", None)
    _captured.probs = probs = []
    try:
        yield probs
    finally:
        _captured.probs = previous


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    mask: torch.Tensor | None = None,
    dropout: float = 0.0,
    softcap: float = 0.0,
) -> torch.Tensor:
    """q (B, nh, Tq, hs), k and v (B, nh, Tk, hs) -> (B, nh, Tq, hs). mask: bool, True = attend.
    softcap: the scores become softcap * tanh(score / softcap) before the mask (0: uncapped)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, nh, Tq, Tk)
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    if causal:
        scores = scores.masked_fill(~causal_mask(q.size(-2), k.size(-2), q.device), float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1)
    record = getattr(_captured, "probs", None)
    if record is not None:
        record.append(probs.detach())
    return F.dropout(probs.to(v.dtype), dropout) @ v


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    mask: torch.Tensor | None = None,
    dropout: float = 0.0,
    impl: str = "auto",
    softcap: float = 0.0,
) -> torch.Tensor:
    """Attention by one of three equal routes (tested to agree). k and v may have fewer heads than
    q (grouped-query attention): query heads g*j .. g*j + g-1 read key/value head j, g = the ratio.

    - `sdpa`: PyTorch's fused scaled_dot_product_attention (flash / memory-efficient kernels);
    - `bmm`: the formula as two batched matmuls with an additive mask: on CPUs this trains
      about 1.5x faster than `sdpa` in bf16 (see benchmarks/), since oneDNN's bmm beats the CPU
      flash kernel at these head sizes;
    - `reference`: the formula written out with a boolean mask, for reading and testing.
    `auto` is `sequence_route()` on the CPU over whole sequences (training, prefill: `bmm` unless
    training measured `sdpa` faster, see `set_sequence_route`) and `sdpa` elsewhere, including
    decoding from a KV cache, where `bmm` would copy the cache's strided slices.
    Grouped heads go to the CPU's `sdpa` kernel as they are (`enable_gqa`: 1.7-2.9x faster than
    repeating them at a decoding step's shapes, benchmarks/README.md); the other routes repeat them.
    A bf16 decoding step on the CPU runs whichever of `sdpa` in bf16, `sdpa` on fp32 casts and
    grouped matmuls it measured fastest for its shape (model/decode_attention.py); a whole bf16
    sequence at inference `sdpa`, which keeps the scores in fp32, unless `bmm` measured faster
    (model/prefill_attention.py).
    softcap > 0 caps the scores (see reference_attention): every route but `reference` is then
    `bmm`, the one that forms the scores, whatever `impl` asks, in training and decoding alike.
    """
    if getattr(_captured, "probs", None) is not None:  # inside capture_attention(): record them
        impl = "reference"
    elif softcap and impl != "reference":  # the fused kernels cannot cap the scores they never form
        impl = "bmm"
    elif impl == "auto":
        if dropout == 0.0 and decode_attention.applies(q, k, mask):
            return decode_attention.attend(q, k, v, mask)  # bf16 decoding step: the faster route here
        impl = _sequence_route["cpu"] if q.is_cpu and q.size(-2) == k.size(-2) else "sdpa"
        if impl == "bmm" and prefill_attention.applies(q, dropout):  # bf16 at inference: measured
            impl = prefill_attention.route_for(q, k, mask, lambda r: attention(q, k, v, causal, mask, 0.0, r))
    grouped = q.size(1) != k.size(1)
    if grouped and not (impl == "sdpa" and q.is_cpu and SDPA_GQA):
        k, v = repeat_heads(k, q.size(1)), repeat_heads(v, q.size(1))
        grouped = False
    if impl == "reference":
        return reference_attention(q, k, v, causal, mask, dropout, softcap)
    t_q, t_k = q.size(-2), k.size(-2)
    if impl == "bmm":
        return _bmm_attention(q, k, v, _additive_mask(t_q, t_k, causal, mask, q.device), dropout, softcap)
    gqa = {"enable_gqa": True} if grouped else {}
    if causal and mask is None and t_q == t_k:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, **gqa)
    if causal and t_q > 1:  # queries after a cached prefix: build the offset causal mask
        offset = causal_mask(t_q, t_k, q.device)
        mask = offset if mask is None else mask & offset
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, **gqa)


def repeat_heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, n_kv, T, hs) -> (B, n_head, T, hs): each key/value head repeated for its query heads."""
    return x if x.size(1) == n_head else x.repeat_interleave(n_head // x.size(1), dim=1)


def _causal_bias(t_q: int, t_k: int, device: torch.device) -> torch.Tensor:
    if torch.compiler.is_compiling():  # traced into the graph: dynamo would skip the cache, warning
        return _new_causal_bias(t_q, t_k, device)
    return _cached_causal_bias(t_q, t_k, device)


def _new_causal_bias(t_q: int, t_k: int, device: torch.device) -> torch.Tensor:
    return torch.zeros(t_q, t_k, device=device).masked_fill(~causal_mask(t_q, t_k, device), float("-inf"))


_cached_causal_bias = functools.lru_cache(maxsize=16)(_new_causal_bias)


def _additive_mask(
    t_q: int, t_k: int, causal: bool, mask: torch.Tensor | None, device: torch.device
) -> torch.Tensor | None:
    """0 where attention is allowed, -inf where not: (t_q, t_k), or mask's broadcast shape."""
    bias = _causal_bias(t_q, t_k, device) if causal and t_q > 1 else None
    if mask is not None:
        padding = torch.zeros(mask.shape, device=device).masked_fill(~mask, float("-inf"))
        bias = padding if bias is None else bias + padding
    return bias


def _bmm_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    dropout: float,
    softcap: float = 0.0,
) -> torch.Tensor:
    b, nh, t_q, hs = q.shape
    t_k = k.size(-2)
    q3, k3, v3 = q.reshape(b * nh, t_q, hs), k.reshape(b * nh, t_k, hs), v.reshape(b * nh, t_k, hs)
    if softcap:  # capped before the mask is added, so the mask cannot be fused into the matmul
        scores = torch.tanh(torch.bmm(q3, k3.transpose(1, 2)) * (hs**-0.5 / softcap)) * softcap
        if bias is not None:  # (t_q, t_k) or (B, 1 or nh, t_q, t_k): broadcast over the heads
            scores = (scores.view(b, nh, t_q, t_k) + bias.to(scores.dtype)).view(b * nh, t_q, t_k)
    elif bias is None:
        scores = torch.bmm(q3, k3.transpose(1, 2)) * hs**-0.5
    elif bias.dim() == 2:  # one (t_q, t_k) mask for every batch and head: fused into the matmul
        bias = bias.to(q3.dtype).expand(b * nh, t_q, t_k)
        scores = torch.baddbmm(bias, q3, k3.transpose(1, 2), alpha=hs**-0.5)
    else:  # per-sequence masks (padding): (B, 1 or nh, t_q, t_k)
        scores = (torch.bmm(q3, k3.transpose(1, 2)) * hs**-0.5).view(b, nh, t_q, t_k) + bias
        scores = scores.view(b * nh, t_q, t_k)
    # softmax in the scores' dtype: in bf16 the kernel sums in fp32 and rounds once, so the probabilities
    # are fp32's rounded for the bf16 bmm below (tests/test_attention.py), without casting the
    # (B*nh, Tq, Tk) scores and probabilities up and down, forward and backward (1.02-1.08x a bf16 step)
    probs = F.dropout(torch.softmax(scores, dim=-1), dropout)  # (B*nh, Tq, Tk)
    return torch.bmm(probs.to(v3.dtype), v3).view(b, nh, t_q, hs)


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
