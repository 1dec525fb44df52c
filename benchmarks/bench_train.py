"""Training speed: lmforge's GPT vs nanoGPT's model.py and HF transformers' GPT2LMHeadModel, same
shape, batch and dtype.

    python -m benchmarks.bench_train [--steps 8] [--rounds 3] [--shapes 6x384 4x128 gpt2] [--compile]
                                     [--dtypes fp32 bf16]

A plain loop on every side: forward, cross-entropy, backward, clip, AdamW step. lmforge runs
its real training step (the loop's forward_backward + the local engine); nanoGPT its own model
and `configure_optimizers` (benchmarks/nanogpt.py). lmforge's rows use the attention route and
AdamW that `lmforge train`'s start-up probe (train/autotune.py) chooses for the shape, and
"default" is the dtype it chooses with train.dtype=auto. bf16 autocast rows run only on CPUs with
bf16 units (elsewhere it is emulated and crawls). MFU is against this CPU's matmul peak (the best
it has shown, tuning.py).
--compile adds lmforge and nanoGPT at the default dtype with the model under `torch.compile`
(inductor; the first compile on a machine takes tens of seconds, printed, and is not timed).
lmforge's compiled row runs with deterministic algorithms on, as `lmforge train` runs compiled
code (train/compiling.py); nanoGPT's as its train.py does, without.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from types import ModuleType

import torch
import torch.nn.functional as F

from benchmarks import nanogpt
from benchmarks.common import hardware_line, hf_gpt2, interleaved, timed
from lmforge.config import EngineConfig, ModelConfig, TrainConfig
from lmforge.hardware import cpu_has_bf16, resolve_dtype
from lmforge.model.attention import set_sequence_route
from lmforge.model.gpt import GPT
from lmforge.train import autotune, compiling
from lmforge.train.engines.base import Plan
from lmforge.train.engines.local import LocalEngine
from lmforge.train.loop import forward_backward
from lmforge.train.losses import lm_loss
from lmforge.train.optim import build_optimizer, build_scheduler
from lmforge.tuning import matmul_peak

SHAPES = {  # key: (label, shape, batch)
    "6x384": (
        "shakespeare 6x384, context 256, batch 8",
        ModelConfig(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=65),
        8,
    ),
    "4x128": (
        "tiny 4x128, context 64, batch 12",
        ModelConfig(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=65),
        12,
    ),
    "gpt2": (
        "gpt2-small 12x768, context 256, batch 2 (vocab 50257)",
        ModelConfig(n_layer=12, n_head=12, n_embd=768, block_size=256, vocab_size=50257),
        2,
    ),
}


def autocast(dtype: torch.dtype) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()


def probe(cfg: ModelConfig, batch: int, dtypes: list[str]) -> autotune.StepKernels:
    """What `lmforge train`'s start-up probe chooses for this shape (train/autotune.py)."""
    torch.manual_seed(0)
    model = GPT(cfg)
    x = torch.randint(0, cfg.vocab_size, (batch, cfg.block_size))
    prior = "bf16" if resolve_dtype("auto", cfg, batch * cfg.block_size)[0] == torch.bfloat16 else "fp32"
    return autotune.measure(
        model, (x, x), lm_loss, dtypes, prior, LocalEngine(EngineConfig(), TrainConfig())
    )[0]


def lmforge_runner(
    cfg: ModelConfig,
    batch: int,
    dtype: torch.dtype,
    steps: int,
    kernels: autotune.StepKernels,
    compiled: bool = False,
):
    torch.manual_seed(0)
    train_cfg = TrainConfig(warmup_steps=0)
    model = torch.compile(GPT(cfg)) if compiled else GPT(cfg)
    engine = LocalEngine(EngineConfig(), train_cfg)
    plan = Plan(dtype, batch, batch, 1)
    fused = kernels.adamw == "fused"
    module, _ = engine.prepare(
        model, lambda m: build_optimizer(m, train_cfg, fused), lambda o: build_scheduler(o, train_cfg), plan
    )
    data = [(torch.randint(0, cfg.vocab_size, (batch, cfg.block_size)),) * 2 for _ in range(steps)]

    def run() -> float:
        set_sequence_route(kernels.attention)

        def loop() -> None:
            for x, y in data:
                forward_backward(module, engine, [(x, y)], lambda: autocast(dtype))
                engine.step()

        with compiling.kept_settings():
            if compiled:  # as lmforge train runs compiled code; compiled (and guarded) this way too
                compiling.use_deterministic()
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


