"""Hugging Face sequence classifiers that are not single-label: multi-label heads
(`problem_type="multi_label_classification"`, toxicity and emotion models), regression heads and
heads of one output (reward models, cross-encoders), for the encoders (BERT, DistilBERT, RoBERTa)
and the decoders (GPT-2, Llama, Qwen2), checked against transformers on tiny random models built
here (tests/test_hf_classifiers.py's and tests/test_hf_decoder_classifiers.py's builders).

What is compared: logits of a padded batch within 1e-5 of transformers' own model, directly and
after `lmforge import`; `pipeline("text-classification")` against transformers' pipeline on the
same directory (same labels in the same order, scores within 1e-5) for the top_k options and each
function_to_apply; `lmforge classify`'s scores; the export read back by transformers (same
problem_type, num_labels and id2label, same logits, same pipeline results). And the one-line
errors: a problem_type transformers does not have, a function_to_apply it does not have;
eval-classify's figures on such heads; and what finetune-classify says when it starts from such a
head with other labels (it trains a new single-label head on the body).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hf_helpers import load_whole
from test_hf_classifiers import TEXTS, TOL, _assert_same_results, _max_diff
from test_hf_classifiers import _batch as encoder_batch
from test_hf_classifiers import save_hf as save_encoder
from test_hf_decoder_classifiers import TEXTS as DECODER_TEXTS
from test_hf_decoder_classifiers import _batch as decoder_batch
from test_hf_decoder_classifiers import save_hf as save_decoder

import lmforge
from lmforge.errors import LmforgeError
from lmforge.model.classifier import Classifier

transformers = pytest.importorskip("transformers")

# kind -> (id2label, config.json keys, how transformers' pipeline reads the outputs by default)
KINDS: dict[str, tuple[dict[int, str], dict[str, Any], str]] = {
    "multi-label": (
        {0: "anger", 1: "joy", 2: "fear"},
        {"problem_type": "multi_label_classification"},
        "sigmoid",
    ),
    "one-output": ({0: "reward"}, {}, "sigmoid"),  # a reward model, a cross-encoder: no problem_type
    "regression": ({0: "LABEL_0"}, {"problem_type": "regression"}, "none"),
    "regression-2": ({0: "valence", 1: "arousal"}, {"problem_type": "regression"}, "none"),
}
ENCODERS = {
    "bert": "BertForSequenceClassification",
    "distilbert": "DistilBertForSequenceClassification",
    "roberta": "RobertaForSequenceClassification",
}
OPTIONS: list[dict[str, Any]] = [
    {},
    {"top_k": 1},
    {"top_k": 2},
    {"top_k": None},
    {"function_to_apply": "none"},
    {"function_to_apply": "softmax", "top_k": None},
    {"function_to_apply": "Sigmoid", "top_k": None},  # transformers takes any case
    {"function_to_apply": "none", "top_k": None},
]


def _hf(
    family: str, kind: str, directory: Path
) -> tuple[torch.nn.Module, dict[str, torch.Tensor], list[str]]:
    """(transformers' model, a padded batch, the texts) of a random `kind` head saved in `directory`."""
    names, extra, _ = KINDS[kind]
    if family in ENCODERS:
        hf = save_encoder(family, ENCODERS[family], directory, names=names, **extra)
        return hf, encoder_batch(directory), TEXTS
    hf = save_decoder(family, directory, names=names, **extra)
    return hf, decoder_batch(directory), DECODER_TEXTS


def _assert_pipelines_agree(ours: Any, theirs: Any, texts: list[str], where: str) -> None:
    for options in OPTIONS:
        for text in (texts, texts[1]):
            _assert_same_results(
                ours(text, **options), theirs(text, **options), f"{where} {options} {text!r:.20}"
            )


CASES = [(f, k) for f in (*ENCODERS, "gpt2", "llama") for k in KINDS] + [("qwen2", "one-output")]


@pytest.mark.parametrize(("family", "kind"), CASES)
def test_logits_and_pipeline_equal_transformers(family: str, kind: str, tmp_path: Path) -> None:
    hf, batch, texts = _hf(family, kind, tmp_path / "hf")
    names, extra, function = KINDS[kind]
    with torch.no_grad():
        expected = hf(**batch).logits
    imported = lmforge.import_hf(tmp_path / "hf", tmp_path / "imported")
    raw = json.loads((imported / "config.json").read_text())
    assert raw["model_type"] == "lmforge-classifier" and raw["labels"] == list(names.values())
    assert raw.get("problem_type", "") == extra.get("problem_type", "")  # lmforge's own directory keeps it
    for source in (tmp_path / "hf", imported):
        model, _ = lmforge.load(source)
        assert isinstance(model, Classifier) and model.function == function
        assert model.problem_type == extra.get("problem_type", "")
        with torch.no_grad():
            got = model(batch["input_ids"], batch["attention_mask"])
        assert got.shape == expected.shape and _max_diff(got, expected) < TOL, (
            source,
            _max_diff(got, expected),
        )
    theirs = transformers.pipeline("text-classification", model=str(tmp_path / "hf"))
    for source in (tmp_path / "hf", imported):
        _assert_pipelines_agree(lmforge.pipeline("text-classification", model=source), theirs, texts, family)
    # at construction: every call's default, as transformers'
    theirs = transformers.pipeline(
        "text-classification", model=str(tmp_path / "hf"), function_to_apply="softmax"
    )
    ours = lmforge.pipeline("text-classification", model=imported, function_to_apply="softmax")
    for options in ({}, {"top_k": None}, {"function_to_apply": "none", "top_k": None}):
        _assert_same_results(ours(texts, **options), theirs(texts, **options), f"softmax pipeline {options}")


@pytest.mark.parametrize(("family", "kind"), [("bert", "multi-label"), ("distilbert", "one-output"),
                                              ("gpt2", "regression-2"), ("llama", "one-output")])  # fmt: skip
def test_export_gives_transformers_the_same_head(family: str, kind: str, tmp_path: Path) -> None:
    """problem_type and the number of labels go back to config.json: transformers reads the same
    logits and its pipeline gives the same scores as on the original."""
    hf, batch, texts = _hf(family, kind, tmp_path / "hf")
    names, extra, _ = KINDS[kind]
    out = lmforge.export_hf(lmforge.import_hf(tmp_path / "hf", tmp_path / "imported"), tmp_path / "out")
    back = load_whole(transformers.AutoModelForSequenceClassification, out)
    assert back.config.problem_type == extra.get("problem_type")
    assert back.config.num_labels == len(names) and back.config.id2label == names
    with torch.no_grad():
        assert _max_diff(back(**batch).logits, hf(**batch).logits) < TOL
    ours = transformers.pipeline("text-classification", model=str(out))
    theirs = transformers.pipeline("text-classification", model=str(tmp_path / "hf"))
    for options in ({}, {"top_k": None}):
        _assert_same_results(ours(texts, **options), theirs(texts, **options), f"exported {options}")


def test_classify_and_its_cli_give_the_pipelines_scores(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from lmforge.cli import main

    _hf("bert", "multi-label", tmp_path / "hf")
    theirs = transformers.pipeline("text-classification", model=str(tmp_path / "hf"))
    for function in (None, "none"):
        got = lmforge.classify(tmp_path / "hf", TEXTS, top_k=0, function_to_apply=function)
        _assert_same_results(
            [r["labels"] for r in got], theirs(TEXTS, top_k=None, function_to_apply=function), ""
        )
    capsys.readouterr()
    assert (
        main(["classify", str(tmp_path / "hf"), TEXTS[0], "--top-k", "2", "--function-to-apply", "none"]) == 0
    )
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    _assert_same_results(row["labels"], theirs(TEXTS[0], top_k=2, function_to_apply="none"), "cli")


def test_bad_problem_type_or_function_is_one_line(tmp_path: Path) -> None:
    _hf("distilbert", "multi-label", tmp_path / "hf")
    imported = lmforge.import_hf(tmp_path / "hf", tmp_path / "imported")
    for directory in (tmp_path / "hf", imported):
        raw = json.loads((directory / "config.json").read_text())
        (directory / "config.json").write_text(json.dumps({**raw, "problem_type": "multi_label"}))
        with pytest.raises(
            LmforgeError, match=r"config.json: problem_type='multi_label' must be one of "
        ) as e:
            lmforge.load(directory)
        assert "\n" not in str(e.value)
        (directory / "config.json").write_text(json.dumps(raw))
    pipe = lmforge.pipeline("text-classification", model=imported)
    with pytest.raises(LmforgeError, match=r"function_to_apply='relu' must be one of 'softmax', 'sigmoid'"):
        pipe(TEXTS, function_to_apply="relu")
    with pytest.raises(LmforgeError, match=r"function_to_apply='default' must be one of"):
        lmforge.pipeline("text-classification", model=imported, function_to_apply="default")
    with pytest.raises(LmforgeError, match=r"function_to_apply='relu'"):
        lmforge.classify(imported, TEXTS, function_to_apply="relu")


@pytest.mark.parametrize("kind", ["multi-label", "regression-2"])
def test_eval_classify_scores_a_multi_label_or_regression_head(kind: str, tmp_path: Path) -> None:
    """eval-classify refused such heads until 2026-12-06: now subset accuracy and micro F1 at a
    sigmoid above 0.5, or MSE and Pearson's r, of transformers' own logits (counted here by hand)."""
    hf, batch, texts = _hf("bert", kind, tmp_path / "hf")
    with torch.no_grad():
        logits = hf(**batch).logits.double()
    names = list(KINDS[kind][0].values())
    if kind == "multi-label":
        gold = torch.tensor([[i % 2, 1, 0] for i in range(len(texts))], dtype=torch.bool)
        labels = [[n for n, on in zip(names, row, strict=True) if on] for row in gold.tolist()]
    else:
        gold = torch.tensor([[i / 2, 1 - i] for i in range(len(texts))], dtype=torch.float64)
        labels = gold.tolist()
    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels, strict=True))
    )
    got = lmforge.eval_classify(tmp_path / "hf", data)
    assert got["examples"] == len(texts) and got["labels"] == names
    if kind == "multi-label":
        predicted = logits.sigmoid() > 0.5
        tp, fp, fn = (int(m.sum()) for m in (predicted & gold, predicted & ~gold, ~predicted & gold))
        assert got["problem_type"] == "multi_label_classification"
        assert got["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
        assert got["accuracy"] == pytest.approx(float((predicted == gold).all(-1).double().mean()), abs=1e-12)
    else:
        x, y = logits.flatten(), gold.flatten()
        pearson = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()).norm() * (y - y.mean()).norm())
        assert got["problem_type"] == "regression"
        assert got["mse"] == pytest.approx(float(((x - y) ** 2).mean()), rel=1e-5)
        assert got["pearson"] == pytest.approx(float(pearson), abs=1e-5)


def test_finetune_from_a_reward_model_says_it_trains_a_new_head(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _hf("distilbert", "one-output", tmp_path / "hf")
    data = tmp_path / "l.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": ["no", "yes"][i % 2]}) + "\n"
                            for i, t in enumerate(TEXTS * 4)))  # fmt: skip
    overrides = [
        "--data.task=classification",
        f"--data.input={data}",
        "--data.labels=no,yes",
        f"--train.init_from={tmp_path / 'hf'}",
        "--train.max_steps=1",
        "--train.batch_size=2",
        "--train.eval_batches=1",
        "--train.warmup_steps=0",
        "--train.max_minutes=0",
        "--data.val_fraction=0.5",
    ]
    capsys.readouterr()
    lmforge.train(None, overrides, out=tmp_path / "run")
    said = capsys.readouterr().out
    assert "a one-output classifier (scores through 'sigmoid'); its head is left out" in said
    model, _ = lmforge.load(tmp_path / "run")
    assert isinstance(model, Classifier) and model.labels == ["no", "yes"] and model.function == "softmax"
