"""A completion request made a Job for the batcher: its limits checked against the server's and
the served model's (max tokens, context, logit_bias's ids), its end-of-text ids chosen (a chat
turn's, or the model's EOS), its options turned into the decoding objects of inference/ (its
response_format into a grammar llguidance compiled)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from lmforge.errors import LmforgeError
from lmforge.formats.chat_files import stop_ids
from lmforge.inference.bans import Bans
from lmforge.inference.grammar import Grammar, NoGrammarLibrary, compile_grammar
from lmforge.inference.logit_bias import LogitBias
from lmforge.inference.penalties import Penalties
from lmforge.server.decoding import Job
from lmforge.server.errors import ApiError
from lmforge.server.models import ServedModel
from lmforge.server.schemas import _Sampling
from lmforge.server.structured import constraint
from lmforge.server.tool_formats import Reading
from lmforge.server.tool_grammar import blame_tool
from lmforge.server.tools import forced


def new_job(
    served: ServedModel,
    body: _Sampling,
    prompts: list[list[int]],
    limit: int,
    chat: bool,
    echo: list[str] | None,
    max_tokens_limit: int,
    timeout: float,
    calls: Reading | None = None,
) -> Job:
    """The Job of a request for `limit` new tokens a row (a 400 past `max_tokens_limit`, for a
    prompt longer than the model's context or a logit_bias id outside its vocabulary); `echo`:
    the prompts' texts where the reply echoes them; `timeout`: the server's --timeout; `calls`: how
    a chat reply is read for tool calls (its format holds a forced reply)."""
    if limit > max_tokens_limit:
        key = body.limit_key() if chat else "max_tokens"
        raise ApiError(
            400,
            f"{key}={limit} is above this server's limit of {max_tokens_limit} (--max-tokens-limit)",
            key,
            "invalid_value",
        )
    for p in prompts:
        if len(p) > served.context:
            raise ApiError(
                400,
                f"the prompt is {len(p)} tokens, longer than the model's context of {served.context}",
                "messages" if chat else "prompt",
                "context_length_exceeded",
            )
    limits = _room(served.context, body, prompts, limit, chat)  # one per prompt: each its own room
    if body.min_tokens > min(limits):  # vLLM's SamplingParams check, on the max_tokens it runs under
        raise ApiError(
            400,
            f"min_tokens={body.min_tokens} is more than max_tokens={min(limits)}, what this request runs"
            " under (an absent max_tokens is 16; a null one fills each prompt's room in the context)",
            "min_tokens",
            "invalid_value",
        )
    if chat and served.chat is not None:  # a chat turn ends at any end-of-turn id
        eos = frozenset(served.chat.stops)
    else:  # plain continuation stops at the model's EOS ids (generation_config.json's), as generate does
        eos = frozenset(stop_ids(served.directory, served.tokenizer.eos_id))
    stop_tokens = _stop_tokens(body, served.net.config.vocab_size)
    # vLLM's ignore_eos: an EOS is a token as any other (its text, a special token's, is none);
    # stop_token_ids end a row as EOS does. min_tokens bans them all, as vLLM's _all_stop_token_ids
    ends = (frozenset() if body.ignore_eos else eos) | stop_tokens
    return Job(
        served.net,
        served.tokenizer,
        prompts,
        body.n,
        max(limits),
        float(body.temperature),
        float(body.top_p),
        body.seed,
        ends,
        body.stops(),
        time.monotonic() + timeout,
        body.wanted_logprobs(),
        top_k=max(body.top_k, 0),
        penalties=Penalties(
            float(body.repetition_penalty), float(body.frequency_penalty), float(body.presence_penalty)
        ),
        min_p=float(body.min_p),
        bans=Bans(body.no_repeat_ngram_size, body.min_tokens, eos | stop_tokens),
        bias=_bias(body, served.net.config.vocab_size),
        grammar=_grammar(body, served, eos, calls),
        score_prompts=echo is not None and body.wanted_logprobs() is not None,
        texts=echo,
        eos_logprob=not chat,  # as OpenAI's legacy completions (and vLLM) list the EOS a text stops at
        step=served.step,
        step_rows=served.step_rows,
        timeout=timeout,
        context=served.context,
        limits=limits,
        stop_tokens=stop_tokens,
        keep_stop=body.include_stop_str_in_output,
        continues=not chat,  # a chat reply is decoded alone, its first space dropped (docs/serving.md)
    )


def _room(context: int, body: _Sampling, prompts: list[list[int]], limit: int, chat: bool) -> list[int]:
    """The tokens each prompt's rows may generate: vLLM's and OpenAI's rule that a prompt of P tokens
    and the max_tokens K the request runs under fit the context N (P + K <= N), else a 400 before
    anything is decoded (until 2026-12-07 the reply ran to the context and ended with "length"). K
    counts a completion's default 16 (vLLM's CompletionRequest default); a chat that names none fills
    the context, N - P (vLLM's get_max_tokens), so its prompt must leave room for one token; so does
    a completion whose max_tokens is an explicit null (vLLM's too: only an absent one means 16), each
    prompt of a batch filling its own room (until 2026-12-07 the longest prompt's room was every
    prompt's, and a shorter one ended early with "length")."""
    named = body.limit() if chat else body.max_tokens  # type: ignore[attr-defined]
    given = "messages" if chat else "prompt"
    if named is None and (chat or "max_tokens" in body.model_fields_set):
        for i, p in enumerate(prompts):
            if context - len(p) < 1 and limit > 0:
                where = f"your {given}" if len(prompts) == 1 else f"prompt item {i}"
                raise ApiError(
                    400,
                    f"This model's maximum context length is {context} tokens. However, {where}"
                    f" resulted in {len(p)} tokens, which leaves no room for a reply."
                    f" Please reduce the length of the {given}.",
                    given,
                    "context_length_exceeded",
                )
        return [min(limit, context - len(p)) for p in prompts]
    key = body.limit_key() if chat else "max_tokens"  # type: ignore[attr-defined]
    for i, p in enumerate(prompts):
        if len(p) + limit > context:
            where = f"the {given}" if len(prompts) == 1 else f"prompt item {i}"
            asked = f"{key}={limit}" if named is not None else f"the default {key} of {limit}"
            raise ApiError(
                400,
                f"This model's maximum context length is {context} tokens. However, you requested"
                f" {len(p) + limit} tokens ({len(p)} in {where}, {limit} in the completion: {asked})."
                f" Please reduce the length of the {given} or the completion ({key} at most"
                f" {context - len(p)}).",
                key,
                "context_length_exceeded",
            )
    return [limit] * len(prompts)


def _stop_tokens(body: _Sampling, vocab: int) -> frozenset[int]:
    """stop_token_ids as a set; an id the model has no logit for could never end a row: a 400."""
    given = frozenset(body.stop_token_ids or ())
    _in_vocabulary(given, vocab, "stop_token_ids")
    return given


def _bias(body: _Sampling, vocab: int) -> LogitBias:
    """logit_bias's {"id": bias} as a LogitBias; an id the model has no logit for is a 400, as in
    vLLM (its keys are checked to be token ids by schemas.py)."""
    given = {int(k): float(v) for k, v in (body.logit_bias or {}).items()}
    _in_vocabulary(given, vocab, "logit_bias")
    return LogitBias(tuple(given), tuple(given.values()))


def _in_vocabulary(ids: Iterable[int], vocab: int, field: str) -> None:
    """A 400 naming `field` for ids the model has no logit for."""
    outside = sorted(i for i in ids if i >= vocab)
    if outside:
        raise ApiError(
            400,
            f"{field}: token id(s) {outside[:5]} are outside the model's vocabulary of {vocab} tokens",
            field,
            "invalid_value",
        )


def _grammar(
    body: _Sampling, served: ServedModel, eos: frozenset[int], calls: Reading | None = None
) -> Grammar | None:
    """The grammar of the form the request holds its replies to (response_format, or vLLM's
    structured_outputs / guided_*; None: free text), compiled by llguidance for the model's
    tokenizer, ending at the request's end-of-text ids; one llguidance refuses is a 400 with its
    reason, as vLLM's; without llguidance installed, a 400 saying how to install it. tool_choice
    "required" or a named function: the reply is calls in the format `calls` reads (tool_formats.py;
    reads_calls refused a forced call in a format without a grammar)."""
    form = constraint(body)
    choice = getattr(body, "tool_choice", None)  # chat's alone
    if form is None and forced(choice) and calls is not None and calls.format.grammar is not None:
        lark = calls.format.grammar(body.tools or [], choice, body.parallel_tool_calls is not False)  # type: ignore[attr-defined]
        form = ("grammar", lark, "tool_choice")
    if form is None:
        return None
    kind, spec, field = form
    try:
        return compile_grammar(kind, spec, served.tokenizer, eos, served.net.config.vocab_size)
    except NoGrammarLibrary as e:
        raise ApiError(400, f"{field}: {e}", field, "unsupported_parameter") from None
    except LmforgeError as e:
        if field == "tool_choice":  # name the tool llguidance refuses, not the grammar of them all
            tokenizer, vocab = served.tokenizer, served.net.config.vocab_size
            key = calls.format.key if calls is not None else "arguments"
            blame_tool(body.tools, choice, lambda s: compile_grammar("json", s, tokenizer, eos, vocab), key)  # type: ignore[attr-defined]
        raise ApiError(400, f"{field}: {e}", field, "invalid_value") from None
