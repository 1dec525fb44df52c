"""Which kernel runs an fp32 linear layer at inference on this CPU, chosen by measurement.

PyTorch sends fp32 CPU matmuls to MKL; oneDNN's kernel (`mkldnn._linear_pointwise`, the one bf16
uses) is the other route. Neither wins everywhere (benchmarks/README.md): on a 2-core AMD EPYC
MKL's one-row product ran on one thread and oneDNN read the weights 2.7x faster; on a 2-core
Intel Xeon (AVX-512) MKL decoded 1.3x faster; and on one CPU the winner at one row (a decoding
step) lost at eight (a batch of them). So the first fp32 linear without autograd times both on
one-row and on eight-row products through 47 MB of weights (well under a second) and keeps the
faster of each for the process: one for single rows, the other for 2-15 rows; from 16 rows
(prefill, evaluation) MKL runs. `LMFORGE_LINEAR=mkl|onednn` skips the probe and sets every case.
A close call (within MARGIN) keeps MKL, PyTorch's own route, so a noisy probe does not flip the
choice run to run.
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
# A decoding step's products: rows through each of a stack of distinct weights (GPT blocks' MLPs
# at 384 and 768 wide), so the weights stream from memory as in decoding rather than sitting in
# a cache. (A probe over one weight, or over 16-row products, picked the route that decoded
# slower.) Row counts probed, with the stack each needs: one row (a decoding step) through 47 MB;
# eight (a batch of decoding steps) through 189 MB, since at 47 MB they still ran from cache: on
# an AMX Xeon MKL took 1.09x oneDNN's time there but 1.34x at 189 MB and 1.37x through GPT-2
# small's blocks, while one row was MKL's at every size. From 16 rows the two were level.
STACK = ((1536, 384), (384, 1536), (3072, 768), (768, 3072))
PROBES = {1: STACK * 2, 8: STACK * 8}  # rows -> weight shapes (out, in)
PROBED_ROWS = tuple(PROBES)
FEW_ROWS_MAX = 15


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def probe(rows: int = 1, rounds: int = 3) -> dict[str, float]:
    """Seconds each route takes for `rows` rows (1 or 8) through PROBES[rows]' weights, fp32: the
    best of `rounds`, the routes taking turns so that load from elsewhere hits both alike."""
    shapes = PROBES[rows]
    x = {n_in: torch.full((rows, n_in), 0.5) for _, n_in in shapes}
    weights = [(torch.full((n_out, n_in), 0.01), torch.zeros(n_out)) for n_out, n_in in shapes]
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
def choose_linear_routes() -> tuple[dict[str, str], str]:
    """({'one', 'few', 'many' rows: 'mkl' or 'onednn'}, why): the faster fp32 inference route
    here for one row and for a few, PyTorch's own (MKL) for many (see the module docstring)."""
    forced = os.environ.get("LMFORGE_LINEAR", "")
    if forced:
        if forced not in ROUTES:
            raise LmforgeError(f"LMFORGE_LINEAR={forced!r}: expected one of {', '.join(ROUTES)}")
        if forced == "onednn" and not ONEDNN_AVAILABLE:
            raise LmforgeError("LMFORGE_LINEAR=onednn: this torch build has no oneDNN linear kernel")
        return dict.fromkeys(("one", "few", "many"), forced), "LMFORGE_LINEAR"
    if not ONEDNN_AVAILABLE:
        return dict.fromkeys(("one", "few", "many"), "mkl"), "no oneDNN linear kernel in this torch build"
    routes, measured = {"many": "mkl"}, []
    for bucket, rows in zip(("one", "few"), PROBED_ROWS, strict=True):
        times = probe(rows)
        routes[bucket] = "onednn" if times["mkl"] > MARGIN * times["onednn"] else "mkl"
        mkl, onednn = 1e3 * times["mkl"], 1e3 * times["onednn"]
        measured.append(f"{rows} row{'s' * (rows > 1)} mkl {mkl:.2f} ms, onednn {onednn:.2f} ms")
    return routes, "measured: " + "; ".join(measured)


def linear_route(rows: int = 1) -> str:
    """The route for a product of `rows` rows: one row (a decoding step), a few (a batch of decoding
    steps), or FEW_ROWS_MAX + 1 and more (prefill, evaluation)."""
    bucket = "one" if rows == 1 else "few" if rows <= FEW_ROWS_MAX else "many"
    return choose_linear_routes()[0][bucket]


def describe() -> str:
    """One line for start-up logs and benchmarks: the routes chosen and why."""
    routes, why = choose_linear_routes()
    if len(set(routes.values())) == 1:
        return f"fp32 inference linear: {routes['one']} ({why})"
    return (
        f"fp32 inference linear: {routes['one']} for 1 row, {routes['few']} for 2-{FEW_ROWS_MAX} rows,"
        f" {routes['many']} from {FEW_ROWS_MAX + 1} ({why})"
    )
