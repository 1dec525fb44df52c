"""Tool calling in Llama's formats (`--tool-call-parser llama3_json` and `pythonic`, as vLLM's
parsers of those names read them). Oracles: transformers' `apply_chat_template` for the prompt (a
Llama-3.1-style template written here: tools as indented JSON in the system turn, calls as
`{"name", "parameters"}` JSON, results as `ipython` turns; and a pythonic one); replies read on
given texts against outputs worked out by hand, whole and split into random 1-5 character pieces;
`jsonschema` for forced llama3_json calls (a tiny random Llama held by llguidance); the `openai`
client, which parses the replies, whole and streamed, into its types (replies the random model is
made to write word for word with vLLM's `structured_outputs: {"choice": [...]}`)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

pytest.importorskip("fastapi")
transformers = pytest.importorskip("transformers")
pytest.importorskip("llguidance")
jsonschema = pytest.importorskip("jsonschema")
from fastapi.testclient import TestClient  # noqa: E402
from serve_helpers import running  # noqa: E402
from test_chat import make_chat_llama  # noqa: E402
from test_serve_tools import ASK, CONVERSATION, PARIS, TIME, TOOLS, WEATHER, transformers_prompt  # noqa: E402
from test_serve_tools import accepts as accepts_in  # noqa: E402

from lmforge.server.app import Settings, create_app  # noqa: E402
from lmforge.server.models import ServedModel, load_models  # noqa: E402
from lmforge.server.schemas import ChatRequest  # noqa: E402
from lmforge.server.serve import check_tool_call_parser  # noqa: E402
from lmforge.server.tool_calls import Reader, read_reply  # noqa: E402
from lmforge.server.tool_formats import FORMATS  # noqa: E402
from lmforge.server.tool_parsers import llama3_json  # noqa: E402

HEAD = (
    "{{- '<|im_start|>system\\n\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}"
    "{%- if tools %}{{- 'You may call these functions. FORMAT\\n' }}"
    "{%- for tool in tools %}{{- (tool | tojson(indent=4)) + '\\n' }}{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>' }}{%- for message in messages %}{%- if message.role == 'system' %}"
    "{%- elif message.role == 'assistant' and message.tool_calls %}{{- '<|im_start|>assistant\\n\\n' }}"
)  # fmt: skip
TAIL = (
    "{{- '<|im_end|>' }}"
    "{%- elif message.role == 'tool' %}{{- '<|im_start|>ipython\\n\\n' + message.content + '<|im_end|>' }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n\\n' + message.content + '<|im_end|>' }}{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n\\n' }}{%- endif %}"
)  # fmt: skip
ASKS_JSON = (
    'Reply with JSON alone, {\\"name\\": the function, \\"parameters\\": its arguments}, \\"; \\" between'
)
LLAMA3 = HEAD.replace("FORMAT", ASKS_JSON + " calls.") + (
    "{%- for call in message.tool_calls %}{%- if not loop.first %}{{- '; ' }}{%- endif %}"
    "{{- '{\"name\": \"' + call.function.name + '\", \"parameters\": ' }}"
    "{{- (call.function.arguments | tojson) + '}' }}"
    "{%- endfor %}"
) + TAIL  # fmt: skip
PYTHONIC = HEAD.replace("FORMAT", "Reply with a Python list of calls alone, [name(key=value), ...].") + (
    "{{- '[' }}{%- for call in message.tool_calls %}{%- if not loop.first %}{{- ', ' }}{%- endif %}"
    "{{- call.function.name + '(' }}{%- for key, value in call.function.arguments | items %}"
    "{%- if not loop.first %}{{- ', ' }}{%- endif %}{{- key + '=' + (value | tojson) }}{%- endfor %}"
    "{{- ')' }}{%- endfor %}{{- ']' }}"
) + TAIL  # fmt: skip
NESTED = {"a": {"b": [1, {"c": None}]}, "s": 'x"; }{'}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ServedModel]:
    root = tmp_path_factory.mktemp("llama-tools")
    for name, template in (("llama3", LLAMA3), ("pythonic", PYTHONIC)):
        make_chat_llama(root / name, template=template)
        config = json.loads((root / name / "config.json").read_text())  # room for the tools' schemas
        (root / name / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 2048}))
    return load_models([root / "llama3", root / "pythonic"], dtype="fp32")


@pytest.fixture(scope="module")
def apis(models: dict[str, ServedModel]) -> Any:
    with (
        TestClient(create_app(models, Settings(tool_call_parser="llama3_json"))) as llama3,
        TestClient(create_app(models, Settings(tool_call_parser="pythonic"))) as pythonic,
    ):
        yield {"llama3": llama3, "pythonic": pythonic}


def post(api: TestClient, model: str, status: int = 200, **fields: Any) -> dict[str, Any]:
    body = {"model": model, "messages": ASK, "tools": TOOLS, "max_tokens": 120, "temperature": 0, **fields}
    r = api.post("/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    return r.json()


@pytest.mark.parametrize("messages", [ASK, CONVERSATION], ids=["ask", "after-a-call"])
@pytest.mark.parametrize("model", ["llama3", "pythonic"])
def test_prompt_with_tools_is_transformers(
    models: dict[str, ServedModel], apis: dict[str, TestClient], model: str, messages: list[dict[str, Any]]
) -> None:
    served = models[model]
    body = ChatRequest.model_validate({"model": model, "messages": messages, "tools": TOOLS})
    ours = served.chat.render([m.as_dict() for m in body.messages], tools=body.template_tools())
    assert ours == transformers_prompt(served.directory, messages, TOOLS)
    written = '{"name": "get_weather", "parameters": {"city": "Paris"' if model == "llama3" else (
        '[get_weather(city="Paris", unit="celsius")]')  # fmt: skip
    assert '"name": "get_time"' in ours and (written in ours) == (len(messages) > 1)
    usage = post(apis[model], model, messages=messages, max_tokens=2)["usage"]
    assert usage["prompt_tokens"] == len(served.tokenizer.encode(ours))


def streamed(reader: Reader, text: str, seed: int) -> list[Any]:
    """The pieces a reader returns for `text` split into random pieces of 1 to 5 characters."""
    rng, pieces, at = random.Random(seed), [], 0
    while at < len(text):
        step = rng.randint(1, 5)
        pieces += reader.feed(text[at : at + step])
        at += step
    return pieces + reader.end()


def check_reading(form: str, text: str, content: str | None, calls: list[tuple[str, Any]]) -> None:
    """A whole reply reads as expected, and so does the same reply streamed in random pieces."""
    new = FORMATS[form].reader
    got_content, got = read_reply(text, new(None))
    assert (got_content, [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in got]) == (
        content, calls)  # fmt: skip
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in got)
    for seed in range(6):
        pieces = streamed(new(None), text, seed)
        text_pieces = "".join(p for p in pieces if isinstance(p, str))
        assert ((text_pieces or None) if calls else text_pieces) == content
        assert [p["function"] for p in pieces if isinstance(p, dict)] == [c["function"] for c in got]
    first = streamed(new(1), text, 0)  # parallel_tool_calls false: the first call alone
    assert [p["function"] for p in first if isinstance(p, dict)] == [c["function"] for c in got[:1]]


def llama(name: str, arguments: Any, key: str = "parameters") -> str:
    return json.dumps({"name": name, key: arguments})


CALL = llama("get_weather", PARIS)
NOT_CALLS = [
    "Hello there.\n", "", "  ", "<|python", "Sure: " + CALL, '{"answer": 42}', '{"name": "f"}', "{}",
    '{ "name" is a key', llama("f", [1]), llama("f", 3), f'{CALL}; {{"name": 3, "parameters": {{}}}}',
    f"{CALL}\n{{broken", CALL[:-1], '{"name": "f", "parameters": {"x": NaN}}',
    '{"name": "f", "parameters": {"x": "\\ud800"}}', '<|python_tag|>brave_search.call(query="x")',
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "calls"),
    [
        (CALL, [("get_weather", PARIS)]),
        ("<|python_tag|>" + llama("f", {"q": "a; b} c"}, "arguments"), [("f", {"q": "a; b} c"})]),
        (f"{llama('f', NESTED)};{llama('g', {})}", [("f", NESTED), ("g", {})]),
        (f"\n {llama('f', {})} ;\n {llama('g', {'x': '}'})}\n", [("f", {}), ("g", {"x": "}"})]),
        (f"{llama('f', {})}\n{llama('g', {})}", [("f", {}), ("g", {})]),  # whitespace alone between
        ('{"name": "f", "arguments": {"a": 1}, "parameters": {"b": 2}}', [("f", {"a": 1})]),
        ('{"type": "function", "name": "f", "parameters": {"a": 1}}', [("f", {"a": 1})]),  # Llama 3.2's
        ('{"name": "f", "parameters": "{\\"a\\": 1}"}', [("f", {"a": 1})]),  # arguments as JSON text
        (f"{CALL}\nI called it. {{oops", [("get_weather", PARIS)]),  # what follows the calls: dropped
        (f"{CALL};", [("get_weather", PARIS)]),
        *[(text, []) for text in NOT_CALLS],
    ],
)  # fmt: skip
@pytest.mark.parametrize("form", ["llama3_json", "llama4_json"])  # one parser by two names, as vLLM's
def test_reading_llama3_json_calls(form: str, text: str, calls: list[tuple[str, Any]]) -> None:
    check_reading(form, text, None if calls else text, calls)


@pytest.mark.parametrize(
    ("text", "calls"),
    [
        ('[get_weather(city="Paris", unit="celsius")]', [("get_weather", PARIS)]),
        ("[f(a=[1, [2, {'k': None}]], b={'x': True, 'y': False}, c=-3, d=2.5e3, e=+1), g()]",
         [("f", {"a": [1, [2, {"k": None}]], "b": {"x": True, "y": False}, "c": -3, "d": 2500.0, "e": 1}),
          ("g", {})]),
        ('\n[f(s="a;b)]}\'", t=\'"\'),]\n', [("f", {"s": "a;b)]}'", "t": '"'})]),  # a comma at the end
        ('[f(a={1: "x", "y": [None]})]', [("f", {"a": {"1": "x", "y": [None]}})]),  # keys as JSON writes them
        ("[f (a=1) ,\n g(b='x')]  # done", [("f", {"a": 1}), ("g", {"b": "x"})]),
        ("[\n  f(a=1)\n]", [("f", {"a": 1})]),
        *[(text, []) for text in [
            "Hello.", "", "[", "[f(a=1)] and more", "Sure: [f(a=1)]", "[1, 2]", "[]", "[f(1)]", "[f(a=x)]",
            "[f(a=(1, 2))]", "[m.f(a=1)]", '[f(**{"a": 1})]', "[f(a=1, a=2)]", "[f(a=1)", "[f(a={1, 2})]",
            "[link](http://x) says hi", '[f(a=float("nan"))]', "[f(a=1e999)]", "[f(a='\\ud800')]",
            "[f(a=-True)]", "[f(a={[1]: 2})]", "[# note\nf(a=1)]", "f(a=1)", "[f(a=1), 2]",
        ]],
    ],
)  # fmt: skip
def test_reading_pythonic_calls(text: str, calls: list[tuple[str, Any]]) -> None:
    check_reading("pythonic", text, None if calls else text, calls)


def test_arguments_are_written_as_vllm_writes_them() -> None:
    """json.dumps' spacing, non-ASCII as is, Python's None / True as null / true."""
    (_, [call]) = read_reply("[f(x='é', n=None, b=True)]", FORMATS["pythonic"].reader(None))
    assert call["function"] == {"name": "f", "arguments": '{"x": "é", "n": null, "b": true}'}
    (_, [call]) = read_reply(
        '{"name":"f","parameters":{"x":"é","n":[1,2]}}', FORMATS["llama3_json"].reader(None)
    )
    assert call["function"] == {"name": "f", "arguments": '{"x": "é", "n": [1, 2]}'}


def check_call(call: dict[str, Any], name: str | None = None) -> None:
    schemas = {"get_weather": WEATHER, "get_time": TIME}
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert (
        call["function"]["name"] == (name or call["function"]["name"]) and call["function"]["name"] in schemas
    )
    jsonschema.validate(json.loads(call["function"]["arguments"]), schemas[call["function"]["name"]])


@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 1, "seed": 3}])
def test_forced_llama3_json_calls_are_valid(apis: dict[str, TestClient], sampling: dict[str, Any]) -> None:
    api = apis["llama3"]
    plain = post(api, "llama3", n=2, **sampling)["choices"]  # auto: the random model writes no call
    assert all(c["finish_reason"] != "tool_calls" and "tool_calls" not in c["message"] for c in plain)
    named = {"type": "function", "function": {"name": "get_time"}}
    for c in post(api, "llama3", tool_choice=named, n=2, **sampling)["choices"]:
        assert c["finish_reason"] == "stop" and c["message"]["content"] is None, c  # named: OpenAI's
        assert len(c["message"]["tool_calls"]) == 1
        check_call(c["message"]["tool_calls"][0], "get_time")
    for c in post(api, "llama3", tool_choice="required", max_tokens=300, **sampling)["choices"]:
        assert c["finish_reason"] == "tool_calls" and c["message"]["content"] is None, c
        for call in c["message"]["tool_calls"]:
            check_call(call)
    one = post(api, "llama3", tool_choice="required", parallel_tool_calls=False, **sampling)["choices"][0]
    assert len(one["message"]["tool_calls"]) == 1


def accepts(served: ServedModel, text: str, parallel: bool = True) -> bool:
    """Whether a forced reply's llama3_json grammar ("required") takes `text` whole, token by token."""
    return accepts_in(served, TOOLS, text, parallel, llama3_json.grammar)


