"""`lmforge plan --calibrate`: a few real steps of the recipe on this machine, as `lmforge train`
runs them (its engine, its world size through `lmforge launch`), in a temporary run directory
that is deleted afterwards. The plan then takes the measured MFU instead of a stated one, and
shows the measured memory_per_rank and peak RSS beside its predictions.

The MFU is that of the fastest timed step (`step_figures`), the step time a quiet machine gives:
other work on the machine only ever adds time to a step, so the minimum is the estimate that noise
moves least (timeit's rule); the median is reported beside it, for what this machine gave now.
A stretch of contention as long as the calibration moves the minimum too, so the calibration also
measures how much CPU other processes took meanwhile (`OthersCpu`) and the plan says so.

It runs in a child process because tools sit below train in lmforge's layers (docs/design.md),
and because more than one rank needs a launcher anyway."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from time import perf_counter
from typing import Any

from lmforge.config import Config, command_line_overrides, config_to_toml
from lmforge.errors import LmforgeError


def calibrate(cfg: Config, world_size: int, steps: int) -> dict[str, Any]:
    """Train `steps` steps of `cfg` on `world_size` local processes; the step figures of the steps
    after the first (`step_figures`), and the run's summary figures."""
    if steps < 2:
        raise LmforgeError(f"calibrate_steps={steps}: must be >= 2 (the first step is warm-up, not timed)")
    with tempfile.TemporaryDirectory(prefix="lmforge-plan-") as tmp:
        recipe, out = Path(tmp) / "recipe.toml", Path(tmp) / "run"
        # what the user's command chose: its recipe's keys as a recipe, its overrides as overrides,
        # so that they outrank the recipe as they do in train (train/run_inputs.py, data/shards.py)
        overrides = command_line_overrides(cfg)
        overridden = {o.removeprefix("--").partition("=")[0] for o in overrides}
        recipe.write_text(config_to_toml(cfg, chosen_only=True, exclude=overridden))
        launcher = ["launch", f"--nproc={world_size}"] if world_size > 1 else []
        command = [sys.executable, "-m", "lmforge", *launcher, "train", str(recipe), "--out", str(out)]
        command += overrides
        command += ["--quiet", f"--train.max_steps={steps}", "--train.max_minutes=0", "--train.epochs=0"]
        command += ["--train.log_interval=1", f"--train.eval_interval={steps}", "--train.eval_batches=1"]
        command += [f"--train.checkpoint_interval={steps}"]
        with OthersCpu() as others:
            done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            last = last.replace(str(recipe), str(cfg.recipe or "the recipe"))  # gone when this is read
            raise LmforgeError(f"calibration run failed: {last.removeprefix('lmforge: error: ')}")
        summary = json.loads((out / "summary.json").read_text())
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {
        "steps": steps,
        **step_figures(rows, summary["tokens"] / summary["steps"]),
        "peak_flops": summary["peak_flops"],
        "dtype": summary["dtype"],
        "memory_per_rank": summary["memory_per_rank"],
        "peak_rss_gb_per_rank": summary["peak_rss_gb_per_rank"],
        **{k: summary[k] for k in ("peak_gpu_gb_per_rank",) if k in summary},  # a GPU run's
        "others_cpu_share": others.share,
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


class OthersCpu:
    """The share of this machine's CPU time that processes other than this one and its children
    used while the block ran (0: a quiet machine, 0.5: half the cores busy with other work), from
    /proc/stat's busy time (VM steal included) less our own; `share` is None where there is no
    /proc/stat (not Linux)."""

    share: float | None = None

    def __enter__(self) -> OthersCpu:
        self._start = (perf_counter(), _machine_busy_s(), _own_cpu_s())
        return self

    def __exit__(self, *exc: object) -> None:
        wall0, machine0, own0 = self._start
        machine1 = _machine_busy_s()
        if machine0 is None or machine1 is None:
            return
        wall = perf_counter() - wall0
        others = (machine1 - machine0) - (_own_cpu_s() - own0)
        self.share = min(max(others / ((os.cpu_count() or 1) * wall), 0.0), 1.0) if wall > 0 else 0.0


def _machine_busy_s() -> float | None:
    try:
        fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    """CPU seconds of this process and of its children that have finished (a launcher waits for
    its ranks, so theirs are in it)."""
    import resource  # Unix only, as /proc/stat

    me, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime
