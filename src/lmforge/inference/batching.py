"""Continuous batching: sequences join and leave a running decode batch at token granularity.

A `DecodeBatch` holds the sequences decoding together on one model, each with its own rows of one
shared KV cache (keys and values (layers, B, n_kv, capacity, hs), left-padded to a common length L,
with a mask (B, L) True on real tokens). A newcomer is prefilled alone (so its first token is the
one it gets alone), a `Prefill` of at most PREFILL_CHUNK tokens at a time (the server decodes the
running rows between two chunks, so a long prompt does not stop every stream, and a request
cancelled or late stops between chunks), then its cache is left-padded or the batch's is, and the
two are stacked. A
finished sequence's rows are dropped and the padding every row shares on the left is trimmed, so L
stays the longest row's length. Each decode step feeds one token per row with per-row positions
(`GPT.hidden_states` counts them from each row's first real token), so a row computes what it would
alone, up to floating-point summation order.

A sequence never runs past the model's context: whoever decodes it ends it where its tokens fill
the context (the server, with finish_reason "length"), and `advance` refuses one that would need a
window sliding past it. Each sequence samples with its own temperature, top-k, top-p, min-p,
logit bias (`LogitBias`), penalties (`Penalties`), banned tokens (`Bans`: n-grams, an early end
of text) and random generator, so a seeded sequence draws the same tokens whatever else is in
the batch. A sequence with a grammar (`GrammarState`: OpenAI's response_format) then keeps only
the tokens it allows, greedy rows too, and its state takes the token chosen. A sequence that
asks for log-probabilities gets, each step, its token's and the top k tokens' log-probabilities
under the model's distribution (log-softmax of the raw logits, before the bias, penalties, bans,
grammar, temperature, top-k, top-p and min-p, as vLLM's default `logprobs_mode`).

A batch given a compiled step (inference/compiled_decode.py; `lmforge serve` loads one where this
machine measured it faster) decodes its rows one at a time through it while they are few: up to
`step_rows` rows, as many as the step runs in the time of one eager step (so one eager batch step,
which costs at least that, is never faster). One row alone is the common case, a server with one
user. Each row then has a cache of its own in the step's layout, split from the padded cache when
rows leave and joined back into it when more rows join than the step takes. The compiled step
computes what the eager step does, up to summation order (fp32: the same greedy tokens as eager
decoding, measured; docs/speed.md).

Used by the server's scheduler (`server/batcher.py`); it knows nothing of requests or HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lmforge.inference.bans import NO_BANS, Bans, History
from lmforge.inference.compiled_decode import CompiledStep, layer_cache, recast
from lmforge.inference.grammar import GrammarState
from lmforge.inference.logit_bias import NO_BIAS, LogitBias
from lmforge.inference.penalties import NO_PENALTIES, Penalties, Tally
from lmforge.inference.prefill import PREFILL_CHUNK
from lmforge.inference.sampling import sample_next
from lmforge.model.attention import KVCache
from lmforge.model.gpt import GPT
from lmforge.model.layers import linear

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
    penalties: Penalties = NO_PENALTIES
    min_p: float = 0.0
    bans: Bans = NO_BANS
    bias: LogitBias = NO_BIAS  # OpenAI's logit_bias
    grammar: GrammarState | None = None  # response_format: the tokens that keep the reply valid JSON
    prompt_len: int = field(init=False)
    tally: Tally = field(init=False, default_factory=Tally)  # what its penalties weigh down
    history: History | None = field(init=False, default=None)  # what its bans look at, once it has any

    def __post_init__(self) -> None:
        self.prompt_len = len(self.ids)


class Prefill:
    """One prompt's prefill, PREFILL_CHUNK tokens a `step`, into a cache of its own; then
    `DecodeBatch.join` it. Its sequences share the prompt (n choices of one request)."""

    def __init__(self, model: GPT, seqs: list[Sequence], hidden: bool = False) -> None:
        prompt = seqs[0].ids
        if not prompt or len(prompt) > model.config.block_size or any(s.ids != prompt for s in seqs):
            raise ValueError("prefill: sequences of one non-empty prompt within the context")
        self.model, self.seqs, self.hidden = model, seqs, hidden
        self.cache = model.new_cache(1, len(prompt))
        self.states: list[torch.Tensor] = []  # (1, n or 1, C) per chunk: all with hidden, else the last
        self.done = 0  # prompt tokens prefilled

    @property
    def left(self) -> int:
        """Prompt tokens not yet prefilled."""
        return len(self.seqs[0].ids) - self.done

    @torch.inference_mode()
    def step(self, most: int = PREFILL_CHUNK) -> bool:
        """Prefill the next chunk (at most `most` tokens, and PREFILL_CHUNK); True once the whole
        prompt is in the cache."""
        prompt, n = self.seqs[0].ids, min(most, PREFILL_CHUNK)
        if self.model.whole_prefill(len(prompt)):  # dynamic NTK past its original context: one base
            n = len(prompt)
        ids = torch.tensor([prompt[self.done : self.done + n]], device=self.cache.k.device)
        states = self.model.hidden_states(ids, self.cache, last_only=not self.hidden)
        self.states = [*self.states, states] if self.hidden else [states]
        self.done += ids.size(1)
        return self.done == len(prompt)


class DecodeBatch:
    """The running batch of one model. Call `add` for newcomers, then each step `sample` (a token
    for every row of `rows`, in order) and `advance` (drop the rows that ended, feed the others).

    Given a compiled step and step_rows >= 1, while at most step_rows rows have cache rows they
    decode one at a time through the step, each with a cache of its own (`own`, no padding), and
    `cache` and `mask` are None; past step_rows they go back into one padded cache."""

    def __init__(self, model: GPT, step: CompiledStep | None = None, step_rows: int = 1) -> None:
        self.model = model.eval()
        self.step = step
        self.step_rows = step_rows if step is not None else 0  # rows the step decodes one by one
        self.compiled_steps = 0  # rows it decoded (tests read it)
        self.context = model.config.block_size
        self.device = next(model.parameters()).device
        self.rows: list[Sequence] = []  # in the order of the cache's rows
        self.cache: KVCache | None = None
        self.mask: torch.Tensor | None = None  # (len(rows), L) bool, True on real tokens
        self.own: list[KVCache] | None = None  # per row, while they decode through the step
        self.logits: torch.Tensor | None = None  # (len(rows), vocab): each row's next-token logits

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, seqs: list[Sequence], hidden: bool = False) -> torch.Tensor | None:
        """Prefill one prompt alone, all its chunks, and join the batch with a row per sequence
        (they share the prompt: n choices of one request). hidden: return the prefill's final
        hidden states (T, C), from which the prompt's own log-probabilities are scored without a
        second forward pass."""
        prefill = Prefill(self.model, seqs, hidden)
        while not prefill.step():
            pass
        return self.join(prefill)

    @torch.inference_mode()
    def join(self, prefill: Prefill) -> torch.Tensor | None:
        """Add a finished prefill's sequences to the batch, a row each; with `hidden`, return the
        prompt's final hidden states (T, C)."""
        seqs, alone = prefill.seqs, prefill.cache
        p, k = alone.length, len(seqs)
        states = torch.cat(prefill.states, dim=1)  # (1, p or 1, C)
        logits = self.model.cap_logits(linear(self.model.lm_head, states[:, -1]))  # (1, V)
        if len(self.rows) + k <= self.step_rows and self.cache is None:  # one by one, through the step
            self.own = (self.own or []) + [
                recast(self.model, alone, self._capacity(p), per_layer=True) for _ in range(k)
            ]
        else:
            self._padded()
            self._stack(alone, k, len(self.rows))
        new = logits.expand(k, -1)
        self.logits = new if self.logits is None else torch.cat([self.logits, new])
        self.rows = self.rows + seqs
        return states[0] if prefill.hidden else None

    def _stack(self, alone: KVCache, k: int, have: int) -> None:
        """Join the padded cache, which holds `have` rows, with k rows of a prompt's cache (alone,
        batch 1)."""
        p = alone.length
        old = self.cache.length if self.cache is not None else 0
        length = max(old, p)
        cache = self.model.new_cache(have + k, self._capacity(length))
        mask = torch.zeros(have + k, length, dtype=torch.bool, device=self.device)
        for dst, src in ((cache.k, alone.k), (cache.v, alone.v)):  # (layers, B, n_kv, capacity, hs)
            dst[:, have:, :, : length - p] = 0  # padding: finite, so masked scores stay finite
            dst[:, have:, :, length - p : length] = src[:, :, :, :p]  # one prefilled row -> k rows
        mask[have:, length - p :] = True
        if self.cache is not None and self.mask is not None:
            for dst, src in ((cache.k, self.cache.k), (cache.v, self.cache.v)):
                dst[:, :have, :, : length - old] = 0
                dst[:, :have, :, length - old : length] = src[:, :, :, :old]
            mask[:have, length - old :] = self.mask
        cache.length = length
        self.cache, self.mask = cache, mask

    def sample(self, failed: dict[int, Exception] | None = None) -> list[int]:
        """The next token of every row, in the order of `rows`. With `failed`, a row whose
        sampling raises is recorded there (row index -> error) with its greedy token in its place,
        so that the caller ends that row's job alone; without, the error propagates."""
        if self.logits is None or not self.rows:
            return []
        greedy = self.logits.argmax(dim=-1).tolist()
        out = []
        for i, s in enumerate(self.rows):
            if s.temperature <= 0 and not s.penalties and not s.bans and not s.bias and s.grammar is None:
                out.append(greedy[i])
                continue
            try:
                logits = self.logits[i : i + 1]  # (1, vocab)
                if s.bias:  # before the penalties, as vLLM
                    logits = s.bias.apply(logits)
                if s.penalties:
                    s.tally.update(s.ids, s.prompt_len, logits.size(-1), self.device)
                    logits = s.penalties.apply(logits, s.tally)
                if s.bans:
                    if s.history is None:
                        s.history = History.start(s.ids[: s.prompt_len], s.bans.ngram)
                    s.history.catch_up(s.ids)
                    logits = s.bans.apply(logits, [s.history])
                if s.grammar is not None:  # last: it finds where the bans left it nothing
                    logits = s.grammar.apply(logits)
                token = int(sample_next(logits, s.temperature, s.top_k, s.top_p, s.generator, s.min_p))
                if s.grammar is not None:
                    s.grammar.take(token)
                out.append(token)
            except Exception as e:
                if failed is None:
                    raise
                failed[i] = e
                out.append(greedy[i])
        return out

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
        stay = [i for i, kept in enumerate(keep) if kept]
        if any(len(self.rows[i].ids) >= self.context for i in stay):
            raise ValueError("advance: a row past the model's context (end it where its tokens fill it)")
        for i in stay:
            self.rows[i].ids.append(tokens[i])
        self._select(stay)
        logits = None
        if stay and len(stay) <= self.step_rows:
            self._one_by_one()
            assert self.own is not None and self.step is not None
            row_logits = []
            for n, i in enumerate(stay):  # each row through the compiled step, on its own cache
                if self.own[n].length == self.own[n].max_len:  # full: room to grow
                    grown = self._capacity(self.own[n].length)
                    self.own[n] = recast(self.model, self.own[n], grown, per_layer=True)
                feed = torch.tensor([[tokens[i]]], device=self.device)  # (1, 1)
                row_logits.append(self.step(self.model, feed, self.own[n]))
                self.compiled_steps += 1
            logits = torch.cat(row_logits)
        elif stay:
            self._padded()
            assert self.cache is not None and self.mask is not None
            if self.cache.length == self.cache.max_len:  # full: rebuild with room to grow
                self._select(list(range(len(stay))), force=True)
            self.mask = torch.cat([self.mask, self.mask.new_ones(len(stay), 1)], dim=1)  # (B, L + 1)
            feed = torch.tensor([[tokens[i]] for i in stay], device=self.device)  # (B, 1)
            padded = None if bool(self.mask.all()) else self.mask
            logits = self.model(feed, self.cache, True, padded)[:, -1]
        self.rows = [self.rows[i] for i in stay]
        self.logits = logits

    def _select(self, index: list[int], force: bool = False) -> None:
        """Keep the cache rows `index` (positions into rows, before they change) and trim the left padding
        they all share; copies into a fresh cache with ROOM free positions."""
        if self.own is not None:
            self.own = [self.own[i] for i in index] or None
            return
        if self.cache is None or self.mask is None:
            return
        if not index:
            self.cache = self.mask = None
            return
        mask = self.mask[index]  # (B', L)
        start = int(mask.long().argmax(dim=1).min())  # the first column some row uses
        if not force and start == 0 and index == list(range(len(self.rows))):
            return
        length = self.cache.length - start
        cache = self.model.new_cache(len(index), self._capacity(length))
        rows = torch.tensor(index, device=self.device)
        for dst, src in ((cache.k, self.cache.k), (cache.v, self.cache.v)):
            dst[:, :, :, :length] = src[:, :, :, start : self.cache.length].index_select(1, rows)
        cache.length = length
        self.cache, self.mask = cache, mask[:, start:]

    def _one_by_one(self) -> None:
        """Split the padded cache into a cache of its own per row, for the compiled step."""
        if self.own is not None or self.cache is None or self.mask is None:
            return
        own = []
        for row, real in enumerate(self.mask):  # real: (L,) True on the row's tokens, after its padding
            start, n = int(real.long().argmax()), int(real.sum())
            mine = layer_cache(self.model, 1, self._capacity(n))
            for layer in range(self.model.config.n_layer):
                mine.k[layer][:, :, :n] = self.cache.k[layer, row : row + 1, :, start : start + n]
                mine.v[layer][:, :, :n] = self.cache.v[layer, row : row + 1, :, start : start + n]
            mine.length = n
            own.append(mine)
        self.own, self.cache, self.mask = own, None, None

    def _padded(self) -> None:
        """Join the rows' own caches into one padded cache (left-padded to the longest)."""
        if self.own is None:
            return
        own, self.own = self.own, None
        for have, mine in enumerate(own):  # each as a prompt of one row joining the padded cache
            self._stack(recast(self.model, mine, mine.length, per_layer=False), 1, have)

    def _capacity(self, length: int) -> int:
        return min(self.context, length + ROOM)
