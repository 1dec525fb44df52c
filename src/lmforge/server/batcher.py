"""The decode loop: requests join and leave a running batch at token granularity.

`Batcher.run` is one loop. Each turn it takes what the event loop handed over (jobs, and plain work
such as a translation call, which runs at once between steps), admits waiting jobs, prefills up to
PREFILL_CHUNK prompt tokens (inference/batching.py's `Prefill`: each prompt alone; once whole, its
rows join its model's `DecodeBatch`; short prompts pass within half of them, the rest goes oldest
first), and makes one decode step for every model with rows: a token for each row, given to its
job, then the rows that ended, were cancelled or are late leave the batch. So short prompts that
arrive together start together, a long prompt delays the running streams by one chunk's time a
token, not by its whole prefill, a short prompt behind a long one starts within a turn or two, and
a cancelled or late request stops between two chunks. `lmforge serve` runs the loop in the main
thread, where torch decodes fastest on CPUs (docs/serving.md); an app made by `create_app` alone
runs it in a thread of its own.

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

from lmforge.errors import LmforgeError
from lmforge.inference import batching
from lmforge.inference.batching import DecodeBatch, Prefill
from lmforge.server.decoding import Job, Stopped
from lmforge.server.errors import ApiError
from lmforge.server.prompt_logprobs import score_prompt
from lmforge.server.schemas import MAX_ROWS


def stopping() -> ApiError:
    """The error of work the server drops because it is stopping: 503, so a client may retry."""
    return ApiError(503, "the server is stopping; retry on another server or later", None, "server_stopping")


class Batcher(Executor):
    """Continuous batching for every served decoder, in the thread that calls `run`."""

    def __init__(self, own_thread: bool = False) -> None:
        self.inbox: queue.SimpleQueue[Job | tuple[Callable[[], Any], Future]] = queue.SimpleQueue()
        self.waiting: deque[Job] = deque()  # handed over, not yet in a batch
        self.batches: dict[int, DecodeBatch] = {}  # id(model) -> its running batch
        self.jobs: list[Job] = []  # admitted: prefilling or in a batch
        self.prefills: deque[tuple[Job, Prefill]] = deque()  # prompts of admitted jobs, oldest first
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
                self._prefill()
                for key in [k for k, b in self.batches.items() if len(b)]:
                    self._step(key)
        except BaseException as e:
            for job in [*self.jobs, *self.waiting]:
                _fail(job, e if isinstance(e, Exception) else stopping())
            self.jobs, self.batches = [], {}
            self.waiting.clear()
            self.prefills.clear()
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
        """Move waiting jobs, in order, to prefilling while their rows fit in their model's batch
        (rows decoding and rows of prompts still prefilling)."""
        while self.waiting:
            job = self.waiting[0]
            if id(job.net) not in self.batches:
                self.batches[id(job.net)] = DecodeBatch(job.net, job.step, job.step_rows)
            rows = len(job.prompts) * job.n
            prefilling = [p for j, p in self.prefills if j.net is job.net]
            prefilling += [p for j in self.jobs if j.net is job.net for p in j.prefilled]  # whole, not joined
            have = len(self.batches[id(job.net)]) + sum(len(p.seqs) for p in prefilling)
            if have and have + rows > MAX_ROWS:  # past it jobs wait (a CPU gains nothing more)
                return
            self.waiting.popleft()
            error = Stopped() if job.cancel.is_set() else job.late(time.monotonic())
            if error is not None:
                _fail(job, error)
                continue
            try:
                groups = job.sequences()  # its rows, one group of n choices per prompt
            except Exception as e:  # a grammar llguidance could not start: this job alone fails
                _fail(job, _generation_failed(e))
                continue
            # max_tokens 0 without logprobs has nothing to compute; with them, its prompts prefill in
            # chunks like any (one pass at admission stalled every stream 16 s for 3,000 tokens)
            if job.max_new_tokens <= 0 and not job.score_prompts:
                self._score(job, [None] * len(job.prompts))
                continue
            try:
                prefills = [Prefill(job.net, group, hidden=job.score_prompts) for group in groups]
            except Exception as e:  # a bug (the schemas check prompts first): this job alone fails
                _fail(job, _generation_failed(e))
                continue
            self.jobs.append(job)
            self.prefills.extend((job, p) for p in prefills)

    def _prefill(self) -> None:
        """Up to PREFILL_CHUNK prompt tokens this turn, shared as `_shares` says; a job whose
        prompts are all whole joins its batch."""
        for job in {id(j): j for j, _ in self.prefills}.values():  # the gone and the late go first,
            gone = job.cancel.is_set() or job.future.done()  # so no share of the turn is theirs
            error = Stopped() if gone else job.late(time.monotonic())
            if error is not None:
                self._drop(job, error)
        for job, prefill, take in self._shares():
            if job.future.done():  # another of its prompts failed this turn
                continue
            try:
                whole = prefill.step(take)
            except Exception as e:  # a bug, or memory: this job fails, the others go on
                self._drop(job, _generation_failed(e))
                continue
            if whole:
                self.prefills = deque((j, p) for j, p in self.prefills if p is not prefill)
                job.prefilled.append(prefill)
                if len(job.prefilled) == len(job.prompts):
                    self._join(job)

    def _shares(self) -> list[tuple[Job, Prefill, int]]:
        """This turn's prompt tokens per prompt. Prompts with at most half the budget left pass,
        shortest first, within half the budget: a short prompt queued behind a long one starts
        within a turn instead of after the long one's whole prefill (vLLM's
        long_prefill_token_threshold lets short prompts pass so). The rest goes oldest first, so
        the oldest prompt has at least half of every turn, and long prompts keep their order: two
        long prompts splitting each turn took twice as long, and both ran into --timeout."""
        budget = batching.PREFILL_CHUNK
        passing = budget // 2
        shares: dict[int, int] = {}  # id(prefill) -> tokens this turn
        for _, prefill in sorted(list(self.prefills)[1:], key=lambda jp: jp[1].left):
            if prefill.left > passing:
                break
            shares[id(prefill)], passing = prefill.left, passing - prefill.left
        budget -= sum(shares.values())
        for _, prefill in self.prefills:  # oldest first
            take = min(prefill.left - shares.get(id(prefill), 0), budget)
            if take > 0:
                shares[id(prefill)], budget = shares.get(id(prefill), 0) + take, budget - take
        return [(job, p, shares[id(p)]) for job, p in self.prefills if shares.get(id(p))]

    def _join(self, job: Job) -> None:
        """A job's prompts are whole: its rows join its batch together, as they start together."""
        job.prefilled.sort(key=lambda p: p.seqs[0].tag[1])  # in its prompts' order: shorter ones end first
        if job.max_new_tokens <= 0:  # echo's max_tokens 0: scored from its chunked prefill, no rows
            hidden = [torch.cat(p.states, dim=1)[0] for p in job.prefilled]  # (T, C) per prompt
            job.prefilled = []
            self._score(job, hidden)
            return
        try:
            hidden = [self.batches[id(job.net)].join(p) for p in job.prefilled]
        except Exception as e:  # the batch's cache may be half joined: it starts afresh
            self._abandon(id(job.net), e)
            return
        job.prefilled = []
        self._score(job, hidden)

    def _drop(self, job: Job, error: BaseException) -> None:
        """Fail a job whose prompts are still prefilling, and forget them."""
        _fail(job, error)
        self.prefills = deque((j, p) for j, p in self.prefills if j is not job)
        job.prefilled = []
        self.jobs = [j for j in self.jobs if j is not job]  # none of its rows has joined a batch

    def _score(self, job: Job, hidden: list[torch.Tensor | None]) -> None:
        """Echo with logprobs: the prompts' log-probabilities, from their prefills (lm-eval's
        max_tokens 1) or a forward pass of their own (max_tokens 0, then the job is done)."""
        if job.score_prompts:
            k = job.logprobs or 0
            try:
                texts = job.texts or [None] * len(job.prompts)
                job.scored(
                    [
                        score_prompt(job.net, job.tokenizer, p, k, h, t)
                        for p, h, t in zip(job.prompts, hidden, texts, strict=True)
                    ]
                )
            except Exception as e:  # a bug, or memory: this job fails, the others go on
                message = f"scoring the prompt failed: {type(e).__name__}: {e}"
                _fail(job, ApiError(500, message, None, "server_error"))
                return
        if job.max_new_tokens <= 0:
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
        failed: dict[int, Exception] = {}  # rows whose sampling raised: their jobs alone fail
        try:
            self.peak = max(self.peak, len(batch))
            tokens = batch.sample(failed)
            logprobs = batch.logprobs(tokens)
        except Exception as e:
            self._abandon(key, e)
            return
        ended = []
        for row, (seq, token, logprob) in enumerate(zip(batch.rows, tokens, logprobs, strict=True)):
            job, index = seq.tag
            if row in failed:
                _fail(job, _generation_failed(failed[row]))
                gone.add(id(job))
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
        """A step failed: every job in that batch (or prefilling for it) gets the error and the
        batch starts afresh."""
        batch = self.batches.pop(key)
        for job in self.jobs:
            if job.net is batch.model:
                _fail(job, _generation_failed(error))
        self.jobs = [j for j in self.jobs if not j.future.done()]
        self.prefills = deque((j, p) for j, p in self.prefills if not j.future.done())

    def _cancel_all(self) -> None:
        for job in [*self.jobs, *self.waiting]:
            _fail(job, stopping())
        self.jobs, self.batches = [], {}
        self.waiting.clear()
        self.prefills.clear()


def _generation_failed(error: Exception) -> ApiError:
    if isinstance(error, LmforgeError):  # the request's own settings (every token banned): a 400
        return ApiError(400, str(error), None, "invalid_value")
    return ApiError(500, f"generation failed: {type(error).__name__}: {error}", None, "server_error")


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
