"""The decode loop: requests join and leave a running batch at token granularity.

`Batcher.run` is one loop. Each turn it takes what the event loop handed over (jobs, and plain work
such as a translation call, which runs at once between steps), admits waiting jobs into their
model's `DecodeBatch` (inference/batching.py: each prompt prefilled alone, its rows stacked into the
batch's KV cache), and makes one decode step for every model with rows: a token for each row, given
to its job, then the rows that ended, were cancelled or are late leave the batch. `lmforge serve`
runs the loop in the main thread, where torch decodes fastest on CPUs (docs/serving.md); an app
made by `create_app` alone runs it in a thread of its own.

`Decoder` is the side the event loop sees: the bound on admitted requests (503 past it) and the
asyncio futures of their results.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

import torch

from lmforge.inference.batching import DecodeBatch
from lmforge.server.decoding import Job, Stopped
from lmforge.server.errors import ApiError
from lmforge.server.prompt_logprobs import score_prompt

MAX_ROWS = 64  # rows decoded together per model; past it jobs wait (a CPU gains nothing more)


def stopping() -> ApiError:
    """The error of work the server drops because it is stopping: 503, so a client may retry."""
    return ApiError(503, "the server is stopping; retry on another server or later", None, "server_stopping")


class Batcher(Executor):
    """Continuous batching for every served decoder, in the thread that calls `run`."""

    def __init__(self, own_thread: bool = False) -> None:
        self.inbox: queue.SimpleQueue[Job | tuple[Callable[[], Any], Future]] = queue.SimpleQueue()
        self.waiting: deque[Job] = deque()  # handed over, not yet in a batch
        self.batches: dict[int, DecodeBatch] = {}  # id(model) -> its running batch
        self.jobs: list[Job] = []  # in a batch
        self.peak = 0  # the most rows one step has decoded together (tests read it)
        self.closing = False
        self.own_thread = own_thread
        self.thread: threading.Thread | None = None

    def add(self, job: Job) -> Future:
        """Queue a job for the next turn; its future gets the rows or the error."""
        self._start()
        self.inbox.put(job)
        return job.future

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Run fn between two decode steps (Executor's interface)."""
        self._start()
        future: Future = Future()
        self.inbox.put((lambda: fn(*args, **kwargs), future))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Cancel every job and queued work at the loop's next turn (then its own thread ends)."""
        self.closing = True

    def run(self, until: Callable[[], bool]) -> None:
        """Decode until until() holds. On any escape (a bug, a third Ctrl-C) every job in flight
        gets the error, then it propagates."""
        try:
            while not until():
                self._collect(wait=not (self.jobs or self.waiting))
                if self.closing:
                    self._cancel_all()
                    if self.own_thread:
                        return
                    continue
                self._admit()
                for key in [k for k, b in self.batches.items() if len(b)]:
                    self._step(key)
        except BaseException as e:
            for job in [*self.jobs, *self.waiting]:
                _fail(job, e if isinstance(e, Exception) else stopping())
            self.jobs, self.batches = [], {}
            self.waiting.clear()
            raise

    def _start(self) -> None:
        if self.own_thread and self.thread is None:
            self.thread = threading.Thread(
                target=self.run, args=(lambda: False,), name="lmforge-decode", daemon=True
            )
            self.thread.start()

    def _collect(self, wait: bool) -> None:
        """Take everything handed over; with nothing to decode, wait a little for it."""
        try:
            item = self.inbox.get(timeout=0.1) if wait else self.inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            if isinstance(item, Job):
                self.waiting.append(item)
            else:
                fn, future = item
                if self.closing:  # an error the request can send, not a cancelled await (a bare 500)
                    if future.set_running_or_notify_cancel():
                        future.set_exception(stopping())
                elif future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except Exception as e:
                        future.set_exception(e)
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _admit(self) -> None:
        """Move waiting jobs into their batches, in order, while the rows fit."""
        while self.waiting:
            job = self.waiting[0]
            if id(job.net) not in self.batches:
                self.batches[id(job.net)] = DecodeBatch(job.net, job.step, job.step_rows)
            batch = self.batches[id(job.net)]
            rows = len(job.prompts) * job.n
            if len(batch) and len(batch) + rows > MAX_ROWS:
                return
            self.waiting.popleft()
            error = Stopped() if job.cancel.is_set() else job.late(time.monotonic())
            if error is not None:
                _fail(job, error)
                continue
            groups = job.sequences()
            hidden: list[torch.Tensor | None] = [None] * len(groups)  # each prompt's prefill, to score
            if job.max_new_tokens > 0:
                self.jobs.append(job)
                try:
                    hidden = [batch.add(group, hidden=job.score_prompts) for group in groups]
                except Exception as e:  # a bug, or memory: this job fails, the others go on
                    self._abandon(id(job.net), e)
                    continue
            if job.score_prompts:  # echo with logprobs: from the prefill (lm-eval's max_tokens 1), or
                k = job.logprobs or 0  # a forward pass of their own (max_tokens 0)
                try:
                    texts = job.texts or [None] * len(job.prompts)
                    scores = [
                        score_prompt(job.net, job.tokenizer, p, k, h, t)
                        for p, h, t in zip(job.prompts, hidden, texts, strict=True)
                    ]
                    job.scored(scores)
                except Exception as e:  # a bug, or memory: this job fails, the others go on
                    _fail(
                        job,
                        ApiError(
                            500, f"scoring the prompt failed: {type(e).__name__}: {e}", None, "server_error"
                        ),
                    )
                    continue
            if job.max_new_tokens <= 0:  # max_tokens 0 (echo): the prompt alone
                job.finish()

    def _step(self, key: int) -> None:
        """One token for every row of one model's batch; rows of ended, cancelled or late jobs leave."""
        batch = self.batches[key]
        now = time.monotonic()
        gone: set[int] = set()
        for job in self.jobs:
            if job.net is batch.model:
                error = Stopped() if job.cancel.is_set() else job.late(now)
                if error is not None:
                    _fail(job, error)
                    gone.add(id(job))
        try:
            self.peak = max(self.peak, len(batch))
            tokens = batch.sample()
            logprobs = batch.logprobs(tokens)
        except Exception as e:
            self._abandon(key, e)
            return
        ended = []
        for seq, token, logprob in zip(batch.rows, tokens, logprobs, strict=True):
            job, index = seq.tag
            try:
                ended.append(id(job) in gone or job.take(index, token, logprob))
            except Exception as e:  # its stream could not take the text: this job alone fails
                _fail(job, e)
                gone.add(id(job))
                ended.append(True)
        try:
            batch.advance(
                tokens, [not e and id(s.tag[0]) not in gone for s, e in zip(batch.rows, ended, strict=True)]
            )
        except Exception as e:
            self._abandon(key, e)
            return
        for job in self.jobs:
            if id(job) not in gone and job.net is batch.model and job.done():
                try:
                    job.finish()
                except Exception as e:
                    _fail(job, e)
        self.jobs = [j for j in self.jobs if not j.future.done()]

    def _abandon(self, key: int, error: Exception) -> None:
        """A step failed: every job in that batch gets the error and the batch starts afresh."""
        batch = self.batches.pop(key)
        wrapped = ApiError(500, f"generation failed: {type(error).__name__}: {error}", None, "server_error")
        for job in self.jobs:
            if job.net is batch.model:
                _fail(job, wrapped)
        self.jobs = [j for j in self.jobs if not j.future.done()]

    def _cancel_all(self) -> None:
        for job in [*self.jobs, *self.waiting]:
            _fail(job, stopping())
        self.jobs, self.batches = [], {}
        self.waiting.clear()


