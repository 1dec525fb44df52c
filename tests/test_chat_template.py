"""Chat templates render as transformers' apply_chat_template renders them: the same string for
real models' templates (SmolLM2's ChatML, Llama 3, Zephyr, Qwen2.5 with tools), the same error from
raise_exception, the same assistant tokens from {% generation %} blocks."""

from __future__ import annotations

from typing import Any

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from lmforge.errors import LmforgeError
from lmforge.inference.chat_template import render, render_with_spans

transformers = pytest.importorskip("transformers")

# HuggingFaceTB/SmolLM2-135M-Instruct's tokenizer_config.json
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] +"
    " '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)
# meta-llama/Meta-Llama-3-8B-Instruct's
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content ="
    " '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim +"
    " '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# HuggingFaceH4/zephyr-7b-beta's: newlines between tags (trim_blocks / lstrip_blocks matter)
ZEPHYR = """{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>
'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}"""
# Qwen2.5-Instruct's shape: whitespace control, namespace-free tools block with tojson
QWEN25 = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. ' }}
        {{- 'You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first)
           or (message.role == "assistant") %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""
# mistralai/Mistral-7B-Instruct-v0.1's: roles must alternate
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') !="
    " (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate"
    " user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles"
    " are supported!') }}{% endif %}{% endfor %}"
)
# SmolLM2's ChatML with the assistant's text marked, as training templates do
GENERATION = (
    "{% for message in messages %}{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TEMPLATES = {
    "smollm2": SMOLLM2,
    "llama3": LLAMA3,
    "zephyr": ZEPHYR,
    "qwen25": QWEN25,
    "generation": GENERATION,
}
SPECIALS = [
    "<s>",
    "</s>",
    "<|im_start|>",
    "<|im_end|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]

SYSTEM = {"role": "system", "content": "You answer in one sentence."}
USER = {"role": "user", "content": "What is the capital of France?"}
ASSISTANT = {"role": "assistant", "content": "  Paris is the capital of France. "}  # trim matters
USER2 = {"role": "user", "content": "And of Italy?\nOne word, please."}
CONVERSATIONS = {
    "user": [USER],
    "system+user": [SYSTEM, USER],
    "multi-turn": [SYSTEM, USER, ASSISTANT, USER2],
    "no-system multi-turn": [USER, ASSISTANT, USER2],
    "ends with assistant": [USER, ASSISTANT],
}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"city": "string"}}}]


@pytest.fixture(scope="module")
def backend() -> HFTokenizer:
    """A small byte-level BPE with the templates' control tokens as special tokens."""
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = " ".join(m["content"] for c in CONVERSATIONS.values() for m in c)
    hf.train_from_iterator([text] * 20, trainer=trainer)
    return hf


def reference(backend: HFTokenizer, template: str) -> Any:
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, chat_template=template, bos_token="<s>", eos_token="</s>"
    )


@pytest.mark.parametrize("generation_prompt", [False, True])
@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
@pytest.mark.parametrize("name", list(TEMPLATES))
def test_same_string_as_transformers(
    backend: HFTokenizer, name: str, conversation: str, generation_prompt: bool
) -> None:
    template, messages = TEMPLATES[name], CONVERSATIONS[conversation]
    expected = reference(backend, template).apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )
    ours = render(template, messages, generation_prompt, bos_token="<s>", eos_token="</s>")
    assert ours == expected
    assert len(ours) > 20


def test_tools_are_json_as_in_transformers(backend: HFTokenizer) -> None:
    messages = [SYSTEM, USER]
    expected = reference(backend, QWEN25).apply_chat_template(
        messages, tools=TOOLS, tokenize=False, add_generation_prompt=True
    )
    ours = render(QWEN25, messages, True, tools=TOOLS, bos_token="<s>", eos_token="</s>")
    assert ours == expected
    assert '{"type": "function", "function": {"name": "get_weather"' in ours


def test_raise_exception_gives_the_templates_message(backend: HFTokenizer) -> None:
    good = [USER, ASSISTANT, USER2]
    assert render(MISTRAL, good, bos_token="<s>", eos_token="</s>") == reference(
        backend, MISTRAL
    ).apply_chat_template(good, tokenize=False)
    for bad, message in (
        ([USER, USER2], "Conversation roles must alternate user/assistant/user/assistant/..."),
        ([SYSTEM, USER], "Conversation roles must alternate user/assistant/user/assistant/..."),
        ([ASSISTANT], "Conversation roles must alternate user/assistant/user/assistant/..."),
    ):
        with pytest.raises(Exception, match="roles must alternate") as theirs:
            reference(backend, MISTRAL).apply_chat_template(bad, tokenize=False)
        assert str(theirs.value) == message
        with pytest.raises(LmforgeError) as ours:
            render(MISTRAL, bad, bos_token="<s>", eos_token="</s>")
        assert str(ours.value) == f"chat template: {message}"
        assert "\n" not in str(ours.value)


@pytest.mark.parametrize("conversation", ["multi-turn", "ends with assistant", "user"])
def test_generation_spans_mark_the_same_tokens(backend: HFTokenizer, conversation: str) -> None:
    messages = CONVERSATIONS[conversation]
    tokenizer = reference(backend, GENERATION)
    out = tokenizer.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    text, spans = render_with_spans(GENERATION, messages)
    encoding = tokenizer(text, add_special_tokens=False)
    assert encoding["input_ids"] == out["input_ids"]
    mask = [0] * len(encoding["input_ids"])
    for start, end in spans:  # transformers' own rule: every token holding a character of a span
        for char in range(start, end):
            token = encoding.char_to_token(char)
            if token is not None:
                mask[token] = 1
    assert mask == out["assistant_masks"]
    answers = [m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant"]
    assert [text[a:b] for a, b in spans] == answers
    assert (sum(mask) > 0) == bool(answers)


def test_template_errors_are_one_line() -> None:
    with pytest.raises(LmforgeError, match=r"chat template, line 2: .*") as e:
        render("{% for m in messages %}\n{{ m.content }\n{% endfor %}", [USER])
    assert "\n" not in str(e.value)
    with pytest.raises(LmforgeError, match=r"messages\[1\]: unknown role 'robot'"):
        render(SMOLLM2, [USER, {"role": "robot", "content": "beep"}])
    with pytest.raises(LmforgeError, match="non-empty list"):
        render(SMOLLM2, [])


def test_templates_are_sandboxed() -> None:
    escape = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(LmforgeError, match="unsafe"):
        render(escape, [USER])
