"""Which tokens of a rendered conversation the assistant wrote: the targets of instruction tuning.

A conversation is rendered with the model's own chat template (inference/chat_template.py) and
tokenized as transformers' `apply_chat_template(tokenize=True)` tokenizes it (the whole string, no
added special tokens). The assistant's text is found in one of two ways:

- the template marks it with `{% generation %}` blocks: their character spans, exactly what
  transformers' `return_assistant_tokens_mask=True` uses;
- otherwise, for each assistant message i, the conversation before it rendered with
  `add_generation_prompt=True` ends where the message starts, and the conversation up to it ends
  where it ends. The span keeps the template's end-of-turn marker (SmolLM2's `<|im_end|>`), so
  the model learns to stop, but not the whitespace the template puts after it.

Characters map to tokens by the tokenizer's offsets: a token is the assistant's when any of its
characters lies in a span (transformers' rule: from the token holding a span's first character to
the one holding its last, so a token that merges the prompt's last space with the reply's first
word is a target).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.inference.chat_template import Message, check_messages, check_tools, render, render_with_spans
from lmforge.tokenization.tokenizer import Tokenizer


def assistant_spans(
    template: str,
    messages: Sequence[Message],
    variables: Mapping[str, Any],
    where: str = "messages",
    tools: list[Any] | None = None,
) -> tuple[str, list[tuple[int, int]]]:
    """(the whole conversation rendered, the character spans of the assistant's turns). tools: the
    conversation's, rendered by the template; tools and documents are passed even when None, as
    transformers passes them (a template testing `tools is not none` lists none then)."""
    checked = check_messages(messages, where)
    check_tools(tools, f"{where}: tools")
    variables = {"tools": tools, "documents": None, **variables}
    try:  # the template's own error (raise_exception: "roles must alternate") names the line
        return _spans(template, checked, variables, where)
    except LmforgeError as e:
        if str(e).startswith(where):
            raise
        raise LmforgeError(f"{where}: {e}") from None


def _spans(
    template: str, checked: list[dict[str, Any]], variables: Mapping[str, Any], where: str
) -> tuple[str, list[tuple[int, int]]]:
    text, spans = render_with_spans(template, checked, False, **variables)
    if spans:
        return text, spans
    for i, message in enumerate(checked):
        if message["role"] != "assistant":
            continue
        if i == 0:
            raise LmforgeError(f"{where}[0]: starts with an assistant message; nothing prompts it")
        before = render(template, checked[:i], add_generation_prompt=True, **variables)
        upto = render(template, checked[: i + 1], **variables)
        if not upto.startswith(before) or not text.startswith(upto):
            raise LmforgeError(
                f"{where}[{i}]: the chat template renders the conversation before this assistant"
                " message differently from the whole one, so its tokens cannot be found (a template"
                " with {% generation %} blocks marks them)"
            )
        end = len(upto.rstrip())
        if end > len(before):
            spans.append((len(before), end))
    return text, spans


def token_mask(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[bool]:
    """For each token (its character offsets), whether any of its characters lies in a span."""
    return [any(start < e and s < max(end, start + 1) for s, e in spans) for start, end in offsets]


def encode_chat(
    tokenizer: Tokenizer,
    template: str,
    messages: Sequence[Message],
    variables: Mapping[str, Any],
    where: str = "messages",
    tools: list[Any] | None = None,
) -> tuple[list[int], list[bool]]:
    """(token ids of the rendered conversation, True where the assistant wrote the token), as
    transformers' apply_chat_template(messages, tools=tools, return_assistant_tokens_mask=True)."""
    text, spans = assistant_spans(template, messages, variables, where, tools)
    encoding = tokenizer.hf.encode(text, add_special_tokens=False)
    tokenizer.check_rows(encoding.ids)
    return list(encoding.ids), token_mask(encoding.offsets, spans)
