"""Tool calling's request side, in OpenAI's shapes: the `tools` a chat request offers, its
`tool_choice`, and the conversation's tool messages (assistant `tool_calls`, `role: "tool"`
results) turned into what chat templates take, as transformers documents them and vLLM passes
them: a call's `arguments` as an object, not OpenAI's JSON string. (tool_formats.py reads the
reply for calls; tool_grammar.py holds a forced reply to them.)"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictStr, field_validator, model_validator

from lmforge.errors import LmforgeError
from lmforge.server.body import Body
from lmforge.tokenization.tokenizer import check_text

NAME = r"^[a-zA-Z0-9_-]{1,64}$"  # OpenAI's rule for a function's name


class Function(Body):
    """OpenAI's function definition; `parameters` is a JSON schema of its arguments."""

    name: Annotated[StrictStr, Field(pattern=NAME)]
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None  # taken; a forced call is always held to `parameters`

    @field_validator("parameters")
    @classmethod
    def _of_an_object(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        """A call's arguments are an object: `{}` (as MCP tools send it) or no `type` is any
        object; a `type` that allows no object would make every call unreadable."""
        kind = (value or {}).get("type", "object")
        if kind != "object" and not (isinstance(kind, list) and "object" in kind):
            raise ValueError(
                f"a function's arguments are a JSON object, so its type is 'object', not {kind!r}"
            )
        return value


class Tool(Body):
    type: Literal["function"]
    function: Function

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode_inside(cls, data: Any) -> Any:
        """The tool as given goes to the chat template whole (extra keys too), so text anywhere in
        it must be valid Unicode, not only the fields Body checks."""
        _check_unicode(data, "")
        return data


def _check_unicode(value: Any, where: str) -> None:
    """A ValueError naming the place (function.parameters...) of a key or string that is not valid Unicode."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        place = f"{where}.{key}" if where else str(key)
        for text, at in ((key, where or "a key"), (item, place)):  # never the bad text in the message
            if isinstance(text, str):
                try:
                    check_text(text)
                except LmforgeError as e:
                    raise ValueError(f"{at}: {e}") from None
        _check_unicode(item, place)


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
