"""THE training loop: one loop for every engine and model family.

train() resolves the run directory and data, builds model, optimizer, schedule and engine,
restores a checkpoint when resuming, then steps: fetch the global batch, normalise the loss per
target token across all its micro-batches and ranks, backward each, step the engine (clip,
update, schedule), log, evaluate, checkpoint. It ends with an export and summary.json.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from tqdm import tqdm

from lmforge.config import Config, config_to_toml
from lmforge.data.loader import Batch, BatchLoader, eval_batches
from lmforge.data.shards import open_split, read_meta
from lmforge.errors import LmforgeError
from lmforge.formats.directory import write_model_dir, write_model_files
from lmforge.hardware import matmul_peak_flops, resolve_dtype
from lmforge.model.gpt import GPT
from lmforge.tokenization.marian import load_translation_tokenizer
from lmforge.tokenization.tokenizer import Tokenizer
from lmforge.train import checkpoint as ckpt
from lmforge.train.engines import build_engine
from lmforge.train.engines.base import Engine, Plan
from lmforge.train.evaluate import evaluate, rank_share
from lmforge.train.losses import count_targets, lm_loss
from lmforge.train.metrics import MetricsLog, format_duration, peak_rss_gb, plot_loss, step_line
from lmforge.train.optim import build_optimizer, build_scheduler
from lmforge.train.run_dir import ensure_data, init_model, resolve_run


def train(
    config: str | Path | Config | None = None,
    overrides: list[str] | None = None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    overwrite: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train a model; returns the run summary (also written to RUN_DIR/summary.json).

    config: a TOML recipe or a Config; overrides: `section.key=value` strings; out: the run
    directory (default runs/<recipe name>); resume: a run directory to continue exactly.
    """
    run_dir, cfg = resolve_run(config, overrides, out, resume, overwrite)
    engine = build_engine(cfg.engine, cfg.train)
    main = engine.rank == 0
    say: Callable[[str], None] = (lambda _: None) if quiet or not main else tqdm.write

    init = init_model(cfg) if cfg.train.init_from else None
    init_tokenizer = init[1] if init else None
    if main:  # one rank prepares raw input; the others wait, then read the same shards
        ensure_data(cfg, run_dir, say, init_tokenizer)
    engine.barrier()
    data_dir = ensure_data(cfg, run_dir, say, init_tokenizer, prepare=False)
    meta = read_meta(data_dir)
    tokenizer = load_translation_tokenizer(data_dir)  # tokenizer.json, or a Marian model's files
    if init is not None and tokenizer.sha256() != init[1].sha256():
        raise LmforgeError(
            f"{data_dir}: tokenized with another tokenizer than train.init_from={cfg.train.init_from!r}"
            " (give raw text as data.input to tokenize it with the model's)"
        )
    if cfg.model.vocab_size == 0:
        cfg.model.vocab_size = meta["vocab_size"]
    elif cfg.model.vocab_size < meta["vocab_size"]:
        raise LmforgeError(
            f"model.vocab_size={cfg.model.vocab_size} < the data's vocabulary of {meta['vocab_size']}"
        )
    t = cfg.train
    per_rank, rest = divmod(t.batch_size, engine.world_size)
    micro = t.micro_batch_size or per_rank
    if rest or per_rank % micro:
        raise LmforgeError(
            f"train.batch_size={t.batch_size} must split into world_size={engine.world_size}"
            f" x micro_batch_size={micro} x accumulation steps"
        )
    accum = per_rank // micro
    if main:
        (run_dir / "config.toml").write_text(config_to_toml(cfg))
    if (meta.get("task", "lm") == "translation") != (cfg.data.task == "translation"):
        raise LmforgeError(
            f"{data_dir}: prepared for task {meta.get('task', 'lm')!r}, but data.task={cfg.data.task!r}"
        )
    task = None  # language modelling; other tasks supply model, batches, loss and metrics
    if cfg.data.task == "translation":
        from lmforge.train.tasks.translation import TranslationTask

        task = TranslationTask(cfg, data_dir, tokenizer, engine, micro, init[0] if init else None)

    random.seed(t.seed)
    torch.manual_seed(t.seed)
    model = task.build_model() if task is not None else GPT(cfg.model)
    extra = task.model_extra() if task is not None else {}  # config.json keys beyond cfg.model
    if init is not None and resume is None:
        model.load_state_dict(init[0].state_dict())
        tokenizer = init[1]  # keeps the model's own EOS id
    n_params, flops_per_token = model.num_params(), model.flops_per_token()  # before any sharding
    model_name = type(model).__name__  # FSDP2 renames the class it shards (FSDPGPT)
    dtype, dtype_reason = resolve_dtype(t.dtype, cfg.model, micro * cfg.model.block_size, engine.device)
    plan = Plan(dtype=dtype, global_batch=t.batch_size, micro_batch=micro, accumulation=accum)
    module, scheduler = engine.prepare(
        model, lambda m: build_optimizer(m, t), lambda o: build_scheduler(o, t), plan
    )
    autocast: Callable[[], AbstractContextManager] = (
        (lambda: torch.autocast(engine.device.type, dtype=dtype))
        if dtype != torch.float32
        else contextlib.nullcontext
    )

    loader = (
        task.loader
        if task is not None
        else BatchLoader(
            open_split(data_dir, "train"),
            cfg.model.block_size,
            t.batch_size,
            micro,
            engine.rank,
            engine.world_size,
            t.seed,
        )
    )
    val = (
        []
        if task is not None
        else eval_batches(
            open_split(data_dir, "val"), cfg.model.block_size, t.eval_batches * t.batch_size, micro
        )
    )
    val, val_per_rank = rank_share(val, engine)
    token_bytes = torch.tensor(tokenizer.token_bytes(), dtype=torch.int64)

    step, state = 0, {"bad_streak": 0, "skipped": 0, "train_s": 0.0, "wall_s": 0.0, "tokens": 0}
    if task is not None:
        state.update(best_bleu=-1.0, best_step=0)
    if resume is not None:
        last = ckpt.latest_checkpoint(run_dir / "checkpoints")
        engine.load(last)
        saved = ckpt.read_trainer_state(last)
        ckpt.restore_rng(last, saved)
        loader.load_state_dict(saved["loader"])
        step = saved["step"]
        state.update({k: saved[k] for k in state})
        say(f"resumed from {last} (step {step})")

    tokens_per_step = t.batch_size * cfg.model.block_size
    peak = matmul_peak_flops(dtype, engine.device)
    say(f"lmforge train -> {run_dir}")
    say(
        f"  data    {data_dir}: {meta['tokens']['train']:,} train / {meta['tokens']['val']:,} val tokens,"
        f" vocab {meta['vocab_size']} ({meta.get('tokenizer', '?')})"
    )
    say(
        f"  model   {model_name} {cfg.model.n_layer}L x {cfg.model.n_head}H x {cfg.model.n_embd},"
        f" context {cfg.model.block_size}: {n_params:,} parameters"
    )
    say(
        f"  engine  {engine.describe()}, world size {engine.world_size}\n"
        f"  batch   global {t.batch_size} sequences ({tokens_per_step:,} tokens) = micro-batch {micro}"
        f" x {accum} accumulation x {engine.world_size} rank(s)"
    )
    say(f"  dtype   {dtype_reason}")
    say(f"  steps   {step} -> {t.max_steps}, lr {t.lr:g} {t.schedule}, warmup {t.warmup_steps}")

    log = MetricsLog(run_dir, resume_step=step, tensorboard=main) if main else None
    bar = tqdm(
        total=t.max_steps,
        initial=step,
        disable=None if main and not quiet else True,
        unit="step",
        dynamic_ncols=True,
        leave=False,
    )
    window_loss, window_steps, window_s, grad_norm, window_tokens = 0.0, 0, 0.0, 0.0, 0
    val_loss = val_bpb = float("nan")
    memory: dict[str, int] = {}
    wall_before, started = state["wall_s"], time.perf_counter()  # wall time adds up across resumes
    try:
        while step < t.max_steps:
            tick = time.perf_counter()
            batches = loader.next_step()
            step_loss = forward_backward(module, engine, batches, autocast, task.loss_fn if task else lm_loss)
            step_tokens = tokens_per_step
            if task is not None:  # padded batches: ranks hold different counts, so sum them
                step_tokens = int(engine.all_reduce(torch.tensor(float(task.step_tokens(batches)))))
            grad_norm, stepped = engine.step()
            step += 1
            finite = stepped and math.isfinite(step_loss)
            state["bad_streak"] = 0 if finite else state["bad_streak"] + 1
            state["skipped"] += 0 if stepped else 1
            if not finite:
                say(
                    f"step {step}: non-finite loss or gradient (loss {step_loss}, grad_norm {grad_norm});"
                    f" update {'applied' if stepped else 'skipped'} ({state['bad_streak']} in a row)"
                )
                if state["bad_streak"] >= t.max_bad_steps:
                    raise LmforgeError(
                        f"aborting: {state['bad_streak']} non-finite steps in a row"
                        f" (train.max_bad_steps={t.max_bad_steps}); lower train.lr?"
                    )
            elapsed = time.perf_counter() - tick
            state["train_s"] += elapsed
            state["tokens"] += step_tokens
            window_tokens += step_tokens
            window_loss, window_steps, window_s = (
                window_loss + step_loss,
                window_steps + 1,
                window_s + elapsed,
            )
            bar.update(1)
            if not memory:
                memory = engine.memory()
                say("  memory  per rank after the first step: " + _memory_line(memory))

            record: dict[str, float] = {}
            if step % t.log_interval == 0 or step == t.max_steps:
                tok_s = window_tokens / window_s
                eta = (t.max_steps - step) * window_s / window_steps
                lr = scheduler.get_last_lr()[0]
                record.update(
                    loss=window_loss / window_steps,
                    lr=lr,
                    grad_norm=grad_norm,
                    tok_s=tok_s,
                    mfu=flops_per_token * tok_s / (peak * engine.world_size),
                )
                say(step_line(step, t.max_steps, record["loss"], lr, grad_norm, tok_s, record["mfu"], eta))
                window_loss, window_steps, window_s, window_tokens = 0.0, 0, 0.0, 0
            if (step % t.eval_interval == 0 or step == t.max_steps) and task is not None:
                record.update(task.evaluate(module, engine, autocast))
                val_loss, val_bpb = record["val_loss"], record["val_bpb"]
                say(
                    f"step {step:>6}/{t.max_steps} | "
                    + " | ".join(f"{k} {record[k]:.4f}" for k in _VAL_KEYS if k in record)
                )
                if record.get("val_bleu", -1.0) > state["best_bleu"]:
                    state.update(best_bleu=record["val_bleu"], best_step=step)
                    best = engine.full_state_dict()  # collective
                    if main:
                        _write_best(run_dir, cfg, best, tokenizer, extra)
            elif step % t.eval_interval == 0 or step == t.max_steps:
                val_loss, val_bpb = evaluate(module, val, token_bytes, engine, autocast, val_per_rank)
                record.update(val_loss=val_loss, val_bpb=val_bpb)
                say(f"step {step:>6}/{t.max_steps} | val_loss {val_loss:.4f} | val_bpb {val_bpb:.4f}")
            if log is not None and record:
                log.log(step, **record)
            if step % t.checkpoint_interval == 0 or step == t.max_steps:
                state["wall_s"] = wall_before + time.perf_counter() - started
                _save(run_dir, step, engine, cfg, tokenizer, loader, state, main, extra)
    finally:
        bar.close()
        if log is not None:
            log.close()

    if math.isnan(val_loss) and task is not None:  # resumed a finished run: evaluate it once
        val_loss, val_bpb = (m := task.evaluate(module, engine, autocast))["val_loss"], m["val_bpb"]
    elif math.isnan(val_loss):  # resumed a run that had already finished: evaluate it once
        val_loss, val_bpb = evaluate(module, val, token_bytes, engine, autocast, val_per_rank)
    summary = {
        "val_loss": val_loss,
        "val_bpb": val_bpb,
        "steps": step,
        "skipped_steps": state["skipped"],
        "tokens": state["tokens"],
        "tokens_per_s": state["tokens"] / max(state["train_s"], 1e-9),
        "wall_s": wall_before + time.perf_counter() - started,
        "train_s": state["train_s"],
        "dtype": str(dtype).removeprefix("torch."),
        "engine": cfg.engine.name,
        "world_size": engine.world_size,
        "parameters": n_params,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "mfu": flops_per_token * state["tokens"] / max(state["train_s"], 1e-9) / (peak * engine.world_size),
        "peak_flops": peak,
        "memory_per_rank": memory,  # bytes held for params, grads, optimizer state (rank 0)
        "peak_rss_gb_per_rank": _per_rank(engine, peak_rss_gb()),
    }
    final = engine.full_state_dict()  # collective: sharded engines gather on every rank
    if task is not None:  # the export is the checkpoint with the best validation BLEU
        summary.update(task.summary(), best_bleu=state["best_bleu"], best_step=state["best_step"])
        if (run_dir / "best" / "model.safetensors").is_file():
            final = load_file(str(run_dir / "best" / "model.safetensors"))
    if main:
        write_model_dir(run_dir / "model", cfg.model, final, tokenizer, extra=extra)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        plot_loss(run_dir)
        say(
            f"done: val_loss {val_loss:.4f} | val_bpb {val_bpb:.4f} | {summary['tokens_per_s']:,.0f} tok/s"
            f" | {format_duration(state['train_s'])} | model in {run_dir / 'model'}"
        )
    engine.close()
    return summary


