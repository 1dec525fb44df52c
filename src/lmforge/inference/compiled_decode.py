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

The first step on a machine compiles (15-70 s on 2 cores) and keeps the compiled step in lmforge's
cache (inference/compiled_store.py); a later process loads it in a few seconds, so this pays back on
long outputs and long chats: `--compile` asks for it, and `auto` switches to it where it pays
back (inference/compile_choice.py). A step whose inputs the graph was not compiled for (its
guards) runs eagerly, never recompiles in the middle of a reply. The step computes the same sums
in another order (~1e-6 relative in fp32), so greedy tokens agree with eager decoding but for
near-ties, as between MKL and oneDNN; in bf16, whose logits round coarsely, near-ties are common.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from lmforge.errors import LmforgeError
from lmforge.inference import compiled_store
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
        # one position to spare: a compiled step that filled the cache exactly would fail guards
        # traced with room left (the last step of every reply recompiled)
        room = (*shape[:2], shape[2] + 1, shape[3])
        self.k = [torch.zeros(room, dtype=dtype, device=device) for _ in range(n_layer)]  # type: ignore[assignment]
        self.v = [torch.zeros(room, dtype=dtype, device=device) for _ in range(n_layer)]  # type: ignore[assignment]
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
    shape = (batch, c.n_kv_head or c.n_head, max_len or c.block_size, c.head_size())
    return LayerCache(c.n_layer, shape, model.wte.weight.dtype, model.wte.weight.device)


def recast(model: GPT, cache: KVCache, max_len: int, per_layer: bool) -> KVCache:
    """What cache holds (either kind), copied into a fresh cache of max_len positions: a LayerCache
    (per_layer: the compiled step's) or the model's own 5-D one (eager decoding's, and a batch's)."""
    batch = cache.k[0].size(0)  # a layer's keys (B, n_kv, max_len, hs) in either kind
    out = layer_cache(model, batch, max_len) if per_layer else model.new_cache(batch, max_len)
    n = cache.length
    for layer in range(model.config.n_layer):
        out.k[layer][:, :, :n] = cache.k[layer][:, :, :n]
        out.v[layer][:, :, :n] = cache.v[layer][:, :, :n]
    out.length = n
    return out


def next_logits(model: GPT, token: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """token (1, 1) after the cached sequence -> its logits (1, vocab); the cache advances by one."""
    return model(token, cache, True)[:, -1]


class CompiledStep:
    """next_logits compiled for one model shape (loaded from the store, or compiled and kept there).

    Each call checks the graph's guards, what it was compiled for (the model's modules, shapes and
    dtypes, the cache's layout, the range of cache lengths), and runs a step that fails them
    eagerly: the same logits, never a recompile in the middle of a reply. `eager_steps` counts those.
    """

    def __init__(self, compiled: Any, loaded: bool) -> None:
        self.compiled = compiled
        compiled.disable_guard_check()  # checked in __call__, where a miss runs eagerly, not raises
        self.loaded = loaded  # from the store, rather than compiled by this process
        self.eager_steps = 0

    def __call__(self, model: GPT, token: torch.Tensor, cache: KVCache) -> torch.Tensor:
        if self.compiled.guard_check(model, token, cache):
            return self.compiled(model, token, cache)
        self.eager_steps += 1
        return next_logits(model, token, cache)

    def fits(self, model: GPT) -> bool:
        """Whether the graph's guards take model with the example cache it is compiled on."""
        return bool(self.compiled.guard_check(model, *_example(model)))


_steps: dict[Path, CompiledStep] = {}  # this process's steps, by their file in the store


@torch.inference_mode()
def compiled_step(model: GPT) -> CompiledStep:
    """model's compiled decoding step: this process's, else the store's (a few seconds), else
    compiled now (15-70 s on 2 cores) and kept in the store for the next process."""
    path = compiled_store.step_path(model)
    if path in _steps:
        return _steps[path]
    kept = compiled_store.load(path)
    step = CompiledStep(kept, loaded=True) if kept is not None else None
    if step is None or not step.fits(model):
        step = CompiledStep(_compile(model), loaded=False)
        compiled_store.save(path, step.compiled)
    _steps[path] = step
    return step


def holds(model: GPT) -> bool:
    """Whether this process has model's compiled step at hand (no wait for it)."""
    return compiled_store.step_path(model) in _steps


def _example(model: GPT) -> tuple[torch.Tensor, LayerCache]:
    """A token and a cache to trace a step on, sized so that no dimension is specialised: the cache
    length (and length + 1), the room (and room + 1, the spare) equal none of the model's sizes
    and are not 0 or 1. One equal to a size was fixed to it: GPT-2 small's 12 heads fixed a cache
    of 11 + 1 positions, and every other cache's steps failed the guards."""
    sizes = {n for p in model.parameters() for n in p.shape} | {0, 1, 2}
    sizes |= {model.config.n_head, model.config.n_kv_head}

    def free(start: int) -> int:
        return next(n for n in itertools.count(start) if n not in sizes and n + 1 not in sizes)

    length = free(5)
    cache = layer_cache(model, 1, free(length + 6))
    cache.length = length
    return torch.zeros(1, 1, dtype=torch.long, device=model.wte.weight.device), cache


def _compile(model: GPT) -> Any:
    """An AOTCompiledFunction of next_logits for model's shape. Floats (norm eps, scales) are
    specialised: precompiling cannot restart a trace to turn them into inputs, as torch.compile does."""
    fn = torch.compile(next_logits, fullgraph=True, dynamic=True)
    with torch._dynamo.config.patch(specialize_float=True), torch._inductor.config.patch(OPTIONS):
        return fn.aot_compile(((model, *_example(model)), {}))


def check_compilable(model: GPT, batch: int, mask: torch.Tensor | None, use_cache: bool) -> None:
    """A one-line error where a compiled step does not apply."""
    device = model.wte.weight.device
    if not use_cache:
        raise LmforgeError("compiled decoding needs the KV cache: drop --no-cache (use_cache=False)")
    if device.type != "cpu":
        raise LmforgeError(f"compiled decoding runs on the CPU only (measured there), not on {device}")
    if batch != 1 or mask is not None:
        raise LmforgeError(f"compiled decoding takes one sequence at a time; got a batch of {batch}")
    if model.config.rope_type == "longrope":  # its table switches with the cache's length
        raise LmforgeError(
            "compiled decoding does not cover model.rope_type='longrope' (Phi-3-128k's, Phi-3.5's,"
            " Phi-4-mini's): decode without --compile (compile=False)"
        )
    if model.config.rope_type == "dynamic":  # its base grows with the cache's length
        raise LmforgeError(
            "compiled decoding does not cover model.rope_type='dynamic' (dynamic NTK): decode without"
            " --compile (compile=False)"
        )
    cxx = cpp_compiler()
    if shutil.which(cxx) is None:  # inductor writes C++ for the CPU and builds it with this compiler
        raise LmforgeError(
            f"compiled decoding needs a C++ compiler: {cxx} was not found (install it, or set CXX)"
        )


def cpp_compiler() -> str:
    """The compiler inductor builds CPU code with: $CXX, else its default (g++; clang++ on macOS)."""
    return os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++")
