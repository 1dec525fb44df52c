"""How long a process waits for its first compiled decoding step, and when the wait pays back.

    python -m benchmarks.bench_compile_start [--shapes 6x384 gpt2 smollm2] [--steps 64]

Each row is a fresh Python process that builds the model (random weights; SmolLM2-135M from the
GGUF of `python -m data.smollm2`), then times `compiled_step(model)` (inference/compiled_decode.py)
and `--steps` decoding steps eager and compiled at batch 1 in fp32 (inference/autotune.time_steps:
after a 32-token prompt, the best of two rounds after a warm-up, taking turns). Three starts, in this order:

- cold: an empty lmforge cache and an empty inductor cache: everything compiles;
- kernels kept: inductor's cache from the cold start, an empty lmforge cache: what a new process
  paid before lmforge kept compiled steps (dynamo traces again, inductor finds its kernels);
- step kept: the lmforge cache from the cold start (inference/compiled_store.py): a load.

Payback: the tokens after which the start's wait is repaid by the faster steps,
wait / (eager step - compiled step). The caches live in a temporary directory, deleted after.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import hardware_line

SHAPES = ("6x384", "gpt2", "smollm2")


def build(shape: str) -> torch.nn.Module:
    from lmforge.config import ModelConfig
    from lmforge.model import kernels
    from lmforge.model.gpt import GPT

    torch.manual_seed(0)
    if shape == "smollm2":
        from lmforge.formats.gguf import convert_gguf

        gguf = Path.home() / ".cache" / "lmforge" / "SmolLM2-135M-Instruct.Q4_1.gguf"
        model = convert_gguf(gguf)[0]
    else:
        wide = shape == "gpt2"
        model = GPT(
            ModelConfig(
                n_layer=12 if wide else 6,
                n_head=12 if wide else 6,
                n_embd=768 if wide else 384,
                block_size=1024,
                vocab_size=50257 if wide else 65,
            )  # fmt: skip
        )
    return kernels.for_inference(model.eval().float())


def child(shape: str, steps: int) -> None:
    """One start: prints a JSON line with the wait and the step times."""
    started = time.perf_counter()
    from lmforge.inference.autotune import time_steps
    from lmforge.inference.compiled_decode import compiled_step, layer_cache, next_logits

    model = build(shape)
    start = time.perf_counter()
    step = compiled_step(model)
    wait = time.perf_counter() - start
    in_layers = functools.partial(layer_cache, model)
    eager, compiled = time_steps([(model, next_logits, in_layers), (model, step, in_layers)], 2, 32, steps)
    print(json.dumps({"wait": wait, "before": start - started, "eager_ms": 1e3 * eager,
                      "compiled_ms": 1e3 * compiled, "eager_steps": step.eager_steps}))  # fmt: skip


def start(shape: str, steps: int, lmforge_cache: Path, inductor_cache: Path) -> dict[str, float]:
    env = {**os.environ, "LMFORGE_CACHE": str(lmforge_cache), "TORCHINDUCTOR_CACHE_DIR": str(inductor_cache)}
    argv = [sys.executable, "-m", "benchmarks.bench_compile_start", "--child", shape, "--steps", str(steps)]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{shape}: the child process failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--child", choices=SHAPES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps)
        return
    print(f"first compiled step, fp32, batch 1 | {hardware_line()}")
    print("shape | start | wait for the step | building the model | eager ms | compiled ms | payback tokens")
    for shape in args.shapes:
        with tempfile.TemporaryDirectory(prefix="lmforge-compile-start-") as tmp:
            ours, kernels_dir = Path(tmp) / "lmforge", Path(tmp) / "inductor"
            empty = Path(tmp) / "empty"
            for label, cache in (("cold", ours), ("kernels kept", empty), ("step kept", ours)):
                r = start(shape, args.steps, cache, kernels_dir)
                gain = r["eager_ms"] - r["compiled_ms"]
                payback = f"{1e3 * r['wait'] / gain:,.0f}" if gain > 0 else "never"
                print(
                    f"{shape} | {label} | {r['wait']:.1f} s | {r['before']:.1f} s | {r['eager_ms']:.2f}"
                    f" | {r['compiled_ms']:.2f} | {payback}"
                    + (f" ({r['eager_steps']} steps eager)" if r["eager_steps"] else ""),
                    flush=True,
                )


if __name__ == "__main__":
    main()
