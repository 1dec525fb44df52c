"""Fine-tuning multi-label and regression (reward) classifiers, as transformers'
...ForSequenceClassification trains them (data.problem_type, finetune-classify --problem-type).

The oracles: transformers' own forward with labels= for the loss (the same logits give the same
loss), hand-computed micro F1, subset accuracy, MSE and Pearson's r on the predictions of the
exported model run by transformers (sklearn is not installed here), and the exported config.json
read back by transformers. A tiny BERT learns a synthetic multi-label and a regression task end
to end; a reward model keeps its head; bad labels are one line naming file and line; a resumed
multi-label run equals the straight one.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from hf_helpers import load_whole, make_hf_model

import lmforge
from lmforge.cli import main
from lmforge.data.labelled import read_labelled
from lmforge.errors import LmforgeError
from lmforge.model.classifier import Classifier
from lmforge.train.metrics import read_metrics
from lmforge.train.tasks.base import count_targets
from lmforge.train.tasks.classification import classifier_loss

transformers = pytest.importorskip("transformers")

EMOTIONS = {"anger": ["angry", "furious"], "joy": ["happy", "glad"], "fear": ["scared", "afraid"]}
FILLER = ["the", "king", "queen", "night", "day", "sword", "crown", "lord", "lady", "heart"]
MULTI, REGRESSION = "multi_label_classification", "regression"


def _multi_label_data(path: Path, n: int, seed: int = 0) -> Path:
    """Texts holding a word of each emotion they are labelled with (none, one or several)."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            labels = [name for name in EMOTIONS if rng.random() < 0.35]
            words = [rng.choice(FILLER) for _ in range(rng.randint(2, 5))]
            for name in labels:
                words.insert(rng.randint(0, len(words)), rng.choice(EMOTIONS[name]))
            f.write(json.dumps({"text": " ".join(words), "labels": labels}) + "\n")
    return path


def _regression_data(path: Path, n: int, seed: int = 0) -> Path:
    """A score: +1 for each 'good', -1 for each 'bad' in the text."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            good, bad = rng.randint(0, 2), rng.randint(0, 2)
            words = [rng.choice(FILLER) for _ in range(rng.randint(2, 4))] + ["good"] * good + ["bad"] * bad
            rng.shuffle(words)
            f.write(json.dumps({"text": " ".join(words), "score": good - bad}) + "\n")
    return path


def _exported_logits(run: Path, out: Path, texts: list[str]) -> tuple[torch.nn.Module, torch.Tensor]:
    """transformers' model of `lmforge export RUN` and its logits for `texts`, one at a time."""
    lmforge.export_hf(run, out)
    model = load_whole(transformers.AutoModelForSequenceClassification, out)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        logits = [model(**tokenizer(text, return_tensors="pt")).logits[0] for text in texts]
    return model, torch.stack(logits)


