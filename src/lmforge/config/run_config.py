"""The whole run configuration: one of each [section] (sections.py), and where each key came from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.config.model_section import ModelConfig
from lmforge.config.sections import (
    DataConfig,
    EngineConfig,
    LoraConfig,
    PrepConfig,
    PrivacyConfig,
    TrainConfig,
)

COMMAND_LINE = "command line"  # Config.given's source of an override (else a recipe's path)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    prep: PrepConfig = field(default_factory=PrepConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

    def __post_init__(self) -> None:
        # "section.key" named by a recipe or an override (files.py), even at its default value: the
        # difference between choosing data.tokenizer="char" and leaving it unset. Not a field, so
        # not in to_dict() or config.toml (where a resumed run's keys are all named).
        self.given: dict[str, str] = {}  # "section.key" -> where: the recipe's path or COMMAND_LINE
        self.recipe: Path | None = None  # the TOML file it was loaded from, for messages
        self.notes: list[str] = []  # what checks settled for the user to hear (train says them)

    def lm_window(self, model: ModelConfig | None = None) -> int:
        """Tokens per lm training window: data.seq_len, else the context of `model` (default
        [model]; train.init_from's once it has brought its own)."""
        from lmforge.errors import LmforgeError

        context, n = (model or self.model).block_size, self.data.seq_len
        if n > context:
            raise LmforgeError(f"data.seq_len={n} is above the model's context of {context} tokens")
        return n or context

    def outranked(self, dotted: str, by: str) -> bool:
        """Whether `dotted` came from a recipe while `by` came from the command line, which
        outranks it: the recipe's choice was made for its own value of `by`."""
        return self.given.get(dotted, COMMAND_LINE) != COMMAND_LINE and self.given.get(by) == COMMAND_LINE

    def is_set(self, dotted: str) -> bool:
        """Whether `section.key` was chosen: named by a recipe or an override, or holding another
        value than its default (a Config built in Python names nothing)."""
        section_name, _, key = dotted.partition(".")
        section = getattr(self, section_name)
        return dotted in self.given or getattr(section, key) != getattr(type(section)(), key)

    def validate(self) -> Config:
        """This config, checked (checks.py): a wrong value raises LmforgeError naming its key."""
        from lmforge.config.checks import check_config  # checks.py imports these classes

        check_config(self)
        return self

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)
