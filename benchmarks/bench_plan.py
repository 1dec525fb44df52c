"""`lmforge plan` against measured runs: the engine benchmark's runs (benchmarks/bench_engines.py:
GPT 6x384, context 256, global batch 8, fp32, the shipped Shakespeare; local, DDP, FSDP, ZeRO 1-3
at 1 and 2 ranks), each planned with `--calibrate` (a few real steps of the same recipe) and then
run for --steps steps. Per case: the planned model states per rank against summary.json's
memory_per_rank (aim: within 5%), the planned peak RSS against the measured one (25%), and the
step time from the calibrated MFU against the run's median step time after its first step (15%).

    python -m benchmarks.bench_plan [--steps 10] [--calibrate-steps 3] [--save results.json]
    python -m benchmarks.bench_plan --only local ddp fsdp --save a.json   # a part of the cases
    python -m benchmarks.bench_plan --rescore a.json b.json  # re-plan saved runs, no training

The model states and peak RSS are predicted without looking at the run (the RSS with
plan_devices.CPU_RUNTIME, the process before its tensors); the step time needs the calibration.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import lmforge
from benchmarks.bench_engines import CASES, MODEL, ROOT, run_case
from benchmarks.common import hardware_line
from lmforge.data.shards import prepare_corpus

BATCH = ["--train.batch_size=8", "--train.eval_batches=1"]
AIMS = {"states": 0.05, "rss": 0.25, "step": 0.15}


def measure(steps: int, calibrate_steps: int, dtype: str, only: list[str], save: str) -> list[dict[str, Any]]:
    """Calibrate and run every case; the raw figures (no prediction yet besides the calibration)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work, data = Path(tmp), Path(tmp) / "data"
        prepare_corpus(ROOT / "data" / "shakespeare.jsonl.xz", data, "char")
        for name, nproc, flags in CASES:
            if "offload" in name or (only and name not in only):
                continue  # offload: the engine benchmark's extra row; on a CPU it moves nothing
            vocab = json.loads((data / "meta.json").read_text())["vocab_size"]  # for --rescore, data gone
            overrides = [*MODEL, *BATCH, f"--data.input={data}", f"--train.dtype={dtype}", *flags]
            overrides.append(f"--model.vocab_size={vocab}")
            calibration = lmforge.plan(
                overrides=overrides, world_size=nproc, calibrate=True, calibrate_steps=calibrate_steps
            )["calibration"]
            summary = run_case(
                work, data, name, nproc, [*flags, "--train.log_interval=1"], steps, dtype, "lm"
            )
            metrics = (work / f"{name}-{nproc}" / "metrics.jsonl").read_text().splitlines()
            per_step = summary["tokens"] / summary["steps"]
            times = [
                per_step / r["tok_s"] for r in map(json.loads, metrics) if "tok_s" in r and r["step"] > 1
            ]
            rows.append(
                {
                    "case": name,
                    "ranks": nproc,
                    "overrides": overrides,
                    "calibration": calibration,
                    "memory_per_rank": summary["memory_per_rank"],
                    "peak_rss_gb": max(summary["peak_rss_gb_per_rank"]),
                    "step_s": statistics.median(times),
                }  # fmt: skip
            )
            if save:  # after every case: a run cut short keeps what it measured
                Path(save).write_text(json.dumps(rows, indent=1) + "\n")
    return rows


def score(row: dict[str, Any]) -> dict[str, Any]:
    """The plan of one saved case (model states and RSS predicted, step time from its calibration)."""
    plan = lmforge.plan(overrides=row["overrides"], world_size=row["ranks"])
    c = row["calibration"]
    flops_per_step = plan["flops_per_token"] * plan["batch"]["global"] * plan["tokens_per_sequence"]
    return {
        "states": sum(plan["memory_per_rank"].values()),
        "states_measured": sum(row["memory_per_rank"].values()),
        "keys": {k: (plan["memory_per_rank"][k], v) for k, v in row["memory_per_rank"].items()},
        "rss": plan["peak_per_rank"]["step"],
        "rss_measured": row["peak_rss_gb"] * 2**30,
        "step": flops_per_step / (row["ranks"] * c["peak_flops"] * c["mfu"]),
        "step_measured": row["step_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--calibrate-steps", type=int, default=3)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "auto"])
    parser.add_argument("--save", help="write the measured figures to this JSON file")
    parser.add_argument("--only", nargs="*", default=[], help="these cases only (local, ddp, zero2, ...)")
    parser.add_argument(
        "--rescore", nargs="+", help="re-plan the figures saved by --save (one or more files); train nothing"
    )
    args = parser.parse_args()
    if args.rescore:
        rows = [row for name in args.rescore for row in json.loads(Path(name).read_text())]
    else:
        rows = measure(args.steps, args.calibrate_steps, args.dtype, args.only, args.save)
    print(f"# plan vs measured: GPT 6x384, context 256, global batch 8, {args.dtype}, {args.steps} steps"
          f" (calibration {args.calibrate_steps})")  # fmt: skip
    print(f"# {hardware_line()}")
    print(
        f"{'engine':<8} {'ranks':>5} | {'states MiB plan/run':>20} {'worst key':>9} |"
        f" {'peak RSS MiB plan/run':>22} {'diff':>6} | {'step s plan/run':>16} {'diff':>6}"
    )
    worst = dict.fromkeys(AIMS, 0.0)
    for row in rows:
        s = score(row)
        diffs = {k: s[k] / s[f"{k}_measured"] - 1 for k in AIMS}
        # model states: the key (params, grads, optimizer) furthest from its measured bytes
        diffs["states"] = max((p / m - 1 for p, m in s["keys"].values()), key=abs)
        for k, d in diffs.items():
            worst[k] = max(worst[k], abs(d))
        mib = 2**20
        states = f"{s['states'] / mib:>9.1f} / {s['states_measured'] / mib:>8.1f}"
        print(
            f"{row['case']:<8} {row['ranks']:>5} | {states}"
            f" {100 * diffs['states']:>+8.1f}% | {s['rss'] / mib:>10,.0f} / {s['rss_measured'] / mib:>9,.0f}"
            f" {100 * diffs['rss']:>+5.1f}% | {s['step']:>7.3f} / {s['step_measured']:>6.3f}"
            f" {100 * diffs['step']:>+5.1f}%"
        )
    verdict = ", ".join(
        f"{k} {100 * worst[k]:.1f}% ({'within' if worst[k] <= aim else 'OVER'} {100 * aim:.0f}%)"
        for k, aim in AIMS.items()
    )
    print(f"# worst: {verdict}")


if __name__ == "__main__":
    main()
