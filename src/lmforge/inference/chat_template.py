"""Chat templates: a message list -> the prompt string, rendered as transformers'
`apply_chat_template` renders it (same jinja2 sandbox, options, filters and globals), so a model's
own template from its tokenizer_config.json, chat_template.jinja or GGUF metadata gives the same
string here as there.

Templates come from downloaded files, so they are untrusted code: they run in jinja2's immutable
sandbox, and `dict()` / `namespace()` refuse underscore attributes as transformers' do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
import jinja2.meta
import jinja2.nodes
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

from lmforge.errors import LmforgeError

ROLES = ("system", "user", "assistant", "tool")
# what a template's own operations on its values raise (`dict + str`, `1 / 0`, a recursive macro,
# `dict(1)`): the template's error, not lmforge's; other types (AttributeError, NameError,
# AssertionError...) stay bugs with their traceback, as a template's attribute lookups and names
# are jinja's (undefined, never an exception)
TEMPLATE_FAULTS = (TypeError, ValueError, ArithmeticError, LookupError, RecursionError)
Message = Mapping[str, Any]

# (rendered blocks so far, [(start, end) character spans of {% generation %} blocks])
_TRACKING: ContextVar[tuple[list[str], list[tuple[int, int]]] | None] = ContextVar("_TRACKING", default=None)


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}`: marks assistant text (transformers'
    return_assistant_tokens_mask); renders its body unchanged and records its character span."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_track"), [], [], body).set_lineno(lineno)

    def _track(self, caller: Any) -> str:
        text = caller()
        tracking = _TRACKING.get()
        if tracking is not None:
            start = len("".join(tracking[0]))
            tracking[1].append((start, start + len(text)))
        return text


class _Dict:
    """`dict(...)` in templates, without attribute access to the real type."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return dict.fromkeys(*args, **kwargs)


class _Namespace(jinja2.utils.Namespace):
    """`namespace(...)` refusing underscore names (no reach into CPython internals)."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 (jinja's own signature trick)
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"chat templates cannot set {name!r} on a namespace")


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
            sort_keys: bool = False) -> str:  # fmt: skip
    # jinja's own tojson escapes HTML characters; templates expect plain JSON
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=16)
def compile_template(source: str) -> jinja2.Template:
    """The template compiled in transformers' environment, or a one-line error."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals.update(
        raise_exception=_raise_exception,
        strftime_now=lambda fmt: datetime.now().strftime(fmt),
        dict=_Dict(),
        namespace=_Namespace,
    )
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise LmforgeError(f"chat template, line {e.lineno}: {e.message}") from None
    except TEMPLATE_FAULTS as e:  # jinja folds constants: `{{ (2 ** 99999) | string }}` fails here
        raise LmforgeError(f"chat template: {type(e).__name__}: {' '.join(str(e).split())}") from None


@lru_cache(maxsize=16)
def template_variables(source: str) -> frozenset[str]:
    """The variables a template reads from its caller (messages, tools, add_generation_prompt...)."""
    env = compile_template(source).environment
    return frozenset(jinja2.meta.find_undeclared_variables(env.parse(source)))


def tool_call_without_content(m: Mapping[str, Any]) -> bool:
    """An assistant message holding tool calls and `"content": null` (or none), as the OpenAI API
    returns one: transformers 5 renders it without its `content` key."""
    return m.get("role") == "assistant" and m.get("content") is None and bool(m.get("tool_calls"))


def check_messages(messages: Any, where: str = "messages") -> list[dict[str, Any]]:
    """A list of {"role", "content"} dicts with known roles, or a one-line error naming the item.
    Keys whose value is None are dropped, as transformers 5's apply_chat_template drops them
    (`_normalize_chat_messages`): templates test for a missing key, and would print "None"."""
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise LmforgeError(f"{where}: a non-empty list of {{'role': ..., 'content': ...}} messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise LmforgeError(f"{where}[{i}]: a message is a dict with 'role' and 'content', not {m!r}")
        role = m.get("role")
        if role not in ROLES:
            raise LmforgeError(f"{where}[{i}]: unknown role {role!r} (known: {', '.join(ROLES)})")
        if not isinstance(m.get("content"), str) and not tool_call_without_content(m):
            raise LmforgeError(
                f"{where}[{i}]: 'content' must be a string (null only beside an assistant's 'tool_calls')"
            )
        out.append({k: v for k, v in m.items() if v is not None})
    return out


def check_tools(tools: Any, where: str = "tools") -> None:
    """None, or a list of tool dicts (OpenAI-style function schemas), else a one-line error naming
    `tools`: a Python function is refused with how to make its schema (transformers converts it;
    lmforge does not run transformers' docstring parser)."""
    if tools is None:
        return
    if not isinstance(tools, Sequence) or isinstance(tools, str | bytes):
        raise LmforgeError(
            f"{where}: a list of tool dicts ({{'type': 'function', 'function': ...}}), not {tools!r}"
        )
    for i, tool in enumerate(tools):
        if callable(tool):
            name = getattr(tool, "__name__", type(tool).__name__)
            raise LmforgeError(
                f"{where}[{i}]: the Python function {name!r}; give its JSON schema instead"
                f" (transformers.utils.get_json_schema({name}) writes it)"
            )
        if not isinstance(tool, Mapping):
            raise LmforgeError(
                f"{where}[{i}]: a tool dict ({{'type': 'function', 'function': ...}}), not {tool!r}"
            )


@contextmanager
def _tracking(blocks: list[str], spans: list[tuple[int, int]]) -> Iterator[None]:
    token = _TRACKING.set((blocks, spans))
    try:
        yield
    finally:
        _TRACKING.reset(token)


def render_with_spans(
    source: str,
    messages: Sequence[Message],
    add_generation_prompt: bool = False,
    **variables: Any,
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered prompt and the character spans of its `{% generation %}` blocks (empty when
    the template has none). `variables` are what transformers passes too: bos_token, eos_token,
    tools, documents, and any template keyword (e.g. enable_thinking)."""
    template = compile_template(source)
    checked = check_messages(messages)
    blocks: list[str] = []
    spans: list[tuple[int, int]] = []
    try:
        with _tracking(blocks, spans):
            for block in template.generate(
                messages=checked, add_generation_prompt=add_generation_prompt, **variables
            ):
                blocks.append(block)
    except jinja2.TemplateError as e:  # raise_exception(...) in the template, undefined calls
        raise LmforgeError(f"chat template: {e.message or e}") from None
    except TEMPLATE_FAULTS as e:
        raise LmforgeError(f"chat template: {type(e).__name__}: {' '.join(str(e).split())}") from None
    return "".join(blocks), spans


def render(source: str, messages: Sequence[Message], add_generation_prompt: bool = False,
           **variables: Any) -> str:  # fmt: skip
    """`tokenizer.apply_chat_template(messages, tokenize=False, ...)` of transformers."""
    return render_with_spans(source, messages, add_generation_prompt, **variables)[0]
