"""Every engine on the same model and global batch, at world size 1 and 2, side by side with the
local engine: tokens/s, peak RSS per rank, and what each rank holds for parameters, gradients and
optimizer state (measured from the tensors after the first step).

    python -m benchmarks.bench_engines [--steps 30] [--dtype fp32]
    python -m benchmarks.bench_engines --task translation [--steps 200]

`--task translation` runs the translation demo's recipe (configs/translate-demo.toml, 3+3 x 256
encoder-decoder, batch 32) on the shipped English-French pairs for the engines at world size 2
(the sharded ones with every parameter partitioned at ZeRO-3), and adds the final validation
loss and greedy BLEU (100 sentences): the same for every engine, on real data.

On a CPU both ranks share the machine's cores (torchrun gives each one thread), so world size 2
shows memory sharding and the engines' overhead, not a speed-up; on GPUs each rank has its own.
"""

from __future__ import annotations

import argparse
import json
import shutil
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


TRANSLATION_CASES = [
    ("local", 1, []),
    ("ddp", 2, ["--engine.name=ddp"]),
    ("fsdp", 2, ["--engine.name=fsdp"]),
    ("zero1", 2, ["--engine.name=deepspeed", "--engine.zero_stage=1"]),
    ("zero2", 2, ["--engine.name=deepspeed", "--engine.zero_stage=2"]),
    ("zero3", 2, ["--engine.name=deepspeed", "--engine.zero_stage=3",
                  f"--engine.deepspeed_config={ROOT / 'tests' / 'fixtures' / 'zero3-partition-all.json'}"]),
]  # fmt: skip


def run_case(
    work: Path, data: Path, name: str, nproc: int, flags: list[str], steps: int, dtype: str, task: str
) -> dict:
    out = work / f"{name}-{nproc}"
    config = [str(ROOT / "configs" / "translate-demo.toml")] if task == "translation" else []
    args = ["train", *config, "--quiet", f"--data.input={data}", "--out", str(out), "--overwrite"]
    if task == "translation":
        args += ["--train.eval_bleu_sentences=100", "--train.warmup_steps=50", "--train.log_interval=50"]
    else:
        args += [*MODEL, "--train.batch_size=8", "--train.eval_batches=1"]
    args += [f"--train.max_steps={steps}", f"--train.eval_interval={steps}"]
    args += [f"--train.checkpoint_interval={steps}", f"--train.dtype={dtype}"]
    launcher = ["launch", f"--nproc={nproc}"] if nproc > 1 else []
    subprocess.run([sys.executable, "-m", "lmforge", *launcher, *args, *flags], check=True, cwd=work)
    return json.loads((out / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "auto"])
    parser.add_argument("--task", default="lm", choices=["lm", "translation"])
    args = parser.parse_args()
    if args.task == "translation":
        what = "translation demo recipe (3+3 x 256 encoder-decoder), global batch 32 pairs"
    else:
        what = "GPT 6x384, context 256, global batch 8"
    print(f"# engines: {what}, {args.steps} steps, {args.dtype}")
    print(f"# {hardware_line()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data"
        if args.task == "translation":
            prepare_pairs_dir(data)
        else:
            prepare_corpus(ROOT / "data" / "shakespeare.jsonl.xz", data, "char")
        cases = TRANSLATION_CASES if args.task == "translation" else CASES
        rows = [(n, p, run_case(work, data, n, p, f, args.steps, args.dtype, args.task)) for n, p, f in cases]
    base = rows[0][2]["tokens_per_s"]
    print(
        f"{'engine':<14} {'ranks':>5} {'tok/s':>8} {'vs local':>8} {'peak RSS/rank':>14}"
        f" {'params':>8} {'grads':>8} {'optim':>8} {'params+optim':>12}  (MiB per rank)"
        + ("  val_loss  val_bleu" if args.task == "translation" else "")
    )
    for name, nproc, s in rows:
        mem = {k: v / 2**20 for k, v in s["memory_per_rank"].items()}
        rss, speed = max(s["peak_rss_gb_per_rank"]) * 1024, s["tokens_per_s"]
        print(
            f"{name:<14} {nproc:>5} {speed:>8,.0f} {speed / base:>7.2f}x {rss:>11,.0f} MiB"
            f" {mem['params']:>8.1f} {mem['grads']:>8.1f} {mem['optimizer']:>8.1f}"
            f" {mem['params'] + mem['optimizer']:>12.1f}"
            + (f"  {s['val_loss']:8.4f}  {s['best_bleu']:8.2f}" if args.task == "translation" else "")
        )


def prepare_pairs_dir(out: Path) -> None:
    """The demo's prepared pairs (as `make demo-translate` makes them), reused when present."""
    made = ROOT / "data" / "prepared" / "en-fr"
    if (made / "meta.json").is_file():
        shutil.copytree(made, out)
        return
    command = [
        "prep",
        "--pairs",
        str(ROOT / "data" / "en-fr.jsonl.xz"),
        "--out",
        str(out),
        "--vocab-size",
        "8000",
    ]
    subprocess.run([sys.executable, "-m", "lmforge", *command], check=True)


if __name__ == "__main__":
    main()
