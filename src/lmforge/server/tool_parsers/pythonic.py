"""Tool calls as a Python list of calls, as vLLM's `pythonic` parser reads them (Llama 3.2 1B / 3B,
Llama 4, ToolACE): a reply that is `[get_weather(city="Paris", days=3), get_time(zone="UTC")]`
and nothing else (whitespace and a comment aside) is those calls, each keyword argument a Python
literal: a string, number, True / False / None, or a list or dict of them (dict keys literals
too), written as JSON (`None` as null; a tuple or a name is no literal). Anything else is content,
unchanged: text before or after the list, a list that is no Python (an argument given twice), an
element that is not a plain `name(...)` call, a value that is no literal. Where lmforge reads
differently from vLLM: a negative number (`-1`, which Python parses as an operation) is a literal
here, and a positional argument makes the reply content (vLLM drops the argument and returns the
call).

No grammar holds a reply to this form: tool_choice "required" or a named function is a 400 with
--tool-call-parser pythonic (tool_formats.py)."""

from __future__ import annotations

import ast
import re
from typing import Any

from lmforge.server.tool_calls import make_call

# what a reply's start may be (whitespace aside): "[", a name, "(" and on; comments or an
# expression before the first call's name are no calls (read checks the same start)
OPENING = re.compile(r"(?:\[\s*(?:[A-Za-z_]\w*\s*(?:\(.*)?)?)?", re.DOTALL)
START = re.compile(r"\[\s*[A-Za-z_]\w*\s*\(")
SCALARS = (str, int, float, bool, type(None))


class _NotLiteral(Exception):
    pass


def could_be(text: str) -> bool:
    """Whether a reply that starts with `text` may still be calls."""
    return OPENING.fullmatch(text.lstrip()) is not None


def _value(node: ast.expr) -> Any:
    """A literal's value (str, number, True / False / None, list, dict of them)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, SCALARS):
        return node.value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub | ast.UAdd)
        and isinstance(node.operand, ast.Constant)
        and isinstance(node.operand.value, int | float)
        and not isinstance(node.operand.value, bool)
    ):
        return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    if isinstance(node, ast.List):
        return [_value(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):  # {**other}
            raise _NotLiteral
        return {_value(k): _value(v) for k, v in zip(node.keys, node.values, strict=True)}  # type: ignore[arg-type]
    raise _NotLiteral


def read(text: str) -> list[dict[str, Any]] | None:
    """The calls of a whole reply, or None where it is not calls (then it is content)."""
    source = text.strip()
    if not START.match(source):
        return None
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if not isinstance(tree.body, ast.List) or not tree.body.elts:
        return None
    calls = []
    for element in tree.body.elts:
        if not isinstance(element, ast.Call) or not isinstance(element.func, ast.Name) or element.args:
            return None
        arguments: dict[str, Any] = {}
        for keyword in element.keywords:
            if keyword.arg is None or keyword.arg in arguments:  # **kwargs; a = twice (no Python)
                return None
            try:
                arguments[keyword.arg] = _value(keyword.value)
            except (_NotLiteral, TypeError, RecursionError):  # TypeError: a list or dict as a dict key
                return None
        call = make_call(element.func.id, arguments)
        if call is None:
            return None
        calls.append(call)
    return calls
