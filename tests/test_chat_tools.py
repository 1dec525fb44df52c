"""Tools and tool calls in instruction tuning and chat: a line's `tools` rendered by the template
(its `tool_use` one where it has one) with the assistant mask transformers gives, `"content": null`
beside tool calls, Python functions as tools, and train copies of test conversations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_chat_task import _recipe, tiny_chat_model, write_chats

from lmforge.data.chat_data import read_chats
from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model
from lmforge.inference.chat import ChatSpec
from lmforge.inference.chat_masks import encode_chat
from lmforge.train.loop import train
from lmforge.train.tasks import chat as chat_task

# Qwen2.5's shape, short: the tools' names in a system turn, a tool call as its name
QWEN = (
    "{% if tools %}<|endoftext|>system\n{% for t in tools %}{{ t.function.name }};{% endfor %}"
    "<|endoftext|>\n{% endif %}{% for m in messages %}<|endoftext|>{{ m.role }}\n"
    "{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% for c in m.tool_calls %}"
    "call {{ c.function.name }}{% endfor %}<|endoftext|>{% endgeneration %}"
    "{% else %}{{ m.content }}<|endoftext|>{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|endoftext|>assistant\n{% endif %}"
)
PLAIN = QWEN.replace("{% generation %}", "").replace("{% endgeneration %}", "")
# Mistral v0.3's test: `tools is not none`, with no `is defined` guard
MISTRAL = "{% if tools is not none %}[T]{% for t in tools %}{{ t }}{% endfor %}[/T]{% endif %}" + PLAIN
TOOLS = [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}]
CALL = [{"type": "function", "function": {"name": "w", "arguments": {"c": "x"}}}]
TURNS = [
    {"role": "user", "content": "w?"},
    {"role": "assistant", "content": None, "tool_calls": CALL},  # as the OpenAI API returns it
    {"role": "tool", "content": "20"},
    {"role": "assistant", "content": "20."},
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_chat_model(tmp_path_factory.mktemp("tools") / "llama", PLAIN)


@pytest.mark.parametrize("tools", [TOOLS, None])
def test_tools_render_and_mask_as_transformers(model_dir: Path, tools: Any) -> None:
    """encode_chat(tools=...) == transformers' apply_chat_template(tools=..., assistant mask) on the
    {% generation %}-tagged template; the tool call's turn (content null, dropped) is a target."""
    transformers = pytest.importorskip("transformers")
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"))
    out = hf.apply_chat_template(TURNS, tools=tools, chat_template=QWEN, tokenize=True, return_dict=True,
                                 return_assistant_tokens_mask=True)  # fmt: skip
    _, tokenizer = load_model(model_dir)
    ids, mask = encode_chat(tokenizer, PLAIN, TURNS, {}, "x.jsonl:1", tools)
    assert ids == list(out["input_ids"]) and [int(m) for m in mask] == list(out["assistant_masks"])
    targets = tokenizer.hf.decode([i for i, m in zip(ids, mask, strict=True) if m], skip_special_tokens=False)
    assert "call w" in targets and ("w;" in tokenizer.hf.decode(ids)) == (tools is not None)


def test_no_tools_renders_as_transformers_passes_none(model_dir: Path) -> None:
    """transformers passes tools=None: `tools is not none` is false there; training left `tools`
    undefined, so it rendered an empty tool list into every conversation."""
    transformers = pytest.importorskip("transformers")
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"))
    chat = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    expected = hf.apply_chat_template(chat, chat_template=MISTRAL, tokenize=True, return_dict=True)[
        "input_ids"
    ]
    _, tokenizer = load_model(model_dir)
    assert encode_chat(tokenizer, MISTRAL, chat, {})[0] == list(expected)


