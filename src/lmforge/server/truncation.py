"""vLLM's truncate_prompt_tokens, read once for every route that takes it: k (1 to the model's
context) keeps k tokens of each prompt; 0, or more than the context, is a 400 naming the field.
-1 keeps vLLM's max_model_len - max_tokens: the context less the tokens the reply may generate
(vllm/renderers/params.py, TokenizeParams.max_input_tokens, whose max_output_tokens is the request's
max_tokens), so the cut prompt leaves the reply its room; until 2026-12-07 it kept the whole context
and the reply stopped at its first token. The room is the max_tokens the request runs under: its
own, else the route's default (16 for completions, --max-tokens-limit for a chat, where vLLM counts
none and then has no room left); an embedding generates nothing and keeps the context. Which end is
kept is vLLM's: a completion's or a chat's prompt keeps its LAST k tokens (left truncation, as vLLM's
generate runner cuts, so a long conversation keeps its newest turns); an embedding's text keeps its
first (embedding_route.py: vLLM's pooling runner cuts on the right since vLLM PR #12050, as
sentence-transformers does)."""

from __future__ import annotations

from lmforge.server.errors import ApiError
from lmforge.tokenization.tokenizer import Tokenizer

FIELD = "truncate_prompt_tokens"

Room = tuple[int, str]
"""The tokens a reply may generate and the field that says so ("max_tokens"): -1 leaves them room."""
COMPLETION_DEFAULT_TOKENS = 16  # OpenAI's default max_tokens for /v1/completions, where it is absent


def reply_limit(
    named: int | None, key: str, fills: bool, cut: int | None, tokens_limit: int
) -> tuple[int, Room]:
    """(the max_tokens a request runs under, the Room truncate_prompt_tokens leaves it): `named`, its
    own; else, where it `fills` the room its prompt leaves (a chat without max_tokens, any explicit
    null: vLLM's get_max_tokens), --max-tokens-limit, which a k is checked against only at -1 (vLLM
    counts none); else a completion's default 16."""
    if named is not None:
        return named, (named, key)
    if fills:
        return tokens_limit, (tokens_limit, f"--max-tokens-limit: no {key}") if cut == -1 else (0, "")
    return COMPLETION_DEFAULT_TOKENS, (COMPLETION_DEFAULT_TOKENS, f"the default {key}")


def kept_tokens(keep: int | None, context: int, room: Room = (0, "")) -> int | None:
    """How many tokens truncate_prompt_tokens keeps (None: the request has none); -1 is the context
    less the reply's `room`. A 400 naming the field for 0, for more than the context, for a k that
    leaves the reply less than its room (vLLM's rule: such a prompt ended the reply at its first
    token until 2026-12-07), and for -1 where the reply's tokens fill the context (vLLM refuses a
    max_tokens over max_model_len)."""
    if keep is None:
        return None
    if keep == 0 or keep > context:
        raise ApiError(
            400,
            f"{FIELD}={keep}: must be between 1 and the model's context of {context}, or -1",
            FIELD,
            "invalid_value",
        )
    reserve, key = room
    if keep != -1:
        if keep > context - reserve:  # vLLM's TokenizeParams: k <= max_model_len - max_output_tokens
            raise ApiError(
                400,
                f"{FIELD}={keep} leaves the reply fewer than the {reserve} tokens it may generate ({key})"
                f" in the model's context of {context}: keep at most {context - reserve} (or -1)",
                FIELD,
                "invalid_value",
            )
        return keep
    if reserve >= context:
        raise ApiError(
            400,
            f"{FIELD}=-1 keeps the model's context of {context} less the {reserve} tokens the reply may"
            f" generate ({key}), which leaves no prompt: ask for fewer tokens (max_tokens)",
            FIELD,
            "invalid_value",
        )
    return context - reserve


def keep_last(
    tokenizer: Tokenizer,
    prompts: list[list[int]],
    texts: list[str],
    keep: int | None,
    context: int,
    room: Room = (0, ""),
) -> tuple[list[list[int]], list[str]]:
    """(prompts, texts) with each prompt cut to its last `keep` tokens, as vLLM cuts a completion's
    (-1: the context less the reply's `room`); a prompt cut short echoes the text of the tokens it
    kept, as vLLM's echo does."""
    k = kept_tokens(keep, context, room)
    if k is None:
        return prompts, texts
    cut = [p[-k:] for p in prompts]
    echoed = [t if len(p) <= k else tokenizer.decode(c) for p, c, t in zip(prompts, cut, texts, strict=True)]
    return cut, echoed
