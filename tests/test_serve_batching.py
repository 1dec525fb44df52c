"""Continuous batching: rows joining and leaving a running batch decode what they would alone.

The engine (inference/batching.py) on a tiny random GPT and a tiny random Llama-style model:
sequences with different prompt lengths and max_tokens join at different steps, leave when done,
some where their tokens fill the context; each equals generate_ids on its prompt alone, greedy and
seeded; a row is never decoded past the context. Then
the server: 8 parallel streams against a real uvicorn server, started together so they share
the batch, each equal to the same request served alone, seeded sampling included.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.inference.batching import DecodeBatch, Sequence
from lmforge.inference.generate import generate_ids, row_generator
from lmforge.model.gpt import GPT

LLAMA = {"pos": "rope", "mlp": "swiglu", "norm": "rmsnorm", "bias": False, "n_kv_head": 1, "n_head": 4}


@pytest.fixture(scope="module", params=["gpt", "llama"])
def model(request: pytest.FixtureRequest) -> GPT:
    torch.manual_seed(0)
    extra = LLAMA if request.param == "llama" else {}
    config = ModelConfig(
        **{"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 24, "vocab_size": 50, **extra}
    )
    return GPT(config).eval()


def run(
    model: GPT,
    plan: list[tuple[int, Sequence, int]],
    batch: DecodeBatch | None = None,
    watch: Callable[[DecodeBatch], None] | None = None,
) -> dict[int, list[int]]:
    """Decode a schedule of (step it joins at, sequence, tokens it wants) in batch (a fresh one by
    default), calling watch after each step; returns new tokens by row."""
    batch = DecodeBatch(model) if batch is None else batch
    out: dict[int, list[int]] = {}
    step = 0
    while plan or len(batch):
        for _, seq, _ in [p for p in plan if p[0] <= step]:
            batch.add([seq])
        plan = [p for p in plan if p[0] > step]
        if len(batch):
            tokens = batch.sample()
            keep = []
            for seq, token in zip(batch.rows, tokens, strict=True):
                row, want = seq.tag
                out.setdefault(row, []).append(token)
                keep.append(len(out[row]) < want)
            batch.advance(tokens, keep)
            if watch is not None:
                watch(batch)
        step += 1
    return out


def test_rows_joining_and_leaving_decode_as_alone(model: GPT) -> None:
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 50, (n,), generator=gen).tolist() for n in (1, 5, 12, 3, 20, 8, 24, 2)]
    wants = [10, 4, 16, 30, 9, 1, 6, 20]  # rows 2, 3, 4, 6 and 7 end where they fill the context
    wants = [min(w, 24 - len(p) + 1) for w, p in zip(wants, prompts, strict=True)]  # the last from all 24
    assert wants == [10, 4, 13, 22, 5, 1, 1, 20]
    joins = [0, 0, 1, 3, 3, 4, 8, 12]
    plan = [
        (j, Sequence(list(p), tag=(i, w)), w)
        for i, (j, p, w) in enumerate(zip(joins, prompts, wants, strict=True))
    ]
    got = run(model, plan)
    for i, (p, w) in enumerate(zip(prompts, wants, strict=True)):
        assert got[i] == generate_ids(model, [p], w, temperature=0)[0], f"row {i}"


def test_a_row_is_not_decoded_past_the_context(model: GPT) -> None:
    batch = DecodeBatch(model)
    batch.add([Sequence(list(range(23)))])
    batch.advance(batch.sample(), [True])  # 24 tokens: the next one is predicted from all of them
    with pytest.raises(ValueError, match="past the model's context"):
        batch.advance(batch.sample(), [True])
    assert [len(s.ids) for s in batch.rows] == [24]  # refused before anything changed


def test_seeded_rows_sample_as_alone(model: GPT) -> None:
    prompts = [[3, 1, 4, 1, 5], [9, 2], [6, 5, 3, 5, 8, 9, 7], [2, 7, 1]]
    plan = []
    for i, p in enumerate(prompts):  # rows 0 and 2 sample with seeds; the others are greedy
        sampled = i % 2 == 0
        seq = Sequence(
            list(p), 1.0 if sampled else 0.0, 0, 0.9, row_generator(40 + i, 0) if sampled else None
        )
        seq.tag = (i, 12)
        plan.append((i, seq, 12))
    got = run(model, plan)
    for i, p in enumerate(prompts):
        temperature, seed = (1.0, 40 + i) if i % 2 == 0 else (0.0, None)
        assert got[i] == generate_ids(model, [p], 12, temperature, 0, 0.9, seed=seed)[0], f"row {i}"


def test_generate_ids_rows_sample_independently(model: GPT) -> None:
    """With a seed, row i draws the same tokens whatever the other rows are."""
    a = generate_ids(model, [[1, 2, 3], [4, 5]], 8, temperature=1.0, seed=3)
    b = generate_ids(model, [[1, 2, 3], [7, 7, 7, 7]], 8, temperature=1.0, seed=3)
    assert a[0] == b[0] == generate_ids(model, [[1, 2, 3]], 8, temperature=1.0, seed=3)[0]


# --- the server: 8 parallel streams ----------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    pytest.importorskip("fastapi")
    from serve_helpers import make_model_dirs, running

    from lmforge.server.app import Settings, create_app
    from lmforge.server.models import load_models

    dirs = make_model_dirs(tmp_path_factory.mktemp("batching"), block_size=48)
    app = create_app(load_models([dirs["gpt"], dirs["llama"]], dtype="fp32"), Settings(max_queue=16))
    with running(app) as url:
        yield url, app.state.lmforge


def stream(url: str, body: dict[str, Any]) -> list[str]:
    """A streamed request's text per choice."""
    import httpx

    route = "/v1/chat/completions" if "messages" in body else "/v1/completions"
    texts = [""] * body.get("n", 1)
    with httpx.stream("POST", url + route, json={**body, "stream": True}, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                choice = json.loads(line[6:])["choices"][0]
                texts[choice["index"]] += choice.get("text") or choice.get("delta", {}).get("content") or ""
    return texts


REQUESTS: list[dict[str, Any]] = [
    {"model": "gpt", "prompt": "ROMEO:", "max_tokens": 30, "temperature": 0},
    {"model": "gpt", "prompt": "the king is dead, long live", "max_tokens": 7, "temperature": 0},
    {"model": "gpt", "prompt": "a", "max_tokens": 47, "temperature": 0},  # fills the 48-token context
    {"model": "gpt", "prompt": "KING:\nwhat", "max_tokens": 20, "temperature": 1.0, "seed": 5, "n": 2},
    {"model": "llama", "messages": [{"role": "user", "content": "Who is the king?"}], "max_tokens": 25},
    {"model": "llama", "messages": [{"role": "user", "content": "the queen"}], "max_tokens": 9},
    {"model": "llama", "prompt": "the", "max_tokens": 40, "temperature": 0},
    {"model": "llama", "prompt": "ROMEO: the", "max_tokens": 16, "temperature": 0.8, "top_p": 0.9, "seed": 1},
]
for _body in REQUESTS:
    _body.setdefault("temperature", 0)  # greedy unless the request samples with a seed


def test_parallel_streams_equal_their_sequential_answers(server: tuple[str, Any]) -> None:
    url, state = server
    alone = [stream(url, body) for body in REQUESTS]
    assert state.decoder.batcher.peak == 2  # n=2 is the widest a request alone made the batch
    gate = threading.Event()  # hold the decode loop so that all 8 join the same batch
    state.decoder.batcher.submit(gate.wait, 30)
    results: list[Any] = [None] * len(REQUESTS)

    def client(i: int) -> None:
        results[i] = stream(url, REQUESTS[i])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(REQUESTS))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while state.decoder.admitted < len(REQUESTS) and time.monotonic() < deadline:
        time.sleep(0.01)
    gate.set()
    for t in threads:
        t.join(60)
    assert results == alone
    assert state.decoder.batcher.peak == 5  # the gpt's 5 rows (one request has n=2) in one batch
    while state.decoder.admitted and time.monotonic() < deadline + 60:
        time.sleep(0.01)
    assert state.decoder.admitted == 0