def test_the_forced_grammar_is_llamas_format(models: dict[str, ServedModel]) -> None:
    served, one, two = models["llama3"], llama("get_time", {"zone": "UTC"}), llama("get_weather", PARIS)
    assert accepts(served, one) and accepts(served, f"{one}; {two}") and accepts(served, two, parallel=False)
    assert not accepts(served, f"{one}; {two}", parallel=False)
    assert not accepts(served, llama("get_time", {"zone": "UTC"}, "arguments"))  # Llama's key
    assert not accepts(served, llama("get_time", {"zone": "GMT"})) and not accepts(
        served, f"<tool_call>\n{one}"
    )


def test_a_forced_call_streams_as_delta_tool_calls(apis: dict[str, TestClient]) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    body = {"model": "llama3", "messages": ASK, "tools": TOOLS, "tool_choice": named, "temperature": 0,
            "max_tokens": 120}  # fmt: skip
    whole = apis["llama3"].post("/v1/chat/completions", json=body).json()["choices"][0]
    with apis["llama3"].stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line)["choices"][0] for line in lines[:-1]]
    assert "".join(c["delta"].get("content") or "" for c in chunks) == ""
    calls = [t for c in chunks for t in c["delta"].get("tool_calls", [])]
    assert [t["index"] for t in calls] == [0]
    assert calls[0]["function"] == whole["message"]["tool_calls"][0]["function"]
    assert [c["finish_reason"] for c in chunks] == [None] * (len(chunks) - 1) + ["stop"]  # named


