"""AdamW with decay / no-decay parameter groups, and learning-rate schedules."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from lmforge.config import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig, fused: bool = True) -> torch.optim.AdamW:
    """Weight decay on matrices (Linear, Embedding); none on biases and norm gains. fused: one
    kernel per step (else foreach, one per op over all tensors); train/autotune.py picks by timing."""
    params = [p for p in model.parameters() if p.requires_grad]  # tied weights appear once
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]  # LoRA: all matrices; DeepSpeed drops empty groups
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8,
                             fused=fused, foreach=not fused)  # fmt: skip


def lr_multiplier(cfg: TrainConfig) -> Callable[[int], float]:
    """Multiplier of cfg.lr at optimizer step s (0-based), for LambdaLR.

    linear: warmup then linear decay to 0, exactly HF's get_linear_schedule_with_warmup.
    cosine: warmup then cosine decay to min_lr at max_steps. constant: warmup then flat.
    max_steps and warmup_steps are read at each call: a time budget (train.max_minutes) sets them
    after its calibration steps, and the schedule follows.
    """
    floor = cfg.min_lr / cfg.lr

    def linear(s: int) -> float:
        warmup, total = cfg.warmup_steps, cfg.max_steps
        if s < warmup:
            return s / max(1, warmup)
        return max(0.0, (total - s) / max(1, total - warmup))

    def cosine(s: int) -> float:
        warmup, total = cfg.warmup_steps, cfg.max_steps
        if s < warmup:
            return s / max(1, warmup)
        progress = min(1.0, (s - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def constant(s: int) -> float:
        warmup = cfg.warmup_steps
        return s / max(1, warmup) if s < warmup else 1.0

    return {"linear": linear, "cosine": cosine, "constant": constant}[cfg.schedule]


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(cfg))
