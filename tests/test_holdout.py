"""The labelled tasks' held-out split: seeded, and never scoring what was trained on."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from hf_helpers import make_hf_model

from lmforge.data.holdout import hold_out
from lmforge.errors import LmforgeError
from lmforge.train.classify import finetune_classify


def _split(items: list[str], fraction: float = 0.2, seed: int = 1) -> tuple[list[str], list[str], list[str]]:
    said: list[str] = []
    options = {"fraction": fraction, "seed": seed, "source": "d.jsonl", "noun": "example"}
    train, val = hold_out(items, key=str.lower, say=said.append, **options)
    return train, val, said


def test_distinct_items_split_as_a_plain_seeded_shuffle() -> None:
    """Without repeats the split is the one every documented run used: shuffle, hold out the tail."""
    items = [f"text {i}" for i in range(103)]
    train, val, said = _split(items, 0.1, 1337)
    shuffled = list(items)
    random.Random(1337).shuffle(shuffled)
    assert (train, val, said) == (shuffled[:-10], shuffled[-10:], [])


def test_the_copies_of_an_item_stay_on_one_side() -> None:
    items = [f"text {i % 30}" for i in range(60)] + ["TEXT 3"]  # each text twice, one thrice (by key)
    train, val, said = _split(items)
    assert Counter(train + val) == Counter(items)  # nothing lost
    held = {t.lower() for t in val}
    assert len(held) == int(30 * 0.2) and not held & {t.lower() for t in train}
    assert said == [
        f"lmforge: note: d.jsonl: 31 examples repeat an earlier one; each example's copies stay on one"
        f" side of the split, so validation scores only unseen examples ({len(val)} held out)"
    ]


def test_one_repeat_is_said_in_the_singular() -> None:
    said = _split([f"t{i}" for i in range(20)] + ["t0"])[2]
    assert said[0].startswith("lmforge: note: d.jsonl: 1 example repeats an earlier one; each example's")


def test_too_few_distinct_items_is_one_error() -> None:
    message = r"^d\.jsonl: 1 distinct example with data\.val_fraction=0\.2 leave 0 held out and 1 to train on"
    with pytest.raises(LmforgeError, match=message):
        _split(["same"] * 10)


def test_too_few_items_is_one_error() -> None:
    message = r"^d\.jsonl: 3 examples with data\.val_fraction=0\.2 leave 0 held out and 3 to train on"
    with pytest.raises(LmforgeError, match=message + r"; both need at least one$"):
        _split(["a", "b", "c"])


def test_finetune_classify_validates_on_unseen_texts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Some texts three times: the run holds out the copies of a quarter of the distinct texts (a
    plain split of the rows would hold out a different count, with copies on both sides)."""
    rows = [{"text": f"review number {i}", "label": "positive" if i % 2 else "negative"} for i in range(40)]
    rows += [r for r in rows if int(r["text"].split()[-1]) % 4 == 0] * 2
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    make_hf_model("bert", tmp_path / "bert")
    out = tmp_path / "clf"
    result = finetune_classify(
        tmp_path / "bert",
        data,
        "negative,positive",
        out,
        epochs=1,
        batch_size=5,
        val_fraction=0.25,
        dtype="fp32",
    )
    said = capsys.readouterr()
    assert f"lmforge: note: {data}: 20 examples repeat an earlier one;" in said.out + said.err
    train, val = hold_out([r["text"] for r in rows], key=lambda t: t, fraction=0.25, seed=0, source="",
                          noun="", say=lambda _: None)  # fmt: skip
    assert not set(train) & set(val) and len(set(val)) == 10 and len(val) != int(len(rows) * 0.25)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["train_examples"], summary["heldout_examples"]) == (len(train), len(val))
    assert result["steps"] == -(-len(train) // 5)  # an epoch of the rows the task trains on (48: 10 steps)
