"""A compiled decoding step for one sequence on the CPU (`generate --compile`, `compile=True`).

At batch 1 a step reads every weight once, and eager PyTorch reads them slowly: on a 2-core AMD
EPYC with AVX512_BF16, MKL's and oneDNN's matrix-vector kernels read 6x384's 42 MB of weights at
10-19 GB/s where a sum over the same matrices reads 46-50 (benchmarks/README.md), and the ~100
other calls of a step cost more than their arithmetic. `torch.compile` of the model's own forward
for one new token (fullgraph, the cache length dynamic so one graph serves every step) turns the
step into a few C++ loops: each product is the plain sum (`kernels.traced_one_row`), which inductor
streams over the weight's rows on every thread, and the norms, GELU and residual adds fuse
around it. Two things make that fast, each measured:

- the cache keeps one tensor per layer and writes a step's keys and values with `index_copy_`
  (`LayerCache`): on the model's 5-D cache, whose layers are views of one tensor, the traced
  writes copied the whole cache at every layer (6x384: 2.3 against 1.4 ms a compiled step);
- inductor must not recompute a product's input inside its loop: by default it fused the layer
  norm into the sum, computing it again for every output row (4.3 against 2.3 ms a step), so
  OPTIONS makes it keep every intermediate in its own buffer.

The first step compiles (15-70 s on 2 cores; once inductor's cache in the temp directory holds the
kernels, 5 s for a 6-layer model and 17-20 s for SmolLM2's 30 layers, which dynamo traces again in
every process), so this pays back only on long outputs; it is asked for, never automatic.
The step computes the same sums in another order (~1e-6 relative in fp32), so greedy tokens
agree with eager decoding but for near-ties, as between MKL and oneDNN.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from collections.abc import Callable

import torch

from lmforge.errors import LmforgeError
from lmforge.model.attention import KVCache
from lmforge.model.gpt import GPT

# inductor: keep a pointwise result in its own buffer rather than recompute it inside a reduction
# that reads it (a product re-read its layer norm per output row); every one of a step's tensors is small
OPTIONS = {"realize_acc_reads_threshold": 1, "realize_opcount_threshold": 1}


class LayerCache(KVCache):
    """A KVCache with one (B, n_kv, max_len, hs) tensor per layer for keys and for values, written
    with index_copy_, which a compiled step does in place. `k` and `v` hold the per-layer lists."""

    def __init__(
        self, n_layer: int, shape: tuple[int, int, int, int], dtype: torch.dtype, device: torch.device
    ) -> None:
        """shape (B, n_kv, max_len, hs): each layer's keys, and its values."""
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]  # type: ignore[assignment]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]  # type: ignore[assignment]
        self.length = 0
        self.max_len = shape[2]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.size(-2)
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {end} requested")
        at = torch.arange(self.length, end, device=k.device)
        self.k[layer].index_copy_(2, at, k)
        self.v[layer].index_copy_(2, at, v)
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


def layer_cache(model: GPT, batch: int, max_len: int | None = None) -> LayerCache:
    """A LayerCache shaped like model.new_cache(batch, max_len)."""
    c = model.config
    shape = (batch, c.n_kv_head or c.n_head, max_len or c.block_size, c.n_embd // c.n_head)
    return LayerCache(c.n_layer, shape, model.wte.weight.dtype, model.wte.weight.device)


def next_logits(model: GPT, token: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """token (1, 1) after the cached sequence -> its logits (1, vocab); the cache advances by one."""
    return model(token, cache, True)[:, -1]


@functools.cache
def compiled_step() -> Callable[[GPT, torch.Tensor, LayerCache], torch.Tensor]:
    """The compiled decoding step, made once per process (dynamo keeps a graph per model shape)."""
    return torch.compile(next_logits, fullgraph=True, dynamic=True, options=OPTIONS)


def check_compilable(model: GPT, batch: int, mask: torch.Tensor | None, use_cache: bool) -> None:
    """A one-line error where a compiled step does not apply."""
    device = model.wte.weight.device
    if not use_cache:
        raise LmforgeError("compiled decoding needs the KV cache: drop --no-cache (use_cache=False)")
    if device.type != "cpu":
        raise LmforgeError(f"compiled decoding runs on the CPU only (measured there), not on {device}")
    if batch != 1 or mask is not None:
        raise LmforgeError(f"compiled decoding takes one sequence at a time; got a batch of {batch}")
    cxx = cpp_compiler()
    if shutil.which(cxx) is None:  # inductor writes C++ for the CPU and builds it with this compiler
        raise LmforgeError(
            f"compiled decoding needs a C++ compiler: {cxx} was not found (install it, or set CXX)"
        )


def cpp_compiler() -> str:
    """The compiler inductor builds CPU code with: $CXX, else its default (g++; clang++ on macOS)."""
    return os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++")
