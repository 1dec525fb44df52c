"""`lmforge plan --calibrate`: a few real steps of the recipe on this machine, as `lmforge train`
runs them (its engine, its world size through `lmforge launch`), in a temporary run directory
that is deleted afterwards. The plan then takes the measured MFU instead of a stated one, and
shows the measured memory_per_rank and peak RSS beside its predictions.

It runs in a child process because tools sit below train in lmforge's layers (docs/design.md),
and because more than one rank needs a launcher anyway."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from lmforge.config import Config, config_to_toml
from lmforge.errors import LmforgeError


def calibrate(cfg: Config, world_size: int, steps: int) -> dict[str, Any]:
    """Train `steps` steps of `cfg` on `world_size` local processes; the per-step figures of the
    steps after the first (which pays for warm-up), and the run's summary figures."""
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
    timed = [r for r in rows if "tok_s" in r and r["step"] > 1]
    tokens_per_step = summary["tokens"] / summary["steps"]
    step_s = statistics.median(tokens_per_step / r["tok_s"] for r in timed)
    return {
        "steps": steps,
        "step_s": step_s,
        "mfu": statistics.median(r["mfu"] for r in timed),
        "peak_flops": summary["peak_flops"],
        "dtype": summary["dtype"],
        "memory_per_rank": summary["memory_per_rank"],
        "peak_rss_gb_per_rank": summary["peak_rss_gb_per_rank"],
    }
