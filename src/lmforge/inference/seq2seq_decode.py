"""Decoding for the encoder-decoder: batched greedy and beam search on token ids.

The source is encoded once and every decoder layer's cross-attention keys/values are computed
once (`Seq2Seq.memory_kv`); the decoder's self-attention keeps a KVCache, so each step costs one
token's work. `use_cache=False` recomputes the whole target prefix every step (the reference the
cache is tested against).

Each sentence stops at EOS or after its own limit of `min(block_size, a * source_len + b)`
tokens, so a sentence decodes the same alone and in a padded batch. The limit's last token is EOS,
forced, as transformers' `forced_eos_token_id` does at `max_length` (opus-mt sets it, and lmforge's
HF export writes it): a translation cut by its limit keeps `limit - 1` tokens, and in beam search
the live beams finish there with EOS at no cost.

Beam search is transformers' (and fairseq's): each step takes the best 2K continuations of a
sentence's K beams; an EOS among the best K finishes a hypothesis, scored
`sum log p / length ** length_penalty` (length counts the EOS); the others fill the K beams.
When a sentence is done, `early_stopping` says, with transformers' meanings: True (lmforge's own
models, as fairseq), once it has K finished hypotheses; False (transformers' default, so opus-mt's),
once it has K and its best live beam, scored at its current length, cannot beat the worst of them;
"never", the same with the best live beam scored at the length limit when length_penalty > 0
(lmforge's per-sentence limit, where transformers takes max_length: the same with max_new_tokens).
At its length limit a sentence is done whatever the setting: the live beams finish there, with the
forced EOS. With K = 1 this is exactly greedy decoding (tested).

The decoder starts from `model.start_id` (EOS when None, as lmforge trains); `model.suppress_ids`
are masked before the softmax, so they are never generated and take no probability mass (Marian's
pad token: HF's `bad_words_ids=[[pad]]` with `renormalize_logits=True`).

A repetition penalty and n-gram bans (`Repeats`) work as transformers' processors do: on the raw
logits in greedy decoding, on the log-probabilities in beam search (a beam's score adds them up as
processed), before the suppressed tokens are masked and the scores renormalized.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmforge.inference.bans import Bans
from lmforge.inference.options import check_options
from lmforge.inference.penalties import penalize_repeats, seen_tokens
from lmforge.model.attention import KVCache
from lmforge.model.seq2seq import Memory, Seq2Seq


@dataclass(frozen=True)
class Repeats:
    """transformers' repetition penalty and n-gram bans on a target row: each token of the row so
    far (its start token too, as in transformers) penalised (1: off), and no n-gram of
    `no_repeat_ngram_size` tokens twice (0: off), in transformers' order."""

    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0

    def __bool__(self) -> bool:
        return self.repetition_penalty != 1.0 or self.no_repeat_ngram_size > 0

    def apply(self, scores: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """scores (N, vocab) of the rows tokens (N, t) continue."""
        if self.repetition_penalty != 1.0:
            scores = penalize_repeats(scores, seen_tokens(tokens, scores.size(-1)), self.repetition_penalty)
        if self.no_repeat_ngram_size:  # the start token counts as the row's prompt, as in transformers
            scores = Bans(ngram=self.no_repeat_ngram_size).apply_rows(scores, tokens.tolist(), 1)
        return scores


def length_limits(src_lens: list[int], block_size: int, a: float, b: int) -> list[int]:
    """Most target tokens (EOS included) per sentence."""
    return [max(1, min(block_size, int(math.ceil(a * n + b)))) for n in src_lens]


class _Decoder:
    """One decoding run's state: the memory, the source mask and (optionally) the KV cache."""

    def __init__(
        self,
        model: Seq2Seq,
        src: torch.Tensor,
        repeat: int,
        max_len: int,
        use_cache: bool,
        processors: Repeats | None = None,
    ) -> None:
        self.model = model
        self.processors = processors or Repeats()
        mask = model.source_mask(src)
        memory = model.encode(src, mask)
        if repeat > 1:  # one row per beam
            memory, mask = memory.repeat_interleave(repeat, 0), mask.repeat_interleave(repeat, 0)
        self.mask = mask
        self.memory: Memory = model.memory_kv(memory)
        self.cache: KVCache | None = model.new_cache(memory.size(0), max_len) if use_cache else None

    def logprobs(self, tokens: torch.Tensor, beam: bool = False) -> torch.Tensor:
        """tokens (N, t) decoded so far -> scores of the next token (N, vocab), fp32: log-probabilities,
        or with a repetition penalty or n-gram bans (`self.processors`) transformers' processed
        scores: over the raw logits for greedy decoding, over the log-probabilities for `beam`
        search (renormalized where the model suppresses tokens, as its generation config asks)."""
        if self.cache is not None:
            logits = self.model.decode(tokens[:, -1:], self.memory, self.mask, self.cache, last_only=True)
        else:
            logits = self.model.decode(tokens, self.memory, self.mask, last_only=True)
        logits = logits[:, -1].float()
        if self.processors:
            scores = self.processors.apply(F.log_softmax(logits, dim=-1) if beam else logits, tokens)
            if not self.model.suppress_ids:
                return scores if beam else F.log_softmax(scores, dim=-1)
            logits = scores
        if self.model.suppress_ids:
            logits[:, self.model.suppress_ids] = -math.inf
        return F.log_softmax(logits, dim=-1)

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep the cache rows `rows` (N,), in that order: beams follow their parents."""
        if self.cache is not None:
            self.cache.k = self.cache.k.index_select(1, rows)
            self.cache.v = self.cache.v.index_select(1, rows)


@torch.inference_mode()
def greedy_decode(
    model: Seq2Seq,
    src: torch.Tensor,
    limits: list[int],
    eos: int,
    use_cache: bool = True,
    repeats: Repeats | None = None,
) -> list[list[int]]:
    """src (B, S) right-padded sources (ids + EOS) -> each sentence's target ids (no EOS)."""
    b = src.size(0)
    dec = _Decoder(model, src, 1, max(limits), use_cache, repeats)
    tokens = torch.full((b, 1), start_token(model, eos), dtype=torch.long, device=src.device)
    limit = torch.tensor(limits, device=src.device)
    done = torch.zeros(b, dtype=torch.bool, device=src.device)
    for step in range(1, max(limits) + 1):
        nxt = dec.logprobs(tokens).argmax(-1)
        nxt = torch.where(done | (limit <= step), eos, nxt)  # EOS forced at the limit
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        done |= (nxt == eos) | (limit <= step)
        if bool(done.all()):
            break
    return [_strip(row[1:].tolist(), eos)[:n] for row, n in zip(tokens, limits, strict=True)]


def start_token(model: Seq2Seq, eos: int) -> int:
    """The decoder's first input: the model's own start token, else EOS."""
    return eos if model.start_id is None else model.start_id


def _strip(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos)] if eos in ids else ids