def test_a_client_that_leaves_stops_its_rows_and_spares_the_others(server: tuple[str, Any]) -> None:
    import httpx

    url, state = server
    want = stream(url, REQUESTS[0])
    gate = threading.Event()  # both requests join one batch
    state.decoder.batcher.submit(gate.wait, 30)
    endless = {"model": "gpt", "prompt": "a", "max_tokens": 47, "temperature": 0, "stop": "\u00e9\u00e9"}
    other: list[Any] = []
    with httpx.stream("POST", url + "/v1/completions", json={**endless, "stream": True}, timeout=30) as r:
        deadline = time.monotonic() + 10
        while getattr(state.decoder.last, "max_new_tokens", 0) != 47 and time.monotonic() < deadline:
            time.sleep(0.01)
        job = state.decoder.last
        thread = threading.Thread(target=lambda: other.append(stream(url, REQUESTS[0])))
        thread.start()
        while state.decoder.admitted < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        gate.set()
        lines = r.iter_lines()
        assert any(next(lines).startswith("data: ") for _ in range(6))  # it is decoding
    while not job.future.done() and time.monotonic() < deadline:  # closed: its rows leave
        time.sleep(0.01)
    stopped_at = job.tokens
    assert job.future.done() and job.cancel.is_set() and stopped_at <= 47
    time.sleep(0.2)
    assert job.tokens == stopped_at
    thread.join(30)
    assert other == [want]


