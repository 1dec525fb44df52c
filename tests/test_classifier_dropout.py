"""The dropout before a classifier's label layer, as transformers' ...ForSequenceClassification
puts it: config.json's `classifier_dropout` (BERT, RoBERTa; null: the hidden dropout),
DistilBERT's `seq_classif_dropout` (0.2 by default), none on a decoder's `score`. Read on import,
taken by a fine-tune where train.classifier_dropout is left at -1, written back by the export
(transformers reads it from there), and kept in lmforge's own classifier directories. Until
2026-12-08 every fine-tune used 0.1 and the export wrote none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_hf_classifiers import TEXTS
from test_hf_classifiers import save_hf as save_encoder
from test_hf_decoder_classifiers import save_hf as save_decoder

import lmforge
from lmforge.errors import LmforgeError
from lmforge.model.classifier import Classifier

transformers = pytest.importorskip("transformers")

ENCODERS = {
    "bert": "BertForSequenceClassification",
    "distilbert": "DistilBertForSequenceClassification",
    "roberta": "RobertaForSequenceClassification",
}


def _hf_dropout(model: torch.nn.Module) -> float:
    """The p of the dropout transformers' classifier applies just before its label layer."""
    config = model.config
    if config.model_type == "distilbert":
        return config.seq_classif_dropout
    given = config.classifier_dropout
    return config.hidden_dropout_prob if given is None else given


@pytest.mark.parametrize(
    ("family", "extra"),
    [("bert", {}), ("bert", {"classifier_dropout": 0.3}), ("distilbert", {}),
     ("distilbert", {"seq_classif_dropout": 0.35}), ("roberta", {"classifier_dropout": 0.05})],
)  # fmt: skip
def test_an_imported_encoder_classifier_has_transformers_dropout(
    family: str, extra: dict[str, float], tmp_path: Path
) -> None:
    hf = save_encoder(family, ENCODERS[family], tmp_path / "hf", **extra)
    expected = _hf_dropout(hf)
    imported = lmforge.import_hf(tmp_path / "hf", tmp_path / "imported")
    for source in (tmp_path / "hf", imported):
        model, _ = lmforge.load(source)
        assert isinstance(model, Classifier) and model.drop.p == pytest.approx(expected), source


def test_an_imported_decoder_classifier_has_none(tmp_path: Path) -> None:
    save_decoder("gpt2", tmp_path / "hf")
    model, _ = lmforge.load(tmp_path / "hf")
    assert isinstance(model, Classifier) and model.drop.p == 0.0


def _data(path: Path) -> Path:
    rows = [{"text": text, "label": "pos" if i % 2 else "neg"} for i, text in enumerate(TEXTS * 6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _tune(tmp_path: Path, source: Path, name: str, *more: str, quiet: bool = True) -> Classifier:
    overrides = ["--data.task=classification", f"--data.input={_data(tmp_path / 'd.jsonl')}",
                 "--data.labels=neg,pos", f"--train.init_from={source}", "--train.batch_size=4",
                 "--train.max_steps=1", "--train.eval_batches=0", "--train.max_minutes=0",
                 "--train.dtype=fp32", "--data.val_fraction=0.25", *more]  # fmt: skip
    lmforge.train(None, overrides, out=tmp_path / name, quiet=quiet)
    model, _ = lmforge.load(tmp_path / name)
    assert isinstance(model, Classifier)
    return model


@pytest.mark.parametrize(("family", "extra", "expected"), [
    ("distilbert", {}, 0.2),  # DistilBertConfig's seq_classif_dropout
    ("bert", {"classifier_dropout": 0.3}, 0.3),
    ("bert", {"hidden_dropout_prob": 0.15}, 0.15),  # classifier_dropout null: the hidden dropout
])  # fmt: skip
def test_a_fine_tune_takes_the_models_dropout_and_exports_it(
    family: str, extra: dict[str, float], expected: float, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A new head on an HF encoder body (its pretraining head: a BERT classifier tuned to other
    labels) gets transformers' dropout; the run's model and its export keep it."""
    save_encoder(family, ENCODERS[family], tmp_path / "hf", **extra)
    capsys.readouterr()
    dense = "relu" if family == "distilbert" else "tanh"  # transformers' head, which then exports
    model = _tune(
        tmp_path, tmp_path / "hf", "run", "--train.pooling=cls", f"--train.classifier_dense={dense}"
    )
    assert model.drop.p == pytest.approx(expected)
    lmforge.export_hf(tmp_path / "run", tmp_path / "out")
    exported = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert _hf_dropout(exported) == pytest.approx(expected)
    # a recipe's own value wins
    assert _tune(tmp_path, tmp_path / "hf", "own", "--train.classifier_dropout=0.05").drop.p == 0.05


def test_a_fine_tune_of_an_encoder_body_and_of_a_decoder(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from hf_helpers import make_hf_model

    make_hf_model("bert", tmp_path / "body")  # BertModel, hidden_dropout_prob 0.1
    raw = json.loads((tmp_path / "body" / "config.json").read_text())
    raw["hidden_dropout_prob"] = 0.25
    (tmp_path / "body" / "config.json").write_text(json.dumps(raw))
    assert _tune(tmp_path, tmp_path / "body", "enc").drop.p == pytest.approx(0.25)
    # the recipe's model.dropout is the body's, which transformers' head takes where it has none
    assert _tune(tmp_path, tmp_path / "body", "enc2", "--model.dropout=0.05").drop.p == pytest.approx(0.05)
    make_hf_model("gpt2", tmp_path / "gpt2")
    capsys.readouterr()
    assert _tune(tmp_path, tmp_path / "gpt2", "dec", quiet=False).drop.p == 0.0
    assert "classifier: dropout 0 before the head (a decoder's" in capsys.readouterr().out


def test_a_bad_value_is_one_line(tmp_path: Path) -> None:
    save_encoder("bert", ENCODERS["bert"], tmp_path / "hf")
    raw = json.loads((tmp_path / "hf" / "config.json").read_text())
    for value, why in (("0.1", "must be a number"), (1.5, "must be a probability")):
        raw["classifier_dropout"] = value
        (tmp_path / "hf" / "config.json").write_text(json.dumps(raw))
        with pytest.raises(LmforgeError, match=rf"config.json: config key 'classifier_dropout' {why}"):
            lmforge.load(tmp_path / "hf")
    with pytest.raises(LmforgeError, match=r"train.classifier_dropout=2.0 must be in \[0, 1\), or -1"):
        _tune(tmp_path, tmp_path / "hf", "bad", "--train.classifier_dropout=2")