@pytest.mark.parametrize(
    ("problem_type", "names"),
    [(MULTI, ["anger", "joy", "fear"]), (REGRESSION, ["LABEL_0"]), (REGRESSION, ["valence", "arousal"])],
)
@pytest.mark.parametrize("batch", [1, 4])
def test_the_loss_is_transformers(problem_type: str, names: list[str], batch: int, tmp_path: Path) -> None:
    """The same logits and labels give the loss transformers' forward(labels=...) computes: the
    summed loss over count_targets (what the loop divides by) is its mean, to 1e-6."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
        num_labels=len(names), problem_type=problem_type,
    )  # fmt: skip
    hf = transformers.BertForSequenceClassification(config).eval()
    ids = torch.randint(1, 99, (batch, 7))
    if problem_type == MULTI:
        labels = torch.randint(0, 2, (batch, len(names))).float()
    else:
        labels = torch.randn(batch, len(names)).squeeze(-1) * 3  # (B,) for one output, as lmforge's
    with torch.no_grad():
        out = hf(input_ids=ids, labels=labels)
    ours = classifier_loss(out.logits, labels, problem_type) / count_targets(labels)
    assert abs(float(ours) - float(out.loss)) < 1e-6, (float(ours), float(out.loss))
    # the task's reading of a file gives those targets' shapes and dtype
    rows = [{"text": "a", "labels": label} for label in labels.tolist()]
    if problem_type == MULTI:
        rows = [
            {"text": "a", "labels": [n for n, on in zip(names, row, strict=True) if on]} for row in labels
        ]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    read = read_labelled(tmp_path / "d.jsonl", names, label_field="labels", problem_type=problem_type)
    assert torch.equal(torch.tensor([target for _, target in read]), labels.float())


def test_single_label_loss_is_unchanged() -> None:
    logits, labels = torch.randn(5, 3), torch.tensor([0, 2, 1, 1, 0])
    got = classifier_loss(logits, labels, "single_label_classification") / count_targets(labels)
    assert torch.allclose(got, torch.nn.functional.cross_entropy(logits, labels))


def _micro_f1_and_subset_accuracy(predicted: torch.Tensor, gold: torch.Tensor) -> tuple[float, float]:
    tp = int((predicted & gold).sum())
    fp, fn = int((predicted & ~gold).sum()), int((~predicted & gold).sum())
    return 2 * tp / (2 * tp + fp + fn), float((predicted == gold).all(-1).double().mean())


def test_a_multi_label_classifier_trains_evaluates_and_exports(tmp_path: Path) -> None:
    data = _multi_label_data(tmp_path / "emotions.jsonl", 480)
    test = _multi_label_data(tmp_path / "test.jsonl", 120, seed=1)
    make_hf_model("bert", tmp_path / "bert")
    run = tmp_path / "run"
    argv = ["finetune-classify", str(tmp_path / "bert"), "--train", str(data), "--labels", "anger,joy,fear",
            "--label-field", "labels", "--problem-type", MULTI, "--pooling", "cls", "--dense", "tanh",
            "--epochs", "15", "--batch-size", "16", "--lr", "2e-3", "--dtype", "fp32", "--quiet",
            "--out", str(run)]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((run / "classify_metrics.json").read_text())
    assert result["problem_type"] == MULTI and result["f1"] > 0.9, result
    losses = [r["loss"] for r in read_metrics(run) if "loss" in r]
    assert sum(losses[-3:]) < 0.5 * sum(losses[:3]), losses
    model, _ = lmforge.load(run)
    assert isinstance(model, Classifier) and model.problem_type == MULTI and model.function == "sigmoid"
    # eval-classify's figures are those of transformers' logits of the export, counted by hand
    texts = [json.loads(line)["text"] for line in test.read_text().splitlines()]
    gold = torch.tensor([target for _, target in read_labelled(test, model.labels, "text", "labels", MULTI)])
    hf, logits = _exported_logits(run, tmp_path / "hf", texts)
    assert hf.config.problem_type == MULTI and hf.config.id2label == {0: "anger", 1: "joy", 2: "fear"}
    f1, exact = _micro_f1_and_subset_accuracy(logits.sigmoid() > 0.5, gold > 0.5)
    got = lmforge.eval_classify(run, test, label_field="labels")
    assert got["problem_type"] == MULTI and got["examples"] == len(texts)
    assert got["f1"] == pytest.approx(f1, abs=1e-9) and got["accuracy"] == pytest.approx(exact, abs=1e-9)
    assert f1 > 0.9, got
    # transformers' pipeline on the export scores as lmforge's on the run (a sigmoid per label)
    theirs = transformers.pipeline("text-classification", model=str(tmp_path / "hf"))(texts[:8], top_k=None)
    ours = lmforge.pipeline("text-classification", model=run)(texts[:8], top_k=None)
    for a, b in zip(ours, theirs, strict=True):
        assert [r["label"] for r in a] == [r["label"] for r in b]
        assert max(abs(x["score"] - y["score"]) for x, y in zip(a, b, strict=True)) < 1e-5


def test_a_regression_trains_evaluates_and_exports(tmp_path: Path) -> None:
    data = _regression_data(tmp_path / "scores.jsonl", 480)
    test = _regression_data(tmp_path / "test.jsonl", 120, seed=1)
    make_hf_model("bert", tmp_path / "bert")
    run = tmp_path / "run"
    result = lmforge.finetune_classify(
        tmp_path / "bert", data, out=run, label_field="score", problem_type=REGRESSION, pooling="cls",
        dense="tanh", epochs=5, batch_size=16, lr=2e-3, dtype="fp32", quiet=True,
    )  # fmt: skip
    assert result["problem_type"] == REGRESSION and result["pearson"] > 0.9, result
    recipe = ["--data.task=classification", f"--data.input={data}", f"--train.init_from={tmp_path / 'bert'}"]
    planned = lmforge.plan(
        overrides=[*recipe, "--data.label_field=score", f"--data.problem_type={REGRESSION}"]
    )
    assert planned["model"]["head"] == "classification" and planned["model"]["labels"] == 1
    losses = [r["loss"] for r in read_metrics(run) if "loss" in r]
    assert sum(losses[-3:]) < 0.3 * sum(losses[:3]), losses
    model, _ = lmforge.load(run)
    assert model.labels == ["LABEL_0"] and model.problem_type == REGRESSION and model.function == "none"
    texts = [json.loads(line)["text"] for line in test.read_text().splitlines()]
    gold = torch.tensor([json.loads(line)["score"] for line in test.read_text().splitlines()]).double()
    hf, logits = _exported_logits(run, tmp_path / "hf", texts)
    assert hf.config.problem_type == REGRESSION and hf.config.num_labels == 1
    x = logits[:, 0].double()
    mse = float(((x - gold) ** 2).mean())
    pearson = float(((x - x.mean()) * (gold - gold.mean())).sum() / math.sqrt(
        float(((x - x.mean()) ** 2).sum() * ((gold - gold.mean()) ** 2).sum())))  # fmt: skip
    got = lmforge.eval_classify(run, test, label_field="score")
    assert got["problem_type"] == REGRESSION
    assert got["mse"] == pytest.approx(mse, rel=1e-4) and got["pearson"] == pytest.approx(pearson, abs=1e-5)
    assert pearson > 0.9, got
    # the validation figures the run reports are eval-classify's on its held-out split
    summary = json.loads((run / "summary.json").read_text())
    assert summary["val_mse"] == pytest.approx(summary["val_loss"]) and summary["problem_type"] == REGRESSION
    assert transformers.pipeline("text-classification", model=str(tmp_path / "hf"))(texts[0])[0]["score"] == (
        pytest.approx(float(x[0]), abs=1e-5)  # the raw output, as a regression's pipeline reads it
    )


def _train(tmp_path: Path, data: Path, name: str, *more: str, quiet: bool = True) -> dict:
    overrides = ["--data.task=classification", f"--data.input={data}", "--train.batch_size=4",
                 "--train.eval_batches=0", "--train.warmup_steps=0", "--train.max_minutes=0",
                 "--data.val_fraction=0.25", "--train.dtype=fp32", "--train.schedule=constant",
                 *more]  # fmt: skip
    return lmforge.train(None, overrides, out=tmp_path / name, quiet=quiet)


def test_a_reward_model_keeps_its_head(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """An HF reward model (one output, no problem_type) trains on as a regression, its own head
    and label kept (data.labels left empty), as transformers' forward(labels=) trains it; its
    config records `regression`, as transformers' does once trained."""
    from test_hf_classifier_kinds import _hf

    hf, batch, texts = _hf("distilbert", "one-output", tmp_path / "hf")
    data = tmp_path / "r.jsonl"
    data.write_text(
        "".join(json.dumps({"text": t, "label": i % 3 - 0.5}) + "\n" for i, t in enumerate(texts * 4))
    )
    capsys.readouterr()
    _train(tmp_path, data, "run", f"--train.init_from={tmp_path / 'hf'}", "--train.max_steps=1",
           "--train.lr=1e-12", "--train.classifier_dropout=0", quiet=False)  # fmt: skip
    assert "its regression head is kept and trained on (labels reward)" in capsys.readouterr().out
    model, _ = lmforge.load(tmp_path / "run")
    assert model.labels == ["reward"] and model.problem_type == REGRESSION
    with torch.no_grad():  # a step of 1e-12: the head is the reward model's own, not a new one
        expected = hf(**batch).logits
        assert (model(batch["input_ids"], batch["attention_mask"]) - expected).abs().max() < 1e-5
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["problem_type"] == REGRESSION and "val_pearson" in summary
    # plan plans what train runs: the kept head (it asked for data.labels, which train does not)
    recipe = ["--data.task=classification", f"--data.input={data}", f"--train.init_from={tmp_path / 'hf'}"]
    planned = lmforge.plan(overrides=recipe)
    assert planned["model"]["head"] == "classification" and planned["model"]["labels"] == 1
    with pytest.raises(LmforgeError, match=r"^data.labels='': name at least two labels"):
        lmforge.plan(overrides=[*recipe, "--data.problem_type=single_label_classification"])