def test_training_renders_each_lines_tools_with_the_tool_use_template(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A line's `tools` reach the template (`tool_use` where the model has one, as transformers
    picks it); tool-call turns, content "" or null, are no "empty assistant reply"."""
    model = tiny_chat_model(tmp_path / "named", PLAIN)
    (model / "additional_chat_templates").mkdir()
    (model / "additional_chat_templates" / "tool_use.jinja").write_text("TOOLS " + PLAIN)
    data = write_chats(tmp_path / "chats.jsonl", 40)
    empty = [{**TURNS[1], "content": ""}]
    with data.open("a") as f:
        for n in range(8):
            turns = TURNS if n % 2 else TURNS[:1] + empty + TURNS[2:]
            f.write(json.dumps({"tools": TOOLS, "messages": turns}) + "\n")
    seen: list[tuple[str, Any]] = []
    real = chat_task.encode_chat

    def spy(
        tokenizer: Any, template: str, messages: Any, variables: Any, where: str, tools: Any = None
    ) -> Any:
        seen.append((template, tools))
        return real(tokenizer, template, messages, variables, where, tools)

    monkeypatch.setattr(chat_task, "encode_chat", spy)
    train(None, _recipe(data, model, 1), out=tmp_path / "run", quiet=True)
    with_tools = [(t, tools) for t, tools in seen if tools is not None]
    assert len(with_tools) == 8 and all(t.startswith("TOOLS ") and tools == TOOLS for t, tools in with_tools)
    assert all(t == PLAIN for t, tools in seen if tools is None) and len(seen) == 44
    assert "empty assistant reply" not in capsys.readouterr().err


@pytest.mark.parametrize("tools", ['"w"', "[1]", '{"name": "w"}', '[{"name": "w"}, "x"]'])
def test_tools_that_are_no_list_of_objects_name_the_line(tmp_path: Path, tools: str) -> None:
    path = write_chats(tmp_path / "chats.jsonl", 3)
    with path.open("a") as f:
        f.write(f'{{"tools": {tools}, "messages": [{{"role": "user", "content": "a"}},'
                ' {"role": "assistant", "content": "b"}]}\n')  # fmt: skip
    with pytest.raises(LmforgeError, match=rf'^{path}:4: "tools" must be a list of tool objects') as e:
        read_chats(path)
    assert "\n" not in str(e.value)


def test_null_content_only_beside_tool_calls(tmp_path: Path) -> None:
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps({"messages": TURNS}) + "\n")
    assert "content" not in read_chats(path)[0].messages[1]  # dropped, as transformers drops it
    bad = [{"role": "user", "content": None}, {"role": "assistant", "content": "b"}]
    path.write_text(json.dumps({"messages": bad}) + "\n")
    with pytest.raises(LmforgeError, match=rf"^{path}:1: messages\[0\] needs a string 'role' and a string"):
        read_chats(path)


def test_the_pipeline_takes_null_content_and_refuses_functions_as_tools(model_dir: Path) -> None:
    transformers = pytest.importorskip("transformers")
    _, tokenizer = load_model(model_dir)
    spec = ChatSpec.read(model_dir, tokenizer)
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"))
    for tools in (TOOLS, None):
        expected = hf.apply_chat_template(TURNS[:3], tools=tools, chat_template=PLAIN, tokenize=False,
                                          add_generation_prompt=True)  # fmt: skip
        assert spec.render(TURNS[:3], tools=tools) == expected

    def weather(city: str) -> str:
        """The weather.

        Args:
            city: the city
        """
        return city

    with pytest.raises(
        LmforgeError, match=r"^tools\[0\]: the Python function 'weather'; give its JSON schema"
    ):
        spec.render(TURNS[:1], tools=[weather])
    with pytest.raises(
        LmforgeError, match=r"^messages\[1\]: the final assistant message has tool calls and no"
    ):
        spec.render(TURNS[:2])  # transformers: "no content to continue"
    with pytest.raises(LmforgeError, match=r"^messages\[0\]: 'content' must be a string"):
        spec.render([{"role": "user", "content": None}])


def test_train_copies_of_test_conversations_are_left_out_and_said(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ "test conversations are never trained on": nor their copies given as train ones."""
    data = write_chats(tmp_path / "chats.jsonl", 40)  # lines 1, 11, 21, 31 are test
    lines = data.read_text().splitlines()
    copies = [json.loads(lines[n]) for n in (0, 10)]
    data.write_text("\n".join(lines + [json.dumps({"messages": c["messages"]}) for c in copies]) + "\n")
    summary = train(None, _recipe(data, model_dir, 1), out=tmp_path / "run", quiet=True)
    assert summary["train_copies_of_test_left_out"] == 2
    assert summary["train_conversations"] + summary["heldout_conversations"] == 36
    err = capsys.readouterr().err
    assert f'lmforge: note: {data}: 2 train conversations repeat a "split": "test" one (lines 41, 42)' in err


def test_a_tool_call_turn_is_no_empty_reply() -> None:
    """Its targets are the calls, not "nothing": it was counted as an empty reply by its content."""
    from lmforge.data.chat_data import Conversation

    call = {"role": "assistant", "content": "", "tool_calls": CALL}
    assert not chat_task._empty_reply(Conversation([TURNS[0], call], "train", 1))
    assert chat_task._empty_reply(Conversation([TURNS[0], {**call, "tool_calls": []}], "train", 1))
