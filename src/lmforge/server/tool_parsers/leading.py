"""A reader for formats where a reply is either calls alone or text: Llama 3's JSON calls and the
pythonic list of calls. vLLM's readers of both decide on a reply's start (`{` or `[`): a reply
that starts otherwise is text, streamed as it comes; one that starts so is held, and read as calls
when it ends: all of it parses, or all of it is content, unchanged, as vLLM returns it.

A format says what it reads (`read`: the calls of a whole reply, or None) and what start may still
lead to calls (`could_be`: a prefix's test). The text is held while its start could still be calls
and sent as content as soon as it cannot, so that a reply like "[1] See..." streams before its end;
`could_be` holds for every prefix of a reply `read` takes, so a stream and a whole reply give the
same message. The calls come at the end, whole, in one chunk each: the model ends right after
them (Llama's <|eom_id|> / <|eot_id|>)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lmforge.server.tool_calls import Piece


class LeadingReader:
    """One row's reply read as it comes: `feed` each new piece, then `end`."""

    def __init__(
        self,
        read: Callable[[str], list[dict[str, Any]] | None],
        could_be: Callable[[str], bool],
        most: int | None = None,
    ) -> None:
        self.read, self.could_be = read, could_be
        self.most = most  # the calls returned (parallel_tool_calls false: 1); None: all
        self.held = ""  # the reply so far, while it may be calls
        self.text = False  # known to be text: each piece is sent as it comes
        self.calls = 0

    def feed(self, text: str) -> list[Piece]:
        if self.text:
            return [text] if text else []
        self.held += text
        if self.could_be(self.held):
            return []
        self.text, held, self.held = True, self.held, ""
        return [held]

    def end(self) -> list[Piece]:
        """The reply has ended: what is held is read as calls, or sent as text."""
        held, self.held = self.held, ""
        if self.text or not held:
            return []
        calls = self.read(held)
        if calls is None:
            return [held]
        calls = calls[: self.most] if self.most is not None else calls
        self.calls += len(calls)
        return list(calls)
