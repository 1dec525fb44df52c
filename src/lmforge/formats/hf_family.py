"""The `Family` record (formats/hf.py's FAMILIES holds one per Hugging Face architecture) and the
small helpers its config readers share: a required config key, an unsupported setting, the
activations both sides name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError

Modules = dict[str, str | tuple[str, ...]]


@dataclass(frozen=True)
class Family:
    architecture: str
    """HF class written to config.json `architectures` on export."""
    kind: str
    """lmforge model class: `gpt` (decoder), `encoder` or `seq2seq` (encoder-decoder)."""
    top: Modules
    """lmforge module -> HF module, outside the layers."""
    layer: Modules
    """lmforge module inside `blocks.{i}.` -> HF module inside `layer_prefix`."""
    layer_prefix: str
    config_in: Callable[[dict[str, Any], str], ModelConfig]
    config_out: Callable[[ModelConfig], dict[str, Any]]
    transposed: frozenset[str] = frozenset()
    alt_prefix: tuple[str, str] = ("", "")
    """(prefix of our exported names, what other checkpoints put there instead): GPT-2's original
    files lack `transformer.`, BertFor* models add `bert.`, DistilBertFor* `distilbert.`."""
    ignored: tuple[str, ...] = ()
    """Suffixes of HF tensors that are buffers, not weights (safe to skip on import)."""
    optional: frozenset[str] = field(default_factory=frozenset)
    """lmforge modules an HF checkpoint may lack (left at their initialisation)."""
    layer_ours: str = "blocks.{i}."
    """Where `layer` sits in lmforge's model."""
    stacks: tuple[tuple[str, Modules, str], ...] = ()
    """More layer stacks as (lmforge prefix, modules, HF prefix): Marian's decoder."""
    tied: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """HF tensor -> the names its tied copies may be saved under instead (or as well)."""
    padded_positions: bool = False
    """RoBERTa: HF's position table begins with padding_idx + 1 rows that no real token uses (its
    positions count from padding_idx + 1); import keeps the rows after them (config_in's block_size)."""


def config_key(raw: dict[str, Any], key: str, file: str, default: Any = None) -> Any:
    value = raw.get(key, default)
    if value is None:
        raise LmforgeError(f"{file}: missing config key {key!r}")
    return value


def require(ok: bool, file: str, what: str) -> None:
    if not ok:
        raise LmforgeError(f"{file}: unsupported {what}")


ACT_IN = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
ACT_OUT = {"gelu": "gelu", "gelu_tanh": "gelu_new"}
