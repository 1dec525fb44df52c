"""vLLM's truncate_prompt_tokens, read once for every route that takes it: k (1 to the model's
context) or -1 (the context) keeps k tokens of each prompt; 0, or more than the context, is a 400
naming the field. Which end is kept is vLLM's: a completion's or a chat's prompt keeps its LAST k
tokens (left truncation, as vLLM's generate runner cuts, so a long conversation keeps its newest
turns); an embedding's text keeps its first (embedding_route.py: vLLM's pooling runner cuts on the
right since vLLM PR #12050, as sentence-transformers does)."""

from __future__ import annotations

from lmforge.server.errors import ApiError
from lmforge.tokenization.tokenizer import Tokenizer

FIELD = "truncate_prompt_tokens"


def kept_tokens(keep: int | None, context: int) -> int | None:
    """How many tokens truncate_prompt_tokens keeps (None: the request has none), -1 read as the
    context; a 400 naming the field for 0 or more than the context."""
    if keep is None:
        return None
    if keep == 0 or keep > context:
        raise ApiError(
            400,
            f"{FIELD}={keep}: must be between 1 and the model's context of {context} (or -1: the context)",
            FIELD,
            "invalid_value",
        )
    return context if keep == -1 else keep


def keep_last(
    tokenizer: Tokenizer, prompts: list[list[int]], texts: list[str], keep: int | None, context: int
) -> tuple[list[list[int]], list[str]]:
    """(prompts, texts) with each prompt cut to its last `keep` tokens, as vLLM cuts a completion's;
    a prompt cut short echoes the text of the tokens it kept, as vLLM's echo does."""
    k = kept_tokens(keep, context)
    if k is None:
        return prompts, texts
    cut = [p[-k:] for p in prompts]
    echoed = [t if len(p) <= k else tokenizer.decode(c) for p, c, t in zip(prompts, cut, texts, strict=True)]
    return cut, echoed
