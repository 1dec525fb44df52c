"""A classification run resumed with `train --resume` keeps the rules its checkpoint was trained
with (train/tasks/classification_rules.py). Since 2026-12-07 a decoder classifier gets a pad id
(config.json's pad_token_id: `last` pooling skips a trailing <|pad|>) and reads a text with its
tokenizer's special tokens (config.json's add_special_tokens: tests/hf_helpers.py's add_bos puts a
BOS first). A checkpoint written before lacks those keys (simulated here by removing them from a
run's checkpoint and model/, as lmforge wrote them then, manifest written again); resumed, the run
used to switch to the new rules mid-run and record them. The oracle: every step's training loss
(the whole training split is one batch, a constant schedule, no dropout) is the cross-entropy of the
previous step's checkpoint as `lmforge.classify` reads it under the rules its config.json records:
bare texts and the mask's last token for the old checkpoint and every one the resumed run writes,
the BOS and the pad rule for a new run's.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hf_helpers import add_bos

import lmforge
from lmforge.config import ModelConfig
from lmforge.data.labelled import read_labelled
from lmforge.errors import LmforgeError
from lmforge.formats.directory import write_model_dir
from lmforge.model.gpt import GPT
from lmforge.tokenization.tokenizer import Tokenizer
from lmforge.train.checkpoint import write_manifest
from lmforge.train.metrics import read_metrics
from lmforge.train.tasks.classification import split_labelled
from lmforge.train.tasks.classification_rules import Rules, resumed_rules

LABELS = ["negative", "positive"]
WORDS = ["the", "king", "good", "crown", "night", "grim", "lady", "fair", "sword", "day", "queen"]
BOS = 5  # an ordinary byte token of the BPE, made the post-processor's BOS by add_bos
PAD = 1  # lmforge's <|pad|>
VAL = 0.25
TOL = 1e-5
SEED = 0


def _base(directory: Path) -> Path:
    """lmforge's own GPT and byte-level BPE (<|pad|> 1) whose tokenizer puts a BOS before a text."""
    tok = Tokenizer.train_bpe([" ".join(WORDS)] * 50, vocab_size=300)
    config = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=tok.vocab_size)
    torch.manual_seed(0)
    write_model_dir(directory, config, GPT(config).state_dict(), tok)
    add_bos(directory, BOS)
    return directory


def _data(path: Path) -> Path:
    """Texts of both labels, a third ending in <|pad|>: the two pooling rules read those apart."""
    rng = random.Random(0)
    with path.open("w") as f:
        for i in range(32):
            label = rng.choice(LABELS)
            words = [rng.choice(WORDS) for _ in range(rng.randint(1, 5))]
            words.append("good" if label == "positive" else "grim")
            text = " ".join(words) + ("<|pad|>" if i % 3 == 0 else "")
            f.write(json.dumps({"text": text, "label": label}) + "\n")
    return path


def _train_rows(data: Path) -> list[tuple[str, int]]:
    rows = read_labelled(data, LABELS, "text", "label", "single_label_classification")
    return split_labelled(rows, VAL, SEED, str(data), lambda _: None)[0]  # type: ignore[return-value]


def _run(base: Path, data: Path, out: Path, steps: int) -> None:
    overrides = ["--data.task=classification", f"--data.input={data}", f"--data.labels={','.join(LABELS)}",
                 f"--train.init_from={base}", f"--train.batch_size={len(_train_rows(data))}",
                 f"--data.val_fraction={VAL}", "--train.dtype=fp32", "--train.schedule=constant",
                 "--train.warmup_steps=0", "--train.max_minutes=0", "--train.lr=3e-3", "--model.dropout=0",
                 "--train.classifier_dropout=0", f"--train.seed={SEED}",
                 "--train.log_interval=1", "--train.checkpoint_interval=1", "--train.keep_checkpoints=100",
                 "--train.eval_interval=100", f"--train.max_steps={steps}"]  # fmt: skip
    lmforge.train(None, overrides, out=out, quiet=True)


def _as_old(directory: Path, keys: tuple[str, ...]) -> None:
    """config.json as lmforge wrote it before the new rules: without `keys`."""
    file = directory / "config.json"
    raw = json.loads(file.read_text())
    file.write_text(json.dumps({k: v for k, v in raw.items() if k not in keys}, indent=2) + "\n")


