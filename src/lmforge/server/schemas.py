"""Request bodies with OpenAI's field names, types and ranges. Strict types: a string where a
number belongs is a 400, never coerced. Unknown fields are ignored, as most OpenAI-compatible
servers do, except the OpenAI and vLLM fields that would change the reply, which lmforge does not
implement (OFF_VALUES; on /v1/completions also the tool fields, which only chat takes): given another
value than "off", they are a 400 `unsupported_parameter`, not a reply that silently ignores them.
null for an optional field means its default, as in OpenAI's API."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    Field,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from lmforge.server.body import Body
from lmforge.server.classification_input import ClassificationInput, TextPair
from lmforge.server.messages import Message, check_turn
from lmforge.server.structured import Choices, ResponseFormat, StructuredOutputs, constraint
from lmforge.server.tools import Tool, ToolChoice, check_tools, forced
from lmforge.server.unsupported import CHAT_OFF, COMPLETION_OFF, OFF_VALUES, STREAM_OFF, TOOLS_OFF, refuse

Temperature = Annotated[StrictFloat | StrictInt, Field(ge=0, le=2, allow_inf_nan=False)]
TopP = Annotated[StrictFloat | StrictInt, Field(gt=0, le=1, allow_inf_nan=False)]
Penalty = Annotated[StrictFloat | StrictInt, Field(ge=-2, le=2, allow_inf_nan=False)]  # OpenAI's range
Count = Annotated[StrictInt, Field(ge=1)]
Bias = Annotated[StrictFloat | StrictInt, Field(ge=-100, le=100, allow_inf_nan=False)]  # OpenAI's range
MAX_BIASES = 300  # logit_bias entries, as OpenAI
MAX_N = 16  # choices per request
# rows (a prompt's choice) decoded together per model (server/batcher.py), so at most a request's
# prompts x n: a larger one held every other request back and its caches' memory grew unbounded
MAX_ROWS = 64
MAX_STOPS = 4  # as OpenAI
MAX_LOGPROBS = 5  # /v1/completions' logprobs, as OpenAI
MAX_TOP_LOGPROBS = 20  # /v1/chat/completions' top_logprobs, as OpenAI


class StreamOptions(Body):
    include_usage: StrictBool = False


class _Sampling(Body):
    """The fields completions and chat completions share."""

    OFF: ClassVar[dict[str, tuple[Any, ...]]] = OFF_VALUES

    @model_validator(mode="before")
    @classmethod
    def _unsupported(cls, data: Any) -> Any:
        """A client asking for best_of got a 200 that ignored it."""
        if isinstance(data, dict):
            refuse(data, cls.OFF)
            options = data.get("stream_options")  # vLLM's usage in every chunk: it was ignored
            if isinstance(options, dict):
                refuse({f"stream_options.{k}": v for k, v in options.items()}, STREAM_OFF)
        return data

    model: StrictStr
    max_tokens: Count | None = None
    temperature: Temperature = 1.0
    top_p: TopP = 1.0
    frequency_penalty: Penalty = 0.0
    presence_penalty: Penalty = 0.0
    # vLLM's extensions: transformers' penalty over the prompt and the reply; top-k, -1 or 0 off
    repetition_penalty: Annotated[StrictFloat | StrictInt, Field(gt=0, allow_inf_nan=False)] = 1.0
    top_k: Annotated[StrictInt, Field(ge=-1)] = 0
    # vLLM's too: min-p sampling; no EOS and no stop string before min_tokens tokens. And
    # transformers' no_repeat_ngram_size (0: off), which vLLM does not take
    min_p: Annotated[StrictFloat | StrictInt, Field(ge=0, le=1, allow_inf_nan=False)] = 0.0
    min_tokens: Annotated[StrictInt, Field(ge=0)] = 0
    no_repeat_ngram_size: Annotated[StrictInt, Field(ge=0)] = 0
    logit_bias: dict[StrictStr, Bias] | None = None  # {"token id": added to its logit}, as OpenAI's
    seed: Annotated[StrictInt, Field(ge=-(2**63), lt=2**63)] | None = None  # vLLM's: any signed 64-bit
    stop: StrictStr | Annotated[list[StrictStr], Field(max_length=MAX_STOPS)] | None = None
    n: Annotated[StrictInt, Field(ge=1, le=MAX_N)] = 1
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    # the reply held to a form (server/structured.py, inference/grammar.py): OpenAI's, and vLLM's
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = None
    guided_json: dict[str, Any] | StrictStr | None = None
    guided_regex: StrictStr | None = None
    guided_choice: Choices | None = None
    guided_grammar: StrictStr | None = None
    # vLLM's: keep the prompt's last k tokens (-1: the context less max_tokens); server/truncation.py
    truncate_prompt_tokens: Annotated[StrictInt, Field(ge=-1)] | None = None
    # vLLM's: the EOS (end-of-turn) ids do not end the reply; ids that end it as EOS does (not in
    # the text); the stop string (or stop token's text) that ended it kept at the text's end
    ignore_eos: StrictBool = False
    stop_token_ids: list[Annotated[StrictInt, Field(ge=0)]] | None = None
    include_stop_str_in_output: StrictBool = False
    user: StrictStr | None = None

    @model_validator(mode="after")
    def _supported(self) -> _Sampling:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        limit = self.limit()
        if limit is not None and self.min_tokens > limit:  # vLLM refuses it too
            raise ValueError(f"min_tokens={self.min_tokens} is more than {self.limit_key()}={limit}")
        if any(s == "" for s in self.stops()):
            raise ValueError("stop: an empty stop sequence would stop at once")
        constraint(self)  # at most one form, and a JSON schema given as text parses
        return self

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        """Its keys are token ids written as JSON strings ("50256"), at most MAX_BIASES of them."""
        if value is not None and len(value) > MAX_BIASES:
            raise ValueError(f"at most {MAX_BIASES} token ids, not {len(value)}")
        for key in value or {}:
            if not re.fullmatch(r"[0-9]+", key):
                raise ValueError(f'{key!r} is not a token id (a string of digits, as "50256")')
            if len(key.lstrip("0")) > 9:  # no vocabulary is a billion tokens; int() of 5,000 digits fails
                shown = key[:12] + ("..." if len(key) > 12 else "")
                raise ValueError(f"token id {shown} is outside the vocabulary")
        return value

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def wanted_logprobs(self) -> int | None:
        """Alternatives to report with each token's log-probability; None: no log-probabilities."""
        return None

    def limit(self) -> int | None:
        """The most tokens a reply may have, as given (None: not given)."""
        return self.max_tokens

    def limit_key(self) -> str:
        """The field the limit came from, for an error about it."""
        return "max_tokens"

    @field_validator("seed")
    @classmethod
    def _no_seed(cls, value: int | None) -> int | None:
        """vLLM's: -1 is no seed (its SamplingParams); other negative seeds seed the generator."""
        return None if value == -1 else value


