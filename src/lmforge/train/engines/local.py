"""Plain PyTorch in one process: the default engine, and the reference the others must match."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from lmforge.config import TrainConfig
from lmforge.model.directory import WEIGHTS, load_weights, save_weights
from lmforge.train.engines.base import Engine


class LocalEngine(Engine):
    def __init__(self, cfg: TrainConfig) -> None:
        self.grad_clip = cfg.grad_clip

    def prepare(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
    ) -> nn.Module:
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        return model

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> tuple[float, bool]:
        max_norm = self.grad_clip if self.grad_clip > 0 else math.inf
        norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        stepped = math.isfinite(norm)
        if stepped:
            self.optimizer.step()
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm, stepped

    def save(self, directory: Path) -> None:
        save_weights(directory / WEIGHTS, self.model.state_dict())
        torch.save(
            {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
            directory / "optimizer.pt",
        )

    def load(self, directory: Path) -> None:
        load_weights(self.model, directory / WEIGHTS)
        state = torch.load(directory / "optimizer.pt", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
