"""Text pairs through the command line and the training loop (data.text_pair_field,
--text-pair-field): an imported tiny HF BERT fine-tuned as a cross-encoder on NLI-style pairs,
exported, gives in transformers (`AutoTokenizer(a, text_pair=b)`) the logits that `lmforge
classify --text-pair-field` and lmforge's pipeline give on the run; training fed the model each
pair as transformers' tokenizer encodes it (BERT: token types 0 then 1; GPT-2: the two texts one
after the other); eval-classify's accuracy on pairs is the one counted by hand; a resumed run with
another pair field is refused. One-line refusals of bad pair input: tests/robustness_cases.py."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from hf_helpers import load_whole, make_hf_model
from test_hf_classifiers import VOCAB, save_hf

import lmforge
from lmforge.cli import main
from lmforge.config import load_config
from lmforge.data.text_pairs import encode_items
from lmforge.errors import LmforgeError
from lmforge.inference.classify import eval_classify, read_texts
from lmforge.model.classifier import Classifier
from lmforge.tools.plan_recipe import longest_text
from lmforge.train.classify import finetune_classify

transformers = pytest.importorskip("transformers")

TOL = 1e-5
LABELS = {0: "entailment", 1: "contradiction"}
WORDS = ["the", "old", "king", "kept", "his", "crown", "in", "a", "tower", "river", "queen", "rode", "south"]


def _pairs(path: Path, n: int = 32, seed: int = 0) -> Path:
    """NLI-style records: the hypothesis is entailed when it repeats a word of the premise."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            premise = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 7)))
            entailed = rng.random() < 0.5
            others = [w for w in WORDS if w not in premise.split()]
            word = rng.choice(premise.split() if entailed else others)
            hypothesis = " ".join([word, *(rng.choice(others) for _ in range(rng.randint(0, 3)))])
            label = LABELS[0] if entailed else LABELS[1]
            f.write(json.dumps({"premise": premise, "hypothesis": hypothesis, "label": label}) + "\n")
    return path


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class _Spy:
    """The inputs of every training forward of a Classifier (ids, mask, token types)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
        forward = Classifier.forward

        def spy(model: Classifier, idx: torch.Tensor, mask: Any = None, types: Any = None) -> torch.Tensor:
            if model.training:
                self.seen.append((idx.clone(), mask.clone(), None if types is None else types.clone()))
            return forward(model, idx, mask, types)

        monkeypatch.setattr(Classifier, "forward", spy)

    def rows(self) -> list[tuple[list[int], list[int] | None]]:
        """Each training row's real tokens and their token types."""
        out = []
        for ids, mask, types in self.seen:
            for i in range(len(ids)):
                n = int(mask[i].sum())
                out.append((ids[i, :n].tolist(), None if types is None else types[i, :n].tolist()))
        return out


def _encoded(tokenizer: Any, records: list[dict[str, Any]]) -> set[tuple[tuple[int, ...], tuple[int, ...]]]:
    """transformers' tokenizer(premise, text_pair=hypothesis) of each record: (ids, token types)."""
    out = set()
    for r in records:
        e = tokenizer(r["premise"], text_pair=r["hypothesis"], return_token_type_ids=True)
        out.add((tuple(e["input_ids"]), tuple(e["token_type_ids"])))
    return out


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pairs-bert")
    save_hf("bert", "BertForSequenceClassification", root / "hf", seed=1, names=LABELS)
    # the WordPiece vocabulary itself: transformers 5 builds save_hf's from vocab_file with 5 tokens
    (root / "vocab").mkdir()
    shutil.copy(VOCAB, root / "vocab")
    transformers.BertTokenizerFast.from_pretrained(root / "vocab", model_max_length=64).save_pretrained(
        root / "hf"
    )
    imported = lmforge.import_hf(root / "hf", root / "imported")
    train = _pairs(root / "nli.jsonl")
    run = root / "run"
    mp = pytest.MonkeyPatch()
    spy = _Spy(mp)
    try:
        finetune_classify(imported, train, "entailment,contradiction", run, text_field="premise",
                          text_pair_field="hypothesis", epochs=2, batch_size=8, lr=1e-3, max_len=64,
                          pooling="cls", dense="tanh", dtype="fp32", quiet=True)  # fmt: skip
    finally:
        mp.undo()
    (root / "spied.json").write_text(json.dumps(spy.rows()))
    return {"root": root, "hf": root / "hf", "run": run, "train": train}


def test_training_reads_each_pair_as_transformers_tokenizer_encodes_it(bert_run: dict[str, Path]) -> None:
    theirs = _encoded(transformers.AutoTokenizer.from_pretrained(bert_run["hf"]), _records(bert_run["train"]))
    rows = json.loads((bert_run["root"] / "spied.json").read_text())
    assert rows and all(types is not None for _, types in rows)
    assert all((tuple(ids), tuple(types)) in theirs for ids, types in rows)
    assert any(1 in types for _, types in rows)  # the second text's token type reached the encoder
    assert len({tuple(ids) for ids, _ in rows}) > 10 and not any(1 in ids for ids, _ in rows)  # 1: [UNK]


