"""Text classification: pooled heads on decoder and encoder, finetune-classify, the pipeline."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import torch
from hf_helpers import VOCAB, make_hf_model, tiny_bpe

import lmforge
from lmforge.cli import main
from lmforge.config import ModelConfig, load_config
from lmforge.data.labelled import read_labelled
from lmforge.errors import LmforgeError
from lmforge.formats.directory import write_model_dir
from lmforge.inference.classify import count_into, macro_scores
from lmforge.model.classifier import Classifier
from lmforge.model.gpt import GPT
from lmforge.tokenization.tokenizer import Tokenizer
from lmforge.train.classify import finetune_classify

GOOD = ["good", "great", "fine", "sweet", "noble", "fair"]
BAD = ["bad", "awful", "vile", "foul", "base", "grim"]
FILLER = ["the", "king", "queen", "night", "day", "sword", "crown", "lord", "lady", "heart"]


def _data(path: Path, n: int = 800) -> Path:
    """Texts whose label is which word list supplied the one sentiment word."""
    rng = random.Random(0)
    with path.open("w") as f:
        for _ in range(n):
            label = rng.choice(["negative", "positive"])
            words = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))]
            words.insert(rng.randint(0, len(words)), rng.choice(GOOD if label == "positive" else BAD))
            f.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")
    return path


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _data(tmp_path_factory.mktemp("cls") / "train.jsonl")


def test_macro_scores() -> None:
    confusion = torch.tensor([[1.0, 0.0], [1.0, 2.0]])  # [gold, predicted]: predicted 0 0 1 1, gold 0 1 1 1
    result = macro_scores(confusion)
    assert result["accuracy"] == 0.75
    assert result["f1"] == pytest.approx((2 / 3 + 0.8) / 2)  # F1(0) = 2/3, F1(1) = 4/5


def test_macro_f1_averages_over_the_labels_in_the_gold_or_the_predictions() -> None:
    """scikit-learn's f1_score(average="macro") takes the labels found in y_true or y_pred: a
    model's label that the data never has and the model never predicts has no F1. It was counted
    as 0 (0.5512 where scikit-learn gives 0.8268 on eval-classify's confusion below)."""

    def sklearn_macro_f1(gold: list[int], predicted: list[int]) -> float:  # by its definition
        labels = sorted(set(gold) | set(predicted))
        pairs = list(zip(gold, predicted, strict=True))
        f1s = []
        for y in labels:
            tp = sum(g == p == y for g, p in pairs)
            fp, fn = sum(p == y != g for g, p in pairs), sum(g == y != p for g, p in pairs)
            f1s.append(2 * tp / (2 * tp + fp + fn))
        return sum(f1s) / len(f1s)

    for gold, predicted in [
        ([0, 0] + [1] * 38, [0, 1] + [1] * 38),  # label 2 ("tres neutre") in neither
        ([0, 0, 1, 1], [0, 2, 1, 1]),  # label 2 predicted, never gold: it counts, as 0
        ([0, 1, 3], [0, 0, 3]),  # labels 2 and 4 in neither
    ]:
        confusion = torch.zeros(5, 5, dtype=torch.float64)
        count_into(confusion, torch.tensor(gold), torch.tensor(predicted))
        assert macro_scores(confusion)["f1"] == pytest.approx(sklearn_macro_f1(gold, predicted), abs=1e-12)
    assert round(sklearn_macro_f1([0, 0] + [1] * 38, [0, 1] + [1] * 38), 4) == 0.8268
    assert macro_scores(torch.zeros(3, 3)) == {"accuracy": 0.0, "f1": 0.0}  # nothing scored


def test_bad_labelled_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "positive"}\n{"text": "b", "label": "meh"}\n')
    with pytest.raises(LmforgeError, match=r"d.jsonl:2: label 'meh' is not one of"):
        read_labelled(path, ["negative", "positive"])


