"""The DeepSpeed config of a run: what lmforge's [train] and [engine] sections set, merged with a
user's own JSON (engine.deepspeed_config; lmforge/config/deepspeed_json.py says what it may add)."""

from __future__ import annotations

from typing import Any

import torch

from lmforge.config import EngineConfig, TrainConfig
from lmforge.config.deepspeed_json import owned, with_user_json
from lmforge.train.engines.base import Plan


def deepspeed_config(engine: EngineConfig, train: TrainConfig, plan: Plan) -> dict[str, Any]:
    batch = (plan.global_batch, plan.micro_batch, plan.accumulation)
    return with_user_json(owned(engine, train, batch, plan.dtype == torch.bfloat16), engine)