def forward_backward(
    module: torch.nn.Module,
    engine: Engine,
    micro_batches: list[Batch],
    autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext,
    loss_fn: Callable[..., torch.Tensor] = lm_loss,
) -> float:
    """Backward every micro-batch of one optimizer step; return the step's mean loss per token.

    Each micro-batch's summed loss is divided by the target count of the whole step on all ranks,
    so (B*k, accum=1) and (B, accum=k) give the same gradient, at any world size. A batch is a
    tuple whose last tensor holds the targets: loss_fn(module, *batch) returns their summed loss.
    """
    n_tokens = engine.all_reduce(torch.tensor(float(sum(count_targets(b[-1]) for b in micro_batches))))
    scale = engine.world_size / float(n_tokens)  # engines average gradients over ranks
    step_loss = torch.zeros((), dtype=torch.float64)
    for i, batch in enumerate(micro_batches):
        batch = tuple(tensor.to(engine.device) for tensor in batch)
        with engine.accumulating(last=i == len(micro_batches) - 1):
            with autocast():
                loss = loss_fn(module, *batch) * scale
            engine.backward(loss)
        step_loss += loss.detach().double()
    return float(engine.all_reduce(step_loss)) / engine.world_size


_VAL_KEYS = ("val_loss", "val_bpb", "val_bleu", "val_chrf")


