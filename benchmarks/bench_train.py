"""Training speed: lmforge's GPT vs HF transformers' GPT2LMHeadModel, same shape, batch, dtype.

    python benchmarks/bench_train.py [--steps 8] [--rounds 3]

A plain loop on both sides: forward, cross-entropy, backward, clip, AdamW step. lmforge runs
its real training step (the loop's forward_backward + the local engine); "default" is what
`lmforge train` picks with train.dtype=auto. MFU is against this CPU's measured matmul peak.
"""

from __future__ import annotations

import argparse
import contextlib

import torch
import torch.nn.functional as F

from benchmarks.common import hardware_line, hf_gpt2, interleaved, timed
from lmforge.config import EngineConfig, ModelConfig, TrainConfig
from lmforge.hardware import matmul_peak_flops, resolve_dtype
from lmforge.model.gpt import GPT
from lmforge.train.engines.base import Plan
from lmforge.train.engines.local import LocalEngine
from lmforge.train.loop import forward_backward
from lmforge.train.optim import build_optimizer, build_scheduler

SHAPES = {
    "shakespeare 6x384, context 256, batch 8": (
        ModelConfig(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=65),
        8,
    ),
    "tiny 4x128, context 64, batch 12": (
        ModelConfig(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=65),
        12,
    ),
}


def autocast(dtype: torch.dtype) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()


def lmforge_runner(cfg: ModelConfig, batch: int, dtype: torch.dtype, steps: int):
    torch.manual_seed(0)
    train_cfg = TrainConfig(warmup_steps=0)
    model = GPT(cfg)
    engine = LocalEngine(EngineConfig(), train_cfg)
    plan = Plan(dtype, batch, batch, 1)
    module, _ = engine.prepare(
        model, lambda m: build_optimizer(m, train_cfg), lambda o: build_scheduler(o, train_cfg), plan
    )
    data = [(torch.randint(0, cfg.vocab_size, (batch, cfg.block_size)),) * 2 for _ in range(steps)]

    def run() -> float:
        def loop() -> None:
            for x, y in data:
                forward_backward(module, engine, [(x, y)], lambda: autocast(dtype))
                engine.step()

        return steps * batch * cfg.block_size / timed(loop)

    return run


def hf_runner(cfg: ModelConfig, batch: int, dtype: torch.dtype, steps: int):
    torch.manual_seed(0)
    model = hf_gpt2(cfg).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    data = [(torch.randint(0, cfg.vocab_size, (batch, cfg.block_size)),) * 2 for _ in range(steps)]

    def run() -> float:
        def loop() -> None:
            for x, y in data:
                with autocast(dtype):
                    logits = model(input_ids=x).logits
                    loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

        return steps * batch * cfg.block_size / timed(loop)

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bf16, fp32 = torch.bfloat16, torch.float32
    print(f"training tokens/s (forward+backward+AdamW) | {hardware_line()}")
    print(
        f"measured matmul peak: fp32 {matmul_peak_flops(fp32) / 1e9:.0f} GFLOP/s,"
        f" bf16 {matmul_peak_flops(bf16) / 1e9:.0f} GFLOP/s"
    )
    for label, (cfg, batch) in SHAPES.items():
        default_dtype, reason = resolve_dtype("auto", cfg, batch * cfg.block_size)
        runs = {
            "HF fp32": hf_runner(cfg, batch, fp32, args.steps),
            "HF bf16 autocast": hf_runner(cfg, batch, bf16, args.steps),
            "lmforge fp32": lmforge_runner(cfg, batch, fp32, args.steps),
            "lmforge bf16 autocast": lmforge_runner(cfg, batch, bf16, args.steps),
        }
        for run in runs.values():
            run()  # warm up
        rates = interleaved(runs, args.rounds)
        default = rates["lmforge bf16 autocast" if default_dtype == bf16 else "lmforge fp32"]
        flops = GPT(cfg).flops_per_token()
        print(f"\n{label} (lmforge default: {reason})")
        for name, rate in rates.items():
            peak = matmul_peak_flops(bf16 if "bf16" in name else fp32)
            print(f"  {name:<24} {rate:9,.0f} tok/s   mfu {100 * flops * rate / peak:5.1f}%")
        print(f"  lmforge default vs HF fp32:           {default / rates['HF fp32']:.2f}x")
        print(f"  lmforge default vs HF bf16 autocast:  {default / rates['HF bf16 autocast']:.2f}x")
        print(f"  lmforge fp32 vs HF fp32:              {rates['lmforge fp32'] / rates['HF fp32']:.2f}x")
        print(
            f"  lmforge bf16 vs HF bf16 (both autocast): "
            f"{rates['lmforge bf16 autocast'] / rates['HF bf16 autocast']:.2f}x"
        )


if __name__ == "__main__":
    main()
