"""The request fields that hold a reply to a form, as OpenAI's and vLLM's APIs name them:
OpenAI's `response_format` (any JSON object, or JSON valid under a schema), vLLM's
`structured_outputs` ({"json" | "regex" | "choice" | "grammar" | "json_object"}) and its older
`guided_json`, `guided_regex`, `guided_choice`, `guided_grammar`. `constraint` reads whichever a
request gives (at most one) as (kind, spec, field) for inference/grammar.py; a vLLM option lmforge
does not take is a 400, not an ignored field."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StrictBool, StrictStr, model_validator

from lmforge.server.body import Body

Choices = Annotated[list[StrictStr], Field(min_length=1)]
GUIDED = ("guided_json", "guided_regex", "guided_choice", "guided_grammar")


class JsonSchema(Body):
    """response_format's json_schema, as OpenAI's: the reply is JSON valid under `schema`. `strict`
    is taken and changes nothing: the schema is always enforced, as in vLLM."""

    name: StrictStr
    description: StrictStr | None = None
    schema_: dict[str, Any] = Field(alias="schema")  # a JSON object; `schema` is a BaseModel method
    strict: StrictBool | None = None


class ResponseFormat(Body):
    """OpenAI's response_format: plain text, any JSON object, or JSON valid under a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchema | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError('type "json_schema" needs json_schema: {"name": ..., "schema": {...}}')
        return self


class StructuredOutputs(Body):
    """vLLM's structured_outputs: one of a JSON schema, a regular expression, a choice of strings
    or a Lark grammar (llguidance's syntax, as vLLM's guidance backend takes it). Its other
    options (whitespace patterns, structural tags...) are refused by name."""

    model_config = ConfigDict(extra="forbid")
    json_: dict[str, Any] | StrictStr | None = Field(default=None, alias="json")
    regex: StrictStr | None = None
    choice: Choices | None = None
    grammar: StrictStr | None = None
    json_object: StrictBool | None = None

    @model_validator(mode="after")
    def _one(self) -> StructuredOutputs:
        given = [k for k in ("json", "regex", "choice", "grammar") if getattr(self, _attr(k)) is not None]
        given += ["json_object"] if self.json_object else []
        if len(given) != 1:
            raise ValueError(
                f"give one of json, regex, choice, grammar or json_object, not {given or 'none'}"
            )
        return self


def _attr(key: str) -> str:
    return "json_" if key == "json" else key


def _schema(value: dict[str, Any] | str, field: str) -> dict[str, Any]:
    """A JSON schema given as an object or as JSON text (vLLM takes both)."""
    if isinstance(value, dict):
        return value
    try:
        schema = json.loads(value)
    except json.JSONDecodeError as e:
        raise ValueError(f"{field}: not JSON: {e}") from None
    if not isinstance(schema, dict):
        raise ValueError(f"{field}: a JSON schema is an object, not {type(schema).__name__}")
    return schema


def constraint(body: Any) -> tuple[str, Any, str] | None:
    """The form a request holds its replies to: (kind, spec, the field that gave it), kind one of
    json (spec: a schema, None for any object), regex, choice, grammar; None for free text."""
    given = [f for f in ("structured_outputs", *GUIDED) if getattr(body, f, None) is not None]
    form = body.response_format
    if form is not None and form.type != "text":
        given.insert(0, "response_format")
    if len(given) > 1:
        raise ValueError(f"{' and '.join(given)}: give one way to shape the reply")
    if not given:
        return None
    field = given[0]
    if field == "response_format":
        return "json", form.json_schema.schema_ if form.json_schema else None, field
    if field == "structured_outputs":
        so = body.structured_outputs
        if so.json_object:
            return "json", None, field
        key = next(k for k in ("json", "regex", "choice", "grammar") if getattr(so, _attr(k)) is not None)
        value = getattr(so, _attr(key))
        return key, _schema(value, f"{field}.json") if key == "json" else value, field
    value = getattr(body, field)
    kind = field.removeprefix("guided_")
    return kind, _schema(value, field) if kind == "json" else value, field
