"""The tokenizer a GGUF file describes in its metadata, rebuilt as an HF `tokenizers` tokenizer.

A GGUF has no tokenizer.json: llama.cpp stores the vocabulary (`tokenizer.ggml.tokens`), the
merges, each token's type and the special ids as metadata. This rebuilds byte-level BPE
(`tokenizer.ggml.model` 'gpt2') exactly as transformers' own GGUF loader does
(transformers/integrations/gguf/gguf_tokenizer_mapping.py), so both give the same ids:

- tokens outside GPT-2's byte alphabet are respelled byte by byte;
- CONTROL tokens become special added tokens (not normalized), except, in a byte-level vocabulary,
  ones using characters outside the byte alphabet (a llama.cpp mislabel transformers also skips);
  USER_DEFINED tokens become plain added tokens;
- text is split by the regex `tokenizer.ggml.pre` names (Llama 3's, Qwen2's, GPT-4o's), else by
  GPT-2's own (SmolLM2's 'smollm' among them: its merges never join digits, so its digit split
  changes nothing).

SentencePiece vocabularies ('llama') are rebuilt in gguf_sentencepiece.py; others ('t5', 'rwkv',
...) are refused with a one-line error. Also here: the ids that end a reply (EOS, end of turn, end
of message) and the chat templates (`tokenizer.chat_template`, `tokenizer.chat_template.NAME`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as HFTokenizer

from lmforge.errors import LmforgeError
from lmforge.formats.gguf_sentencepiece import CONTROL, USER_DEFINED, file_merges, sentencepiece_hf
from lmforge.tokenization.tokenizer import Tokenizer

_LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TEKKEN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT4O = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# tokenizer.ggml.pre -> split regex (transformers' GGUF_PRE_TOKENIZER_SPLITS); others: GPT-2's
SPLITS = {
    **dict.fromkeys(
        (
            "llama3",
            "llama-v3",
            "llama-bpe",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "midm-2.0",
            "lfm2",
            "jina-v5-nano",
            "dbrx",
            "smaug-bpe",
        ),
        _LLAMA3,
    ),  # fmt: skip
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez"), _QWEN2),
    "tekken": _TEKKEN,
    **dict.fromkeys(("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"), _GPT4O),
}


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character table (bytes_to_unicode)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


IDS = (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("pad", "padding_token_id"),
       ("eot", "eot_token_id"), ("eom", "eom_token_id"))  # fmt: skip


def _ids(meta: dict[str, Any], n_tokens: int, file: str) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for name, key in IDS:
        value = meta.get(f"tokenizer.ggml.{key}")
        if value is not None and not (isinstance(value, int) and 0 <= value < n_tokens):
            raise LmforgeError(f"{file}: tokenizer.ggml.{key}={value!r} is not a token id")
        out[name] = value
    return out


def gguf_tokenizer(meta: dict[str, Any], file: str) -> Tokenizer:
    """The lmforge Tokenizer for a GGUF file's metadata (eos/bos/pad ids set from it)."""
    kind = meta.get("tokenizer.ggml.model")
    if kind not in ("gpt2", "llama"):
        raise LmforgeError(
            f"{file}: unsupported tokenizer model tokenizer.ggml.model={kind!r} (lmforge rebuilds"
            " byte-level BPE, 'gpt2', and SentencePiece BPE, 'llama')"
        )
    tokens = meta.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise LmforgeError(f"{file}: tokenizer.ggml.tokens must be a non-empty list of strings")
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    if len(types) != len(tokens):
        raise LmforgeError(
            f"{file}: tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens"
        )
    ids = _ids(meta, len(tokens), file)
    if kind == "llama":
        hf = sentencepiece_hf(meta, tokens, types, ids, file)
        # llama.cpp and transformers add BOS to a SentencePiece text unless the file says not to
        add_bos = meta.get("tokenizer.ggml.add_bos_token", True)
    else:
        hf = _byte_level_hf(meta, tokens, types, file)
        add_bos = meta.get("tokenizer.ggml.add_bos_token")
    bos = ids["bos"] if add_bos else None
    eos = ids["eos"] if meta.get("tokenizer.ggml.add_eos_token") else None
    hf.post_processor = _post_processor(hf, bos, eos)
    tokenizer = Tokenizer(hf)
    tokenizer.eos_id, tokenizer.bos_id, tokenizer.pad_id = ids["eos"], ids["bos"], ids["pad"]
    return tokenizer


