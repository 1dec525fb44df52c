"""Batched greedy decoding of prompts of different lengths: lmforge against transformers' `generate`.

    python -m benchmarks.bench_batched_decode [--batches 8 32] [--new-tokens 64] [--rounds 3]
        [--shapes 6x384 gpt2 smollm2]

Each batch holds prompts of as many different lengths as it has rows (spread evenly between
--min-len and --max-len, in a shuffled order), decoded as ONE batch: both sides pad on the left
with an attention mask (lmforge's `generate_ids` does so itself, after prefilling the prompts in
groups of similar length; transformers gets the padded ids and the mask), not as groups of equal
length. fp32 on both sides, the same weights: the random
6x384 and GPT-2-small shapes are built by lmforge and copied into transformers'
`GPT2LMHeadModel` (`formats/hf_convert.lmforge_to_hf`); SmolLM2-135M-Instruct is its GGUF (`python
-m data.smollm2`) loaded by both, as benchmarks/bench_smollm2.py does. Greedy, exactly N new
tokens per row (no EOS on either side). tokens/s = rows x N / the whole call (prefill included);
median of --rounds rounds, the two sides interleaved.

Before timing, every row's tokens are checked against what that prompt gives decoded alone
(batch 1), on each side, and the two sides against each other: a speed ratio of different work
would mean nothing. A row that differs is reported with the step where it first does.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.common import hardware_line, hf_gpt2, interleaved, timed
from lmforge.config import ModelConfig
from lmforge.formats.hf import GPT2
from lmforge.formats.hf_convert import lmforge_to_hf
from lmforge.inference.generate import generate_ids
from lmforge.model import kernels
from lmforge.model.gpt import GPT


def gpt2_shape(n_layer: int, n_embd: int, vocab_size: int) -> ModelConfig:
    """A GPT-2 shape with GPT-2's tanh GELU, as transformers' GPT2 (common.hf_gpt2) computes it."""
    heads = n_embd // 64
    return ModelConfig(n_layer=n_layer, n_head=heads, n_embd=n_embd, block_size=1024, vocab_size=vocab_size,
                       mlp="gelu_tanh")  # fmt: skip


SHAPES = {"6x384": gpt2_shape(6, 384, 65), "gpt2": gpt2_shape(12, 768, 50257)}
LABELS = {
    "6x384": "shakespeare 6x384 (vocab 65), random weights",
    "gpt2": "gpt2-small 12x768 (vocab 50257), random weights",
    "smollm2": "SmolLM2-135M-Instruct (GGUF, fp32)",
}


def lengths(batch: int, lo: int, hi: int) -> list[int]:
    """`batch` different lengths from lo to hi, in a fixed shuffled order (not sorted: a batch
    from a server is not)."""
    out = sorted({lo + (hi - lo) * i // max(batch - 1, 1) for i in range(batch)})
    if len(out) < batch:
        raise SystemExit(f"--min-len/--max-len give {len(out)} different lengths, fewer than {batch}")
    random.Random(batch).shuffle(out)
    return out


def random_pair(cfg: ModelConfig) -> tuple[GPT, torch.nn.Module, int]:
    """(lmforge GPT, transformers GPT2 with the same weights, pad id), fp32, eval."""
    torch.manual_seed(0)
    ours = kernels.for_inference(GPT(cfg).eval())  # as lmforge's entry points mark their models
    theirs = hf_gpt2(cfg).eval()
    missing, unexpected = theirs.load_state_dict(lmforge_to_hf(GPT2, cfg, ours.state_dict()), strict=False)
    buffers = ("attn.bias", "attn.masked_bias", "lm_head.weight")  # HF's mask buffers, the tied head
    if unexpected or any(not k.endswith(buffers) for k in missing):
        raise RuntimeError(f"weights did not map: missing {missing}, unexpected {unexpected}")
    theirs.tie_weights()
    return ours, theirs, 0


def smollm2_pair() -> tuple[GPT, torch.nn.Module, int, Any]:
    """(lmforge model, transformers model, pad id, tokenizer) from the SmolLM2 GGUF."""
    from benchmarks.bench_smollm2 import load_models
    from data.smollm2 import smollm2_gguf

    hf, tokenizer, ours, _ = load_models(smollm2_gguf())
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return ours, hf, pad, tokenizer


def make_prompts(sizes: list[int], vocab: int, tokenizer: Any) -> list[list[int]]:
    """Random ids (never the pad id 0) or, with a tokenizer, slices of Pride and Prejudice."""
    if tokenizer is None:
        g = torch.Generator().manual_seed(len(sizes))
        return [torch.randint(1, vocab, (n,), generator=g).tolist() for n in sizes]
    from benchmarks.bench_smollm2 import prompts

    passages = prompts(tokenizer, 400)[2]  # 8 passages of 400 tokens; row i starts 64 * (i // 8) in
    return [passages[i % 8][64 * (i // 8) :][:n] for i, n in enumerate(sizes)]


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first step where two greedy continuations differ, or None when they are equal."""
    if a == b:
        return None
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def report(what: str, rows: list[list[int]], others: list[list[int]]) -> None:
    diffs = [(i, first_difference(a, b)) for i, (a, b) in enumerate(zip(rows, others, strict=True))]
    bad = [(i, d) for i, d in diffs if d is not None]
    where = "" if not bad else " (row: first differing step " + ", ".join(f"{i}: {d}" for i, d in bad) + ")"
    print(f"  {what}: {len(rows) - len(bad)} of {len(rows)} rows equal{where}")


