"""The engine interface the training loop drives (the part accelerate and DeepSpeed share)."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn


class Engine(ABC):
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @abstractmethod
    def prepare(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
    ) -> nn.Module:
        """Take ownership of model, optimizer and scheduler; return the module to call."""

    @abstractmethod
    def backward(self, loss: torch.Tensor) -> None: ...

    @abstractmethod
    def step(self) -> tuple[float, bool]:
        """Clip, step optimizer and scheduler, zero grads. Returns (grad norm, stepped): a
        non-finite gradient norm skips the update."""

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write model (model.safetensors), optimizer and scheduler state into directory."""

    @abstractmethod
    def load(self, directory: Path) -> None: ...

    @abstractmethod
    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole model's weights, gathered, on the CPU (every rank may call it)."""

    def all_reduce(self, value: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (identity in one process)."""
        return value

    @contextlib.contextmanager
    def accumulating(self, last: bool) -> Iterator[None]:
        """Context for one micro-batch; engines that sync gradients do it only when `last`."""
        yield

    def close(self) -> None:  # noqa: B027 - optional hook, most engines hold nothing
        """Release process groups and other resources."""
