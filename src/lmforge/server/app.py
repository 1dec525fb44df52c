"""The routes: GET /health, GET /v1/models, GET /v1/models/{id}, POST /v1/completions,
POST /v1/chat/completions, POST /v1/translations, POST /v1/classifications, POST /v1/answers,
POST /v1/embeddings (embedding_route.py).
Bodies are checked by schemas.py (their size by limits.py); every failure is OpenAI's error object
(errors.py); requests decode together in batcher.py's loop."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from lmforge.errors import LmforgeError
from lmforge.server import sse
from lmforge.server.answer_request import AnswerRequest
from lmforge.server.auth import RequireKey
from lmforge.server.batcher import Batcher, Decoder
from lmforge.server.decoding import Job, Row, timed_out
from lmforge.server.embedding_route import KIND as EMBEDDINGS
from lmforge.server.embedding_route import embedding_inputs, embedding_reply
from lmforge.server.errors import ApiError, CatchBugs, install
from lmforge.server.jobs import new_job
from lmforge.server.limits import BodyLimit
from lmforge.server.logprobs import chat_logprobs, completion_logprobs
from lmforge.server.models import ServedModel
from lmforge.server.playground import install_playground
from lmforge.server.prompt_logprobs import echo_logprobs, read_prompts
from lmforge.server.schemas import (
    ChatRequest,
    ClassificationRequest,
    CompletionRequest,
    EmbeddingRequest,
    TranslationRequest,
    _Sampling,
)
from lmforge.server.tool_calls import chat_message, stream_pieces
from lmforge.server.tool_formats import Reading, reads_calls
from lmforge.server.truncation import keep_last, reply_limit

MAX_BODY_BYTES = 4 * 2**20  # far above any prompt a served context can hold


@dataclass
class Settings:
    max_queue: int = 16
    max_tokens_limit: int = 1024
    timeout: float = 300.0
    api_key: str | None = None
    allow_origins: tuple[str, ...] = ()  # web pages of other origins that may call the API (CORS)
    tool_call_parser: str | None = None  # tool calls' format (tool_formats.PARSERS); None: none


@dataclass
class State:
    models: dict[str, ServedModel]
    settings: Settings
    decoder: Decoder
    created: int = field(default_factory=lambda: int(time.time()))


def create_app(
    models: dict[str, ServedModel], settings: Settings | None = None, batcher: Batcher | None = None
) -> FastAPI:
    """The app; decoding runs in `batcher`'s loop (default: in a thread of its own)."""
    settings = settings or Settings()
    state = State(models, settings, Decoder(settings.max_queue, settings.timeout, batcher))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.decoder.close()  # at shutdown: queued work is dropped, running decodes are cancelled

    app = FastAPI(title="lmforge", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.lmforge = state
    install(app)
    install_playground(app)  # GET /: the web playground (static files)

    app.add_middleware(CatchBugs)  # innermost: a bug's 500 passes through CORS below
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)  # plain ASGI: see limits.py for why
    if settings.api_key is not None:  # outside the body limit: a keyless request is not read
        app.add_middleware(RequireKey, key=settings.api_key)
    if settings.allow_origins:  # added last, so outermost: a 413 or 401 carries the headers too
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.allow_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["*"],  # the openai JS client sends x-stainless-* headers on every request
            expose_headers=["x-request-id", "x-should-retry"],
        )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": sorted(models), "admitted": state.decoder.admitted}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [m.card(state.created) for m in models.values()]}

    @app.get("/v1/models/{model_id}")
    async def retrieve_model(model_id: str) -> dict[str, Any]:  # the openai client's models.retrieve
        return _served(state, model_id).card(state.created)

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        served = _model(state, body.model, "text-generation")
        # token-id prompts are checked against the vocabulary and echo their decoded text
        ids, texts = read_prompts(served.tokenizer, served.net.config.vocab_size, body)
        cut = body.truncate_prompt_tokens  # -1: the context less room, vLLM's max_model_len - max_tokens
        fills = "max_tokens" in body.model_fields_set  # an explicit null fills the room the prompt leaves
        limit, room = reply_limit(body.max_tokens, "max_tokens", fills, cut, settings.max_tokens_limit)
        ids, texts = keep_last(served.tokenizer, ids, texts, cut, served.context, room)
        echo = texts if body.echo else None
        return await _generate(state, served, body, ids, limit, request, chat=False, echo=echo)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatRequest, request: Request) -> Any:
        served = _model(state, body.model, "text-generation")
        if served.chat is None:
            raise ApiError(
                400,
                f"model {served.id!r} has no chat template, so it cannot chat; use"
                " /v1/completions with plain text",
                "model",
                "no_chat_template",
            )
        calls = reads_calls(body, served.chat, settings.tool_call_parser)
        try:
            prompt = served.chat.render([m.as_dict() for m in body.messages], tools=body.template_tools())
            ids = [served.tokenizer.encode(prompt)]
        except LmforgeError as e:
            raise ApiError(400, str(e), "messages", "invalid_value") from None
        cut = body.truncate_prompt_tokens  # a chat without max_tokens fills the room its prompt leaves
        limit, room = reply_limit(body.limit(), body.limit_key(), True, cut, settings.max_tokens_limit)
        ids, _ = keep_last(served.tokenizer, ids, [prompt], body.truncate_prompt_tokens, served.context, room)
        return await _generate(state, served, body, ids, limit, request, chat=True, calls=calls)

    @app.post("/v1/translations")
    async def translations(body: TranslationRequest) -> dict[str, Any]:
        served = _model(state, body.model, "translation")
        given = {
            "num_beams": body.num_beams,
            "max_new_tokens": body.max_new_tokens,
            "truncation": body.truncation,
            "repetition_penalty": body.repetition_penalty,
            "no_repeat_ngram_size": body.no_repeat_ngram_size,
        }
        options = {k: v for k, v in given.items() if v is not None}
        results = await _task(state, lambda: served.pipeline(body.input, **options))
        return {"object": "translation", "model": served.id, "results": results}

    @app.post("/v1/classifications")
    async def classifications(body: ClassificationRequest) -> dict[str, Any]:
        served = _model(state, body.model, "text-classification")
        given = {"top_k": body.top_k} if "top_k" in body.model_fields_set else {}  # as the pipeline's
        given |= {"function_to_apply": body.function_to_apply} if body.function_to_apply else {}
        results = await _task(state, lambda: served.pipeline(body.pipeline_input(), **given))
        return {"object": "classification", "model": served.id, "results": results}

    @app.post("/v1/answers")
    async def answers(body: AnswerRequest) -> dict[str, Any]:
        served = _model(state, body.model, "question-answering")
        options = body.options()
        work = lambda: served.pipeline(question=body.question, context=body.context, **options)  # noqa: E731
        results = await _task(state, work, None)
        return {"object": "answer", "model": served.id, "results": results}

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest) -> dict[str, Any]:
        served = _model(state, body.model, EMBEDDINGS)
        rows = embedding_inputs(served, body)
        vectors = await _task(state, lambda: served.pipeline.embed_ids(rows))
        return embedding_reply(served, body, rows, vectors)

    return app


