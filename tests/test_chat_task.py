"""Instruction tuning (data.task = "chat"): which tokens are targets, what the data reader refuses,
the length-grouped loader, and a short run on a tiny random Llama with a chat template. The
engines and kill -9 resume: tests/test_tasks_on_engines.py."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from hf_helpers import make_hf_model

from lmforge.data.chat_data import ChatLoader, collate, read_chats
from lmforge.data.loader import IGNORE
from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model
from lmforge.inference.chat_masks import assistant_spans, encode_chat
from lmforge.inference.instruct_eval import eval_instruct, sentiment_scores
from lmforge.train.loop import train
from lmforge.train.losses import lm_loss

# SmolLM2's template shape with the tiny tokenizer's one special token as <|im_start|>/<|im_end|>
TEMPLATE = (
    "{% for m in messages %}<|endoftext|>{{ m['role'] }}\n{{ m['content'] }}<|endoftext|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|endoftext|>assistant\n{% endif %}"
)
# the same with the assistant's turns marked, as transformers' return_assistant_tokens_mask wants
TAGGED = (
    "{% for m in messages %}<|endoftext|>{{ m['role'] }}\n{% if m['role'] == 'assistant' %}"
    "{% generation %}{{ m['content'] }}<|endoftext|>{% endgeneration %}{% else %}{{ m['content'] }}"
    "<|endoftext|>{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}<|endoftext|>assistant\n{% endif %}"
)
WORDS = {"good": "bon", "bad": "mauvais", "cat": "chat", "dog": "chien", "red": "rouge", "the": "le"}
CHAT = [
    {"role": "system", "content": "You translate."},
    {"role": "user", "content": "the red cat"},
    {"role": "assistant", "content": "le chat rouge"},
    {"role": "user", "content": "the dog"},
    {"role": "assistant", "content": "le chien"},
]


def tiny_chat_model(directory: Path, template: str = TEMPLATE) -> Path:
    """A random Llama (hf_helpers) with a chat template: a chat model in miniature."""
    make_hf_model("llama", directory)
    (directory / "chat_template.jinja").write_text(template)
    return directory


def write_chats(path: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        en = [rng.choice(list(WORDS)) for _ in range(rng.randint(1, 4))]
        test = i % 10 == 0  # its own words: a train copy of a test conversation is left out
        user = "fr: " + " ".join(en) + (f" ({i})" if test else "")
        rows.append({"messages": [{"role": "user", "content": user},
                                  {"role": "assistant", "content": " ".join(WORDS[w] for w in en)}],
                     "split": "test" if test else "train"})  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_chat_model(tmp_path_factory.mktemp("chat") / "llama")


def test_prefix_rendering_finds_what_generation_blocks_mark(model_dir: Path) -> None:
    """Without {% generation %} blocks the assistant's turns are found by rendering prefixes; they
    are the same spans the blocks mark: each reply and its end-of-turn token, not the newline."""
    _, tokenizer = load_model(model_dir)
    text, spans = assistant_spans(TEMPLATE, CHAT, {})
    tagged_text, tagged = assistant_spans(TAGGED, CHAT, {})
    assert text == tagged_text and spans == tagged
    assert [text[s:e] for s, e in spans] == ["le chat rouge<|endoftext|>", "le chien<|endoftext|>"]
    ids, mask = encode_chat(tokenizer, TEMPLATE, CHAT, {})
    eot = tokenizer.hf.token_to_id("<|endoftext|>")
    marked = [i for i, m in zip(ids, mask, strict=True) if m]
    assert marked.count(eot) == 2 and tokenizer.hf.decode(marked, skip_special_tokens=False) == (
        "le chat rouge<|endoftext|>le chien<|endoftext|>"
    )


def test_mask_is_transformers_assistant_tokens_mask(model_dir: Path) -> None:
    transformers = pytest.importorskip("transformers")
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"))
    hf.chat_template = TAGGED
    out = hf.apply_chat_template(CHAT, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    _, tokenizer = load_model(model_dir)
    ids, mask = encode_chat(tokenizer, TEMPLATE, CHAT, {})
    assert ids == list(out["input_ids"]) and [int(m) for m in mask] == list(out["assistant_masks"])


def _grads(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    model.zero_grad()
    lm_loss(model, inputs, targets).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_only_assistant_tokens_carry_gradient(model_dir: Path) -> None:
    """The same context (inputs) with one token of the conversation changed as a target: a user's
    token changes no gradient, an assistant's does."""
    model, tokenizer = load_model(model_dir)
    ids, mask = encode_chat(tokenizer, TEMPLATE, CHAT[1:3], {})  # within the 64-token context
    inputs, _, targets = collate([(ids, mask)], 0)
    text, _ = assistant_spans(TEMPLATE, CHAT[1:3], {})
    user = tokenizer.hf.encode(text, add_special_tokens=False).char_to_token(text.index("red"))
    assert not mask[user]
    reply = next(i for i, m in enumerate(mask) if m)
    base = _grads(model, inputs, targets)
    for position, changes in ((user, False), (reply, True)):
        changed = list(ids)
        changed[position] = (changed[position] + 7) % tokenizer.vocab_size
        new_targets = collate([(changed, mask)], 0)[2]
        assert torch.equal(_grads(model, inputs, new_targets), base) is not changes, position
    assert (targets != IGNORE).sum() == sum(mask[1:])