@torch.inference_mode()
def bench(shape: str, args: argparse.Namespace) -> None:
    tokenizer = None
    if shape == "smollm2":
        ours, theirs, pad, tokenizer = smollm2_pair()
    else:
        ours, theirs, pad = random_pair(SHAPES[shape])
    n = args.new_tokens
    from transformers import GenerationConfig

    # exactly n tokens, no EOS: min_new_tokens would mask the EOS logit on HF's side only
    gen = GenerationConfig(max_new_tokens=n, do_sample=False, pad_token_id=pad, eos_token_id=None)
    theirs.generation_config.eos_token_id = None  # or generate() falls back to the model's

    def run_ours(batch: list[list[int]]) -> list[list[int]]:
        return generate_ids(ours, batch, n, temperature=0, eos_id=None)

    def run_hf(batch: list[list[int]]) -> list[list[int]]:
        width = max(map(len, batch))  # left padding with a mask, as decoder-only generation needs
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        out = theirs.generate(ids, attention_mask=mask, generation_config=gen)
        return out[:, width:].tolist()

    print(f"\n{LABELS[shape]}, {n} new tokens per row, greedy, fp32")
    runs: dict[str, Callable[[], float]] = {}
    for b in args.batches:
        sizes = lengths(b, args.min_len, args.max_len)
        batch = make_prompts(sizes, ours.config.vocab_size, tokenizer)
        print(f" batch {b}, prompt lengths {min(sizes)}-{max(sizes)}, all different, left-padded")
        ours_rows, hf_rows = run_ours(batch), run_hf(batch)
        report("lmforge batch rows vs each prompt alone", ours_rows, [run_ours([p])[0] for p in batch])
        report("transformers batch rows vs each prompt alone", hf_rows, [run_hf([p])[0] for p in batch])
        report("lmforge vs transformers, batch rows", ours_rows, hf_rows)
        runs[f"b{b} lmforge"] = lambda batch=batch: len(batch) * n / timed(lambda: run_ours(batch))
        runs[f"b{b} transformers"] = lambda batch=batch: len(batch) * n / timed(lambda: run_hf(batch))
    for run in runs.values():
        run()  # warm up
    rates = interleaved(runs, args.rounds)
    print(f" median of {args.rounds} interleaved rounds:")
    for b in args.batches:
        mine, peer = rates[f"b{b} lmforge"], rates[f"b{b} transformers"]
        print(f"  batch {b:>2}: lmforge {mine:8.1f} tok/s, transformers {peer:8.1f}, {mine / peer:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--min-len", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shapes", nargs="+", choices=list(LABELS), default=["6x384", "gpt2"])
    args = parser.parse_args()
    print(f"batched decoding, prompts of different lengths in one batch | {hardware_line()}")
    print(kernels.describe())
    for shape in args.shapes:
        bench(shape, args)


if __name__ == "__main__":
    main()
