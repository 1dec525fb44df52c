"""The rules a decoder classifier reads and pools its texts by, kept across `train --resume`.

Two of them changed on 2026-12-07 for new runs: `last` pooling got a pad id (config.json's
`pad_token_id`, classification_head.py's pad_id_for), so a text ending in the pad token is read
at the token before, and texts are read with the special tokens of the tokenizer's post-processor
(config.json's `add_special_tokens`: a Llama's BOS first). A run started before them and resumed
now would switch rules mid-run: its weights would pool another token of some texts and meet a BOS
they never trained with, and its model would record rules half of its steps did not follow. The
checkpoint being resumed says which rules it was trained with (its config.json, written by the
task at every checkpoint): a resumed run keeps them to its end and records them as it found them;
a new run, or one resumed from a checkpoint written since, has the new ones. An encoder always read
its [CLS] ... [SEP] and has no pad id (it pools the first token, or the mean over the mask).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from lmforge.formats.directory import read_config_json
from lmforge.formats.lmforge_dirs import reads_special_tokens
from lmforge.tokenization.tokenizer import Tokenizer


@dataclass(frozen=True)
class Rules:
    """How a classification run reads its texts. `kept` names the checkpoint whose older rules
    a resumed run keeps (None: the new rules)."""

    pad_id: bool = True  # a decoder's `last` pooling gets a pad id where its head has none
    special_tokens: bool = True  # texts with the post-processor's special tokens
    kept: Path | None = None


def resumed_rules(checkpoint: Path | None, encoder: bool) -> Rules:
    """The rules of the checkpoint a run resumes (None: a new run, the new rules): no pad id
    where its config.json has no `pad_token_id`, bare texts where it has no add_special_tokens."""
    if checkpoint is None or encoder:
        return Rules()
    raw = read_config_json(checkpoint)
    marked = reads_special_tokens(checkpoint, raw)
    pad = raw.get("pad_token_id") is not None
    return Rules(pad, marked, None if pad and marked else checkpoint)


def bare_reader(tokenizer: Tokenizer) -> Tokenizer:
    """A copy of `tokenizer` that reads texts without the post-processor's special tokens
    (drop_affixes). The run's own stays whole: its tokenizer.json is what the checkpoint holds
    (checkpoint.check_tokenizer) and what every model directory of the run gets, as before."""
    reader = Tokenizer(HFTokenizer.from_str(tokenizer.hf.to_str()))
    reader.drop_affixes()
    return reader


def kept_line(rules: Rules, pooled_last: bool, affixes: list[str]) -> str:
    """The start-up line of a run that keeps a checkpoint's older rules ("" where they change
    nothing: `pooled_last`, the decoder pools its last token; `affixes`, the special tokens the
    tokenizer puts around a text)."""
    before, kept = [], []
    if not rules.pad_id and pooled_last:
        before.append("had a pad id")
        kept.append("pooling the attention mask's last token (no pad id)")
    if not rules.special_tokens and affixes:
        before.append("read texts with their tokenizer's special tokens")
        kept.append(f"reading texts bare (without {' '.join(map(repr, affixes))})")
    if rules.kept is None or not kept:
        return ""
    return (
        f"classifier: resumed from {rules.kept}, written before lmforge's decoder classifiers"
        f" {' and '.join(before)}; the run keeps {' and '.join(kept)}, as it was trained"
    )
