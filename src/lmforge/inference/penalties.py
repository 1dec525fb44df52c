"""Penalties on tokens a row has already had: transformers' repetition penalty (CTRL's, Keskar et
al. 2019) over its prompt and its text so far, and OpenAI's frequency and presence penalties over
its generated text alone. They change the logits before temperature, top-k and top-p (and before
greedy's argmax), in float32, as transformers and vLLM apply them.

What a row has had is kept as a (vocab,) mask and counts, updated by the tokens added since the
last step, so a penalty costs the same at every step however long the row grows (rebuilding it
from the row's ids took 1.5 ms a row a step at 8,000 tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _penalised(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    # a zero logit stays zero: 0 / 1e-320 (0 in float32) and 0 * 1e300 (inf) would be NaN
    out = torch.where(logits > 0, logits / penalty, torch.where(logits < 0, logits * penalty, logits))
    return torch.where(seen, out, logits)


def penalize_repeats(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits (B, vocab) with every token seen (B, vocab bool) made less likely: a positive logit
    divided by penalty, a negative one multiplied, once however often the token occurs. A penalty
    past float32's range (1e-320 divides a logit to infinity) is taken in float64, each row shifted
    so that its largest is 0, which keeps the order, and so the limit: the likeliest seen token."""
    logits = logits.float()
    out = _penalised(logits, seen, penalty)
    if bool(torch.isfinite(out).all()):
        return out
    wide = _penalised(logits.double(), seen, min(max(penalty, 1e-300), 1e300)).clamp(-1e308, 1e308)
    return (wide - wide.amax(dim=-1, keepdim=True)).float()  # (B, vocab): 0 at the top, far below: -inf


def seen_tokens(ids: torch.Tensor, vocab: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, vocab) bool, True on each row's tokens of ids (B, T); a left-padded row's padding
    (mask (B, T) False) is no token of it."""
    if mask is not None:  # the last column is every row's own token
        ids = torch.where(mask, ids, ids[:, -1:])
    return torch.zeros(ids.size(0), vocab, dtype=torch.bool, device=ids.device).scatter_(1, ids, True)


class Tally:
    """What one row has had: the tokens of its prompt and text (`seen`, (1, vocab) bool) and how
    often each token occurs in its text (`counts`, (1, vocab) float32), brought up to date from
    the row's growing list of ids."""

    def __init__(self) -> None:
        self.seen: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None
        self.upto = 0  # ids tallied so far

    def update(self, ids: list[int], prompt_len: int, vocab: int, device: torch.device) -> None:
        if self.seen is None or self.counts is None:
            self.seen = torch.zeros(1, vocab, dtype=torch.bool, device=device)
            self.counts = torch.zeros(1, vocab, device=device)
        if len(ids) == self.upto:
            return
        new = torch.tensor(ids[self.upto :], device=device)
        self.seen[0, new] = True
        text = new[max(prompt_len - self.upto, 0) :]  # the generated ones among them
        self.counts[0].index_add_(0, text, torch.ones(text.size(0), device=device))
        self.upto = len(ids)


@dataclass(frozen=True)
class Penalties:
    """A row's penalties: `repetition` over its prompt and text (1: off), `frequency` subtracted
    once per occurrence in its text and `presence` once for any (0: off)."""

    repetition: float = 1.0
    frequency: float = 0.0
    presence: float = 0.0

    def __bool__(self) -> bool:
        return self != NO_PENALTIES

    def apply(self, logits: torch.Tensor, tally: Tally) -> torch.Tensor:
        """logits (1, vocab) of the row `tally` follows (updated first)."""
        assert tally.seen is not None and tally.counts is not None
        logits = logits.float()
        if self.repetition != 1.0:
            logits = penalize_repeats(logits, tally.seen, self.repetition)
        if self.frequency or self.presence:
            logits = logits - self.frequency * tally.counts - self.presence * (tally.counts > 0).float()
        return logits


NO_PENALTIES = Penalties()
