"""Training objectives. Each returns (summed loss, counted target tokens) so the loop can
normalise per token across the whole accumulated, all-ranks batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.data.loader import IGNORE


def lm_token_losses(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy per target, (B*T,); ignored targets give 0. inputs, targets: (B, T)."""
    logits = model(inputs)  # (B, T, vocab)
    return F.cross_entropy(
        logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="none"
    )


def lm_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy summed over targets."""
    return lm_token_losses(model, inputs, targets).sum()


def count_targets(targets: torch.Tensor) -> int:
    return int((targets != IGNORE).sum())
