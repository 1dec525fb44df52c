"""One optimizer step's forward and backward passes over its micro-batches, normalised per target
token across the whole accumulated, all-ranks batch (the loop's; DP-SGD has its own in privacy.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from lmforge.train.engines.base import Engine
from lmforge.train.losses import lm_loss
from lmforge.train.tasks.base import Autocast, count_targets


def forward_backward(
    module: torch.nn.Module,
    engine: Engine,
    micro_batches: list[tuple[torch.Tensor, ...]],
    autocast: Autocast = contextlib.nullcontext,
    loss_fn: Callable[..., torch.Tensor] = lm_loss,
) -> float:
    """Backward every micro-batch of one optimizer step; return the step's mean loss per target.

    Each micro-batch's summed loss is divided by the target count of the whole step on all ranks,
    so (B*k, accum=1) and (B, accum=k) give the same gradient, at any world size. A batch is a
    tuple whose last tensor holds the targets: loss_fn(module, *batch) returns their summed loss.
    """
    n_targets = engine.all_reduce(torch.tensor(float(sum(count_targets(b[-1]) for b in micro_batches))))
    scale = engine.world_size / float(n_targets)  # engines average gradients over ranks
    step_loss = torch.zeros((), dtype=torch.float64)
    for i, batch in enumerate(micro_batches):
        batch = tuple(tensor.to(engine.device) for tensor in batch)
        with engine.accumulating(last=i == len(micro_batches) - 1):
            with autocast():
                loss = loss_fn(module, *batch) * scale
            engine.backward(loss)
        step_loss += loss.detach().double().cpu()
    return float(engine.all_reduce(step_loss)) / engine.world_size
