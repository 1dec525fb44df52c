"""A request's decoding state: its rows, their text and stop strings, and how it ends.

A Job holds one request's prompts (token ids) and options. The batcher (batcher.py) decodes its
rows (n per prompt) in the running batch of its model, alongside other requests' rows, and hands
each token to `take`: a row ends at an end-of-turn id, a stop string, the end of the JSON its
response_format asks for, max_tokens or the model's context (its next token would be predicted
from more than `context` positions: sliding a window past it would forget the prompt's start,
and recompute the whole window for every token); text is sent as it becomes safe to show (whole
UTF-8 characters, never a byte-fallback run a later token may still change, never the start of
a stop string). When every row has ended the job's future
gets its rows; a cancelled job (the client went away) or a late one (past --timeout) is dropped
from the batch at the next step and its future gets the error. A job that asks for
log-probabilities keeps each counted token's (TokenLogprob); a stream sends them with the text
they made (or, while text is held back, with the next piece sent).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from lmforge.inference.bans import NO_BANS, Bans
from lmforge.inference.batching import Sequence
from lmforge.inference.generate import row_generator
from lmforge.inference.grammar import Grammar, GrammarState
from lmforge.inference.logit_bias import NO_BIAS, LogitBias
from lmforge.inference.penalties import NO_PENALTIES, Penalties
from lmforge.inference.text_stream import cut_at_stop, held_back, settled, whole_chars
from lmforge.server.errors import ApiError
from lmforge.tokenization.tokenizer import CONTEXT_TOKENS, Tokenizer


class Stopped(Exception):
    """A job's error when it was cancelled (its client went away, or the server is stopping)."""


@dataclass
class TokenLogprob:
    """One token's log-probability, its top alternatives and where its text starts."""

    token: int
    logprob: float | None  # None: a prompt's first token, which nothing predicts
    top: list[tuple[int, float]] | None  # (id, log p), most likely first
    offset: int  # characters into the row's text (a prompt's token: into the prompt's text)


@dataclass
class Row:
    """One choice being decoded."""

    ids: list[int] = field(default_factory=list)
    text: str = ""  # the text so far, cut at a stop string
    sent: int = 0  # characters already streamed
    finish: str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)  # when the job asks for them
    logprobs_sent: int = 0  # entries already streamed
    early: int = 0  # characters of its first min_tokens tokens, where no stop string may end
    grammar: GrammarState | None = None  # response_format: its place in the JSON schema
    context: list[int] = field(default_factory=list)  # a completion's prompt: its text goes on after
    # the prompt's last ids (Tokenizer.decode_after keeps a SentencePiece reply's first space); a chat
    # turn's is empty, its reply decoded alone

    def pending(self, tokenizer: Tokenizer, stops: list[str], min_tokens: int = 0, keep: bool = False) -> str:
        """Decode after a new token: end the row at a stop string past its first min_tokens
        tokens (vLLM's: a stop string ending in their text is none, as an EOS among them is
        none), the stop string kept where `keep` (include_stop_str_in_output); the new text safe
        to send."""
        decoded = tokenizer.decode_after(self.context, self.ids)
        if len(self.ids) <= min_tokens:
            self.early = len(decoded)
        whole = whole_chars(decoded)
        text, stopped = _cut(whole, stops if len(self.ids) > min_tokens else [], self.early, keep)
        if stopped:
            self.text, self.finish = text, "stop"
            return self.flush()
        # less what a later token may change: a character cut in half, an open byte-fallback run
        self.text = text[: len(settled(tokenizer, self.ids, decoded, self.context))]
        return self._take(len(self.text) - held_back(self.text, stops))

    def flush(self) -> str:
        return self._take(len(self.text))

    def settle(self, tokenizer: Tokenizer, stops: list[str], keep: bool = False) -> str:
        """The row has ended: its whole text, a last character cut in half shown as U+FFFD (as
        `generate` shows it), cut at a stop string as `pending` cuts it; what is left to send."""
        self.text = _cut(tokenizer.decode_after(self.context, self.ids), stops, self.early, keep)[0]
        return self.flush()

    def _take(self, upto: int) -> str:
        out = self.text[self.sent : upto] if upto > self.sent else ""
        self.sent = max(self.sent, upto)
        return out


def _cut(text: str, stops: list[str], after: int, keep: bool) -> tuple[str, bool]:
    """cut_at_stop, or with `keep` (vLLM's include_stop_str_in_output) the text up to the end of
    the first stop string it holds."""
    cut, stopped = cut_at_stop(text, stops, after)
    if not (keep and stopped):
        return cut, stopped
    matched = next(s for s in stops if text.startswith(s, len(cut)))  # the first given, as vLLM's
    return text[: len(cut) + len(matched)], True


def timed_out(timeout: float) -> ApiError:
    """The 504 of a request past the server's --timeout (`timeout` seconds)."""
    message = f"the request took longer than the server's --timeout of {timeout:g} s"
    return ApiError(504, message, None, "timeout")


