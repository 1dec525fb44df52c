"""An encoder-decoder's generation_config.json: the decoding defaults lmforge takes from it, and a
note naming the keys that change transformers' decoding which lmforge's translation does not apply.

lmforge applies, as transformers' `generate` does: `num_beams`, `early_stopping`, `length_penalty`,
`repetition_penalty`, `no_repeat_ngram_size` (the model's defaults, an explicit option wins),
one-token `bad_words_ids` with `renormalize_logits` (never generated, masked before the softmax),
`decoder_start_token_id` and an EOS forced at the length limit (`forced_eos_token_id`). Its length
limit is its own (inference/translate.py: 2 x source + 10 tokens, at most the context), so a
`max_length` of at least the model's context changes nothing (opus-mt's 512); a smaller one is
named. Any other key below with a value that changes transformers' output is named once per load
on stderr, as chat and the text-generation pipeline name theirs (formats/chat_files.UNAPPLIED).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from lmforge.formats.chat_files import GENERATION_CONFIG, read_generation_config
from lmforge.model.seq2seq import Seq2Seq

# keys that change transformers' decoding of an encoder-decoder which lmforge's translation does
# not apply, and their values that change nothing
UNAPPLIED: dict[str, tuple[object, ...]] = {
    "max_new_tokens": (None,),
    "min_length": (None, 0, 1),  # counts the decoder's start token: 1 bans nothing
    "min_new_tokens": (None, 0),
    "max_time": (None,),
    "stop_strings": (None, "", []),
    "do_sample": (None, False),  # lmforge's translation never samples
    "num_beam_groups": (None, 1),
    "penalty_alpha": (None, 0),
    "dola_layers": (None,),
    "encoder_repetition_penalty": (None, 1),
    "encoder_no_repeat_ngram_size": (None, 0),
    "sequence_bias": (None, {}, []),
    "forced_bos_token_id": (None,),
    "exponential_decay_length_penalty": (None,),
    "suppress_tokens": (None, []),
    "begin_suppress_tokens": (None, []),
    "num_return_sequences": (None, 1),
    "guidance_scale": (None, 1),
    "watermarking_config": (None,),
    "token_healing": (None, False),
    "force_words_ids": (None, []),
    "constraints": (None, []),
}
# used only when sampling (do_sample true, itself named), or with groups of beams
SAMPLING: dict[str, tuple[object, ...]] = {
    "temperature": (None, 1),
    "top_k": (None, 0),
    "top_p": (None, 1),
    "min_p": (None,),
    "typical_p": (None, 1),
    "epsilon_cutoff": (None, 0),
    "eta_cutoff": (None, 0),
    "top_h": (None,),
}
GROUPS: dict[str, tuple[object, ...]] = {"diversity_penalty": (None, 0)}


def decoding_source(directory: Path, raw: dict[str, Any], file: str | Path) -> tuple[dict[str, Any], str]:
    """The keys an HF encoder-decoder decodes with, and the file holding them: generation_config.json's
    where there is one (transformers reads config.json's decoding keys only where there is none),
    else config.json's (`raw`, read from `file`)."""
    generation = directory / GENERATION_CONFIG
    if generation.is_file():
        return read_generation_config(directory), str(generation)
    return raw, str(file)


def _same(value: Any, neutral: tuple[object, ...]) -> bool:
    # True == 1 in Python: a flag matches only a flag (1.0 still matches 1)
    return any(value == n and isinstance(value, bool) == isinstance(n, bool) for n in neutral)


def unapplied(
    source: dict[str, Any], block_size: int, start_id: int | None, suppress_ids: list[int], eos: int | None
) -> dict[str, Any]:
    """The keys of `source` (a generation config) with values that change transformers' decoding
    and that lmforge's translation of a model with this context, start token, suppressed tokens and
    EOS does not apply."""
    tables = dict(UNAPPLIED)
    if source.get("do_sample") is True:
        tables |= SAMPLING
    groups = source.get("num_beam_groups")
    if isinstance(groups, int) and groups > 1:
        tables |= GROUPS
    out = {k: v for k, v in source.items() if k in tables and not _same(v, tables[k])}
    length = source.get("max_length")
    if isinstance(length, int) and not isinstance(length, bool) and length < block_size:
        out["max_length"] = length
    ends = (None, eos, [eos])
    for key in ("eos_token_id", "forced_eos_token_id"):  # lmforge stops at, and forces, the tokenizer's
        if source.get(key) not in ends:
            out[key] = source[key]
    start = source.get("decoder_start_token_id")
    if start is not None and start != (eos if start_id is None else start_id):  # None: lmforge's EOS
        out["decoder_start_token_id"] = start
    longer = [w for w in source.get("bad_words_ids") or [] if isinstance(w, list) and len(w) > 1]
    if longer:  # a one-token entry is suppressed (hf_files); a sequence's last token is not banned
        out["bad_words_ids"] = longer
    if source.get("renormalize_logits") is False and suppress_ids:  # lmforge renormalizes after masking
        out["renormalize_logits"] = False
    return out


def note_unapplied(
    directory: Path, raw: dict[str, Any] | None, file: str | Path, model: Seq2Seq, eos: int | None
) -> None:
    """Name on stderr, in one line, what `unapplied` finds for `model` in the decoding
    keys of `directory`: an HF folder's (`raw`: its config.json, read from `file`), or with `raw`
    None, those of the generation_config.json `lmforge import` copies beside lmforge's config.json."""
    if raw is None and not (directory / GENERATION_CONFIG).is_file():
        return
    source, named = decoding_source(directory, raw or {}, file)
    found = unapplied(source, model.config.block_size, model.start_id, model.suppress_ids, eos)
    if found:
        print(f"lmforge: note: {named}: {found} not applied by lmforge's translation", file=sys.stderr)
