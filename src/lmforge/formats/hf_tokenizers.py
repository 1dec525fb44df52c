"""The tokenizer of a Hugging Face model directory: tokenizer.json, or GPT-2's (or RoBERTa's)
vocab.json + merges.txt, or BERT's vocab.txt, with the tokens those add to their vocabulary
(tokenizer_config.json's added_tokens_decoder, else added_tokens.json), or Marian's source.spm +
target.spm + vocab.json (tokenization/marian.py); its EOS id from generation_config.json or
config.json, else the token tokenizer_config.json names, as transformers reads it. Its
padding_side and truncation_side (transformers' batching choices: a decoder's "left") go
through import and export unchanged. The vocabulary files are built with tokenizer_config.json's
options as transformers' tokenizer classes take them (BERT's do_lower_case, strip_accents,
tokenize_chinese_chars; add_prefix_space, RoBERTa's trim_offsets), and set over tokenizer.json
where transformers' class for the folder sets them (formats/hf_tokenizer_options.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as HFTokenizer

from lmforge.errors import LmforgeError
from lmforge.formats.chat_files import (
    TOKENIZER_CONFIG,
    checked_eos,
    named_special_tokens,
    read_generation_config,
    token_text,
)
from lmforge.formats.directory import check_token_ids, read_json
from lmforge.formats.hf_tokenizer_options import with_config_options
from lmforge.tokenization.marian import MarianTokenizer, is_marian_dir
from lmforge.tokenization.tokenizer import Tokenizer

GPT2_EOS = "<|endoftext|>"
SIDES = ("padding_side", "truncation_side")


def _byte_level_bpe(vocab: Path, merges: Path, prefix_space: bool) -> HFTokenizer:
    hf = HFTokenizer(models.BPE.from_file(str(vocab), str(merges)))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
    hf.decoder = decoders.ByteLevel()
    return hf


def gpt2_tokenizer(vocab: Path, merges: Path, options: dict[str, Any] | None = None) -> HFTokenizer:
    """GPT-2's byte-level BPE from its vocab.json + merges.txt, set up as transformers' GPT2TokenizerFast
    (`options`: tokenizer_config.json's add_prefix_space, default false)."""
    hf = _byte_level_bpe(vocab, merges, (options or {}).get("add_prefix_space", False))
    hf.post_processor = processors.ByteLevel(trim_offsets=False)
    hf.add_special_tokens([GPT2_EOS])
    return hf


ROBERTA_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


def roberta_tokenizer(vocab: Path, merges: Path, options: dict[str, Any] | None = None) -> HFTokenizer:
    """RoBERTa's byte-level BPE from vocab.json + merges.txt, as transformers' RobertaTokenizerFast:
    GPT-2's, with <s> ... </s> around a text (<s> a </s></s> b </s> around a pair); `options`:
    tokenizer_config.json's add_prefix_space (default false) and trim_offsets (default true)."""
    options = options or {}
    prefix_space = options.get("add_prefix_space", False)
    hf = _byte_level_bpe(vocab, merges, prefix_space)
    hf.add_special_tokens([t for t in ROBERTA_SPECIALS if hf.token_to_id(t) is not None])
    ids = {t: hf.token_to_id(t) for t in ("<s>", "</s>")}
    if None in ids.values():
        raise LmforgeError(f"{vocab}: a RoBERTa vocabulary needs <s> and </s>")
    # transformers' RobertaConverter: trim_offsets (without a prefix space, a context that starts
    # with one keeps it out of its first token's offsets)
    hf.post_processor = processors.RobertaProcessing(
        ("</s>", ids["</s>"]),
        ("<s>", ids["<s>"]),
        trim_offsets=options.get("trim_offsets", True),
        add_prefix_space=prefix_space,
    )
    return hf


def _config_flags(directory: Path, defaults: dict[str, bool | None]) -> dict[str, bool | None]:
    """tokenizer_config.json's values of these keys (true or false; null where the default is
    None), else their defaults, as transformers' tokenizer classes take them; another value is one
    line naming the file and key."""
    file = directory / TOKENIZER_CONFIG
    raw = read_json(file, "tokenizer config") if file.is_file() else {}
    flags = {}
    for key, default in defaults.items():
        value = raw.get(key, default)
        if not isinstance(value, bool) and not (value is None and default is None):
            allowed = "true, false or null" if default is None else "true or false"
            raise LmforgeError(f"{file}: {key!r} must be {allowed}, not {value!r}")
        flags[key] = value
    return flags


def bert_tokenizer(directory: Path) -> HFTokenizer:
    """BERT's WordPiece from vocab.txt, as transformers' BertTokenizerFast builds it from
    tokenizer_config.json's do_lower_case (default true), strip_accents (default null: as
    do_lower_case) and tokenize_chinese_chars (default true)."""
    from tokenizers.implementations import BertWordPieceTokenizer

    flags = _config_flags(
        directory, {"do_lower_case": True, "strip_accents": None, "tokenize_chinese_chars": True}
    )
    specials = _bert_specials(directory)
    try:
        wordpiece = BertWordPieceTokenizer(
            str(directory / "vocab.txt"),
            lowercase=flags["do_lower_case"],
            strip_accents=flags["strip_accents"],
            handle_chinese_chars=flags["tokenize_chinese_chars"],
            **specials,
        )
    except (TypeError, ValueError, OSError) as e:  # e.g. "sep_token not found in the vocabulary"
        raise LmforgeError(f"{directory / 'vocab.txt'}: not a BERT vocabulary: {e}") from None
    unknown = specials.get("unk_token", "[UNK]")
    if wordpiece.token_to_id(unknown) is None:  # else the first unknown word fails inside tokenizers
        raise LmforgeError(f"{directory / 'vocab.txt'}: not a BERT vocabulary: no unk_token {unknown!r}")
    return wordpiece._tokenizer


def _bert_specials(directory: Path) -> dict[str, str]:
    """The special tokens' names a BERT folder gives (unk_token="<unknown>", ...): tokenizer_config.json's,
    special_tokens_map.json's over them, as transformers reads them (until 2026-12-07 always [UNK],
    [CLS], [SEP], [PAD], [MASK]: other names' tokens were split into pieces)."""
    keys = ("unk_token", "sep_token", "cls_token", "pad_token", "mask_token")
    return {k: v for k, v in named_special_tokens(directory).items() if k in keys}


def load_hf_tokenizer(
    directory: Path, raw: dict[str, Any], rows: int | None = None
) -> Tokenizer | MarianTokenizer:
    """`rows`: the model's vocab_size, which every id the tokenizer gives must be below."""
    if is_marian_dir(directory):
        return MarianTokenizer(directory)
    if (directory / "tokenizer.json").is_file():
        # with tokenizer_config.json's do_lower_case, add_prefix_space, ... as transformers applies them
        tokenizer = with_config_options(Tokenizer.load(directory / "tokenizer.json"), directory, raw)
    elif (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        roberta = raw.get("model_type") == "roberta"
        build = roberta_tokenizer if roberta else gpt2_tokenizer
        defaults = {"add_prefix_space": False} | ({"trim_offsets": True} if roberta else {})
        options = _config_flags(directory, defaults)
        tokenizer = Tokenizer(build(directory / "vocab.json", directory / "merges.txt", options))
    elif (directory / "vocab.txt").is_file():
        tokenizer = Tokenizer(bert_tokenizer(directory))
    else:
        raise LmforgeError(f"{directory}: no tokenizer.json, vocab.json + merges.txt, or vocab.txt")
    if not (directory / "tokenizer.json").is_file():  # tokenizer.json holds its added tokens itself
        add_listed_tokens(directory, tokenizer.hf)
    # Padding and truncation saved in tokenizer.json (MiniLM pads to 128) are batching choices;
    # lmforge pads its own batches.
    tokenizer.hf.no_padding()
    tokenizer.hf.no_truncation()
    eos = _eos_id(directory, raw, tokenizer)
    if eos is not None:
        tokenizer.eos_id = eos
    if rows is not None:
        check_token_ids(tokenizer, rows, _token_file(directory), directory / "config.json")
    return tokenizer


def _token_file(directory: Path) -> Path:
    """The file a folder's tokens come from, for messages: the one of the layout that adds tokens."""
    names = ("tokenizer.json", TOKENIZER_CONFIG, ADDED_TOKENS, "vocab.json", "vocab.txt")
    config = directory / TOKENIZER_CONFIG
    adds = config.is_file() and read_json(config, "tokenizer config").get("added_tokens_decoder") is not None
    return next(directory / n for n in names if (directory / n).is_file() and (n != TOKENIZER_CONFIG or adds))


def _eos_id(directory: Path, raw: dict[str, Any], tokenizer: Tokenizer) -> int | None:
    eos = read_generation_config(directory).get("eos_token_id")
    eos = checked_eos(raw, directory / "config.json") if eos is None else eos
    if eos is None:  # only the token's name
        named = named_special_tokens(directory).get("eos_token")
        eos = tokenizer.hf.token_to_id(named) if named is not None else None
    return (eos[0] if eos else None) if isinstance(eos, list) else eos


def tokenizer_sides(directory: Path) -> dict[str, str]:
    """tokenizer_config.json's padding_side and truncation_side, where it gives them: "left" or
    "right", as transformers' tokenizers check (another value is one line naming the key)."""
    file = directory / TOKENIZER_CONFIG
    raw = read_json(file, "tokenizer config") if file.is_file() else {}
    for key in SIDES:
        if raw.get(key) not in (None, "left", "right"):
            raise LmforgeError(f'{file}: {key!r} must be "left" or "right", not {raw[key]!r}')
    return {k: raw[k] for k in SIDES if raw.get(k) is not None}


ADDED_TOKENS = "added_tokens.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
NAMED = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def add_listed_tokens(directory: Path, hf: HFTokenizer) -> None:
    """The tokens a folder of vocabulary files (vocab.json + merges.txt, vocab.txt) adds, at their
    ids, as transformers 5 reads them: tokenizer_config.json's added_tokens_decoder, else
    added_tokens.json, special where tokenizer_config.json or special_tokens_map.json names it a
    special token (bos_token ... mask_token, extra_special_tokens; special_tokens_map.json's
    additional_special_tokens does not count there, as in transformers 5)."""
    config_file = directory / TOKENIZER_CONFIG
    config = read_json(config_file, "tokenizer config") if config_file.is_file() else {}
    if config.get("added_tokens_decoder") is not None:
        _add_at_ids(hf, _decoder_tokens(config["added_tokens_decoder"], config_file), config_file)
        return
    file = directory / ADDED_TOKENS
    if not file.is_file():
        return
    listed = read_json(file, "added tokens file")
    for token, index in listed.items():
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise LmforgeError(
                f"{file}: token {token!r} must map to an id (a whole number >= 0), not {index!r}"
            )
    special = _special_names(config, directory)
    tokens = {i: AddedToken(t, normalized=t not in special, special=t in special) for t, i in listed.items()}
    _add_at_ids(hf, tokens, file)


def _special_names(config: dict[str, Any], directory: Path) -> set[str]:
    """The special tokens tokenizer_config.json and special_tokens_map.json name."""
    mapped_file = directory / SPECIAL_TOKENS_MAP
    mapped = read_json(mapped_file, "special tokens map") if mapped_file.is_file() else {}
    names = {token_text(source.get(key)) for source in (config, mapped) for key in NAMED}
    for extra in (config.get("extra_special_tokens") or config.get("additional_special_tokens"),
                  mapped.get("extra_special_tokens")):  # fmt: skip
        names |= {token_text(t) for t in extra} if isinstance(extra, list) else set()  # a dict: not there
    return {n for n in names if n is not None}


def _decoder_tokens(decoder: Any, file: Path) -> dict[int, AddedToken]:
    """tokenizer_config.json's added_tokens_decoder: {"50257": {"content": "<think>", "special": ...}}."""
    keys = ("content", "single_word", "lstrip", "rstrip", "normalized", "special")
    tokens = {}
    for key, entry in decoder.items() if isinstance(decoder, dict) else [(None, None)]:
        ok = isinstance(key, str) and key.isdigit() and isinstance(entry, dict)
        ok = ok and isinstance(entry.get("content"), str)
        if not ok or any(not isinstance(entry.get(k, False), bool) for k in keys[1:]):
            raise LmforgeError(
                f"{file}: 'added_tokens_decoder' must map ids to tokens"
                f' ({{"5": {{"content": ...}}}}), not {key!r}: {entry!r}'
            )
        tokens[int(key)] = AddedToken(**{k: entry[k] for k in keys if k in entry})
    return tokens


def _add_at_ids(hf: HFTokenizer, tokens: dict[int, AddedToken], file: Path) -> None:
    """Add the tokens in id order; each must land on its id (a token of the vocabulary already there)."""
    for index, token in sorted(tokens.items()):
        if hf.token_to_id(token.content) != index:
            (hf.add_special_tokens if token.special else hf.add_tokens)([token])
        got = hf.token_to_id(token.content)
        if got != index:
            raise LmforgeError(
                f"{file}: token {token.content!r} is listed at id {index}, but the vocabulary gives it"
                f" id {got} (added tokens take the ids after the vocabulary's, in order, without gaps)"
            )
