"""Engines: how a model is placed, stepped and saved. One interface, several backends."""

from __future__ import annotations

from lmforge.config import EngineConfig, TrainConfig
from lmforge.errors import LmforgeError
from lmforge.train.engines.base import Engine


def build_engine(engine: EngineConfig, train: TrainConfig) -> Engine:
    if engine.name == "local":
        from lmforge.train.engines.local import LocalEngine

        return LocalEngine(train)
    raise LmforgeError(f"engine.name={engine.name!r} is not available")
