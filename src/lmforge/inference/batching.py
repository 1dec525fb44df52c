"""Continuous batching: sequences join and leave a running decode batch at token granularity.

A `DecodeBatch` holds the sequences decoding together on one model, each with its own rows of one
shared KV cache (keys and values (layers, B, n_kv, capacity, hs), left-padded to a common length L,
with a mask (B, L) True on real tokens). A newcomer is prefilled alone (so its first token is the
one it gets alone), then its cache is left-padded or the batch's is, and the two are stacked. A
finished sequence's rows are dropped and the padding every row shares on the left is trimmed, so L
stays the longest row's length. Each decode step feeds one token per row with per-row positions
(`GPT.hidden_states` counts them from each row's first real token), so a row computes what it would
alone, up to floating-point summation order.

A sequence that fills the model's context leaves the cache and slides a window over its last
block_size tokens, recomputed each step, as `generate_ids` does. Each sequence samples with its own
temperature, top-p and random generator, so a seeded sequence draws the same tokens whatever else
is in the batch. A sequence that asks for log-probabilities gets, each step, its token's and the top
k tokens' log-probabilities under the model's distribution (log-softmax of the raw logits, before
temperature and top-p, as vLLM's default `logprobs_mode`).

A batch given a compiled step (inference/compiled_decode.py; `lmforge serve` loads one where this
machine measured it faster) decodes through it whenever one row decodes alone, the common case of a
server with one user: its cache moves into the step's per-layer cache, and back into the batch's
when a second sequence joins. The compiled step computes what the eager step does, up to summation
order (fp32: the same greedy tokens as eager decoding, measured; docs/speed.md).

Used by the server's scheduler (`server/batcher.py`); it knows nothing of requests or HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lmforge.inference.compiled_decode import CompiledStep, LayerCache, recast
from lmforge.inference.generate import sample_next
from lmforge.model.attention import KVCache
from lmforge.model.gpt import GPT

ROOM = 64  # positions a rebuilt cache keeps free beyond its length: a rebuild per 64 steps at most


Scored = tuple[float, list[tuple[int, float]]]  # log p of a token, and the k likeliest (id, log p)


def token_logprobs(logits: torch.Tensor, targets: list[int], k: int) -> list[Scored]:
    """For each row of logits (n, vocab), any dtype: (log p(its target), its k most likely
    (id, log p), most likely first), in float32: a decoding step's tokens and a prompt's alike."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # (n, vocab)
    chosen = logp.gather(1, torch.tensor(targets, device=logits.device)[:, None])[:, 0].tolist()
    if not k:
        return [(value, []) for value in chosen]
    top = logp.topk(k, dim=-1)  # values and ids (n, k)
    rows = zip(chosen, top.indices.tolist(), top.values.tolist(), strict=True)
    return [(value, list(zip(ids, values, strict=True))) for value, ids, values in rows]


@dataclass(eq=False)
class Sequence:
    """One row being decoded: its tokens (prompt, then each token chosen) and how it samples."""

    ids: list[int]
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    generator: torch.Generator | None = None
    tag: Any = None  # the caller's: which request and choice this row is
    logprobs: int | None = None  # top alternatives to report with each token; None: no logprobs
    prompt_len: int = field(init=False)

    def __post_init__(self) -> None:
        self.prompt_len = len(self.ids)


