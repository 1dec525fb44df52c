"""/v1/classifications' `input`: a text, a text pair (a cross-encoder's: an NLI model's, a
reranker's) as the text-classification pipeline takes it, `{"text", "text_pair"}`, or a list of
them. Each value is judged by the one branch its JSON type picks, so an error names that branch's
problem (a pair's misspelt key), not another's ("a valid string")."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Discriminator, Field, StrictStr, Tag

from lmforge.server.body import Body

MAX_INPUTS = 256  # texts or pairs a request


class TextPair(Body):
    """A cross-encoder's input (an NLI model's, a reranker's), as the text-classification pipeline
    takes it; a key of another name is refused, not ignored (a misspelt text_pair would classify
    the text alone)."""

    model_config = ConfigDict(extra="forbid")
    text: StrictStr
    text_pair: StrictStr | None = None

    def as_input(self) -> dict[str, str | None]:
        return {"text": self.text, "text_pair": self.text_pair}


def _input_kind(value: Any) -> str:
    """Which branch of an input judges it, so that an error is that branch's alone (a pair's
    misspelt key, not "a valid string")."""
    return "dict" if isinstance(value, dict | TextPair) else "list" if isinstance(value, list) else "str"


def _item_kind(value: Any) -> str:
    return "dict" if isinstance(value, dict | TextPair) else "str"  # a list in a list: not a string


_Text, _Pair = Annotated[StrictStr, Tag("str")], Annotated[TextPair, Tag("dict")]
ClassificationItem = Annotated[_Text | _Pair, Discriminator(_item_kind)]
ClassificationInput = Annotated[
    _Text
    | _Pair
    | Annotated[list[ClassificationItem], Field(min_length=1, max_length=MAX_INPUTS), Tag("list")],
    Discriminator(_input_kind),
]
