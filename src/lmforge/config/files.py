"""Reading a run configuration: a TOML recipe, then `--section.key=value` overrides, into a checked
Config; a model directory's config.json into a ModelConfig; and a Config back to TOML.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import shlex
import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from lmforge.config.checks import changed_keys, yield_note
from lmforge.config.model_checks import check_model
from lmforge.config.model_section import ModelConfig
from lmforge.config.run_config import COMMAND_LINE, Config
from lmforge.errors import LmforgeError


def _coerce(key: str, value: Any, kind: type, source: str, from_text: bool) -> Any:
    """Convert a TOML or command-line value to the field's type, or fail naming the key."""
    if kind is tuple:  # a list of numbers: TOML's, or the command line's `1.0,2.5` (brackets allowed)
        return _numbers(key, value, source, from_text)
    if kind is list:  # a string or a TOML list of strings (prep.inputs: `a,b.txt` can be one name)
        if from_text or isinstance(value, str):
            return value  # the command line's text, split on commas where read
        if not isinstance(value, list):
            raise LmforgeError(
                f"{source}: {key}={value!r} must be {_TYPE_NAMES[kind]}, not {type(value).__name__}"
            )
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise LmforgeError(
                    f"{source}: {key}[{i}]={item!r} must be a string, not {type(item).__name__}"
                )
        return list(value)
    if from_text and kind is not str:
        text = value.strip()
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                return text.lower() in ("true", "1")
            return kind(text)
        except ValueError:
            raise LmforgeError(f"{source}: {key}={value!r} is not {_TYPE_NAMES[kind]}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not kind:
        raise LmforgeError(
            f"{source}: {key}={value!r} must be {_TYPE_NAMES[kind]}, not {type(value).__name__}"
        )
    return value


def _numbers(key: str, value: Any, source: str, from_text: bool) -> list[float]:
    """model.rope_short_factor's kind of value: a list of numbers, or their text, comma-separated."""
    if from_text and isinstance(value, str):
        text = value.strip().removeprefix("[").removesuffix("]").strip()
        try:
            return [float(v) for v in text.split(",")] if text else []
        except ValueError:
            raise LmforgeError(f"{source}: {key}={value!r} is not a list of numbers") from None
    ok = isinstance(value, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    )
    if not ok:
        raise LmforgeError(f"{source}: {key}={value!r} must be a list of numbers")
    return [float(v) for v in value]


# a tuple stands for a list of numbers (the model's longrope factors)
_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "str | list[str]": list, "list[float]": tuple}
_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "a string or a list of strings",
}


def _set(config: Config, dotted: str, value: Any, source: str, from_text: bool = False) -> None:
    section_name, _, key = dotted.partition(".")
    sections = {f.name for f in dataclasses.fields(Config)}
    if section_name not in sections or not key:
        near = difflib.get_close_matches(section_name, sections, n=1)
        hint = f"did you mean [{near[0]}]? " if near and key else ""
        raise LmforgeError(
            f"{source}: unknown config key {dotted!r} ({hint}sections: {', '.join(sorted(sections))})"
        )
    section = getattr(config, section_name)
    fields = {f.name: f for f in dataclasses.fields(section)}
    if key not in fields:
        near = difflib.get_close_matches(key, fields, n=1)
        known = (
            f"did you mean '{section_name}.{near[0]}'?"
            if near
            else f"known in [{section_name}]: {', '.join(fields)}"
        )
        raise LmforgeError(f"{source}: unknown config key {dotted!r} ({known})")
    kind = _TYPES[str(fields[key].type)]
    setattr(section, key, _coerce(dotted, value, kind, source, from_text))
    config.given[dotted] = source


