"""PyTorch FSDP2 (`fully_shard`): parameters, gradients and optimizer state sharded across ranks.

Each element of the model's ModuleLists (the transformer blocks) is one shard unit, then the
root, as torchtitan does; a block's parameters are gathered just before it runs. The engine
learns the block structure from the module tree, never from the model's code. In bf16 the
parameters are gathered in bf16 and gradients reduced in fp32 (MixedPrecisionPolicy); the
sharded master weights and AdamW stay fp32.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from lmforge.train.engines.base import Plan
from lmforge.train.engines.ddp import DistributedEngine


class FSDPEngine(DistributedEngine):
    name = "fsdp"

    def wrap(self, model: nn.Module, plan: Plan) -> nn.Module:
        model.to(self.device)
        policy = MixedPrecisionPolicy(
            param_dtype=plan.dtype if plan.dtype != torch.float32 else None, reduce_dtype=torch.float32
        )
        self.policy = policy
        for child in model.modules():
            if isinstance(child, nn.ModuleList):
                for block in child:
                    fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        # FSDP2 warns when a module returns a view (a 3-D nn.Linear's output is one, as the span
        # head's logits): an in-place op on it would skip the all-gather. Neither the loop nor a
        # task's loss changes a model's output in place, so the warning is only noise here.
        warnings.filterwarnings("ignore", r"FSDP2-wrapped module \(.*\) returned a view tensor", UserWarning)
        return model

    def describe(self) -> str:
        dtype = str(self.policy.param_dtype or torch.float32).removeprefix("torch.")
        return f"fsdp (FSDP2 fully_shard per block, params gathered in {dtype}, grads reduced in fp32)"

    @contextlib.contextmanager
    def full_model(self) -> Iterator[nn.Module]:
        """Gather every shard unit once and keep it gathered through the forwards of decoding
        (no collective per step), then shard again as training expects."""
        assert isinstance(self.module, FSDPModule)
        units = [m for m in self.module.modules() if isinstance(m, FSDPModule)]
        self.module.set_reshard_after_forward(False)
        for unit in units:
            unit.unshard()
        try:
            yield self.model
        finally:
            for unit in units:
                unit.reshard()
            self.module.set_reshard_after_forward(True)  # the blocks' default ...
            self.module.set_reshard_after_forward(False, recurse=False)  # ... and the root's

    @contextlib.contextmanager
    def accumulating(self, last: bool) -> Iterator[None]:
        assert isinstance(self.module, FSDPModule)
        self.module.set_requires_gradient_sync(last)  # reduce-scatter only on the last micro-batch
        yield
