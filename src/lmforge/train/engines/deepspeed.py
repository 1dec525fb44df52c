"""DeepSpeed: ZeRO stages 1-3 with optional CPU offload, driven through the same interface.

lmforge builds the optimizer (torch AdamW) and LR schedule and DeepSpeed wraps them; the DeepSpeed
config comes from lmforge's (deepspeed_config.py). Checkpoints are the engine-neutral state
(state.py), read and written through DeepSpeed's full-tensor API (safe_get/set_full_*), so a
ZeRO-3 run on 2 ranks resumes on 1 rank, on another stage, or on the local engine.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from lmforge import processes
from lmforge.config import EngineConfig, TrainConfig
from lmforge.errors import LmforgeError
from lmforge.train.engines import state
from lmforge.train.engines.base import Engine, MakeOptimizer, MakeScheduler, Plan, saved_names, tensor_bytes
from lmforge.train.engines.deepspeed_config import deepspeed_config
from lmforge.train.engines.distributed import (
    all_reduce_sum,
    destroy_process_group,
    device_for_rank,
    ensure_launch_env,
)


def _import_deepspeed():  # noqa: ANN202 - the module
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    try:
        import deepspeed
    except ImportError:
        raise LmforgeError("engine.name=deepspeed needs DeepSpeed: pip install deepspeed") from None
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    # DeepSpeed 0.19 still calls these; torch 2.13 warns on every ZeRO step
    warnings.filterwarnings(
        "ignore", r"`torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor)` is deprecated"
    )
    return deepspeed


class DeepSpeedEngine(Engine):
    name = "deepspeed"

    def __init__(self, engine: EngineConfig, train: TrainConfig) -> None:
        self.config, self.train = engine, train
        ds = _import_deepspeed()
        ensure_launch_env()
        self.device = device_for_rank()
        if self.device.type == "cpu":
            # DeepSpeed JIT-compiles its shared-memory all-reduce op (C++, ~30 s, needs gcc) on every
            # CPU init; only inference all-reduce uses it, never ZeRO training, so skip the build.
            sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None
        backend = None if engine.backend == "auto" else engine.backend
        processes.joined_group = True
        ds.init_distributed(
            dist_backend=backend, auto_mpi_discovery=False, timeout=timedelta(seconds=engine.timeout_s)
        )
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    def prepare(
        self, model: nn.Module, make_optimizer: MakeOptimizer, make_scheduler: MakeScheduler, plan: Plan
    ) -> tuple[nn.Module, torch.optim.lr_scheduler.LRScheduler]:
        import deepspeed

        self.plan = plan
        self.ds_config = deepspeed_config(self.config, self.train, plan)
        self.client_optimizer = make_optimizer(model)
        self.scheduler = make_scheduler(self.client_optimizer)
        from deepspeed.runtime.config import DeepSpeedConfigError

        try:
            self.ds, _, _, _ = deepspeed.initialize(
                model=model,
                optimizer=self.client_optimizer,
                lr_scheduler=self.scheduler,
                config=self.ds_config,
            )
        except (DeepSpeedConfigError, AssertionError, ValueError) as e:  # what DeepSpeed says of a config
            if not self.config.deepspeed_config:  # lmforge's own config: a bug, with its traceback
                raise
            said = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise LmforgeError(
                f"{self.config.deepspeed_config}: DeepSpeed refused the config: {said} (where the JSON"
                " is right, --debug shows the traceback)"
            ) from e
        self.model = model  # the bare model, as DeepSpeed holds it (ds.module)
        return self.ds, self.scheduler

    def describe(self) -> str:
        dtype = "bf16 weights, fp32 masters" if self.ds_config["bf16"]["enabled"] else "fp32"
        return f"deepspeed ZeRO-{self.config.zero_stage}, offload {self.config.offload}, {dtype}"

    @contextlib.contextmanager
    def full_model(self) -> Iterator[nn.Module]:
        """ZeRO 1-2 keep whole weights on every rank. ZeRO-3 partitions them: DeepSpeed's own
        generation helper gathers them all once and lifts its per-module hooks for the context,
        which would otherwise partition and gather again at every call (a collective per step)."""
        if self.config.zero_stage != 3:
            yield self.model
            return
        from deepspeed.runtime.zero.stage3 import unwrap_model_for_generation

        with unwrap_model_for_generation(self.ds):
            yield self.model

    @contextlib.contextmanager
    def accumulating(self, last: bool) -> Iterator[None]:
        self.ds.set_gradient_accumulation_boundary(last)  # reduce and step only after the last one
        yield

    def backward(self, loss: torch.Tensor) -> None:
        self.ds.backward(loss, scale_wrt_gas=False)  # the loop already normalised per token

    def step(self) -> tuple[float, bool]:
        self.ds.step()
        norm = self.ds.get_global_grad_norm()
        return (float(norm) if norm is not None else math.nan), self.ds.was_step_applied()

    def all_reduce(self, value: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(value, self.device)

    def barrier(self) -> None:
        dist.barrier()

    # -- checkpoints: full tensors by name, through DeepSpeed's fragment API (collective calls) --

    def _parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        yield from self.ds.module.named_parameters()

    def _basic_optimizer(self) -> torch.optim.Optimizer:
        return self.ds.optimizer.optimizer  # the torch AdamW over DeepSpeed's flat fp32 partitions

    def _trained(self) -> Iterator[tuple[str, nn.Parameter]]:
        """The parameters DeepSpeed's optimizer holds (frozen ones, LoRA's base, have no fp32 master)."""
        return ((name, p) for name, p in self._parameters() if p.requires_grad)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        from deepspeed.utils import safe_get_full_fp32_param

        # ZeRO 1-2 keep a frozen parameter whole on every rank (config/checks.py refuses them at ZeRO-3)
        weights = {
            name: (safe_get_full_fp32_param(p) if p.requires_grad else p).detach().float().cpu()
            for name, p in self._parameters()
        }
        return weights if self.rank == 0 else {}

    def save(self, directory: Path) -> None:
        from deepspeed.utils import safe_get_full_optimizer_state

        weights = self.full_state_dict()
        keep = saved_names(self.ds.module, self.plan)  # LoRA: the adapters only
        weights = weights if keep is None else {k: v for k, v in weights.items() if k in keep}
        self._link_optimizer_state()
        moments = {
            name: {key: safe_get_full_optimizer_state(p, key).detach().cpu() for key in state.MOMENTS}
            for name, p in self._trained()
        }
        if self.rank == 0:
            step = float(next(iter(self._basic_optimizer().state.values()))["step"])
            state.write_state(directory, weights, moments, step, self.scheduler)

    def load(self, directory: Path) -> None:
        import deepspeed
        from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state

        weights, moments, step = state.read_state(directory, self.ds.module)
        aliases = state.alias_map(self.ds.module)
        keep = saved_names(self.ds.module, self.plan)  # LoRA: the frozen base stays as built
        missing = [
            n for n, _ in self._parameters() if aliases[n] not in weights and (keep is None or n in keep)
        ]
        if missing:
            raise LmforgeError(f"{directory}: checkpoint lacks parameters {missing}")
        self._materialize_optimizer_state()
        params = [(name, p) for name, p in self._parameters() if aliases[name] in weights]
        # the compute copies (bf16 or fp32, partitioned at ZeRO-3) ...
        with deepspeed.zero.GatheredParameters([p for _, p in params], modifier_rank=0):
            for name, p in params:
                p.data.copy_(weights[aliases[name]])
        # ... and DeepSpeed's fp32 masters and AdamW moments
        for name, p in params:
            if not p.requires_grad:
                continue
            safe_set_full_fp32_param(p, weights[aliases[name]])
            for key in state.MOMENTS:
                safe_set_full_optimizer_state(p, moments[aliases[name]][key], key)
        for slot in self._basic_optimizer().state.values():
            slot["step"] = torch.tensor(step, dtype=slot["step"].dtype, device=slot["step"].device)
        state.restore_scheduler(directory, self.scheduler)

    def _flat_masters(self) -> list[torch.Tensor]:
        """DeepSpeed's flat fp32 partitions: the parameters its torch AdamW really steps."""
        zero = self.ds.optimizer
        flats = getattr(zero, "single_partition_of_fp32_groups", None)  # ZeRO 1/2
        return list(flats if flats is not None else zero.fp32_partitioned_groups_flat)  # ZeRO-3

    def _materialize_optimizer_state(self) -> None:
        """torch AdamW creates its state on the first step; a resume needs it before. Create it as
        AdamW would (zero moments, a float32 step on the parameter's device), then let ZeRO map its
        per-parameter views onto it."""
        basic = self._basic_optimizer()
        for flat in self._flat_masters():
            if not basic.state.get(flat):
                basic.state[flat] = {
                    "step": torch.zeros((), dtype=torch.float32, device=flat.device),
                    "exp_avg": torch.zeros_like(flat),
                    "exp_avg_sq": torch.zeros_like(flat),
                }
        self._link_optimizer_state()

    def _link_optimizer_state(self) -> None:
        """ZeRO 1/2 map each parameter's fragment of the AdamW moments once, right after the first
        parameter group's first step: before torch AdamW has created the other groups' state, so
        their maps stay empty (DeepSpeed 0.19.8, client optimizer with two groups). Map again."""
        zero = self.ds.optimizer
        if hasattr(zero, "_hp_optimizer_states_linked"):
            zero._hp_optimizer_states_linked = False
            zero._lazy_init_hp_params_optimizer_state()

    def memory(self) -> dict[str, int]:
        params = [getattr(p, "ds_tensor", p) for _, p in self._parameters()]  # ZeRO-3: own partition,
        params += [p.data for _, p in self._parameters() if getattr(p, "ds_persist", False)]  # and the
        # small tensors it keeps whole beside it (stage3_param_persistence_threshold): half a small
        # model's real parameter memory went unreported
        moments = [t for s in self._basic_optimizer().state.values() for t in s.values() if t.dim() > 0]
        width = 4 if self.plan.dtype == torch.float32 else 2
        numel = sum(getattr(p, "ds_numel", p.numel()) for _, p in self._trained())
        grads = numel * width // (1 if self.config.zero_stage == 1 else self.world_size)  # reduced, split
        optimizer = tensor_bytes(self._flat_masters() + moments)  # fp32 masters + AdamW moments
        return {"params": tensor_bytes(params), "grads": grads, "optimizer": optimizer}

    def close(self) -> None:
        self.ds.destroy()  # its hooks and buffers; the process still ends through exit_rank (processes.py):
        # DeepSpeed's module-level caches keep the model and its groups alive past this
        destroy_process_group()
