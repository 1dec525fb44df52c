"""Tokens a row may not take next, as transformers' processors ban them: no_repeat_ngram_size
(NoRepeatNGramLogitsProcessor: no n-gram twice in the row, its prompt included), min_new_tokens
(MinNewTokensLengthLogitsProcessor: no end-of-text id before that many new tokens; vLLM's
min_tokens), min_length (MinLengthLogitsProcessor: none before the row, prompt included, is that
long), bad_words_ids (NoBadWordsLogitsProcessor: no token that completes one of these sequences;
a lone end-of-text id is left out), suppress_tokens (SuppressTokensLogitsProcessor: never) and
begin_suppress_tokens (SuppressTokensAtBeginLogitsProcessor: not as the first new token). A banned
token's logit is -inf, set after the penalties and before temperature, top-k, top-p and min-p (and
greedy's argmax), as transformers orders its processors.

Each row keeps its own ids (a left-padded row's padding is none of them, and min_length counts
the row's own prompt, as transformers' pipeline, which decodes prompt by prompt) and a table from
every (n-1)-gram it holds to the tokens that followed it, updated by the tokens added since the
last step: a step costs the same however long the row grows (transformers compares every window
of the row at every step).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from lmforge.errors import LmforgeError


@dataclass(frozen=True)
class Bans:
    """What a row may not take: a token completing an n-gram it already holds (`ngram`, 0: off),
    one of `stops` before `min_new` tokens of its own or before it is `min_length` tokens long
    (0: off), the last token of a `bad_words` sequence whose others end the row, any of `suppress`,
    or any of `begin_suppress` as its first new token."""

    ngram: int = 0
    min_new: int = 0
    stops: frozenset[int] = frozenset()
    min_length: int = 0
    suppress: frozenset[int] = frozenset()
    begin_suppress: frozenset[int] = frozenset()
    bad_words: tuple[tuple[int, ...], ...] = ()

    @classmethod
    def of(
        cls,
        stops: frozenset[int],
        vocab: int,
        no_repeat_ngram_size: int = 0,
        min_new_tokens: int = 0,
        min_length: int = 0,
        suppress_tokens: Iterable[int] | None = None,
        begin_suppress_tokens: Iterable[int] | None = None,
        bad_words_ids: Iterable[Iterable[int]] | None = None,
    ) -> Bans:
        """The bans of generate's keywords, for a model of `vocab` tokens that stops at `stops`."""
        return cls(
            no_repeat_ngram_size, min_new_tokens, stops, min_length, frozenset(suppress_tokens or ()),
            frozenset(begin_suppress_tokens or ()), bad_words(bad_words_ids, stops, vocab),
        )  # fmt: skip

    def __bool__(self) -> bool:
        early = (self.min_new > 0 or self.min_length > 0) and self.stops
        return bool(self.ngram > 0 or early or self.suppress or self.begin_suppress or self.bad_words)

    def histories(self, rows: Iterable[list[int]]) -> list[History] | None:
        """Each row's History (rows: each prompt's own ids, no padding); None where the bans are
        off, so a decode without them keeps no history."""
        return [History.start(row, self.ngram) for row in rows] if self else None

    @staticmethod
    def record(histories: list[History], token: torch.Tensor) -> None:
        """The step's tokens (B,), one per row, added to the rows' histories."""
        for history, t in zip(histories, token.tolist(), strict=True):
            history.extend([t])

    def banned(self, history: History) -> list[int]:
        """The ids the row `history` follows may not take next."""
        early = history.new < self.min_new or len(history.ids) < self.min_length
        out = list(self.stops) if early else []
        if self.ngram:
            out += history.followers()
        out += self.suppress
        if history.new == 0:
            out += self.begin_suppress
        ids = history.ids
        for word in self.bad_words:  # its first tokens end the row: its last may not follow
            if len(word) - 1 <= len(ids) and ids[len(ids) - len(word) + 1 :] == list(word[:-1]):
                out.append(word[-1])
        return out

    def apply(self, logits: torch.Tensor, histories: list[History]) -> torch.Tensor:
        """logits (B, vocab), row i following histories[i], with each row's banned ids at -inf
        (ids past the vocabulary, a generation_config.json's for a bigger one, left out)."""
        rows = [(i, t) for i, h in enumerate(histories) for t in self.banned(h) if 0 <= t < logits.size(-1)]
        if not rows:
            return logits
        at = torch.tensor(rows, device=logits.device)
        logits = logits.index_put((at[:, 0], at[:, 1]), logits.new_tensor(float("-inf")))
        if bool(torch.isneginf(logits).all(dim=-1).any()):  # argmax would take token 0, sampling fail
            raise LmforgeError(
                f"{self.describe()} bans every one of the vocabulary's {logits.size(-1)} tokens at this"
                " step: ban fewer (a larger no_repeat_ngram_size, fewer suppressed tokens), or ask for"
                " fewer new tokens"
            )
        return logits

    def apply_rows(self, logits: torch.Tensor, rows: list[list[int]], prompt_len: int) -> torch.Tensor:
        """apply() for rows given whole, their first prompt_len ids the prompt, each history built
        afresh (beam search reorders its rows every step, so none is kept)."""
        histories = []
        for row in rows:
            history = History.start(row[:prompt_len], self.ngram)
            history.extend(row[prompt_len:])
            histories.append(history)
        return self.apply(logits, histories)

    def describe(self) -> str:
        """The bans that are on, as their keywords: `no_repeat_ngram_size=2, min_new_tokens=5`."""
        named = {
            "no_repeat_ngram_size": self.ngram,
            "min_new_tokens": self.min_new,
            "min_length": self.min_length,
            "bad_words_ids": [list(w) for w in self.bad_words],
            "suppress_tokens": sorted(self.suppress),
            "begin_suppress_tokens": sorted(self.begin_suppress),
        }
        return ", ".join(f"{k}={v}" for k, v in named.items() if v)


