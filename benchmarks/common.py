"""Helpers shared by the benchmarks: where they run, side-by-side timing, and the peers (the HF
twin of an lmforge GPT, nanoGPT's model.py from a cache outside the project)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lmforge.config import ModelConfig
from lmforge.hardware import cpu_model, cpu_summary


def cpu_name() -> str:
    return cpu_model()


def hardware_line(device: str = "cpu") -> str:
    """Where a benchmark ran: the CPU and its vector units, torch's threads and version (and the GPU
    when it runs on one)."""
    gpu = f" | GPU {torch.cuda.get_device_name(device)}" if device.startswith("cuda") else ""
    return f"{cpu_summary()} | {torch.get_num_threads()} threads, torch {torch.__version__}{gpu}"


def interleaved(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Median of `rounds` measurements of each callable (each returns a rate), run in turns so
    that load from elsewhere on the machine hits every contender alike."""
    results: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            results[name].append(run())
    return {name: statistics.median(values) for name, values in results.items()}


def timed(fn: Callable[[], object], device: torch.device | str = "cpu") -> float:
    """Seconds fn() takes; on a GPU, to the end of the kernels it queued."""
    start = time.perf_counter()
    fn()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the weights a decoding step reads: every parameter once (tied ones once)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def kv_bytes(cfg: ModelConfig, tokens: float, element: int) -> float:
    """Bytes of K and V read per sequence at a mean length of `tokens`."""
    head = cfg.n_embd // cfg.n_head
    return 2 * cfg.n_layer * (cfg.n_kv_head or cfg.n_head) * head * tokens * element


def hf_gpt2(cfg: ModelConfig) -> torch.nn.Module:
    """transformers' GPT2LMHeadModel with the same shape as an lmforge GPT (dropout off)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.block_size,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        activation_function="gelu_new",
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(config)


def smollm2_dir(given: Path | None = None) -> Path:
    """An lmforge folder of SmolLM2-135M-Instruct: `given` (checked first, so a wrong path is one line
    before any download), else the GGUF of `python -m data.smollm2` imported once into lmforge's
    cache (`$LMFORGE_CACHE/smollm2-import`)."""
    if given is not None:
        if not (given / "config.json").is_file():
            raise SystemExit(
                f"{given}: not an lmforge model folder (leave --model out to import SmolLM2 into the"
                f' cache, or: python -m lmforge import "$(python -m data.smollm2)" --out {given})'
            )
        return given
    from data.smollm2 import cache_dir, smollm2_gguf
    from lmforge.formats.hf_files import import_hf

    target = cache_dir() / "smollm2-import"
    if not (target / "config.json").is_file():
        print(f"# importing SmolLM2-135M-Instruct into {target} (once)", flush=True)
        import_hf(smollm2_gguf(), target)
    return target
