"""Tool calling's request side, in OpenAI's shapes: the `tools` a chat request offers, its
`tool_choice`, and the conversation's tool messages (assistant `tool_calls`, `role: "tool"`
results) turned into what chat templates take, as transformers documents them and vLLM passes
them: a call's `arguments` as an object, not OpenAI's JSON string. `call_grammar` is the Lark
grammar (llguidance's, with its `%json` schemas) that holds a reply to Hermes-format calls
(`<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`, read back by tool_calls.py)
for tool_choice "required" or a named function."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictStr, field_validator

from lmforge.inference.chat import ChatSpec
from lmforge.inference.chat_template import template_variables
from lmforge.server.body import Body
from lmforge.server.errors import ApiError

PARSERS = ("hermes",)  # the formats `lmforge serve --tool-call-parser` reads replies in
NAME = r"^[a-zA-Z0-9_-]{1,64}$"  # OpenAI's rule for a function's name
ANY_ARGUMENTS: dict[str, Any] = {"type": "object"}  # a function with no `parameters` takes any object


class Function(Body):
    """OpenAI's function definition; `parameters` is a JSON schema of its arguments."""

    name: Annotated[StrictStr, Field(pattern=NAME)]
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None  # taken; a forced call is always held to `parameters`


class Tool(Body):
    type: Literal["function"]
    function: Function


class FunctionName(Body):
    name: StrictStr


class NamedChoice(Body):
    """tool_choice naming the function to call: {"type": "function", "function": {"name": ...}}."""

    type: Literal["function"]
    function: FunctionName


ToolChoice = Literal["none", "auto", "required"] | NamedChoice


class CallFunction(Body):
    name: StrictStr
    arguments: StrictStr  # JSON text, as OpenAI sends it

    @field_validator("arguments")
    @classmethod
    def _an_object(cls, value: str) -> str:
        """Templates take the arguments as an object: JSON text of anything else cannot render."""
        if not value.strip():  # vLLM reads an empty string as no arguments
            return "{}"
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"not JSON ({e})") from None
        if not isinstance(parsed, dict):
            raise ValueError(f"must be a JSON object, not {type(parsed).__name__}")
        return value


class ToolCall(Body):
    """An earlier assistant turn's call, as the reply gave it."""

    id: StrictStr
    type: Literal["function"]
    function: CallFunction

    def as_dict(self) -> dict[str, Any]:
        """The call as chat templates take it (transformers' shape): arguments as an object."""
        arguments = json.loads(self.function.arguments)
        function = {"name": self.function.name, "arguments": arguments}
        return {"id": self.id, "type": "function", "function": function}


def check_tools(tools: list[Tool] | None, choice: ToolChoice | None) -> None:
    """Tools named once each; a tool_choice that needs tools has them, and names one of them."""
    names = [t.function.name for t in tools or []]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"tools: the function name {twice[0]!r} is given twice")
    if isinstance(choice, NamedChoice) and choice.function.name not in names:
        known = ", ".join(repr(n) for n in names) or "none"
        raise ValueError(
            f"tool_choice: the function {choice.function.name!r} is not in tools (given: {known})"
        )
    if choice == "required" and not names:
        raise ValueError('tool_choice: "required" needs tools to call')


def forced(choice: ToolChoice | None) -> bool:
    """The reply must be tool calls: tool_choice "required" or a named function."""
    return choice == "required" or isinstance(choice, NamedChoice)


def call_grammar(tools: list[Tool], choice: ToolChoice, parallel: bool) -> str:
    """The Lark grammar of a reply that is only Hermes-format calls: of the named function (once),
    or of any of `tools` (one or more; `parallel` False: one). Each call's JSON is held by
    llguidance's `%json` to {"name": that name, "arguments": valid under its parameters}, in that
    order and spaced as json.dumps spaces it, as Hermes-format templates show the model."""
    if isinstance(choice, NamedChoice):
        tools, parallel = [t for t in tools if t.function.name == choice.function.name], False
    rules = [f"call_{i}: %json {json.dumps(_call_schema(t.function))}" for i, t in enumerate(tools)]
    calls = " | ".join(f"call_{i}" for i in range(len(tools)))
    many = ' ("\\n" call)*' if parallel else ""
    return "\n".join([f"start: call{many}", f'call: "<tool_call>\\n" ({calls}) "\\n</tool_call>"', *rules])


def _call_schema(function: Function) -> dict[str, Any]:
    arguments = function.parameters if function.parameters is not None else ANY_ARGUMENTS
    return {
        # written as json.dumps writes it, as the templates show the model its calls: free
        # whitespace let a model pad a call past max_tokens
        "x-guidance": {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "},
        "type": "object",
        "properties": {"name": {"const": function.name}, "arguments": arguments},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def reads_calls(body: Any, chat: ChatSpec, parser: str | None) -> bool:
    """Whether the reply to a chat request is read for tool calls: tools given and a tool_choice
    other than "none". A 400 where the model's template never reads `tools` (they would be
    dropped unsaid) or the server reads no tool-call format (--tool-call-parser), as vLLM's."""
    choice = body.choice()
    if not body.tools or choice == "none":  # "none": rendered (the model may mention them), never read
        return False
    shown = choice if isinstance(choice, str) else "a named function"
    if chat.template is None or "tools" not in template_variables(chat.template):  # dropped unsaid
        raise ApiError(400, f"tools: the chat template of model {body.model!r} does not render tools, so the"
                       " model would never see them; serve a model whose template has them, or leave"
                       " tools out", "tools", "unsupported_parameter")  # fmt: skip
    if parser is None:
        raise ApiError(400, f"tool_choice: {shown} needs the server to read tool calls: start it with"
                       " --tool-call-parser hermes (the format the model writes them in)", "tool_choice",
                       "unsupported_parameter")  # fmt: skip
    return True