def test_a_question_answering_model_lends_its_encoder_body(
    labelled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A BertForQuestionAnswering directory was refused as 'not a decoder or encoder model': its
    encoder is the body of a new classifier, its span head said to be left out, as other heads."""
    qa = Path(__file__).parent / "fixtures" / "bert-qa"
    finetune_classify(
        qa, labelled, "negative,positive", tmp_path / "clf", epochs=1, batch_size=64, dtype="fp32"
    )
    assert "a question-answering model; its span head (qa_outputs) is left out" in capsys.readouterr().out
    model, _ = lmforge.load(tmp_path / "clf")
    assert isinstance(model, Classifier) and model.labels == ["negative", "positive"]
    recipe = ["--data.task=classification", f"--data.input={labelled}", f"--train.init_from={qa}"]
    planned = lmforge.plan(overrides=[*recipe, "--data.labels=negative,positive"])
    assert planned["model"]["head"] == "classification"


def test_a_csv_is_said_to_be_no_jsonl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Labelled data is JSON Lines whatever the suffix; classify --file reads a CSV's lines whole."""
    from lmforge.inference.classify import read_texts

    path = tmp_path / "c.csv"
    path.write_text("text,label\na fine film,positive\n")
    with pytest.raises(
        LmforgeError, match=r"c.csv:1: needs JSON with 'text' and 'label' \(labelled examples are JSON Lines"
    ):
        read_labelled(path, ["negative", "positive"])
    assert read_texts(path) == ["text,label", "a fine film,positive"]
    assert (
        f"lmforge: warning: {path}: read as plain text, one text a line (a header" in capsys.readouterr().err
    )


def test_number_labels_are_names_where_the_names_are_numbers(tmp_path: Path) -> None:
    """Star ratings 1-5 in JSON as numbers: 1 is "1", not index 1 ("2"); elsewhere a number is an
    index. A JSON true is named as JSON writes it."""
    path = tmp_path / "stars.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 5}\n{"text": "c", "label": "3"}\n')
    assert read_labelled(path, ["1", "2", "3", "4", "5"]) == [("a", 0), ("b", 4), ("c", 2)]
    assert read_labelled(path, ["0", "1", "3", "5"]) == [("a", 1), ("b", 3), ("c", 2)]
    with pytest.raises(LmforgeError, match=r"stars.jsonl:2: label 5 is not one of \['1', '2', '3'\]"):
        read_labelled(path, ["1", "2", "3"])
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": true}\n')
    with pytest.raises(LmforgeError, match=r"stars.jsonl:2: label true is not one of \['no', 'yes'\]"):
        read_labelled(path, ["no", "yes"])


def test_encoder_classifier_learns_and_pipeline_has_hf_shapes(labelled: Path, tmp_path: Path) -> None:
    make_hf_model("bert", tmp_path / "bert")
    out = tmp_path / "clf"
    result = finetune_classify(
        tmp_path / "bert",
        labelled,
        "negative,positive",
        out,
        epochs=4,
        batch_size=16,
        lr=1e-3,
        dtype="fp32",
        max_len=32,  # below the model's 64 positions: the saved classifier must keep all 64
        quiet=True,
    )
    assert result["accuracy"] >= 0.85 and result["f1"] >= 0.85, result
    # a checkpoint each epoch (or every 100 steps), so a kill does not cost the whole run
    every = load_config(out / "config.toml").train.checkpoint_interval
    assert every == result["steps"] // 4 and every <= 100
    model, _ = lmforge.load(out)
    assert isinstance(model, Classifier) and model.pooling == "mean"
    classify = lmforge.pipeline("text-classification", model=out)
    one = classify("the king good crown")
    assert isinstance(one, list) and len(one) == 1 and set(one[0]) == {"label", "score"}
    assert one[0]["label"] == "positive" and 0.5 < one[0]["score"] <= 1.0
    many = classify(["the night vile sword", "lord queen great day"])
    assert [r["label"] for r in many] == ["negative", "positive"]
    every = classify("lady day grim sword", top_k=None)
    assert [r["label"] for r in every] == ["negative", "positive"]
    assert sum(r["score"] for r in every) == pytest.approx(1.0)


def test_decoder_head_only_from_cli(labelled: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The head alone, on a frozen random lmforge GPT: the backbone is untouched and the head learns a
    linear probe of its features (mean pooling: a random decoder's last position holds too little)."""
    tiny_bpe(tmp_path)
    gpt = GPT(ModelConfig(n_layer=2, n_head=4, n_embd=64, block_size=64, vocab_size=VOCAB))
    write_model_dir(
        tmp_path / "gpt", gpt.config, gpt.state_dict(), Tokenizer.load(tmp_path / "tokenizer.json")
    )
    argv = ["finetune-classify", str(tmp_path / "gpt"), "--train", str(labelled), "--pooling", "mean"]
    argv += [
        "--labels",
        "negative, positive",  # as data.labels: names stripped (' positive' was refused)
        "--head-only",
        "--epochs",
        "3",
        "--lr",
        "0.1",
        "--quiet",
        "--dtype",
        "fp32",
    ]
    argv += ["--out", str(tmp_path / "clf")]
    assert main(argv) == 0
    assert "held-out accuracy" in capsys.readouterr().out
    model, _ = lmforge.load(tmp_path / "clf")
    assert model.pooling == "mean" and model.labels == ["negative", "positive"]
    for (name, p), q in zip(model.backbone.state_dict().items(), gpt.state_dict().values(), strict=True):
        assert (p == q).all(), name
    metrics = json.loads((tmp_path / "clf" / "classify_metrics.json").read_text())
    assert metrics["head_only"] and metrics["accuracy"] > 0.75, metrics
    # the trained classifier through the verbs: eval-classify's figures are the pipeline's predictions
    texts, gold = zip(*read_labelled(labelled, ["negative", "positive"]), strict=True)
    predicted = [
        r["label"] == "positive"
        for r in lmforge.pipeline("text-classification", model=tmp_path / "clf")(list(texts))
    ]
    accuracy = sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)
    assert main(["eval-classify", str(tmp_path / "clf"), "--data", str(labelled)]) == 0
    summary, figures = capsys.readouterr().out.splitlines()
    result = json.loads(figures)
    assert result["accuracy"] == pytest.approx(accuracy) and result["accuracy"] > 0.75, summary
    assert result["examples"] == len(gold) == sum(map(sum, result["confusion"]))
    assert [sum(row) for row in result["confusion"]] == [gold.count(0), gold.count(1)]
    assert summary.startswith(f"{tmp_path / 'clf'}: accuracy {result['accuracy']:.4f} | macro F1")


def test_last_token_pooling_ignores_right_padding(tmp_path: Path) -> None:
    make_hf_model("qwen2", tmp_path / "qwen2")
    backbone, _ = lmforge.load(tmp_path / "qwen2")
    model = Classifier(backbone, ["a", "b", "c"]).eval()
    assert model.pooling == "last"
    ids = torch.randint(1, 300, (1, 7))
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 7), torch.zeros(1, 3)], dim=1).long()
    with torch.no_grad():
        assert torch.allclose(model(ids), model(padded, mask), atol=1e-6)
        assert not torch.allclose(model(ids), model(padded), atol=1e-3)  # unmasked: the pad is "last"