def _write_best(
    run_dir: Path, cfg: Config, state: dict[str, torch.Tensor], tokenizer: Tokenizer, extra: dict[str, Any]
) -> None:
    """run_dir/best: the model with the best validation score so far, replaced atomically."""
    tmp = run_dir / ".best-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    write_model_dir(tmp, cfg.model, state, tokenizer, extra=extra)
    shutil.rmtree(run_dir / "best", ignore_errors=True)
    os.replace(tmp, run_dir / "best")


def _save(
    run_dir: Path,
    step: int,
    engine: Any,
    cfg: Config,
    tokenizer: Tokenizer,
    loader: BatchLoader,
    state: dict[str, Any],
    main: bool,
    extra: dict[str, Any],
) -> None:
    def write(directory: Path) -> None:
        engine.save(directory)
        if main:
            write_model_files(directory, cfg.model, tokenizer, extra=extra)

    ckpt.save_checkpoint(
        run_dir / "checkpoints",
        step,
        write,
        {"loader": loader.state_dict(), **state},
        keep=cfg.train.keep_checkpoints,
        main=main,
        barrier=engine.barrier,
    )


def _per_rank(engine: Engine, value: float) -> list[float]:
    slots = torch.zeros(engine.world_size, dtype=torch.float64)
    slots[engine.rank] = value
    return [round(v, 3) for v in engine.all_reduce(slots).tolist()]


def _memory_line(memory: dict[str, int]) -> str:
    mib = {k: v / 2**20 for k, v in memory.items()}
    return (
        f"params {mib['params']:.1f} MiB, grads {mib['grads']:.1f} MiB,"
        f" optimizer state {mib['optimizer']:.1f} MiB"
    )