Prompt = StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
JSON_KINDS = {str: "a string", int: "a token id", float: "a number", bool: "a boolean", list: "a list",
              dict: "an object", type(None): "null"}  # fmt: skip


def _json_kind(value: Any) -> str:
    """A JSON value's kind as the client wrote it (not Python's NoneType or dict)."""
    return JSON_KINDS.get(type(value), type(value).__name__)


def _check_id_lists(rows: list[Any]) -> None:
    """Lists of token ids (prompts, embedding inputs): none empty, every item an integer."""
    for p, ids in enumerate(rows):
        if not ids:
            raise ValueError(f"item {p} is an empty list of token ids")
        bad = next((i for i, t in enumerate(ids) if type(t) is not int), None)
        if bad is not None:
            raise ValueError(f"item {p}, position {bad}: not a token id (got {_json_kind(ids[bad])})")


class CompletionRequest(_Sampling):
    OFF: ClassVar[dict[str, tuple[Any, ...]]] = OFF_VALUES | TOOLS_OFF | COMPLETION_OFF
    prompt: Prompt  # text, texts, token ids, or lists of token ids (checked by _prompt_shape)
    max_tokens: Annotated[StrictInt, Field(ge=0)] | None = None  # 0: the echoed prompt alone
    echo: StrictBool = False
    logprobs: Annotated[StrictInt, Field(ge=0, le=MAX_LOGPROBS)] | None = None

    @field_validator("logprobs", mode="before")
    @classmethod
    def _bool_is_count(cls, value: Any) -> Any:
        """vLLM takes false as 0 and true as 1 (its int field, and SamplingParams' True -> 1)."""
        return int(value) if isinstance(value, bool) else value

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_shape(cls, value: Any) -> Any:
        """One line naming the place that is wrong: pydantic's union errors list every branch."""
        if isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise ValueError(
                "must be a string, a list of strings, a list of token ids or a list of such lists"
            )
        if not value:
            raise ValueError("an empty list; give a string or at least one token id")
        kind = type(value[0])  # type(), not isinstance: a JSON true is no token id
        bad = next(
            (i for i, v in enumerate(value) if type(v) is not kind or kind not in (str, int, list)), None
        )
        if bad is not None:
            got = _json_kind(value[bad])
            raise ValueError(
                f"item {bad} is {got}: give all strings, all token ids or all lists of token ids"
            )
        if kind is int:  # one prompt of token ids
            return value
        if len(value) > MAX_N:
            raise ValueError(f"List should have at most {MAX_N} items, not {len(value)}")  # pydantic's words
        _check_id_lists(value if isinstance(value[0], list) else [])
        return value

    @model_validator(mode="after")
    def _nothing_to_do(self) -> CompletionRequest:
        if self.max_tokens == 0 and not self.echo:
            raise ValueError("max_tokens: 0 generates nothing; it needs echo: true (the prompt, and with"
                             " logprobs its log-probabilities)")  # fmt: skip
        prompts = len(self.token_prompts() or self.prompts())
        if (rows := prompts * self.n) > MAX_ROWS:
            raise ValueError(f"n: {prompts} prompts x n {self.n} = {rows} rows, over the {MAX_ROWS} this"
                             " server decodes together: send fewer prompts or a smaller n")  # fmt: skip
        return self

    def wanted_logprobs(self) -> int | None:
        return self.logprobs

    def prompts(self) -> list[str]:
        """The text prompts (token-id prompts: token_prompts)."""
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)  # type: ignore[arg-type]

    def token_prompts(self) -> list[list[int]] | None:
        """The prompts given as token ids, one list per prompt; None when they are text."""
        if isinstance(self.prompt, str) or isinstance(self.prompt[0], str):
            return None
        return [list(p) for p in self.prompt] if isinstance(self.prompt[0], list) else [list(self.prompt)]  # type: ignore[arg-type]


