"""The base of every request body: unknown fields ignored, null for an optional field its
default (as OpenAI's clients send it), and text that is valid Unicode."""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from pydantic.fields import FieldInfo

from lmforge.errors import LmforgeError
from lmforge.tokenization.tokenizer import check_text


def _null_is_unset(field: FieldInfo) -> bool:
    """An optional field whose type has no null: a null given for it means "use the default"."""
    return not field.is_required() and type(None) not in get_args(field.annotation)


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        """Drop a null given for an optional field whose type has no null (temperature, n, stream...):
        OpenAI's clients send `"temperature": null` for "not set". Where null is a value of its own
        (classifications' top_k: every label), it is kept."""
        if not isinstance(data, dict):
            return data
        unset = {k for k, f in cls.model_fields.items() if _null_is_unset(f) and data.get(k, 0) is None}
        return {k: v for k, v in data.items() if k not in unset}

    @field_validator("*", mode="before")
    @classmethod
    def _valid_unicode(cls, value: Any) -> Any:
        """JSON can carry a lone surrogate ("\\ud800"), which no tokenizer takes and no reply can echo."""
        texts = enumerate(value) if isinstance(value, list) else [(None, value)]
        for i, text in texts:
            if isinstance(text, str):
                try:
                    check_text(text)
                except LmforgeError as e:  # pydantic reports a ValueError as the field's error
                    raise ValueError(str(e) if i is None else f"item {i}: {e}") from None
        return value
