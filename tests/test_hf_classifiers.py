"""Hugging Face fine-tuned encoders: BertForSequenceClassification, and DistilBERT and RoBERTa (base,
sequence classifier, question answering) read as lmforge models, checked against transformers on
tiny random models built here (fixed seed) and on tests/fixtures/distilbert-qa and roberta-qa (built
by their build.py, with transformers 4.57.1's question-answering pipeline answers in golden.json).

What is compared: logits (or hidden states) of a padded batch within 1e-5 of transformers' own
model, directly and after `lmforge import`; `pipeline("text-classification")` against
transformers' pipeline (same labels in the same order, scores within 1e-5, for the top_k options);
`pipeline("question-answering")` against the golden answers (same answer, start and end, scores
within 1e-5). And the one-line refusals: heads lmforge does not read, DistilBERT's sinusoidal
positions. A classifier's export back to transformers: tests/test_hf_classifier_export.py;
multi-label, regression and one-output heads: tests/test_hf_classifier_kinds.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from qa_answers import assert_like

import lmforge
from lmforge.errors import LmforgeError
from lmforge.model.classifier import Classifier
from lmforge.model.encoder import Encoder
from lmforge.model.span import SpanModel

transformers = pytest.importorskip("transformers")

FIXTURES = Path(__file__).parent / "fixtures"
VOCAB = FIXTURES / "bert-qa" / "vocab.txt"  # a small WordPiece vocabulary (260 tokens)
BPE = FIXTURES / "roberta-qa"  # a small byte-level BPE with RoBERTa's special tokens (400 tokens)
QA_FIXTURES = ["distilbert-qa", "roberta-qa"]
LABELS = {0: "negative", 1: "neutral", 2: "positive"}
TEXTS = [
    "the old king kept his crown in a tower",
    "a merchant named tobias sold salt, wool and copper pots at the market on tuesdays",
    "river",
    "Queen Élodie rode south!",
]
TOL = 1e-5


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Biases and norms start at 0/1: randomise them so that their mapping is tested too."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name.lower():
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def _config(family: str, names: dict[int, str] = LABELS, **extra: Any) -> Any:
    labels = {"id2label": names, "label2id": {v: k for k, v in names.items()}}
    if family == "bert":
        shape = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
        return transformers.BertConfig(
            vocab_size=260, max_position_embeddings=64, initializer_range=0.3, **shape, **labels, **extra
        )
    if family == "roberta":  # 64 positions after padding_idx + 1 = 2 unused rows
        shape = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
        ids = {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "type_vocab_size": 1}
        return transformers.RobertaConfig(
            vocab_size=400,
            max_position_embeddings=66,
            initializer_range=0.3,
            **shape,
            **ids,
            **labels,
            **extra,
        )
    shape = {"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64}
    return transformers.DistilBertConfig(
        vocab_size=260, max_position_embeddings=64, initializer_range=0.3, **shape, **labels, **extra
    )


def save_hf(
    family: str, cls_name: str, directory: Path, seed: int = 0, names: dict[int, str] = LABELS, **extra: Any
) -> torch.nn.Module:
    """A random transformers model of class `cls_name` (+ its fast tokenizer) saved in `directory`."""
    torch.manual_seed(seed)
    model = _randomised(getattr(transformers, cls_name)(_config(family, names, **extra)))
    model.save_pretrained(directory)
    if family == "roberta":
        files = {"vocab": str(BPE / "vocab.json"), "merges": str(BPE / "merges.txt")}
        tokenizer = transformers.RobertaTokenizerFast(**files, model_max_length=64)
    else:
        wordpiece = (
            transformers.BertTokenizerFast if family == "bert" else transformers.DistilBertTokenizerFast
        )
        # transformers 5 names the file `vocab` (its `vocab_file` gave a 5-token tokenizer: every word [UNK])
        tokenizer = wordpiece(vocab=str(VOCAB), model_max_length=64)
        assert len(tokenizer) == 260
    tokenizer.save_pretrained(directory)
    return model


CLASSIFIERS = {
    "bert": "BertForSequenceClassification",
    "distilbert": "DistilBertForSequenceClassification",
    "roberta": "RobertaForSequenceClassification",
}


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[torch.nn.Module, Path]]:
    root = tmp_path_factory.mktemp("hf-classifiers")
    return {f: (save_hf(f, cls, root / f), root / f) for f, cls in CLASSIFIERS.items()}


def _batch(directory: Path) -> dict[str, torch.Tensor]:
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert int(batch["attention_mask"].sum()) < batch["attention_mask"].numel()  # padding is exercised
    return batch


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.mark.parametrize("family", sorted(CLASSIFIERS))
def test_classifier_logits_equal_transformers(
    classifiers: dict[str, tuple[torch.nn.Module, Path]], family: str, tmp_path: Path
) -> None:
    hf, directory = classifiers[family]
    batch = _batch(directory)
    with torch.no_grad():
        expected = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    imported = lmforge.import_hf(directory, tmp_path / "imported")
    raw = json.loads((imported / "config.json").read_text())
    assert raw["model_type"] == "lmforge-classifier" and raw["pooling"] == "cls"
    assert raw["dense"] == {"bert": "tanh", "distilbert": "relu", "roberta": "tanh"}[family]
    for source in (directory, imported):
        model, _ = lmforge.load(source)
        assert isinstance(model, Classifier) and model.labels == ["negative", "neutral", "positive"]
        with torch.no_grad():
            got = model(batch["input_ids"], batch["attention_mask"])
            assert _max_diff(got, expected) < TOL, (source, _max_diff(got, expected))
            # the dense layer matters: without its activation the logits are far off
            model.dense_act = "relu" if model.dense_act == "tanh" else "tanh"
            assert _max_diff(model(batch["input_ids"], batch["attention_mask"]), expected) > 1e-3


def _assert_same_results(got: Any, expected: Any, where: str) -> None:
    """Equal labels in the same order (and the same nesting); scores within 1e-5."""
    if isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), (where, got, expected)
        for n, (g, e) in enumerate(zip(got, expected, strict=True)):
            _assert_same_results(g, e, f"{where}[{n}]")
        return
    assert isinstance(got, dict) and set(got) == {"label", "score"}, (where, got)
    assert got["label"] == expected["label"], (where, got, expected)
    assert abs(got["score"] - expected["score"]) < TOL, (where, got, expected)


@pytest.mark.parametrize("family", sorted(CLASSIFIERS))
def test_pipeline_equals_transformers_pipeline(
    classifiers: dict[str, tuple[torch.nn.Module, Path]], family: str
) -> None:
    _, directory = classifiers[family]
    theirs = transformers.pipeline("text-classification", model=str(directory))
    ours = lmforge.pipeline("text-classification", model=directory)
    labels_seen = set()
    for options in ({}, {"top_k": 1}, {"top_k": 2}, {"top_k": None}):
        for text in (TEXTS, TEXTS[1]):
            expected = theirs(text, **options)  # a list with top_k=1 given: a list of one dict each
            _assert_same_results(ours(text, **options), expected, f"{family} {options} {text!r:.20}")
            labels_seen.update(r["label"] for r in expected if isinstance(r, dict))
    assert len(labels_seen) >= 2  # the random heads do not give every text the same label
    _assert_same_results(ours(TEXTS, batch_size=1), theirs(TEXTS), "batch_size=1")
    for top_k in (1, 2, None):  # given to pipeline(): a string's labels come inside a list, a
        theirs = transformers.pipeline("text-classification", model=str(directory), top_k=top_k)
        ours = lmforge.pipeline("text-classification", model=directory, top_k=top_k)
        for text in (TEXTS, TEXTS[1]):  # list's one list each; per call, as above
            _assert_same_results(ours(text), theirs(text), f"{family} pipeline(top_k={top_k}) {text!r:.20}")
            _assert_same_results(ours(text, top_k=1), theirs(text, top_k=1), f"{family} and top_k=1")


def test_default_labels_and_imported_pipeline(tmp_path: Path) -> None:
    """No id2label (transformers' LABEL_0, LABEL_1 names), through an imported directory."""
    directory = tmp_path / "hf"
    save_hf("bert", "BertForSequenceClassification", directory, seed=1, names={0: "no", 1: "yes"})
    raw = json.loads((directory / "config.json").read_text())
    del raw["id2label"], raw["label2id"]
    (directory / "config.json").write_text(json.dumps(raw))
    imported = lmforge.import_hf(directory, tmp_path / "imported")
    expected = transformers.pipeline("text-classification", model=str(directory))(TEXTS, top_k=None)
    _assert_same_results(
        lmforge.pipeline("text-classification", model=imported)(TEXTS, top_k=None), expected, ""
    )
    assert {r["label"] for r in expected[0]} == {"LABEL_0", "LABEL_1"}


@pytest.mark.parametrize(
    ("family", "cls_name"), [("distilbert", "DistilBertModel"), ("roberta", "RobertaModel")]
)
def test_body_equals_transformers(family: str, cls_name: str, tmp_path: Path) -> None:
    hf = save_hf(family, cls_name, tmp_path / "hf")
    batch = _batch(tmp_path / "hf")
    imported = lmforge.import_hf(tmp_path / "hf", tmp_path / "imported")
    assert json.loads((imported / "config.json").read_text())["model_type"] == "lmforge-encoder"
    with torch.no_grad():
        expected = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        real = batch["attention_mask"].bool()  # padded positions are not compared (HF's differ by masking)
        for source in (tmp_path / "hf", imported):
            model, _ = lmforge.load(source)
            assert isinstance(model, Encoder) and model.config.block_size == 64  # RoBERTa: 66 rows - 2
            assert (model.wtt is None) == (family == "distilbert")
            got = model(batch["input_ids"], batch["attention_mask"])
            assert _max_diff(got[real], expected[real]) < TOL


def test_roberta_tokenizer_from_vocab_and_merges(
    classifiers: dict[str, tuple[torch.nn.Module, Path]], tmp_path: Path
) -> None:
    """A RoBERTa directory without tokenizer.json: <s> ... </s> around GPT-2's byte-level BPE."""
    directory = tmp_path / "hf"
    shutil.copytree(classifiers["roberta"][1], directory)
    (directory / "tokenizer.json").unlink()
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(BPE / name, directory / name)
    model, tokenizer = lmforge.load(directory)
    theirs = transformers.AutoTokenizer.from_pretrained(classifiers["roberta"][1])
    for text in TEXTS:
        assert tokenizer.hf.encode(text).ids == theirs(text)["input_ids"]
    pair = tokenizer.hf.encode(TEXTS[0], TEXTS[1])
    assert pair.ids == theirs(TEXTS[0], TEXTS[1])["input_ids"] and set(pair.type_ids) == {0}
    # offsets, which place QA answers: a context that starts with a space keeps it out of its first token
    pair, expected = (
        tokenizer.hf.encode("Who?", " " + TEXTS[1]),
        theirs("Who?", " " + TEXTS[1], return_offsets_mapping=True),
    )
    assert pair.offsets == [tuple(o) for o in expected["offset_mapping"]]


@pytest.mark.parametrize("fixture", QA_FIXTURES)
def test_qa_logits_equal_transformers(fixture: str, tmp_path: Path) -> None:
    hf = transformers.AutoModelForQuestionAnswering.from_pretrained(FIXTURES / fixture).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(FIXTURES / fixture)
    batch = tokenizer(["Who sold salt?", "Which river?"], TEXTS[:2], padding=True, return_tensors="pt")
    imported = lmforge.import_hf(FIXTURES / fixture, tmp_path / "imported")
    assert json.loads((imported / "config.json").read_text())["model_type"] == "lmforge-qa"
    with torch.no_grad():
        out = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        expected = torch.stack([out.start_logits, out.end_logits], -1)
        real = batch["attention_mask"].bool()
        for source in (FIXTURES / fixture, imported):
            model, _ = lmforge.load(source)
            assert isinstance(model, SpanModel)
            got = model(batch["input_ids"], batch["attention_mask"])
            assert _max_diff(got[real], expected[real]) < TOL


@pytest.mark.parametrize("source", ["hf", "imported"])
@pytest.mark.parametrize("fixture", QA_FIXTURES)
def test_qa_pipeline_equals_transformers(fixture: str, source: str, tmp_path: Path) -> None:
    golden = json.loads((FIXTURES / fixture / "golden.json").read_text())["cases"]
    model = FIXTURES / fixture
    if source == "imported":
        model = lmforge.import_hf(model, tmp_path / "imported")
    qa = lmforge.pipeline("question-answering", model=model)
    for n, case in enumerate(golden):
        got = qa(*case.get("args", []), **case.get("call", {}), **case.get("options", {}))
        assert_like(got, case["expected"], f"case {n}", rel=0, abs_=TOL)


@pytest.mark.parametrize(
    ("family", "cls_name", "extra", "why"),
    [
        ("bert", "BertForTokenClassification", {}, "BertForTokenClassification (a label per token)"),
        ("bert", "BertForMultipleChoice", {}, "BertForMultipleChoice (multiple choice)"),
    ],
)  # fmt: skip
def test_a_head_lmforge_does_not_read_leaves_its_body_with_a_note(
    family: str, cls_name: str, extra: dict[str, Any], why: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """What a fine-tune starts from (finetune-classify, QA training) is the body; the pipelines that
    need the head say it is not a classifier."""
    hf = save_hf(family, cls_name, tmp_path / "hf", **extra)
    capsys.readouterr()
    model, _ = lmforge.load(tmp_path / "hf")
    assert type(model) is Encoder
    note = f"lmforge: note: {tmp_path / 'hf' / 'config.json'}: {why}"
    assert note in capsys.readouterr().err
    body = getattr(hf, hf.base_model_prefix)
    batch = _batch(tmp_path / "hf")
    with torch.no_grad():
        expected = body(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
        got = model(batch["input_ids"], batch["attention_mask"])
    real = batch["attention_mask"].bool()
    assert _max_diff(got[real], expected[real]) < TOL
    with pytest.raises(LmforgeError) as e:  # it said "not a classifier" alone, after the note
        lmforge.pipeline("text-classification", model=tmp_path / "hf")
    assert f"{tmp_path / 'hf'}: {why}" in str(e.value) and "lmforge loads its body alone" in str(e.value)


def test_sinusoidal_distilbert_is_refused_in_one_line(tmp_path: Path) -> None:
    save_hf("distilbert", "DistilBertModel", tmp_path, sinusoidal_pos_embds=True)
    for call in (lambda: lmforge.load(tmp_path), lambda: lmforge.import_hf(tmp_path, tmp_path / "out")):
        with pytest.raises(
            LmforgeError, match=r"config.json: unsupported sinusoidal_pos_embds=true"
        ) as caught:
            call()
        assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_masked_lm_checkpoint_loads_as_its_body(tmp_path: Path) -> None:
    """A pretraining head (bert-base-uncased's config names BertForMaskedLM) is dropped, the body kept."""
    save_hf("distilbert", "DistilBertForMaskedLM", tmp_path)
    model, _ = lmforge.load(tmp_path)
    assert isinstance(model, Encoder)


def test_misshapen_or_missing_head_tensor_is_one_line(
    classifiers: dict[str, tuple[torch.nn.Module, Path]], tmp_path: Path
) -> None:
    from safetensors.torch import load_file, save_file

    directory = tmp_path / "hf"
    shutil.copytree(classifiers["distilbert"][1], directory)
    state = load_file(str(directory / "model.safetensors"))
    save_file(
        {k: v for k, v in state.items() if k != "pre_classifier.bias"}, str(directory / "model.safetensors")
    )
    with pytest.raises(LmforgeError, match="missing tensor 'pre_classifier.bias'"):
        lmforge.load(directory)
    raw = json.loads((directory / "config.json").read_text())
    raw["id2label"] = {"0": "a", "1": "b"}  # three outputs, two names
    (directory / "config.json").write_text(json.dumps(raw))
    with pytest.raises(LmforgeError, match=r"config.json: 'id2label' must name each of the classifier's 3"):
        lmforge.load(directory)


def test_distilbert_export_round_trips(tmp_path: Path) -> None:
    """DistilBERT base and QA: import -> export gives transformers' files back, tensor for tensor."""
    from safetensors.torch import load_file

    save_hf("distilbert", "DistilBertModel", tmp_path / "base")
    for source, cls_name in ((tmp_path / "base", "DistilBertModel"), (FIXTURES / "distilbert-qa", None)):
        out = lmforge.export_hf(lmforge.import_hf(source, tmp_path / "imported"), tmp_path / "hf")
        raw = json.loads((out / "config.json").read_text())
        assert raw["model_type"] == "distilbert"
        auto = transformers.AutoModelForQuestionAnswering if cls_name is None else transformers.AutoModel
        _, info = auto.from_pretrained(out, output_loading_info=True)
        assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
        theirs, ours = load_file(str(source / "model.safetensors")), load_file(str(out / "model.safetensors"))
        assert set(theirs) == set(ours) and all(torch.equal(theirs[k], ours[k]) for k in theirs)
        shutil.rmtree(tmp_path / "imported")
        shutil.rmtree(out)


def test_roberta_exports_as_the_same_network_in_bert_layout(tmp_path: Path) -> None:
    """lmforge writes no RoBERTa directories: the body exports as a BertModel with positions
    renumbered from 0, which gives RoBERTa's hidden states on the real tokens."""
    hf = save_hf("roberta", "RobertaModel", tmp_path / "hf")
    out = lmforge.export_hf(tmp_path / "hf", tmp_path / "bert")
    assert json.loads((out / "config.json").read_text())["model_type"] == "bert"
    bert = transformers.BertModel.from_pretrained(out).eval()
    batch = _batch(tmp_path / "hf")
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        expected = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        got = bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    assert _max_diff(got[real], expected[real]) < TOL
    # the null answer's token, which transformers' QA pipeline keeps answerable, is named
    theirs = transformers.AutoTokenizer.from_pretrained(out)
    assert (theirs.cls_token, theirs.sep_token, theirs.mask_token) == ("<s>", "</s>", "<mask>")


def test_cli_import_of_a_classifier_and_of_an_unread_head(
    classifiers: dict[str, tuple[torch.nn.Module, Path]], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from lmforge.cli import main

    assert main(["import", str(classifiers["distilbert"][1]), "--out", str(tmp_path / "clf")]) == 0
    assert json.loads((tmp_path / "clf" / "config.json").read_text())["labels"] == list(LABELS.values())
    assert main(["export", str(tmp_path / "clf"), "--out", str(tmp_path / "hf")]) == 0
    exported = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert exported["architectures"] == ["DistilBertForSequenceClassification"]
    save_hf("bert", "BertForTokenClassification", tmp_path / "tokens")
    capsys.readouterr()
    assert main(["import", str(tmp_path / "tokens"), "--out", str(tmp_path / "x")]) == 0  # the body
    assert "BertForTokenClassification (a label per token)" in capsys.readouterr().err
    assert json.loads((tmp_path / "x" / "config.json").read_text())["model_type"] == "lmforge-encoder"


@pytest.mark.parametrize("task", ["classification", "qa"])
def test_a_lora_run_from_an_hf_classifier_loads_and_merges(
    task: str, classifiers: dict[str, tuple[torch.nn.Module, Path]], tmp_path: Path
) -> None:
    """Both tasks train on the classifier's body; the run's model must load without the base's
    dense layer and head (it was refused as 'unexpected dense.weight' once trained)."""
    if task == "classification":
        data = tmp_path / "l.jsonl"
        rows = [{"text": t, "label": ["no", "yes"][i % 2]} for i, t in enumerate(TEXTS * 4)]
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        extra, head = ["--data.labels=no,yes"], "head"
    else:
        data = tmp_path / "squad.json"
        start = TEXTS[1].index("tobias")
        answers = [{"text": "tobias", "answer_start": start}]
        qas = [{"id": str(i), "question": "Who sold salt?", "answers": answers} for i in range(8)]
        contexts = [TEXTS[1], TEXTS[1] + " The end."]  # two contexts: QA holds out by context text
        articles = [
            {"title": t, "paragraphs": [{"context": c, "qas": qas[n::2]}]}
            for n, (t, c) in enumerate(zip("ab", contexts, strict=True))
        ]
        data.write_text(json.dumps({"data": articles}))
        extra, head = [], "qa_outputs"
    overrides = [
        f"--data.task={task}",
        f"--data.input={data}",
        f"--train.init_from={classifiers['distilbert'][1]}",
        "--lora.enabled=true",
        f"--lora.also_train={head}",
        "--train.max_steps=2",
        "--train.batch_size=2",
        "--train.eval_batches=1",
        "--train.warmup_steps=0",
        "--train.max_minutes=0",
        "--data.val_fraction=0.5",
        *extra,
    ]
    lmforge.train(None, overrides, out=tmp_path / "run", quiet=True)
    model, _ = lmforge.load(tmp_path / "run")
    assert isinstance(model, Classifier if task == "classification" else SpanModel)
    merged = lmforge.merge_lora(tmp_path / "run", out=tmp_path / "merged")
    assert isinstance(lmforge.load(merged)[0], type(model))


@pytest.mark.parametrize("fixture", QA_FIXTURES)
def test_an_import_is_the_same_bytes_every_time(fixture: str, tmp_path: Path) -> None:
    """DistilBERT and RoBERTa QA checkpoints have no pooler: the unused one is zeros, not a random init."""
    first, second = (lmforge.import_hf(FIXTURES / fixture, tmp_path / name) for name in ("a", "b"))
    weights = sorted(p.name for p in first.iterdir() if p.suffix == ".safetensors")
    assert weights and all((first / w).read_bytes() == (second / w).read_bytes() for w in weights)
