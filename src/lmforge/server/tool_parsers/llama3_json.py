"""Tool calls in Llama 3.1 / 3.2 / 3.3's JSON form, as vLLM's `llama3_json` parser reads them: a
reply that starts (whitespace aside) with `{`, or with `<|python_tag|>` (Llama's tag before code,
written out where the tokenizer does not hide it), is one or more JSON objects
`{"name": ..., "parameters": {...}}` (or "arguments", which wins where both are given), separated
by `;` (Llama 3.2's parallel calls) or whitespace. Each object must be a call: a string `name` and
arguments that are an object (or JSON text of one); one that is not makes the whole reply content,
as in vLLM. What follows the last call (text that is neither `;` nor another object) is dropped
and `content` is null, as vLLM's reader drops it, whole and streamed. Other keys (Llama 3.2's
`"type": "function"`) are ignored. A reply that starts with anything else is content, unchanged.

vLLM's whole-reply reader also takes a call after text ("Sure: {...}", the text dropped), which its
stream sends as content; lmforge reads both as the stream does. The grammar of a forced reply
(tool_choice "required" or named) is here too: the calls as json.dumps writes them, `; `
between them."""

from __future__ import annotations

import json
import re
from typing import Any

from lmforge.server.tool_calls import make_call, object_arguments
from lmforge.server.tool_grammar import call_schema, forced_tools
from lmforge.server.tools import NamedChoice, Tool, ToolChoice

TAG = "<|python_tag|>"
OPENING = re.compile(r'(?:\{\s*(?:".*)?)?', re.DOTALL)  # what a reply's start may be, after the tag
KEY = "parameters"  # Llama's templates ask for "parameters"; a forced reply writes them so
_decoder = json.JSONDecoder()


def _after_tag(text: str) -> str:
    text = text.lstrip()
    return text[len(TAG) :].lstrip() if text.startswith(TAG) else text


def could_be(text: str) -> bool:
    """Whether a reply that starts with `text` may still be calls."""
    stripped = text.lstrip()
    if not stripped.startswith(TAG) and TAG.startswith(stripped):  # nothing yet, or part of the tag
        return True
    return OPENING.fullmatch(_after_tag(text)) is not None


def read(text: str) -> list[dict[str, Any]] | None:
    """The calls of a whole reply, or None where it is not calls (then it is content)."""
    rest = _after_tag(text)
    if not rest.startswith("{"):
        return None
    calls, at = [], 0
    while at < len(rest) and rest[at] == "{":
        try:
            value, at = _decoder.raw_decode(rest, at)
        except (ValueError, RecursionError):  # not JSON (NaN reads, and make_call refuses it)
            return None
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            return None
        given = value["arguments"] if "arguments" in value else value.get(KEY)
        arguments = object_arguments(given)
        call = None if arguments is None else make_call(value["name"], arguments)
        if call is None:
            return None
        calls.append(call)
        gap = re.match(r"\s*;?\s*", rest[at:])  # to the next object, if one follows
        at += gap.end() if gap else 0
    return calls


def grammar(tools: list[Tool], choice: ToolChoice, parallel: bool) -> str:
    """The grammar of a reply that is only calls in this format: of the named function (once), or
    of any of `tools` (one or more, `; ` between them; `parallel` False: one), each spaced as
    json.dumps spaces it, `{"name": ..., "parameters": {...}}` as Llama's templates show them."""
    chosen = forced_tools(tools, choice)
    parallel = parallel and not isinstance(choice, NamedChoice)
    rules = [f"call_{i}: %json {json.dumps(call_schema(t, KEY))}" for i, t in enumerate(chosen)]
    calls = " | ".join(f"call_{i}" for i in range(len(chosen)))
    many = ' ("; " call)*' if parallel else ""
    return "\n".join([f"start: call{many}", f"call: {calls}", *rules])
