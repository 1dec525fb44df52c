"""THE training loop: one loop for every engine, every model family and every task.

train() has three parts. `_set_up` resolves the run directory, builds the engine and the task
(train/tasks/: its data, model, loss and metrics), the optimizer and schedule, and restores a
checkpoint when resuming. `_steps` runs optimizer steps: fetch the task's global batch,
normalise the loss per target across all its micro-batches and ranks, backward each, step the
engine (clip, update, schedule), log, evaluate, checkpoint. `finish` (train/run_outputs.py)
exports the model and writes summary.json and loss.png. The loop never asks which task it runs.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from lmforge import malloc, tuning
from lmforge.config import Config, as_overrides, config_to_toml
from lmforge.config.batch_split import split_batch
from lmforge.config.deepspeed_json import changed_keys, user_json
from lmforge.errors import CannotWrite, LmforgeError
from lmforge.folder_lock import FolderLock
from lmforge.formats.peft import base_identity, check_base
from lmforge.model import lora
from lmforge.model.checkpointing import set_activation_checkpointing
from lmforge.outputs import DISK_ERRORS, write_file
from lmforge.processes import raise_lost_stop, signals_stop
from lmforge.train import checkpoint as ckpt
from lmforge.train import compiling, report
from lmforge.train.autotune import choose_kernels, compiled_module, kernels_from_state
from lmforge.train.budget import BUDGET_KEYS, CALIBRATION_STEPS, apply_budget, replan_budget
from lmforge.train.compiling import kept_settings
from lmforge.train.engines import build_engine
from lmforge.train.engines.base import Engine, Plan
from lmforge.train.lost_rank import RankLost, rank_lost
from lmforge.train.metrics import MetricsLog, step_line
from lmforge.train.optim import build_optimizer, build_scheduler
from lmforge.train.privacy import DPSGD, build_privacy
from lmforge.train.resume import check_epochs_train
from lmforge.train.rng_state import restore_rng
from lmforge.train.run_dir import drop_leftovers, resolve_run, undo_start
from lmforge.train.run_outputs import (
    drop_stale_best,
    error_line,
    finish,
    install_model_dir,
    resume_point,
    save_checkpoint,
)
from lmforge.train.step import forward_backward
from lmforge.train.tasks.base import Autocast, Setup, Task, build_task


def train(
    config: str | Path | Config | None = None,
    overrides: list[str] | str | dict[str, Any] | None = None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    overwrite: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train a model; returns the run summary (also written to RUN_DIR/summary.json).

    config: a TOML recipe or a Config; overrides: `--section.key=value` strings (a list, or one
    string), or a dict {"section.key": value}; out: the run
    directory (default runs/<recipe name>); resume: a run directory to continue exactly.
    """
    tuning.enabled()  # a mistyped LMFORGE_AUTOTUNE or LMFORGE_MALLOC is one line before anything is made
    malloc.keeps_system(os.environ)
    made: list[Path] = []
    with FolderLock() as lock:  # the run folder's, held until the run ends: one process in it at a time
        run_dir, cfg = resolve_run(config, as_overrides(overrides), out, resume, overwrite, made, lock)
        with kept_settings():  # a compiled run turns on deterministic algorithms (train/compiling.py)
            try:  # a run that fails before its first step leaves the folder as it found it
                engine = build_engine(cfg.engine, cfg.train)
                say: Callable[[str], None] = (lambda _: None) if quiet or engine.rank != 0 else tqdm.write
                for note in cfg.notes:  # what resolve_run's checks settled
                    say(note)
                run = _set_up(cfg, run_dir, engine, resume is not None, say, quiet)
            except BaseException:
                with contextlib.suppress(OSError):  # the error that stopped the run is the one to show
                    undo_start(run_dir, made, lock)  # lets go before removing the folders made for its file
                raise
            for aside in (p for p in made if p.name.startswith(ckpt.REPLACED)):
                say(f"moved the previous run aside to {aside}; it is deleted at this run's first checkpoint")
            try:
                try:
                    with signals_stop():
                        _steps(run)
                except KeyboardInterrupt:  # Ctrl-C or SIGTERM: what a resume would redo
                    if run.main:
                        print(f"lmforge: {resume_point(run.run_dir, run.step)}", file=sys.stderr)
                    raise
                except (
                    CannotWrite,
                    OSError,
                ) as e:  # a full disk: one line, with what a resume continues from
                    if isinstance(e, OSError) and e.errno not in DISK_ERRORS:
                        raise  # not the disk's: a bug, with its traceback
                    raise CannotWrite(f"{error_line(e)}; {resume_point(run.run_dir, run.step)}") from None
                finally:
                    run.close()
                summary = finish(run)
            except BaseException as e:  # the model goes before the process group, here at the exit
                lost = rank_lost(e, engine.world_size, cfg.engine.timeout_s)  # a rank gone: one line
                if lost is not None:
                    lost = RankLost(f"{lost}; {resume_point(run.run_dir, run.step)}")
                del run
                with contextlib.suppress(Exception):  # the error that stopped the run is the one to show
                    engine.release()
                if lost is not None:  # the backend's traceback under --debug (a bug may say the same)
                    raise lost from e
                raise
            del run  # its model before the engine's process group (engines/ddp.py's close)
        engine.close()
        return summary


