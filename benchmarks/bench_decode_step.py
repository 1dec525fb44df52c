"""One decode step, lmforge against transformers, in lockstep: SmolLM2-135M-Instruct, batch 1.

    python -m benchmarks.bench_decode_step [--dtype bf16] [--steps 48] [--rounds 4]

lmforge's `GPT` forward with its KV cache and transformers' `LlamaForCausalLM` forward with its
`DynamicCache`, on the same weights (the GGUF that `data.smollm2` fetches; transformers
dequantizes it as `lmforge import` does), one token per step after a 42-token prompt, greedy.
Each step times both sides, in alternating order, so drift in the machine's speed (other work
beside the benchmark) hits both alike; the figure is the median over `rounds` x `steps` steps
after a warm-up round, and the ratio of the two is the measure to compare between runs. With
`model/attention.py` from issue 14 on, a third side is lmforge with the grouped K/V heads repeated
before attention (the code before, in the same process). Run it at two commits to compare code.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch

PROMPT = list(range(100, 142))


class Lmforge:
    def __init__(self, net: Any, grouped: bool) -> None:
        import lmforge.model.attention as attention

        self.net, self.grouped, self.attention = net, grouped, attention

    def start(self) -> None:
        self.cache = self.net.new_cache(1)
        self.logits = self.net(torch.tensor([PROMPT]), self.cache, True)[:, -1]
        self.out: list[int] = []

    def step(self) -> float:
        if hasattr(self.attention, "SDPA_GQA"):
            self.attention.SDPA_GQA = self.grouped
        token = self.logits.argmax(-1)
        self.out.append(int(token))
        start = time.perf_counter()
        self.logits = self.net(token[:, None], self.cache, True)[:, -1]
        return time.perf_counter() - start


class Transformers:
    def __init__(self, hf: Any) -> None:
        self.hf = hf

    def start(self) -> None:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.hf.config)
        out = self.hf(torch.tensor([PROMPT]), past_key_values=cache, use_cache=True, logits_to_keep=1)
        self.cache, self.logits, self.n, self.out = out.past_key_values, out.logits[:, -1], len(PROMPT), []

    def step(self) -> float:
        token = self.logits.argmax(-1)
        self.out.append(int(token))
        start = time.perf_counter()
        at = torch.tensor([self.n])
        out = self.hf(token[:, None], past_key_values=self.cache, use_cache=True, logits_to_keep=1,
                      position_ids=at[None], cache_position=at)  # fmt: skip
        took = time.perf_counter() - start
        self.cache, self.logits, self.n = out.past_key_values, out.logits[:, -1], self.n + 1
        return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", type=Path, default=None, help="lmforge-imported SmolLM2 (default: imported into the cache)"
    )
    parser.add_argument("--gguf", type=Path, default=None, help="the GGUF it came from (data.smollm2)")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="both sides' weights")
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    from benchmarks.common import smollm2_dir

    args.model = smollm2_dir(args.model)
    from transformers import AutoModelForCausalLM

    import lmforge.model.attention as attention
    from benchmarks.common import hardware_line
    from lmforge.formats.directory import load_model
    from lmforge.model import kernels

    if args.gguf is None:
        from data.smollm2 import smollm2_gguf

        args.gguf = smollm2_gguf()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    net = kernels.for_inference(load_model(args.model)[0].to(dtype).eval())
    hf = AutoModelForCausalLM.from_pretrained(args.gguf.parent, gguf_file=args.gguf.name, dtype=dtype).eval()
    sides: dict[str, Any] = {"lmforge": Lmforge(net, True), "transformers": Transformers(hf)}
    if hasattr(attention, "SDPA_GQA"):
        sides["lmforge, K/V heads repeated"] = Lmforge(net, False)
    print(f"# {hardware_line()}; {kernels.describe() if args.dtype == 'fp32' else kernels.describe_bf16()}")
    print(f"# SmolLM2-135M-Instruct {args.dtype}, batch 1, {len(PROMPT)}-token prompt, "
          f"{args.steps} steps x {args.rounds} rounds in lockstep; {attention.__file__}")  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in sides}
    with torch.inference_mode():
        for rnd in range(args.rounds + 1):  # round 0 warms up
            for side in sides.values():
                side.start()
            names = list(sides)
            for i in range(args.steps):
                for name in names if i % 2 == 0 else names[::-1]:
                    took = sides[name].step()
                    if rnd:
                        times[name].append(1000 * took)
    reference = statistics.median(times["transformers"])
    for name, values in times.items():
        low, _, high = statistics.quantiles(values, n=4)
        median = statistics.median(values)
        ratio = median / reference
        print(f"{name}: {median:.2f} ms/step (quartiles {low:.2f}-{high:.2f}), {ratio:.3f}x transformers")
    print("greedy tokens identical on every side:", len({tuple(side.out) for side in sides.values()}) == 1)


if __name__ == "__main__":
    main()
