"""LoRA against full fine-tuning of the same model, side by side: trainable parameters, gradient
and optimizer memory, and the time of one optimizer step (forward, backward, AdamW), interleaved.

    python -m benchmarks.bench_lora [--model DIR] [--batch 4] [--tokens 128] [--rounds 3]

The model is SmolLM2-135M-Instruct (`python -m data.smollm2`, imported from its GGUF as lmforge
does) unless --model names another model directory. Each contender is the same model, freshly
loaded; the step is the training loop's own (lm_loss, build_optimizer's AdamW) in fp32, on the
same random batch.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.common import hardware_line, interleaved, smollm2_dir, timed
from lmforge.config import LoraConfig, TrainConfig
from lmforge.formats.directory import load_model
from lmforge.model import lora
from lmforge.train.losses import lm_loss
from lmforge.train.optim import build_optimizer

CONTENDERS = {
    "full fine-tuning": None,
    "LoRA r=8 q_proj,v_proj": LoraConfig(enabled=True, rank=8, alpha=16, targets="q_proj,v_proj"),
    "LoRA r=16 all linear": LoraConfig(
        enabled=True, rank=16, alpha=32, targets="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    ),
}


def contender(model_dir: Path, spec: LoraConfig | None, batch: tuple[torch.Tensor, torch.Tensor]):  # noqa: ANN201
    torch.manual_seed(0)
    model, _ = load_model(model_dir)
    model.train()
    if spec is not None:
        lora.inject(model, spec)
    optimizer = build_optimizer(model, TrainConfig(lr=1e-5))
    x, y = batch

    def step() -> None:
        loss = lm_loss(model, x, y) / y.numel()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # AdamW makes its state on the first step
    trainable, total = lora.count(model)
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if t.dim())
    grads = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total, "optimizer": state, "grads": grads}, step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model directory (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model_dir = smollm2_dir(args.model)
    vocab = load_model(model_dir)[0].config.vocab_size
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (args.batch, args.tokens + 1), generator=gen)
    batch = (ids[:, :-1], ids[:, 1:])
    facts: dict[str, dict[str, int]] = {}
    steps: dict[str, Callable[[], float]] = {}
    for name, spec in CONTENDERS.items():
        facts[name], step = contender(model_dir, spec, batch)
        steps[name] = lambda step=step: timed(step)
    times = interleaved(steps, args.rounds)
    print(f"{model_dir.name if args.model else 'SmolLM2-135M-Instruct'}, batch {args.batch} x {args.tokens}"
          f" tokens, fp32, {hardware_line()}")  # fmt: skip
    full = facts["full fine-tuning"]
    print("| | trainable parameters | gradients | AdamW state | step time | speed vs full | AdamW vs full |")
    print("|---|---|---|---|---|---|---|")
    for name, f in facts.items():
        share = 100 * f["trainable"] / f["total"]
        speed = times["full fine-tuning"] / times[name]
        memory = full["optimizer"] / max(f["optimizer"], 1)
        print(
            f"| {name} | {f['trainable']:,} ({share:.2f}%) | {f['grads'] / 2**20:.1f} MiB"
            f" | {f['optimizer'] / 2**20:.1f} MiB | {times[name]:.2f} s | {speed:.2f}x | 1/{memory:.0f} |"
        )


if __name__ == "__main__":
    main()
