"""A GGUF file's SentencePiece vocabulary (`tokenizer.ggml.model` 'llama': Llama 1/2, Mistral 7B,
TinyLlama, Gemma 3...) rebuilt as an HF `tokenizers` BPE tokenizer, exactly as transformers' GGUF
loader builds it (transformers/integrations/gguf/gguf_tokenizer_mapping.py, which hands the
vocabulary to LlamaTokenizer or, for the gemma architectures, GemmaTokenizer, and gives phi3 its
own normalizer):

- BPE with byte fallback over the tokens as the file spells them; merges from
  `tokenizer.ggml.merges` where the file has them, else rebuilt from the vocabulary: every split of
  a token into two tokens, best first by `tokenizer.ggml.scores` (Llama) or by the order the tokens
  come in the file (Gemma, whose scores do not follow its merge order);
- Llama: `▁` replaces spaces and is put before the text (Metaspace, prepend 'first'); decoding
  drops that one leading space. Phi-3: the same by a normalizer, which puts `▁` before each piece
  of text between special tokens, as Phi-3's own tokenizer.json does. Gemma: spaces become `▁`
  with no prefix, the text is split after each space, and its whitespace-only tokens stored as
  real spaces are respelled as `▁`s;
- CONTROL tokens are special, USER_DEFINED ones plain added tokens, and the BOS/EOS/UNK/PAD (and
  Gemma's `<mask>`) special as transformers makes them; BOS goes first unless
  `tokenizer.ggml.add_bos_token` is false (llama.cpp's default for SentencePiece is true).
"""

from __future__ import annotations

from typing import Any

from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from lmforge.errors import LmforgeError

CONTROL, USER_DEFINED = 3, 4  # llama.cpp's token types (1 is NORMAL)
GEMMA_ARCHS = ("gemma", "gemma2", "gemma3")  # transformers' GGUF_SENTENCEPIECE_BUILDERS for Gemma
SPACE = "\u2581"


def derived_merges(tokens: list[str], scores: dict[str, float]) -> list[tuple[str, str]]:
    """transformers' generate_merges(vocab, scores): each token's splits into two tokens, sorted by
    the token's score (best first), then by the left and right piece's lengths."""
    vocab = {t: i for i, t in enumerate(tokens)}
    merges: list[tuple[str, str, float]] = []
    for merge, score in scores.items():
        local = [(merge[:k], merge[k:], score) for k in range(1, len(merge))]
        local = [m for m in local if m[0] in vocab and m[1] in vocab]
        merges.extend(sorted(local, key=lambda m: (vocab[m[0]], vocab[m[1]])))
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(left, right) for left, right, _ in merges]


def file_merges(meta: dict[str, Any], file: str) -> list[str]:
    """tokenizer.ggml.merges, checked: a list of 'left right' strings (a one-line error else)."""
    merges = meta.get("tokenizer.ggml.merges")
    if not isinstance(merges, list) or not all(isinstance(m, str) and m.count(" ") == 1 for m in merges):
        raise LmforgeError(f"{file}: tokenizer.ggml.merges must be a list of 'left right' strings")
    return merges


def _merges(meta: dict[str, Any], tokens: list[str], gemma: bool, file: str) -> list[tuple[str, str]]:
    if meta.get("tokenizer.ggml.merges") is not None:
        return [tuple(m.split(" ")) for m in file_merges(meta, file)]  # type: ignore[misc]
    if gemma:
        return derived_merges(tokens, {t: -i for i, t in enumerate(tokens)})
    scores = meta.get("tokenizer.ggml.scores")
    if (
        not isinstance(scores, list)
        or len(scores) != len(tokens)
        or not all(isinstance(s, int | float) for s in scores)
    ):
        raise LmforgeError(
            f"{file}: a SentencePiece vocabulary without tokenizer.ggml.merges needs"
            f" tokenizer.ggml.scores, one number per token ({len(tokens)})"
        )
    return derived_merges(tokens, dict(zip(tokens, scores, strict=True)))


def sentencepiece_hf(
    meta: dict[str, Any], tokens: list[str], types: list[int], ids: dict[str, int | None], file: str
) -> HFTokenizer:
    """The `tokenizers` tokenizer (no post-processor) for a 'llama' vocabulary; `ids` names the
    BOS/EOS/PAD ids the file gives."""
    gemma = meta.get("general.architecture") in GEMMA_ARCHS
    if gemma:  # a token of spaces only is stored as spaces; GemmaTokenizer looks up "▁▁"
        tokens = [SPACE * len(t) if " " in t and not t.strip() else t for t in tokens]
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = _merges(meta, tokens, gemma, file)
    unk = "<unk>" if gemma else None  # GemmaTokenizer names one; LlamaTokenizer's BPE has none
    try:
        model = models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True)
    except Exception as e:  # tokenizers: a merge naming a token outside the vocabulary
        raise LmforgeError(f"{file}: tokenizer.ggml.merges do not fit the vocabulary ({e})") from None
    hf = HFTokenizer(model)
    steps: list[decoders.Decoder] = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if gemma:
        hf.normalizer = normalizers.Replace(" ", SPACE)
        hf.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    elif meta.get("general.architecture") == "phi3":  # transformers' phi3_tokenizer, as Phi-3's own
        # tokenizer.json: the normalizer puts `▁` before each piece of text between special tokens
        # (the `▁` after `<|user|>`) and keeps a leading space as a second `▁` (until 2026-12-07
        # a Phi-3 GGUF got Llama's Metaspace: other ids for every chat prompt)
        hf.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)])
        steps.append(decoders.Strip(content=" ", left=1))
    else:
        hf.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="first", split=False)
        steps.append(decoders.Strip(content=" ", left=1))
    hf.decoder = decoders.Sequence(steps)
    hf.add_special_tokens(
        [
            AddedToken(t, normalized=False, special=True)
            for t, kind in zip(tokens, types, strict=True)
            if kind == CONTROL
        ]
    )
    hf.add_tokens(
        [
            AddedToken(t, normalized=False, special=False)
            for t, kind in zip(tokens, types, strict=True)
            if kind == USER_DEFINED
        ]
    )
    # transformers then adds its named special tokens where they are not added tokens yet
    unk_id = meta.get("tokenizer.ggml.unknown_token_id")
    named = (ids["bos"], ids["eos"], unk_id, ids["pad"])
    names = [tokens[i] for i in named if isinstance(i, int) and 0 <= i < len(tokens)]
    names += ["<mask>"] if gemma and "<mask>" in vocab else []
    added_names = {a.content for a in hf.get_added_tokens_decoder().values()}
    hf.add_special_tokens([AddedToken(n, special=True) for n in dict.fromkeys(names) if n not in added_names])
    return hf
