"""The logit lens (nostalgebraist, 2020): read the residual stream after every layer as if it were
the last, through the model's own final norm and unembedding, and see what it would predict.

For each layer and position: the top-k tokens with their probabilities, and the rank (0 = the
model's first choice) and probability of the token that actually comes next.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class LogitLens:
    """Shapes: L + 1 rows (the embeddings, then after each of the L blocks), T positions.

    top_ids, top_probs: (L + 1, T, k); next_ids: (T,) the token that follows each position (-1
    where the text says nothing: a GPT's last position); next_rank (L + 1, T) (-1 there) and
    next_prob (L + 1, T) (NaN there)."""

    top_ids: torch.Tensor
    top_probs: torch.Tensor
    next_ids: torch.Tensor
    next_rank: torch.Tensor
    next_prob: torch.Tensor


@torch.no_grad()
def logit_lens(
    residual: torch.Tensor, unembed: Callable[[torch.Tensor], torch.Tensor], next_ids: torch.Tensor, k: int
) -> LogitLens:
    """residual (L + 1, T, C), unembed (T, C) -> (T, vocab) logits, next_ids (T,) with -1 = none."""
    rows = residual.size(0)
    t = residual.size(1)
    known = next_ids >= 0  # (T,)
    target = next_ids.clamp(min=0)
    tops = []
    next_rank = torch.full((rows, t), -1, dtype=torch.long)
    next_prob = torch.full((rows, t), float("nan"))
    for layer in range(rows):  # one layer at a time: (T, vocab) is large for a 50k vocabulary
        probs = torch.softmax(unembed(residual[layer]).float(), dim=-1).cpu()  # (T, vocab)
        tops.append(probs.topk(min(k, probs.size(-1)), dim=-1))  # (T, k) values and indices
        p_next = probs.gather(-1, target[:, None])  # (T, 1)
        rank = (probs > p_next).sum(-1)  # tokens strictly more likely than the next one
        next_rank[layer] = torch.where(known, rank, -1)
        next_prob[layer] = torch.where(known, p_next[:, 0], float("nan"))
    top_ids = torch.stack([top.indices for top in tops])  # (L + 1, T, k)
    top_probs = torch.stack([top.values for top in tops])
    return LogitLens(top_ids, top_probs, next_ids, next_rank, next_prob)


def lens_table(lens: LogitLens, tokens: list[str], text_of: Callable[[int], str]) -> dict:
    """The lens as JSON: one row per layer, one entry per position with the input token, the
    token that comes next (null at a GPT's last position), its rank and probability, and the top-k."""
    layers = []
    for layer in range(lens.top_ids.size(0)):
        positions = []
        for t, token in enumerate(tokens):
            nxt = int(lens.next_ids[t])
            known = nxt >= 0
            positions.append(
                {
                    "position": t,
                    "token": token,
                    "next_token": text_of(nxt) if known else None,
                    "next_rank": int(lens.next_rank[layer, t]) if known else None,
                    "next_prob": round(float(lens.next_prob[layer, t]), 6) if known else None,
                    "top": [
                        {"token": text_of(int(i)), "id": int(i), "prob": round(float(p), 6)}
                        for i, p in zip(lens.top_ids[layer, t], lens.top_probs[layer, t], strict=True)
                    ],
                }
            )
        layers.append({"layer": layer, "name": layer_name(layer), "positions": positions})
    return {
        "rows": "layer 0 is the embeddings; layer i is the residual stream after block i",
        "layers": layers,
    }


def layer_name(layer: int) -> str:
    return "embed" if layer == 0 else f"block {layer}"
