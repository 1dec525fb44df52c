"""Canary exposure (Carlini et al., "The Secret Sharer", USENIX Security 2019, sections 3-4).

exposure(s) = log2 |R| - log2 rank(s): R is the candidate space of a canary's format (every secret
of its length over its alphabet), rank(s) the place of the true secret s when every candidate r is
ordered by the model's log-likelihood of r after the canary's prefix (rank 1: the most likely).
A secret the model never saw sits at a uniformly random rank: P(exposure >= x) = 2^-x, so its
exposure averages 1/ln 2 = 1.44 bits whatever |R| is. A memorized secret ranks first: log2 |R|.

Two ways to find the rank (`exposures` says which and how many candidates):
- exact, when |R| <= exact_limit: every candidate is scored;
- estimated, otherwise: `samples` candidates are drawn uniformly from R and the paper's section
  4.3 extrapolation is used: a skew-normal distribution is fitted (scipy) to their negative
  log-likelihoods, and exposure = -log2 P(nll(r) <= nll(s)) under the fit. Beside it,
  `exposure_sampled` = log2(n + 1) - log2(1 + candidates at least as likely as s), which needs no
  fit but cannot exceed log2(n + 1).

Python API (stable): `exposures(scorer, canaries, exact_limit, samples, seed) -> dict` with
`scorer(texts) -> nll per text` (numpy, nats, of each canary text's secret after its prefix);
`model_scorer(model, tokenizer, canaries, batch_size)` builds that scorer from a GPT.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lmforge.data.canaries import CanarySet
from lmforge.errors import LmforgeError
from lmforge.model.gpt import GPT
from lmforge.tokenization.tokenizer import Tokenizer

Scorer = Callable[[list[str]], np.ndarray]
"""Canary texts -> the negative log-likelihood (nats) of each one's secret after its prefix."""


def model_scorer(
    model: GPT,
    tokenizer: Tokenizer,
    canaries: CanarySet,
    batch_size: int = 256,
    start: list[int] | None = None,
) -> Scorer:
    """A Scorer from a decoder: context = EOS and a document's start (`start`, the prepared data's
    meta.json document_start; default the tokenizer's text start, Llama's BOS): a canary is a
    document of its own, as prep plants it; then the prefix."""
    unknown = [
        a
        for a in canaries.alphabet
        if tokenizer.unk_id in tokenizer.hf.encode(a, add_special_tokens=False).ids
    ]
    if tokenizer.unk_id is not None and unknown:  # such candidates score as <|unk|>, never seen
        raise LmforgeError(
            f"the tokenizer has no token for the canary symbols {' '.join(unknown)}: every candidate holding"
            " one scores as <|unk|>, which the model never saw, so the secrets' exposure would be overstated;"
            " prep the data again (since 2026-12-07 prep puts the whole alphabet in a char vocabulary)"
        )
    head = [] if tokenizer.eos_id is None else [tokenizer.eos_id]
    head += tokenizer.text_affixes()[0] if start is None else start
    # "my secret code is" without its trailing space: byte-level BPE glues the space to the digit
    context = head + tokenizer.encode(canaries.prefix.rstrip())
    n_ctx = len(context)
    device = next(model.parameters()).device

    @torch.inference_mode()
    def score(texts: list[str]) -> np.ndarray:
        model.eval()
        out = np.empty(len(texts), dtype=np.float64)
        for i in range(0, len(texts), batch_size):
            group = texts[i : i + batch_size]
            seqs = [
                head + ids
                for ids in (e.ids for e in tokenizer.hf.encode_batch(group, add_special_tokens=False))
            ]
            if any(s[:n_ctx] != context for s in seqs):
                raise LmforgeError(
                    f"the tokenizer merges the canary prefix {canaries.prefix!r} into the secret"
                )
            width = max(map(len, seqs))
            if width > model.config.block_size:
                raise LmforgeError(
                    f"a canary is {width} tokens, over the model's context of {model.config.block_size}"
                )
            ids = torch.tensor(
                [s + [0] * (width - len(s)) for s in seqs], device=device
            )  # right-padded (B, T)
            hidden = model.hidden_states(ids[:, :-1])[
                :, n_ctx - 1 :
            ]  # (B, T - n_ctx, C): predicts the secret
            logp = F.log_softmax(
                model.cap_logits(model.lm_head(hidden)).float(), dim=-1
            )  # (B, T - n_ctx, vocab)
            target = ids[:, n_ctx:]  # (B, T - n_ctx)
            picked = logp.gather(-1, target[..., None])[..., 0]
            real = (
                torch.arange(width - n_ctx, device=device)[None, :]
                < torch.tensor([len(s) - n_ctx for s in seqs], device=device)[:, None]
            )
            out[i : i + len(group)] = (-(picked * real).sum(-1)).double().cpu().numpy()
        return out

    return score


