"""Validation: loss per token and bits per byte on a fixed set of held-out windows."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TypeVar

import torch
from torch import nn

from lmforge.data.loader import Batch
from lmforge.train.engines.base import Engine
from lmforge.train.losses import lm_token_losses

T = TypeVar("T")


def rank_share(batches: list[T], engine: Engine) -> tuple[list[T], int]:
    """(this rank's validation batches, how many forwards every rank runs). Sharded engines
    gather weights inside forward, so a rank with fewer batches runs extra ones up to that."""
    return batches[engine.rank :: engine.world_size], -(-len(batches) // engine.world_size)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: list[Batch],
    token_bytes: torch.Tensor,
    engine: Engine,
    autocast: Callable[[], AbstractContextManager],
    pad_to: int = 0,
    spare: Batch | None = None,
) -> tuple[float, float]:
    """(val loss in nats/token, bits per byte). Bits per byte counts only targets that stand for
    text (special tokens have 0 bytes), so it compares across tokenizers.

    Sharded engines gather weights inside forward, so every rank must run as many forwards:
    a rank with fewer batches runs extra ones up to `pad_to` that count for nothing, on `spare`
    (the split's first batch) where it has none (FSDP hung at the first evaluation when the
    validation split held fewer batches than ranks)."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64)  # loss, tokens, loss on text tokens, bytes
    filler = batches[0] if batches else spare
    if filler is not None and len(batches) < pad_to:
        with autocast():
            for _ in range(pad_to - len(batches)):
                model(filler[0].to(engine.device))
    for inputs, targets in batches:
        with autocast():
            device = engine.device
            losses = lm_token_losses(model, inputs.to(device), targets.to(device)).double().cpu()
        nbytes = token_bytes[targets.flatten()]
        text = nbytes > 0
        totals += torch.stack(
            [losses.sum(), torch.tensor(float(losses.numel())), losses[text].sum(), nbytes.sum().double()]
        )
    totals = engine.all_reduce(totals)
    model.train(was_training)
    loss, tokens, text_loss, nbytes = totals.tolist()
    return loss / tokens, text_loss / (math.log(2) * max(nbytes, 1.0))
