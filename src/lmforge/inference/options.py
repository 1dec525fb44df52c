"""One check of decoding arguments for every entry point: `generate` / `generate_ids`, `translate`
/ `eval_translate`, the pipelines (and so the CLI, which passes its options by name, and the
server). Each entry point accepts and refuses the same values with the same one-line message,
`temperature=-1: must be a finite number >= 0 (0 = greedy)`, before any model is loaded.

Unknown keywords are an error, as in transformers' `generate`: `check_keywords` names them and
lists the accepted ones, with a hint for transformers' names that lmforge does not take.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from numbers import Integral, Real
from typing import Any

from lmforge.errors import LmforgeError

DTYPES = ("auto", "fp32", "bf16")
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed takes


def is_int(v: Any) -> bool:
    """An integer: bool is one to Python, never to us; numpy integers are."""
    return isinstance(v, Integral) and not isinstance(v, bool)


def _real(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    return _real(v) and math.isfinite(v)


def _beams(v: Any) -> bool:
    return v is None or (is_int(v) and v >= 1)


def _ids(v: Any) -> bool:
    return v is None or (isinstance(v, (list, tuple)) and all(is_int(t) and t >= 0 for t in v))


def _any_ids(v: Any) -> bool:
    # transformers' suppress processors mask the vocabulary's ids among these: others do nothing
    return v is None or (isinstance(v, (list, tuple)) and all(is_int(t) for t in v))


def _id_lists(v: Any) -> bool:
    return v is None or (isinstance(v, (list, tuple)) and all(_ids(w) and w for w in v))


BEAMS = "an integer >= 1 (1 = greedy) or None (the model's default)"
SUPPRESS = "a list of token ids (integers; those outside the vocabulary do nothing) or None"
EARLY_STOPPING = 'True, False, "never" or None (the model\'s default)'

# name -> (test, the allowed values as the message states them)
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "temperature": (lambda v: _finite(v) and v >= 0, "a finite number >= 0 (0 = greedy)"),
    "top_p": (lambda v: _real(v) and 0 < v <= 1, "a number in (0, 1] (1 = off)"),
    "top_k": (lambda v: is_int(v) and v >= 0, "an integer >= 0 (0 = off)"),
    "repetition_penalty": (
        lambda v: _finite(v) and v > 0,
        "a finite number > 0 (1 = off; above 1 makes tokens already in the text less likely)",
    ),
    "min_p": (lambda v: _real(v) and 0 <= v <= 1, "a number in [0, 1] (0 = off)"),
    "min_new_tokens": (lambda v: is_int(v) and v >= 0, "an integer >= 0 (0 = off)"),
    "no_repeat_ngram_size": (lambda v: is_int(v) and v >= 0, "an integer >= 0 (0 = off)"),
    "typical_p": (lambda v: _real(v) and 0 < v <= 1, "a number in (0, 1] (1 = off)"),
    "epsilon_cutoff": (lambda v: _real(v) and 0 <= v < 1, "a number in [0, 1) (0 = off)"),
    "eta_cutoff": (lambda v: _real(v) and 0 <= v < 1, "a number in [0, 1) (0 = off)"),
    "min_length": (lambda v: is_int(v) and v >= 0, "an integer >= 0, prompt included (0 = off)"),
    "max_length": (lambda v: is_int(v) and v >= 1, "an integer >= 1, prompt included"),
    "suppress_tokens": (_any_ids, SUPPRESS),
    "begin_suppress_tokens": (_any_ids, SUPPRESS),
    "bad_words_ids": (_id_lists, "a list of non-empty lists of token ids (integers >= 0) or None"),
    "max_new_tokens": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "beam": (_beams, BEAMS),
    "num_beams": (_beams, BEAMS),
    "length_penalty": (_finite, "a finite number"),
    "batch_size": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "seed": (
        lambda v: v is None or (is_int(v) and SEED_RANGE[0] <= v <= SEED_RANGE[1]),
        "an integer (from -2**63 to 2**64-1) or None",
    ),
    "dtype": (lambda v: isinstance(v, str) and v in DTYPES, "one of " + ", ".join(DTYPES)),
    "max_len_a": (lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    "max_len_b": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "use_cache": (lambda v: isinstance(v, bool), "True or False"),
    "early_stopping": (lambda v: v is None or isinstance(v, bool) or v == "never", EARLY_STOPPING),
    "compile": (lambda v: isinstance(v, bool) or v == "auto", "True, False or 'auto'"),
    "do_sample": (lambda v: isinstance(v, bool), "True or False"),
    "truncate_prompt": (lambda v: isinstance(v, bool), "True or False"),
    "truncate": (lambda v: isinstance(v, bool), "True or False"),
    "truncation": (lambda v: isinstance(v, bool), "True or False"),
    "return_full_text": (lambda v: isinstance(v, bool), "True or False"),
}

# transformers' keywords lmforge does not take, and what to use instead
HINTS: dict[str, str] = {
    "max_length": "max_new_tokens, which counts only new tokens",
    "torch_dtype": "dtype ('auto', 'fp32' or 'bf16')",
    "truncation": "truncate_prompt=True (keeps a prompt's last tokens)",
}


def check_options(**values: Any) -> None:
    """Raise a one-line LmforgeError for the first value outside its rule (see RULES)."""
    for name, value in values.items():
        test, allowed = RULES[name]
        if not test(value):
            raise LmforgeError(f"{name}={value!r}: must be {allowed}")


def check_some_new_tokens(max_new_tokens: int, what: str) -> None:
    """max_new_tokens where the output is only what is generated (`what`: a chat's reply, ask's
    answer): an integer >= 1, 0 being no output at all."""
    if is_int(max_new_tokens) and max_new_tokens < 1:  # -3 too: "an integer >= 0" contradicted this
        raise LmforgeError(f"max_new_tokens={max_new_tokens} must be >= 1: {what} is what is generated")
    check_options(max_new_tokens=max_new_tokens)


def keyword_names(fn: Callable[..., Any]) -> list[str]:
    """fn's keyword-only parameters: what a pipeline's call accepts besides its text."""
    params = inspect.signature(fn).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def check_keywords(given: Mapping[str, Any] | Iterable[str], accepted: Iterable[str], where: str) -> None:
    """Refuse keywords outside `accepted`, naming them and listing the accepted ones."""
    accepted = list(accepted)
    unknown = [k for k in given if k not in accepted]
    if not unknown:
        return
    names = ", ".join(unknown)
    # a hint only where the keyword it points to is accepted here
    hinted = [k for k in unknown if k in HINTS and re.split(r"\W", HINTS[k], maxsplit=1)[0] in accepted]
    hints = "; ".join(f"for {k} use {HINTS[k]}" for k in hinted)
    raise LmforgeError(
        f"{where}: unknown keyword{'s' if len(unknown) > 1 else ''} {names}"
        + (f" ({hints})" if hints else "")
        + f"; accepted: {', '.join(accepted)}"
    )


# The input's number of a call's first item: a streamed pipeline (pipelines/streaming.py) calls on
# each batch, whose items the errors number as the input does (item 3, not the batch's item 1).
FIRST_ITEM: ContextVar[int] = ContextVar("first_item", default=1)


def check_texts(text: Any, what: str = "text") -> list[str]:
    """A string or a list of strings as a list, else a one-line error naming the bad item."""
    if isinstance(text, str):
        return [text]
    if not isinstance(text, (list, tuple)):
        raise LmforgeError(f"{what} must be a string or a list of strings, not {type(text).__name__}")
    for n, item in enumerate(text, start=FIRST_ITEM.get()):
        if not isinstance(item, str):
            raise LmforgeError(f"{what} item {n} is of type {type(item).__name__}, not a string")
    return list(text)
