"""Decoding speed: the ONNX export in ONNX Runtime vs the PyTorch model, side by side, at batch 1 and 8.

    python -m benchmarks.bench_onnx [--shapes 6x384 gpt2 smollm2] [--batches 1 8] [--new-tokens 64]
        [--prompt-tokens 32] [--rounds 3]

Shapes: 6x384 (the Shakespeare model), gpt2 (GPT-2 small: 12 x 768, vocab 50257) and smollm2
(SmolLM2-135M's Llama shape: 30 x 576, 9 query / 3 key-value heads, RoPE, SwiGLU, vocab 49152).
Random weights, fp32 on both sides. Each shape is written as a model directory, exported with
`export_onnx` (which checks the graph against PyTorch within 1e-4), and decoded greedily for
exactly N new tokens from the same prompts by `generate_ids` (PyTorch, KV cache) and by
`generate_ids_onnx` (ONNX Runtime, past keys/values fed back each step). At each batch the
prompts' last-position logits of both sides are compared too (at most 1e-4 apart, or the script
stops). Rounds alternate the two (benchmarks/common.py `interleaved`); the medians are printed as
new tokens per second and ORT's ratio to PyTorch, with whether the tokens were identical, and at
the end one table of every shape and batch side by side.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import hardware_line, interleaved, timed
from lmforge.config import ModelConfig
from lmforge.formats.directory import write_model_dir
from lmforge.formats.onnx_export import export_onnx
from lmforge.inference.generate import generate_ids
from lmforge.inference.onnx_runner import OnnxModel, generate_ids_onnx
from lmforge.model.gpt import GPT
from lmforge.tokenization.tokenizer import Tokenizer

SHAPES = {
    "6x384": (
        "shakespeare 6x384, context 256 (vocab 65)",
        ModelConfig(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=65),
    ),
    "gpt2": (
        "gpt2-small 12x768 (vocab 50257)",
        ModelConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257),
    ),
    "smollm2": (
        "SmolLM2-135M shape 30x576, GQA 9/3, RoPE, SwiGLU (vocab 49152)",
        ModelConfig(
            n_layer=30,
            n_head=9,
            n_kv_head=3,
            n_embd=576,
            block_size=2048,
            vocab_size=49152,
            pos="rope",
            norm="rmsnorm",
            mlp="swiglu",
            mlp_hidden=1536,
            bias=False,
        ),
    ),  # fmt: skip
}


TOLERANCE = 1e-4  # largest |ORT - PyTorch| logit accepted, fp32 (formats/onnx_export.py's)


def bench_shape(label: str, cfg: ModelConfig, args: argparse.Namespace, root: Path) -> list[dict]:
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    tokenizer = Tokenizer.train_char(["abcdefghijklmnopqrstuvwxyz"])
    write_model_dir(root / "model", cfg, model.state_dict(), tokenizer)
    seconds = timed(lambda: export_onnx(root / "model", root / "onnx"))
    onnx = OnnxModel(root / "onnx")
    diff = onnx.meta["graphs"]["model"]["max_abs_diff"]
    print(f"\n{label}: exported in {seconds:.0f} s, max |ORT - PyTorch| logit {diff:.1e}")
    rows = []
    for batch in args.batches:
        prompts = torch.randint(0, cfg.vocab_size, (batch, args.prompt_tokens)).tolist()
        row = {"shape": label, "batch": batch, "logit_diff": logit_diff(model, onnx, prompts)}
        rows.append(row | bench_batch(model, onnx, prompts, args.new_tokens, args.rounds))
    return rows


def logit_diff(model: GPT, onnx: OnnxModel, prompts: list[list[int]]) -> float:
    """Largest |ORT - PyTorch| over the prompts' last-position logits; stops the script past 1e-4."""
    ids = np.array(prompts, dtype=np.int64)
    theirs, _ = onnx.decoder_step(ids, np.ones_like(ids), onnx.empty_past(len(prompts)))
    with torch.no_grad():
        ours = model(torch.from_numpy(ids))[:, -1].float().numpy()
    diff = float(np.abs(theirs - ours).max())
    if not diff <= TOLERANCE:
        raise SystemExit(f"batch {len(prompts)}: ORT and PyTorch logits {diff:.1e} apart (> {TOLERANCE:g})")
    return diff


def bench_batch(model: GPT, onnx: OnnxModel, prompts: list[list[int]], n: int, rounds: int) -> dict:
    """Print and return both sides' median new tokens/s for greedy decoding of these prompts."""
    outputs: dict[str, list[list[int]]] = {}
    sides = {
        "PyTorch": lambda: generate_ids(model, prompts, n, temperature=0),
        "ONNX Runtime": lambda: generate_ids_onnx(onnx, prompts, n, temperature=0, stop_at_eos=False),
    }

    def rate(name: str) -> float:
        return len(prompts) * n / timed(lambda: outputs.update({name: sides[name]()}))

    for name in sides:  # warm up
        rate(name)
    rates = interleaved({name: lambda name=name: rate(name) for name in sides}, rounds)
    torch_rate, ort_rate = rates["PyTorch"], rates["ONNX Runtime"]
    same = outputs["PyTorch"] == outputs["ONNX Runtime"]
    print(
        f"  batch {len(prompts)}: PyTorch {torch_rate:.1f} tok/s | ONNX Runtime {ort_rate:.1f} tok/s"
        f" | ORT / PyTorch {ort_rate / torch_rate:.2f}x | tokens identical: {same}"
    )
    return {"torch": torch_rate, "ort": ort_rate, "identical": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["6x384"], choices=sorted(SHAPES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import onnxruntime

    print(hardware_line(), f"| onnxruntime {onnxruntime.__version__}")
    print(
        f"greedy, {args.prompt_tokens}-token prompts, {args.new_tokens} new tokens, median of {args.rounds}"
    )
    rows = []
    for name in args.shapes:
        with tempfile.TemporaryDirectory() as tmp:
            rows += bench_shape(*SHAPES[name], args, Path(tmp))
    print("\n| shape | batch | PyTorch | ONNX Runtime | ORT / PyTorch | max logit diff | tokens identical |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['shape']} | {r['batch']} | {r['torch']:.1f} tok/s | {r['ort']:.1f} tok/s"
            f" | {r['ort'] / r['torch']:.2f}x | {r['logit_diff']:.1e} | {'yes' if r['identical'] else 'NO'} |"
        )


if __name__ == "__main__":
    main()
