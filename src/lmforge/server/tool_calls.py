"""Tool calls read from a reply, as vLLM's `hermes` tool-call parser reads them: each
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>` block (Qwen2.5, Hermes 2 Pro / 3 and
SmolLM3 write them) becomes one of OpenAI's `tool_calls`, and the text outside the blocks is the
message's `content` (null when there is none). A block that does not parse (not JSON, no name, no
arguments, or arguments that are not an object) stays in the content as text, as vLLM returns it; so does a
block the reply never closes, unless what follows the tag parses (a reply cut at its end). A
`</tool_call>` inside one of the JSON's strings (an argument's text) does not close the block
(vLLM's parser cuts there, and returns the call as text): a later one does; where none closes a
call, the block ends at the first after all. With `parallel_tool_calls: false` a reader returns
the first call alone, and drops the others, as vLLM does.

A `HermesReader` reads one row's text piece by piece, so that a stream sends each call whole in a
`delta.tool_calls` chunk once its block closes, and never a piece of the markup as content: the
start of a tag is held back until it is known to be one, and whitespace until text follows it: the
content of a reply with calls has no whitespace at its end, nor at its start where a call came
first (the newlines around and between the blocks), in a stream and in a whole reply alike; the
content of a reply without calls is its text, unchanged."""

from __future__ import annotations

import json
import uuid
from typing import Any, Protocol

OPEN, CLOSE = "<tool_call>", "</tool_call>"
Piece = str | dict[str, Any]  # content text, or a call in OpenAI's shape (without its index)


class Reader(Protocol):
    """One row's reply read for calls as it comes, in one format (tool_formats.py lists them):
    `feed` each new piece of text, then `end`; each returns the pieces it made safe to send;
    `calls` counts the calls returned so far."""

    calls: int

    def feed(self, text: str) -> list[Piece]: ...

    def end(self) -> list[Piece]: ...


