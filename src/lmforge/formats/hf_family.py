"""The `Family` record (formats/hf.py's FAMILIES holds one per Hugging Face architecture) and the
small helpers its config readers share: a required config key, a typed one, an unsupported
setting, the activations both sides name.
"""

from __future__ import annotations

import sys
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
    row_parts: dict[str, tuple[int, int]] = field(default_factory=dict)
    """lmforge module (inside a layer) -> (i, n): it is the i-th of n equal row blocks of its HF
    module, which fuses several (Phi-3's gate_up_proj: gate rows, then up rows); split on import,
    fused on export."""
    padded_positions: bool = False
    """RoBERTa: HF's position table begins with padding_idx + 1 rows that no real token uses (its
    positions count from padding_idx + 1); import keeps the rows after them (config_in's block_size)."""


_KINDS: dict[type, str] = {
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    str: "a string",
    dict: "a JSON object",
}


def typed_key(
    raw: dict[str, Any], key: str, file: str, kind: type, default: Any = None, *, name: str = ""
) -> Any:
    """raw[key] where it is a `kind` (an int passes as a float; a bool never as a number, nor a
    string "false" as a bool), `default` where absent or null; else a one-line error naming the
    file and key (`name`: the key's full path, for a key inside an object)."""
    value = raw.get(key)
    if value is None:
        return default
    number = kind in (int, float) and isinstance(value, bool)
    if number or not isinstance(value, (int, float) if kind is float else kind):
        raise LmforgeError(f"{file}: config key {name or key!r} must be {_KINDS[kind]}, not {value!r}")
    return float(value) if kind is float else value


def config_key(
    raw: dict[str, Any], key: str, file: str, default: Any = None, kind: type | None = None
) -> Any:
    value = raw.get(key, default) if kind is None else typed_key(raw, key, file, kind, default)
    if value is None:
        raise LmforgeError(f"{file}: missing config key {key!r}")
    return value


def require(ok: bool, file: str, what: str) -> None:
    if not ok:
        raise LmforgeError(f"{file}: unsupported {what}")


ACT_IN = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
ACT_OUT = {"gelu": "gelu", "gelu_tanh": "gelu_new"}


def every_nth(flags: list[bool]) -> int | None:
    """N where flags[i] holds exactly when (i + 1) % N == 0 (0 when none holds); None for any other
    pattern. How config.json's per-layer lists (Gemma 3's full layers, SmolLM3's NoPE ones) read
    as one lmforge interval."""
    n = flags.index(True) + 1 if any(flags) else 0
    return n if flags == [n > 0 and (i + 1) % n == 0 for i in range(len(flags))] else None


def one_dropout(
    raw: dict[str, Any], file: str, keys: tuple[str, ...], kept: str, default: float = 0.1
) -> float:
    """lmforge's one dropout from a family's several (each `default` where absent, as its config
    class has it), which lmforge applies where transformers applies each of them. Where they
    differ, `kept`'s (the most widely applied), said in a note."""
    drops = {k: typed_key(raw, k, file, float, default) for k in keys}
    if len(set(drops.values())) > 1:
        said = ", ".join(f"{k}={v}" for k, v in drops.items())
        line = f"lmforge: note: {file}: {said}, and lmforge has one dropout: {kept}'s for all {len(keys)}"
        print(line, file=sys.stderr)
    return drops[kept]


def attention_dropout(raw: dict[str, Any], file: str, family: str) -> float:
    """A Llama-shaped family's `attention_dropout` (0.0 where absent, as its config classes) as
    lmforge's one dropout, which also acts on the embeddings and each block's outputs where
    transformers' has none: said in a note where it is not 0 (an lmforge export writes its
    dropout there, so the round trip keeps it)."""
    drop = typed_key(raw, "attention_dropout", file, float, 0.0)
    if drop:
        line = (
            f"lmforge: note: {file}: attention_dropout={drop}: lmforge's one dropout, which also acts on"
            f" the embeddings and each block's outputs, where {family} has none"
        )
        print(line, file=sys.stderr)
    return drop