def nanogpt_runner(
    module: ModuleType, cfg: ModelConfig, batch: int, dtype: torch.dtype, steps: int, compiled: bool = False
):
    torch.manual_seed(0)
    model = nanogpt.nanogpt_model(module, cfg).train()
    optimizer = nanogpt.nanogpt_optimizer(model)
    if compiled:  # as nanoGPT's train.py does with compile=True, after building the optimizer
        model = torch.compile(model)
    data = [(torch.randint(0, cfg.vocab_size, (batch, cfg.block_size)),) * 2 for _ in range(steps)]

    def run() -> float:
        def loop() -> None:
            for x, y in data:  # nanoGPT's train.py: loss from the model, clip 1.0, step
                with autocast(dtype):
                    _, loss = model(x, y)
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
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--compile", action="store_true", help="add torch.compile rows at the default dtype")
    parser.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"],
                        help="the rows' dtypes (bf16 only on a CPU with bf16 units)")  # fmt: skip
    args = parser.parse_args()
    bf16, fp32 = torch.bfloat16, torch.float32
    has_bf16 = cpu_has_bf16()
    dtypes = {"fp32": fp32, "bf16 autocast": bf16} if has_bf16 else {"fp32": fp32}
    dtypes = {name: d for name, d in dtypes.items() if name.split()[0] in args.dtypes}
    if not dtypes:
        parser.error("--dtypes bf16 needs a CPU with bf16 units")
    short = {fp32: "fp32", bf16: "bf16"}
    print(f"training tokens/s (forward+backward+AdamW) | {hardware_line()}")
    print(
        f"matmul peak (the best this machine has shown): fp32 {matmul_peak(fp32) / 1e9:.0f} GFLOP/s"
        + (f", bf16 {matmul_peak(bf16) / 1e9:.0f} GFLOP/s" if has_bf16 else "")
        + ("" if has_bf16 else " (no bf16 units: bf16 rows left out)")
    )
    peer = nanogpt.load()
    for key in args.shapes:
        label, cfg, batch = SHAPES[key]
        kernels = probe(cfg, batch, ["fp32", "bf16"] if has_bf16 else ["fp32"])
        default_dtype = autotune.DTYPES[kernels.dtype]
        # a row at the other dtype runs what the probe picks when that dtype is asked for
        chosen = {d: kernels if autotune.DTYPES[kernels.dtype] == d else probe(cfg, batch, [short[d]])
                  for d in dtypes.values()}  # fmt: skip
        runs = {}
        for name, dtype in dtypes.items():
            if peer is not None:
                runs[f"nanoGPT {name}"] = nanogpt_runner(peer, cfg, batch, dtype, args.steps)
            runs[f"HF {name}"] = hf_runner(cfg, batch, dtype, args.steps)
            runs[f"lmforge {name}"] = lmforge_runner(cfg, batch, dtype, args.steps, chosen[dtype])
            if args.compile and dtype == default_dtype:
                if peer is not None:
                    runs[f"nanoGPT {name} compiled"] = nanogpt_runner(
                        peer, cfg, batch, dtype, args.steps, compiled=True
                    )
                runs[f"lmforge {name} compiled"] = lmforge_runner(
                    cfg, batch, dtype, args.steps, chosen[dtype], compiled=True
                )
        for name, run in runs.items():
            start = time.perf_counter()
            run()  # warm up (and compile)
            if name.endswith("compiled"):
                print(f"  {name}: compiled and warmed up in {time.perf_counter() - start:.1f} s", flush=True)
        rates = interleaved(runs, args.rounds)
        flops = GPT(cfg).flops_per_token()
        print(f"\n{label} (lmforge's probe: {kernels.describe()})")
        for d, k in chosen.items():
            print(f"  lmforge {short[d]} rows: {k.attention} attention, {k.adamw} AdamW")
        for name, rate in rates.items():
            peak = matmul_peak(bf16 if "bf16" in name else fp32)
            print(f"  {name:<24} {rate:9,.0f} tok/s   mfu {100 * flops * rate / peak:5.1f}%")
        default = rates.get("lmforge bf16 autocast" if default_dtype == bf16 else "lmforge fp32")
        for name in rates if default else []:  # not when --dtypes leaves the default's row out
            if not name.startswith("lmforge"):
                print(f"  lmforge default vs {name + ':':<22} {default / rates[name]:.2f}x")
        for name in dtypes:
            best = max(v for k, v in rates.items() if k.endswith(name) and not k.startswith("lmforge"))
            print(f"  lmforge {name} vs best peer {name}: {rates[f'lmforge {name}'] / best:.2f}x")
            if f"lmforge {name} compiled" in rates:
                mine = rates[f"lmforge {name} compiled"]
                print(f"  lmforge {name} compiled vs eager: {mine / rates[f'lmforge {name}']:.2f}x")
                if f"nanoGPT {name} compiled" in rates:
                    peer_rate = rates[f"nanoGPT {name} compiled"]
                    print(f"  lmforge {name} compiled vs nanoGPT compiled: {mine / peer_rate:.2f}x")


if __name__ == "__main__":
    main()
