"""Every engine on the same model and global batch, at world size 1 and 2, side by side with the
local engine: tokens/s, peak RSS per rank, and what each rank holds for parameters, gradients and
optimizer state (measured from the tensors after the first step).

    python -m benchmarks.bench_engines [--steps 30] [--dtype fp32]

On a CPU both ranks share the machine's cores (torchrun gives each one thread), so world size 2
shows memory sharding and the engines' overhead, not a speed-up; on GPUs each rank has its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import hardware_line
from lmforge.data.shards import prepare_corpus

ROOT = Path(__file__).resolve().parents[1]
MODEL = ["--model.n_layer=6", "--model.n_head=6", "--model.n_embd=384", "--model.block_size=256"]
CASES = [
    ("local", 1, []),
    ("ddp", 1, ["--engine.name=ddp"]),
    ("ddp", 2, ["--engine.name=ddp"]),
    ("fsdp", 1, ["--engine.name=fsdp"]),
    ("fsdp", 2, ["--engine.name=fsdp"]),
    ("zero1", 1, ["--engine.name=deepspeed", "--engine.zero_stage=1"]),
    ("zero1", 2, ["--engine.name=deepspeed", "--engine.zero_stage=1"]),
    ("zero2", 1, ["--engine.name=deepspeed", "--engine.zero_stage=2"]),
    ("zero2", 2, ["--engine.name=deepspeed", "--engine.zero_stage=2"]),
    ("zero3", 1, ["--engine.name=deepspeed", "--engine.zero_stage=3"]),
    ("zero3", 2, ["--engine.name=deepspeed", "--engine.zero_stage=3"]),
    ("zero3+offload", 2, ["--engine.name=deepspeed", "--engine.zero_stage=3", "--engine.offload=all"]),
]


def run_case(work: Path, data: Path, name: str, nproc: int, flags: list[str], steps: int, dtype: str) -> dict:
    out = work / f"{name}-{nproc}"
    args = ["train", "--quiet", f"--data.input={data}", "--out", str(out), "--overwrite", *MODEL]
    args += ["--train.batch_size=8", f"--train.max_steps={steps}", f"--train.eval_interval={steps}"]
    args += ["--train.eval_batches=1", f"--train.checkpoint_interval={steps}", f"--train.dtype={dtype}"]
    launcher = ["launch", f"--nproc={nproc}"] if nproc > 1 else []
    subprocess.run([sys.executable, "-m", "lmforge", *launcher, *args, *flags], check=True, cwd=work)
    return json.loads((out / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "auto"])
    args = parser.parse_args()
    print(f"# engines: GPT 6x384, context 256, global batch 8, {args.steps} steps, {args.dtype}")
    print(f"# {hardware_line()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data"
        prepare_corpus(ROOT / "data" / "shakespeare.jsonl.xz", data, "char")
        rows = [(n, p, run_case(work, data, n, p, f, args.steps, args.dtype)) for n, p, f in CASES]
    base = rows[0][2]["tokens_per_s"]
    print(
        f"{'engine':<14} {'ranks':>5} {'tok/s':>8} {'vs local':>8} {'peak RSS/rank':>14}"
        f" {'params':>8} {'grads':>8} {'optim':>8} {'params+optim':>12}  (MiB per rank)"
    )
    for name, nproc, s in rows:
        mem = {k: v / 2**20 for k, v in s["memory_per_rank"].items()}
        rss, speed = max(s["peak_rss_gb_per_rank"]) * 1024, s["tokens_per_s"]
        print(
            f"{name:<14} {nproc:>5} {speed:>8,.0f} {speed / base:>7.2f}x {rss:>11,.0f} MiB"
            f" {mem['params']:>8.1f} {mem['grads']:>8.1f} {mem['optimizer']:>8.1f}"
            f" {mem['params'] + mem['optimizer']:>12.1f}"
        )


if __name__ == "__main__":
    main()
