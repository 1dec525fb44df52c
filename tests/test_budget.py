"""train.max_minutes: the steps that fit a wall-clock budget, measured, with the schedule ending at
its floor on the last of them; and a budget that fits leaves the run unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge import train
from lmforge.config import TrainConfig
from lmforge.train.budget import plan_steps, replan_point, replan_steps
from lmforge.train.metrics import read_metrics


def test_plan_counts_steps_and_evaluations() -> None:
    t = TrainConfig(max_steps=1000, max_minutes=1.0, warmup_steps=20, eval_interval=100, eval_batches=30)
    # 0.1 s a step + an evaluation (30 batches at a third of a step: 1 s) every 100 steps: 0.11 s
    steps, warmup = plan_steps(t, done=10, seconds_per_step=0.1)
    assert steps == 10 + int((60 - 10 * 0.1) / 0.11) and warmup == 20
    assert plan_steps(t, 10, 0.001) == (1000, 20)  # never more than max_steps
    assert plan_steps(t, 10, 10.0) == (10, 10)  # nothing more fits: stop where it is
    assert plan_steps(t, 10, 0.5) == (110, 20)  # the warmup of 20 still fits (<= a quarter)
    assert plan_steps(t, 10, 1.0) == (55, 10)  # a warmup of 20 would not: a tenth of the run
    long = TrainConfig(max_steps=20, max_minutes=5.0, warmup_steps=50)  # the warmup is the whole run
    assert plan_steps(long, 10, 0.1) == (20, 50)  # all 20 steps fit: as without a budget, no lr jump


def test_the_halfway_replan_fits_the_rest_of_the_budget_at_the_pace_since_the_calibration() -> None:
    t = TrainConfig(max_steps=300, max_minutes=1.0)  # the plan: 300 steps in 60 s
    assert replan_point(10, 300) == 155
    since = (10, 4.0)  # the 10 calibration steps took 4 s: 0.4 s a step, slower than what follows
    assert replan_steps(t, 155, 33.0, since, ceiling=1000) == 155 + 135  # 0.2 s a step: 27 s left
    assert replan_steps(t, 155, 47.5, since, ceiling=1000) == 155 + 41  # 0.3 s a step: 12.5 s left
    assert replan_steps(t, 155, 18.5, since, ceiling=1000) == 155 + 415  # 0.1 s: longer than planned
    assert replan_steps(t, 155, 18.5, since, ceiling=400) == 400  # never past the recipe's max_steps
    assert replan_steps(t, 155, 600.0, since, ceiling=1000) == 155  # far over already: stop where it is


def _run(tmp: Path, corpus: Path, *extra: str) -> tuple[dict, list[dict]]:
    overrides = [f"--data.input={corpus}", "--model.n_layer=1", "--model.n_head=2", "--model.n_embd=32",
                 "--model.block_size=32", "--train.batch_size=8", "--train.dtype=fp32",
                 "--train.log_interval=1", "--train.warmup_steps=2", "--train.eval_batches=1",
                 "--train.checkpoint_interval=25", *extra]  # fmt: skip
    summary = train(None, overrides, out=tmp, quiet=True)
    return summary, read_metrics(tmp)


def test_a_tight_budget_shrinks_the_run_and_the_cosine_still_ends_at_its_floor(
    tmp_path: Path, corpus: Path
) -> None:
    summary, records = _run(tmp_path / "run", corpus, "--train.max_steps=100000", "--train.max_minutes=0.05")
    steps = summary["steps"]
    assert 10 < steps < 100000  # calibrated: 3 s of tiny steps, far fewer than asked
    assert summary["train_s"] < 3 * 1.5  # the budget held (evaluations included)
    last = next(r for r in records if r["step"] == steps)
    if last["lr"] != pytest.approx(TrainConfig().min_lr, rel=1e-6):  # the schedule reached its floor, unless
        # the steps after the calibration ran at half its pace or slower (a busy machine: another test
        # beside this one under pytest-xdist), so the halfway re-plan found the budget spent and stopped
        # the run where it was, mid-cosine: the budget wins over the schedule (docs/training.md)
        assert summary["train_s"] > 3 * 0.8, (summary, last)
    saved = json.loads(next((tmp_path / "run" / "checkpoints").glob("step_*/trainer.json")).read_text())
    assert saved["planned"][0] == steps  # resume keeps the calibrated plan
    assert "replan_at" in saved  # and whether the halfway replan is still to come,
    assert saved["ceiling"] == 100000  # how far it may lengthen the run,
    assert saved["calibrated"][0] == 10  # and the pace it measures from


def test_a_budget_that_fits_changes_nothing(tmp_path: Path, corpus: Path) -> None:
    _, plain = _run(tmp_path / "plain", corpus, "--train.max_steps=30")
    _, budget = _run(tmp_path / "budget", corpus, "--train.max_steps=30", "--train.max_minutes=10")
    assert [r["loss"] for r in plain if "loss" in r] == [r["loss"] for r in budget if "loss" in r]


def test_a_warmup_as_long_as_the_run_is_said_at_start(
    tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture
) -> None:
    overrides = [f"--data.input={corpus}", "--model.n_layer=1", "--model.n_head=2", "--model.n_embd=32",
                 "--model.block_size=32", "--train.batch_size=8", "--train.dtype=fp32",
                 "--train.log_interval=1", "--train.max_steps=4", "--train.warmup_steps=8"]  # fmt: skip
    train(None, overrides, out=tmp_path / "run")
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("  steps "))
    assert "warmup 8 (the whole run: the lr peaks at 0.000375, no decay)" in line
    # the highest lr an update used, not the last step's logged one (0.0005, the rate after its
    # scheduler step, which no update used): step k updates at step k-1's logged lr, step 1 at 0
    logged = [r["lr"] for r in read_metrics(tmp_path / "run") if "lr" in r]
    assert len(logged) == 4 and max([0.0, *logged[:-1]]) == pytest.approx(1e-3 * 3 / 8)
    # with a time budget too (configs/demo.toml --train.max_steps=30): one that fits keeps the
    # warmup, so the start-up line says so rather than nothing
    train(None, [*overrides, "--train.max_minutes=10"], out=tmp_path / "budget")
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("  steps "))
    assert "(the whole run: the lr peaks at 0.000375, no decay, unless the time budget shortens the run)" in (
        line
    )
