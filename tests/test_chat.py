"""Chat: pipeline("text-generation") with messages gives transformers' output on the same model
(a tiny random Llama with a ChatML template; the real SmolLM2), stops at every end-of-turn id,
takes generation_config.json's defaults, and `lmforge chat` scripts over stdin."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from lmforge.cli import main
from lmforge.errors import LmforgeError
from lmforge.formats.chat_files import read_chat_template
from lmforge.formats.directory import load_model
from lmforge.inference.chat import ChatSpec, chat
from lmforge.inference.generate import generate_ids
from lmforge.pipelines import pipeline

transformers = pytest.importorskip("transformers")

CHATML = (  # SmolLM2's template
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] +"
    " '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
SYSTEM = {"role": "system", "content": "Be brief."}
USER = {"role": "user", "content": "Who is the king?"}
ASSISTANT = {"role": "assistant", "content": "The king is good."}
USER2 = {"role": "user", "content": "And the queen?"}
CONVERSATIONS = {
    "user": [USER],
    "system": [SYSTEM, USER],
    "multi-turn": [SYSTEM, USER, ASSISTANT, USER2],
    "continue the assistant": [USER, {"role": "assistant", "content": "The king"}],
}
NEW = 20


def make_chat_llama(directory: Path, template: str | None = CHATML) -> None:
    """A random Llama (transformers' save_pretrained) with a byte-level BPE, a chat template and
    two end-of-turn ids in generation_config.json."""
    from conftest import make_text

    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    hf.train_from_iterator([make_text(lines=200)], trainer=trainer)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=hf, chat_template=template, bos_token="<|endoftext|>", eos_token="<|im_end|>"
    )
    tokenizer.save_pretrained(directory)
    config = transformers.LlamaConfig(
        vocab_size=hf.get_vocab_size(), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.2,
        bos_token_id=0, eos_token_id=[2, 0], rope_parameters={"rope_type": "default", "rope_theta": 500.0},
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(directory)
    set_generation(directory, eos_token_id=[2, 0])


def set_generation(directory: Path, **values: Any) -> None:
    file = directory / "generation_config.json"
    config = json.loads(file.read_text()) if file.is_file() else {}
    file.write_text(json.dumps({**config, **values}))


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("chat-llama")
    make_chat_llama(directory)
    return directory


@pytest.fixture(scope="module")
def reference(llama: Path) -> Any:
    return transformers.pipeline("text-generation", model=str(llama), dtype=torch.float32)


def copy(llama: Path, tmp_path: Path) -> Path:
    out = tmp_path / "model"
    shutil.copytree(llama, out)
    return out


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_pipeline_chat_matches_transformers(llama: Path, reference: Any, name: str) -> None:
    messages = CONVERSATIONS[name]
    ours = pipeline("text-generation", llama, dtype="fp32")(messages, do_sample=False, max_new_tokens=NEW)
    theirs = reference(messages, do_sample=False, max_new_tokens=NEW)
    assert ours == theirs
    reply = ours[0]["generated_text"][-1]
    assert reply["role"] == "assistant" and len(reply["content"]) > len(messages[-1]["content"])
    new_only = pipeline("text-generation", llama, dtype="fp32")(
        messages, do_sample=False, max_new_tokens=NEW, return_full_text=False
    )
    assert new_only == reference(messages, do_sample=False, max_new_tokens=NEW, return_full_text=False)


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_a_batch_of_conversations(llama: Path, reference: Any, compile: bool) -> None:
    batch = [CONVERSATIONS["user"], CONVERSATIONS["multi-turn"]]
    generate = pipeline("text-generation", llama, dtype="fp32")
    ours = generate(batch, do_sample=False, max_new_tokens=8, compile=compile)
    assert ours == reference(batch, do_sample=False, max_new_tokens=8)
    assert len(ours) == 2 and all(len(r) == 1 for r in ours)


def test_stops_at_any_end_of_turn_id(llama: Path, reference: Any, tmp_path: Path) -> None:
    net, tokenizer = load_model(llama)
    spec = ChatSpec.read(llama, tokenizer)
    assert spec.stops == [2, 0]
    prompt = tokenizer.encode(spec.render([USER]))
    free = generate_ids(net, [prompt], NEW, temperature=0)[0]  # no stop ids at all
    assert 2 not in free and 0 not in free
    stop = next(t for n, t in enumerate(free) if n >= 2 and t not in free[:n])  # first seen at n >= 2
    model = copy(llama, tmp_path)
    set_generation(model, eos_token_id=[2, stop])
    ours = pipeline("text-generation", model, dtype="fp32")([USER], do_sample=False, max_new_tokens=NEW)
    cut = free[: free.index(stop)]
    # the stop id is an ordinary token: its text stays, as transformers' skip_special_tokens decode keeps it
    assert ours[0]["generated_text"][-1]["content"] == tokenizer.decode([*cut, stop])
    with torch.inference_mode():  # transformers keeps the stop token (its decode drops special ones)
        out = reference.model.generate(torch.tensor([prompt]), max_new_tokens=NEW, do_sample=False,
                                       eos_token_id=[2, stop], pad_token_id=2)  # fmt: skip
    assert out[0, len(prompt) :].tolist() == [*cut, stop]
    # one id as before, several ids, and a set: the same rule
    assert generate_ids(net, [prompt], NEW, temperature=0, eos_id=stop)[0] == cut
    assert generate_ids(net, [prompt], NEW, temperature=0, eos_id={stop, 2})[0] == cut


# the options off unless generation_config.json or a keyword sets them
OFF = {"typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "min_length": 0, "suppress_tokens": None}
OFF |= {"begin_suppress_tokens": None, "bad_words_ids": None}


def test_generation_config_defaults_and_explicit_keywords_win(llama: Path, tmp_path: Path) -> None:
    model = copy(llama, tmp_path)
    spec = ChatSpec.read(model, load_model(model)[1])
    assert spec.sampling() == {
        "max_new_tokens": 256,
        "do_sample": True,
        "temperature": 0.7,
        "top_k": 50,
        "top_p": 1.0,
        "repetition_penalty": 1.0,
        "min_p": 0.0,
        "min_new_tokens": 0,
        "no_repeat_ngram_size": 0,
        **OFF,
    }
    set_generation(model, do_sample=False, temperature=0.3, top_k=7, max_new_tokens=9)
    spec = ChatSpec.read(model, load_model(model)[1])
    assert spec.sampling() == {
        "max_new_tokens": 9,
        "do_sample": False,
        "temperature": 0.3,
        "top_k": 7,
        "top_p": 1.0,
        "repetition_penalty": 1.0,
        "min_p": 0.0,
        "min_new_tokens": 0,
        "no_repeat_ngram_size": 0,
        **OFF,
    }
    wins = spec.sampling(do_sample=True, top_k=None, max_new_tokens=3)
    assert (wins["do_sample"], wins["top_k"], wins["max_new_tokens"]) == (True, 7, 3)
    # the pipeline decodes greedily for 9 tokens, as transformers does with this generation_config
    ours = pipeline("text-generation", model, dtype="fp32")([USER])
    theirs = transformers.pipeline("text-generation", model=str(model))([USER])
    assert ours == theirs
    assert ours == pipeline("text-generation", llama, dtype="fp32")([USER], do_sample=False, max_new_tokens=9)
    # plain text too: it sampled 50 tokens at temperature 1.0 whatever the file said
    ours = pipeline("text-generation", model, dtype="fp32")("The king")
    assert ours == transformers.pipeline("text-generation", model=str(model))("The king")
    assert ours == pipeline("text-generation", llama, dtype="fp32")(
        "The king", do_sample=False, max_new_tokens=9
    )
    set_generation(model, temperature=-1)
    with pytest.raises(LmforgeError, match=r"generation_config.json: temperature=-1: must be"):
        pipeline("text-generation", model, dtype="fp32")([USER])


def test_a_tokenizer_that_adds_a_bos_gets_it_on_plain_text_not_on_chats(llama: Path, tmp_path: Path) -> None:
    """Llama 3's, Llama 2's and Mistral's tokenizer.json add a BOS to a text (a TemplateProcessing
    post-processor); lmforge encoded plain-text prompts without it and generated other text than
    transformers' pipeline. A rendered chat template writes its own: it gets no second one."""
    model = copy(llama, tmp_path)
    raw = json.loads((model / "tokenizer.json").read_text())
    bos = {"id": "<|endoftext|>", "type_id": 0}
    raw["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": bos}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            {"SpecialToken": bos},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [0], "tokens": ["<|endoftext|>"]}},
    }
    (model / "tokenizer.json").write_text(json.dumps(raw))
    greedy = {"do_sample": False, "max_new_tokens": 12}
    theirs = transformers.pipeline("text-generation", model=str(model))
    ours = pipeline("text-generation", model, dtype="fp32")
    assert ours.tokenizer.encode_prompt("The king") == [0, *ours.tokenizer.encode("The king")]
    assert ours("The king", **greedy) == theirs("The king", **greedy)
    assert ours([USER], **greedy) == theirs([USER], **greedy)  # the template's own tokens alone
    assert ours("The king", **greedy) != pipeline("text-generation", llama, dtype="fp32")(
        "The king", **greedy
    )