@dataclass(eq=False)
class Job:
    net: Any
    tokenizer: Tokenizer
    prompts: list[list[int]]
    n: int
    max_new_tokens: int  # the most any row may generate (0: echo's max_tokens 0, no rows decode)
    temperature: float
    top_p: float
    seed: int | None
    eos: frozenset[int]
    stops: list[str]
    deadline: float
    logprobs: int | None = None  # top alternatives per token; None: no log-probabilities
    top_k: int = 0  # 0: off
    penalties: Penalties = NO_PENALTIES
    min_p: float = 0.0  # 0: off
    bans: Bans = NO_BANS  # no_repeat_ngram_size, and min_tokens (vLLM's) with the EOS ids as stops
    bias: LogitBias = NO_BIAS  # OpenAI's logit_bias
    grammar: Grammar | None = None  # response_format's JSON schema (each row starts a state of it)
    score_prompts: bool = False  # echo with logprobs: the prompts' log-probabilities too
    texts: list[str] | None = None  # the prompts as echoed: their tokens' offsets count in these
    eos_logprob: bool = False  # list the EOS a row stops at in its logprobs (completions, as OpenAI's)
    prompt_logprobs: list[list[TokenLogprob]] | None = None  # per prompt, once scored (batcher.py)
    prefilled: list[Any] = field(default_factory=list)  # its prompts' finished Prefills, until all are
    step: Any = None  # the model's compiled decoding step, for rows decoding one by one
    step_rows: int = 1  # how many rows may decode one by one through it
    timeout: float = 0.0  # the server's --timeout, for the 504's message (deadline is start + it)
    context: int | None = None  # the model's block_size: a row ends where its text fills it
    limits: list[int] | None = None  # per prompt, what its rows may generate (a null max_tokens
    # fills each prompt's own room); None: max_new_tokens for every row
    stop_tokens: frozenset[int] = frozenset()  # vLLM's stop_token_ids (also in eos: they end a row)
    keep_stop: bool = False  # vLLM's include_stop_str_in_output: a stop string (stop token) kept
    continues: bool = False  # a completion: each row's text continues its prompt's (Row.context)
    emit: Callable[[tuple], None] | None = None  # streaming: ("delta", index, text, logprobs) events
    cancel: threading.Event = field(default_factory=threading.Event)
    rows: list[Row] = field(default_factory=list)
    tokens: int = 0  # generated so far, all rows (tests watch it stop)
    future: Future = field(default_factory=Future)  # the rows, or the error

    def sequences(self) -> list[list[Sequence]]:
        """The rows to decode, one group (n choices) per prompt; choice c of a prompt samples from
        row_generator(seed, c), whatever else is in the batch."""
        device = next(self.net.parameters()).device
        tails = [list(p[-CONTEXT_TOKENS:]) if self.continues else [] for p in self.prompts]
        self.rows = [Row(context=tails[i // self.n]) for i in range(len(self.prompts) * self.n)]
        for row in self.rows if self.grammar is not None else []:
            row.grammar = self.grammar.start()
        return [
            [
                Sequence(
                    list(prompt),
                    self.temperature,
                    self.top_k,
                    self.top_p,
                    None if self.seed is None else row_generator(self.seed, c, device),
                    (self, p * self.n + c),
                    self.logprobs,
                    self.penalties,
                    self.min_p,
                    self.bans,
                    self.bias,
                    self.rows[p * self.n + c].grammar,
                )
                for c in range(self.n)
            ]
            for p, prompt in enumerate(self.prompts)
        ]

    def take(
        self, index: int, token: int, logprob: tuple[float, list[tuple[int, float]]] | None = None
    ) -> bool:
        """Row `index`'s next token (and its log-probabilities, when asked); True when the row has ended."""
        row = self.rows[index]
        if token in self.eos:
            row.finish = "stop"
            # include_stop_str_in_output: a stop token's text is the reply's last, as vLLM detokenizes
            # it (a special token's is none); finish() sends it
            kept = self.keep_stop and token in self.stop_tokens
            if logprob is not None and (self.eos_logprob or kept):  # lm-eval drops a completion's last entry
                row.logprobs.append(TokenLogprob(token, logprob[0], logprob[1], len(row.text)))
            if kept:
                self.tokens += 1
                row.ids.append(token)
        else:
            self.tokens += 1
            if logprob is not None:
                row.logprobs.append(TokenLogprob(token, logprob[0], logprob[1], len(row.text)))
            row.ids.append(token)
            self._send(index, row.pending(self.tokenizer, self.stops, self.bans.min_new, self.keep_stop))
            if row.finish is None and row.grammar is not None and row.grammar.done():
                row.finish = "stop"  # the JSON is whole: only an end-of-text id could follow
            if row.finish is None and (len(row.ids) >= self._limit(index) or self._full(index)):
                row.finish = "length"
        return row.finish is not None

    def _limit(self, index: int) -> int:
        """The tokens row `index` may generate: its prompt's own limit, where the job has them."""
        return self.max_new_tokens if self.limits is None else self.limits[index // self.n]

    def _full(self, index: int) -> bool:
        """Row `index`'s next token would be predicted from more positions than the model has."""
        return (
            self.context is not None
            and len(self.prompts[index // self.n]) + len(self.rows[index].ids) > self.context
        )

    def scored(self, scores: list[list[TokenLogprob]]) -> None:
        """The prompts' log-probabilities (batcher.py scores them once they are prefilled); a stream sends
        them with the echoed prompt, before any generated text."""
        self.prompt_logprobs = scores
        if self.emit is not None:
            self.emit(("prompt",))

    def done(self) -> bool:
        return all(r.finish is not None for r in self.rows)

    def finish(self) -> None:
        """Every row has ended: send what was held back and hand over the rows."""
        for i, row in enumerate(self.rows):
            row.finish = row.finish or "length"
            self._send(i, row.settle(self.tokenizer, self.stops, self.keep_stop))
        self.future.set_result(self.rows)

    def late(self, now: float) -> ApiError | None:
        if now > self.deadline:
            return timed_out(self.timeout)
        return None

    def _send(self, index: int, text: str) -> None:
        if self.emit is None:
            return
        row = self.rows[index]
        if text or (row.logprobs_sent < len(row.logprobs) and row.finish is not None):
            entries = row.logprobs[row.logprobs_sent :]
            row.logprobs_sent = len(row.logprobs)
            self.emit(("delta", index, text, entries))
