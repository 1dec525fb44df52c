"""Which kernel runs an fp32 linear layer at inference on this CPU, chosen by measurement.

PyTorch sends fp32 CPU matmuls to MKL; oneDNN's kernel (`mkldnn._linear_pointwise`, the one bf16
uses) is the other route. Neither wins everywhere (benchmarks/README.md): on a 2-core AMD EPYC
MKL's one-row product ran on one thread and oneDNN read the weights 2.7x faster; on a 2-core
Intel Xeon (AVX-512) MKL decoded 1.3x faster. So the first fp32 linear without autograd times
both on one-row products through 47 MB of weights (well under a second) and keeps the faster for
the process; `LMFORGE_LINEAR=mkl|onednn` skips the probe. A close call (within
MARGIN) keeps MKL, PyTorch's own route, so a noisy probe does not flip the choice run to run.
The routes' sums differ only in order (~1e-6 relative).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from lmforge.errors import LmforgeError

ROUTES = ("mkl", "onednn")
MARGIN = 1.15  # oneDNN must be this much faster to be chosen
ONEDNN_AVAILABLE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
# A decoding step's products: one row through each of a stack of distinct weights (two GPT
# blocks' MLPs at 384 and 768 wide, 47 MB), so the weights stream from memory as in decoding
# rather than sitting in a cache. (A probe over one weight, or over 16-row products, picked the
# route that decoded slower.)
PROBE_SHAPES = ((1536, 384), (384, 1536), (3072, 768), (768, 3072)) * 2


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def probe(rounds: int = 3) -> dict[str, float]:
    """Seconds each route takes for one row through PROBE_SHAPES' weights, fp32: the best of
    `rounds`, the routes taking turns so that load from elsewhere hits both alike."""
    x = {n_in: torch.full((1, n_in), 0.5) for _, n_in in PROBE_SHAPES}
    weights = [(torch.full((n_out, n_in), 0.01), torch.zeros(n_out)) for n_out, n_in in PROBE_SHAPES]
    kernels: dict[str, Callable[..., torch.Tensor]] = {"mkl": F.linear, "onednn": onednn_linear}
    times = dict.fromkeys(kernels, float("inf"))
    with torch.inference_mode():
        for turn in range(rounds + 1):  # turn 0 warms up: thread pool, oneDNN's primitive cache
            for route, kernel in kernels.items():
                start = time.perf_counter()
                for w, b in weights:
                    kernel(x[w.size(1)], w, b)
                if turn:
                    times[route] = min(times[route], time.perf_counter() - start)
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
