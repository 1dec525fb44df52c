"""Generation speed at batch 1: lmforge with its KV cache vs without, and vs HF `generate`.

    python benchmarks/bench_generate.py [--new-tokens 256] [--rounds 3]

Random weights; greedy decoding of exactly N new tokens; both sides in fp32, and both in bf16
where the CPU has bf16 units (lmforge's default there: `lmforge generate --dtype auto`).
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import hardware_line, hf_gpt2, interleaved, timed
from lmforge.config import ModelConfig
from lmforge.hardware import cpu_has_bf16
from lmforge.inference.generate import generate_ids
from lmforge.model.gpt import GPT

SHAPES = {
    "shakespeare 6x384 (vocab 65)": ModelConfig(
        n_layer=6, n_head=6, n_embd=384, block_size=1024, vocab_size=65
    ),
    "gpt2-small 12x768 (vocab 50257)": ModelConfig(
        n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257
    ),
}


@torch.inference_mode()
def bench_shape(label: str, cfg: ModelConfig, n: int, prompt_tokens: int, rounds: int) -> None:
    torch.manual_seed(0)
    ours = GPT(cfg).eval()
    theirs = hf_gpt2(cfg).eval()
    prompt = torch.randint(0, cfg.vocab_size, (1, prompt_tokens))
    ids = prompt[0].tolist()

    def run_ours(model: GPT = ours, cache: bool = True) -> float:
        return n / timed(lambda: generate_ids(model, [ids], n, temperature=0, use_cache=cache))

    def run_hf(hf: torch.nn.Module = theirs) -> float:
        kwargs = {"max_new_tokens": n, "min_new_tokens": n, "do_sample": False, "use_cache": True}
        return n / timed(lambda: hf.generate(prompt, pad_token_id=0, **kwargs))

    runs = {
        "lmforge cache fp32": run_ours,
        "lmforge no-cache fp32": lambda: run_ours(cache=False),
        "HF generate cache fp32": run_hf,
    }
    if cpu_has_bf16():
        ours_bf16 = GPT(cfg).eval().to(torch.bfloat16)
        theirs_bf16 = hf_gpt2(cfg).eval().to(torch.bfloat16)
        runs["lmforge cache bf16"] = lambda: run_ours(ours_bf16)
        runs["HF generate cache bf16"] = lambda: run_hf(theirs_bf16)
    run_ours(), run_hf()  # warm up
    rates = interleaved(runs, rounds)
    print(f"\n{label}")
    for name, rate in rates.items():
        print(f"  {name:<24} {rate:8.1f} tok/s")
    cache, base = rates["lmforge cache fp32"], rates["HF generate cache fp32"]
    print(f"  cache vs no-cache (fp32):   {cache / rates['lmforge no-cache fp32']:.2f}x")
    print(f"  cache vs HF (fp32 both):    {cache / base:.2f}x")
    if "lmforge cache bf16" in rates:
        bf16 = rates["lmforge cache bf16"]
        print(f"  cache bf16 vs HF fp32:      {bf16 / base:.2f}x   (lmforge's default vs HF's default)")
        print(f"  cache bf16 vs HF bf16:      {bf16 / rates['HF generate cache bf16']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(
        f"generation, batch 1, prompt {args.prompt_tokens} tokens, {args.new_tokens} new tokens, greedy"
        f" | {hardware_line()}"
    )
    for label, cfg in SHAPES.items():
        bench_shape(label, cfg, args.new_tokens, args.prompt_tokens, args.rounds)


if __name__ == "__main__":
    main()