GOOD = '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}'


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not JSON (Expecting value at column 1)"),
        # cut short: json said "line 2 column 1" (the line's own newline) beside the file's line 2
        ('{"messages": [', "not JSON (Expecting value at column 15)"),
        ('{"text": "x"}', 'needs {"messages"'),
        # a .json array of conversations, on one line or indented: chat data is JSON Lines
        (f"[{GOOD}, {GOOD}]", "a JSON array, but chat data is JSON Lines"),
        ("[", "a JSON array, but chat data is JSON Lines"),
        ('{"messages": [{"role": "user"}]}', "messages[0] needs a string 'role' and a string 'content'"),
        ('{"messages": [{"role": "user", "content": "hi"}]}', "no assistant message"),
        (  # the reply under a misspelt role: the roles are named
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]}',
            "no assistant message (roles: 'user', 'robot'), so nothing to learn from",
        ),
        (
            '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],'
            ' "split": "dev"}',
            "split 'dev'",
        ),  # fmt: skip
        (  # half of an emoji's surrogate pair: a traceback from the tokenizer until 2026-12-08
            r'{"messages": [{"role": "user", "content": "bad \ud800 x"},'
            ' {"role": "assistant", "content": "b"}]}',
            "messages[0].content: the text is not valid UTF-8 (a lone surrogate U+D800, at character 4)",
        ),
        (
            r'{"tools": [{"name": "\udc00"}], "messages": [{"role": "user", "content": "\ud83d\ude00"},'
            ' {"role": "assistant", "content": "b"}]}',
            "not valid UTF-8 (a lone surrogate U+DC00)",
        ),  # fmt: skip
    ],
)
def test_a_bad_line_is_one_error_naming_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "chats.jsonl"
    path.write_text(f"{GOOD}\n{line}\n")
    with pytest.raises(LmforgeError, match=rf"^{path}:2: .*") as e:
        read_chats(path)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_bad_byte_and_a_missing_file_are_named_by_line_and_plainly(tmp_path: Path) -> None:
    """The line of the bad byte, not the decoder's offset into a read-ahead chunk."""
    good = '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n'
    path = tmp_path / "chats.jsonl"
    path.write_bytes((good * 5).encode() + good.replace('"b"', '"caf\xe9"').encode("latin-1") + good.encode())
    with pytest.raises(LmforgeError, match=rf"^{path}:6: not valid UTF-8 \(byte \d+ of the file\)$"):
        read_chats(path)
    with pytest.raises(LmforgeError, match=rf"^{tmp_path / 'none.jsonl'}: no such file$"):
        read_chats(tmp_path / "none.jsonl")


def test_unknown_role_names_file_and_line(tmp_path: Path, model_dir: Path) -> None:
    path = tmp_path / "chats.jsonl"
    write_chats(path, 40)
    with path.open("a") as f:
        f.write('{"messages": [{"role": "robot", "content": "a"}, {"role": "assistant", "content": "b"}]}\n')
    with pytest.raises(LmforgeError, match=rf"{path}:41\[0\]: unknown role 'robot'"):
        train(None, _recipe(path, model_dir, 2), out=tmp_path / "run", quiet=True)
    # alone in its file: the split's "0 held out" was said first, and the role only once that was fixed
    alone = tmp_path / "one.jsonl"
    alone.write_text(
        '{"messages": [{"role": "robot", "content": "a"}, {"role": "assistant", "content": "b"}]}\n'
    )
    with pytest.raises(LmforgeError, match=rf"^{alone}:1\[0\]: unknown role 'robot'"):
        train(None, _recipe(alone, model_dir, 2), out=tmp_path / "run2", quiet=True)


