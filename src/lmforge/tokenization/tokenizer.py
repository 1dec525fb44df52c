"""Tokenizers: character level and byte-level BPE, both HF `tokenizers` saved as tokenizer.json.

The character tokenizer is a BPE model with no merges: each character is one token, ids follow
sorted code points (so Tiny Shakespeare gets nanoGPT's 65 ids), specials come last. A character
outside its vocabulary becomes `<|unk|>`; that is never silent: the first encode that meets one
warns on stderr with the count and examples (once per tokenizer), and prep counts them over the
whole corpus (report.json's unknown_characters). A warning rather than an error, since a prompt
with one stray character should still generate.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from lmforge.errors import LmforgeError

EOS = "<|endoftext|>"
PAD = "<|pad|>"
UNK = "<|unk|>"
BOS = "<|bos|>"
SPECIALS = [EOS, PAD, UNK]
BPE_SPECIALS = [*SPECIALS, BOS]  # byte-level BPE also has a BOS (ids 0-3); char keeps 3 specials
_CHUNK = 1 << 16  # characters per piece when encoding char-level text in parallel
CONTEXT_TOKENS = 5  # a prompt's last ids decode_after reads (vLLM's detokenizer reads 5 too)


def check_text(text: str) -> None:
    """A one-line error for a str that is not valid Unicode, so not UTF-8: a lone surrogate, as
    Python makes of undecodable bytes (argv, stdin: surrogateescape) or JSON's "\\ud800". The
    tokenizer libraries refuse such text with a bare TypeError or RuntimeError."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        code = ord(text[e.start])
        byte = f", the undecodable byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else ""
        # U+XXXX, never the character itself: it cannot be printed or sent as UTF-8 either
        raise LmforgeError(
            f"the text is not valid UTF-8 (a lone surrogate U+{code:04X}{byte}, at character {e.start})"
        ) from None


