"""Choosing the next token from a step's logits: greedy, or sampling with temperature, top-k,
top-p, min-p, then typical-p, epsilon and eta cutoffs (`Cutoffs`), in transformers' order
(TemperatureLogitsWarper, TopK, TopP, MinP, Typical, Epsilon, Eta), each row from its own
generator when given one per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Cutoffs:
    """The warpers transformers applies after min_p, as its TypicalLogitsWarper (`typical_p`: keep
    the tokens whose surprisal is nearest the entropy, up to that much probability; 1 = off),
    EpsilonLogitsWarper (`epsilon`: drop tokens less likely than it; 0 = off) and EtaLogitsWarper
    (`eta`: drop tokens less likely than min(eta, sqrt(eta) * exp(-entropy)); 0 = off). Each keeps
    the likeliest token (min_tokens_to_keep=1, transformers' outside beam search)."""

    typical_p: float = 1.0
    epsilon: float = 0.0
    eta: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.typical_p < 1.0 or 0 < self.epsilon < 1 or 0 < self.eta < 1)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (B, vocab), float32, with the tokens each cutoff drops at -inf."""
        if self.typical_p < 1.0:
            logits = typical_filter(logits, self.typical_p)
        if 0 < self.epsilon < 1:
            logits = _below(logits, self.epsilon)
        if 0 < self.eta < 1:
            eta = torch.tensor(self.eta, device=logits.device)  # float32, as transformers' tensor
            entropy = torch.distributions.Categorical(logits=logits).entropy()
            logits = _below(logits, torch.min(eta, torch.sqrt(eta) * torch.exp(-entropy))[..., None])
        return logits


NO_CUTOFFS = Cutoffs()


def _below(logits: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    # the likeliest token stays even when every probability is under the threshold
    drop = (logits.softmax(dim=-1) < threshold) & (logits < logits.amax(dim=-1, keepdim=True))
    return logits.masked_fill(drop, float("-inf"))


def typical_filter(logits: torch.Tensor, mass: float) -> torch.Tensor:
    """logits (B, vocab) less the tokens outside the locally typical set (Meister et al. 2022):
    tokens taken by |surprisal - entropy|, smallest first, until their probability reaches `mass`
    (the token crossing it kept, and any tied with it), as transformers' TypicalLogitsWarper."""
    normalized = torch.log_softmax(logits, dim=-1)
    p = normalized.exp()
    entropy = -(normalized * p).nansum(-1, keepdim=True)  # nansum: -inf * 0 at dropped tokens
    shifted = (-normalized - entropy).abs()
    sorted_scores, order = torch.sort(shifted, descending=False)
    cumulative = logits.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
    last = (cumulative < mass).sum(dim=1).clamp_(max=sorted_scores.size(-1) - 1)
    drop = sorted_scores > sorted_scores.gather(1, last.view(-1, 1))
    drop[:, :1] = False  # the most typical token stays
    return logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | list[torch.Generator] | None = None,
    min_p: float = 0.0,
    cutoffs: Cutoffs = NO_CUTOFFS,
) -> torch.Tensor:
    """logits (B, vocab) -> next token ids (B,). temperature 0 is greedy. A list of generators
    (one per row) samples each row from its own stream. A temperature so small that the logits
    overflow float32 samples from the limit (the likeliest tokens alike), and top_p keeps the
    likeliest token however small it is: a valid value never makes the probabilities NaN. min_p
    drops the tokens less likely than min_p times the likeliest, after temperature, top-k and
    top-p (transformers' MinPLogitsWarper; 0 = off); cutoffs then drop more (`Cutoffs`)."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    if isinstance(generator, list):
        return torch.cat(
            [
                sample_next(logits[i : i + 1], temperature, top_k, top_p, g, min_p, cutoffs)
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
    if cutoffs:
        logits = cutoffs.apply(logits)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """logits (B, vocab) less the tokens whose probability is below min_p times the likeliest's
    (-inf there); the likeliest stay, whatever min_p in [0, 1]."""
    probs = logits.softmax(dim=-1)
    return logits.masked_fill(probs < min_p * probs.amax(dim=-1, keepdim=True), float("-inf"))