def _loss(checkpoint: Path, rows: list[tuple[str, int]]) -> float:
    """The mean cross-entropy of `checkpoint` on `rows`, read as lmforge.classify reads texts."""
    texts = [text for text, _ in rows]
    scores = lmforge.classify(checkpoint, texts, top_k=0, function_to_apply="none", batch_size=len(texts))
    logits = torch.tensor([[{s["label"]: s["score"] for s in r["labels"]}[name] for name in LABELS]
                           for r in scores])  # fmt: skip
    return float(F.cross_entropy(logits, torch.tensor([label for _, label in rows])))


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run) if "loss" in r}


def _check_steps(run: Path, steps: range, rows: list[tuple[str, int]]) -> None:
    """Each step's training loss is that of the checkpoint before it, read by its own config.json."""
    losses = _losses(run)
    for step in steps:
        before = run / "checkpoints" / f"step_{step - 1:08d}"
        assert abs(losses[step] - _loss(before, rows)) < TOL, step


@pytest.mark.parametrize("keys", [("pad_token_id", "add_special_tokens"), ("add_special_tokens",)])
def test_a_resumed_classifier_keeps_its_checkpoints_rules(
    keys: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    base, data = _base(tmp_path / "base"), _data(tmp_path / "train.jsonl")
    rows = _train_rows(data)
    assert any(text.endswith("<|pad|>") for text, _ in rows)
    run = tmp_path / "run"
    _run(base, data, run, 3)
    # (c) a new run has the new rules: a pad id, BOS first, each recorded, each step read so
    new = json.loads((run / "model" / "config.json").read_text())
    assert new["pad_token_id"] == PAD and new["add_special_tokens"] is True
    model, tokenizer = lmforge.load(run)
    assert model.pad_id == PAD and tokenizer.encode_prompt("king good")[0] == BOS
    _check_steps(run, range(2, 4), rows)
    # the step-3 checkpoint and model/ as an older lmforge wrote them
    last = run / "checkpoints" / "step_00000003"
    for directory in (last, run / "model"):
        _as_old(directory, keys)
    write_manifest(last)
    old = lmforge.load(last)
    assert old[0].pad_id == (None if "pad_token_id" in keys else PAD)
    assert tokenizer.encode_prompt("king good")[1:] == old[1].encode_prompt("king good")  # bare

    capsys.readouterr()
    lmforge.train(None, ["--train.max_steps=6"], resume=run)
    said = capsys.readouterr()
    line = next(x for x in (said.out + said.err).splitlines() if x.startswith("classifier: resumed from"))
    assert f"reading texts bare (without {tokenizer.hf.id_to_token(BOS)!r})" in line
    assert ("no pad id" in line) == ("pad_token_id" in keys)
    # (a) every model directory the resumed run writes records the old rules
    for directory in [run / "model", *(run / "checkpoints" / f"step_{s:08d}" for s in (4, 5, 6))]:
        raw = json.loads((directory / "config.json").read_text())
        assert not any(key in raw for key in keys), directory
        assert "pad_token_id" in keys or raw["pad_token_id"] == PAD
    # the tokenizer.json written is the run's own, its BOS kept (a classifier without
    # add_special_tokens drops it when loaded, as before)
    assert json.loads((run / "model" / "tokenizer.json").read_text())["post_processor"] is not None
    # (b) the resumed steps read texts bare (and pool as the checkpoint did)
    _check_steps(run, range(4, 7), rows)


def test_a_checkpoints_rules_read_from_its_config(tmp_path: Path) -> None:
    """A new run and an encoder have the new rules; a hand-edited add_special_tokens is one line."""
    assert resumed_rules(None, encoder=False) == Rules()
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "lmforge-classifier"}))
    assert resumed_rules(tmp_path, encoder=True) == Rules()
    assert resumed_rules(tmp_path, encoder=False) == Rules(False, False, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"pad_token_id": 1, "add_special_tokens": "yes"}))
    with pytest.raises(LmforgeError, match=r"config.json: add_special_tokens='yes' must be true or false$"):
        resumed_rules(tmp_path, encoder=False)