# llama.cpp's end-of-generation tokens found by their text (llama-vocab.cpp), where no key names them
END_OF_TURN = (
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|end_of_text|>",
    "<EOT>",
)


def stop_ids(meta: dict[str, Any], tokenizer: Tokenizer, file: str) -> list[int]:
    """The ids that end a reply: EOS, the end-of-turn and end-of-message tokens the file names
    (`tokenizer.ggml.eot_token_id`, `eom_token_id`), and a control token llama.cpp knows by its text
    as one (`<|im_end|>`, `<|end|>`, `<end_of_turn>`...) that the file's chat template writes:
    a chat model's turn ends there where EOS is another token, as llama.cpp stops at each and as the
    model's Hugging Face generation_config.json lists them (Phi-3's `<|end|>` beside
    `<|endoftext|>`); generation_config.json's list. Until 2026-12-07 only EOS."""
    ids = _ids(meta, tokenizer.vocab_size, file)
    tokens = meta.get("tokenizer.ggml.tokens") or []
    types = meta.get("tokenizer.ggml.token_type") or []
    template = meta.get("tokenizer.chat_template")
    written = [
        i
        for i, (token, kind) in enumerate(zip(tokens, types, strict=False))
        if kind == CONTROL and token in END_OF_TURN and isinstance(template, str) and token in template
    ]
    return list(dict.fromkeys(i for i in (ids["eos"], ids["eot"], ids["eom"], *written) if i is not None))


def _byte_level_hf(meta: dict[str, Any], tokens: list[str], types: list[int], file: str) -> HFTokenizer:
    """The `tokenizers` tokenizer (no post-processor) for a 'gpt2' vocabulary."""
    merges = file_merges(meta, file)
    alphabet = _byte_alphabet()
    spelled = set(alphabet.values())
    vocab = {
        t if set(t) <= spelled else "".join(alphabet[b] for b in t.encode("utf-8")): i
        for i, t in enumerate(tokens)
    }
    pairs = [tuple(m.split(" ")) for m in merges]
    try:
        hf = HFTokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False))
    except Exception as e:  # tokenizers: a merge naming a token outside the vocabulary
        raise LmforgeError(f"{file}: tokenizer.ggml.merges do not fit the vocabulary ({e})") from None
    split = SPLITS.get(meta.get("tokenizer.ggml.pre", ""))
    if split is None:
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    hf.decoder = decoders.ByteLevel()
    control = [
        AddedToken(t, normalized=False, special=True)
        for t, kind_ in zip(tokens, types, strict=True)
        if kind_ == CONTROL and set(t) <= spelled
    ]
    hf.add_special_tokens(control)
    user = [
        AddedToken(t, normalized=False, special=False)
        for t, kind_ in zip(tokens, types, strict=True)
        if kind_ == USER_DEFINED and t in vocab
    ]
    hf.add_tokens(user)
    return hf


def _post_processor(hf: HFTokenizer, bos: int | None, eos: int | None) -> processors.PostProcessor:
    """transformers' template: the text alone, with BOS first and EOS last where the file asks
    (add_bos_token, add_eos_token), as transformers' and llama.cpp's tokenizers do."""
    name = {i: hf.id_to_token(i) for i in (bos, eos) if i is not None}
    head = [name[bos]] if bos is not None else []
    tail = [name[eos]] if eos is not None else []
    return processors.TemplateProcessing(
        single=[*head, "$A:0", *tail],
        pair=[*head, "$A:0", *tail, *head, "$B:1", *tail],
        special_tokens=[(name[i], i) for i in name],
    )


def chat_templates(meta: dict[str, Any], file: Path) -> dict[str, str]:
    """The chat templates by name: `tokenizer.chat_template` (the default) and llama.cpp's named ones,
    `tokenizer.chat_template.NAME` (gguf-py writes a tokenizer_config.json list so: tool_use, rag)."""
    out = {}
    for key, value in meta.items():
        name = "default" if key == "tokenizer.chat_template" else key.removeprefix("tokenizer.chat_template.")
        if name == key:
            continue
        if not isinstance(value, str):  # left out unsaid until 2026-12-07
            raise LmforgeError(
                f"{file}: GGUF key {key!r} is {type(value).__name__}, not a chat template (text)"
            )
        if not re.fullmatch(r"\w+", name):  # gguf-py keeps letters, digits and _; it becomes a file name
            raise LmforgeError(
                f"{file}: GGUF key {key!r}: a chat template name of letters, digits and _ only"
            )
        out[name] = value
    return out