def make_call(name: str, arguments: dict[str, Any]) -> dict[str, Any] | None:
    """OpenAI's tool call ({"id", "type", "function": {"name", "arguments"}}, arguments as JSON
    text, as vLLM's parsers write them), or None where the arguments are no JSON a client reads:
    a NaN or infinity (Python's json writes `NaN`), a lone surrogate (no UTF-8: the reply would
    fail to send), a key or value JSON has no form for."""
    try:
        text = json.dumps(arguments, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        return None
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": name, "arguments": text}}  # fmt: skip


def object_arguments(arguments: Any) -> dict[str, Any] | None:
    """A call's arguments as an object: given as one, or as JSON text of one (some models write
    them so); None for anything else."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    return arguments if isinstance(arguments, dict) else None


def _call(body: str) -> dict[str, Any] | None:
    """A block's JSON as OpenAI's tool call, or None where it is not a call."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    # no "arguments" (a model writing the tool's schema, {"name", "parameters"}): no call, as vLLM's
    # parser reads it (until 2026-12-07 a call with {}, the schema's values dropped unsaid)
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or "arguments" not in value:
        return None
    arguments = object_arguments(value["arguments"])
    return None if arguments is None else make_call(value["name"], arguments)


def _in_string(body: str) -> bool:
    """Whether `body` ends inside a JSON string: a tag that follows is an argument's text."""
    inside = escaped = False
    for ch in body:
        if escaped:
            escaped = False
        elif inside and ch == "\\":
            escaped = True
        elif ch == '"':
            inside = not inside
    return inside


def _held(text: str) -> int:
    """How many characters at the end of `text` could start a tag (a proper prefix of OPEN)."""
    return next((n for n in range(min(len(text), len(OPEN) - 1), 0, -1) if OPEN.startswith(text[-n:])), 0)


class HermesReader:
    """One row's reply read as it comes: `feed` each new piece of text, then `end`; each returns
    the pieces it made safe to send, content text or whole calls."""

    def __init__(self, most: int | None = None) -> None:
        self.most = most  # the calls returned (parallel_tool_calls false: 1); None: all
        self.buffer = ""  # text not yet sent: a possible tag's start, or an open block's body
        self.inside = False  # in a block: after OPEN, before CLOSE
        self.passed: list[int] = []  # in a block: where each CLOSE read as string text ends
        self.space = ""  # whitespace held until text follows it (dropped at the end of a reply with calls)
        self.said = False  # some content was sent
        self.calls = 0

    def feed(self, text: str) -> list[Piece]:
        self.buffer += text
        out: list[Piece] = []
        while True:
            if self.inside:
                at = self.buffer.find(CLOSE, self.passed[-1] if self.passed else 0)
                if at < 0:
                    return out
                body = self.buffer[:at]
                if _call(body) is None and _in_string(body):  # the tag is an argument's text
                    self.passed.append(at + len(CLOSE))
                    continue
                self.buffer, self.inside, self.passed = self.buffer[at + len(CLOSE) :], False, []
                self._block(body, OPEN + body + CLOSE, out)
                continue
            at = self.buffer.find(OPEN)
            if at < 0:
                cut = len(self.buffer) - _held(self.buffer)
                self._text(self.buffer[:cut], out)
                self.buffer = self.buffer[cut:]
                return out
            self._text(self.buffer[:at], out)
            self.buffer, self.inside = self.buffer[at + len(OPEN) :], True

    def end(self) -> list[Piece]:
        """The reply has ended: an open block that parses is a call, else text; what is held goes."""
        out: list[Piece] = []
        rest, self.buffer = self.buffer, ""
        if self.inside:
            self.inside, passed, self.passed = False, self.passed, []
            if passed and _call(rest) is None:  # no later tag closed a call: the first did
                self._text(OPEN + rest[: passed[0]], out)
                return out + self.feed(rest[passed[0] :]) + self.end()
            self._block(rest, OPEN + rest, out)
        else:
            self._text(rest, out)
        if self.space and not self.calls:
            out.append(self.space)
        self.space = ""
        return out

    def _block(self, body: str, raw: str, out: list[Piece]) -> None:
        call = _call(body)
        if call is None:
            self._text(raw, out)
            return
        if self.most is not None and self.calls >= self.most:
            return
        self.calls += 1
        out.append(call)

    def _text(self, text: str, out: list[Piece]) -> None:
        text = self.space + text
        kept = text.rstrip()
        self.space = text[len(kept) :]
        if kept and self.calls and not self.said:  # a call came first: no whitespace before the text
            kept = kept.lstrip()
        if kept:
            out.append(kept)
            self.said = True


def read_reply(text: str, reader: Reader | None = None) -> tuple[str | None, list[dict[str, Any]]]:
    """A whole reply's content (None when it is all calls) and its calls, as a stream reads it
    (with `reader`, a new one: the first call alone with parallel_tool_calls false)."""
    reader = reader or HermesReader()
    pieces = reader.feed(text) + reader.end()
    calls = [p for p in pieces if isinstance(p, dict)]
    content = "".join(p for p in pieces if isinstance(p, str))
    return (content or None) if calls else content, calls


def chat_message(
    text: str, finish: str | None, reader: Reader | None, named: bool = False
) -> tuple[dict[str, Any], str | None]:
    """The reply's `message` and `finish_reason`: with a new `reader`, its calls read out of the
    text (finish_reason "tool_calls" when there are any, as vLLM's; the row's own where tool_choice
    `named` the function, as OpenAI's and vLLM's: until 2026-12-07 "tool_calls" there too)."""
    if reader is None:
        return {"role": "assistant", "content": text}, finish
    content, calls = read_reply(text, reader)
    if not calls:
        return {"role": "assistant", "content": content}, finish
    return {"role": "assistant", "content": content, "tool_calls": calls}, finish if named else "tool_calls"


def stream_pieces(reader: Reader, text: str | None) -> list[tuple[str | None, dict[str, Any] | None]]:
    """A row's new text read for tool calls (None: the row has ended): (content, None), or (None, a
    call with its `index` among the row's calls, as a stream's delta.tool_calls carries it)."""
    pieces = reader.feed(text) if text is not None else reader.end()
    first = reader.calls - sum(isinstance(p, dict) for p in pieces)
    out: list[tuple[str | None, dict[str, Any] | None]] = []
    for p in pieces:
        if isinstance(p, str):
            out.append((p, None))
        else:
            out.append((None, {"index": first, **p}))
            first += 1
    return out
