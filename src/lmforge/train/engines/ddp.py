"""PyTorch DistributedDataParallel: every rank holds the whole model; gradients are averaged
across ranks by all-reduce, once per optimizer step (not per micro-batch)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lmforge.config import EngineConfig, TrainConfig
from lmforge.train.engines.base import Plan
from lmforge.train.engines.distributed import all_reduce_sum, destroy_process_group, init_process_group
from lmforge.train.engines.local import LocalEngine


class DistributedEngine(LocalEngine):
    """What DDP and FSDP2 share: a process group, all-reduce, barrier."""

    def __init__(self, engine: EngineConfig, train: TrainConfig) -> None:
        super().__init__(engine, train)
        self.device = init_process_group(engine.backend, engine.timeout_s)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    def all_reduce(self, value: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(value, self.device)

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        self.release()
        destroy_process_group()

    def release(self) -> None:
        # The wrapped model goes before the group: freed after it, DDP's reducer held the group's
        # last reference, and its destructor joined gloo's threads under the GIL while one of them
        # waited for the GIL (a finished 2-rank run hung at exit, about 1 in 8).
        for name in ("model", "module", "optimizer", "scheduler"):
            self.__dict__.pop(name, None)
        gc.collect()


class DDPEngine(DistributedEngine):
    name = "ddp"

    def wrap(self, model: nn.Module, plan: Plan) -> nn.Module:
        model.to(self.device)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    @contextlib.contextmanager
    def accumulating(self, last: bool) -> Iterator[None]:
        with contextlib.nullcontext() if last else self.module.no_sync():
            yield
