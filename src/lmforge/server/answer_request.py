"""`POST /v1/answers`' body: the question-answering pipeline's call and every option it takes.
lmforge's own route, so a field it does not know is a 400 naming it (a misspelt `topk` was a 200
that ignored it), unlike the OpenAI routes, whose clients send fields of their own."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StrictBool, StrictInt, StrictStr, model_validator

from lmforge.pipelines.question_answering import OPTIONS
from lmforge.server.body import Body
from lmforge.server.schemas import MAX_ROWS
from lmforge.server.unsupported import refuse_unknown

MAX_CONTEXT_CHARS = 100_000  # a question-answering context: ~200 windows, seconds of work on a CPU

Context = Annotated[StrictStr, Field(max_length=MAX_CONTEXT_CHARS)]


class AnswerRequest(Body):
    """The question-answering pipeline's call: one question and context, or lists (one context
    for every question, or one per question), and its options (None: the pipeline's default)."""

    model: StrictStr
    question: StrictStr | Annotated[list[StrictStr], Field(min_length=1, max_length=256)]
    context: Context | Annotated[list[Context], Field(min_length=1, max_length=256)]
    top_k: Annotated[StrictInt, Field(ge=1, le=100)] | None = None
    max_answer_len: Annotated[StrictInt, Field(ge=1, le=10_000)] | None = None
    handle_impossible_answer: StrictBool | None = None
    max_seq_len: StrictInt | None = None
    doc_stride: StrictInt | None = None
    align_to_words: StrictBool | None = None  # since 2026-12-07: it was ignored
    # windows run together: at most as many as the rows the batcher decodes together
    batch_size: Annotated[StrictInt, Field(ge=1, le=MAX_ROWS)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            refuse_unknown(data, list(cls.model_fields), "/v1/answers")
        return data

    def options(self) -> dict[str, Any]:
        """The pipeline options given (the others keep the pipeline's defaults)."""
        return {k: getattr(self, k) for k in OPTIONS if getattr(self, k) is not None}
