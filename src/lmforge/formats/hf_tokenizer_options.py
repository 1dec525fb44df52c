"""tokenizer_config.json's options over an HF folder's tokenizer.json, as transformers applies them.

transformers' BERT (and DistilBERT), RoBERTa, GPT-2 and Qwen2 tokenizer classes build their
normalizer, pre-tokenizer and post-processor from tokenizer_config.json's do_lower_case,
strip_accents, tokenize_chinese_chars, add_prefix_space and trim_offsets (their defaults where it
names none) over what tokenizer.json holds: transformers 4's ...TokenizerFast rebuilt a part whose
state differed, transformers 5 rebuilds them all. A copy of bert-base-uncased with do_lower_case
false is cased there; until 2026-12-07 lmforge read tokenizer.json alone, and such a folder gave
other ids (and other QA answers) than transformers. A folder whose tokenizer_class is
PreTrainedTokenizerFast (lmforge's exports) is read as its tokenizer.json says, there as here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from lmforge.errors import LmforgeError
from lmforge.formats.chat_files import TOKENIZER_CONFIG
from lmforge.formats.directory import read_json
from lmforge.tokenization.tokenizer import Tokenizer

# (tokenizer.json's part, the type in it the class builds, {its key: tokenizer_config.json's key})
Rule = tuple[str, str, dict[str, str]]
_BERT: tuple[Rule, ...] = (
    (
        "normalizer",
        "BertNormalizer",
        {
            "lowercase": "do_lower_case",
            "strip_accents": "strip_accents",
            "handle_chinese_chars": "tokenize_chinese_chars",
        },
    ),
)
_BYTE_LEVEL: Rule = ("pre_tokenizer", "ByteLevel", {"add_prefix_space": "add_prefix_space"})
_ROBERTA_POST: Rule = (
    "post_processor",
    "RobertaProcessing",
    {"add_prefix_space": "add_prefix_space", "trim_offsets": "trim_offsets"},
)
RULES: dict[str, tuple[Rule, ...]] = {
    "BertTokenizer": _BERT,
    "DistilBertTokenizer": _BERT,
    "RobertaTokenizer": (_BYTE_LEVEL, _ROBERTA_POST),
    "GPT2Tokenizer": (_BYTE_LEVEL,),  # its post-processor is tokenizer.json's
    "Qwen2Tokenizer": (_BYTE_LEVEL,),  # the ByteLevel after its Split
}
# transformers 5's class registered for a model type (TOKENIZER_MAPPING_NAMES, without "Fast"), for
# the types whose registered class differs from a named one or has no rules: AutoTokenizer builds
# it where the folder names no class, and a backend (TokenizersBackend: tokenizer.json as it is)
# where the registered class is one and the named class another (Phi-3's and Mistral's folders
# naming GPT2Tokenizer or LlamaTokenizer read their tokenizer.json as it is)
REGISTERED = {
    "bert": "BertTokenizer",
    "distilbert": "BertTokenizer",
    "electra": "BertTokenizer",
    "roberta": "RobertaTokenizer",
    "gpt2": "GPT2Tokenizer",
    "qwen2": "Qwen2Tokenizer",
    "qwen3": "Qwen2Tokenizer",
    "mistral": "TokenizersBackend",
    "phi3": "TokenizersBackend",
    "gemma": "GemmaTokenizer",
    "gemma2": "GemmaTokenizer",
    "gemma3_text": "GemmaTokenizer",
    "marian": "MarianTokenizer",
}
BACKENDS = (
    "TokenizersBackend",
    "PythonBackend",
    "PreTrainedTokenizerFast",
    "PreTrainedTokenizer",
    "MistralCommonBackend",
)
# model types whose registered class transformers 5 builds whatever class the folder names (its
# MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS, those lmforge reads)
FORCED = ("qwen2", "phi3")
DEFAULTS: dict[str, bool | None] = {
    "do_lower_case": True,
    "strip_accents": None,  # BertNormalizer's: as lowercase
    "tokenize_chinese_chars": True,
    "add_prefix_space": False,
    "trim_offsets": True,
}
# the list of parts inside a Sequence, by part
_MEMBERS = {"normalizer": "normalizers", "pre_tokenizer": "pretokenizers", "post_processor": "processors"}


def tokenizer_class(directory: Path, raw: dict[str, Any]) -> str | None:
    """The tokenizer class transformers 5's AutoTokenizer builds for the folder, without "Fast"
    (None: a backend that reads tokenizer.json as it is): the class tokenizer_config.json names,
    else config.json's `tokenizer_class` (until 2026-12-07 only the former was read), else the
    model type's registered one; where the registered class differs from the named one, a backend
    if it is one, the registered class for FORCED types, else the named one."""
    file = directory / TOKENIZER_CONFIG
    config = read_json(file, "tokenizer config") if file.is_file() else {}
    named = config.get("tokenizer_class")
    named = named if isinstance(named, str) else raw.get("tokenizer_class")
    model_type = raw.get("model_type")
    registered = REGISTERED.get(model_type) if isinstance(model_type, str) else None
    name = named.removesuffix("Fast") if isinstance(named, str) else registered
    if registered is not None and name != registered:
        if registered in BACKENDS:
            return None
        name = registered if model_type in FORCED else name
    return None if name in BACKENDS else name


def with_config_options(tokenizer: Tokenizer, directory: Path, raw: dict[str, Any]) -> Tokenizer:
    """`tokenizer` (the folder's tokenizer.json) with tokenizer_config.json's options set where the
    folder's tokenizer class applies them; itself where nothing changes."""
    rules = RULES.get(tokenizer_class(directory, raw) or "")
    if rules is None:
        return tokenizer
    options = _options(directory, {option for _, _, keys in rules for option in keys.values()})
    spec = json.loads(tokenizer.hf.to_str())
    changed = False
    if rules is _BERT and (spec.get("normalizer") or {}).get("type") != "BertNormalizer":  # or none
        # BertTokenizer builds its normalizer whatever tokenizer.json holds (a Sequence of NFD,
        # Lowercase and StripAccents kept lower-casing a do_lower_case false folder)
        spec["normalizer"] = {"type": "BertNormalizer", "clean_text": True}
    for part, kind, keys in rules:
        for node in _nodes(spec.get(part), _MEMBERS[part]):
            if node.get("type") != kind:
                continue
            for key, option in keys.items():
                if node.get(key) != options[option]:
                    node[key] = options[option]
                    changed = True
    if not changed:
        return tokenizer
    return Tokenizer(HFTokenizer.from_str(json.dumps(spec)))


def prefix_space(hf: HFTokenizer) -> bool:
    """Whether the tokenizer's byte-level pre-tokenizer puts a space before a text."""
    spec = json.loads(hf.to_str()).get("pre_tokenizer")
    return any(
        n.get("type") == "ByteLevel" and n.get("add_prefix_space") for n in _nodes(spec, "pretokenizers")
    )


def _nodes(node: Any, members: str) -> list[dict[str, Any]]:
    """A part of tokenizer.json and, for a Sequence, the parts in it."""
    if not isinstance(node, dict):
        return []
    inner = node.get(members) if node.get("type") == "Sequence" else None
    return [node] + [n for n in inner if isinstance(n, dict)] if isinstance(inner, list) else [node]


def _options(directory: Path, names: set[str]) -> dict[str, bool | None]:
    """tokenizer_config.json's options of these names (null: the default, as transformers' classes
    take None), else their defaults; another value than true or false is one line naming the file
    and key."""
    file = directory / TOKENIZER_CONFIG
    config = read_json(file, "tokenizer config") if file.is_file() else {}
    options = {}
    for key in (k for k in DEFAULTS if k in names):  # in a fixed order, for the first error
        default, value = DEFAULTS[key], config.get(key)
        if value is not None and not isinstance(value, bool):
            raise LmforgeError(f"{file}: {key!r} must be true or false, not {value!r}")
        options[key] = default if value is None else value
    return options
