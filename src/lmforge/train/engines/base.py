"""The engine interface the training loop drives (the part accelerate and DeepSpeed share).

An engine places the model (devices, wrappers, shards), builds the optimizer and scheduler on the
placed parameters, runs backward and the optimizer step, and saves/loads the engine-neutral
training state (engines/state.py). The loop never asks which engine it drives.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

MakeOptimizer = Callable[[nn.Module], torch.optim.Optimizer]
MakeScheduler = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


@dataclass
class Plan:
    """How one optimizer step is cut up, decided by the loop from the global batch."""

    dtype: torch.dtype
    global_batch: int
    micro_batch: int
    accumulation: int
    save_frozen: bool = True
    """Checkpoints hold the frozen parameters too. False (LoRA): only the trainable ones; the frozen
    ones are what the model was built from (train.init_from), and load leaves them as built."""


class Engine(ABC):
    name: str = "engine"
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    model: nn.Module  # the bare model, set by prepare (wrappers keep it inside)

    @abstractmethod
    def prepare(
        self, model: nn.Module, make_optimizer: MakeOptimizer, make_scheduler: MakeScheduler, plan: Plan
    ) -> tuple[nn.Module, torch.optim.lr_scheduler.LRScheduler]:
        """Place the model, build optimizer and scheduler on it; return (module to call, scheduler)."""

    @abstractmethod
    def backward(self, loss: torch.Tensor) -> None: ...

    @abstractmethod
    def step(self) -> tuple[float, bool]:
        """Clip, step optimizer and scheduler, zero grads. Returns (grad norm, stepped): a
        non-finite gradient norm skips the update."""

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write the training state (engines/state.py) into directory; every rank calls it."""

    @abstractmethod
    def load(self, directory: Path) -> None:
        """Restore a state written by any engine at any world size; every rank calls it."""

    @abstractmethod
    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole model's weights on the CPU, on rank 0 (every rank must call it; others get {})."""

    @abstractmethod
    def memory(self) -> dict[str, int]:
        """Bytes this rank holds for parameters, gradients and optimizer state (masters + moments)."""

    def describe(self) -> str:
        return self.name

    def all_reduce(self, value: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (identity in one process)."""
        return value

    def summed(self, values: dict[str, float]) -> dict[str, float]:
        """The same keys, each summed over ranks in one collective (one process: unchanged)."""
        keys = list(values)
        total = self.all_reduce(torch.tensor([float(values[k]) for k in keys], dtype=torch.float64))
        return {k: float(v) for k, v in zip(keys, total.tolist(), strict=True)}

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The same keys, each the ranks' mean: what every rank must agree on (a time to plan by)."""
        return {k: v / self.world_size for k, v in self.summed(values).items()}

    def barrier(self) -> None:  # noqa: B027 - a no-op in one process
        """Wait for every rank."""

    @contextlib.contextmanager
    def full_model(self) -> Iterator[nn.Module]:
        """The bare model with its whole weights on every rank, for code that calls its methods
        rather than the wrapper's forward (decoding). Every rank must enter it."""
        yield self.model

    @contextlib.contextmanager
    def accumulating(self, last: bool) -> Iterator[None]:
        """Context for one micro-batch; engines that sync gradients do it only when `last`."""
        yield

    def close(self) -> None:  # noqa: B027 - optional hook, most engines hold nothing
        """Release process groups and other resources."""

    def release(self) -> None:  # noqa: B027 - optional hook, most engines hold nothing
        """After a failed run: let go of the model without waiting for the other ranks."""


def saved_names(model: nn.Module, plan: Plan) -> set[str] | None:
    """The parameter names a checkpoint holds: None for all, else the trainable ones."""
    return None if plan.save_frozen else {n for n, p in model.named_parameters() if p.requires_grad}


def tensor_bytes(tensors: Iterator[torch.Tensor] | list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)
