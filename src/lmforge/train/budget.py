"""A wall-clock training budget (train.max_minutes): how many steps fit, from measured steps.

The same recipe takes 4 minutes on a CPU with bf16 units and 30 on one with AVX2 only. With a
budget, the loop times its first CALIBRATION_STEPS steps and sets max_steps to what fits (never
more than the recipe's), so the schedule still ends where it should: the cosine reaches min_lr
at the last step instead of being cut off half way. Steps can slow down after the first ten (a
busy machine, batches of other shapes: a QA run planned 11 minutes at 2.1 s a step and took 13 at
2.7) or speed up (the first steps warm caches and allocators: the demo planned 792 steps at 0.372
s a step, then trained at 0.30 and used 240 s of its 300), so halfway through the plan the loop
plans once more, from the wall time per step since the calibration, evaluations included: it
shortens the run or lengthens it, up to the recipe's max_steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmforge.config import TrainConfig

if TYPE_CHECKING:
    from lmforge.train.loop import Run

CALIBRATION_STEPS = 10
# what a checkpoint keeps of the plan: [max_steps, warmup_steps], the re-plan's step, the recipe's
# max_steps (how far a re-plan may lengthen the run), [step, wall seconds] at the calibration
BUDGET_KEYS = ("planned", "replan_at", "ceiling", "calibrated")


def plan_steps(t: TrainConfig, done: int, seconds_per_step: float) -> tuple[int, int]:
    """(max_steps, warmup_steps) that fit t.max_minutes, given `done` steps taken and the measured
    seconds per step. Evaluation takes time too: each evaluation runs about eval_batches global
    batches forward only, about a third of a training step each."""
    eval_cost = seconds_per_step * t.eval_batches / 3  # per evaluation; 0 batches = whole split: unknown
    per_step = seconds_per_step + eval_cost / t.eval_interval
    budget_s = t.max_minutes * 60 - done * seconds_per_step
    fits = done + max(0, int(budget_s / per_step + 1e-9))  # 1e-9: 55 / 0.55 is 99.999...
    steps = max(done, min(t.max_steps, fits))
    # the warmup stays as set unless it no longer fits: then a tenth of the run. A budget that keeps
    # the recipe's length changes nothing, not even a warmup as long as the run (lr would jump)
    fitted = t.warmup_steps <= steps // 4 or steps == t.max_steps
    warmup = t.warmup_steps if fitted else max(done, steps // 10)
    return steps, warmup


def replan_point(done: int, max_steps: int) -> int:
    """The step at which the plan is checked again: halfway through what is left of it."""
    return done + (max_steps - done) // 2


def seconds_per_step(done: int, wall_s: float, since: tuple[int, float]) -> float:
    """Wall seconds a step from `since` = (step, wall seconds then) to now (`done`, `wall_s`)."""
    return (wall_s - since[1]) / max(done - since[0], 1)


def replan_steps(t: TrainConfig, done: int, wall_s: float, since: tuple[int, float], ceiling: int) -> int:
    """max_steps that fit t.max_minutes now that `done` steps took `wall_s` seconds of wall time
    (evaluations and checkpoints included), at the pace of the steps after the calibration
    `since` = (step, wall seconds then): never more than `ceiling` (the recipe's max_steps), never
    fewer than done."""
    pace = seconds_per_step(done, wall_s, since)
    fits = done + int((t.max_minutes * 60 - wall_s) / pace + 1e-9) if pace > 0 else ceiling
    return max(done, min(ceiling, fits))


def apply_budget(run: Run, first_step: int, wall_s: float) -> None:
    """train.max_minutes: after the calibration steps, fit max_steps (and the schedule) to it."""
    t = run.cfg.train
    run.state["ceiling"] = t.max_steps  # the recipe's: a re-plan may lengthen the run up to it
    agreed = run.engine.mean({"wall": wall_s, "step": run.state["train_s"] / max(run.step, 1)})
    run.state["calibrated"] = [run.step, agreed["wall"]]  # every rank plans the same steps
    per_step = agreed["step"]
    t.max_steps, t.warmup_steps = plan_steps(t, run.step, per_step)
    run.state["planned"] = [t.max_steps, t.warmup_steps]
    run.state["replan_at"] = replan_point(run.step, t.max_steps)
    run.bar.total = t.max_steps
    run.say(
        f"  budget  {t.max_minutes:g} min at {per_step:.3f} s/step (measured over {run.step - first_step}"
        f" steps): max_steps {t.max_steps}, warmup {t.warmup_steps}"
    )


def replan_budget(run: Run, wall_s: float) -> None:
    """Halfway through a budget's plan: fit the rest of the budget at the pace since the calibration
    (shorter if the steps slowed down, longer, up to the recipe's max_steps, if they sped up)."""
    t = run.cfg.train
    wall_s = run.engine.mean({"s": wall_s})["s"]
    step0, wall0 = run.state.get("calibrated", (0, 0.0))  # a checkpoint from before: from step 0
    since = (int(step0), float(wall0))
    steps = replan_steps(t, run.step, wall_s, since, run.state.get("ceiling", t.max_steps))
    run.state["replan_at"] = 0
    if steps != t.max_steps:
        t.max_steps, t.warmup_steps = steps, min(t.warmup_steps, steps)
        run.state["planned"] = [t.max_steps, t.warmup_steps]
        run.bar.total = t.max_steps
        run.say(
            f"  budget  re-planned at step {run.step} ({seconds_per_step(run.step, wall_s, since):.3f} s/step"
            f" since step {since[0]}, evaluations included): max_steps {t.max_steps}"
        )
