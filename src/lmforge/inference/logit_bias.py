"""OpenAI's `logit_bias`: a fixed number added to some tokens' logits at every step, before the
penalties, the bans' masks, temperature and the cut-offs (vLLM's order), so it moves greedy
decoding too. -100 all but bans a token, +100 all but forces it."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LogitBias:
    """Token ids and the bias each gets (one per id; empty: off)."""

    ids: tuple[int, ...] = ()
    values: tuple[float, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.ids)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (B, vocab), in float32, with each id's bias added in every row."""
        out = logits.float().clone()
        out[:, list(self.ids)] += torch.tensor(self.values, device=out.device)
        return out


NO_BIAS = LogitBias()
