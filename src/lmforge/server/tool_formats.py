"""The tool-call formats `lmforge serve --tool-call-parser` reads replies in, by vLLM's names, each
with its reader (one per row of a reply) and the grammar that holds a forced reply (tool_choice
"required" or a named function) to it; and how a chat request's reply is read for calls.

- `hermes`: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks (Qwen2.5, Hermes 2
  Pro / 3, SmolLM3); text around them is content (tool_calls.py, tool_grammar.py).
- `llama3_json`: a reply of `{"name": ..., "parameters": {...}}` objects, `;` between them,
  maybe after `<|python_tag|>` (Llama 3.1 / 3.2 / 3.3 Instruct; tool_parsers/llama3_json.py).
  `llama4_json` is the same format by vLLM's other name for it (Llama 4 writes JSON calls alike).
- `pythonic`: a reply that is a Python list of calls, `[f(a=1), g(b="x")]` (Llama 3.2 1B / 3B,
  Llama 4; tool_parsers/pythonic.py); no grammar: forced calls are a 400."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.inference.chat import ChatSpec
from lmforge.inference.chat_template import template_variables
from lmforge.server.errors import ApiError
from lmforge.server.tool_calls import HermesReader, Reader
from lmforge.server.tool_grammar import call_grammar
from lmforge.server.tool_parsers import llama3_json, pythonic
from lmforge.server.tool_parsers.leading import LeadingReader
from lmforge.server.tools import Tool, ToolChoice, forced


@dataclass(frozen=True)
class ToolFormat:
    name: str
    reader: Callable[[int | None], Reader]  # a new row's reader, given how many calls it returns
    grammar: Callable[[list[Tool], ToolChoice, bool], str] | None  # a forced reply's; None: refused
    key: str  # where a call's JSON holds the arguments (a forced call's schema, for blame_tool)


LLAMA_JSON = ToolFormat(
    "llama3_json",
    partial(LeadingReader, llama3_json.read, llama3_json.could_be),
    llama3_json.grammar,
    llama3_json.KEY,
)
FORMATS = {
    "hermes": ToolFormat("hermes", HermesReader, call_grammar, "arguments"),
    "llama3_json": LLAMA_JSON,
    # vLLM registers one parser under both names: Llama 4 writes its JSON calls as Llama 3.x does
    "llama4_json": replace(LLAMA_JSON, name="llama4_json"),
    "pythonic": ToolFormat("pythonic", partial(LeadingReader, pythonic.read, pythonic.could_be), None, ""),
}
PARSERS = tuple(FORMATS)


@dataclass(frozen=True)
class Reading:
    """How one request's replies are read for calls: the format, and the calls a row returns
    (parallel_tool_calls false: the first alone, as vLLM's; None: all); `named`: tool_choice names
    the function, whose calls end with finish_reason "stop" (or "length"), not "tool_calls", as
    OpenAI's and vLLM's do."""

    format: ToolFormat
    most: int | None
    named: bool = False

    def reader(self) -> Reader:
        return self.format.reader(self.most)


def reads_calls(body: Any, chat: ChatSpec, parser: str | None) -> Reading | None:
    """How the reply to a chat request is read for tool calls, where it is: tools given and a
    tool_choice other than "none". A 400 where the model's template never reads `tools` (they
    would be dropped unsaid), the server reads no tool-call format (--tool-call-parser), as vLLM's,
    or the call is forced in a format no grammar holds a reply to (pythonic)."""
    choice = body.choice()
    if not body.tools or choice == "none":  # "none": rendered (the model may mention them), never read
        return None
    shown = choice if isinstance(choice, str) else "a named function"
    try:
        template = chat.template_for(body.tools)  # tool_use where it has one
    except LmforgeError as e:  # only named templates, none of them tool_use
        raise ApiError(400, str(e), "tools", "unsupported_parameter") from None
    if "tools" not in template_variables(template):  # dropped unsaid
        raise ApiError(400, f"tools: the chat template of model {body.model!r} does not render tools, so the"
                       " model would never see them; serve a model whose template has them, or leave"
                       " tools out", "tools", "unsupported_parameter")  # fmt: skip
    if parser is None:
        raise ApiError(400, f"tool_choice: {shown} needs the server to read tool calls: start it with"
                       " --tool-call-parser FORMAT (the format the model writes them in:"
                       f" {', '.join(PARSERS)})",
                       "tool_choice", "unsupported_parameter")  # fmt: skip
    form = FORMATS[parser]
    if forced(choice) and form.grammar is None:
        raise ApiError(400, f"tool_choice: {shown} is not supported with --tool-call-parser {parser}: no"
                       " grammar holds a reply to that format's calls; use \"auto\"", "tool_choice",
                       "unsupported_parameter")  # fmt: skip
    return Reading(
        form, 1 if body.parallel_tool_calls is False else None, forced(choice) and choice != "required"
    )
