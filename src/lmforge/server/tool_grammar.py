"""The Lark grammar (llguidance's, with its `%json` schemas) that holds a reply to Hermes-format
calls (`<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`, read back by
tool_calls.py) for tool_choice "required" or a named function. Each call's JSON is held to a
schema of its own, {"name": that name, "arguments": the function's `parameters`}: the parameters
sit one level down in it, so their `$defs` / `definitions` are lifted to its root and their other
local `$ref`s ("#", "#/properties/...") rebased onto `arguments`, where they still resolve."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.server.errors import ApiError
from lmforge.server.tools import NamedChoice, Tool, ToolChoice

DEFS = ("$defs", "definitions")  # where JSON schemas keep the subschemas their `$ref`s name
VALUES = ("const", "enum", "default", "examples")  # JSON values, not schemas: never rebased
NAMED = ("properties", "patternProperties", "dependentSchemas", *DEFS)  # {name: schema}: keys are names
# after a call, one or two newlines (templates separate calls with one; SmolLM2 writes two after
# its call): the model's own newlines after </tool_call> may end the reply, or lead to another call
NEWLINE = r"/\n{1,2}/"


def forced_tools(tools: list[Tool], choice: ToolChoice) -> list[Tool]:
    """The tools a forced reply may call: the named function, or all of them."""
    if isinstance(choice, NamedChoice):
        return [t for t in tools if t.function.name == choice.function.name]
    return tools


def call_grammar(tools: list[Tool], choice: ToolChoice, parallel: bool) -> str:
    """The grammar of a reply that is only Hermes-format calls: of the named function (once), or of
    any of `tools` (one or more; `parallel` False: one), each spaced as json.dumps spaces it, as
    Hermes-format templates show the model; one or two newlines may follow each call, and then
    either the end of the reply or (`parallel`) another call, as the model chooses."""
    chosen = forced_tools(tools, choice)
    parallel = parallel and not isinstance(choice, NamedChoice)
    rules = [f"call_{i}: %json {json.dumps(call_schema(t))}" for i, t in enumerate(chosen)]
    calls = " | ".join(f"call_{i}" for i in range(len(chosen)))
    many = f" ({NEWLINE} call)*" if parallel else ""
    return "\n".join([f"start: call{many} {NEWLINE}?",
                      f'call: "<tool_call>\\n" ({calls}) "\\n</tool_call>"', *rules])  # fmt: skip


def call_schema(tool: Tool, key: str = "arguments") -> dict[str, Any]:
    """The JSON schema of one call of `tool`: {"name": its name, `key` ("arguments"; Llama's
    "parameters"): an object valid under its parameters (any object without them, or for `{}`)}."""
    arguments = _rebased(tool.function.parameters or {}, f"#/properties/{key}")
    lifted = {k: arguments.pop(k) for k in DEFS if k in arguments}
    arguments["type"] = "object"  # tools.py let only parameters that allow an object through
    return {
        # written as json.dumps writes it, as the templates show the model its calls: free
        # whitespace let a model pad a call past max_tokens
        "x-guidance": {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "},
        "type": "object",
        "properties": {"name": {"const": tool.function.name}, key: arguments},
        "required": ["name", key],
        "additionalProperties": False,
        **lifted,
    }


def _rebased(schema: Any, base: str) -> Any:
    """`schema` with its local `$ref`s pointing where the call's schema holds their targets: into
    the lifted definitions unchanged, anything else ("#" the parameters themselves) under
    `base` (where the call's schema holds them). Other refs (URLs) are left for llguidance to
    follow or refuse."""
    if isinstance(schema, list):
        return [_rebased(s, base) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "$ref" and isinstance(value, str) and (value == "#" or value.startswith("#/")):
            inside_defs = any(value.startswith(f"#/{d}/") for d in DEFS)
            out[key] = value if inside_defs else base + value[1:]
        elif key in NAMED and isinstance(value, dict):  # a property may be named "$ref" or "const"
            out[key] = {name: _rebased(s, base) for name, s in value.items()}
        else:
            out[key] = value if key in VALUES else _rebased(value, base)
    return out


def blame_tool(
    tools: list[Tool],
    choice: ToolChoice,
    compile_one: Callable[[dict[str, Any]], Any],
    key: str = "arguments",
) -> None:
    """Where a forced reply's grammar did not compile: a 400 naming the first tool whose call schema
    llguidance refuses alone (`compile_one` compiles a JSON schema), with llguidance's reason; none
    refused, it returns (the caller reports the grammar's own error)."""
    names = {t.function.name for t in forced_tools(tools, choice)}
    for i, tool in enumerate(tools):
        if tool.function.name not in names:
            continue
        try:
            compile_one(call_schema(tool, key))
        except LmforgeError as e:
            field = f"tools.{i}.function.parameters"
            reason = str(e).removeprefix("llguidance cannot follow this JSON schema: ")
            raise ApiError(400, f"{field}: llguidance cannot follow this schema: {reason}", field,
                           "invalid_value") from None  # fmt: skip