@dataclass
class Run:
    """What the steps share: set up once, updated as training goes."""

    cfg: Config
    run_dir: Path
    engine: Engine
    task: Task
    module: torch.nn.Module
    scheduler: Any
    autocast: Autocast
    dtype: torch.dtype
    say: Callable[[str], None]
    quiet: bool
    n_params: int
    flops_per_token: float
    step: int = 0
    # counters saved in every checkpoint (they add up across resumes)
    state: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # the last evaluation's
    memory: dict[str, int] = field(default_factory=dict)
    log: MetricsLog | None = None
    bar: Any = None
    lora_base: dict[str, Any] | None = None  # [lora]: the base model the adapters sit on
    trainable: set[str] = field(default_factory=set)  # [lora]: what model/, best/ and checkpoints hold
    n_trainable: int = 0
    privacy: DPSGD | None = None  # [privacy]: DP-SGD computes the gradients and counts epsilon
    config_text: str = ""  # config.toml as the run was set up (before a budget's plan is restored)
    step_module: torch.nn.Module | None = None  # what the training loss calls: module, or it compiled
    peak_flops: float = 0.0  # MFU's denominator, read once at the first step (tuning.matmul_peak)
    peak_measured_again: bool = False  # the run beat it once, and it was measured again (_peak_again)
    best: tuple[str, int] | None = None  # the metric that picks the export, and +1 (higher wins) or -1

    @property
    def main(self) -> bool:
        return self.engine.rank == 0

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.log is not None:
            self.log.close()


