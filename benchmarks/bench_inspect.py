"""Does being able to capture attention slow ordinary inference? Side by side in one process:

    python -m benchmarks.bench_inspect [--rounds 5]

- `before`: model/attention.py as it was before `capture_attention()` existed (read from git at
  commit BEFORE and patched in), the fast routes with no capture check;
- `now`: today's default path (one thread-local read per attention call, then the same routes);
- `capturing`: inside `capture_attention()`, the reference formula recording every probability
  matrix (what `lmforge inspect` pays, for scale).
Each on a prefill (batch 8 x 256 tokens, one forward) and on decoding (64 greedy tokens from the
KV cache, batch 1), random 6x384 GPT weights, fp32.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.common import hardware_line, interleaved, timed
from lmforge.config import ModelConfig
from lmforge.inference.generate import generate_ids
from lmforge.model import layers
from lmforge.model.attention import capture_attention
from lmforge.model.gpt import GPT

BEFORE = "b7c1544"  # the last commit before capture_attention() was added
ROOT = Path(__file__).resolve().parents[1]


def old_attention() -> Callable:
    """attention() from model/attention.py at commit BEFORE, loaded as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{BEFORE}:src/lmforge/model/attention.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    with tempfile.TemporaryDirectory() as folder:  # gone once the module is loaded
        file = Path(folder) / "attention_before.py"
        file.write_text(source)
        spec = importlib.util.spec_from_file_location("attention_before", file)
        module = importlib.util.module_from_spec(spec)
        sys.modules["attention_before"] = module
        spec.loader.exec_module(module)
    return module.attention


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=6, n_head=6, n_embd=384, block_size=512, vocab_size=65)).eval()
    batch = torch.randint(0, 65, (8, 256))
    prompt = batch[0, :16].tolist()
    before, now = old_attention(), layers.attention

    def using(attention: Callable, work: Callable[[], object], capture: bool = False) -> Callable[[], float]:
        def run() -> float:
            layers.attention = attention
            try:
                if capture:
                    with capture_attention():
                        return 1.0 / timed(work)
                return 1.0 / timed(work)
            finally:
                layers.attention = now

        return run

    def prefill() -> object:
        return model(batch)

    def decode() -> object:
        return generate_ids(model, [prompt], 64, temperature=0)

    print(hardware_line())
    print("| work | before (no check) | now (default) | now / before | capturing | capturing / now |")
    print("|---|---|---|---|---|---|")
    for label, work, unit in (("prefill 8x256", prefill, 8 * 256), ("decode 64 tokens", decode, 64)):
        rates = interleaved(
            {
                "before": using(before, work),
                "now": using(now, work),
                "capturing": using(now, work, capture=True),
            },
            args.rounds,
        )
        tok = {name: rate * unit for name, rate in rates.items()}
        print(
            f"| {label} | {tok['before']:,.0f} tok/s | {tok['now']:,.0f} tok/s |"
            f" {tok['now'] / tok['before']:.3f} | {tok['capturing']:,.0f} tok/s |"
            f" {tok['capturing'] / tok['now']:.2f} |"
        )


if __name__ == "__main__":
    main()
