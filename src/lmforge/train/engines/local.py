"""Plain PyTorch in one process: the default engine, and the reference the others must match.

Its save/load go through torch.distributed.checkpoint's state-dict API, which also serves the
DDP and FSDP2 engines (subclasses of this one): full tensors by parameter name, whatever the
wrapping or sharding.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor

from lmforge.config import EngineConfig, TrainConfig
from lmforge.errors import LmforgeError
from lmforge.train.engines import state
from lmforge.train.engines.base import Engine, MakeOptimizer, MakeScheduler, Plan, saved_names, tensor_bytes

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


class LocalEngine(Engine):
    name = "local"

    def __init__(self, engine: EngineConfig, train: TrainConfig) -> None:
        self.grad_clip = train.grad_clip
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def wrap(self, model: nn.Module, plan: Plan) -> nn.Module:
        """Place the model; subclasses wrap or shard it here."""
        return model.to(self.device)

    def prepare(
        self, model: nn.Module, make_optimizer: MakeOptimizer, make_scheduler: MakeScheduler, plan: Plan
    ) -> tuple[nn.Module, torch.optim.lr_scheduler.LRScheduler]:
        self.model, self.plan = model, plan
        self.module = self.wrap(model, plan)
        self.optimizer = make_optimizer(model)  # after wrapping: FSDP2 replaces the parameters
        self.scheduler = make_scheduler(self.optimizer)
        return self.module, self.scheduler

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> tuple[float, bool]:
        max_norm = self.grad_clip if self.grad_clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        norm = float(norm.full_tensor() if isinstance(norm, DTensor) else norm)
        stepped = math.isfinite(norm)
        if stepped:
            self.optimizer.step()
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm, stepped

    def save(self, directory: Path) -> None:
        weights = state.first_names(get_model_state_dict(self.model, options=FULL), self.model)
        keep = saved_names(self.model, self.plan)  # LoRA: the adapters only
        weights = weights if keep is None else {k: v for k, v in weights.items() if k in keep}
        optim = get_optimizer_state_dict(self.model, self.optimizer, options=FULL)
        if self.rank == 0:
            moments = {k: {m: v[m] for m in state.MOMENTS} for k, v in optim["state"].items()}
            step = float(next(iter(optim["state"].values()))["step"]) if moments else 0.0
            state.write_state(directory, weights, moments, step, self.scheduler)

    def load(self, directory: Path) -> None:
        weights, moments, step = state.read_state(directory, self.model)
        aliases = state.alias_map(self.model)
        full = {name: weights[first] for name, first in aliases.items() if first in weights}
        keep = saved_names(self.model, self.plan)  # LoRA: the frozen base stays as built
        missing = sorted(n for n in keep or () if aliases[n] not in weights)
        if missing:
            raise LmforgeError(f"{directory}: checkpoint lacks parameters {missing[:3]}")
        options = StateDictOptions(full_state_dict=True, strict=keep is None)
        set_model_state_dict(self.model, full, options=options)
        every_rank = StateDictOptions(full_state_dict=True)  # FULL leaves ranks other than 0 empty
        groups = get_optimizer_state_dict(self.model, self.optimizer, options=every_rank)["param_groups"]
        optim = {
            "state": {name: {**m, "step": torch.tensor(step)} for name, m in moments.items()},
            "param_groups": groups,
        }
        set_optimizer_state_dict(self.model, self.optimizer, optim, options=every_rank)
        state.restore_scheduler(directory, self.scheduler)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        weights = state.first_names(get_model_state_dict(self.model, options=FULL), self.model)
        return weights if self.rank == 0 else {}

    def memory(self) -> dict[str, int]:
        params = [_local(p) for p in self.model.parameters()]
        moments = [_local(t) for s in self.optimizer.state.values() for t in s.values() if t.dim() > 0]
        # gradients exist, in the trained parameters' (sharded) shapes, from backward to zero_grad;
        # frozen ones (LoRA's base) have none
        trained = [_local(p) for p in self.model.parameters() if p.requires_grad]
        return {
            "params": tensor_bytes(params),
            "grads": tensor_bytes(trained),
            "optimizer": tensor_bytes(moments),
        }