def _read_utf8(path: Path) -> str:
    if path.is_dir():  # `lmforge plan runs/mine`: a run's recipe is its config.toml
        own = path / "config.toml"
        hint = f"; the run's recipe is {own}" if own.is_file() else ""
        raise LmforgeError(f"{path}: Is a directory, not a TOML recipe{hint}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise LmforgeError(f"{path}:{line}: not valid UTF-8 (byte {e.start} of the file)") from None


def joined_overrides(argv: list[str]) -> list[str]:
    """`--section.key value` as `--section.key=value`, the form an override takes, in a list of
    overrides or a whole command line (where argparse would otherwise give the value to the verb's
    positional: `train --data.input my.txt` read my.txt as the recipe). A dotted flag followed by
    another flag, or by nothing, stays as it is."""
    joined: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        dotted = is_override(word) and "=" not in word
        if dotted and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            joined.append(f"{word}={argv[i + 1]}")
            i += 2
        else:
            joined.append(word)
            i += 1
    return joined


def is_override(word: str) -> bool:
    """Whether a command-line word is a `--section.key=value` override."""
    return word.startswith("--") and word[2:3].isalpha() and "." in word.split("=", 1)[0]


def as_overrides(overrides: Any) -> list[str]:
    """Overrides as Python callers give them, as a list of `--section.key=value` words: a list, a
    string ("--train.lr=3e-4 --train.max_steps=100": words, not letters) or a dict
    ({"train.lr": 3e-4}); anything else is one line."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        return shlex.split(overrides)
    if isinstance(overrides, Mapping):
        toml = lambda v: str(v).lower() if isinstance(v, bool) else str(v)  # noqa: E731
        return [f"--{str(k).removeprefix('--')}={toml(v)}" for k, v in overrides.items()]
    if isinstance(overrides, list | tuple) and all(isinstance(o, str) for o in overrides):
        return list(overrides)
    raise LmforgeError(
        f"overrides must be a list of '--section.key=value' strings, one such string or a dict,"
        f" not {type(overrides).__name__}"
    )


def load_config(
    path: str | Path | None = None, overrides: list[str] | str | None = None, validate: bool = True
) -> Config:
    """Build a validated Config from an optional TOML recipe and `section.key=value` overrides
    (`validate=False`: unchecked, for a caller that sets more keys, then calls validate())."""
    config = Config()
    if path is not None:
        path = Path(path)
        try:
            text = _read_utf8(path)
        except FileNotFoundError:
            raise LmforgeError(f"{path}: config file not found") from None
        config = config_from_text(text, str(path))
        config.recipe = path
    for item in joined_overrides(as_overrides(overrides)):
        dotted, eq, value = item.removeprefix("--").partition("=")
        if not eq:
            if item.startswith("--") and "." in dotted:  # `--train.lr` last, or before another flag
                raise LmforgeError(f"override {item} has no value: give {item}=VALUE (or {item} VALUE)")
            raise LmforgeError(f"override {item!r} must look like --section.key=value")
        _set(config, dotted, value, COMMAND_LINE, from_text=True)
    for section in SWITCHED:
        _switched_off(config, section)
    if not validate:
        return config
    try:
        return config.validate()
    except LmforgeError as e:  # a rule across keys names no file: say where the keys were set
        raise LmforgeError(str(e) + _where_set(str(e), config)) from None


SWITCHED = ("lora", "privacy")  # the sections a key `enabled` turns on


def _switched_off(config: Config, name: str) -> None:
    """--lora.enabled=false (or privacy's) on the command line switches the feature off whatever
    the recipe's [section] says: its keys are reset to their defaults, with a note, as every
    override beats its recipe (without this, each of them was refused as changing nothing)."""
    section = getattr(config, name)
    if section.enabled or config.given.get(f"{name}.enabled") != COMMAND_LINE:
        return
    by = f"{name}.enabled"
    reset = [(key, value) for key, value in changed_keys(section) if config.outranked(f"{name}.{key}", by)]
    if reset:
        defaults = type(section)()
        setattr(config, name, dataclasses.replace(section, **{k: getattr(defaults, k) for k, _ in reset}))
        keys = [f"{key}={value!r}" for key, value in reset]
        config.notes.append(yield_note(config, f"{name}.enabled", "switches it off", name, keys))


def _where_set(message: str, config: Config) -> str:
    """' (model.n_embd and model.n_head from recipe.toml)' for the keys a message states with
    their values (`model.n_embd=31`, not a hint's `train.schedule=linear`) that a file set, where
    the message names no file itself; '' otherwise."""
    files: dict[str, list[str]] = {}
    for key in dict.fromkeys(re.findall(r"\b([a-z]+\.[a-z_0-9]+)=", message)):
        source = config.given.get(key)
        section, _, name = key.partition(".")
        value = getattr(getattr(config, section, None), name, None)
        stated = f"{key}={value}" in message or f"{key}={value!r}" in message
        if source and source != COMMAND_LINE and source not in message and stated:
            files.setdefault(source, []).append(key)
    return (" (" + "; ".join(f"{' and '.join(keys)} from {source}" for source, keys in files.items()) + ")"
            if files else "")  # fmt: skip


def config_from_text(text: str, source: str) -> Config:
    """An unvalidated Config from a recipe's TOML text; `source` names it in errors."""
    config = Config()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        other = Path(source).suffix.lower()
        if other in (".yaml", ".yml", ".json"):  # "Expected '='" said nothing of the format
            raise LmforgeError(
                f"{source}: a recipe is TOML ([sections] of key = value), not {other[1:]}: {e}"
            ) from None
        raise LmforgeError(f"{source}: invalid TOML: {e}") from None
    for section_name, values in raw.items():
        if not isinstance(values, dict):
            raise LmforgeError(f"{source}: top-level key {section_name!r} must be a [section]")
        for key, value in values.items():
            _set(config, f"{section_name}.{key}", value, source)
    return config


# The keys beside ModelConfig's that lmforge writes into a model directory's config.json (every
# version: formats/directory.py's write_model_files, a seq2seq model's decoding_extra, translation's
# languages, an import's source ids; a classifier's backbone entry has model_type only).
DIRECTORY_KEYS = frozenset(
    {
        "model_type",
        "eos_token_id",
        "bos_token_id",
        "pad_token_id",
        "decoder_start_token_id",
        "suppress_tokens",
        "num_beams",
        "early_stopping",
        "repetition_penalty",
        "no_repeat_ngram_size",
        "length_penalty",
        "source_lang",
        "target_lang",
    }
)


def model_config_from(raw: dict[str, Any], source: str | Path) -> ModelConfig:
    """The ModelConfig in a model directory's config.json (or a classifier's backbone entry):
    its ModelConfig keys, type-checked and validated; other keys lmforge writes (DIRECTORY_KEYS:
    model_type, token ids) are the caller's; any other key is a one-line error naming the nearest
    known one (a misspelt `norm_epss` was dropped, unsaid). The one place a model directory's
    architecture is read."""
    fields = [f.name for f in dataclasses.fields(ModelConfig)]
    for key in raw:
        if key not in DIRECTORY_KEYS and key not in fields:
            near = difflib.get_close_matches(str(key), [*fields, *sorted(DIRECTORY_KEYS)], n=1)
            hint = f"did you mean {near[0]!r}?" if near else "not a model setting: docs/config.md's [model]"
            raise LmforgeError(f"{source}: unknown config key {key!r} ({hint})")
    config = Config()
    for name in fields:
        if name in raw:
            _set(config, f"model.{name}", raw[name], str(source))
    try:
        check_model(config.model)
    except LmforgeError as e:
        raise LmforgeError(f"{source}: {e}") from None
    return config.model


def config_to_toml(config: Config, chosen_only: bool = False, exclude: Collection[str] = ()) -> str:
    """Serialise a Config as a TOML recipe (scalars and lists of strings: a tiny writer suffices).
    chosen_only: only the keys a recipe, an override or code chose (Config.is_set), so that the
    recipe leaves the rest to what the run settles (train.init_from's architecture, a prepared
    directory's tokenizer), as the command it stands for would. exclude: "section.key"s left out."""
    lines: list[str] = []
    for section, values in config.to_dict().items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            dotted = f"{section}.{key}"
            if dotted in exclude or (chosen_only and not config.is_set(dotted)):
                continue
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def command_line_overrides(config: Config) -> list[str]:
    """The `--section.key=value`s that came from the command line (Config.given), to hand on to a
    child `lmforge train` beside a recipe of the rest, so that what outranks the recipe still does."""
    values = {f"{s}.{k}": v for s, keys in config.to_dict().items() for k, v in keys.items()}
    return [f"--{k}={_text(values[k])}" for k, where in config.given.items() if where == COMMAND_LINE]


def _text(value: Any) -> str:
    """A scalar as an override's value: the command line's spelling."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else repr(value)


def _toml_value(value: Any) -> str:
    """A value as TOML writes it: a string quoted, with its backslashes and quotes escaped; a list
    of them in brackets."""
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return _text(value)