# --- prompts prefilled in chunks -------------------------------------------------------------------
def test_prompts_prefilled_in_chunks_decode_as_alone(model: GPT, monkeypatch: pytest.MonkeyPatch) -> None:
    """A prompt longer than PREFILL_CHUNK goes through in chunks (generate's prefill and the
    server's alike): the same greedy tokens as one pass without a cache."""
    from lmforge.inference import batching, prefill

    gen = torch.Generator().manual_seed(2)
    prompts = [torch.randint(0, 50, (n,), generator=gen).tolist() for n in (23, 11, 6)]
    alone = [generate_ids(model, [p], 24 - len(p) + 1, temperature=0, use_cache=False)[0] for p in prompts]
    for chunk in (5, 1):
        monkeypatch.setattr(batching, "PREFILL_CHUNK", chunk)
        monkeypatch.setattr(prefill, "PREFILL_CHUNK", chunk)
        pairs = list(zip(prompts, alone, strict=True))
        plan = [(i, Sequence(list(p), tag=(i, len(a))), len(a)) for i, (p, a) in enumerate(pairs)]
        got = run(model, plan)
        assert [got[i] for i in range(3)] == alone, chunk
        assert [generate_ids(model, [p], len(a), temperature=0)[0] for p, a in pairs] == alone


def _jobs(tmp_path: Any) -> Callable[..., Any]:
    from serve_helpers import make_endless_gpt

    from lmforge.formats.directory import load_model
    from lmforge.server.decoding import Job

    net, tokenizer = load_model(make_endless_gpt(tmp_path))
    net.eval()

    def job(prompt: list[int], tokens: int, *more: list[int], **fields: Any) -> Job:
        """A greedy job of one prompt (or more: its other prompts), `tokens` new tokens a row."""
        prompts = [prompt, *more]
        return Job(
            net,
            tokenizer,
            prompts,
            1,
            tokens,
            0.0,
            1.0,
            None,
            frozenset(),
            [],
            time.monotonic() + 60,
            **fields,
        )

    return job