class ChatRequest(_Sampling):
    OFF: ClassVar[dict[str, tuple[Any, ...]]] = OFF_VALUES | CHAT_OFF
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Count | None = None
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None  # OpenAI's default: "auto" with tools, "none" without
    parallel_tool_calls: StrictBool | None = None  # False: one call (auto: the first the reply has)
    # vLLM's: lmforge continues a final assistant message (add_generation_prompt false with
    # continue_final_message true) and starts a new turn after any other; checked by check_turn
    add_generation_prompt: StrictBool = True
    continue_final_message: StrictBool = False
    _raw_tools: list[Any] | None = PrivateAttr(None)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_raw_tools(cls, data: Any, handler: Any) -> ChatRequest:
        """The tools as the client wrote them (key order, extra keys): templates render them as
        transformers renders the same dicts."""
        request = handler(data)
        if isinstance(data, dict) and request.tools:
            request._raw_tools = data["tools"]
        return request

    @model_validator(mode="after")
    def _one_limit(self) -> ChatRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        check_tools(self.tools, self.tool_choice)
        if forced(self.tool_choice) and constraint(self) is not None:
            raise ValueError(
                f"tool_choice: a forced call and {constraint(self)[2]} both shape the reply; give one"
            )  # type: ignore[index]
        last = self.messages[-1]
        if last.role == "assistant" and last.tool_calls:
            raise ValueError("messages: the last message is an assistant's tool calls; add their results"
                             " (role tool) for the model to answer")  # fmt: skip
        check_turn(last.role == "assistant", self.add_generation_prompt, self.continue_final_message,
                   self.model_fields_set)  # fmt: skip
        return self

    def choice(self) -> ToolChoice:
        """tool_choice, with OpenAI's default: "auto" where tools are given, else "none"."""
        return self.tool_choice or ("auto" if self.tools else "none")

    def template_tools(self) -> list[Any] | None:
        """The tools for the chat template's `tools` (None: none given)."""
        return self._raw_tools if self.tools else None

    def wanted_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def limit(self) -> int | None:
        """max_completion_tokens over max_tokens where both are given, as vLLM takes them."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def limit_key(self) -> str:
        return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"


Texts = StrictStr | Annotated[list[StrictStr], Field(min_length=1, max_length=256)]


class TranslationRequest(Body):
    model: StrictStr
    input: Texts
    num_beams: Annotated[StrictInt, Field(ge=1, le=16)] | None = None
    max_new_tokens: Count | None = None
    truncation: StrictBool | None = None  # cut a text over the model's limit, as the pipeline's keyword
    repetition_penalty: Annotated[StrictFloat | StrictInt, Field(gt=0, allow_inf_nan=False)] | None = None
    no_repeat_ngram_size: Annotated[StrictInt, Field(ge=0)] | None = None


class ClassificationRequest(Body):
    model: StrictStr
    input: ClassificationInput
    top_k: Annotated[StrictInt, Field(ge=1)] | None = 1
    function_to_apply: Literal["softmax", "sigmoid", "none"] | None = None  # None: the model's own

    def pipeline_input(self) -> Any:
        """The input as the pipeline takes it: a text pair as its {"text", "text_pair"} dict."""
        if isinstance(self.input, list):
            return [item.as_input() if isinstance(item, TextPair) else item for item in self.input]
        return self.input.as_input() if isinstance(self.input, TextPair) else self.input


MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit on the inputs of one /v1/embeddings request


class EmbeddingRequest(Body):
    """OpenAI's /v1/embeddings body, and vLLM's truncate_prompt_tokens (cut each input to that many
    tokens, -1: to the model's context; not given: an input over the context is a 400)."""

    model: StrictStr
    input: Prompt  # text, texts, token ids, or lists of token ids (checked by _input_shape)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[StrictInt, Field(ge=1)] | None = None
    user: StrictStr | None = None
    truncate_prompt_tokens: Annotated[StrictInt, Field(ge=-1)] | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _input_shape(cls, value: Any) -> Any:
        """One line naming the place that is wrong, as completions' prompt."""
        if isinstance(value, str):
            return value
        if not isinstance(value, list) or not value:
            raise ValueError(
                "must be a string, a non-empty list of strings, of token ids or of lists of token ids"
            )
        kind = type(value[0])  # type(), not isinstance: a JSON true is no token id
        bad = next(
            (i for i, v in enumerate(value) if type(v) is not kind or kind not in (str, int, list)), None
        )
        if bad is not None:
            raise ValueError(
                f"item {bad} is {_json_kind(value[bad])}: give all strings, all token ids or all lists of"
                " token ids"
            )
        if kind is not int and len(value) > MAX_EMBEDDING_INPUTS:
            raise ValueError(f"List should have at most {MAX_EMBEDDING_INPUTS} items, not {len(value)}")
        _check_id_lists(value if kind is list else [])
        return value

    def token_inputs(self) -> list[list[int]] | None:
        """The inputs given as token ids, one list per input; None when they are text."""
        if isinstance(self.input, str) or isinstance(self.input[0], str):
            return None
        return [list(p) for p in self.input] if isinstance(self.input[0], list) else [list(self.input)]  # type: ignore[arg-type]

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)  # type: ignore[arg-type]
