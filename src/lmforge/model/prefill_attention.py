"""Which kernel runs bf16 attention over a whole sequence at inference (a prompt's prefill, an
evaluation of a model in bf16 weights) on this CPU, chosen by measurement.

The `bmm` route (two batched matmuls; model/attention.py) rounds the attention scores to bf16
before the softmax, as transformers' `eager` attention does; PyTorch's fused kernel (`sdpa`,
transformers' default) keeps them in fp32. On a 2-core AMD EPYC with AVX512_BF16 that rounding
was the only op where a bf16 lmforge model parted from transformers' bf16 model (every norm,
rotary table, product and the head gave the same bits), and it cost accuracy: over 3,000
positions of a random Llama (initializer range 0.05) the logits' mean error against fp32 was
0.0504 on `bmm` and 0.0450 on `sdpa` (argmax agreement 91.0% and 92.4%); SmolLM2-135M on text
0.0999 and 0.0977. Neither is faster everywhere: there `sdpa` ran SmolLM2's attention 2-3x faster
for 16 positions and 2,048, and 1.4-1.8x slower from 128 to 512 (docs/speed.md). So the first
such call of each shape (batch, heads, key/value heads, head size, positions rounded up to a
power of two, padded or not) times both on its own tensors and takes `sdpa` unless `bmm` was
faster: the accurate route wherever it costs nothing. Remembered for the machine
(model/route_memory.py), as the other probes. Training (autograd, or autocast's evaluation), fp32
and compiled forwards keep their routes. `LMFORGE_PREFILL_ATTENTION=bmm|sdpa` skips the probe.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lmforge.env_switch import switch
from lmforge.model import route_memory

ROUTES = ("bmm", "sdpa")
ROUNDS = 3
KIND = "bf16 prefill attention"  # its entries in the autotune cache (model/route_memory.py)
_chosen: dict[tuple[int, ...], str] = {}  # (B, H, KV, hs, positions' bucket, padded) -> route


def forced_route() -> str:
    """The route LMFORGE_PREFILL_ATTENTION forces ('' when unset); a typo is one line."""
    return switch("LMFORGE_PREFILL_ATTENTION", ROUTES)


def applies(q: torch.Tensor, dropout: float) -> bool:
    """A whole sequence in bf16 weights at inference on the CPU: no autograd, and no autocast (a
    training run's evaluation, whose weights are fp32, keeps training's route)."""
    return (
        q.dtype == torch.bfloat16  # first: an fp32 forward stops here
        and q.is_cpu
        and dropout == 0.0
        and q.size(-2) > 1
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()  # a probe's timing cannot be traced
    )


def _bucket(t: int) -> int:
    """Positions rounded up to a power of two: one probe serves 257 to 512."""
    return 1 << (t - 1).bit_length()


def _measure(run: Callable[[str], torch.Tensor], positions: int) -> tuple[str, str]:
    """(`sdpa` unless `bmm` was faster, the timings)."""
    best = route_memory.best_times({r: lambda r=r: run(r) for r in ROUTES}, ROUNDS)
    route = "bmm" if best["bmm"] < best["sdpa"] else "sdpa"
    timings = ", ".join(f"{r} {1e6 * took:.0f} us" for r, took in best.items())
    return route, f"{timings} at {positions} positions"


def route_for(
    q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, run: Callable[[str], torch.Tensor]
) -> str:
    """`bmm` or `sdpa` for this call (`applies`); run(route) computes it on that route (the probe
    times it). Remembered for this machine, else measured at its shape's first call."""
    forced = forced_route()
    if forced:
        return forced
    key = (q.size(0), q.size(1), k.size(1), q.size(-1), _bucket(q.size(-2)), int(mask is not None))
    if key not in _chosen:
        padded = ", padded" if mask is not None else ""
        shape = "batch {}, heads {}, key/value heads {}, head size {}, up to {} positions".format(*key[:5])
        measure = lambda: _measure(run, q.size(-2))  # noqa: E731 - the probe, run only if needed
        _chosen[key] = route_memory.choose(KIND, shape + padded, ROUTES, measure)[0]
    return _chosen[key]