def test_stop_sequence_and_num_return_sequences_as_transformers(llama: Path) -> None:
    """transformers' pipeline keywords a user passes: stop_sequence ends the text with the stop
    string kept (generate's stop_strings), num_return_sequences samples several texts a prompt."""
    ours = pipeline("text-generation", llama, dtype="fp32")
    theirs = transformers.pipeline("text-generation", model=str(llama))
    greedy = {"do_sample": False, "max_new_tokens": 24, "return_full_text": False}
    whole = ours("The king", **greedy)[0]["generated_text"]
    first = [i for i in range(4, len(whole) - 1) if whole.find(whole[i : i + 2]) == i]  # ASCII letters:
    stop = next(whole[i : i + 2] for i in first if whole[i : i + 2].isalpha() and whole[i : i + 2].isascii())
    cut = ours("The king", stop_sequence=stop, **greedy)
    assert cut == theirs("The king", stop_sequence=stop, **greedy)
    assert stop in cut[0]["generated_text"] and len(cut[0]["generated_text"]) < len(whole)
    for chat_input in ([USER], "The king"):  # n per prompt, each its own; the first is n=1's
        several = ours(chat_input, num_return_sequences=3, seed=5, max_new_tokens=8)
        assert len(several) == 3 and len({str(r["generated_text"]) for r in several}) > 1
        assert several[0] == ours(chat_input, seed=5, max_new_tokens=8)[0]
    both = ours(["The king", "A queen"], num_return_sequences=2, seed=5, max_new_tokens=8)
    assert [len(b) for b in both] == [2, 2] and both[0] == ours("The king", num_return_sequences=2, seed=5,
                                                                max_new_tokens=8)  # fmt: skip
    # every prompt's first is what num_return_sequences=1 gives it (until 2026-12-07 the first's alone)
    assert [b[0] for b in both] == [r[0] for r in ours(["The king", "A queen"], seed=5, max_new_tokens=8)]
    with pytest.raises(LmforgeError, match=r"^num_return_sequences=2 needs sampling"):
        ours("The king", num_return_sequences=2, do_sample=False)
    with pytest.raises(LmforgeError, match=r"^stop_sequence: '' is not a stop string"):
        ours("The king", stop_sequence="")


