"""The fields of OpenAI's API (and vLLM's) that would change a reply, which lmforge does not
implement, and the values that leave the reply as lmforge gives it: given another value, a request
is a 400 `unsupported_parameter` naming the field, not a 200 that silently ignores it."""

from __future__ import annotations

import difflib
from typing import Any

from lmforge.server.errors import UNKNOWN, UNSUPPORTED

# Fields of OpenAI's API (and vLLM's sampling extensions) that change a reply, which lmforge does
# not implement, and the values that leave it as lmforge gives it (None: not given).
OFF_VALUES: dict[str, tuple[Any, ...]] = {
    "best_of": (None, 1),
    "suffix": (None, ""),
    "functions": (None, []),  # OpenAI's older names of tools and tool_choice
    "function_call": (None, "none", "auto"),
    "guided_whitespace_pattern": (None,),  # vLLM's: the whitespace its JSON may hold
    "guided_decoding_backend": (None, "auto", "guidance"),  # lmforge's is llguidance, vLLM's "guidance"
    # vLLM's SamplingParams (since 2026-12-07: each was a 200 that ignored it)
    "bad_words": (None, []),
    "allowed_token_ids": (None,),
    "use_beam_search": (None, False),
    "prompt_logprobs": (None,),  # the prompt's log-probabilities: completions' echo with logprobs
    "skip_special_tokens": (None, True),  # the text always leaves special tokens out
    "logits_processors": (None, []),
    "return_tokens_as_token_ids": (None, False),
}
# chat's own: vLLM's echo of the last message, its template given in the request (and the
# template's documents and keywords), OpenAI's audio
CHAT_OFF: dict[str, tuple[Any, ...]] = {
    "echo": (None, False),
    "chat_template": (None,),
    "chat_template_kwargs": (None, {}),
    "documents": (None,),
    "modalities": (None, ["text"]),
    "add_special_tokens": (None, False),  # vLLM's chat default: the template writes its own (BOS)
}
# completions' own: the prompt is encoded as transformers' tokenizer(text), its BOS added
COMPLETION_OFF: dict[str, tuple[Any, ...]] = {"add_special_tokens": (None, True)}

# stream_options' fields of vLLM's that lmforge does not send (usage in every chunk)
STREAM_OFF: dict[str, tuple[Any, ...]] = {"stream_options.continuous_usage_stats": (None, False)}

# chat's tool fields, refused on /v1/completions as OFF_VALUES are
TOOLS_OFF: dict[str, tuple[Any, ...]] = {"tools": (None, []), "tool_choice": (None, "none", "auto")}


def _is_off(value: Any, off: tuple[Any, ...]) -> bool:
    """`value` is one of the off values: 1.0 is 1, but true is not 1 and false is not 0 (nor [])."""
    if isinstance(value, bool):
        return any(o is value for o in off)
    return any(value == o and not isinstance(o, bool) for o in off)


def refuse(data: dict[str, Any], off: dict[str, tuple[Any, ...]]) -> None:
    """A ValueError (schemas' validators make it the 400) for the first field of `off` given another
    value than its off ones."""
    for name, values in off.items():
        value = data.get(name)
        if value is not None and not _is_off(value, values):
            allowed = ", ".join(repr(o) for o in values if o is not None)
            only = f"only {allowed}, or leave it out" if allowed else "leave it out"
            raise ValueError(f"{name}: {value!r:.80} {UNSUPPORTED} ({only})")


def refuse_unknown(data: dict[str, Any], fields: list[str], route: str) -> None:
    """A ValueError (the 400 `unknown_parameter`) for the first field of `data` not in `fields`: on
    lmforge's own routes, whose clients send only their fields, a misspelt option is a mistake."""
    for name in data:
        if name not in fields:
            near = difflib.get_close_matches(name, fields, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise ValueError(f"{name}: {UNKNOWN} {route} ({hint}it takes {', '.join(fields)})")