def test_without_out_the_run_says_its_model_is_not_kept(
    labelled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The loop's last line names the temporary run folder; the line after it says it is gone."""
    make_hf_model("bert", tmp_path / "bert")
    result = finetune_classify(tmp_path / "bert", labelled, "negative,positive", epochs=1, dtype="fp32")
    assert set(result) >= {"accuracy", "f1"}
    said = capsys.readouterr().out
    gone = re.search(r"not kept: (\S+) is removed, as no out \(--out DIR\) was given", said)
    assert gone and not Path(gone.group(1)).exists(), said


def test_a_bert_fine_tuned_through_its_pooler_exports_to_transformers(
    labelled: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """--pooling cls --dense tanh on an HF BERT is BertForSequenceClassification's recipe: the dense
    layer starts from BERT's pretrained pooler (the start-up line says so), and the classifier
    exports as BertForSequenceClassification, in which transformers computes lmforge's logits."""
    transformers = pytest.importorskip("transformers")
    make_hf_model("bert", tmp_path / "bert")
    config = tmp_path / "bert" / "config.json"  # no dropout: 2 epochs of a random BERT learn the task
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    config.write_text(json.dumps(json.loads(config.read_text()) | no_dropout))
    out = tmp_path / "clf"
    result = finetune_classify(tmp_path / "bert", labelled, "negative,positive", out, epochs=2, batch_size=16,
                               lr=1e-3, pooling="cls", dense="tanh", dtype="fp32", max_len=32)  # fmt: skip
    assert result["accuracy"] >= 0.8, result
    said = capsys.readouterr().out
    assert "classifier: a dense layer with tanh before the head, from the encoder's pretrained pooler" in said
    exported = lmforge.export_hf(out, tmp_path / "hf-clf")
    back = transformers.AutoModelForSequenceClassification.from_pretrained(exported).eval()
    assert type(back).__name__ == "BertForSequenceClassification"
    assert back.config.id2label == {0: "negative", 1: "positive"}
    model, tokenizer = lmforge.load(out)
    texts = ["the king good crown", "lady day grim sword", "night"]
    ids = [tokenizer.encode(t) for t in texts]
    width = max(map(len, ids))
    batch = torch.tensor([i + [0] * (width - len(i)) for i in ids])
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids])
    with torch.no_grad():
        ours = model.eval()(batch, mask)
        theirs = back(input_ids=batch, attention_mask=mask).logits
    assert float((ours - theirs).abs().max()) < 1e-5