def test_a_template_refusing_a_conversation_names_its_line(tmp_path: Path) -> None:
    """A template's raise_exception (Gemma's "roles must alternate") said only "chat template: ...":
    in a file of thousands of conversations, no way to find the one."""
    strict = (
        "{% for m in messages %}{% if not loop.first and m['role'] == messages[loop.index0 - 1]['role'] %}"
        "{{ raise_exception('roles must alternate') }}{% endif %}{% endfor %}"
    )
    model = tiny_chat_model(tmp_path / "strict", strict + TEMPLATE)
    path = write_chats(tmp_path / "chats.jsonl", 40)
    with path.open("a") as f:
        f.write('{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},'
                ' {"role": "assistant", "content": "c"}]}\n')  # fmt: skip
    with pytest.raises(LmforgeError, match=rf"^{path}:41: chat template: roles must alternate"):
        train(None, _recipe(path, model, 2), out=tmp_path / "run", quiet=True)


def test_loader_groups_lengths_and_resumes_exactly() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(3, 60) for _ in range(300)]
    examples = [([1] * n, [True] * n) for n in lengths]
    loader = ChatLoader(examples, batch_size=4, micro_batch_size=2, pad_id=0, seed=3)
    assert loader.steps_per_epoch == 75
    widths = []
    seen = []
    for _ in range(loader.steps_per_epoch):
        step = loader.next_step()
        assert len(step) == 2
        widths += [b[0].shape[1] for b in step]
        seen += [int(b[1].sum()) for b in step]
    padded = sum(w * 2 for w in widths)
    assert sum(seen) == sum(len(ids) - 1 for ids, _ in examples)  # one epoch: every example once
    assert padded < 1.1 * sum(seen)  # grouped: little padding (random batches pad ~40%)
    state = loader.state_dict()
    ahead = [loader.next_step() for _ in range(3)]
    again = ChatLoader(examples, batch_size=4, micro_batch_size=2, pad_id=0, seed=0)
    again.load_state_dict(state)
    for a, b in zip(ahead, [again.next_step() for _ in range(3)], strict=True):
        assert all(torch.equal(x, y) for m, n in zip(a, b, strict=True) for x, y in zip(m, n, strict=True))


def _recipe(data: Path, model: Path, steps: int) -> list[str]:
    return ["--data.task=chat", f"--data.input={data}", f"--train.init_from={model}",
            f"--train.max_steps={steps}", "--train.batch_size=8", "--train.lr=3e-3", "--train.warmup_steps=2",
            "--train.eval_interval=10", "--train.dtype=fp32"]  # fmt: skip


def test_fine_tune_learns_and_exports_a_chat_model(tmp_path: Path, model_dir: Path) -> None:
    data = write_chats(tmp_path / "chats.jsonl", 200)
    summary = train(None, _recipe(data, model_dir, 30), out=tmp_path / "run", quiet=True)
    assert summary["test_conversations_left_out"] == 20  # never trained on
    assert summary["train_conversations"] + summary["heldout_conversations"] == 180
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val = [r["val_loss"] for r in lines if "val_loss" in r]
    assert val[-1] < val[0] - 1.0
    exported = tmp_path / "run" / "model"
    assert (exported / "chat_template.jinja").read_text() == TEMPLATE
    model, _ = load_model(exported)
    assert model.config.n_layer == 2