class DecodeBatch:
    """The running batch of one model. Call `add` for newcomers, then each step `sample` (a token
    for every row of `rows`, in order) and `advance` (drop the rows that ended, feed the others)."""

    def __init__(self, model: GPT, step: CompiledStep | None = None) -> None:
        self.model = model.eval()
        self.step = step  # decodes a row alone, if given
        self.compiled_steps = 0  # steps it made (tests read it)
        self.context = model.config.block_size
        self.device = next(model.parameters()).device
        self.rows: list[Sequence] = []  # the cached rows first, then the sliding-window ones
        self.cached = 0  # how many of rows have cache rows
        self.cache: KVCache | None = None
        self.mask: torch.Tensor | None = None  # (cached, L) bool, True on real tokens
        self.logits: torch.Tensor | None = None  # (len(rows), vocab): each row's next-token logits

    def __len__(self) -> int:
        return len(self.rows)

    @torch.inference_mode()
    def add(self, seqs: list[Sequence]) -> None:
        """Prefill one prompt alone and join the batch with a row per sequence (they share the
        prompt: n choices of one request)."""
        prompt = seqs[0].ids
        if not prompt or len(prompt) > self.context or any(s.ids != prompt for s in seqs):
            raise ValueError("add: sequences of one non-empty prompt within the context")
        p, k = len(prompt), len(seqs)
        self._batched()
        alone = self.model.new_cache(1, p)
        logits = self.model(torch.tensor([prompt], device=self.device), alone, True)[:, -1]  # (1, V)
        old = self.cache.length if self.cache is not None else 0
        length = max(old, p)
        cache = self.model.new_cache(self.cached + k, self._capacity(length))
        mask = torch.zeros(self.cached + k, length, dtype=torch.bool, device=self.device)
        for dst, src in ((cache.k, alone.k), (cache.v, alone.v)):  # (layers, B, n_kv, capacity, hs)
            dst[:, self.cached :, :, : length - p] = 0  # padding: finite, so masked scores stay finite
            dst[:, self.cached :, :, length - p : length] = src  # one prefilled row -> k rows
        mask[self.cached :, length - p :] = True
        if self.cache is not None and self.mask is not None:
            for dst, src in ((cache.k, self.cache.k), (cache.v, self.cache.v)):
                dst[:, : self.cached, :, : length - old] = 0
                dst[:, : self.cached, :, length - old : length] = src[:, :, :, :old]
            mask[: self.cached, length - old :] = self.mask
        cache.length = length
        self.cache, self.mask = cache, mask
        parts = [] if self.logits is None else [self.logits[: self.cached]]
        parts.append(logits.expand(k, -1))
        if self.logits is not None:
            parts.append(self.logits[self.cached :])
        self.logits = torch.cat(parts)
        self.rows = self.rows[: self.cached] + seqs + self.rows[self.cached :]
        self.cached += k

    def sample(self) -> list[int]:
        """The next token of every row, in the order of `rows`."""
        if self.logits is None or not self.rows:
            return []
        greedy = self.logits.argmax(dim=-1).tolist()
        return [
            greedy[i]
            if s.temperature <= 0
            else int(sample_next(self.logits[i : i + 1], s.temperature, s.top_k, s.top_p, s.generator))
            for i, s in enumerate(self.rows)
        ]

    @torch.inference_mode()
    def logprobs(self, tokens: list[int]) -> list[Scored | None]:
        """For each row that asks (Sequence.logprobs = k): (log p(token), the k most likely
        (id, log p)), from this step's logits; None for the other rows. Call before `advance`."""
        want = [i for i, s in enumerate(self.rows) if s.logprobs is not None]
        out: list[Scored | None] = [None] * len(self.rows)
        if not want or self.logits is None:
            return out
        k = max(self.rows[i].logprobs or 0 for i in want)
        scored = token_logprobs(self.logits[want], [tokens[i] for i in want], k)
        for i, (value, top) in zip(want, scored, strict=True):
            out[i] = (value, top[: self.rows[i].logprobs or 0])
        return out

    @torch.inference_mode()
    def advance(self, tokens: list[int], keep: list[bool]) -> None:
        """Append tokens[i] to every row kept, drop the others, and compute the next logits."""
        stay, slide = [], []  # indices into rows: fed through the cache, or past the context
        for i, (seq, token, kept) in enumerate(zip(self.rows, tokens, keep, strict=True)):
            if kept:
                seq.ids.append(token)
                (stay if i < self.cached and len(seq.ids) <= self.context else slide).append(i)
        self._select(stay)
        logits = []
        if stay:
            assert self.cache is not None and self.mask is not None
            alone = self.step is not None and len(stay) == 1 and not slide and bool(self.mask.all())
            if alone and (not isinstance(self.cache, LayerCache) or self.cache.length == self.cache.max_len):
                self.cache = recast(self.model, self.cache, self._capacity(self.cache.length), per_layer=True)
            elif self.cache.length == self.cache.max_len:  # full: rebuild with room to grow
                self._select(list(range(len(stay))), force=True)
            self.mask = torch.cat([self.mask, self.mask.new_ones(len(stay), 1)], dim=1)  # (B, L + 1)
            feed = torch.tensor([[tokens[i]] for i in stay], device=self.device)  # (B, 1)
            if alone and self.step is not None:
                logits.append(self.step(self.model, feed, self.cache))
                self.compiled_steps += 1
            else:
                self._batched()
                padded = None if bool(self.mask.all()) else self.mask
                logits.append(self.model(feed, self.cache, True, padded)[:, -1])
        if slide:  # the window: the last `context` tokens, recomputed (positions from 0 again)
            window = torch.tensor([self.rows[i].ids[-self.context :] for i in slide], device=self.device)
            logits.append(self.model(window, None, True)[:, -1])
        self.rows = [self.rows[i] for i in stay + slide]
        self.cached = len(stay)
        self.logits = torch.cat(logits) if logits else None

    def _select(self, index: list[int], force: bool = False) -> None:
        """Keep the cache rows `index` (positions into the cached rows) and trim the left padding
        they all share; copies into a fresh cache with ROOM free positions."""
        if self.cache is None or self.mask is None:
            return
        if not index:
            self.cache = self.mask = None
            return
        mask = self.mask[index]  # (B', L)
        start = int(mask.long().argmax(dim=1).min())  # the first column some row uses
        if not force and start == 0 and index == list(range(self.cached)):
            return
        self._batched()
        length = self.cache.length - start
        cache = self.model.new_cache(len(index), self._capacity(length))
        rows = torch.tensor(index, device=self.device)
        for dst, src in ((cache.k, self.cache.k), (cache.v, self.cache.v)):
            dst[:, :, :, :length] = src[:, :, :, start : self.cache.length].index_select(1, rows)
        cache.length = length
        self.cache, self.mask = cache, mask[:, start:]

    def _batched(self) -> None:
        """Move a lone row's cache out of the compiled step's layout, back into the batch's."""
        if isinstance(self.cache, LayerCache):
            self.cache = recast(self.model, self.cache, self.cache.max_len, per_layer=False)

    def _capacity(self, length: int) -> int:
        return min(self.context, length + ROOM)