def test_where_the_dense_layer_starts(tmp_path: Path) -> None:
    """tanh starts from an encoder's pretrained pooler, or from a classifier's own dense layer of
    the same activation; relu, a pooler of zeros (an import without one) and a decoder start random."""
    from lmforge.train.tasks.classification import dense_start

    hf = make_hf_model("bert", tmp_path / "bert")
    bert, _ = lmforge.load(tmp_path / "bert")
    weights, said = dense_start(bert, "tanh")
    assert torch.equal(weights["weight"], hf.pooler.dense.weight) and "pretrained pooler" in said
    assert dense_start(bert, "relu") is None and dense_start(bert, "") is None
    with torch.no_grad():
        bert.pooler.weight.zero_()
    assert dense_start(bert, "tanh") is None
    clf = Classifier(bert, ["a", "b"], "cls", dense="tanh")
    weights, said = dense_start(clf, "tanh")
    assert torch.equal(weights["weight"], clf.dense.weight) and said == "train.init_from's own dense layer"
    assert dense_start(clf, "relu") is None
    gpt = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=64))
    assert dense_start(gpt, "tanh") is None
    with pytest.raises(LmforgeError, match=r"train.classifier_dense='gelu' must be tanh, relu or ''"):
        load_config(None, ["train.classifier_dense=gelu"])


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_decoder_fine_tuned_here_exports_to_transformers(
    family: str, labelled: Path, tmp_path: Path
) -> None:
    """finetune-classify's decoder head has no bias, as transformers' `score` layer: with the default
    `last` pooling the classifier exports as ...ForSequenceClassification, in which transformers
    computes lmforge's logits (a head with a bias was refused: transformers' class has none)."""
    transformers = pytest.importorskip("transformers")
    make_hf_model(family, tmp_path / "base")
    out = tmp_path / "clf"
    finetune_classify(tmp_path / "base", labelled, "negative,positive", out, epochs=1, batch_size=16,
                      lr=1e-3, dtype="fp32", max_len=32)  # fmt: skip
    back = transformers.AutoModelForSequenceClassification.from_pretrained(
        lmforge.export_hf(out, tmp_path / "hf")
    )
    assert type(back).__name__.endswith("ForSequenceClassification")
    assert back.config.id2label == {0: "negative", 1: "positive"}
    model, tokenizer = lmforge.load(out)
    for text in ["the king good crown", "lady day grim sword", "night"]:  # transformers: one text at a time
        ids = torch.tensor([tokenizer.encode(text)])
        with torch.no_grad():
            ours, theirs = model.eval()(ids), back.eval()(input_ids=ids).logits
        assert float((ours - theirs).abs().max()) < 1e-5
