"""Typed run configuration: TOML recipes plus `--section.key=value` overrides.

A recipe is a TOML file with the sections below; every key is optional and falls back to the
dataclass default. Unknown sections or keys, wrong types and impossible combinations raise
`LmforgeError` with a one-line message naming the key (and the file).

- `sections.py`: the dataclasses, one per [section] (docs/config.md is generated from them), but
  [model]'s, in `model_section.py`;
- `run_config.py`: `Config`, one of each section, and which keys a recipe or override named;
- `checks.py`: what makes a value wrong or a combination impossible (`model_checks.py`: the
  [model] section's, and what each model family can build);
- `files.py`: recipes and overrides in, TOML out, a model directory's config.json in;
- `init_from.py`: train.init_from's architecture in place of [model] (train and plan check alike).
"""

from lmforge.config.checks import changed_keys, yield_note
from lmforge.config.files import (
    as_overrides,
    command_line_overrides,
    config_from_text,
    config_to_toml,
    is_override,
    joined_overrides,
    load_config,
    model_config_from,
)
from lmforge.config.model_checks import check_buildable, check_supported
from lmforge.config.model_section import ModelConfig
from lmforge.config.run_config import COMMAND_LINE, Config
from lmforge.config.sections import (
    LORA_TARGETS,
    TASKS,
    DataConfig,
    EngineConfig,
    LoraConfig,
    PrepConfig,
    PrivacyConfig,
    TrainConfig,
)

__all__ = [
    "COMMAND_LINE",
    "LORA_TARGETS",
    "TASKS",
    "Config",
    "DataConfig",
    "EngineConfig",
    "LoraConfig",
    "ModelConfig",
    "PrepConfig",
    "PrivacyConfig",
    "TrainConfig",
    "as_overrides",
    "changed_keys",
    "check_buildable",
    "command_line_overrides",
    "config_from_text",
    "check_supported",
    "config_to_toml",
    "is_override",
    "joined_overrides",
    "load_config",
    "model_config_from",
    "yield_note",
]