def _all_candidates(canaries: CanarySet) -> list[str]:
    a, n = len(canaries.alphabet), canaries.length
    return [canaries.text(np.unravel_index(i, (a,) * n)) for i in range(a**n)]


def _sampled_candidates(canaries: CanarySet, samples: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    symbols = rng.integers(0, len(canaries.alphabet), size=(samples, canaries.length))
    return [canaries.text(row) for row in symbols]


def _index(canaries: CanarySet, secret: str) -> int:
    """The secret's place in _all_candidates' order."""
    symbols = secret.split(canaries.separator) if canaries.separator else list(secret)
    shape = (len(canaries.alphabet),) * canaries.length
    return int(np.ravel_multi_index([canaries.alphabet.index(c) for c in symbols], shape))


def exposures(
    scorer: Scorer, canaries: CanarySet, exact_limit: int = 10_000, samples: int = 5_000, seed: int = 0
) -> dict[str, Any]:
    """Every canary's exposure and, per repeat count, their mean and max (see the module doc).
    Returns {"method", "candidates" (|R|), "scored" (candidates scored), "max_exposure" (log2 |R|),
    "per_repeat": [{"repeats", "canaries", "mean", "max", "min"}], "canaries": [{"secret",
    "repeats", "nll", "rank" (exact) or "exposure_sampled", "exposure"}]}."""
    space = canaries.candidates
    top = math.log2(space)
    rows: list[dict[str, Any]] = []
    if space <= exact_limit:
        scores = scorer(_all_candidates(canaries))  # the secrets are candidates: their own scores
        for canary in canaries.canaries:
            nll = float(scores[_index(canaries, canary.secret)])
            rank = 1 + int((scores < nll).sum())  # a tie does not push the secret down
            rows.append({"nll": nll, "rank": rank, "exposure": top - math.log2(rank)})
        method, scored = "exact", space
    else:
        if samples < 2:
            raise LmforgeError(f"samples={samples}: at least 2 candidates to fit the distribution to")
        from scipy.stats import skewnorm

        reference = np.sort(scorer(_sampled_candidates(canaries, samples, seed)))
        fit = skewnorm.fit(reference)  # (shape, loc, scale) of the candidates' nll
        for nll in scorer([c.text for c in canaries.canaries]).tolist():
            at_least = int(np.searchsorted(reference, nll, side="right"))
            estimate = float(-skewnorm.logcdf(nll, *fit) / math.log(2))  # -log2 P(nll(r) <= nll)
            rows.append(
                {
                    "nll": nll,
                    "exposure_sampled": round(math.log2(samples + 1) - math.log2(1 + at_least), 4),
                    "exposure": min(top, max(0.0, estimate)),
                }
            )
        method, scored = "estimated (skew-normal fit, section 4.3)", samples
    for canary, row in zip(canaries.canaries, rows, strict=True):
        row.update(secret=canary.secret, repeats=canary.repeats, nll=round(row["nll"], 4))
        row["exposure"] = round(row["exposure"], 4)
    per_repeat = []
    for r in sorted({c.repeats for c in canaries.canaries}):
        values = [row["exposure"] for row in rows if row["repeats"] == r]
        per_repeat.append(
            {
                "repeats": r,
                "canaries": len(values),
                "mean": round(float(np.mean(values)), 3),
                "max": round(max(values), 3),
                "min": round(min(values), 3),
            }
        )
    return {
        "method": method,
        "candidates": space,
        "scored": scored,
        "max_exposure": round(top, 3),
        "per_repeat": per_repeat,
        "canaries": rows,
    }
