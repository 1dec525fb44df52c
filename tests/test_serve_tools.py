"""Tool calling on /v1/chat/completions (`tools`, `tool_choice`, `--tool-call-parser hermes`).
Oracles: transformers' `apply_chat_template(messages, tools=...)` for the prompt (a Hermes-style
template written here, with tools, an assistant's tool_calls and tool results, the calls'
arguments given as objects as transformers documents them); `jsonschema` for forced calls (a tiny
random Llama, whose free replies are never calls, held by llguidance to a call valid under the
tool's parameters); the `openai` client, which parses the replies, whole and streamed, into its
types. Reading replies is checked on given texts, whole and fed a character at a time."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
transformers = pytest.importorskip("transformers")
pytest.importorskip("llguidance")
jsonschema = pytest.importorskip("jsonschema")
from fastapi.testclient import TestClient  # noqa: E402
from serve_helpers import running  # noqa: E402
from test_chat import make_chat_llama  # noqa: E402

from lmforge.inference.grammar import compile_grammar  # noqa: E402
from lmforge.server.app import Settings, create_app  # noqa: E402
from lmforge.server.models import ServedModel, load_models  # noqa: E402
from lmforge.server.schemas import ChatRequest  # noqa: E402
from lmforge.server.tool_calls import HermesReader, read_reply  # noqa: E402
from lmforge.server.tool_grammar import call_grammar  # noqa: E402
from lmforge.server.tools import Tool  # noqa: E402

# a Hermes-style template (as Qwen2.5's): tools listed as JSON in the system turn, calls in
# <tool_call> blocks with their arguments as JSON objects, results in <tool_response> blocks
TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}"
    "{{- 'Functions you may call, in <tools></tools>:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\\n</tools>\\nCall one as <tool_call>\\n{\"name\": ..., \"arguments\": {...}}\\n</tool_call>' }}"
    "{{- '<|im_end|>\\n' }}{%- elif messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'system' and loop.first %}"
    "{%- elif message.role == 'assistant' and message.tool_calls %}{{- '<|im_start|>assistant' }}"
    "{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}"
    "{%- for call in message.tool_calls %}"
    "{{- '\\n<tool_call>\\n{\"name\": \"' + call.function.name + '\", \"arguments\": ' }}"
    "{{- (call.function.arguments | tojson) + '}\\n</tool_call>' }}{%- endfor %}{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{{- '<|im_start|>user\\n<tool_response id=\"' + message.tool_call_id + '\">\\n' + message.content }}"
    "{{- '\\n</tool_response><|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)  # fmt: skip
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 8},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"],
        "additionalProperties": False}  # fmt: skip
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"parameters": TIME, "name": "get_time"}},  # keys in another order
]  # fmt: skip
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
CONVERSATION = [
    {"role": "system", "content": "You help."},
    *ASK,
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'},
]  # fmt: skip
PARIS = {"city": "Paris", "unit": "celsius"}
LOOKAHEAD = {"type": "object", "properties": {"a": {"type": "string", "pattern": "^(?=x)a$"}}}


def tool(name: str, parameters: Any = None) -> dict[str, Any]:
    function = {"name": name} | ({} if parameters is None else {"parameters": parameters})
    return {"type": "function", "function": function}


CUT = '<tool_call>\n{"name": "f", "arguments": {"x": 1'
NOT_ARGUMENTS = '<tool_call>{"name": "f", "arguments": [1]}</tool_call>'
NAN = '<tool_call>{"name": "f", "arguments": {"x": NaN}}</tool_call>'
SURROGATE = '<tool_call>{"name": "f", "arguments": {"x": "\\ud800"}}</tool_call>'
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>'
TAGGED = {"s": 'a</tool_call> "b\\"</tool_call>'}  # an argument holding the closing tag, and an escaped quote
TAGGED_CALL = f'<tool_call>\n{{"name": "f", "arguments": {json.dumps(TAGGED)}}}\n</tool_call>'


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ServedModel]:
    root = tmp_path_factory.mktemp("tools")
    make_chat_llama(root / "hermes", template=TEMPLATE)
    config = json.loads((root / "hermes" / "config.json").read_text())  # room for the tools' schemas
    (root / "hermes" / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 2048}))
    make_chat_llama(root / "chatml")  # a template without tools
    return load_models([root / "hermes", root / "chatml"], dtype="fp32")


@pytest.fixture(scope="module")
def api(models: dict[str, ServedModel]) -> Any:
    with TestClient(create_app(models, Settings(tool_call_parser="hermes"))) as c:
        yield c


def post(api: TestClient, status: int = 200, **fields: Any) -> dict[str, Any]:
    body = {"model": "hermes", "messages": ASK, "max_tokens": 120, "temperature": 0, **fields}
    r = api.post("/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    return r.json()


def transformers_prompt(directory: Path, messages: list[dict[str, Any]], tools: Any) -> str:
    """transformers' rendering, the calls' arguments given as objects (as its docs show them)."""
    converted = json.loads(json.dumps(messages))
    for m in converted:
        for call in m.get("tool_calls") or []:
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
        if m["content"] is None:
            m["content"] = ""
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    return tokenizer.apply_chat_template(converted, tools=tools, add_generation_prompt=True, tokenize=False)


@pytest.mark.parametrize("messages", [ASK, CONVERSATION], ids=["ask", "after-a-call"])
@pytest.mark.parametrize("choice", ["auto", "none"])
def test_prompt_with_tools_is_transformers(
    models: dict[str, ServedModel], api: TestClient, messages: list[dict[str, Any]], choice: str
) -> None:
    served = models["hermes"]
    body = ChatRequest.model_validate({"model": "hermes", "messages": messages, "tools": TOOLS})
    ours = served.chat.render([m.as_dict() for m in body.messages], tools=body.template_tools())
    expected = transformers_prompt(served.directory, messages, TOOLS)
    assert ours == expected
    assert "<tools>" in ours and ('"city": "Paris"' in ours) == (len(messages) > 1)
    usage = post(api, messages=messages, tools=TOOLS, tool_choice=choice, max_tokens=2)["usage"]
    assert usage["prompt_tokens"] == len(served.tokenizer.encode(expected))  # the app renders the same


# a model writing the tool's schema rather than a call: no "arguments" (vLLM's parser returns text)
SCHEMA_WRITTEN = '<tool_call>\n{"name": "get_weather", "parameters": {"city": "Paris"}}\n</tool_call>'


@pytest.mark.parametrize(
    ("text", "content", "calls"),
    [
        ("Hello there.\n", "Hello there.\n", []),
        ("a <tool b < c", "a <tool b < c", []),
        (CALL, None, [("get_weather", PARIS)]),
        (f"Let me look.\n{CALL}\n{CALL.replace('get_weather', 'w2')}\n", "Let me look.",
         [("get_weather", PARIS), ("w2", PARIS)]),
        (f"{CALL}\nDone.", "Done.", [("get_weather", PARIS)]),
        ('<tool_call>\n{"name": "f", "arguments": {"x": [1, "é"]}}', None, [("f", {"x": [1, "é"]})]),  # cut
        (CUT, CUT, []),
        ("<tool_call>\nnot json\n</tool_call>", "<tool_call>\nnot json\n</tool_call>", []),
        ('<tool_call>{"arguments": {}}</tool_call>', '<tool_call>{"arguments": {}}</tool_call>', []),
        (NOT_ARGUMENTS, NOT_ARGUMENTS, []),
        (SCHEMA_WRITTEN, SCHEMA_WRITTEN, []),  # no arguments: it was a call with {}
        (NAN, NAN, []),  # no JSON a client reads (Python's json wrote NaN)
        (SURROGATE, SURROGATE, []),  # no UTF-8: the reply failed to send (a 500)
        ('<tool_call>{"name": "f", "arguments": "{\\"a\\": 2}"}</tool_call>', None, [("f", {"a": 2})]),
        (f"{TAGGED_CALL}\n{CALL}", None, [("f", TAGGED), ("get_weather", PARIS)]),
        (f'Say <tool_call>"hi</tool_call> and {CALL}', 'Say <tool_call>"hi</tool_call> and',
         [("get_weather", PARIS)]),  # a quote that is no JSON's: the first tag closed the block after all
    ],
)  # fmt: skip
def test_reading_hermes_calls(
    text: str, content: str | None, calls: list[tuple[str, dict[str, Any]]]
) -> None:
    got_content, got = read_reply(text)
    assert got_content == content
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in got] == calls
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in got)
    reader, pieces = HermesReader(), []  # streamed a character at a time: the same reply
    for ch in text:
        pieces += reader.feed(ch)
    pieces += reader.end()
    streamed = "".join(p for p in pieces if isinstance(p, str))
    assert (streamed or None if calls else streamed) == content
    assert [p["function"] for p in pieces if isinstance(p, dict)] == [c["function"] for c in got]
    assert not any(isinstance(p, str) and "<tool_call>" in p for p in pieces) or not calls or "<" in content


def check_call(call: dict[str, Any], name: str | None = None) -> None:
    schemas = {"get_weather": WEATHER, "get_time": TIME}
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] in schemas and call["function"]["name"] == (
        name or call["function"]["name"]
    )
    jsonschema.validate(json.loads(call["function"]["arguments"]), schemas[call["function"]["name"]])


@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 1, "seed": 3}])
def test_forced_calls_are_valid(api: TestClient, sampling: dict[str, Any]) -> None:
    plain = post(api, tools=TOOLS, n=2, **sampling)["choices"]  # auto: the random model writes no call
    assert all(c["finish_reason"] != "tool_calls" and "tool_calls" not in c["message"] for c in plain)
    named = {"type": "function", "function": {"name": "get_time"}}
    for c in post(api, tools=TOOLS, tool_choice=named, n=2, **sampling)["choices"]:
        # a named function's call ends "stop", as OpenAI's and vLLM's (it was "tool_calls")
        assert c["finish_reason"] == "stop" and c["message"]["content"] is None
        assert len(c["message"]["tool_calls"]) == 1
        check_call(c["message"]["tool_calls"][0], "get_time")
    for c in post(api, tools=TOOLS, tool_choice="required", max_tokens=300, **sampling)["choices"]:
        assert c["finish_reason"] == "tool_calls" and c["message"]["content"] is None
        assert c["message"]["tool_calls"]
        for call in c["message"]["tool_calls"]:
            check_call(call)
    one = post(api, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, **sampling)["choices"][0]
    assert len(one["message"]["tool_calls"]) == 1


def test_a_forced_call_streams_as_delta_tool_calls(api: TestClient) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    body = {"model": "hermes", "messages": ASK, "tools": TOOLS, "tool_choice": named, "temperature": 0,
            "max_tokens": 120}  # fmt: skip
    whole = api.post("/v1/chat/completions", json=body).json()["choices"][0]
    with api.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line)["choices"][0] for line in lines[:-1]]
    content = "".join(c["delta"].get("content") or "" for c in chunks)
    calls = [t for c in chunks for t in c["delta"].get("tool_calls", [])]
    assert content == "" and "<tool_call>" not in content
    assert [t["index"] for t in calls] == [0]
    assert calls[0]["function"] == whole["message"]["tool_calls"][0]["function"]
    assert [c["finish_reason"] for c in chunks] == [None] * (len(chunks) - 1) + ["stop"]  # named
    assert whole["finish_reason"] == "stop"


def test_the_openai_client_parses_tool_calls(models: dict[str, ServedModel]) -> None:
    openai = pytest.importorskip("openai")
    app = create_app(models, Settings(tool_call_parser="hermes"))
    with running(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        kwargs = {"model": "hermes", "messages": CONVERSATION + ASK, "tools": TOOLS, "max_tokens": 150,
                  "temperature": 0, "tool_choice": "required"}  # fmt: skip
        reply = client.chat.completions.create(**kwargs)
        assert reply.choices[0].finish_reason == "tool_calls"
        for call in reply.choices[0].message.tool_calls:
            check_call(call.model_dump())
        with client.chat.completions.stream(**kwargs) as stream:
            final = stream.get_final_completion()
        streamed = final.choices[0].message.tool_calls
        assert [(c.function.name, c.function.arguments) for c in streamed] == [
            (c.function.name, c.function.arguments) for c in reply.choices[0].message.tool_calls
        ]
        assert all(c.id.startswith("call_") and c.type == "function" for c in streamed)
        assert final.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("fields", "param", "says"),
    [
        ({"model": "chatml", "tools": TOOLS}, "tools", "does not render tools"),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools.0.function.name", "pattern"),
        ({"tools": [{"type": "retrieval", "function": {"name": "f"}}]}, "tools.0.type", "'function'"),
        ({"tools": TOOLS + TOOLS[:1]}, None, "'get_weather' is given twice"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, None,
         "'nope' is not in tools"),
        ({"tool_choice": "required"}, None, '"required" needs tools'),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice", ""),
        ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, None,
         "response_format both"),
        ({"tools": [tool("f", {"type": "string"})]}, "tools.0.function.parameters", "not 'string'"),
        ({"tools": [TOOLS[0], tool("f", LOOKAHEAD)], "tool_choice": "required"},
         "tools.1.function.parameters", "llguidance cannot follow this schema"),
        ({"messages": [*ASK, {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
          "function": {"name": "f", "arguments": "{oops"}}]}, {"role": "tool", "tool_call_id": "c",
          "content": "1"}]}, "messages.1.tool_calls.0.function.arguments", "not JSON"),
        ({"messages": [*ASK, {"role": "tool", "content": "1"}]}, None, "tool_call_id"),
        ({"messages": [*ASK, {"role": "user", "content": None}]}, None, "content: null"),
        ({"messages": CONVERSATION[:3]}, "messages", "add their results"),
        ({"functions": [{"name": "f"}]}, "functions", "is not supported"),
    ],
)  # fmt: skip
def test_bad_tool_requests_are_one_line_400s(
    api: TestClient, fields: dict[str, Any], param: str | None, says: str
) -> None:
    error = post(api, 400, **fields)["error"]
    assert "\n" not in error["message"] and says in error["message"], error
    assert "%json" not in error["message"] and "call_0" not in error["message"]  # not the grammar
    if param is not None:
        assert error["param"] == param, error


def test_tools_need_a_parser_and_only_chat_takes_them(
    models: dict[str, ServedModel], api: TestClient
) -> None:
    with TestClient(create_app(models, Settings())) as plain:  # no --tool-call-parser
        error = post(plain, 400, tools=TOOLS)["error"]
        assert error["param"] == "tool_choice" and "--tool-call-parser FORMAT" in error["message"]
        assert "hermes, llama3_json, llama4_json, pythonic" in error["message"]
        assert "tool_calls" not in post(plain, tools=TOOLS, tool_choice="none")["choices"][0]["message"]
    r = api.post("/v1/completions", json={"model": "hermes", "prompt": "x", "tools": TOOLS})
    assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_parameter", r.text


def accepts(
    served: ServedModel,
    tools: list[dict[str, Any]],
    text: str,
    parallel: bool = True,
    grammar: Any = call_grammar,
) -> bool:
    """Whether a forced reply's grammar ("required"; Hermes' unless `grammar` is another format's)
    takes `text` whole, token by token."""
    lark = (grammar or call_grammar)([Tool.model_validate(t) for t in tools], "required", parallel)
    stops = served.chat.stops
    state = compile_grammar("grammar", lark, served.tokenizer, stops, served.net.config.vocab_size).start()
    for token in served.tokenizer.encode(text):
        if not state.allowed()[token]:
            return False
        state.take(token)
    return bool(state.allowed()[stops[0]])  # whole: the reply may end here


def call_text(name: str, arguments: Any) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def test_a_model_that_ends_after_its_call_ends_the_reply(
    models: dict[str, ServedModel], api: TestClient
) -> None:
    """A model writing "\\n" after </tool_call> (as SmolLM2 and Qwen do) and then ending: the
    reply ends there, not in another call of the same tool to max_tokens."""
    served = models["hermes"]
    newline = served.tokenizer.encode("\n")
    assert len(newline) == 1
    bias = {str(newline[0]): 100} | {str(i): 50 for i in served.chat.stops}  # "\n" first, then the end
    for parallel in (True, False):
        reply = post(api, tools=TOOLS, tool_choice="required", logit_bias=bias, max_tokens=300,
                     parallel_tool_calls=parallel)  # fmt: skip
        choice = reply["choices"][0]
        assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None, choice
        assert len(choice["message"]["tool_calls"]) == 1
        check_call(choice["message"]["tool_calls"][0])
        assert reply["usage"]["completion_tokens"] < 300
    one, two = call_text("get_time", {"zone": "UTC"}), call_text("get_weather", PARIS)
    assert accepts(served, TOOLS, f"{one}\n{two}\n") and accepts(served, TOOLS, f"{one}\n", parallel=False)
    assert not accepts(served, TOOLS, f"{one}\n{two}", parallel=False)


def pydantic_tool() -> dict[str, Any]:
    """A tool as `openai.pydantic_function_tool` writes one: nested models and enums in `$defs`."""
    pydantic = pytest.importorskip("pydantic")
    import enum

    class Unit(enum.Enum):
        C = "celsius"
        F = "fahrenheit"

    class Place(pydantic.BaseModel):  # extra="forbid": pydantic_function_tool's strict schemas
        model_config = pydantic.ConfigDict(extra="forbid")
        city: str = pydantic.Field(max_length=8)

    class Forecast(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid")
        place: Place
        unit: Unit

    schema = Forecast.model_json_schema()
    assert schema["properties"]["place"] == {"$ref": "#/$defs/Place"}
    return tool("forecast", schema)


RECURSIVE = {"type": "object", "properties": {"v": {"type": "integer"}, "child": {"$ref": "#"}},
             "required": ["v"], "additionalProperties": False}  # fmt: skip
DEFINITIONS = {"type": "object", "definitions": {"U": {"enum": ["c", "f"]}},
               "properties": {"u": {"$ref": "#/definitions/U"}}, "required": ["u"]}  # fmt: skip


def test_forced_calls_follow_refs_into_the_parameters(
    models: dict[str, ServedModel], api: TestClient
) -> None:
    forecast = pydantic_tool()
    named = {"type": "function", "function": {"name": "forecast"}}
    for c in post(api, tools=[forecast], tool_choice=named, n=2, temperature=1, seed=5)["choices"]:
        assert c["finish_reason"] == "stop" and c["message"]["tool_calls"], c
        arguments = json.loads(c["message"]["tool_calls"][0]["function"]["arguments"])
        jsonschema.validate(arguments, forecast["function"]["parameters"])
    served = models["hermes"]
    place = {"place": {"city": "Paris"}, "unit": "celsius"}
    candidates = {  # arguments: the grammar takes them where jsonschema does, under the original schema
        "recursive": (RECURSIVE, [{"v": 1}, {"v": 1, "child": {"v": 2, "child": {"v": 3}}},
                                  {"child": {"v": 2}},
                                  {"v": 1, "child": {"name": "recursive", "arguments": {"v": 2}}}]),
        "definitions": (DEFINITIONS, [{"u": "c"}, {"u": "x"}]),
        "forecast": (forecast["function"]["parameters"],
                     [place, {**place, "unit": "C"}, {**place, "place": {"town": "Paris"}}]),
    }  # fmt: skip
    for name, (schema, tries) in candidates.items():
        for arguments in tries:
            valid = jsonschema.Draft202012Validator(schema).is_valid(arguments)
            assert accepts(served, [tool(name, schema)], call_text(name, arguments)) == valid, (
                name,
                arguments,
            )


def test_empty_parameters_take_any_object(models: dict[str, ServedModel]) -> None:
    served = models["hermes"]
    for parameters in ({}, None):
        tools = [tool("ping", parameters)]
        assert accepts(served, tools, call_text("ping", {})) and accepts(
            served, tools, call_text("ping", {"a": [1]})
        )
        assert not accepts(served, tools, call_text("ping", False))
        assert not accepts(served, tools, call_text("ping", [1]))


def test_a_template_failing_on_a_value_is_a_one_line_400(models: dict[str, ServedModel]) -> None:
    """A template's own TypeError (a call's arguments, an object, + a string), not a 500."""
    served = models["hermes"]
    bad = TEMPLATE.replace("(call.function.arguments | tojson)", "call.function.arguments + '!'")
    assert bad != TEMPLATE
    broken = dataclasses.replace(served, chat=dataclasses.replace(served.chat, template=bad))
    with TestClient(create_app({"hermes": broken}, Settings(tool_call_parser="hermes"))) as client:
        assert post(client, tools=TOOLS, max_tokens=2)["choices"]  # the template is fine without calls
        error = post(client, 400, messages=CONVERSATION, tools=TOOLS)["error"]
    assert error["param"] == "messages" and "\n" not in error["message"], error
    assert error["message"].startswith("chat template") and "TypeError" in error["message"], error


def test_parallel_tool_calls_false_returns_the_first_call(api: TestClient) -> None:
    """As vLLM: the reply is read as the model wrote it, and the calls after the first dropped."""
    text = f"Looking.\n{CALL}\n{CALL.replace('get_weather', 'w2')}\nDone."
    content, calls = read_reply(text, HermesReader(most=1))
    assert content == read_reply(text)[0] and [c["function"]["name"] for c in calls] == ["get_weather"]
    reader, pieces = HermesReader(most=1), []
    for ch in text:
        pieces += reader.feed(ch)
    pieces += reader.end()
    assert [p["function"]["name"] for p in pieces if isinstance(p, dict)] == ["get_weather"]
    assert reader.calls == 1
    reply = post(
        api, tools=TOOLS, parallel_tool_calls=False, max_tokens=4
    )  # "auto": taken, as OpenAI takes it
    assert reply["choices"][0]["finish_reason"] == "length"


def test_a_lone_surrogate_in_a_tool_names_the_tool(api: TestClient) -> None:
    bad = tool("f", {"type": "object", "properties": {"a": {"type": "string", "description": "\ud800"}}})
    body = {"model": "hermes", "messages": ASK, "tools": [TOOLS[0], bad], "max_tokens": 2}
    r = api.post(
        "/v1/chat/completions", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "tools.1", error
    assert "function.parameters.properties.a.description: the text is not valid UTF-8" in error["message"]
