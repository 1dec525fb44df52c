"""eval-instruct at the model's context: a test item longer than it is named by its line before
any decoding, and answers stop where the context is full (lmforge chat's rule), never sliding a
window that no longer sees the instruction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_chat_task import tiny_chat_model

from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model
from lmforge.inference import instruct_eval
from lmforge.inference.generate import generate_ids
from lmforge.inference.instruct_eval import answer_all, eval_instruct


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_chat_model(tmp_path_factory.mktemp("ctx") / "llama")  # a context of 64 tokens


def _items(path: Path, prompts: list[str]) -> Path:
    rows = [{"kind": "translation", "split": "test", "messages": [{"role": "user", "content": p},
             {"role": "assistant", "content": "x"}]} for p in prompts]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_an_item_longer_than_the_context_is_named_before_decoding(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It said "prompt 7 is 214 tokens" (its rank in a sorted batch) after decoding the kinds before
    it, and advised --truncate-prompt, which eval-instruct does not have."""

    def answer_all(*args: object) -> None:
        raise AssertionError("decoded before the lengths were checked")

    monkeypatch.setattr(instruct_eval, "answer_all", answer_all)
    data = _items(tmp_path / "items.jsonl", ["ab", "cd", "ab " * 80])
    with pytest.raises(LmforgeError) as e:
        eval_instruct(model_dir, data, dtype="fp32", quiet=True)
    assert str(e.value).startswith(f"{data}:3: the prompt is ")
    assert "longer than the model's context of 64" in str(e.value) and "truncate" not in str(e.value)


def test_answers_stop_where_the_context_is_full(model_dir: Path) -> None:
    """Each row stops at its own room (64 - its prompt), batched or alone, and its tokens are
    those of an undisturbed decoding; it used to slide on to max_new_tokens."""
    net, _ = load_model(model_dir)
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(1, 50, (n,), generator=gen).tolist() for n in (60, 50, 20)]
    alone = [answer_all(net, [p], 20, None, 1, None)[0] for p in prompts]
    assert [len(a) for a in alone] == [4, 14, 20]
    assert answer_all(net, prompts, 20, None, 3, None) == alone
    for p, a in zip(prompts, alone, strict=True):
        assert a == generate_ids(net, [p], len(a), temperature=0.0)[0]


def test_the_answers_stopped_at_the_context_are_counted(tmp_path: Path, model_dir: Path) -> None:
    data = _items(tmp_path / "items.jsonl", ["ab " * 13, "ab"])
    result = eval_instruct(model_dir, data, max_new_tokens=40, dtype="fp32", quiet=True)
    assert result["translation"]["stopped_at_context"] == 1
