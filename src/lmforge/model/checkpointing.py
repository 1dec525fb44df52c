"""Activation checkpointing per Transformer block (Chen et al., 2016, "Training Deep Nets with
Sublinear Memory Cost"): in training, a block keeps only its inputs for backward and runs its
forward again when backward reaches it, so autograd holds one block's activations at a time
instead of every block's, for about one more forward pass of compute (~1/3 more per step).

A block opts in by routing its forward through `run_block`; `set_activation_checkpointing` is the
switch the training loop sets once. torch.utils.checkpoint's non-reentrant form is used: it keeps
parameter gradients flowing when inputs need none, works under autocast, and stashes the RNG
state before the first forward and restores it for the recomputation (preserve_rng_state), so
dropout draws the same masks twice and the gradients equal those of a run without it. Engines
never see it: FSDP2 and ZeRO-3 gather a block's weights in hooks around the block's call, and the
recomputation happens inside that call's backward, when the weights are gathered again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def run_block(block: nn.Module, forward: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
    """forward(*args), recomputed in backward when the block is checkpointed and training with
    autograd on (evaluation and decoding run plainly: there is no backward to save memory for)."""
    if getattr(block, "checkpoint_activations", False) and block.training and torch.is_grad_enabled():
        return checkpoint(forward, *args, use_reentrant=False)
    return forward(*args)


def set_activation_checkpointing(model: nn.Module, enabled: bool) -> int:
    """Turn checkpointing on or off in every block of `model` (any family, heads and adapters
    included); returns the number of blocks switched."""
    blocks = [m for m in model.modules() if hasattr(m, "checkpoint_activations")]
    for block in blocks:
        block.checkpoint_activations = enabled
    return len(blocks)
