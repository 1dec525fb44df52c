"""Engines: how a model is placed, stepped and saved. One interface, several backends."""

from __future__ import annotations

from lmforge.config import EngineConfig, TrainConfig
from lmforge.train.engines.base import Engine


def build_engine(engine: EngineConfig, train: TrainConfig) -> Engine:
    """The engine named by engine.name; distributed ones join their process group here."""
    if engine.name == "ddp":
        from lmforge.train.engines.ddp import DDPEngine

        return DDPEngine(engine, train)
    if engine.name == "fsdp":
        from lmforge.train.engines.fsdp import FSDPEngine

        return FSDPEngine(engine, train)
    if engine.name == "deepspeed":
        from lmforge.train.engines.deepspeed import DeepSpeedEngine

        return DeepSpeedEngine(engine, train)
    from lmforge.train.engines.local import LocalEngine

    return LocalEngine(engine, train)