def test_bad_labels_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    cases = [
        ('{"text": "a", "label": ["joy"]}\n{"text": "b", "label": "joy"}\n', MULTI, ["joy", "fear"],
         r"d.jsonl:2: label 'joy' is not a list of labels \(multi_label_classification: a JSON array"),
        ('{"text": "a", "label": ["joy", "rage"]}\n', MULTI, ["joy", "fear"],
         r"d.jsonl:1: label 'rage' is not one of \['joy', 'fear'\]"),
        ('{"text": "a", "label": 1.5}\n{"text": "b", "label": "high"}\n', REGRESSION, ["score"],
         r"d.jsonl:2: label 'high' is not a number \(regression\)"),
        ('{"text": "a", "label": true}\n', REGRESSION, ["score"], r"d.jsonl:1: label true is not a number"),
        ('{"text": "a", "label": NaN}\n', REGRESSION, ["score"], r"d.jsonl:1: label NaN is not a number"),
        ('{"text": "a", "label": [1, 2, 3]}\n', REGRESSION, ["v", "a"],
         r"d.jsonl:1: label \[1, 2, 3\] is not a list of 2 numbers, one per label \(regression\)"),
        ('{"text": "a", "label": 1' + "0" * 400 + '}\n', REGRESSION, ["score"],
         r"d.jsonl:1: label 1000.* is not a number \(each finite, within float32's range of 3.4e38\)"),
        ('{"text": "a", "label": [1e300, 2]}\n', REGRESSION, ["v", "a"],
         r"d.jsonl:1: label \[1e\+300, 2\] is not a list of 2 numbers, one per label \(each finite"),
    ]  # fmt: skip
    for text, problem_type, names, said in cases:
        path.write_text(text)
        with pytest.raises(LmforgeError, match=said) as e:
            read_labelled(path, names, problem_type=problem_type)
        assert "\n" not in str(e.value)
    path.write_text('{"text": "a", "label": []}\n{"text": "b", "label": ["fear", "joy", "joy"]}\n')
    assert read_labelled(path, ["joy", "fear"], problem_type=MULTI) == [("a", (0.0, 0.0)), ("b", (1.0, 1.0))]
    with pytest.raises(LmforgeError, match=r"^data.problem_type='multi_label' must be one of '', "):
        lmforge.train(
            None, ["--data.task=classification", "--data.problem_type=multi_label"], out=tmp_path / "x"
        )
    regression = _regression_data(tmp_path / "s.jsonl", 20)
    make_hf_model("bert", tmp_path / "bert")
    with pytest.raises(LmforgeError, match=r"s.jsonl:1: label 'score' is not a number|s.jsonl:1: needs JSON"):
        lmforge.finetune_classify(tmp_path / "bert", regression, problem_type=REGRESSION, quiet=True)
    with pytest.raises(
        LmforgeError, match=r"^data.labels='': name at least one label, comma-separated \(multi"
    ):
        lmforge.finetune_classify(tmp_path / "bert", regression, problem_type=MULTI, label_field="score")


