"""Models built for weights about to be loaded, without drawing random initial weights.

Building GPT-2 small draws 124 M random numbers (2.7 s on a 2-core EPYC) that loading the
weights then overwrites: every `generate`, `chat`, `serve` and pipeline paid it at start.
`empty(build)` builds the model on the meta device (shapes, no values), then allocates its
tensors uninitialised (0.09 s). Two things `to_empty` loses are put back: parameters shared
between modules (a tied lm_head) are shared again, and buffers computed rather than loaded
(rotary angles, sinusoidal positions) are computed again by each module's `reset_buffers()`.
The caller must load every parameter: `formats.directory.load_weights` and the importers check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


def empty(build: Callable[[], M]) -> M:
    """`build()`'s module on the CPU with uninitialised parameters, ties and computed buffers kept."""
    with torch.device("meta"):
        model = build()
    first: dict[int, tuple[nn.Module, str]] = {}  # a parameter's id -> where it is first held
    aliases = []  # (module, name, (owner, owner's name)): the same parameter held twice
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False, remove_duplicate=False):
            if id(param) in first:
                aliases.append((module, name, first[id(param)]))
            else:
                first[id(param)] = (module, name)
    model.to_empty(device="cpu")
    for module, name, (owner, owner_name) in aliases:
        setattr(module, name, getattr(owner, owner_name))
    for module in model.modules():
        reset = getattr(module, "reset_buffers", None)
        if callable(reset):
            reset()
    return model
