"""The Task interface: everything one kind of training needs beyond THE loop (train/loop.py).

The loop knows engines, steps, logging, checkpoints and time; a task knows its data, its model,
its loss and what a good model is. The loop never asks which task it runs.

Adding a task (question answering, instruction tuning, ...) is one new file in train/tasks/:

1. Subclass `Task`, set `name` (the `data.task` value) and, when a validation score should pick
   the exported model, `best_metric` (a key of `evaluate`'s dict; higher is better). Set
   `fixed_shapes` when every micro-batch has one shape: long runs may then compile the forward.
2. In `__init__(self, setup)` read `setup.cfg`, load `train.init_from` if the task starts from a
   model, prepare the data on rank 0 only (`setup.engine.barrier()` after), and set
   `self.tokenizer` and `self.loader`: an object with `next_step() -> list[batch]` (this rank's
   micro-batches of one optimizer step, `setup.micro` examples each, the global batch dealt out
   by `setup.engine.rank` / `world_size`), `state_dict()` / `load_state_dict()` (the position,
   saved in every checkpoint for exact resume), `data_digest()` (what it draws from:
   data/fingerprint.py; a resume on other data is refused) and `steps_per_epoch`.
   A batch is a tuple of CPU tensors whose LAST tensor holds the targets, IGNORE (-100) where a
   position counts for nothing; the loop moves it to the engine's device. `setup.resumed` is the
   checkpoint a resumed run continues from (the model files the task wrote into it then: what an
   older lmforge's task did, which the run may have to keep doing; classification_rules.py).
3. `build_model()`: the nn.Module to train (with `num_params()`); `loss(model, *batch)`: the loss
   SUMMED over the batch's targets (the loop divides by the target count of the whole step on
   all ranks, so accumulation and world size do not change the gradient).
4. `evaluate(model, engine, autocast)`: validation metrics, the same on every rank. Every rank
   must run the same number of forwards (sharded engines gather weights inside forward): deal
   batches with `rank_share` and pad with forwards that count for nothing. Move batches to
   `engine.device`.
5. `write_model_files(directory)`: config.json + tokenizer files that make a directory of
   weights a loadable model directory (every checkpoint and the export are such directories).
6. Register the class in TASKS below and add `data.task`'s value to config.TASKS; write a test
   that trains it on every engine (tests/test_tasks_on_engines.py) and resumes it exactly.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from lmforge.config import Config
from lmforge.data.loader import IGNORE
from lmforge.train.engines.base import Engine

Autocast = Callable[[], AbstractContextManager]


def take_loaded(task: Any) -> nn.Module:
    """train.init_from's loaded model (`task.init_model`), handed over once: the task lets go of
    it, so the weights are not kept twice for the whole run (538 MB for SmolLM2). A second call is
    a bug, said as one rather than building from nothing."""
    loaded, task.init_model = task.init_model, None
    if loaded is None:
        raise RuntimeError("build_model runs once: train.init_from's weights were already handed over")
    return loaded


class StepLoader(Protocol):
    steps_per_epoch: int

    def data_digest(self) -> str: ...
    def next_step(self) -> list[tuple[torch.Tensor, ...]]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class Setup:
    """What the loop hands a task when it builds it."""

    cfg: Config
    run_dir: Path
    engine: Engine
    micro: int  # examples per micro-batch on each rank
    say: Callable[[str], None]
    resumed: Path | None = None  # the checkpoint a resumed run continues from (None: a new run)


class Task(ABC):
    name: ClassVar[str]
    best_metric: ClassVar[str | None] = None  # None: the last step's model (lowest val_loss: train.keep_best)
    # Every micro-batch has one shape, so one compiled graph serves the run (train/compiling.py);
    # padded batches vary in width and would recompile.
    fixed_shapes: ClassVar[bool] = False
    tokenizer: Any
    loader: StepLoader

    @abstractmethod
    def build_model(self) -> nn.Module:
        """The model to train, initialised (from train.init_from when given); seeded by the loop."""

    @abstractmethod
    def loss(self, model: nn.Module, *batch: torch.Tensor) -> torch.Tensor:
        """The loss summed over the batch's targets (batch[-1])."""

    @abstractmethod
    def evaluate(self, model: nn.Module, engine: Engine, autocast: Autocast) -> dict[str, float]:
        """Validation metrics (val_loss first), equal on every rank."""

    @abstractmethod
    def write_model_files(self, directory: Path) -> None:
        """config.json and the tokenizer: what makes a directory of weights a model directory."""

    def describe(self) -> str:
        """The start-up line about the data."""
        return self.name

    def step_tokens(self, micro_batches: list[tuple[torch.Tensor, ...]]) -> int:
        """Tokens this rank processed in one step (for tokens/s): every input position."""
        return sum(int(b[0].numel()) for b in micro_batches)

    def micro_batch_tokens(self) -> int:
        """Typical tokens in one micro-batch (the dtype choice weighs it)."""
        return 0

    def summary(self) -> dict[str, Any]:
        """Keys added to summary.json."""
        return {"task": self.name}


def count_targets(targets: torch.Tensor) -> int:
    """The positions that count in the loss: what the loop normalises by. Float targets (a
    classifier's multi-hot rows or regression numbers) all count: -100.0 is a number there."""
    if targets.is_floating_point():
        return targets.numel()
    return int((targets != IGNORE).sum())


# data.task -> "module:class"; imported only when that task runs
TASKS: dict[str, str] = {
    "lm": "lmforge.train.tasks.lm:LanguageModelling",
    "translation": "lmforge.train.tasks.translation:TranslationTask",
    "classification": "lmforge.train.tasks.classification:ClassificationTask",
    "chat": "lmforge.train.tasks.chat:ChatTask",
    "qa": "lmforge.train.tasks.qa:QATask",
}


def build_task(setup: Setup) -> Task:
    module, cls = TASKS[setup.cfg.data.task].split(":")
    return getattr(importlib.import_module(module), cls)(setup)
