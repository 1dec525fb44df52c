"""The tokenizer of a Hugging Face model directory: tokenizer.json, or GPT-2's (or RoBERTa's)
vocab.json + merges.txt, or BERT's vocab.txt, or Marian's source.spm + target.spm + vocab.json
(tokenization/marian.py); its EOS id from generation_config.json or config.json, else the token
tokenizer_config.json names, as transformers reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors

from lmforge.errors import LmforgeError
from lmforge.formats.chat_files import token_text
from lmforge.formats.directory import read_json
from lmforge.tokenization.marian import MarianTokenizer, is_marian_dir
from lmforge.tokenization.tokenizer import Tokenizer

GPT2_EOS = "<|endoftext|>"


def _byte_level_bpe(vocab: Path, merges: Path) -> HFTokenizer:
    hf = HFTokenizer(models.BPE.from_file(str(vocab), str(merges)))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    return hf


def gpt2_tokenizer(vocab: Path, merges: Path) -> HFTokenizer:
    """GPT-2's byte-level BPE from its vocab.json + merges.txt, set up as transformers' GPT2TokenizerFast."""
    hf = _byte_level_bpe(vocab, merges)
    hf.post_processor = processors.ByteLevel(trim_offsets=False)
    hf.add_special_tokens([GPT2_EOS])
    return hf


ROBERTA_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


def roberta_tokenizer(vocab: Path, merges: Path) -> HFTokenizer:
    """RoBERTa's byte-level BPE from vocab.json + merges.txt, as transformers' RobertaTokenizerFast:
    GPT-2's, with <s> ... </s> around a text (<s> a </s></s> b </s> around a pair)."""
    hf = _byte_level_bpe(vocab, merges)
    hf.add_special_tokens([t for t in ROBERTA_SPECIALS if hf.token_to_id(t) is not None])
    ids = {t: hf.token_to_id(t) for t in ("<s>", "</s>")}
    if None in ids.values():
        raise LmforgeError(f"{vocab}: a RoBERTa vocabulary needs <s> and </s>")
    # transformers: trim_offsets, and no prefix space (a context that starts with one keeps it out)
    hf.post_processor = processors.RobertaProcessing(
        ("</s>", ids["</s>"]), ("<s>", ids["<s>"]), trim_offsets=True, add_prefix_space=False
    )
    return hf


def load_hf_tokenizer(directory: Path, raw: dict[str, Any]) -> Tokenizer | MarianTokenizer:
    if is_marian_dir(directory):
        return MarianTokenizer(directory)
    if (directory / "tokenizer.json").is_file():
        tokenizer = Tokenizer.load(directory / "tokenizer.json")
    elif (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        build = roberta_tokenizer if raw.get("model_type") == "roberta" else gpt2_tokenizer
        tokenizer = Tokenizer(build(directory / "vocab.json", directory / "merges.txt"))
    elif (directory / "vocab.txt").is_file():
        from tokenizers.implementations import BertWordPieceTokenizer

        lower = (
            read_json(directory / "tokenizer_config.json").get("do_lower_case", True)
            if (directory / "tokenizer_config.json").is_file()
            else True
        )
        try:
            wordpiece = BertWordPieceTokenizer(str(directory / "vocab.txt"), lowercase=lower)
        except (TypeError, ValueError, OSError) as e:  # e.g. "sep_token not found in the vocabulary"
            raise LmforgeError(f"{directory / 'vocab.txt'}: not a BERT vocabulary: {e}") from None
        tokenizer = Tokenizer(wordpiece._tokenizer)
    else:
        raise LmforgeError(f"{directory}: no tokenizer.json, vocab.json + merges.txt, or vocab.txt")
    # Padding and truncation saved in tokenizer.json (MiniLM pads to 128) are batching choices;
    # lmforge pads its own batches.
    tokenizer.hf.no_padding()
    tokenizer.hf.no_truncation()
    eos = _eos_id(directory, raw, tokenizer)
    if eos is not None:
        tokenizer.eos_id = eos
    return tokenizer


def _eos_id(directory: Path, raw: dict[str, Any], tokenizer: Tokenizer) -> int | None:
    generation = directory / "generation_config.json"
    source = read_json(generation) if generation.is_file() else {}
    eos = source.get("eos_token_id", raw.get("eos_token_id"))
    if eos is None and (directory / "tokenizer_config.json").is_file():  # only the token's name
        named = token_text(read_json(directory / "tokenizer_config.json").get("eos_token"))
        eos = tokenizer.hf.token_to_id(named) if named is not None else None
    return eos[0] if isinstance(eos, list) and eos else eos