@pytest.fixture(autouse=True)
def _runs_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test's Batcher.run(until=...) fails after RUN_SECONDS instead of looping forever: a job
    that fails never brings the tokens its `until` waits for (a failing decode hung the suite)."""
    from lmforge.server.batcher import Batcher

    run = Batcher.run

    def run_until_deadline(self: Batcher, until: Callable[[], bool]) -> None:
        if self.own_thread:  # a server's decoding thread runs until it closes
            return run(self, until)
        deadline = time.monotonic() + RUN_SECONDS

        def until_or_late() -> bool:
            if until():
                return True
            assert time.monotonic() < deadline, f"Batcher.run's condition not met in {RUN_SECONDS} s"
            return False

        return run(self, until_or_late)

    monkeypatch.setattr(Batcher, "run", run_until_deadline)


RUN_SECONDS = 120


def _turns(n: int) -> Callable[[], bool]:
    """An `until` for Batcher.run that lets it make n turns."""
    left = iter(range(n, -1, -1))
    return lambda: next(left) == 0


def test_a_long_prompt_prefills_between_the_running_rows_steps(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running stream gets a token between every two chunks of a newcomer's prefill (it waited
    for the whole prefill: a 3,000-token prompt froze SmolLM2's other streams 33 s)."""
    from lmforge.inference import batching
    from lmforge.server.batcher import Batcher

    monkeypatch.setattr(batching, "PREFILL_CHUNK", 16)
    job = _jobs(tmp_path)
    batcher = Batcher()
    running, long = job([1, 2, 3], 10_000), job([5, 6, 7, 8] * 40, 3)  # 160 tokens: 10 chunks
    batcher.add(running)
    batcher.run(until=lambda: running.tokens >= 2)
    batcher.add(long)
    seen: list[tuple[int, int]] = []  # (the running row's tokens, prompt tokens prefilled) each turn
    batcher.run(
        until=lambda: (
            seen.append((running.tokens, sum(p.done for _, p in batcher.prefills))) or long.future.done()
        )
    )
    during = [tokens for tokens, prefilled in seen if prefilled]
    assert len(during) == 9 and during == list(range(during[0], during[0] + 9))  # one token a chunk
    assert long.future.result()[0].ids == generate_ids(long.net, [[5, 6, 7, 8] * 40], 3, temperature=0)[0]
    running.cancel.set()
    batcher.run(until=lambda: running.future.done())


