"""Marian (opus-mt) tokenizers: two sentencepiece models and one shared vocabulary.

A Marian directory ships `source.spm` (segments the source language), `target.spm` (the target
language) and `vocab.json` (piece -> id, shared by both sides and by the model's one embedding).
As transformers' MarianTokenizer does: a source sentence is cut into pieces by source.spm and the
pieces looked up in vocab.json (a piece it lacks -> `<unk>`), a leading language code such as
`>>fr<<` kept whole, a special token typed in the text (`</s>`) its id; a translation's ids are
looked up in vocab.json, specials dropped, and the pieces joined by target.spm. The segmentation
is the `sentencepiece` library's; only the vocab.json lookups are written here. The EOS after
each source is added by the translation code, as for lmforge's own tokenizers.

Translation needs `encode` (source side) and `decode` (target side); `encode_target` segments
target text (training labels) and `decode_source` joins source pieces.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sentencepiece as spm

from lmforge.errors import LmforgeError
from lmforge.tokenization.tokenizer import Tokenizer, check_text

FILES = ("source.spm", "target.spm", "vocab.json", "tokenizer_config.json", "special_tokens_map.json")
SPIECE_UNDERLINE = "\u2581"


def _clean_up_spaces(text: str) -> str:
    """transformers' `clean_up_tokenization`, applied when tokenizer_config.json asks for it."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't")):
        text = text.replace(before, after)
    for suffix in ("'m", "'s", "'ve", "'re"):
        text = text.replace(" " + suffix, suffix)
    return text


def is_marian_dir(directory: Path) -> bool:
    return (directory / "source.spm").is_file() and (directory / "target.spm").is_file()


def _token_name(config: dict[str, Any], key: str, default: str) -> str:
    value = config.get(key, default)
    return value.get("content", default) if isinstance(value, dict) else str(value)


class MarianTokenizer:
    kind = "marian"

    def __init__(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.files = {name: (directory / name).read_bytes() for name in FILES if (directory / name).is_file()}
        for name in ("source.spm", "target.spm", "vocab.json"):
            if name not in self.files:
                raise LmforgeError(f"{directory}: Marian tokenizer file {name} missing")
        config: dict[str, Any] = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the latter wins, as in HF
            if name in self.files:
                config.update(self._json(directory / name))
        if config.get("separate_vocabs"):
            raise LmforgeError(f"{directory}: separate source/target vocabularies are not supported")
        vocab = self._json(directory / "vocab.json")
        if not all(isinstance(i, int) for i in vocab.values()):
            raise LmforgeError(f"{directory / 'vocab.json'}: not a mapping of pieces to ids")
        self.vocab: dict[str, int] = vocab
        self.pieces = {i: p for p, i in vocab.items()}
        ids = {}
        for key, default in (("eos_token", "</s>"), ("unk_token", "<unk>"), ("pad_token", "<pad>")):
            name = _token_name(config, key, default)
            if name not in vocab:
                raise LmforgeError(f"{directory / 'vocab.json'}: no {key} {name!r}")
            ids[key] = vocab[name]
        self.eos_id: int | None = ids["eos_token"]
        self.unk_id, self.pad_id = ids["unk_token"], ids["pad_token"]
        self.bos_id: int | None = None
        extra = [_token_name({"t": t}, "t", "") for t in config.get("additional_special_tokens") or []]
        self.special_ids = set(ids.values()) | {vocab[t] for t in extra if t in vocab}
        # transformers' MarianTokenizer takes these typed in a text ("a </s> b") as their ids, not
        # pieces; the longest first where one begins another, as its added-tokens trie matches
        names = sorted({self.pieces[i] for i in self.special_ids}, key=len, reverse=True)
        self.specials = re.compile("(" + "|".join(map(re.escape, names)) + ")" if names else "(?!)")
        self.clean_up = bool(config.get("clean_up_tokenization_spaces", False))
        try:
            self.source = spm.SentencePieceProcessor(model_proto=self.files["source.spm"])
            self.target = spm.SentencePieceProcessor(model_proto=self.files["target.spm"])
        except (RuntimeError, OSError) as e:
            raise LmforgeError(f"{directory}: not a sentencepiece model: {e}") from None

    @staticmethod
    def _json(file: Path) -> dict[str, Any]:
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise LmforgeError(f"{file}: unreadable JSON: {e}") from None
        if not isinstance(raw, dict):
            raise LmforgeError(f"{file}: not a JSON object")
        return raw

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _ids(self, model: spm.SentencePieceProcessor, text: str) -> list[int]:
        """The special tokens typed in `text` as their ids, the parts between them segmented."""
        out: list[int] = []
        for n, part in enumerate(self.specials.split(text)):  # odd places: the specials matched
            out += [self.vocab[part]] if n % 2 else self._part_ids(model, part) if part else []
        return out

    def _part_ids(self, model: spm.SentencePieceProcessor, text: str) -> list[int]:
        """A text without special tokens: its leading language code whole, the rest segmented."""
        code: list[str] = []
        rest = text
        if text.startswith(">>") and (end := text.find("<<")) != -1:  # a target-language code
            code, rest = [text[: end + 2]], text[end + 2 :]
        try:
            pieces = code + model.encode(rest, out_type=str)
        except RuntimeError:  # sentencepiece's "Unable to cast" for text that is not valid Unicode
            check_text(text)
            raise
        return [self.vocab.get(p, self.unk_id) for p in pieces]

    def _text(self, model: spm.SentencePieceProcessor, ids: Iterable[int]) -> str:
        pieces = [self.pieces.get(i, "<unk>") for i in ids if i not in self.special_ids]
        text = model.decode_pieces(pieces).replace(SPIECE_UNDERLINE, " ").strip()
        return _clean_up_spaces(text) if self.clean_up else text

    def encode(self, text: str) -> list[int]:
        """Source text -> ids (no EOS)."""
        return self._ids(self.source, text)

    def encode_target(self, text: str) -> list[int]:
        return self._ids(self.target, text)

    def decode(self, ids: Iterable[int]) -> str:
        """Target ids -> text (specials dropped)."""
        return self._text(self.target, ids)

    def decode_source(self, ids: Iterable[int]) -> str:
        return self._text(self.source, ids)

    def token_bytes(self) -> list[int]:
        """UTF-8 bytes each id stands for in decoded text (specials 0; the word-start mark counts
        as the space it becomes): the denominator of bits per byte."""
        sizes = [0] * (max(self.pieces) + 1)
        for i, piece in self.pieces.items():
            if i not in self.special_ids:
                sizes[i] = len(piece.replace(SPIECE_UNDERLINE, " ").encode("utf-8"))
        return sizes

    def save_dir(self, directory: Path) -> None:
        """Write the tokenizer's files (unchanged bytes) into a model directory."""
        for name, data in self.files.items():
            (directory / name).write_bytes(data)

    def sha256(self) -> str:
        h = hashlib.sha256()
        for name in sorted(self.files):
            h.update(name.encode() + b"\0" + self.files[name])
        return h.hexdigest()


def load_translation_tokenizer(directory: Path) -> Tokenizer | MarianTokenizer:
    """A model directory's tokenizer: Marian's files if present, else tokenizer.json."""
    if is_marian_dir(directory):
        return MarianTokenizer(directory)
    return Tokenizer.load(directory / "tokenizer.json")
