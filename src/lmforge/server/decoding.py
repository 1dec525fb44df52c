"""Decoding for the server: one request at a time in a decoding thread (the event loop stays free),
a bound on admitted requests, cancellation within a token, a deadline, and stop strings.

A Job holds one request's prompts (token ids) and options. The worker runs generate_ids with n
copies of each prompt as one batch, and watches every token in on_token: it ends a row at an
end-of-turn id or a stop string, sends text as it becomes safe to show (whole UTF-8 characters,
never the start of a stop string), and stops the decode by raising when every row has ended,
the client has gone, or the deadline has passed. Continuous batching (requests joining a running
batch) is not done yet: admitted requests wait for the one decoding.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from lmforge.inference.generate import generate_ids
from lmforge.server.errors import ApiError
from lmforge.tokenization.tokenizer import Tokenizer


class _Stopped(Exception):
    """Raised inside on_token to end generate_ids early (every row done, cancelled, or late)."""


@dataclass
class Row:
    """One choice being decoded."""

    ids: list[int] = field(default_factory=list)
    text: str = ""  # the text so far, cut at a stop string
    sent: int = 0  # characters already streamed
    finish: str | None = None

    def pending(self, tokenizer: Tokenizer, stops: list[str]) -> str:
        """Decode after a new token: end the row at a stop string; the new text safe to send."""
        text = tokenizer.decode(self.ids)
        hits = [i for i in (text.find(s) for s in stops) if i >= 0]
        if hits:
            self.text, self.finish = text[: min(hits)], "stop"
            return self.flush()
        if text.endswith("\ufffd"):  # a BPE piece ended mid-character: wait for the rest
            return ""
        self.text = text
        hold = max((k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        return self._take(len(text) - hold)

    def flush(self) -> str:
        return self._take(len(self.text))

    def _take(self, upto: int) -> str:
        out = self.text[self.sent : upto] if upto > self.sent else ""
        self.sent = max(self.sent, upto)
        return out


@dataclass
class Job:
    net: Any
    tokenizer: Tokenizer
    prompts: list[list[int]]
    n: int
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    eos: frozenset[int]
    stops: list[str]
    deadline: float
    emit: Callable[[tuple], None] | None = None  # streaming: ("delta", index, text) events
    cancel: threading.Event = field(default_factory=threading.Event)
    rows: list[Row] = field(default_factory=list)
    tokens: int = 0  # generated so far, all rows (tests watch it stop)

    def run(self) -> list[Row]:
        """Decode every prompt (n rows each); raises ApiError on timeout, _Stopped if cancelled."""
        self.rows = [Row() for _ in range(len(self.prompts) * self.n)]
        for p, prompt in enumerate(self.prompts):
            self._check()
            rows = self.rows[p * self.n : (p + 1) * self.n]
            try:
                generate_ids(self.net, [prompt] * self.n, self.max_new_tokens, self.temperature, 0,
                             self.top_p, None, seed=self.seed, on_token=self._on_token(p, rows))  # fmt: skip
            except _Stopped:
                self._check()  # cancelled or late: say so; otherwise every row ended
            for i, row in enumerate(rows):
                if row.finish is None:  # ran to max_new_tokens
                    row.finish = "length"
                self._send(p * self.n + i, row.flush())
        return self.rows

    def _on_token(self, p: int, rows: list[Row]) -> Callable[[int, int], None]:
        def on_token(i: int, token: int) -> None:
            self._check()
            row = rows[i]
            if row.finish is None:
                if token in self.eos:
                    row.finish = "stop"
                else:
                    self.tokens += 1
                    row.ids.append(token)
                    self._send(p * self.n + i, row.pending(self.tokenizer, self.stops))
            if all(r.finish is not None for r in rows):
                raise _Stopped

        return on_token

    def _check(self) -> None:
        if self.cancel.is_set():
            raise _Stopped
        if time.monotonic() > self.deadline:
            raise ApiError(504, "the request took longer than the server's --timeout", None, "timeout")

    def _send(self, index: int, text: str) -> None:
        if text and self.emit is not None:
            self.emit(("delta", index, text))


class MainThreadExecutor(Executor):
    """Runs submitted work in the thread that calls run(): `lmforge serve` decodes in the main
    thread, with uvicorn in a thread of its own, because on this CPU torch decodes ~1.6x faster in
    the main thread than in any other (OpenMP; docs/serving.md has the figures)."""

    def __init__(self) -> None:
        self.work: queue.SimpleQueue[tuple[Callable[[], Any], Future]] = queue.SimpleQueue()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        self.work.put((lambda: fn(*args, **kwargs), future))
        return future

    def run(self, until: Callable[[], bool]) -> None:
        """Do the work as it comes, until until() holds."""
        while not until():
            try:
                fn, future = self.work.get(timeout=0.1)
            except queue.Empty:
                continue
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as e:  # Ctrl-C too: the request gets an error, then it propagates
                future.set_exception(e)
                if not isinstance(e, Exception):
                    raise

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        while cancel_futures:
            try:
                self.work.get_nowait()[1].cancel()
            except queue.Empty:
                break


class Decoder:
    """The single decoding thread and the bound on requests admitted to it."""

    def __init__(self, max_queue: int, timeout: float, executor: Executor | None = None) -> None:
        self.max_queue, self.timeout = max_queue, timeout
        self.admitted = 0
        self.executor = executor or ThreadPoolExecutor(1, thread_name_prefix="lmforge-decode")
        self.last: Job | None = None  # the most recent job (tests and /health read it)

    def submit(self, work: Callable[[], Any]) -> asyncio.Future:
        """Admit a request (503 at once when --max-queue are already admitted) and run its work in
        the decoding thread; its place frees when the work finishes, even if the client has gone."""
        if self.admitted >= self.max_queue:
            raise ApiError(503, f"the server is busy: {self.admitted} requests already admitted"
                           f" (--max-queue {self.max_queue}); retry later", None, "queue_full")  # fmt: skip
        self.admitted += 1
        future = asyncio.get_running_loop().run_in_executor(self.executor, work)
        future.add_done_callback(lambda _: self._release())
        return future

    def _release(self) -> None:
        self.admitted -= 1

    def close(self) -> None:
        """Drop queued work and cancel the running decode (uvicorn has already let requests finish)."""
        if self.last is not None:
            self.last.cancel.set()
        self.executor.shutdown(wait=False, cancel_futures=True)
