"""What makes a model directory a chat model: its chat template and its generation defaults.

The files are Hugging Face's, so lmforge and transformers read each other's directories:
`chat_template.jinja` (transformers >= 4.50 writes it; older directories keep the template as
tokenizer_config.json's "chat_template", a string or a list of named templates), the other named
templates as `additional_chat_templates/NAME.jinja` (Hermes' and Cohere's `tool_use`, taken where a
call gives tools: `pick_template`), and
`generation_config.json` (eos_token_id may be a list: every end-of-turn token; sampling defaults
such as temperature, top_p, top_k, do_sample, max_new_tokens).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.formats.directory import read_json
from lmforge.tokenization.tokenizer import Tokenizer

CHAT_TEMPLATE = "chat_template.jinja"
# transformers' CHAT_TEMPLATE_DIR: NAME.jinja, each named template but the default
CHAT_TEMPLATES_DIR = "additional_chat_templates"
GENERATION_CONFIG = "generation_config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
# generation_config.json keys that change transformers' decoding which lmforge does not apply, and
# their values that change nothing (chat and the text-generation pipeline name any other in a note)
UNAPPLIED: dict[str, tuple[object, ...]] = {
    "encoder_repetition_penalty": (None, 1),
    "sequence_bias": (None, {}),
    "num_beams": (None, 1),
    "penalty_alpha": (None, 0),
    "guidance_scale": (None, 1),
    "exponential_decay_length_penalty": (None,),
    "forced_eos_token_id": (None,),
    "num_return_sequences": (None, 1),  # said since 2026-12-07 (they were dropped unsaid)
    "stop_strings": (None, "", []),
}


def read_chat_templates(directory: Path) -> dict[str, str]:
    """The directory's chat templates by name ("default": the one used without tools), as
    transformers' from_pretrained reads them: chat_template.jinja and additional_chat_templates/
    NAME.jinja where there are any (tokenizer_config.json's are then ignored), else
    tokenizer_config.json's "chat_template", a string (the default) or a list of named templates."""
    files = [directory / CHAT_TEMPLATE] if (directory / CHAT_TEMPLATE).is_file() else []
    extra = directory / CHAT_TEMPLATES_DIR
    files += sorted(extra.glob("*.jinja")) if extra.is_dir() else []
    if files:
        return {
            "default" if f.name == CHAT_TEMPLATE else f.name.removesuffix(".jinja"): _read(f) for f in files
        }
    config = directory / TOKENIZER_CONFIG
    template = read_json(config, "tokenizer config").get("chat_template") if config.is_file() else None
    if template is None:
        return {}
    if isinstance(template, str):
        return {"default": template}
    if not isinstance(template, list):
        raise LmforgeError(f"{config}: 'chat_template' must be a string or a list of named templates")
    out = {}
    for i, item in enumerate(template):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        name = item.get("name") if isinstance(item, dict) else None
        text = item.get("template") if isinstance(item, dict) else None
        if not (isinstance(name, str) and isinstance(text, str)):
            raise LmforgeError(
                f'{config}: \'chat_template\' item {i} must be {{"name": a string, "template": a string}}'
            )
        if not name or name in (".", "..") or any(c in name for c in "/\\\0"):  # it becomes a file name
            raise LmforgeError(f"{config}: 'chat_template' item {i}: the name {name!r} cannot name a file")
        out[name] = text  # a repeated name: the last, as transformers' dict of them
    return out


def _read(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LmforgeError(f"{file}: unreadable chat template: {e}") from None


def read_chat_template(directory: Path) -> str | None:
    """The directory's default chat template source, or None when it has none."""
    return read_chat_templates(directory).get("default")


def pick_template(templates: dict[str, str], tools: object | None) -> str | None:
    """The template transformers' apply_chat_template renders (get_chat_template): `tool_use` where
    tools are given (not None) and it exists, else `default`."""
    if tools is not None and "tool_use" in templates:
        return templates["tool_use"]
    return templates.get("default")


def missing_template(directory: Path, templates: dict[str, str]) -> str:
    """Why `directory` has no template for a call: none at all, or only named ones and none of them
    the one the call renders (transformers' get_chat_template raises a ValueError there too)."""
    named = sorted(k for k in templates if k != "default")
    if not named:
        return (
            f"{directory}: has no chat template (no chat_template.jinja, no 'chat_template' in"
            f" {TOKENIZER_CONFIG})"
        )
    tools = "; its tool_use template renders a chat given tools" if "tool_use" in named else ""
    return f"{directory}: has no default chat template, only named ones ({', '.join(named)}){tools}"


def is_templates_folder(folder: Path) -> bool:
    """Whether `folder` is an additional_chat_templates/ folder as write_chat_files writes it:
    *.jinja files and nothing else (the owner check of import and export replaces it)."""
    if folder.name != CHAT_TEMPLATES_DIR or folder.is_symlink() or not folder.is_dir():
        return False
    return all(p.is_file() and not p.is_symlink() and p.suffix == ".jinja" for p in folder.iterdir())


def token_text(value: Any) -> str | None:
    """A tokenizer_config.json special token: a string or an AddedToken dict {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def read_generation_config(directory: Path) -> dict[str, Any]:
    """generation_config.json as a dict ({} when absent), its token ids of the types transformers
    takes (checked_ids)."""
    file = directory / GENERATION_CONFIG
    return checked_ids(read_json(file, "generation config"), file) if file.is_file() else {}


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def checked_eos(raw: dict[str, Any], file: Path) -> Any:
    """raw's eos_token_id: None, an id or a list of ids (GenerationConfig's and PretrainedConfig's
    `int | list[int]`); else a one-line error naming the file and key ("abc" was read as EOS 0)."""
    eos = raw.get("eos_token_id")
    if eos is None or _is_id(eos) or isinstance(eos, list) and all(_is_id(i) for i in eos):
        return eos
    raise LmforgeError(f"{file}: key 'eos_token_id' must be a token id or a list of them, not {eos!r}")


def checked_ids(raw: dict[str, Any], file: Path) -> dict[str, Any]:
    """generation_config.json's token ids checked: eos_token_id (checked_eos); bos_token_id,
    pad_token_id, decoder_start_token_id an id; bad_words_ids a list of lists of ids."""
    checked_eos(raw, file)
    for key in ("bos_token_id", "pad_token_id", "decoder_start_token_id"):
        if raw.get(key) is not None and not _is_id(raw[key]):
            raise LmforgeError(f"{file}: key {key!r} must be a token id (a whole number), not {raw[key]!r}")
    bad = raw.get("bad_words_ids")
    if bad is not None and not (
        isinstance(bad, list) and all(isinstance(w, list) and all(map(_is_id, w)) for w in bad)
    ):
        raise LmforgeError(f"{file}: key 'bad_words_ids' must be a list of lists of token ids, not {bad!r}")
    return raw


def stop_ids(directory: Path, eos_id: int | None) -> list[int]:
    """Every token that ends a turn: generation_config.json's eos_token_id (an int or a list),
    else config.json's, else the tokenizer's EOS."""
    source = read_generation_config(directory).get("eos_token_id")
    if source is None:
        source = checked_eos(read_json(directory / "config.json", "model config"), directory / "config.json")
    ids = source if isinstance(source, list) else [source]
    out = [i for i in ids if isinstance(i, int) and not isinstance(i, bool)]
    if not out and eos_id is not None:
        out = [eos_id]
    return out


def write_chat_files(directory: Path, templates: dict[str, str], generation: dict[str, Any]) -> None:
    """Write the chat templates (the default as chat_template.jinja, the others as
    additional_chat_templates/NAME.jinja, as transformers' save_pretrained lays them out) and
    generation_config.json (when there are defaults) into a model directory being written."""
    for name, template in templates.items():
        file = (
            directory / CHAT_TEMPLATE
            if name == "default"
            else directory / CHAT_TEMPLATES_DIR / f"{name}.jinja"
        )
        file.parent.mkdir(exist_ok=True)
        file.write_text(template, encoding="utf-8")
    if generation:
        (directory / GENERATION_CONFIG).write_text(json.dumps(generation, indent=2) + "\n")


def copy_chat_files(source: Path, out: Path) -> None:
    """Carry a model directory's chat templates and generation defaults into another (import, export)."""
    write_chat_files(out, read_chat_templates(source), read_generation_config(source))


SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def named_special_tokens(directory: Path) -> dict[str, str]:
    """The special tokens' texts a folder names: tokenizer_config.json's, special_tokens_map.json's
    over them, as transformers reads them (until 2026-12-07 tokenizer_config.json's won, so a
    folder whose two files disagree got another EOS, BOS or padding token than transformers')."""
    out: dict[str, str] = {}
    for name, what in (
        (TOKENIZER_CONFIG, "tokenizer config"),
        ("special_tokens_map.json", "special tokens map"),
    ):
        file = directory / name
        raw = read_json(file, what) if file.is_file() else {}
        out |= {key: text for key in SPECIAL_TOKENS if (text := token_text(raw.get(key))) is not None}
        for key in (k for k in SPECIAL_TOKENS if k in raw and raw[k] is None):  # a null unsets it
            out.pop(key, None)
    return out


def special_tokens(directory: Path, tokenizer: Tokenizer) -> dict[str, str]:
    """The template variables transformers passes (its special_tokens_map): the folder's
    named_special_tokens, else the ids in config.json / the tokenizer."""
    out = named_special_tokens(directory)
    config = read_json(directory / "config.json", "model config")
    ids = {"bos_token": config.get("bos_token_id", tokenizer.bos_id), "eos_token": tokenizer.eos_id}
    for key, i in ids.items():
        text = tokenizer.hf.id_to_token(i) if isinstance(i, int) else None
        if key not in out and text is not None:
            out[key] = text
    return out
