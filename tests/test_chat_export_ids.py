"""A chat fine-tune keeps its starting model's BOS and padding ids, which `lmforge export` writes:
the run's config.json kept only the EOS, so the export named the EOS as BOS and no pad, and a
template starting with `{{ bos_token }}` (Llama 3's, Mistral's, Gemma's) began every prompt with the
end of turn, in transformers and in lmforge (the J6 pass)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_chat_task import tiny_chat_model, write_chats

import lmforge
from lmforge.formats.directory import load_model
from lmforge.inference.chat import ChatSpec

transformers = pytest.importorskip("transformers")

BOS_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|endoftext|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_a_chat_fine_tunes_export_keeps_its_bos_and_pad(tmp_path: Path) -> None:
    source = tiny_chat_model(tmp_path / "llama", BOS_TEMPLATE)
    raw = json.loads((source / "config.json").read_text())
    raw.update(bos_token_id=5, pad_token_id=6)  # ordinary tokens of the tiny vocabulary, as Llama 3's are
    (source / "config.json").write_text(json.dumps(raw))
    vocab = json.loads((source / "tokenizer.json").read_text())["model"]["vocab"]
    names = {i: t for t, i in vocab.items()}
    named = {"bos_token": names[5], "pad_token": names[6], "eos_token": "<|endoftext|>"}
    (source / "tokenizer_config.json").write_text(json.dumps(named))
    run = tmp_path / "run"
    lmforge.train(None, ["--data.task=chat", f"--data.input={write_chats(tmp_path / 'c.jsonl', 40)}",
                         f"--train.init_from={source}", "--train.max_steps=1", "--train.batch_size=4",
                         "--train.dtype=fp32", "--train.max_minutes=0"], out=run, quiet=True)  # fmt: skip
    kept = json.loads((run / "model" / "config.json").read_text())
    assert (kept["bos_token_id"], kept["pad_token_id"]) == (5, 6)
    lmforge.export_hf(run, tmp_path / "hf")
    exported = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (exported["bos_token_id"], exported["pad_token_id"]) == (5, 6)
    messages = [{"role": "user", "content": "hi"}]
    theirs = transformers.AutoTokenizer.from_pretrained(source)
    expected = theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    for directory in (run / "model", tmp_path / "hf"):
        _, tokenizer = load_model(directory)
        assert ChatSpec.read(directory, tokenizer).render(messages) == expected, directory
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == expected