def test_plain_text_keeps_working_and_a_model_without_template_refuses_chat(
    llama: Path, tmp_path: Path
) -> None:
    model = copy(llama, tmp_path)
    (model / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    assert read_chat_template(model) is None
    generate = pipeline("text-generation", model, dtype="fp32")
    out = generate("the king", do_sample=False, max_new_tokens=5)
    assert out[0]["generated_text"].startswith("the king") and len(out[0]["generated_text"]) > len("the king")
    with pytest.raises(LmforgeError, match="has no chat template") as e:
        generate([USER], do_sample=False, max_new_tokens=5)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([{"role": "robot", "content": "beep"}], r"messages\[0\]: unknown role 'robot'"),
        ([USER, {"role": "user"}], r"messages\[1\]: 'content' must be a string"),
        ([USER, "and then?"], r"messages\[1\]: a message is a dict"),
        ([[]], r"messages: a non-empty list"),
        ([[USER], [{"role": "bot", "content": "x"}]], r"conversation 2\[0\]: unknown role 'bot'"),
    ],
)
def test_bad_messages_are_one_line(llama: Path, messages: Any, error: str) -> None:
    with pytest.raises(LmforgeError, match=error) as e:
        pipeline("text-generation", llama, dtype="fp32")(messages, max_new_tokens=2)
    assert "\n" not in str(e.value)


