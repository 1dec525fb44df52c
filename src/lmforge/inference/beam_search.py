"""Beam search for decoders, as transformers' `generate(num_beams=K)` runs it on a decoder-only
model (its vectorised `_beam_search`), one prompt at a time as its text-generation pipeline does.

The prompt is prefilled as K identical rows; each step every live beam's log-softmax goes through
the processors (repetition penalty, then the bans: n-grams, an early end of text, suppressed and
bad words; transformers' order, on log-probabilities, not renormalised) and adds to the beam's
score. The best (1 + number of end-of-text ids) x K continuations (at least 2K) are taken; among
the best K of them, one that ends (an end-of-text id, or the last new token allowed) is a finished
hypothesis scored `score / new_tokens ** length_penalty` (its end-of-text id counted), kept if it
is among the K best so far; the best K that do not end are the next live beams, whose rows of the
KV cache follow their parents. Decoding stops when no continuation is left, when K hypotheses are
finished and `early_stopping` is True, or when the best live beam cannot beat the worst of K
finished ones (at its current length, or at the last allowed one for `early_stopping="never"`
with a positive length_penalty: transformers' heuristic). Ties break as torch.topk breaks them,
as in transformers.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from lmforge.inference.bans import Bans
from lmforge.inference.penalties import penalize_repeats, seen_tokens
from lmforge.model.gpt import GPT

_FAR = -1.0e9  # transformers' score of an excluded candidate


@torch.inference_mode()
def beam_search(
    model: GPT,
    prompt: list[int],
    max_new_tokens: int,
    stops: Iterable[int],
    num_beams: int,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    num_return_sequences: int = 1,
    repetition_penalty: float = 1.0,
    bans: Bans | None = None,
    keep_stop: bool = False,
) -> list[list[int]]:
    """The num_return_sequences best hypotheses' new tokens, best first, each without the
    end-of-text id it ended at (with it where keep_stop). The prompt and its new tokens must fit
    the model's context."""
    k, stops = num_beams, frozenset(stops)
    keep = max(2, 1 + len(stops)) * k
    device = next(model.parameters()).device
    cache = model.new_cache(k, len(prompt) + max_new_tokens)
    logits = model(torch.tensor([prompt] * k, device=device), cache, last_only=True)[:, -1]
    running = [list(prompt) for _ in range(k)]
    scores = torch.full((k,), _FAR, device=device)
    scores[0] = 0.0  # the K rows start equal: only the first is live
    done_scores = torch.full((k,), _FAR, device=device)
    done_rows: list[list[int]] = [[] for _ in range(k)]
    done = torch.zeros(k, dtype=torch.bool, device=device)
    for step in range(1, max_new_tokens + 1):
        logp = F.log_softmax(logits.float(), dim=-1)
        logp = _processed(logp, running, len(prompt), repetition_penalty, bans)
        vocab = logp.size(-1)
        top, index = (logp + scores[:, None]).view(-1).topk(keep)
        parent, token = (index // vocab).tolist(), (index % vocab).tolist()
        ends = torch.tensor([t in stops or step == max_new_tokens for t in token], device=device)
        # the best K that go on
        chosen = (top + ends.float() * _FAR).topk(k).indices.tolist()
        # the best K that end, merged with those finished before (transformers' arithmetic, so
        # that its excluded candidates rank among themselves as there)
        finishing = ends & (torch.arange(keep, device=device) < k)  # only the best K may finish one
        merged = torch.cat([done_scores, top / step**length_penalty + (~finishing).float() * _FAR])
        best = merged.topk(k).indices.tolist()
        candidates = [running[parent[j]] + [token[j]] for j in range(keep)]
        done_rows = [done_rows[i] if i < k else candidates[i - k] for i in best]
        done_scores, done = merged[best], torch.cat([done, finishing])[best]
        running = [candidates[j] for j in chosen]
        scores = top[chosen] + ends[chosen].float() * _FAR
        if bool(ends.all()) or (bool(done.all()) and early_stopping is True):
            break
        length = max_new_tokens if early_stopping == "never" and length_penalty > 0 else step
        worst = torch.where(done, done_scores.min(), torch.tensor(_FAR, device=device))
        if not bool((scores[0] / length**length_penalty > worst).any()):  # no better one can finish
            break
        rows = torch.tensor([parent[j] for j in chosen], device=device)
        cache.k, cache.v = cache.k.index_select(1, rows), cache.v.index_select(1, rows)
        tokens = torch.tensor([[token[j]] for j in chosen], device=device)
        logits = model(tokens, cache, last_only=True)[:, -1]
    out = [row[len(prompt) :] for row in done_rows[:num_return_sequences]]
    return [row[:-1] if row and row[-1] in stops and not keep_stop else row for row in out]


def _processed(
    logp: torch.Tensor, rows: list[list[int]], prompt_len: int, penalty: float, bans: Bans | None
) -> torch.Tensor:
    """transformers' processors on the beams' log-probabilities (K, vocab): the repetition penalty
    over each row (prompt included), then the bans."""
    if penalty != 1.0:
        ids = torch.tensor(rows, device=logp.device)
        logp = penalize_repeats(logp, seen_tokens(ids, logp.size(-1)), penalty)
    return bans.apply_rows(logp, rows, prompt_len) if bans else logp