PYTHONIC_REPLY = '[get_time(zone="UTC"), get_weather(city="Paris", unit="celsius", days=3)]'
LLAMA3_REPLY = f"<|python_tag|>{llama('get_time', {'zone': 'UTC'})}; {llama('get_weather', PARIS)}"


@pytest.mark.parametrize(
    ("model", "reply", "calls"),
    [
        ("pythonic", PYTHONIC_REPLY, [("get_time", {"zone": "UTC"}), ("get_weather", {**PARIS, "days": 3})]),
        ("pythonic", "[get_time(zone=UTC)]", []),  # a name, no literal: content
        ("llama3", LLAMA3_REPLY, [("get_time", {"zone": "UTC"}), ("get_weather", PARIS)]),
        ("llama3", '{"zone": "UTC"}', []),
    ],
)
def test_the_openai_client_parses_replies(
    models: dict[str, ServedModel], model: str, reply: str, calls: list[tuple[str, Any]]
) -> None:
    """The random model made to write `reply` word for word: the client's message, whole and
    streamed (its stream helpers assemble the chunks), holds its calls or its text."""
    openai = pytest.importorskip("openai")
    parser = "llama3_json" if model == "llama3" else "pythonic"
    with running(create_app(models, Settings(tool_call_parser=parser))) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        kwargs = {"model": model, "messages": ASK, "tools": TOOLS, "max_tokens": 200, "temperature": 0,
                  "extra_body": {"structured_outputs": {"choice": [reply]}}}  # fmt: skip
        whole = client.chat.completions.create(**kwargs).choices[0]
        with client.chat.completions.stream(**kwargs) as stream:
            final = stream.get_final_completion().choices[0]
    for choice in (whole, final):
        got = [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls or []]
        assert got == calls
        assert choice.finish_reason == ("tool_calls" if calls else "stop")
        assert choice.message.content in ((None, "") if calls else (reply,))  # "": the stream's first chunk
    assert [c.function.arguments for c in final.message.tool_calls or []] == [
        c.function.arguments for c in whole.message.tool_calls or []
    ]