def expected_replies(llama: Path, system: str, lines: list[str], new: int) -> list[str]:
    """What `lmforge chat` should print for these stdin lines, from the pipeline."""
    generate = pipeline("text-generation", llama, dtype="fp32")
    start = [{"role": "system", "content": system}]
    history, replies = list(start), []
    for line in lines:
        if line == "/reset":
            history = list(start)
            continue
        out = generate([*history, {"role": "user", "content": line}], do_sample=False, max_new_tokens=new)
        history = out[0]["generated_text"]
        replies.append(history[-1]["content"])
    return replies


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_chat_scripted_from_stdin(
    llama: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], compile: bool
) -> None:
    """Compiled, every reply (one compile, then prompts of other lengths) is the eager pipeline's."""
    lines = ["Who is the king?", "And the queen?", "/reset", "Who is the king?", "", "/exit", "never read"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(lines) + "\n"))
    chat(llama, system="Be brief.", do_sample=False, max_new_tokens=8, dtype="fp32", compile=compile)
    out = capsys.readouterr()
    replies = expected_replies(llama, "Be brief.", lines[:4], 8)
    assert out.out == "".join(r + "\n" for r in replies)
    assert replies[0] == replies[2] and replies[0] != replies[1]  # /reset forgot the first turns
    assert "history cleared" in out.err


