"""`lmforge export` of a classifier (formats/hf_heads.py's classifier_state_to_hf): one whose head
transformers has goes back as Bert/DistilBertForSequenceClassification, which transformers loads
with no missing or unexpected tensor and which gives the original model's logits and labels; the
others (other pooling, no dense layer, a decoder's head with a bias) are refused in one line,
writing nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hf_helpers import load_whole
from test_hf_classifiers import CLASSIFIERS, LABELS, TOL, _batch, _max_diff, save_hf

import lmforge
from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.formats.lmforge_dirs import save_classifier
from lmforge.model.classifier import Classifier
from lmforge.model.encoder import Encoder
from lmforge.model.gpt import GPT
from lmforge.tokenization.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")

EXPORTED_AS = {
    "bert": "BertForSequenceClassification",
    "distilbert": "DistilBertForSequenceClassification",
    "roberta": "BertForSequenceClassification",  # lmforge writes RoBERTa bodies in BERT's layout
}


@pytest.mark.parametrize("family", sorted(CLASSIFIERS))
@pytest.mark.parametrize("imported", [True, False], ids=["imported", "hf-dir"])
def test_an_hf_classifier_exports_back_with_its_logits_and_labels(
    family: str, imported: bool, tmp_path: Path
) -> None:
    hf = save_hf(family, CLASSIFIERS[family], tmp_path / "hf")
    source = lmforge.import_hf(tmp_path / "hf", tmp_path / "imported") if imported else tmp_path / "hf"
    out = lmforge.export_hf(source, tmp_path / "out")
    raw = json.loads((out / "config.json").read_text())
    assert raw["architectures"] == [EXPORTED_AS[family]]
    assert raw["id2label"] == {str(i): label for i, label in LABELS.items()}
    back = load_whole(transformers.AutoModelForSequenceClassification, out)
    assert back.config.id2label == LABELS
    batch = _batch(tmp_path / "hf")
    with torch.no_grad():
        expected = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        got = back(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert _max_diff(got, expected) < TOL, _max_diff(got, expected)
    # token_type_ids only for a model with token types (transformers 4 gave DistilBERT them: a TypeError)
    names = json.loads((out / "tokenizer_config.json").read_text()).get("model_input_names")
    with_types = ["input_ids", "token_type_ids", "attention_mask"]  # transformers 5 gives none unasked
    assert names == (with_types if family == "bert" else ["input_ids", "attention_mask"])
    with torch.no_grad():
        back(**transformers.AutoTokenizer.from_pretrained(out)("Some text.", return_tensors="pt"))


def test_transformers_pipeline_reads_the_export_as_lmforge_reads_the_source(tmp_path: Path) -> None:
    """The same labels and scores from transformers' pipeline on the export as from lmforge's on
    the imported classifier."""
    save_hf("distilbert", CLASSIFIERS["distilbert"], tmp_path / "hf")
    imported = lmforge.import_hf(tmp_path / "hf", tmp_path / "imported")
    out = lmforge.export_hf(imported, tmp_path / "out")
    texts = ["the old king kept his crown in a tower", "river"]
    ours = lmforge.pipeline("text-classification", model=str(imported))(texts)
    theirs = transformers.pipeline("text-classification", model=str(out))(texts)
    assert [r["label"] for r in ours] == [r["label"] for r in theirs]
    assert all(abs(a["score"] - b["score"]) < TOL for a, b in zip(ours, theirs, strict=True))


def _tokenizer() -> Tokenizer:
    return Tokenizer.train_char(["the old king kept his crown in a tower"])


@pytest.mark.parametrize(
    ("pooling", "dense", "said"),
    [
        ("mean", "", "'mean' pooling through no dense layer"),
        ("cls", "", "'cls' pooling through no dense layer"),
        ("cls", "relu", "'cls' pooling through a relu dense layer"),
    ],
)
def test_an_encoder_classifier_transformers_has_no_class_for_is_refused(
    pooling: str, dense: str, said: str, tmp_path: Path
) -> None:
    tok = _tokenizer()
    config = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=32, vocab_size=tok.vocab_size)
    config.type_vocab_size = 2  # a BERT body (DistilBERT's has no token types)
    model = Classifier(Encoder(config), ["no", "yes"], pooling=pooling, dense=dense)
    save_classifier(model, tmp_path / "clf", tok)
    with pytest.raises(LmforgeError) as err:
        lmforge.export_hf(tmp_path / "clf", tmp_path / "out")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'clf'}: a classifier exports to HF as ")
    head = "BertForSequenceClassification, which pools the first token through a tanh dense layer"
    assert f"{head}; this one has {said}, which no transformers class computes" in message
    assert not (tmp_path / "out").exists()


def test_a_decoder_classifier_with_a_head_bias_is_refused(tmp_path: Path) -> None:
    """A decoder's classifier exports as its family's ...ForSequenceClassification, whose score layer
    has no bias (tests/test_hf_decoder_classifiers.py)."""
    tok = _tokenizer()
    config = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=32, vocab_size=tok.vocab_size)
    save_classifier(Classifier(GPT(config), ["no", "yes"], head_bias=True), tmp_path / "clf", tok)
    with pytest.raises(LmforgeError, match=r"this one has a head bias \(its score layer has none\), which"):
        lmforge.export_hf(tmp_path / "clf", tmp_path / "out")
    assert not (tmp_path / "out").exists()
