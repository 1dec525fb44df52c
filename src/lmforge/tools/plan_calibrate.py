"""`lmforge plan --calibrate`: a few real steps of the recipe on this machine, as `lmforge train`
runs them (its engine, its world size through `lmforge launch`), in a temporary run directory
that is deleted afterwards. The plan then takes the measured MFU instead of a stated one, and
shows the measured memory_per_rank and peak RSS beside its predictions.

The MFU is that of the fastest timed step (`step_figures`), the step time a quiet machine gives:
other work on the machine only ever adds time to a step, so the minimum is the estimate that noise
moves least (timeit's rule); the median is reported beside it, for what this machine gave now.

It runs in a child process because tools sit below train in lmforge's layers (docs/design.md),
and because more than one rank needs a launcher anyway."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lmforge.config import Config, config_to_toml
from lmforge.errors import LmforgeError


def calibrate(cfg: Config, world_size: int, steps: int) -> dict[str, Any]:
    """Train `steps` steps of `cfg` on `world_size` local processes; the step figures of the steps
    after the first (`step_figures`), and the run's summary figures."""
    if steps < 2:
        raise LmforgeError(f"calibrate_steps={steps}: must be >= 2 (the first step is warm-up, not timed)")
    with tempfile.TemporaryDirectory(prefix="lmforge-plan-") as tmp:
        recipe, out = Path(tmp) / "recipe.toml", Path(tmp) / "run"
        recipe.write_text(config_to_toml(cfg))
        launcher = ["launch", f"--nproc={world_size}"] if world_size > 1 else []
        command = [sys.executable, "-m", "lmforge", *launcher, "train", str(recipe), "--out", str(out)]
        command += ["--quiet", f"--train.max_steps={steps}", "--train.max_minutes=0", "--train.epochs=0"]
        command += ["--train.log_interval=1", f"--train.eval_interval={steps}", "--train.eval_batches=1"]
        command += [f"--train.checkpoint_interval={steps}"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise LmforgeError(f"calibration run failed: {last}")
        summary = json.loads((out / "summary.json").read_text())
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {
        "steps": steps,
        **step_figures(rows, summary["tokens"] / summary["steps"]),
        "peak_flops": summary["peak_flops"],
        "dtype": summary["dtype"],
        "memory_per_rank": summary["memory_per_rank"],
        "peak_rss_gb_per_rank": summary["peak_rss_gb_per_rank"],
    }


def step_figures(rows: Iterable[dict[str, Any]], tokens_per_step: float) -> dict[str, Any]:
    """From a run's metrics.jsonl rows logged every step: the step time and MFU of the fastest step
    after the first (which pays for warm-up), the medians, and every timed step's seconds.

    The fastest: on a shared machine a step is slowed, in stretches, by whatever else runs (three
    identical runs here had median steps of 0.65, 0.76 and 0.67 s), and never sped up, so the
    minimum is what the step costs on a quiet machine and a slow step does not move it."""
    timed = [r for r in rows if "tok_s" in r and r["step"] > 1]
    if not timed:
        raise LmforgeError("calibration run logged no step after the first: nothing to time")
    # a step's MFU times its seconds is its FLOPs over the peak: the same for every step of a run
    seconds = [tokens_per_step / r["tok_s"] for r in timed]
    fastest = min(range(len(timed)), key=seconds.__getitem__)
    return {
        "step_s": seconds[fastest],
        "mfu": timed[fastest]["mfu"],
        "step_s_median": statistics.median(seconds),
        "mfu_median": statistics.median(r["mfu"] for r in timed),
        "step_times": seconds,
    }