def _set_up(
    cfg: Config, run_dir: Path, engine: Engine, resuming: bool, say: Callable[[str], None], quiet: bool
) -> Run:
    t = cfg.train
    micro, accumulation = split_batch(t.batch_size, engine.world_size, t.micro_batch_size, resuming)
    last = ckpt.latest_checkpoint(run_dir / "checkpoints", say=say) if resuming else None
    task = build_task(Setup(cfg, run_dir, engine, micro, say, last))
    saved = ckpt.read_trainer_state(last) if last is not None else None
    data_digest = task.loader.data_digest()
    if last is not None and saved is not None:  # the data read now must be what it trained on
        ckpt.check_tokenizer(last, task.tokenizer)
        ckpt.check_data(last, saved, data_digest, cfg.data.input)
    if t.epochs:
        t.max_steps = t.epochs * task.loader.steps_per_epoch
        if last is not None and saved is not None:  # epochs become steps only here
            check_epochs_train(run_dir, t, task.loader.steps_per_epoch, last, saved["step"])
    if engine.rank == 0:
        drop_leftovers(run_dir, say)
    config_text = config_to_toml(cfg)  # written once the inputs have all been read (_steps)
    random.seed(t.seed)
    torch.manual_seed(t.seed)
    model = task.build_model()
    if cfg.lora.enabled:  # freeze the model, add adapters: only they (and lora.also_train) train
        lora.inject(model, cfg.lora, cross=last is None or lora.saved_with_cross(ckpt.weight_names(last)))
    set_activation_checkpointing(model, t.activation_checkpointing)  # before engines wrap the blocks
    n_params = getattr(model, "num_params", lambda: sum(p.numel() for p in model.parameters()))()
    flops = report.flops_per_token(model, task.micro_batch_tokens() // micro)
    n_trainable = lora.count(model)[0]  # before engines shard or partition the parameters
    model_name = type(model).__name__  # before FSDP2 renames the class it shards (FSDPGPT)
    compilable = engine.name in compiling.ENGINES and task.fixed_shapes and not cfg.privacy.enabled
    kernels = choose_kernels(cfg, model, task, engine, kernels_from_state(saved), compilable)
    kernels.apply()
    dtype = kernels.torch_dtype
    plan = Plan(dtype=dtype, global_batch=t.batch_size, micro_batch=micro, accumulation=accumulation,
                save_frozen=not cfg.lora.enabled)  # fmt: skip
    fused = kernels.adamw == "fused"
    module, scheduler = engine.prepare(
        model, lambda m: build_optimizer(m, t, fused), lambda o: build_scheduler(o, t), plan
    )
    autocast: Autocast = (
        (lambda: torch.autocast(engine.device.type, dtype=dtype))
        if dtype != torch.float32
        else contextlib.nullcontext
    )
    run = Run(cfg, run_dir, engine, task, module, scheduler, autocast, dtype, say, quiet, n_params, flops)
    run.step_module = compiled_module(module, task, kernels)  # the module itself unless kernels.compile
    if cfg.lora.enabled:
        run.lora_base, run.trainable = base_identity(t.init_from), set(lora.trainable_names(model))
    run.n_trainable = n_trainable
    run.config_text = config_text
    run.state = {"bad_streak": 0, "skipped": 0, "train_s": 0.0, "wall_s": 0.0, "tokens": 0,
                 "first_steps_s": 0.0, "first_steps_tokens": 0,  # each process's first step: report.summary
                 "kernels": kernels.saved(), "log_window": _empty_window(), "data": data_digest,
                 "deepspeed_json": user_json(cfg.engine)}  # fmt: skip
    run.best = (task.best_metric, 1) if task.best_metric else ("val_loss", -1) if t.keep_best else None
    if run.best:
        # the metric times its sign: higher wins; a tie, the lower val_loss (BLEU 0 at every early
        # evaluation kept the first one), then the earlier step
        run.state.update(best_score=-math.inf, best_step=0, best_tie_loss=math.inf)
    run.privacy = build_privacy(cfg, task, engine)
    if last is not None and saved is not None:
        _restore(run, last, saved)
    report.say_start(run, model_name, plan, kernels.describe())
    if run.privacy:
        say(run.privacy.describe())
    return run


def _restore(run: Run, last: Path, saved: dict[str, Any]) -> None:
    """Continue exactly from the newest intact checkpoint `last` (its trainer state `saved`):
    weights, optimizer, schedule, RNG, data position, counters and a time budget's plan."""
    if run.lora_base:  # the adapters only fit the base they were trained on
        check_base(last, run.lora_base)
    run.engine.load(last)
    restore_rng(last, saved, run.engine.rank)  # this rank's own states (rng_state.py)
    try:
        run.task.loader.load_state_dict(saved["loader"])
    except LmforgeError as e:  # a position past its epoch (data/loader.py's check_cursor)
        raise LmforgeError(f"{last / 'trainer.json'}: {e}") from None
    if run.privacy:  # the accountant continues where it stopped: epsilon as if never interrupted
        run.privacy.load_state_dict(saved.get("privacy"), str(last))
    run.step = saved["step"]
    # the counters go on; "kernels" stays what this run chose (train.compile may differ from the
    # checkpoint's), and so does the DeepSpeed JSON, which may have been edited: said, as it changes steps
    now, then = run.state["deepspeed_json"], saved.get("deepspeed_json")  # None: none, or before 2026-12-06
    if now is not None and then is not None and then != now and run.main:
        keys = ", ".join(changed_keys(then, now))
        print(f"lmforge: note: {run.cfg.engine.deepspeed_config} differs from the DeepSpeed JSON"
              f" {last.name} was trained with ({keys}): the steps from here may differ from an"
              " uninterrupted run's", file=sys.stderr)  # fmt: skip
    run.state.update(
        {k: saved[k] for k in run.state if k in saved and k not in ("kernels", "deepspeed_json")}
    )
    if "planned" in saved:  # a time budget's calibrated schedule
        for key in BUDGET_KEYS:
            if key in saved:
                run.state[key] = saved[key]
        run.cfg.train.max_steps, run.cfg.train.warmup_steps = saved["planned"]
    drop_stale_best(run)
    run.say(f"resumed from {last} (step {run.step})")


def _steps(run: Run) -> None:
    t, engine, task = run.cfg.train, run.engine, run.task
    # config.toml marks a run: a new run writes it first (a kill in MetricsLog leaves a run, not a
    # foreign folder), a resume after its last input, metrics.jsonl (a refused one keeps the old)
    if run.main and run.step == 0:
        write_file(run.run_dir / "config.toml", run.config_text)
    run.log = (
        MetricsLog(run.run_dir, resume_step=run.step, tensorboard=True, say=run.say) if run.main else None
    )
    if run.main and run.step > 0:
        write_file(run.run_dir / "config.toml", run.config_text)
    run.bar = tqdm(total=t.max_steps, initial=run.step, disable=None if run.main and not run.quiet else True,
                   unit="step", dynamic_ncols=True, leave=False)  # fmt: skip
    window = run.state["log_window"]  # checkpointed: a resumed run logs the same averages
    grad_norm, first_step = 0.0, run.step
    wall_before, started = run.state["wall_s"], time.perf_counter()  # wall time adds up across resumes
    run.peak_flops = tuning.matmul_peak(run.dtype, engine.device)
    gradients = run.privacy.forward_backward if run.privacy else forward_backward
    step_module = run.module if run.step_module is None else run.step_module
    while run.step < t.max_steps:
        raise_lost_stop()  # a Ctrl-C that landed in a weakref callback (processes.signals_stop)
        tick = time.perf_counter()
        batches = task.loader.next_step()
        step_loss = gradients(step_module, engine, batches, run.autocast, task.loss)
        step_tokens = int(engine.all_reduce(torch.tensor(float(task.step_tokens(batches)))))
        grad_norm, stepped = engine.step()
        run.step += 1
        _check_finite(run, step_loss, grad_norm, stepped)
        elapsed = time.perf_counter() - tick
        run.state["train_s"] += elapsed
        run.state["tokens"] += step_tokens
        if run.step == first_step + 1:  # this process's first: CUDA and cuBLAS start, the allocator fills
            run.state["first_steps_s"] += elapsed
            run.state["first_steps_tokens"] += step_tokens
        for key, value in (("loss", step_loss), ("steps", 1), ("s", elapsed), ("tokens", step_tokens)):
            window[key] += value
        run.bar.update(1)
        if not run.memory:
            run.memory = engine.memory()
            run.say("  memory  per rank after the first step: " + report.memory_line(run.memory))
        if t.max_minutes and "planned" not in run.state and run.step - first_step == CALIBRATION_STEPS:
            apply_budget(run, first_step, wall_before + time.perf_counter() - started)
        elif t.max_minutes and run.state.get("replan_at") == run.step:
            replan_budget(run, wall_before + time.perf_counter() - started)
        record: dict[str, float] = {}
        if run.step % t.log_interval == 0 or run.step == t.max_steps:
            record.update(_log_line(run, window, grad_norm))
            window = run.state["log_window"] = _empty_window()
        if run.step % t.eval_interval == 0 or run.step == t.max_steps:
            record.update(_evaluate(run))
        if run.log is not None and record:
            run.log.log(run.step, **record)
        if run.step % t.checkpoint_interval == 0 or run.step == t.max_steps:
            run.state["wall_s"] = wall_before + time.perf_counter() - started
            save_checkpoint(run)
    run.state["wall_s"] = wall_before + time.perf_counter() - started


def _empty_window() -> dict[str, float]:
    """The steps since the last log line: their summed loss, count, seconds and tokens."""
    return {"loss": 0.0, "steps": 0, "s": 0.0, "tokens": 0}


def _check_finite(run: Run, step_loss: float, grad_norm: float, stepped: bool) -> None:
    """Count non-finite steps (the engine skips their update); abort after max_bad_steps in a row."""
    finite = stepped and math.isfinite(step_loss)
    run.state["bad_streak"] = 0 if finite else run.state["bad_streak"] + 1
    run.state["skipped"] += 0 if stepped else 1
    if finite:
        return
    run.say(
        f"step {run.step}: non-finite loss or gradient (loss {step_loss}, grad_norm {grad_norm});"
        f" update {'applied' if stepped else 'skipped'} ({run.state['bad_streak']} in a row)"
    )
    if run.state["bad_streak"] >= run.cfg.train.max_bad_steps:
        raise LmforgeError(
            f"aborting: {run.state['bad_streak']} non-finite steps in a row"
            f" (train.max_bad_steps={run.cfg.train.max_bad_steps}); lower train.lr?"
        )


def _peak_again(run: Run, achieved: float) -> None:
    """The run computes faster than the matmul peak measured at its start (a busy moment on a
    shared CPU, with no better reading remembered): measure it again, once, and never count MFU
    against less than the rate the run itself has shown (MFU read 117% on a first run)."""
    before, said = run.peak_flops, run.peak_measured_again
    run.peak_flops = achieved if said else max(tuning.matmul_peak(run.dtype, run.engine.device), achieved)
    run.peak_measured_again = True
    if not said:  # once; a later faster window only raises the peak to its rate
        run.say(
            f"the matmul peak measured at start ({before / 1e9:,.0f} GFLOP/s) is below this run's own rate"
            f" ({achieved / 1e9:,.0f}): measured again, MFU now against {run.peak_flops / 1e9:,.0f}"
        )


def _log_line(run: Run, window: dict[str, float], grad_norm: float) -> dict[str, float]:
    t = run.cfg.train
    tok_s = window["tokens"] / window["s"]
    lr = run.scheduler.get_last_lr()[0]
    if run.flops_per_token * tok_s > run.peak_flops * run.engine.world_size:
        _peak_again(run, run.flops_per_token * tok_s / run.engine.world_size)
    mfu = run.flops_per_token * tok_s / (run.peak_flops * run.engine.world_size)
    loss = window["loss"] / window["steps"]
    eta = (t.max_steps - run.step) * window["s"] / window["steps"]
    line = step_line(run.step, t.max_steps, loss, lr, grad_norm, tok_s, mfu, eta, run.engine.device)
    record: dict[str, float] = {}
    if run.privacy:
        record["epsilon"] = run.privacy.epsilon()
        eps = record["epsilon"]  # next to no noise gives an astronomic one: not 20 digits of it
        line += f" | eps {eps:.2f}" if eps < 1e4 else f" | eps {eps:.3g}"
    run.say(line)
    return {"loss": loss, "lr": lr, "grad_norm": grad_norm, "tok_s": tok_s, "mfu": mfu, **record}


def _evaluate(run: Run) -> dict[str, float]:
    """The task's validation metrics; a new best (the task's best_metric, or with train.keep_best
    the lowest val_loss) is saved."""
    metrics = run.task.evaluate(run.module, run.engine, run.autocast)
    run.metrics = metrics
    t = run.cfg.train
    run.say(f"step {run.step:>6}/{t.max_steps} | " + " | ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    score, loss = run.best[1] * metrics[run.best[0]] if run.best else 0.0, metrics.get("val_loss", math.inf)
    if run.best and (score, -loss) > (run.state["best_score"], -run.state.get("best_tie_loss", math.inf)):
        run.state.update(best_score=score, best_step=run.step, best_tie_loss=loss)
        state = run.engine.full_state_dict()  # collective: every rank takes part
        if run.main:
            install_model_dir(run, run.run_dir / "best", state, run.step)
    return metrics
