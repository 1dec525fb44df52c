"""Decoding speed of a Gemma 3 270M-shaped model: lmforge eager and compiled vs transformers `generate`.

    python -m benchmarks.bench_gemma3 [--rounds 3] [--new-tokens 128] [--prompt-tokens 100] [--window 512]

No Gemma 3 file can be fetched here, so transformers builds a random `Gemma3ForCausalLM` with Gemma 3
270M's shape (18 layers of hidden 640, 4 query heads and 1 key/value head of 256, GeGLU 2048 wide,
a vocabulary of 262,144, tied; every 6th layer full, the others sliding over `--window` tokens,
512 in the real model) and lmforge imports the saved folder: the same fp32 weights, whose values do
not change the speed. Greedy, batch 1, exactly N new tokens. A `--window` below the prompt plus the
new tokens makes the sliding layers slide during the timed steps. Medians over interleaved rounds,
with the memory-bandwidth bound beside each (benchmarks/bandwidth.py): every weight read once a
step (the tied 262,144 x 640 table, 168 M of the 268 M parameters, dominates), plus the KV cache.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.bandwidth import measure
from benchmarks.common import hardware_line, interleaved, timed, weight_bytes
from lmforge.inference.generate import generate_ids
from lmforge.model import kernels


def gemma3_270m(directory: Path, window: int) -> torch.nn.Module:
    """A random Gemma3ForCausalLM shaped as Gemma 3 270M, saved in directory; fp32, eval."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    layers = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(18)]
    config = Gemma3TextConfig(
        vocab_size=262_144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
        num_attention_heads=4, num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256,
        sliding_window=window, layer_types=layers, max_position_embeddings=32_768, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).eval()
    model.save_pretrained(directory)
    from tokenizers import Tokenizer, models

    words = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}  # ids are all that decoding reads
    Tokenizer(models.WordLevel(words, unk_token="<unk>")).save(str(directory / "tokenizer.json"))
    return model


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=100)
    parser.add_argument("--window", type=int, default=512, help="the sliding layers' window (270M's: 512)")
    args = parser.parse_args()
    import lmforge

    n = args.new_tokens
    with tempfile.TemporaryDirectory() as tmp:
        hf = gemma3_270m(Path(tmp), args.window)
        ours = kernels.for_inference(lmforge.load(tmp)[0].eval())
    seeded = torch.Generator().manual_seed(1)
    prompt = torch.randint(10, 262_000, (args.prompt_tokens,), generator=seeded).tolist()
    print(f"Gemma 3 270M-shaped (random), window {args.window}, greedy, batch 1, {n} new tokens after"
          f" {len(prompt)} | {hardware_line()}")  # fmt: skip
    bandwidth = measure(rounds=3)["read"]
    bound = bandwidth * 1e9 / weight_bytes(ours)  # the KV cache (1 head of 256) adds under 1%
    print(f"memory bandwidth {bandwidth:.1f} GB/s: bound {bound:.1f} tok/s in fp32")

    from transformers import GenerationConfig

    gen = GenerationConfig(
        max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=None
    )
    ids = torch.tensor([prompt])
    theirs = hf.generate(ids, generation_config=gen)[0, len(prompt) :].tolist()

    def decode(compile: bool) -> list[int]:
        return generate_ids(ours, [prompt], n, temperature=0, eos_id=None, compile=compile)[0]

    eager = decode(False)
    start = time.perf_counter()
    compiled = decode(True)
    print(f"greedy tokens equal transformers': eager {eager == theirs}, compiled {compiled == theirs}"
          f" (its first call compiled or loaded the step: {time.perf_counter() - start:.0f} s)")  # fmt: skip

    rates = interleaved(
        {
            "transformers": lambda: n / timed(lambda: hf.generate(ids, generation_config=gen)),
            "lmforge eager": lambda: n / timed(lambda: decode(False)),
            "lmforge compiled": lambda: n / timed(lambda: decode(True)),
        },
        args.rounds,
    )
    for name, rate in rates.items():
        ratio, share = rate / rates["transformers"], 100 * rate / bound
        print(f"  {name:17s} {rate:7.1f} tok/s  {ratio:5.2f}x transformers  {share:4.0f}% of the bound")


if __name__ == "__main__":
    main()