class Tokenizer:
    """A thin, typed wrapper over `tokenizers.Tokenizer` with the ids lmforge needs."""

    def __init__(self, hf: HFTokenizer) -> None:
        self.hf = hf
        spec = json.loads(hf.to_str())
        self.kind = "bpe" if (spec.get("decoder") or {}).get("type") == "ByteLevel" else "char"
        model = spec.get("model") or {}
        if self.kind == "char" and (model.get("type") != "BPE" or model.get("merges")):
            self.kind = "other"  # an imported tokenizer (WordPiece, sentencepiece-style BPE)
        eos = hf.token_to_id(EOS)
        self.eos_id: int | None = eos
        self.pad_id: int | None = hf.token_to_id(PAD)
        self.bos_id: int | None = hf.token_to_id(BOS)
        self.unk_id: int | None = hf.token_to_id(UNK) if self.kind == "char" else None
        self.warn_unknown = True
        """Warn on the next encode that meets a character outside a char vocabulary (then False)."""
        self.rows: int | None = None
        """The model's embedding rows where the tokenizer has ids past them (else None): a text
        giving one is refused (formats/directory.check_token_ids; rows_source names the file)."""
        self.rows_source = ""
        self.byte_run_ids = _byte_run_ids(hf, spec.get("decoder"))
        """Ids whose text a later token can still change: a byte-fallback decoder's <0xNN> tokens
        (and the specials decode drops between them), whose run it decodes as one byte string."""

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    # --- training -----------------------------------------------------------------------
    @classmethod
    def train_char(cls, texts: Iterable[str]) -> Tokenizer:
        chars: set[str] = set()
        for text in texts:
            chars.update(text)
        if not chars:
            raise LmforgeError("cannot train a character tokenizer on an empty corpus")
        vocab = {c: i for i, c in enumerate(sorted(chars))}
        for special in SPECIALS:
            vocab[special] = len(vocab)
        hf = HFTokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
        hf.add_special_tokens(SPECIALS)
        hf.decoder = decoders.Fuse()
        return cls(hf)

    @classmethod
    def train_bpe(cls, texts: Iterable[str], vocab_size: int) -> Tokenizer:
        if vocab_size < 256 + len(BPE_SPECIALS):
            raise LmforgeError(f"data.vocab_size={vocab_size} must be at least {256 + len(BPE_SPECIALS)}")
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=BPE_SPECIALS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        hf.train_from_iterator((_cut_long_runs(t) for t in texts), trainer=trainer)
        return cls(hf)

    # --- files --------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        try:
            return cls(HFTokenizer.from_file(str(path)))
        except Exception as e:  # tokenizers raises plain Exception on bad files
            raise LmforgeError(f"{path}: cannot load tokenizer: {e}") from None

    def save(self, path: str | Path) -> None:
        self.hf.save(str(path))

    def save_dir(self, directory: Path) -> None:
        """Write the tokenizer's files into a model or data directory (as MarianTokenizer does)."""
        self.save(directory / "tokenizer.json")

    def sha256(self) -> str:
        return hashlib.sha256(self.hf.to_str().encode()).hexdigest()

    # --- encoding -----------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        try:
            if self.kind == "char" and len(text) > _CHUNK:
                # No merges, so pieces encode independently; encode_batch runs them on every core.
                pieces = [text[i : i + _CHUNK] for i in range(0, len(text), _CHUNK)]
                ids = [i for enc in self.hf.encode_batch(pieces, add_special_tokens=False) for i in enc.ids]
            else:
                ids = self.hf.encode(text, add_special_tokens=False).ids
        except TypeError:  # checked only on failure: valid text pays nothing for the check
            check_text(text)
            raise
        if self.unk_id is not None and self.warn_unknown and self.unk_id in ids:
            unknown = UnknownChars(self)
            unknown.add(text, ids)
            if unknown.count:
                self.warn_unknown = False
                print(f"lmforge: warning: {unknown.message()}", file=sys.stderr)
        self.check_rows(ids)
        return ids

    def check_rows(self, ids: list[int]) -> None:
        """One line for an id the model has no embedding row for (see `rows`): encode does it, and
        every reader that encodes through `hf` itself (chat masks, embeddings, QA windows)."""
        if self.rows is not None and ids and max(ids) >= self.rows:
            bad = max(ids)
            raise LmforgeError(
                f"the text holds token {bad} {self.hf.id_to_token(bad)!r}, past the model's {self.rows}"
                f" embedding rows ({self.rows_source} has tokens its model lacks)"
            )

    def encode_prompt(self, text: str) -> list[int]:
        """A plain-text prompt's ids as transformers' `tokenizer(text)` gives them: with the special
        tokens the tokenizer's post-processor adds (Llama 3's, Llama 2's and Mistral's BOS; lmforge's
        own tokenizers and SmolLM2's add none). A rendered chat template writes its own, so it
        goes through `encode`, as transformers' apply_chat_template does."""
        ids = self.encode(text)  # checks the text, warns of unknown characters
        if self.hf.post_processor is None:
            return ids
        ids = self.hf.encode(text, add_special_tokens=True).ids
        self.check_rows(ids)
        return ids

    def text_affixes(self) -> tuple[list[int], list[int]]:
        """The special ids the post-processor puts before and after a text (Llama's BOS; a GGUF's
        add_eos_token EOS after; none for lmforge's and SmolLM2's tokenizers): how a document of
        the models trained with them looks, as transformers' `tokenizer(text)` gives it."""
        if self.hf.post_processor is None:
            return [], []
        probe = self.hf.encode("a", add_special_tokens=True)
        mask = probe.special_tokens_mask
        lead = next((i for i, m in enumerate(mask) if not m), len(mask))
        tail = next((i for i, m in enumerate(reversed(mask)) if not m), 0)
        return probe.ids[:lead], probe.ids[len(mask) - tail :]

    def encoder_specials(self) -> dict[str, str]:
        """cls_token and sep_token of a BERT or RoBERTa post-processor, unk_token of a WordPiece
        model: their names, which a vocab.txt folder may choose ("<cls>"), as tokenizer_config.json
        gives them to transformers."""
        spec = json.loads(self.hf.to_str())
        post, model = spec.get("post_processor") or {}, spec.get("model") or {}
        names = {}
        if post.get("type") in ("BertProcessing", "RobertaProcessing"):
            names = {"cls_token": post["cls"][0], "sep_token": post["sep"][0]}
        if model.get("type") == "WordPiece" and model.get("unk_token"):
            names["unk_token"] = model["unk_token"]
        return names

    def drop_affixes(self) -> None:
        """From now on encode a text with no special tokens around it (encode_prompt gives
        encode's ids): how lmforge read a decoder classifier's texts before it encoded them as
        transformers' `tokenizer(text)` does (formats/lmforge_dirs.py keeps such a classifier's)."""
        if self.text_affixes() != ([], []):
            self.hf.post_processor = None

    def unknown_chars(self, text: str) -> list[str]:
        """The distinct characters of `text` a character vocabulary lacks, in order of appearance."""
        if self.kind != "char":
            return []
        for special in SPECIALS:  # matched whole by the tokenizer: its characters are no unknowns
            text = text.replace(special, "")
        vocab = self.hf.get_vocab()
        return list(dict.fromkeys(c for c in text if c not in vocab))

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=True)

    def decode_after(self, context: Sequence[int], ids: Sequence[int]) -> str:
        """The text `ids` add after `context` (a prompt's ids): decode(tail + ids) less decode(tail),
        tail being the context's last CONTEXT_TOKENS ids. A SentencePiece decoder (Llama 2's,
        Mistral's Strip(" ", 1, 0), a Metaspace one) drops a text's first space, so ids decoded
        alone lost the space that starts a continuation ("a bird" + "the"); vLLM decodes new tokens
        after the prompt's last ones too. Where the tail's text is not a prefix (a context ending in
        part of a character or an open byte-fallback run) it is decode(ids), as before. Byte-level
        and character tokenizers give decode(ids) for any context that ends at a whole character."""
        tail = list(context[-CONTEXT_TOKENS:]) if context else []
        if not tail:
            return self.decode(ids)
        before, whole = self.decode(tail), self.decode([*tail, *ids])
        return whole[len(before) :] if whole.startswith(before) else self.decode(ids)

    def token_bytes(self) -> list[int]:
        """UTF-8 bytes each token stands for (0 for specials): the denominator of bits per byte.
        Specials are lmforge's and every special token of the tokenizer (SmolLM2's `<|im_end|>`,
        Llama 3's `<|end_of_text|>`: their names' characters were counted as text bytes), and the
        ids the post-processor puts around a text (a BOS prep writes before each document)."""
        added = self.hf.get_added_tokens_decoder()
        specials = {self.hf.token_to_id(s) for s in BPE_SPECIALS} | {i for i, t in added.items() if t.special}
        specials |= {i for ids in self.text_affixes() for i in ids}
        sizes = []
        for i in range(self.vocab_size):
            token = self.hf.id_to_token(i) or ""
            if i in specials:
                sizes.append(0)
            elif self.kind == "bpe":
                sizes.append(len(token))  # byte-level alphabet: one character per byte
            else:
                sizes.append(len(token.encode("utf-8")))
        return sizes


