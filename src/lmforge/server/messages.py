"""A chat request's messages, as OpenAI's API sends them (text or text parts; an assistant turn's
`tool_calls`, a tool's result with its `tool_call_id`), made the dicts chat templates take, and
the prompt vLLM's add_generation_prompt / continue_final_message ask for, checked (check_turn)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import StrictStr, model_validator

from lmforge.server.body import Body
from lmforge.server.errors import UNSUPPORTED
from lmforge.server.tools import ToolCall


class TextPart(Body):
    type: Literal["text"]
    text: StrictStr


class Message(Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[TextPart] | None = None  # null: an assistant turn of tool calls alone
    name: StrictStr | None = None
    tool_calls: list[ToolCall] | None = None  # an assistant turn's calls
    tool_call_id: StrictStr | None = None  # a tool message: the call it answers

    @model_validator(mode="after")
    def _shape(self) -> Message:
        if self.tool_calls and self.role != "assistant":
            raise ValueError(f"tool_calls: only an assistant message has them, not a {self.role} one")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content: null is only allowed for an assistant message with tool_calls")
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("tool_call_id: a tool message names the call it answers")
        return self

    def as_dict(self) -> dict[str, Any]:
        """The message as chat templates take it: {"role", "content"}, text parts joined by newlines (as
        vLLM's _parse_chat_message_content_parts joins them), developer =
        system; an assistant's tool_calls with their arguments as objects and a tool message's
        tool_call_id (and name), as vLLM passes them; null content as "", as vLLM renders it."""
        parts = (
            self.content
            if isinstance(self.content, list)
            else [TextPart(type="text", text=self.content or "")]
        )
        out: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role,
                               "content": "\n".join(p.text for p in parts)}  # fmt: skip
        if self.tool_calls:
            out["tool_calls"] = [c.as_dict() for c in self.tool_calls]
        if self.role == "tool":
            out["tool_call_id"] = self.tool_call_id
            out |= {"name": self.name} if self.name is not None else {}
        return out


def check_turn(final_assistant: bool, add_generation_prompt: bool, continue_final_message: bool,
               given: set[str]) -> None:  # fmt: skip
    """vLLM's add_generation_prompt and continue_final_message (`given`: the fields the request
    named) where they ask for a prompt lmforge renders: a new assistant turn after a message of
    another role, or a final assistant message continued. Any other (the conversation closed, or a
    new turn after an assistant's message) is a ValueError for the 400, not a reply to another prompt."""
    if continue_final_message and add_generation_prompt and "add_generation_prompt" in given:
        raise ValueError(  # vLLM refuses it too
            "continue_final_message: true and add_generation_prompt: true contradict each other;"
            " give add_generation_prompt: false to continue the message"
        )
    if continue_final_message and not final_assistant:
        raise ValueError("continue_final_message: true needs a final assistant message to continue")
    named = {"add_generation_prompt", "continue_final_message"} & given
    if final_assistant and not continue_final_message and add_generation_prompt and named:
        field = (
            "continue_final_message: false"
            if "continue_final_message" in named
            else "add_generation_prompt: true"
        )
        raise ValueError(  # as vLLM reads them given: a new turn after the assistant's message
            f"{field} (a new turn after a final assistant message) {UNSUPPORTED}: it continues the"
            " message (give continue_final_message: true and add_generation_prompt: false, or neither)"
        )
    if not add_generation_prompt and not continue_final_message:
        raise ValueError(
            f"add_generation_prompt: false without continue_final_message: true {UNSUPPORTED} (a final"
            " assistant message is continued, any other gets a new turn)"
        )