def test_an_exported_cross_encoder_gives_transformers_the_logits_of_classify_and_the_pipeline(
    bert_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, records = bert_run["run"], _records(bert_run["train"])[:6]
    out = lmforge.export_hf(run, tmp_path / "exported")
    model = load_whole(transformers.AutoModelForSequenceClassification, out)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    premises, hypotheses = [r["premise"] for r in records], [r["hypothesis"] for r in records]
    batch = tokenizer(premises, text_pair=hypotheses, padding=True, return_tensors="pt")
    assert int(batch["token_type_ids"].sum()) > 0
    with torch.no_grad():
        theirs = model(**batch).logits
        untyped = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert float((untyped - theirs).abs().max()) > 1e-3  # the parity below holds with token types alone
    assert model.config.id2label == LABELS
    file = tmp_path / "pairs.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in records))
    argv = ["classify", str(run), "--file", str(file), "--text-field", "premise", "--text-pair-field",
            "hypothesis", "--top-k", "0", "--function-to-apply", "none"]  # fmt: skip
    assert main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["text"], r["text_pair"]) for r in lines] == list(zip(premises, hypotheses, strict=True))
    cli = torch.tensor(
        [[{x["label"]: x["score"] for x in r["labels"]}[LABELS[i]] for i in range(2)] for r in lines]
    )
    pipe = lmforge.pipeline("text-classification", model=run)
    given = [{"text": a, "text_pair": b} for a, b in zip(premises, hypotheses, strict=True)]
    piped = pipe(given, top_k=None, function_to_apply="none")
    ours = torch.tensor([[{x["label"]: x["score"] for x in r}[LABELS[i]] for i in range(2)] for r in piped])
    assert float((cli - theirs).abs().max()) < TOL
    assert float((ours - theirs).abs().max()) < TOL


def test_eval_classify_on_pairs_gives_the_accuracy_counted_by_hand(
    bert_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _pairs(tmp_path / "test.jsonl", n=20, seed=7)
    records = _records(data)
    pipe = lmforge.pipeline("text-classification", model=bert_run["run"])
    best = pipe([{"text": r["premise"], "text_pair": r["hypothesis"]} for r in records])
    by_hand = sum(b["label"] == r["label"] for b, r in zip(best, records, strict=True)) / len(records)
    index = {name: i for i, name in LABELS.items()}
    confusion = [[0, 0], [0, 0]]
    for b, r in zip(best, records, strict=True):
        confusion[index[r["label"]]][index[b["label"]]] += 1
    got = eval_classify(bert_run["run"], data, text_field="premise", text_pair_field="hypothesis")
    assert got["examples"] == 20 and got["accuracy"] == pytest.approx(by_hand)
    assert got["confusion"] == confusion
    assert main(["eval-classify", str(bert_run["run"]), "--data", str(data), "--text-field", "premise",
                 "--text-pair-field", "hypothesis"]) == 0  # fmt: skip
    # left out, the fields are the run's, said (until 2026-12-07 the first texts were scored alone)
    capsys.readouterr()
    assert eval_classify(bert_run["run"], data) == {**got, "seconds": pytest.approx(got["seconds"], abs=60)}
    said = capsys.readouterr().err
    assert "text_field='premise', text_pair_field='hypothesis', as " in said
    classified = lmforge.classify(bert_run["run"] / "model", file=data)
    assert [c["labels"][0]["label"] for c in classified] == [b["label"] for b in best]
    capsys.readouterr()
    alone = eval_classify(bert_run["run"], data, text_pair_field="")  # asked for: the first texts alone
    assert alone["examples"] == 20 and "text_pair_field" not in capsys.readouterr().err


def test_a_resumed_run_with_another_pair_field_is_refused(bert_run: dict[str, Path]) -> None:
    refused = r"cannot change data\.text_pair_field='' \(the run has data\.text_pair_field='hypothesis'\)"
    with pytest.raises(LmforgeError, match=refused):
        lmforge.train(resume=bert_run["run"], overrides=["--data.text_pair_field=", "--train.max_steps=20"])


def test_a_decoder_classifier_trains_on_the_two_texts_one_after_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_hf_model("gpt2", tmp_path / "base")
    train = _pairs(tmp_path / "nli.jsonl", n=16)
    spy = _Spy(monkeypatch)
    finetune_classify(tmp_path / "base", train, ",".join(LABELS.values()), tmp_path / "run",
                      text_field="premise", text_pair_field="hypothesis", epochs=1, batch_size=8, lr=1e-3,
                      max_len=64, dtype="fp32", quiet=True)  # fmt: skip
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path / "base")
    records = _records(train)
    joined = {tuple(hf(r["premise"])["input_ids"] + hf(r["hypothesis"])["input_ids"]) for r in records}
    assert {tuple(ids) for ids, _ in _encoded(hf, records)} == joined  # GPT-2's pair: no template
    rows = spy.rows()
    assert len(rows) >= 8 and all(tuple(ids) in joined for ids, _ in rows)


def test_read_texts_reads_pairs_from_json_lines(tmp_path: Path) -> None:
    file = tmp_path / "p.jsonl"
    file.write_text('{"q": "a king", "p": "the crown"}\n\n{"q": "river", "p": "south"}\n')
    assert read_texts(file, "q", "p") == [("a king", "the crown"), ("river", "south")]
    assert read_texts(file, "q") == ["a king", "river"]
    with pytest.raises(LmforgeError, match=r"p\.jsonl:1: needs JSON with 'q' and 'h' \("):
        read_texts(file, "q", "h")


def test_plan_counts_a_pair_s_tokens_as_training_encodes_it(bert_run: dict[str, Path]) -> None:
    imported, train = bert_run["root"] / "imported", bert_run["train"]
    keys = {"task": "classification", "input": train, "text_field": "premise",
            "text_pair_field": "hypothesis", "labels": ",".join(LABELS.values())}  # fmt: skip
    cfg = load_config(None, [*(f"--data.{k}={v}" for k, v in keys.items()), f"--train.init_from={imported}"])
    _, tokenizer = lmforge.load(imported)
    pairs = [(r["premise"], r["hypothesis"]) for r in _records(train)]
    _, mask, _ = encode_items(tokenizer, pairs, 64)
    assert (
        longest_text(cfg, 64)
        == int(mask.sum(1).max())
        > max(len(tokenizer.encode_prompt(a)) for a, _ in pairs)
    )