def test_an_echo_of_max_tokens_0_prefills_in_chunks_between_the_running_rows_steps(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lm-eval's echo with max_tokens 0 scored its prompt in one forward pass at admission: a
    3,000-token prompt stalled every running stream 16 s. It prefills in chunks like any prompt,
    and scores what the one pass scored."""
    from lmforge.inference import batching
    from lmforge.server.batcher import Batcher

    monkeypatch.setattr(batching, "PREFILL_CHUNK", 16)
    job = _jobs(tmp_path)
    batcher = Batcher()
    running, prompt = job([1, 2, 3], 10_000), [5, 6, 7, 8] * 40  # 160 tokens: 10 chunks
    batcher.add(running)
    batcher.run(until=lambda: running.tokens >= 2)
    echo = job(prompt, 0, score_prompts=True, logprobs=1)
    batcher.add(echo)
    seen: list[tuple[int, int]] = []
    batcher.run(
        until=lambda: (
            seen.append((running.tokens, sum(p.done for _, p in batcher.prefills))) or echo.future.done()
        )
    )
    during = [tokens for tokens, prefilled in seen if prefilled]
    assert len(during) == 9 and during == list(range(during[0], during[0] + 9))  # one token a chunk
    monkeypatch.setattr(batching, "PREFILL_CHUNK", 4096)
    whole = job(prompt, 0, score_prompts=True, logprobs=1)
    batcher.add(whole)
    batcher.run(until=lambda: whole.future.done())
    assert echo.prompt_logprobs is not None and whole.prompt_logprobs is not None
    got, want = echo.prompt_logprobs[0], whole.prompt_logprobs[0]
    assert [t.token for t in got] == prompt == [t.token for t in want]
    assert [t.logprob for t in got[1:]] == pytest.approx([t.logprob for t in want[1:]], abs=1e-5)
    running.cancel.set()
    batcher.run(until=lambda: running.future.done())


def test_a_request_cancelled_while_its_prompt_prefills_stops_there(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client gone (or a --timeout past) in the middle of a long prefill stops it at the next
    chunk: the server no longer finishes the prompt for nobody (215 s for an 8,188-token one)."""
    from lmforge.inference import batching
    from lmforge.server.batcher import Batcher
    from lmforge.server.decoding import Stopped

    monkeypatch.setattr(batching, "PREFILL_CHUNK", 16)
    job = _jobs(tmp_path)
    batcher = Batcher()
    long = job(list(range(1, 9)) * 40, 5)  # 320 tokens: 20 chunks
    batcher.add(long)
    batcher.run(until=lambda: bool(batcher.prefills) and batcher.prefills[0][1].done >= 48)
    prefill = batcher.prefills[0][1]
    long.cancel.set()
    batcher.run(until=lambda: long.future.done())
    assert isinstance(long.future.exception(), Stopped)
    assert prefill.done == 48 and not batcher.prefills and not batcher.jobs
    late = job(list(range(1, 9)) * 40, 5)
    batcher.add(late)
    batcher.run(until=lambda: bool(batcher.prefills) and batcher.prefills[0][1].done >= 16)
    late.deadline = time.monotonic() - 1  # its --timeout passes mid-prefill: a 504, at once
    batcher.run(until=lambda: late.future.done())
    assert "--timeout" in str(late.future.exception()) and not batcher.prefills


def test_a_short_prompt_behind_a_long_one_starts_before_the_long_one_is_prefilled(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The oldest prompt takes half of a turn's prefill, the short newcomer the rest: it starts
    within a turn (it waited for the long prompt's whole prefill: a 2-s --timeout gave 10-token
    prompts 504s behind three 3,000-token ones), and the long prompt is never starved."""
    from lmforge.inference import batching
    from lmforge.server.batcher import Batcher

    monkeypatch.setattr(batching, "PREFILL_CHUNK", 16)
    job = _jobs(tmp_path)
    batcher = Batcher()
    long_prompt = [5, 6, 7, 8] * 80  # 320 tokens: 20 turns alone
    long = job(long_prompt, 3)
    batcher.add(long)
    batcher.run(until=_turns(2))
    shorts = [job([1, 2, 3 + i], 4) for i in range(3)]
    for short in shorts:
        batcher.add(short)
    done: list[int] = []  # the long prompt's tokens prefilled each turn
    batcher.run(until=lambda: done.append(batcher.prefills[0][1].done) or shorts[-1].tokens > 0)
    assert len(done) <= 3 and done[-1] < len(long_prompt)  # the shorts decode while it prefills
    assert all(b - a >= 8 for a, b in zip(done, done[1:], strict=False))  # half a chunk a turn at least
    batcher.run(until=lambda: long.future.done() and all(s.future.done() for s in shorts))
    for j in (long, *shorts):
        assert j.future.result()[0].ids == generate_ids(j.net, j.prompts, j.max_new_tokens, temperature=0)[0]


def test_long_prompts_keep_their_order_and_only_short_ones_pass(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only prompts of at most half a turn pass the oldest: a second long prompt waits its turn (when
    it shared each turn with the first, both took twice as long and both ran into --timeout)."""
    from lmforge.inference import batching
    from lmforge.server.batcher import Batcher

    monkeypatch.setattr(batching, "PREFILL_CHUNK", 16)
    job = _jobs(tmp_path)
    batcher = Batcher()
    first, second = job([5, 6, 7, 8] * 20, 2), job([1, 2, 3, 4] * 10, 2)  # 80 and 40 tokens
    batcher.add(first)
    batcher.add(second)
    seen: list[tuple[int, int]] = []  # tokens prefilled of (first, second) after each turn
    batcher.run(
        until=lambda: (
            seen.append(
                tuple(next((p.done for j, p in batcher.prefills if j is x), -1) for x in (first, second))
            )
            or second.future.done()
        )
    )
    while_first = [b for a, b in seen if 0 < a < 80]
    assert while_first and set(while_first) == {0}  # the second waits while the first prefills
    for j in (first, second):
        assert j.future.result()[0].ids == generate_ids(j.net, j.prompts, 2, temperature=0)[0]


def test_a_jobs_prompts_finishing_their_prefill_out_of_order_keep_their_order(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request's short prompt is prefilled before its long one: each prompt still gets its own
    rows and its own scored log-probabilities (echo), as when they are prefilled in order."""
    from lmforge.inference import batching
    from lmforge.server.batcher import Batcher

    job = _jobs(tmp_path)
    prompts = [[5, 6, 7, 8] * 20, [1, 2, 3]]
    got = {}
    for chunk in (16, 4096):  # the short prompt ends first; both in one turn
        monkeypatch.setattr(batching, "PREFILL_CHUNK", chunk)
        batcher = Batcher()
        got[chunk] = job(*prompts[:1], 2, *prompts[1:], score_prompts=True, logprobs=0)
        batcher.add(got[chunk])
        batcher.run(until=lambda: got[chunk].future.done())  # noqa: B023 (used at once)
    rows, alone = (
        [r.ids for r in got[16].future.result()],
        generate_ids(got[16].net, prompts, 2, temperature=0),
    )
    assert rows == alone and [r.ids for r in got[4096].future.result()] == alone
    scored = got[16].prompt_logprobs
    assert scored is not None and [len(s) for s in scored] == [len(p) for p in prompts]
    whole = got[4096].prompt_logprobs
    assert whole is not None and [[t.token for t in s] for s in scored] == [
        [t.token for t in s] for s in whole
    ]
    assert [t.logprob for s in scored for t in s] == pytest.approx(
        [t.logprob for s in whole for t in s], abs=1e-5
    )


def test_rows_of_a_jobs_prompts_already_prefilled_count_against_max_rows(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job whose short prompt is whole while its long one still prefills holds both rows: a job
    that would take the batch past MAX_ROWS waits (it was let in, its prefilled rows not counted)."""
    from lmforge.inference import batching
    from lmforge.server import batcher as batcher_module

    monkeypatch.setattr(batching, "PREFILL_CHUNK", 16)
    monkeypatch.setattr(batcher_module, "MAX_ROWS", 3)
    job = _jobs(tmp_path)
    batcher = batcher_module.Batcher()
    first = job([5, 6, 7, 8] * 40, 2, [1, 2, 3])
    batcher.add(first)
    batcher.run(until=lambda: len(first.prefilled) == 1)
    second = job([1, 2], 2, [3, 4])
    batcher.add(second)
    batcher.run(until=_turns(2))
    assert list(batcher.waiting) == [second]
    batcher.run(until=lambda: second.future.done())
    assert first.future.done()


def test_a_row_whose_sampling_fails_ends_its_own_job_alone(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One request's sampling raising (it was repetition_penalty=1e-320, temperature=1e-300 or
    top_p=1e-300: NaN probabilities) failed every request decoding beside it with a 500."""
    import dataclasses

    from lmforge.inference import batching
    from lmforge.server.batcher import Batcher

    real = batching.sample_next

    def sample_next(logits: Any, temperature: float, *args: Any) -> Any:
        if temperature == 0.5:
            raise RuntimeError("probability tensor contains either inf, nan or element < 0")
        return real(logits, temperature, *args)

    monkeypatch.setattr(batching, "sample_next", sample_next)
    job = _jobs(tmp_path)
    batcher = Batcher()
    running = job([1, 2, 3], 12)
    bad = dataclasses.replace(job([4, 5], 12), temperature=0.5)
    batcher.add(running)
    batcher.run(until=lambda: running.tokens >= 2)
    batcher.add(bad)
    batcher.run(until=lambda: running.future.done() and bad.future.done())
    with pytest.raises(Exception, match="generation failed: RuntimeError: probability tensor"):
        bad.future.result()
    assert running.future.result()[0].ids == generate_ids(running.net, [[1, 2, 3]], 12, temperature=0)[0]
