"""What a run writes (train/loop.py's): its checkpoints, best/ (the best validation score so far),
and at the end model/ (the export), summary.json and loss.png, with its last line."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from lmforge.errors import CannotWrite, LmforgeError
from lmforge.formats.directory import WEIGHTS, save_weights
from lmforge.formats.peft import LORA_FILE, write_lora_file
from lmforge.outputs import write_file
from lmforge.processes import signals_stop
from lmforge.train import checkpoint as ckpt
from lmforge.train import report
from lmforge.train.metrics import format_duration, plot_loss

if TYPE_CHECKING:
    from lmforge.train.loop import Run


STEP_KEY = "lmforge_step"  # best/'s weights: the step they are, in the safetensors header


def weights_step(file: Path) -> int | None:
    """The step a best/ weights file records (None: none recorded, as before 2026-12-06)."""
    with safe_open(str(file), "pt") as f:
        step = (f.metadata() or {}).get(STEP_KEY)
    return int(step) if step is not None and step.isdigit() else None


def drop_stale_best(run: Run) -> None:
    """On a resume: best/ whose weights are not the checkpoint's best step's (written after the
    checkpoint, by the part of the run a kill threw away; or deleted by such a resume killed in its
    turn) cannot be exported as that step's, whose weights are gone: say so, delete what the run
    wrote there, and let the resumed run's evaluations choose the best from here. Weights there that
    safetensors cannot read (overwritten, cut short) are passed over alike, with a line, but left
    (as a damaged checkpoint is): the resumed run's first best replaces them. Every rank reads
    best/ before any deletes it, and all decide alike (an evaluation's gather needs them all)."""
    if not run.best:
        return
    best_dir, step = run.run_dir / "best", run.state["best_step"]
    recorded = _best_step(best_dir / WEIGHTS)
    lost = step > 0 and recorded not in ("unrecorded", step)
    if not bool(run.engine.all_reduce(torch.tensor(float(lost))) > 0):
        return
    if run.main and isinstance(recorded, Unreadable):  # passed over and left, as a damaged checkpoint is
        print(
            f"lmforge: note: {best_dir / WEIGHTS}: skipped, unreadable ({recorded.why}); the checkpoint's"
            f" best, step {step}, is chosen again from the resumed steps, whose best replaces it",
            file=sys.stderr,
        )
    elif run.main:
        what = (
            "holds no weights" if recorded is None else f"holds step {recorded}'s weights, not step {step}'s"
        )
        print(
            f"lmforge: note: {best_dir} {what} (the checkpoint's best, step {step}, was not kept): it is"
            " cleared, and the best step is chosen again from the resumed steps",
            file=sys.stderr,
        )
        with tempfile.TemporaryDirectory() as tmp:  # the files a model directory of this run holds
            run.task.write_model_files(Path(tmp))
            ours = {WEIGHTS, LORA_FILE} | {p.name for p in Path(tmp).iterdir()}
        for name in ours:
            if (best_dir / name).is_file():
                (best_dir / name).unlink()
    run.state.update(best_score=-math.inf, best_step=0, best_tie_loss=math.inf)


@dataclass(frozen=True)
class Unreadable:
    """best/'s weights file that safetensors cannot open (overwritten, cut short), and why."""

    why: str


def _best_step(file: Path) -> int | str | Unreadable | None:
    """The step best/'s weights record; "unrecorded" (written before 2026-12-06); None: none;
    Unreadable: a file safetensors cannot open."""
    if not file.is_file():
        return None
    try:
        step = weights_step(file)
    except (SafetensorError, OSError) as e:
        return Unreadable(str(e).splitlines()[0] if str(e) else type(e).__name__)
    return "unrecorded" if step is None else step


def install_model_dir(
    run: Run, target: Path, state: dict[str, torch.Tensor], step: int | None = None
) -> None:
    """run_dir/best (the best validation score so far) or run_dir/model (the export). Its files are
    written into run_dir/.NAME-tmp, then each renamed over its old copy (atomic per file, and within
    a run only the weights change), so a kill leaves a whole model there, never a half-written
    file or a writer's temporary one, and a file train did not write there (a user's notes) stays.
    `step`: the training step the weights are, recorded in their file's header (best/)."""
    tmp = run.run_dir / f".{target.name}-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    write_model_dir(run, tmp, state, step)
    target.mkdir(exist_ok=True)
    for path in sorted(tmp.iterdir()):
        os.replace(path, target / path.name)
    tmp.rmdir()


def write_model_dir(
    run: Run, directory: Path, state: dict[str, torch.Tensor], step: int | None = None
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if run.lora_base:  # adapters only, and the base they sit on
        state = {k: v for k, v in state.items() if k in run.trainable}
        write_lora_file(directory, run.cfg.lora, run.lora_base)
    save_weights(directory / WEIGHTS, state, None if step is None else {STEP_KEY: str(step)})
    run.task.write_model_files(directory)


def save_checkpoint(run: Run) -> None:
    def write(directory: Path) -> None:
        run.engine.save(directory)
        if run.main:
            run.task.write_model_files(directory)  # every checkpoint is a loadable model directory
            if run.lora_base:  # ... of the adapters, with the base they sit on
                write_lora_file(directory, run.cfg.lora, run.lora_base)

    ckpt.save_checkpoint(
        run.run_dir / "checkpoints",
        run.step,
        write,
        {"loader": run.task.loader.state_dict(), **run.state, "config": run.config_text}
        | ({"privacy": run.privacy.state_dict()} if run.privacy else {}),
        keep=run.cfg.train.keep_checkpoints,
        main=run.main,
        barrier=run.engine.barrier,
        say=run.say,
        ranks=(run.engine.rank, run.engine.world_size, run.engine.all_reduce),
    )


def finish(run: Run) -> dict[str, Any]:
    """Export the model (the best step's when the run keeps one), write summary.json and loss.png.
    SIGTERM and Ctrl-C stop it as they stop the steps, with a line saying what finishes it."""
    with signals_stop():
        try:
            return _export(run)
        except KeyboardInterrupt:  # Terminated too
            if run.main:
                print(f"lmforge: stopped in the final export: {_finishes(run)}", file=sys.stderr)
            raise
        except CannotWrite as e:  # a full disk: the line says what finishes the run once there is room
            raise CannotWrite(f"{e}; stopped in the final export: {_finishes(run)}") from None


def _finishes(run: Run) -> str:
    return f"lmforge train --resume {run.run_dir} finishes it"


def _export(run: Run) -> dict[str, Any]:
    engine, state, task = run.engine, run.state, run.task
    if not run.metrics:  # resumed a run that had already finished: evaluate it once
        run.metrics = task.evaluate(run.module, engine, run.autocast)
    summary = report.summary(run, run.peak_flops)  # the logged MFU's peak
    if run.privacy:
        summary.update(run.privacy.summary())
    final = engine.full_state_dict()  # collective: sharded engines gather on every rank
    best_file = run.run_dir / "best" / WEIGHTS
    which = ""  # the last line's word on the model: the scores are the last evaluation's
    if run.best and state["best_step"] > 0 and _best_step(best_file) in ("unrecorded", state["best_step"]):
        metric, sign = run.best
        best = sign * state["best_score"]
        summary.update({f"best_{metric.removeprefix('val_')}": best, "best_step": state["best_step"]})
        which = f" (step {state['best_step']}'s, best {metric} {best:.4f}; the scores are the last step's)"
        final = load_file(str(best_file))
    elif run.best:  # no best step's weights kept (drop_stale_best): the last step's, said
        which = " (the last step's: no best step's weights were kept)"
    if run.main:
        install_model_dir(run, run.run_dir / "model", final)
        plot_loss(run.run_dir)
        # last: summary.json marks the run finished, so a resume after a failure above finishes it
        write_file(run.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        scores = " | ".join(f"{k} {v:.4f}" for k, v in run.metrics.items())
        run.say(
            f"done: {scores} | {summary['tokens_per_s']:,.0f} tok/s | {format_duration(state['train_s'])}"
            f" | model in {run.run_dir / 'model'}{which}"
        )
    return summary


def error_line(e: OSError | LmforgeError) -> str:
    """An error of the disk (full, read-only, a permission) that stopped the steps, as one line: an
    OSError's file, if it names one (a write to an open file, metrics.jsonl's, names none), and why."""
    if not isinstance(e, OSError):
        return str(e)
    return f"{e.filename}: {e.strerror}" if e.filename else str(e.strerror)


def resume_point(run_dir: Path, step: int) -> str:
    """What a run stopped at `step` (Ctrl-C) leaves to resume from: a resume continues exactly
    from the last checkpoint, not from the step the run reached."""
    saved = ckpt.list_checkpoints(run_dir / "checkpoints")
    if not saved:  # an --overwrite stopped here has not yet deleted the run it replaces: say where
        hint = ckpt.replaced_hint(run_dir)
        return f"stopped at step {step}, before its first checkpoint: nothing of it to resume{hint}"
    last = int(saved[-1].name.removeprefix(ckpt.PREFIX))
    return (
        f"stopped at step {step}; its last checkpoint is step {last}:"
        f" lmforge train --resume {run_dir} continues exactly from there"
    )