def _served(state: State, name: str) -> ServedModel:
    served = state.models.get(name)
    if served is None:
        raise ApiError(
            404,
            f"the model {name!r} does not exist (served: {', '.join(sorted(state.models))})",
            "model",
            "model_not_found",
        )
    return served


def _model(state: State, name: str, kind: str) -> ServedModel:
    served = _served(state, name)
    if served.kind != kind:
        raise ApiError(
            400, f"model {name!r} is a {served.kind} model, not {kind}", "model", "wrong_model_kind"
        )
    return served


async def _task(state: State, work: Any, param: str | None = "input") -> Any:
    """A translation, classification or question: a pipeline call in the decoding loop, between steps."""
    try:
        return await state.decoder.submit(work)
    except LmforgeError as e:
        raise ApiError(400, str(e), param, "invalid_value") from None


async def _generate(
    state: State,
    served: ServedModel,
    body: _Sampling,
    prompts: list[list[int]],
    limit: int,
    request: Request,
    chat: bool,
    echo: list[str] | None = None,
    calls: Reading | None = None,
) -> Any:
    """The reply to a completion or chat request; `calls`: chat replies are read for tool calls."""
    settings = state.settings
    # off the event loop: a grammar's first compile reads the whole vocabulary (1-2 s), which
    # would stall every other client's stream
    job = await asyncio.to_thread(
        new_job, served, body, prompts, limit, chat, echo, settings.max_tokens_limit, settings.timeout, calls
    )
    head = {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "created": int(time.time()),
        "model": served.id,
    }

    def usage(rows: list[Row]) -> dict[str, int]:  # exact: the tokens encoded and the tokens generated
        given, made = sum(map(len, prompts)), sum(len(r.ids) for r in rows)
        return {"prompt_tokens": given, "completion_tokens": made, "total_tokens": given + made}

    def logprobs(entries: list[Any], base: int = 0) -> dict[str, Any] | None:  # OpenAI's object, if asked
        if job.logprobs is None:
            return None
        return (
            chat_logprobs(served.tokenizer, entries)
            if chat
            else completion_logprobs(served.tokenizer, entries, base)
        )

    if body.stream:
        events: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        job.emit = lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev)
        future = state.decoder.submit(job)
        state.decoder.last = job
        future.add_done_callback(lambda _: events.put_nowait(("end",)))
        stream = _stream(
            job,
            future,
            events,
            head,
            chat,
            body.include_usage(),
            usage,
            logprobs,
            echo,
            len(job.prompts) * job.n,
            calls,
        )
        return StreamingResponse(stream, media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)
    future = state.decoder.submit(job)
    state.decoder.last = job
    try:
        while not future.done():  # watch the client and the clock while the batcher decodes
            await asyncio.wait([future], timeout=0.25)
            if not future.done() and await request.is_disconnected():
                job.cancel.set()
                return None
            if time.monotonic() > job.deadline + 1:
                job.cancel.set()
                raise timed_out(settings.timeout)
        rows: list[Row] = future.result()
    finally:
        if not future.done():
            job.cancel.set()
    choices = []
    for i, row in enumerate(rows):
        prefix = echo[i // job.n] if echo else ""
        text, scores = prefix + row.text, logprobs(row.logprobs, len(prefix))
        if scores is not None and job.prompt_logprobs is not None:  # echo: the prompt's tokens first
            scores = echo_logprobs(served.tokenizer, job.prompt_logprobs[i // job.n], scores)
        if chat:
            message, finish = chat_message(
                text, row.finish, calls and calls.reader(), bool(calls and calls.named)
            )
            choices.append({"index": i, "message": message, "logprobs": scores, "finish_reason": finish})
        else:
            choices.append({"index": i, "text": text, "logprobs": scores, "finish_reason": row.finish})
    obj = "chat.completion" if chat else "text_completion"
    return {**head, "object": obj, "choices": choices, "usage": usage(rows)}


async def _stream(
    job: Job,
    future: asyncio.Future,
    events: asyncio.Queue,
    head: dict[str, Any],
    chat: bool,
    include_usage: bool,
    usage: Any,
    logprobs: Any,
    echo: list[str] | None,
    count: int,
    calls: Reading | None = None,
) -> AsyncIterator[str]:
    obj = "chat.completion.chunk" if chat else "text_completion"
    extra = {"usage": None} if include_usage else {}
    # tool calls read from each row's text as it comes (tool_calls.py), and its log-probabilities
    # kept for the next chunk sent when a piece of text made none
    readers = [calls.reader() for _ in range(count)] if calls else None
    waiting: list[list[Any]] = [[] for _ in range(count)]

    def chunk(
        index: int,
        text: str | None,
        finish: str | None = None,
        role: bool = False,
        entries: Any = None,
        prompt: bool = False,
        call: dict[str, Any] | None = None,
    ) -> str:
        # the log-probabilities of this text's tokens; a completion's offsets count the echoed prompt
        base = len(echo[index // job.n]) if echo and not chat and not prompt else 0
        scores = None if entries is None else logprobs(entries, base)
        if chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if text is not None:
                delta["content"] = text
            if call is not None:  # whole, with its place among the row's calls
                delta["tool_calls"] = [call]
            choice = {"index": index, "delta": delta, "logprobs": scores, "finish_reason": finish}
        else:
            choice = {"index": index, "text": text or "", "logprobs": scores, "finish_reason": finish}
        return sse.event({**head, "object": obj, "choices": [choice], **extra})

    try:
        for i in range(count):
            if chat:
                yield chunk(i, None, role=True)
            elif echo and not job.score_prompts:  # else sent once scored, with its log-probabilities
                yield chunk(i, echo[i // job.n])
        while True:
            try:
                event = await asyncio.wait_for(events.get(), max(0.0, job.deadline + 1 - time.monotonic()))
            except TimeoutError:
                job.cancel.set()
                yield sse.event(timed_out(job.timeout).body())
                yield sse.DONE
                return
            if event[0] == "end":
                break
            if event[0] == "prompt":  # scored: the echo with the prompt's logprobs, as vLLM sends it
                for i in range(count):
                    scores = job.prompt_logprobs[i // job.n] if job.prompt_logprobs else None
                    yield chunk(i, echo[i // job.n] if echo else "", entries=scores, prompt=True)
                continue
            if readers is None:
                yield chunk(event[1], event[2], entries=event[3])
                continue
            waiting[event[1]] += event[3] or []
            for text, call in stream_pieces(readers[event[1]], event[2]):
                yield chunk(event[1], text, entries=waiting[event[1]] or None, call=call)
                waiting[event[1]] = []
        try:
            rows: list[Row] = future.result()
        except ApiError as e:
            yield sse.event(e.body())
            yield sse.DONE
            return
        except Exception as e:  # a bug mid-stream: still an error event, not a dropped connection
            yield sse.event(
                ApiError(500, f"generation failed: {type(e).__name__}: {e}", None, "server_error").body()
            )
            yield sse.DONE
            return
        for i, row in enumerate(rows):
            finish = row.finish
            if readers is not None:
                for text, call in stream_pieces(readers[i], None):
                    yield chunk(i, text, entries=waiting[i] or None, call=call)
                    waiting[i] = []
                finish = "tool_calls" if readers[i].calls and not (calls and calls.named) else finish
            yield chunk(i, None, finish, entries=waiting[i] or None)
        if include_usage:
            yield sse.event({**head, "object": obj, "choices": [], "usage": usage(rows)})
        yield sse.DONE
    finally:
        job.cancel.set()  # the client went away (or the stream ended): stop decoding within a token
