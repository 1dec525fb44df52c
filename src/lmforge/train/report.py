"""What a training run says about itself: its start-up lines, its FLOPs per token (for MFU) and
summary.json. Kept apart from train/loop.py, which only runs the steps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lmforge import malloc
from lmforge.model.kinds import heads_note
from lmforge.train.engines.base import Engine, Plan
from lmforge.train.metrics import peak_gpu_gb, peak_rss_gb

if TYPE_CHECKING:
    from lmforge.train.loop import Run


def flops_per_token(model: nn.Module, seq_len: int) -> float:
    """Training FLOPs per token (PaLM, app. B): 6 per weight of a matmul that trains (forward 2,
    backward 4: the input's gradient and the weight's), 4 per frozen one (no weight gradient:
    LoRA's base), plus attention's 12 L d T at the length trained on (not the model's context:
    a fine-tune of an 8k-context model on 192-token chats would count 40x too much). Embedding
    lookups are free; a tied output layer is a matmul and counts, but not where the task's model
    never runs it (`unused_modules`: a classifier's lm_head, an encoder's pooler). The
    encoder-decoder keeps its own count (models/seq2seq.py), as each token passes one of its two
    stacks."""
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "arch", "gpt") == "seq2seq":
        return float(model.flops_per_token())
    weights = 0.0
    unused = set(getattr(model, "unused_modules", ()))  # a task model's idle parts (a classifier's lm_head)
    for name, module in model.named_modules():
        if name in unused or any(name.startswith(u + ".") for u in unused):
            continue
        if isinstance(module, nn.Linear):  # LoRALinear too: its frozen weight and its adapters
            weights += sum(
                (6 if p.requires_grad else 4) * p.numel() for p in module.parameters() if p.dim() > 1
            )
    if config is None:  # a classifier: its body's config
        config = getattr(getattr(model, "body", None), "config", None)
    if config is None:
        return weights
    return weights + 12 * config.n_layer * config.n_head * config.head_size() * min(
        seq_len or config.block_size, config.block_size
    )


def say_start(run: Run, model_name: str, plan: Plan, kernels: str) -> None:
    """The start-up lines: what trains, on what, how."""
    t, c, engine, say = run.cfg.train, run.cfg.model, run.engine, run.say
    say(f"lmforge train -> {run.run_dir}")
    say(f"  data    {run.task.describe()}")
    say(
        f"  model   {model_name} {c.n_layer}L x {c.n_head}H{heads_note(c.head_dim, c.qk_norm)} x {c.n_embd},"
        f" context {c.block_size}:"
        f" {run.n_params:,} parameters ({run.task.name})"
    )
    ignored = run.cfg.engine.ignored()  # said, not silently dropped
    unused = f" (ignores {'; '.join(ignored)})" if ignored else ""
    say(
        f"  engine  {engine.describe()}{unused}, world size {engine.world_size}\n"
        f"  batch   global {t.batch_size} examples = micro-batch {plan.micro_batch} x {plan.accumulation}"
        f" accumulation x {engine.world_size} rank(s)"
        + (f", windows of {run.cfg.data.seq_len} tokens (data.seq_len)" if run.cfg.data.seq_len else "")
    )
    say(f"  kernels {kernels}")
    say(f"  malloc  {malloc.describe(run.cfg.engine.name)}")
    if run.lora_base:
        lo, trained = run.cfg.lora, run.n_trainable
        whole = ", ".join(n.strip() for n in lo.also_train.split(",") if n.strip())
        say(
            f"  lora    rank {lo.rank}, alpha {lo.alpha:g} on {lo.targets}"
            + (f", {whole} trained whole" if whole else "")
            + f": {trained:,} trainable parameters ({100 * trained / run.n_params:.2f}%), base"
            f" {run.lora_base['path']}"
        )
    budget = f", budget {t.max_minutes:g} min" if t.max_minutes else ""
    warmup = f"warmup {t.warmup_steps}"
    if t.warmup_steps >= t.max_steps > 0:  # a budget that shortens the run refits it (train/budget.py)
        unless = ", unless the time budget shortens the run" if t.max_minutes else ""
        # update k (1-based) uses the multiplier of step k-1 (LambdaLR starts at 0): the last update
        # goes at lr*(max_steps-1)/warmup; lr*max_steps/warmup, the last step's logged lr, none uses
        peak = t.lr * (t.max_steps - 1) / t.warmup_steps
        warmup += f" (the whole run: the lr peaks at {peak:.3g}, no decay{unless})"
    say(f"  steps   {run.step} -> {t.max_steps}{budget}, lr {t.lr:g} {t.schedule}, {warmup}")


def summary(run: Run, peak: float) -> dict[str, Any]:
    """summary.json's figures (the task's own keys last)."""
    engine, state = run.engine, run.state
    train_s = max(state["train_s"], 1e-9)
    # the steps after each process's first: a short run's first step (on a GPU, seconds of CUDA and
    # cuBLAS start-up) would otherwise halve its speed; a run of one step per process has only that
    steady_tokens = state["tokens"] - state["first_steps_tokens"]
    steady_s = state["train_s"] - state["first_steps_s"]
    steady = steady_tokens / steady_s if steady_tokens > 0 and steady_s > 0 else state["tokens"] / train_s
    return {
        **run.metrics,
        "steps": run.step,
        "skipped_steps": state["skipped"],
        "tokens": state["tokens"],
        "tokens_per_s": state["tokens"] / train_s,
        "tokens_per_s_steady": steady,
        "wall_s": state["wall_s"],
        "train_s": state["train_s"],
        "dtype": str(run.dtype).removeprefix("torch."),
        "kernels": state["kernels"],  # dtype, attention route and AdamW, as train/autotune.py chose
        "engine": run.cfg.engine.name,
        "world_size": engine.world_size,
        "parameters": run.n_params,
        "trainable_parameters": run.n_trainable,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "malloc": malloc.in_use(),  # tcmalloc or glibc: steps and RSS differ (lmforge/malloc.py)
        "mfu": run.flops_per_token * state["tokens"] / train_s / (peak * engine.world_size),
        "mfu_steady": run.flops_per_token * steady / (peak * engine.world_size),
        "peak_flops": peak,
        "memory_per_rank": run.memory,  # bytes held for params, grads, optimizer state (rank 0)
        "peak_rss_gb_per_rank": per_rank(engine, peak_rss_gb()),
        **_gpu_memory(engine),
        **run.task.summary(),
    }


def _gpu_memory(engine: Engine) -> dict[str, list[float]]:
    """On CUDA: each rank's peak tensor memory on its GPU (what a plan's per-rank peak predicts)."""
    gpu = peak_gpu_gb(engine.device)
    return {} if gpu is None else {"peak_gpu_gb_per_rank": per_rank(engine, gpu)}


def per_rank(engine: Engine, value: float) -> list[float]:
    slots = torch.zeros(engine.world_size, dtype=torch.float64)
    slots[engine.rank] = value
    return [round(v, 3) for v in engine.all_reduce(slots).tolist()]


def memory_line(memory: dict[str, int]) -> str:
    return (
        f"params {_size(memory['params'])}, grads {_size(memory['grads'])},"
        f" optimizer state {_size(memory['optimizer'])}"
    )


def _size(n: int) -> str:
    """MiB to one decimal; KiB below 0.1 MiB (a LoRA's few adapters showed as "0.0 MiB")."""
    return f"{n / 2**20:.1f} MiB" if n == 0 or n >= 0.1 * 2**20 else f"{n / 2**10:.1f} KiB"