@torch.inference_mode()
def beam_decode(
    model: Seq2Seq,
    src: torch.Tensor,
    limits: list[int],
    eos: int,
    beam: int = 4,
    length_penalty: float | None = None,
    use_cache: bool = True,
    early_stopping: bool | str | None = None,
    repeats: Repeats | None = None,
) -> list[list[int]]:
    """Beam search (see the module docstring); returns each sentence's best hypothesis.
    early_stopping and length_penalty None: the model's own (model.early_stopping, .length_penalty)."""
    check_options(beam=beam, early_stopping=early_stopping)
    length_penalty = model.length_penalty if length_penalty is None else length_penalty
    check_options(length_penalty=length_penalty)
    early_stopping = model.early_stopping if early_stopping is None else early_stopping
    b, k = src.size(0), beam
    dec = _Decoder(model, src, k, max(limits), use_cache, repeats)
    tokens = torch.full((b * k, 1), start_token(model, eos), dtype=torch.long, device=src.device)
    scores = torch.full((b, k), -math.inf, device=src.device)
    scores[:, 0] = 0.0  # all beams start identical: only the first one is live
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
    done = [False] * b
    for step in range(1, max(limits) + 1):
        logp = dec.logprobs(tokens, beam=True)  # (B*K, V)
        vocab = logp.size(-1)
        for i in (i for i in range(b) if not done[i] and step >= limits[i]):  # EOS forced at the limit
            logp[i * k : (i + 1) * k] = -math.inf
            logp[i * k : (i + 1) * k, eos] = 0.0
        cand = (scores.view(-1, 1) + logp).view(b, k * vocab)
        top_scores, top_idx = cand.topk(2 * k, dim=1)  # (B, 2K)
        top_beam, top_tok = (top_idx // vocab).tolist(), (top_idx % vocab).tolist()
        top_scores_l = top_scores.tolist()
        prev = tokens[:, 1:].tolist()
        new_scores = torch.full((b, k), -math.inf, device=src.device)
        new_beam = torch.zeros((b, k), dtype=torch.long)
        new_tok = torch.full((b, k), eos, dtype=torch.long)
        for i in range(b):
            if done[i]:
                continue
            at_limit, live = step >= limits[i], 0
            for j in range(2 * k):
                s, parent, t = top_scores_l[i][j], top_beam[i][j], top_tok[i][j]
                if s == -math.inf:
                    break
                if t == eos:
                    if j < k:  # only an EOS among the best K candidates finishes a hypothesis
                        hyp = prev[i * k + parent]
                        finished[i].append((s / (len(hyp) + 1) ** length_penalty, hyp))
                    continue
                new_scores[i, live], new_beam[i, live], new_tok[i, live] = s, parent, t
                live += 1
                if live == k:
                    break
            done[i] = at_limit or _search_over(
                finished[i], new_scores[i, 0].item(), step, limits[i], k, length_penalty, early_stopping
            )
        if all(done):
            break
        scores = new_scores.masked_fill(torch.tensor(done, device=src.device)[:, None], -math.inf)
        rows = (torch.arange(b)[:, None] * k + new_beam).view(-1).to(src.device)
        tokens = torch.cat([tokens.index_select(0, rows), new_tok.view(-1, 1).to(src.device)], dim=1)
        dec.reorder(rows)
    return [max(f, key=lambda x: x[0])[1] for f in finished]


def _search_over(
    finished: list[tuple[float, list[int]]],
    best_live: float,
    step: int,
    limit: int,
    k: int,
    length_penalty: float,
    early_stopping: bool | str,
) -> bool:
    """Whether a sentence's search ends after `step` tokens: K hypotheses finished and, unless
    early_stopping is True, none of them can be beaten by the best live beam (transformers'
    heuristic: its score over its current length, or the limit for "never" with a positive
    length_penalty, against the worst of the K best finished)."""
    if len(finished) < k:
        return False
    if early_stopping is True:
        return True
    length = limit if early_stopping == "never" and length_penalty > 0 else step
    worst_kept = sorted(score for score, _ in finished)[-k]
    return best_live / length**length_penalty <= worst_kept