def test_empty_assistant_replies_are_said(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty reply trains the model to answer nothing: trained on, but said, even with --quiet."""
    data = write_chats(tmp_path / "chats.jsonl", 40)
    lines = data.read_text().splitlines()
    for n in (1, 3):  # lines 2 and 4 (both train: every tenth is test)
        record = json.loads(lines[n])
        record["messages"][-1]["content"] = " "
        lines[n] = json.dumps(record)
    data.write_text("\n".join(lines) + "\n")
    train(None, _recipe(data, model_dir, 1), out=tmp_path / "run", quiet=True)
    said = "2 conversations with an empty assistant reply (lines 2, 4): the model learns to answer nothing"
    assert f"lmforge: warning: {data}: {said}" in capsys.readouterr().err


def test_a_model_without_chat_template_is_one_error(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    make_hf_model("llama", plain)
    data = write_chats(tmp_path / "chats.jsonl", 40)
    with pytest.raises(LmforgeError, match=rf"^{plain}: has no chat template"):
        train(None, _recipe(data, plain, 2), out=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_sentiment_counts_the_first_word_only() -> None:
    answers = ["Positive.", "The review is positive", "negative, clearly", "positive or negative"]
    scores = sentiment_scores(answers, ["positive", "positive", "negative", "positive"])
    assert scores == {"accuracy": 0.75, "label_mentioned": 0.75}
    # the first whitespace-separated word without its punctuation, as documented: a hedge split at
    # "/" or "-" was credited by its first half
    hedges = ["positive/negative", "Positive-or-negative", "positive|negative"]
    assert sentiment_scores(hedges, ["positive"] * 3)["accuracy"] == 0.0
    kept = ["**Positive**", "- negative", "«Positive»!", "\nNegative: it drags"]
    assert sentiment_scores(kept, ["positive", "negative", "positive", "negative"])["accuracy"] == 1.0
    # a subset whose golds are all one label: the test split's other label still counts against
    # an answer naming both (the labels came from the subset's golds alone)
    assert sentiment_scores(["positive or negative"], ["positive"])["label_mentioned"] == 1.0
    # a label with punctuation or a space: its answer stripped as the label is (neither counted)
    scores = sentiment_scores(
        ["Non-toxic.", "very positive!", "very"], ["non-toxic", "very positive", "very positive"]
    )
    assert scores == {"accuracy": 2 / 3, "label_mentioned": 2 / 3}
    assert (
        sentiment_scores(["positive or negative"], ["positive"], {"Positive", "negative"})["label_mentioned"]
        == 0.0
    )


def test_a_label_inside_a_longer_one_is_no_second_mention() -> None:
    """The exact gold answer counts, though its label holds another label's words ("toxic" in
    "non-toxic"): it scored as naming both, so as wrong (until 2026-12-07)."""
    both = ["very positive", "positive"]
    assert sentiment_scores(both, both) == {"accuracy": 1.0, "label_mentioned": 1.0}
    labels = {"toxic", "non-toxic"}
    assert sentiment_scores(["Non-toxic."], ["non-toxic"], labels)["label_mentioned"] == 1.0
    assert sentiment_scores(["It is non-toxic, not toxic"], ["non-toxic"], labels)["label_mentioned"] == 0.0
    assert sentiment_scores(["very positive, or positive"], ["positive"], set(both))["label_mentioned"] == 0.0
    assert sentiment_scores(["Toxic"], ["toxic"], labels)["label_mentioned"] == 1.0


def test_eval_instruct_answers_as_transformers_greedy_does(tmp_path: Path, model_dir: Path) -> None:
    """The prompt is the chat template's with add_generation_prompt; greedy decoding to the
    end-of-turn token gives transformers' generate() answer on the same model."""
    transformers = pytest.importorskip("transformers")
    rows = [{"kind": kind, "split": split, "messages": [{"role": "user", "content": f"{kind} {i}"},
                                                        {"role": "assistant", "content": "positive"}]}
            for i, (kind, split) in enumerate([("translation", "test"), ("sentiment", "test"),
                                               ("sentiment", "train"), ("sentiment", "test")])]  # fmt: skip
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = eval_instruct(
        model_dir, data, max_new_tokens=6, dtype="fp32", out=tmp_path / "r.json", quiet=True
    )
    written = json.loads((tmp_path / "r.json").read_text())
    answers = written.pop("answers")  # --out holds every answer, to check the figures by hand
    assert written == result
    assert [a["line"] for a in answers["sentiment"]] == [2, 4] and len(answers["translation"]) == 1
    assert [{k: v for k, v in a.items() if k != "line"} for a in answers["sentiment"]] == result["sentiment"][
        "samples"
    ]
    assert result["translation"]["items"] == 1 and result["sentiment"]["items"] == 2
    assert {"bleu", "chrf", "bleu_signature"} <= set(result["translation"])
    hf = transformers.LlamaForCausalLM.from_pretrained(model_dir).eval()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"))
    tok.chat_template = TEMPLATE
    for kind, sample in (("translation", result["translation"]["samples"][0]),
                         ("sentiment", result["sentiment"]["samples"][1])):  # fmt: skip
        messages = [{"role": "user", "content": sample["prompt"]}]
        prompt = tok.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        out = hf.generate(**prompt, max_new_tokens=6, do_sample=False, eos_token_id=0, pad_token_id=0)
        expected = tok.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        assert sample["answer"] == expected, kind