def test_chat_command_line(llama: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    lines = ["Who is the king?", "/reset", "And the queen?"]
    done = subprocess.run(
        [sys.executable, "-m", "lmforge", "chat", str(llama), "--system", "Be brief.", "--no-do-sample",
         "--max-new-tokens", "6", "--dtype", "fp32"],
        input="\n".join(lines) + "\n", capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "".join(r + "\n" for r in expected_replies(llama, "Be brief.", lines, 6))


def test_a_message_that_cannot_be_answered_is_one_line_and_the_session_goes_on(
    llama: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A message longer than the context (256 tokens) is refused in one line naming no option chat
    lacks, is not in the history, and the next one is answered; from stdin the end is an error
    counting the refused ones (the exit status: 2). It ended the session, naming --truncate-prompt."""
    lines = ["Who is the king?", "word " * 300, "And the queen?"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(lines) + "\n"))
    with pytest.raises(LmforgeError, match=r"^1 message not answered \(see above\)$"):
        chat(llama, system="Be brief.", do_sample=False, max_new_tokens=8, dtype="fp32")
    out = capsys.readouterr()
    assert out.out == "".join(r + "\n" for r in expected_replies(llama, "Be brief.", [lines[0], lines[2]], 8))
    refused = [line for line in out.err.splitlines() if "not answered" in line]
    assert len(refused) == 1 and "truncate" not in out.err
    assert re.fullmatch(
        r"lmforge: not answered: the message is \d+ tokens in the chat template, more than the model's"
        r" context of 256, leaving no room for a reply: shorten it",
        refused[0],
    )


def test_a_reply_stops_where_the_context_is_full(
    llama: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A message that leaves 3 of the 256 positions gets a reply of at most 3 tokens, the pipeline's
    with max_new_tokens=3, and a line saying why; past the context the reply slid, forgetting the
    question and recomputing the whole window for every token (13 minutes at SmolLM2's 8,192)."""
    generate = pipeline("text-generation", llama, dtype="fp32")
    spec = ChatSpec.read(llama, generate.tokenizer)
    system = [{"role": "system", "content": "Be brief."}]

    def length(words: int) -> int:
        return len(
            generate.tokenizer.encode(spec.render([*system, {"role": "user", "content": "a " * words}]))
        )

    words = next(w for w in range(1, 256) if length(w) >= 253)
    room = 256 - length(words)
    expected = generate([*system, {"role": "user", "content": "a " * words}], do_sample=False,
                        max_new_tokens=room)[0]["generated_text"][-1]["content"]  # fmt: skip
    monkeypatch.setattr(sys, "stdin", io.StringIO("a " * words + "\n"))
    chat(llama, system="Be brief.", do_sample=False, max_new_tokens=8, dtype="fp32")
    out = capsys.readouterr()
    assert out.out == expected + "\n"
    said = f"lmforge: note: the reply stopped after {room} tokens, where the conversation filled the model's"
    assert said in out.err  # this model's reply runs to the end (no end-of-turn token in 2-3 tokens)
    full = next(w for w in range(words, 300) if length(w) >= 256)
    monkeypatch.setattr(sys, "stdin", io.StringIO("a " * full + "\n"))
    with pytest.raises(LmforgeError, match="1 message not answered"):
        chat(llama, system="Be brief.", do_sample=False, max_new_tokens=8, dtype="fp32")
    assert "leaving no room for a reply: shorten it" in capsys.readouterr().err


def test_commands_and_their_typos_never_reach_the_model(
    llama: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """/clear and /RESET clear as /reset; a mistyped command (/rest) was sent to the model as a
    message and answered; it is named and, from stdin, counted as not answered. A message that
    starts with a path is a message; /quit ends the session."""
    lines = ["Who is the king?", "/RESET", "/rest", "/help", "Who is the king?", "/clear", "/etc/hosts"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join([*lines, "/quit", "never read"]) + "\n"))
    with pytest.raises(LmforgeError, match=r"^1 message not answered \(see above\)$"):
        chat(llama, system="Be brief.", do_sample=False, max_new_tokens=4, dtype="fp32")
    out = capsys.readouterr()
    kept = ["Who is the king?", "/reset", "Who is the king?", "/reset", "/etc/hosts"]
    replies = expected_replies(llama, "Be brief.", kept, 4)
    assert out.out == "".join(r + "\n" for r in replies) and replies[0] == replies[1]
    assert out.err.count("(history cleared)") == 2
    assert "lmforge: not sent: unknown command /rest: /reset (or /clear) clears the history" in out.err
    assert "never read" not in out.out and len(replies) == 3


def test_no_new_tokens_is_refused_before_the_model_loads(tmp_path: Path) -> None:
    """It printed an empty reply to every message; ask refused it already."""
    for none in (0, -3):  # -3 said "must be an integer >= 0", which 0 is not either
        with pytest.raises(
            LmforgeError, match=rf"^max_new_tokens={none} must be >= 1: a reply is what is generated$"
        ):
            chat(tmp_path / "no-model", max_new_tokens=none)


def test_a_system_prompt_longer_than_the_context_is_refused_before_a_line_is_read(
    llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was blamed on each message in turn ("the message is ... tokens: shorten it")."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hi\n"))
    with pytest.raises(
        LmforgeError, match=r"^--system: the system prompt takes \d+ tokens .* context of 256"
    ) as e:
        chat(llama, system="word " * 300, do_sample=False, max_new_tokens=4, dtype="fp32")
    assert "\n" not in str(e.value)
    assert sys.stdin.read() == "Hi\n"  # nothing read


def test_a_conversation_longer_than_the_context_drops_its_oldest_turns(
    llama: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three messages of ~90 tokens and 8-token replies do not fit 256 tokens: the first turn goes
    (the system prompt stays), one line says so, and the third reply is the model's answer to the
    conversation without it."""
    lines = [f"{who} and the queen walked to the tower, the king and the queen walked to the tower {n}"
             for n, who in enumerate(["the king", "a knight", "the bishop"])]  # fmt: skip
    system = [{"role": "system", "content": "Be brief."}]
    generate = pipeline("text-generation", llama, dtype="fp32")
    turn1 = generate([*system, {"role": "user", "content": lines[0]}], do_sample=False, max_new_tokens=8)
    turn2 = generate([*turn1[0]["generated_text"], {"role": "user", "content": lines[1]}], do_sample=False,
                     max_new_tokens=8)  # fmt: skip
    whole = [*turn2[0]["generated_text"], {"role": "user", "content": lines[2]}]
    kept = [*system, *whole[3:]]  # without the first user message and its reply
    spec = ChatSpec.read(llama, generate.tokenizer)
    assert len(generate.tokenizer.encode(spec.render(whole))) + 8 > 256  # does not fit: a turn goes
    assert len(generate.tokenizer.encode(spec.render(kept))) + 8 <= 256
    turn3 = generate(kept, do_sample=False, max_new_tokens=8)[0]["generated_text"][-1]["content"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(lines) + "\n"))
    chat(llama, system="Be brief.", do_sample=False, max_new_tokens=8, dtype="fp32")
    out = capsys.readouterr()
    replies = [t[0]["generated_text"][-1]["content"] for t in (turn1, turn2)]
    assert out.out == "".join(r + "\n" for r in [*replies, turn3])
    assert out.err.splitlines() == [
        "lmforge: note: the conversation outgrew the model's context of 256 tokens: dropped its oldest turn"
    ]


def test_chat_answers_the_next_line_after_one_not_valid_utf8(llama: Path) -> None:
    """A Latin-1 byte on stdin: the tokenizer names it (a one-line LmforgeError), chat says it did
    not answer that line, and answers the next one."""
    # stdin strict, as in a UTF-8 locale other than C.UTF-8: chat reads it with surrogateescape
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parents[1] / "src"),
        "PYTHONIOENCODING": "utf-8:strict",
    }
    done = subprocess.run(
        [sys.executable, "-m", "lmforge", "chat", str(llama), "--system", "Be brief.", "--no-do-sample",
         "--max-new-tokens", "6", "--dtype", "fp32"],
        input="Who is the caf\xe9 king?\nAnd the queen?\n".encode("latin-1"), capture_output=True, env=env,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    err = done.stderr.decode().splitlines()
    # where the user typed it ("Who is the caf" is 14 characters), not in the rendered template
    assert err[0] == (
        "lmforge: not answered: the text is not valid UTF-8 (a lone surrogate U+DCE9, the undecodable"
        " byte 0xe9, at character 14)"
    ), err
    assert err[1:] == ["lmforge: error: 1 message not answered (see above)"]
    expected = expected_replies(llama, "Be brief.", ["And the queen?"], 6)
    assert done.stdout.decode() == "".join(r + "\n" for r in expected)


def test_chat_refuses_bad_models_and_options(
    llama: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = copy(llama, tmp_path)
    (model / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    for argv, error in (
        (["chat", str(model)], "has no chat template"),
        (["chat", str(llama), "--temperature", "-2"], "temperature=-2.0: must be"),
        (["chat", str(tmp_path / "nothing")], "not a model directory"),
        (["chat", str(llama), "--compile"], "needs a C++ compiler: no-such-compiler++ was not found"),
    ):
        monkeypatch.setenv("CXX", "no-such-compiler++")  # only --compile looks for one
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("lmforge: error: ") and error in err and err.count("\n") == 1


# --- the real SmolLM2-135M-Instruct ---------------------------------------------------------------
SMOLLM2_CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "Name three colors."},
    ],
    [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help you today?"},
        {"role": "user", "content": "Tell me a fact about the Moon."},
    ],
]


def test_smollm2_greedy_chat_matches_transformers(smollm2_reference: tuple, smollm2_dir: Path) -> None:
    hf_model, hf_tokenizer = smollm2_reference
    net, tokenizer = load_model(smollm2_dir)
    spec = ChatSpec.read(smollm2_dir, tokenizer)
    if spec.template is None:  # until import carries the template (issue 13): the GGUF's own
        spec.template = hf_tokenizer.chat_template
    assert spec.stops == [hf_tokenizer.convert_tokens_to_ids("<|im_end|>")]
    for messages in SMOLLM2_CHATS:
        theirs_prompt = hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
        prompt = tokenizer.encode(spec.render(messages))
        assert prompt == list(theirs_prompt)
        ours = generate_ids(net, [prompt], NEW, temperature=0, eos_id=spec.stops)[0]
        with torch.inference_mode():
            out = hf_model.generate(torch.tensor([prompt]), max_new_tokens=NEW, do_sample=False,
                                    eos_token_id=spec.stops, pad_token_id=spec.stops[0])  # fmt: skip
        theirs = [t for t in out[0, len(prompt) :].tolist() if t not in spec.stops]
        assert ours == theirs
        assert len(ours) >= 5


def test_decoding_in_bf16_by_auto_is_said(
    llama: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rounded weights answer otherwise than the trained ones (SmolLM2 does): generate and chat
    say when `--dtype auto` chose bf16, and nothing when fp32 was asked."""
    import lmforge
    from lmforge import hardware
    from lmforge.inference import autotune

    for module in (hardware, autotune):  # a CPU with bf16 units; the 64-wide model is wide enough
        monkeypatch.setattr(module, "cpu_has_bf16", lambda: True)
    said = "; --dtype fp32 keeps the weights as trained"
    lmforge.generate(llama, "hi", max_new_tokens=2, temperature=0)
    assert re.search(rf"^lmforge: decoded in bf16 .*{re.escape(said)}$", capsys.readouterr().err, re.M)
    lmforge.generate(llama, "hi", max_new_tokens=2, temperature=0, dtype="fp32")
    assert said not in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("Who is the king?\n"))
    chat(llama, do_sample=False, max_new_tokens=2)
    assert re.search(rf"^lmforge: decoding in bf16 .*{re.escape(said)}$", capsys.readouterr().err, re.M)


def test_import_keeps_the_models_bos_and_padding_for_export(tmp_path: Path) -> None:
    """An HF decoder's own BOS (a Llama 3 template's {{ bos_token }}) and its padding token were
    dropped by import, and export then named the EOS as BOS."""
    from lmforge.formats.hf_export import export_hf
    from lmforge.formats.hf_files import import_hf

    make_chat_llama(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config.update(bos_token_id=1, pad_token_id=None)  # <|im_start|>; the padding named only by token
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    named = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    named.update(bos_token="<|im_start|>", pad_token="<|im_end|>")
    (tmp_path / "hf" / "tokenizer_config.json").write_text(json.dumps(named))
    import_hf(tmp_path / "hf", tmp_path / "imported")
    imported = json.loads((tmp_path / "imported" / "config.json").read_text())
    assert (imported["bos_token_id"], imported["pad_token_id"]) == (1, 2)
    export_hf(tmp_path / "imported", tmp_path / "back")
    back = transformers.AutoTokenizer.from_pretrained(tmp_path / "back")
    assert (back.bos_token, back.pad_token) == ("<|im_start|>", "<|im_end|>")
    assert json.loads((tmp_path / "back" / "config.json").read_text())["bos_token_id"] == 1


def test_plain_text_stops_at_every_eos_id_of_generation_config(llama: Path, tmp_path: Path) -> None:
    """transformers' pipeline stops plain text at any id of generation_config.json's eos_token_id
    (Llama 3's three, Qwen2.5's two); lmforge stopped only at the tokenizer's first."""
    import lmforge
    from lmforge.pipelines import pipeline

    directory = copy(llama, tmp_path)
    net, tokenizer = load_model(directory)
    first = generate_ids(net, [tokenizer.encode("the king")], 1, 0.0)[0][0]  # the greedy next token
    set_generation(directory, eos_token_id=[2, first])
    said = pipeline("text-generation", model=directory)("the king", max_new_tokens=8, do_sample=False)
    # ended at once, as transformers' does, the ordinary token's text kept (it skips special ones only)
    assert said == [{"generated_text": "the king" + tokenizer.decode([first])}]
    assert lmforge.generate(directory, "the king", max_new_tokens=8, temperature=0) == ["the king"]


def test_a_chat_model_trained_on_more_text_keeps_its_chat_files(
    llama: Path, tmp_path: Path, corpus: Path
) -> None:
    """`train --init-from CHAT_MODEL` on plain text (domain adaptation) wrote a model without its
    chat template, generation defaults and BOS: it could no longer chat."""
    from lmforge.cli import main

    source = copy(llama, tmp_path)
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "bos_token_id": 1}))
    argv = ["train", "--out", str(tmp_path / "run"), "--init-from", str(source), f"--data.input={corpus}"]
    argv += ["--train.max_steps=1", "--train.batch_size=2", "--train.eval_batches=1", "--data.seq_len=32"]
    assert main([*argv, "--train.warmup_steps=0", "--quiet"]) == 0
    model = tmp_path / "run" / "model"
    assert (model / "chat_template.jinja").read_text() == (source / "chat_template.jinja").read_text()
    assert json.loads((model / "generation_config.json").read_text())["eos_token_id"] == [2, 0]
    assert json.loads((model / "config.json").read_text())["bos_token_id"] == 1
    assert ChatSpec.read(model, load_model(model)[1]).template is not None  # it chats


def test_an_eos_named_only_by_tokenizer_config_is_the_models(tmp_path: Path) -> None:
    """A decoder whose config.json and generation_config.json give no eos_token_id: transformers
    reads the EOS from tokenizer_config.json's eos_token; lmforge took its own default."""
    from lmforge.formats.hf_files import import_hf
    from lmforge.formats.hf_tokenizers import load_hf_tokenizer

    make_chat_llama(tmp_path / "hf")
    for name in ("config.json", "generation_config.json"):
        values = json.loads((tmp_path / "hf" / name).read_text())
        values.pop("eos_token_id")
        (tmp_path / "hf" / name).write_text(json.dumps(values))
    want = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf").eos_token_id
    assert want == 2  # <|im_end|>
    raw = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert load_hf_tokenizer(tmp_path / "hf", raw).eos_id == want
    import_hf(tmp_path / "hf", tmp_path / "imported")
    assert json.loads((tmp_path / "imported" / "config.json").read_text())["eos_token_id"] == want