def test_llama4_json_is_llama3_json(models: dict[str, ServedModel], apis: dict[str, TestClient]) -> None:
    """`--tool-call-parser llama4_json` (vLLM's other name for its llama3_json parser) is accepted
    and reads a reply, whole and streamed, and forces a call, as llama3_json does."""
    check_tool_call_parser("llama4_json")
    with TestClient(create_app(models, Settings(tool_call_parser="llama4_json"))) as llama4:
        for reply in (LLAMA3_REPLY, '{"zone": "UTC"}'):
            fields = {"structured_outputs": {"choice": [reply]}, "max_tokens": 200}
            want, got = post(apis["llama3"], "llama3", **fields), post(llama4, "llama3", **fields)
            assert without_ids(got) == without_ids(want)
            assert bool(want["choices"][0]["message"].get("tool_calls")) == (reply == LLAMA3_REPLY)
            body = {"model": "llama3", "messages": ASK, "tools": TOOLS, "temperature": 0, "stream": True}
            with llama4.stream("POST", "/v1/chat/completions", json={**body, **fields}) as r:
                lines = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: {")]
            streamed = [t["function"] for c in lines for t in c["choices"][0]["delta"].get("tool_calls", [])]
            assert streamed == [c["function"] for c in want["choices"][0]["message"].get("tool_calls", [])]
        named = {"type": "function", "function": {"name": "get_time"}}
        forced, want = (post(a, "llama3", tool_choice=named)["choices"][0] for a in (llama4, apis["llama3"]))
        assert without_ids(forced) == without_ids(want)
        check_call(forced["message"]["tool_calls"][0], "get_time")


def without_ids(reply: Any) -> Any:
    """A reply with its random parts (ids, the creation time) left out."""
    if isinstance(reply, dict):
        return {k: without_ids(v) for k, v in reply.items() if k not in ("id", "created")}
    return [without_ids(v) for v in reply] if isinstance(reply, list) else reply


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_time"}}])
def test_pythonic_refuses_forced_calls(apis: dict[str, TestClient], choice: Any) -> None:
    error = post(apis["pythonic"], "pythonic", 400, tool_choice=choice)["error"]
    assert error["param"] == "tool_choice" and error["code"] == "unsupported_parameter", error
    assert "\n" not in error["message"] and "--tool-call-parser pythonic" in error["message"], error


def test_parallel_tool_calls_false_returns_the_first_call(apis: dict[str, TestClient]) -> None:
    for model, reply in (("llama3", LLAMA3_REPLY), ("pythonic", PYTHONIC_REPLY)):
        choice = post(apis[model], model, parallel_tool_calls=False, max_tokens=300,
                      structured_outputs={"choice": [reply]})  # fmt: skip
        message = choice["choices"][0]["message"]
        assert choice["choices"][0]["finish_reason"] == "tool_calls" and message["content"] is None, message
        assert [c["function"]["name"] for c in message["tool_calls"]] == ["get_time"], message