def test_a_gold_after_an_assistant_message_is_a_new_turn(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """[user, assistant "Sure.", assistant gold]: the prompt is transformers'
    apply_chat_template(messages[:-1], add_generation_prompt=True), as documented; it continued
    the "Sure." message instead (until 2026-12-07). The answers' "prompt" is the user's message
    (it was "Sure.", the message before the gold)."""
    transformers = pytest.importorskip("transformers")
    from lmforge.inference import instruct_eval

    messages = [{"role": "user", "content": "fr: the cat"}, {"role": "assistant", "content": "Sure."},
                {"role": "assistant", "content": "le chat"}]  # fmt: skip
    data = tmp_path / "items.jsonl"
    data.write_text(json.dumps({"kind": "translation", "split": "test", "messages": messages}) + "\n")
    seen: list[list[int]] = []

    def answer_all(net: object, prompts: list[list[int]], *rest: object) -> list[list[int]]:
        seen.extend(prompts)
        return [[] for _ in prompts]

    monkeypatch.setattr(instruct_eval, "answer_all", answer_all)
    result = eval_instruct(model_dir, data, dtype="fp32", quiet=True)
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"))
    tok.chat_template = TEMPLATE
    expected = tok.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
    assert expected.endswith("Sure.<|endoftext|>\n<|endoftext|>assistant\n")
    assert seen == [tok.encode(expected)]
    assert result["translation"]["samples"][0]["prompt"] == "fr: the cat"


def test_eval_instruct_batches_answer_as_one_at_a_time(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prompts of different lengths (longest first in the file) decoded 3 at a time, left-padded,
    give the answers of one at a time, in the file's order."""
    from lmforge.inference import instruct_eval

    monkeypatch.setattr(instruct_eval, "SAMPLES", 7)  # show every answer
    rows = [{"kind": "translation", "split": "test",
             "messages": [{"role": "user", "content": "ab " * (6 - i) + str(i)},
                          {"role": "assistant", "content": "x"}]} for i in range(7)]  # fmt: skip
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    one, three = (
        eval_instruct(model_dir, data, max_new_tokens=8, dtype="fp32", quiet=True, batch_size=b)
        for b in (1, 3)
    )
    assert one["translation"]["bleu"] == three["translation"]["bleu"]
    assert one["translation"]["samples"] == three["translation"]["samples"]
    with pytest.raises(LmforgeError, match="batch_size=0 must be >= 1"):
        eval_instruct(model_dir, data, batch_size=0)


def test_the_shipped_instruction_set_rebuilds_and_keeps_test_apart() -> None:
    from data.build_instructions import OUTPUT, build, norm

    data, records = build()
    assert data == OUTPUT.read_bytes()  # data/build_instructions.py reproduces the shipped file
    chats = read_chats(OUTPUT)
    assert [c.split for c in chats] == [r["split"] for r in records] and len(chats) == 3400
    test = {norm(c.messages[0]["content"]) for c in chats if c.split == "test"}
    train = [norm(c.messages[0]["content"]) for c in chats if c.split == "train"]
    assert len(test) == 400 and not test & set(train) and len(set(train)) == len(train)


def test_a_chat_fine_tune_keeps_the_models_padding_sides(tmp_path: Path, model_dir: Path) -> None:
    """The run's model wrote only the template's variables to tokenizer_config.json: a base whose
    tokenizer pads on the left (Llama's, Gemma's) came back padding on the right."""
    import shutil

    base = tmp_path / "base"
    shutil.copytree(model_dir, base)
    named = base / "tokenizer_config.json"
    named.write_text(json.dumps({**(json.loads(named.read_text()) if named.exists() else {}),
                                 "padding_side": "left", "truncation_side": "left"}))  # fmt: skip
    train(None, _recipe(write_chats(tmp_path / "chats.jsonl", 40), base, 1), out=tmp_path / "run", quiet=True)
    written = json.loads((tmp_path / "run" / "model" / "tokenizer_config.json").read_text())
    assert (written["padding_side"], written["truncation_side"]) == ("left", "left")
