"""Engines: how a model is placed, stepped and saved. One interface, several backends."""

from __future__ import annotations

from lmforge.config import EngineConfig, TrainConfig
from lmforge.errors import LmforgeError
from lmforge.processes import launched_world
from lmforge.train.engines.base import Engine

DISTRIBUTED = ("ddp", "fsdp", "deepspeed")  # the engines that train in several processes


def check_world(name: str, world: int) -> None:
    """Refuse `world` > 1 processes of an engine that trains in one: they would run `world`
    identical jobs into the same run directory. `lmforge launch` asks before it starts them; a
    rank started by another launcher (torchrun, deepspeed) asks when its engine is built."""
    if world > 1 and name not in DISTRIBUTED:
        raise LmforgeError(
            f"engine.name={name!r} trains in one process, so {world} processes would run {world}"
            " identical jobs into the same run directory; pass --engine.name=ddp, fsdp or deepspeed"
            " (or set [engine] name in the recipe)"
        )


def build_engine(engine: EngineConfig, train: TrainConfig) -> Engine:
    """The engine named by engine.name; distributed ones join their process group here."""
    check_world(engine.name, launched_world())
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
