"""Which kernel runs an fp32 linear layer at inference on this CPU, chosen by measurement.

PyTorch sends fp32 CPU matmuls to MKL; oneDNN's kernel (`mkldnn._linear_pointwise`, the one bf16
uses) is the other route. Neither wins everywhere (benchmarks/README.md): on a 2-core AMD EPYC
MKL's one-row product ran on one thread and oneDNN read the weights 2.7x faster; on a 2-core
Intel Xeon (AVX-512) MKL was 1.2-1.9x faster than oneDNN at decoding's shapes. So the first fp32
linear without autograd times both on one-row and 16-row products (about 30 ms) and keeps the
faster for the process; `LMFORGE_LINEAR=mkl|onednn` skips the probe. A close call (within
MARGIN) keeps MKL, PyTorch's own route, so a noisy probe does not flip the choice run to run.
The routes' sums differ only in order (~1e-6 relative).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable

import torch

from lmforge.errors import LmforgeError

ROUTES = ("mkl", "onednn")
MARGIN = 1.15  # oneDNN must be this much faster to be chosen
ONEDNN_AVAILABLE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
# (rows, out, in): a decoding step's product (one row) and a short prefill's, over a weight
# larger than L2 caches (12 MiB) and a small one (1.5 MiB), as decoding meets both.
PROBE_SHAPES = ((1, 3072, 1024), (1, 1024, 384), (16, 3072, 1024))


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _best(fn: Callable[[], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def probe(rounds: int = 5) -> dict[str, float]:
    """Seconds each route takes over PROBE_SHAPES (sum of best-of-`rounds` times), fp32."""
    generator = torch.Generator().manual_seed(0)  # never touch the global RNG a run depends on
    times = dict.fromkeys(ROUTES, 0.0)
    with torch.inference_mode():
        for rows, n_out, n_in in PROBE_SHAPES:
            x = torch.randn(rows, n_in, generator=generator)
            w = torch.randn(n_out, n_in, generator=generator)
            b = torch.randn(n_out, generator=generator)
            for route, kernel in (("mkl", torch.nn.functional.linear), ("onednn", onednn_linear)):
                kernel(x, w, b)  # warm up: thread pool, oneDNN's primitive cache
                times[route] += _best(lambda k=kernel: k(x, w, b), rounds)  # noqa: B023 (called here)
    return times


@functools.cache
def choose_linear_route() -> tuple[str, str]:
    """('mkl' or 'onednn', why): the faster fp32 inference route here (see the module docstring)."""
    forced = os.environ.get("LMFORGE_LINEAR", "")
    if forced:
        if forced not in ROUTES:
            raise LmforgeError(f"LMFORGE_LINEAR={forced!r}: expected one of {', '.join(ROUTES)}")
        if forced == "onednn" and not ONEDNN_AVAILABLE:
            raise LmforgeError("LMFORGE_LINEAR=onednn: this torch build has no oneDNN linear kernel")
        return forced, "LMFORGE_LINEAR"
    if not ONEDNN_AVAILABLE:
        return "mkl", "no oneDNN linear kernel in this torch build"
    times = probe()
    route = "onednn" if times["mkl"] > MARGIN * times["onednn"] else "mkl"
    return route, f"measured: mkl {1e3 * times['mkl']:.2f} ms, onednn {1e3 * times['onednn']:.2f} ms"


def linear_route() -> str:
    return choose_linear_route()[0]


def describe() -> str:
    """One line for start-up logs and benchmarks: the route chosen and why."""
    route, why = choose_linear_route()
    return f"fp32 inference linear: {route} ({why})"