def bad_words(
    ids: Iterable[Iterable[int]] | None, stops: Iterable[int], vocab: int | None = None
) -> tuple[tuple[int, ...], ...]:
    """bad_words_ids as Bans takes them: a lone stop id left out, as transformers leaves it out; an
    id outside the `vocab` refused, as transformers refuses it (no token could ever match it)."""
    stops = set(stops)
    words = tuple(tuple(int(t) for t in w) for w in ids or ())
    outside = sorted({t for w in words for t in w if vocab is not None and t >= vocab})
    if outside:
        raise LmforgeError(
            f"bad_words_ids: token id(s) {outside[:5]} are outside the model's vocabulary of {vocab} tokens"
        )
    return tuple(w for w in words if w and not (len(w) == 1 and w[0] in stops))


@dataclass
class History:
    """One row's ids (prompt, then its new tokens) and, for n-grams of size `ngram`, the tokens
    that followed each (ngram-1)-gram in them."""

    ngram: int = 0
    prompt_len: int = 0
    ids: list[int] = field(default_factory=list)
    table: dict[tuple[int, ...], set[int]] = field(default_factory=dict)

    @classmethod
    def start(cls, prompt: Iterable[int], ngram: int) -> History:
        """A row that starts from `prompt` (its own tokens: no padding)."""
        history = cls(ngram)
        history.extend(prompt)
        history.prompt_len = len(history.ids)
        return history

    @property
    def new(self) -> int:
        """Tokens the row has had past its prompt."""
        return len(self.ids) - self.prompt_len

    def extend(self, tokens: Iterable[int]) -> None:
        """Add tokens to the row, and the n-grams they complete to the table."""
        n = self.ngram
        for token in tokens:
            self.ids.append(int(token))
            if n and len(self.ids) >= n:
                self.table.setdefault(tuple(self.ids[len(self.ids) - n : -1]), set()).add(int(token))

    def catch_up(self, ids: list[int]) -> None:
        """Follow a row kept elsewhere as a growing list of ids (its first prompt_len, the prompt)."""
        self.extend(ids[len(self.ids) :])

    def followers(self) -> list[int]:
        """The tokens that would complete an n-gram the row already holds."""
        if not self.ngram or len(self.ids) < self.ngram - 1:
            return []
        return list(self.table.get(tuple(self.ids[len(self.ids) - self.ngram + 1 :]), ()))


NO_BANS = Bans()
