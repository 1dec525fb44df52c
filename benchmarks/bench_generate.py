"""Generation speed at batch 1: lmforge with its KV cache vs without, vs HF `generate` and nanoGPT,
and against the memory-bandwidth bound.

    python -m benchmarks.bench_generate [--new-tokens 128] [--rounds 3] [--slow-rounds 1]
        [--shapes 6x384 gpt2] [--device cuda] [--no-compiled]

Random weights; greedy decoding of exactly N new tokens; every side in fp32, and lmforge and HF
in bf16 too where the CPU has bf16 units (lmforge's default there: `lmforge generate --dtype
auto`). nanoGPT's `generate` (benchmarks/nanogpt.py, top_k=1: greedy) has no KV cache: like
lmforge without its cache it recomputes the whole sequence each token, so both are "slow"
contenders measured over --slow-rounds. The bound is bandwidth / bytes read per token (every
weight once, plus K and V at their mean length), with the bandwidth measured here by
benchmarks/bandwidth.py's read probe (on a GPU, of its memory; every call is timed to the end of
its queued kernels). On the CPU lmforge's compiled decoding (`generate --compile`) runs too; its
warm-up compiles, and the time it took is printed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from benchmarks import nanogpt
from benchmarks.bandwidth import measure
from benchmarks.common import hardware_line, hf_gpt2, interleaved, kv_bytes, timed, weight_bytes
from lmforge.config import ModelConfig
from lmforge.hardware import cpu_has_bf16
from lmforge.inference.generate import generate_ids
from lmforge.model import kernels
from lmforge.model.gpt import GPT

SHAPES = {
    "6x384": (
        "shakespeare 6x384 (vocab 65)",
        ModelConfig(n_layer=6, n_head=6, n_embd=384, block_size=1024, vocab_size=65),
    ),
    "gpt2": (
        "gpt2-small 12x768 (vocab 50257)",
        ModelConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257),
    ),
}


@torch.inference_mode()
def bench_shape(label: str, cfg: ModelConfig, args: argparse.Namespace, bandwidth: float) -> None:
    n = args.new_tokens
    torch.manual_seed(0)
    device = torch.device(args.device)
    ours = kernels.for_inference(GPT(cfg).eval().to(device))  # as lmforge generate marks its model
    theirs = hf_gpt2(cfg).eval().to(device)
    prompt = torch.randint(0, cfg.vocab_size, (1, args.prompt_tokens)).to(device)
    ids = prompt[0].tolist()

    def run_ours(model: GPT = ours, cache: bool = True, compile: bool = False) -> float:
        return n / timed(
            lambda: generate_ids(model, [ids], n, temperature=0, use_cache=cache, compile=compile), device
        )

    def run_hf(hf: torch.nn.Module = theirs) -> float:
        kwargs = {"max_new_tokens": n, "min_new_tokens": n, "do_sample": False, "use_cache": True}
        return n / timed(lambda: hf.generate(prompt, pad_token_id=0, **kwargs), device)

    fast: dict[str, Callable[[], float]] = {
        "lmforge cache fp32": run_ours,
        "HF generate cache fp32": run_hf,
    }
    bf16_units = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_bf16()
    if bf16_units:
        ours_bf16 = kernels.for_inference(GPT(cfg).eval().to(device, torch.bfloat16))
        theirs_bf16 = hf_gpt2(cfg).eval().to(device, torch.bfloat16)
        fast["lmforge cache bf16"] = lambda: run_ours(ours_bf16)
        fast["HF generate cache bf16"] = lambda: run_hf(theirs_bf16)
    if args.compiled and device.type == "cpu":  # compiled steps (inference/compiled_decode.py)
        fast["lmforge compiled fp32"] = lambda: run_ours(compile=True)
        if bf16_units:
            fast["lmforge compiled bf16"] = lambda: run_ours(ours_bf16, compile=True)
    slow: dict[str, Callable[[], float]] = {"lmforge no-cache fp32": lambda: run_ours(cache=False)}
    peer = nanogpt.load()
    if peer is not None:
        torch.manual_seed(0)
        theirs_nano = nanogpt.nanogpt_model(peer, cfg).eval().to(device)
        slow["nanoGPT generate (no cache) fp32"] = lambda: (
            n
            / timed(
                lambda: theirs_nano.generate(prompt, n, top_k=1),  # type: ignore[operator]
                device,
            )
        )
    for name, run in fast.items():
        start = time.perf_counter()
        run()  # warm up (and compile)
        if "compiled" in name:
            print(f"  {name}: first call (compiles) {time.perf_counter() - start:.1f} s")
    rates = interleaved(fast, args.rounds)
    rates |= interleaved(slow, args.slow_rounds) if args.slow_rounds > 0 else {}
    mean_len = args.prompt_tokens + n / 2
    bound = {
        dt: bandwidth / (weight_bytes(ours) * size // 4 + kv_bytes(cfg, mean_len, size))
        for dt, size in (("fp32", 4), ("bf16", 2))
    }
    print(f"\n{label}: bound fp32 {bound['fp32']:.0f} tok/s, bf16 {bound['bf16']:.0f} tok/s")
    for name, rate in rates.items():
        print(f"  {name:<34} {rate:8.1f} tok/s  {rate / bound[name.split()[-1]]:5.0%} of bound")
    cache, base = rates["lmforge cache fp32"], rates["HF generate cache fp32"]
    print(f"  cache vs HF (fp32 both):    {cache / base:.2f}x")
    for name in slow:
        if name in rates:
            print(f"  cache vs {name}: {cache / rates[name]:.2f}x")
    for dt in ("fp32", "bf16"):
        if f"lmforge compiled {dt}" in rates:
            compiled = rates[f"lmforge compiled {dt}"]
            print(
                f"  compiled vs cache ({dt}): {compiled / rates[f'lmforge cache {dt}']:.2f}x,"
                f" vs HF {dt}: {compiled / rates[f'HF generate cache {dt}']:.2f}x"
            )
    if "lmforge cache bf16" in rates:
        bf16 = rates["lmforge cache bf16"]
        print(f"  cache bf16 vs HF fp32:      {bf16 / base:.2f}x   (lmforge's default vs HF's default)")
        print(f"  cache bf16 vs HF bf16:      {bf16 / rates['HF generate cache bf16']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slow-rounds", type=int, default=1, help="rounds of the cacheless contenders")
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: both libraries decode on the GPU")
    parser.add_argument(
        "--compiled",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add lmforge's compiled decoding (CPU; each shape compiles at its warm-up)",
    )
    args = parser.parse_args()
    print(
        f"generation, batch 1, prompt {args.prompt_tokens} tokens, {args.new_tokens} new tokens, greedy"
        f" | {hardware_line(args.device)}"
    )
    if args.device == "cpu":
        print(kernels.describe())
        if cpu_has_bf16():
            print(kernels.describe_bf16())
    bw = measure(rounds=3, device=args.device)["read"] * 1e9
    print(f"memory bandwidth (benchmarks/bandwidth.py, read, {args.device}): {bw / 1e9:.1f} GB/s")
    for key in args.shapes:
        bench_shape(*SHAPES[key], args, bw)


if __name__ == "__main__":
    main()
