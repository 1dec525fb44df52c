"""Which kernel runs bf16 attention for one new query per row (a decoding step) on this CPU,
chosen by measurement.

PyTorch's CPU flash-attention kernel is fast in fp32 but, in bf16, for a single query it ran 3-5x
slower than in fp32 on a 2-core AMD EPYC with AVX512_BF16 (batch 8 of SmolLM2's 9 query and 3
key/value heads, 130 keys: 456 us against 125 with the casts), so bf16 decoding spent a quarter of
its time there. Two other routes: `fp32` casts q, k and v to fp32 for the fused kernel and the
result back; `grouped` is the formula as two batched matmuls over the grouped heads (a query
head's group shares its key/value head, so (B, H, 1, hs) is viewed as (B, KV, H/KV, hs) and
multiplied with the cache as it is). None wins everywhere (on that EPYC `fp32` was fastest at 5 of
6 shapes, `grouped` at the sixth, and `sdpa` beat `grouped` at batch 1), so the first bf16
single-query call of each shape (batch, heads, key/value heads, head size) times all three on its
own tensors and keeps the fastest, if it is MARGIN faster than `sdpa`, remembered for the machine
(model/route_memory.py: in the autotune cache), so that later processes take the same route. The
routes round differently (which sums and products are kept in fp32), so greedy tokens part at
near-ties: chosen afresh in every process, SmolLM2's routes ran close enough that the same greedy
`generate` told another story in 1 of 4 runs. fp32 models and every other case stay on
`scaled_dot_product_attention`. `LMFORGE_DECODE_ATTENTION=sdpa`, `fp32` or `grouped` skips the
probe; with `LMFORGE_AUTOTUNE=0` each process probes for itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmforge.env_switch import switch
from lmforge.model import route_memory

ROUTES = ("sdpa", "fp32", "grouped")
MARGIN = 1.15  # another route must be this much faster to be chosen: sdpa is PyTorch's own
ROUNDS = 3
KIND = "bf16 decoding attention"  # its entries in the autotune cache (model/route_memory.py)
# scaled_dot_product_attention(enable_gqa=True): PyTorch 2.5 and later
SDPA_GQA = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 5)
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


def fp32_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """The fused kernel in fp32, the inputs cast up and the result back down."""
    return _sdpa(q.float(), k.float(), v.float(), mask).to(q.dtype)


def _measure(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> tuple[str, str]:
    """(the fastest route, if MARGIN faster than sdpa, else sdpa; the timings)."""
    kernels = {"sdpa": _sdpa, "fp32": fp32_attention, "grouped": grouped_attention}
    best = route_memory.best_times({r: lambda f=f: f(q, k, v, mask) for r, f in kernels.items()}, ROUNDS)
    fastest = min(best, key=best.__getitem__)
    timings = ", ".join(f"{route} {1e6 * took:.0f} us" for route, took in best.items())
    return (fastest if best["sdpa"] > MARGIN * best[fastest] else "sdpa"), f"{timings} at {k.size(-2)} keys"


def forced_route() -> str:
    """The route LMFORGE_DECODE_ATTENTION forces ('' when unset); a typo is one line."""
    return switch("LMFORGE_DECODE_ATTENTION", ROUTES)


def route_for(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> str:
    """The route for this single-query bf16 call on the CPU: remembered for this machine, else
    measured at its shape's first call (on its own tensors) and remembered."""
    forced = forced_route()
    if forced:
        return forced
    key = (q.size(0), q.size(1), k.size(1), q.size(-1))
    if key not in _chosen:
        shape = "batch {}, heads {}, key/value heads {}, head size {}".format(*key)
        _chosen[key] = route_memory.choose(KIND, shape, ROUTES, lambda: _measure(q, k, v, mask))[0]
    return _chosen[key]


def applies(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> bool:
    """A decoding step in bf16 on the CPU: one query per row after cached keys, a padding mask of
    (B, 1, 1, T) or none, and key/value heads that divide the query heads."""
    return (
        q.dtype == torch.bfloat16  # first: an fp32 step stops here
        and q.is_cpu
        and not torch.compiler.is_compiling()  # a compiled step: the probe's timing cannot be traced
        and q.size(-2) == 1
        and k.size(-2) > 1
        and q.size(1) % k.size(1) == 0
        and (q.size(1) == k.size(1) or SDPA_GQA)
        and (mask is None or (mask.dtype == torch.bool and mask.dim() == 4 and mask.size(-2) == 1))
    )


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Attention of one query per row over all of k and v (no causal mask needed: the query is the
    last position), by the route measured fastest for this shape."""
    route = route_for(q, k, v, mask)
    if route == "grouped":
        return grouped_attention(q, k, v, mask)
    return fp32_attention(q, k, v, mask) if route == "fp32" else _sdpa(q, k, v, mask)