def test_a_resumed_multi_label_run_equals_the_straight_one(tmp_path: Path) -> None:
    """A checkpoint holds what a multi-label run needs to continue exactly (a constant schedule, so
    extending the first run's max_steps changes no learning rate): the same losses and figures."""
    data = _multi_label_data(tmp_path / "e.jsonl", 64)
    make_hf_model("bert", tmp_path / "bert")
    common = [f"--train.init_from={tmp_path / 'bert'}", "--data.labels=anger,joy,fear",
              "--data.label_field=labels", f"--data.problem_type={MULTI}", "--train.lr=1e-3",
              "--train.eval_interval=3", "--train.log_interval=1", "--train.checkpoint_interval=3",
              "--model.dropout=0.1"]  # fmt: skip  # dropout: the RNG state is restored too
    straight = _train(tmp_path, data, "straight", *common, "--train.max_steps=8")
    _train(tmp_path, data, "resumed", *common, "--train.max_steps=3")
    again = lmforge.train(None, ["--train.max_steps=8"], resume=tmp_path / "resumed", quiet=True)

    def records(name: str) -> dict[int, tuple]:
        return {
            r["step"]: (r.get("loss"), r.get("val_loss"), r.get("val_f1"))
            for r in read_metrics(tmp_path / name)
        }

    assert records("resumed") == records("straight")
    assert again["val_f1"] == straight["val_f1"] and again["val_accuracy"] == straight["val_accuracy"]