def _fail(job: Job, error: BaseException) -> None:
    job.cancel.set()
    if not job.future.done():
        job.future.set_exception(error)


class Decoder:
    """The bound on requests admitted to the batcher, and the way in from the event loop."""

    def __init__(self, max_queue: int, timeout: float, batcher: Batcher | None = None) -> None:
        self.max_queue, self.timeout = max_queue, timeout
        self.admitted = 0
        self.batcher = batcher if batcher is not None else Batcher(own_thread=True)
        self.last: Job | None = None  # the most recent job (tests read it)

    def submit(self, work: Job | Callable[[], Any]) -> asyncio.Future:
        """Admit a request (503 at once when --max-queue are already admitted) and hand it to the
        batcher: a Job joins the running batch, other work (a pipeline call) runs between steps.
        Its place frees when it finishes, even if the client has gone."""
        if self.admitted >= self.max_queue:
            raise ApiError(503, f"the server is busy: {self.admitted} requests already admitted"
                           f" (--max-queue {self.max_queue}); retry later", None, "queue_full")  # fmt: skip
        self.admitted += 1
        done = self.batcher.add(work) if isinstance(work, Job) else self.batcher.submit(work)
        future = asyncio.wrap_future(done)
        future.add_done_callback(self._release)
        return future

    def _release(self, future: asyncio.Future) -> None:
        self.admitted -= 1
        if not future.cancelled():
            future.exception()  # read: a request whose client left never reads it, and asyncio
            # would log "Future exception was never retrieved" for each

    def close(self) -> None:
        """Cancel running and queued work (uvicorn has already let requests finish)."""
        self.batcher.shutdown(wait=False, cancel_futures=True)
