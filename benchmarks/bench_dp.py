"""The price of differential privacy: validation loss, canary exposure and time per step of the same
short Shakespeare recipe trained without DP (epsilon = infinity) and with DP-SGD at epsilon 8, 3, 1.

    python -m benchmarks.bench_dp [--chars 300000] [--steps 200] [--batch 64] [--no-audit]

The corpus is the first works of the shipped complete Shakespeare (data/shakespeare.jsonl.xz), whole,
until --chars characters, cut into documents of about 4,000 characters at blank lines, prepared as
`make demo` prepares it (character tokenizer, whitespace and exact/near dedup, the hash split:
about 10% of the documents for validation), and canaries planted in the training
split (`lmforge prep --canaries 4 --canary-repeats 1,4,16`: 4 secrets per repeat count, 10^6
candidates each). Each contender trains configs/shakespeare-char.toml's model (4 layers x 128,
rotary, context 64) from the same seed on the same batches (global batch --batch, --steps steps,
AdamW lr --lr, cosine, fp32), and the DP ones set `[privacy] target_epsilon` (max_grad_norm 1,
delta 1e-5, RDP). Then `lmforge audit` measures the exposure of the canaries (estimated from 2,000
sampled candidates) and verbatim extraction (200 windows, 32-token prefix, 32 tokens). Rows are
printed as each run ends (JSON), then the table.
"""

from __future__ import annotations

import argparse
import json
import lzma
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import hardware_line

ROOT = Path(__file__).resolve().parents[1]
MODEL = ["--model.n_layer=4", "--model.n_head=4", "--model.n_embd=128", "--model.block_size=64",
         "--model.pos=rope", "--model.dropout=0.0"]  # fmt: skip


def corpus(path: Path, chars: int, piece: int = 4000) -> int:
    """The first works of the shipped Shakespeare up to `chars` characters, cut at blank lines into
    documents of about `piece` characters (so that the hash split and the canaries have documents
    to place among), as JSONL."""
    docs, total = [], 0
    with lzma.open(ROOT / "data" / "shakespeare.jsonl.xz", "rt", encoding="utf-8") as f:
        for line in f:
            current = ""
            for paragraph in json.loads(line)["text"].split("\n\n"):
                current += paragraph + "\n\n"
                if len(current) >= piece:
                    docs.append(current)
                    current = ""
            docs.append(current)
            total = sum(len(d) for d in docs)
            if total >= chars:
                break
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs if d.strip()), encoding="utf-8")
    return total


def prepare(work: Path, chars: int, canaries: bool) -> Path:
    from lmforge.data.prep import prep

    source = work / "shakespeare.jsonl"
    corpus(source, chars)
    options: dict[str, Any] = {"stages": "whitespace,exact_dedup,near_dedup", "split": "hash"}
    if canaries:
        options.update(canaries=4, canary_repeats="1,4,16", canary_seed=0)
    out = work / "data"
    prep([source], out, tokenizer="char", val_fraction=0.1, quiet=True, **options)
    return out


def train_one(data: Path, out: Path, epsilon: float, args: argparse.Namespace) -> dict[str, Any]:
    from lmforge.train.loop import train

    overrides = [
        f"--data.input={data}", *MODEL,
        f"--train.max_steps={args.steps}", f"--train.batch_size={args.batch}", f"--train.lr={args.lr}",
        f"--train.min_lr={args.lr / 10}", "--train.warmup_steps=20", "--train.schedule=cosine",
        "--train.eval_batches=0", f"--train.eval_interval={args.steps}", f"--train.log_interval={args.steps}",
        f"--train.checkpoint_interval={args.steps}", "--train.dtype=fp32", "--train.seed=1337",
    ]  # fmt: skip
    if math.isfinite(epsilon):
        overrides += ["--privacy.enabled=true", f"--privacy.target_epsilon={epsilon}", "--privacy.delta=1e-5"]
    return train(None, overrides, out=out, quiet=True)


def audit_one(model: Path, data: Path) -> dict[str, Any]:
    from lmforge.tools.audit import audit

    return audit(model, data, prefix_tokens=32, k=32, samples=200, candidates=2_000, quiet=True)


def row(epsilon: float, summary: dict[str, Any], audited: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "target_epsilon": epsilon,
        "epsilon": summary.get("epsilon", math.inf),
        "noise_multiplier": summary.get("privacy", {}).get("noise_multiplier", 0.0),
        "sample_rate": summary.get("privacy", {}).get("sample_rate"),
        "val_loss": summary["val_loss"],
        "s_per_step": summary["train_s"] / summary["steps"],
    }
    if audited is not None:
        out["exposure"] = {r["repeats"]: r["mean"] for r in audited["exposure"]["per_repeat"]}
        out["exposure_max"] = audited["exposure"]["max_exposure"]
        out["extracted_train"] = audited["extraction"]["train"]["rate"]
        out["extracted_heldout"] = audited["extraction"]["heldout"]["rate"]
    return out


def table(rows: list[dict[str, Any]]) -> str:
    repeats = sorted(rows[0].get("exposure", {}))
    # time against the no-DP run; without one in --epsilons, the column is left out, not measured
    # against whichever run came first
    base = next((r["s_per_step"] for r in rows if not math.isfinite(r["target_epsilon"])), None)
    head = "| epsilon (target) | reached | noise multiplier | val loss | s/step |"
    head += " time vs no DP |" if base else ""
    head += "".join(f" exposure x{r} |" for r in repeats)
    head += " extracted train / held-out |" if repeats else ""
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        name = "inf (no DP)" if not math.isfinite(r["target_epsilon"]) else f"{r['target_epsilon']:g}"
        reached = "inf" if not math.isfinite(r["epsilon"]) else f"{r['epsilon']:.2f}"
        line = (
            f"| {name} | {reached} | {r['noise_multiplier']:.3f} | {r['val_loss']:.3f} |"
            f" {r['s_per_step']:.3f} |"
        )
        line += f" {r['s_per_step'] / base:.1f}x |" if base else ""
        line += "".join(f" {r['exposure'][k]:.2f} |" for k in repeats)
        if repeats:
            line += f" {r['extracted_train']:.3f} / {r['extracted_heldout']:.3f} |"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chars", type=int, default=300_000, help="characters of Shakespeare to train on")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64, help="global batch (sequences per step)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--epsilons", default="inf,1,8,3")
    parser.add_argument("--no-audit", action="store_true", help="no canaries, no exposure")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    print(hardware_line(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), flush=True)
    try:
        epsilons = [(text, float(text)) for text in args.epsilons.split(",")]
    except ValueError:
        raise SystemExit(f"bench_dp: --epsilons {args.epsilons!r}: comma-separated numbers or inf") from None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = prepare(work, args.chars, canaries=not args.no_audit)
        meta = json.loads((data / "meta.json").read_text())
        print(f"data: {meta['tokens']['train']:,} train / {meta['tokens']['val']:,} val characters")
        for text, epsilon in epsilons:
            summary = train_one(data, work / f"run-{text}", epsilon, args)
            audited = None if args.no_audit else audit_one(work / f"run-{text}" / "model", data)
            rows.append(row(epsilon, summary, audited))
            print(json.dumps(rows[-1]), flush=True)
    rows.sort(key=lambda r: -r["target_epsilon"])  # no DP first, then epsilon 8, 3, 1
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
