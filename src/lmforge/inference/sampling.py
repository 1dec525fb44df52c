"""Choosing the next token from a step's logits: greedy, or sampling with temperature, top-k,
top-p and min-p, in transformers' order (TemperatureLogitsWarper, TopK, TopP, MinP), each row from
its own generator when given one per row.
"""

from __future__ import annotations

import torch


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | list[torch.Generator] | None = None,
    min_p: float = 0.0,
) -> torch.Tensor:
    """logits (B, vocab) -> next token ids (B,). temperature 0 is greedy. A list of generators
    (one per row) samples each row from its own stream. A temperature so small that the logits
    overflow float32 samples from the limit (the likeliest tokens alike), and top_p keeps the
    likeliest token however small it is: a valid value never makes the probabilities NaN. min_p
    drops the tokens less likely than min_p times the likeliest, after temperature, top-k and
    top-p (transformers' MinPLogitsWarper; 0 = off)."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    if isinstance(generator, list):
        return torch.cat(
            [
                sample_next(logits[i : i + 1], temperature, top_k, top_p, g, min_p)
                for i, g in enumerate(generator)
            ]
        )
    scores = logits.float()
    logits = scores / temperature
    if not bool(torch.isfinite(logits.amax(dim=-1)).all()):  # 1e-300, which is 0 in float32
        shifted = scores - scores.amax(dim=-1, keepdim=True)  # 0 at the likeliest, else < 0
        logits = torch.where(shifted == 0, 0.0, shifted / temperature)
    if 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative - sorted_logits.softmax(dim=-1) >= top_p  # keep the first token past p
        drop[:, 0] = False  # and the likeliest: top_p=1e-300 is 0 in float32, which dropped every token
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    if min_p > 0:
        logits = min_p_filter(logits, min_p)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """logits (B, vocab) less the tokens whose probability is below min_p times the likeliest's
    (-inf there); the likeliest stay, whatever min_p in [0, 1]."""
    probs = logits.softmax(dim=-1)
    return logits.masked_fill(probs < min_p * probs.amax(dim=-1, keepdim=True), float("-inf"))
