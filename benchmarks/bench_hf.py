"""Forward-pass speed on imported Hugging Face models: lmforge vs transformers, same weights.

    python -m benchmarks.bench_hf [--batch 4] [--tokens 256] [--rounds 3]

Each shape is built with transformers (random weights), saved with save_pretrained, and loaded back
twice: by transformers (`from_pretrained`) and by lmforge (`lmforge.load` of the HF directory, which
converts it in memory). Both run the same batch of token ids in inference mode, interleaved; the
figure is tokens per second of a full forward pass to logits (prefill/scoring, not decoding).
A third contender is lmforge in fp32 with every product of 64 rows or more on MKL, the rule before
the fp32 route of many rows and of a vocabulary's head was chosen by measurement (model/kernels.py).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models

import lmforge
import lmforge.formats  # noqa: F401 (installs the machine's remembered kernel routes, as every command has)
from benchmarks.common import hardware_line, interleaved, timed
from lmforge.hardware import cpu_has_bf16
from lmforge.model import kernels, layers


def _many_rows_on_mkl(rows: int, out: int = 0) -> str:
    """The fp32 route rule before 2026-12-05: MKL from 64 rows, whatever the probes say."""
    return "mkl" if rows > kernels.DOZENS_ROWS_MAX else kernels.linear_route(rows, out)


def _with_mkl_from_64(run: Callable[[], float]) -> float:
    layers.linear_route = _many_rows_on_mkl
    try:
        return run()
    finally:
        layers.linear_route = kernels.linear_route


def shapes() -> dict[str, object]:
    import transformers as tf

    return {
        "GPT-2 small shape 12x768, vocab 50257": tf.GPT2Config(
            n_layer=12, n_head=12, n_embd=768, n_positions=1024
        ),
        "Llama shape 12x768, 12 heads / 4 kv, swiglu 2048, vocab 32000": tf.LlamaConfig(
            hidden_size=768,
            intermediate_size=2048,
            num_hidden_layers=12,
            num_attention_heads=12,
            num_key_value_heads=4,
            max_position_embeddings=1024,
            vocab_size=32000,
        ),
    }


@torch.inference_mode()
def bench(label: str, config: object, batch: int, tokens: int, rounds: int) -> None:
    import transformers as tf

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        tf.AutoModelForCausalLM.from_config(config).save_pretrained(tmp)
        # lmforge.load wants a tokenizer; the benchmark feeds token ids, so a one-token one does
        HFTokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")).save(str(Path(tmp) / "tokenizer.json"))
        theirs = tf.AutoModelForCausalLM.from_pretrained(tmp).eval()
        ours, _ = lmforge.load(tmp)
    ids = torch.randint(0, config.vocab_size, (batch, tokens), generator=torch.Generator().manual_seed(0))
    diff = (ours(ids) - theirs(input_ids=ids).logits).abs().max().item()
    n = batch * tokens
    runs = {
        "lmforge fp32": lambda: n / timed(lambda: ours(ids)),
        "lmforge fp32, MKL from 64 rows": lambda: _with_mkl_from_64(lambda: n / timed(lambda: ours(ids))),
        "transformers fp32": lambda: n / timed(lambda: theirs(input_ids=ids)),
    }
    if cpu_has_bf16():
        # Module.to converts in place: the bf16 contenders are copies
        ours16, theirs16 = copy.deepcopy(ours).to(torch.bfloat16), copy.deepcopy(theirs).to(torch.bfloat16)
        runs["lmforge bf16"] = lambda: n / timed(lambda: ours16(ids))
        runs["transformers bf16"] = lambda: n / timed(lambda: theirs16(input_ids=ids))
    for run in runs.values():
        run()  # warm up
    rates = interleaved(runs, rounds)
    print(f"\n{label} (max |logit diff| fp32 {diff:.1e})")
    for name, rate in rates.items():
        print(f"  {name:<30} {rate:9,.0f} tok/s")
    for dtype in ("fp32", "bf16"):
        if f"lmforge {dtype}" in rates:
            ratio = rates[f"lmforge {dtype}"] / rates[f"transformers {dtype}"]
            print(f"  lmforge / transformers ({dtype}): {ratio:.2f}x")
    ratio = rates["lmforge fp32"] / rates["lmforge fp32, MKL from 64 rows"]
    print(f"  lmforge fp32 / the same with MKL from 64 rows: {ratio:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"forward pass, batch {args.batch} x {args.tokens} tokens, inference mode | {hardware_line()}")
    print(kernels.describe())
    for label, config in shapes().items():
        bench(label, config, args.batch, args.tokens, args.rounds)


if __name__ == "__main__":
    main()