def _has_byte_fallback(decoder: Any) -> bool:
    """Whether a tokenizer.json decoder (or a Sequence of them) holds ByteFallback."""
    if not isinstance(decoder, dict):
        return False
    inner = decoder.get("decoders") or []  # a Sequence's
    return decoder.get("type") == "ByteFallback" or any(map(_has_byte_fallback, inner))


def _byte_run_ids(hf: HFTokenizer, decoder: Any) -> frozenset[int]:
    """SentencePiece-style byte fallback (Llama 2, Mistral, Gemma): HF's ByteFallback decoder reads a
    run of <0xNN> tokens as one byte string, and the whole run becomes one U+FFFD per token when
    it is not valid UTF-8, so a token can change the text of the run before it ("é" of C3 A9
    becomes three U+FFFD after 80). Specials are in the set too: decode drops them before the
    decoder, so they do not end a run. Empty for every other decoder (byte-level BPE decodes
    bytes with from_utf8_lossy, where only a trailing partial character can change)."""
    if not _has_byte_fallback(decoder):
        return frozenset()
    ids = {hf.token_to_id(f"<0x{b:02X}>") for b in range(256)}
    ids |= {i for i, t in hf.get_added_tokens_decoder().items() if t.special}
    return frozenset(i for i in ids if i is not None)


class UnknownChars:
    """Counts the characters a character vocabulary lacked (each became `<|unk|>`), with examples."""

    EXAMPLES = 5

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.count = 0
        self.examples: list[str] = []

    def add(self, text: str, ids: Sequence[int] | Any) -> None:
        unk = self.tokenizer.unk_id
        if unk is None:
            return
        found = ids.count(unk) if isinstance(ids, list) else int((ids == unk).sum())
        if not found:
            return
        chars = self.tokenizer.unknown_chars(text)
        if not chars:
            return  # the literal text "<|unk|>", not an unknown character
        self.count += found
        for c in chars:
            if len(self.examples) < self.EXAMPLES and c not in self.examples:
                self.examples.append(c)

    def message(self) -> str:
        shown = ", ".join(repr(c) for c in self.examples)
        return (
            f"{self.count:,} character(s) not in the character vocabulary became <|unk|> (e.g. {shown});"
            " train the tokenizer on text that has them to keep them"
        )


LONG_RUN = re.compile(r"\S{256}")


def _cut_long_runs(text: str) -> str:
    """The text with a space after every 256 characters of a run without whitespace, for BPE
    training only: the trainer's time grows with the square of a pre-token's length (a 200 KB
    base64 or minified line took 14 s, a 3 MB one over 14 minutes; cut, 0.01 s). Merges inside
    such runs are still learned; encoding reads the text as it is."""
    return LONG_RUN.sub(lambda m: m.group() + " ", text)
