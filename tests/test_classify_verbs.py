"""`lmforge classify` and `lmforge eval-classify` on a small random classifier: what they read,
the shapes they give, and their one-line errors. Their figures on a trained classifier are
checked in test_classify.py."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from conftest import make_text

import lmforge
from lmforge.cli import main
from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.formats.directory import write_model_dir
from lmforge.formats.lmforge_dirs import save_classifier
from lmforge.inference.classify import classify, eval_classify, read_texts
from lmforge.model.classifier import Classifier
from lmforge.model.gpt import GPT
from lmforge.tokenization.tokenizer import Tokenizer

LABELS = ["no", "yes", "maybe"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clf")
    tok = Tokenizer.train_char([make_text(lines=200)])
    config = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=32, vocab_size=tok.vocab_size)
    torch.manual_seed(0)
    save_classifier(Classifier(GPT(config), LABELS).eval(), root / "clf", tok)
    write_model_dir(root / "gpt", config, GPT(config).state_dict(), tok)
    return {"clf": root / "clf", "gpt": root / "gpt"}


def test_classify_gives_the_pipelines_labels_for_texts_and_files(
    models: dict[str, Path], tmp_path: Path
) -> None:
    pipe = lmforge.pipeline("text-classification", model=models["clf"])
    texts = ["the king", "a night of swords", "ROMEO: hark"]
    (tmp_path / "lines.txt").write_text("\n".join(texts[1:]) + "\n\n")  # a blank line is skipped
    rows = classify(models["clf"], texts[:1], file=tmp_path / "lines.txt")
    assert [r["text"] for r in rows] == texts
    assert [r["labels"] for r in rows] == pipe(texts, top_k=1)
    every = classify(models["clf"], texts, top_k=0)
    assert [r["labels"] for r in every] == pipe(texts, top_k=None)
    assert all(
        len(r["labels"]) == 3 and sum(x["score"] for x in r["labels"]) == pytest.approx(1) for r in every
    )
    assert classify(models["clf"], []) == []


def test_a_jsonl_file_gives_its_text_field(models: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write('{"body": "the king", "label": "yes"}\n\n{"body": "the queen"}\n')
    assert read_texts(path, "body") == ["the king", "the queen"]
    with pytest.raises(LmforgeError, match=r"t.jsonl.gz:1: needs JSON with 'text'"):
        read_texts(path)
    (tmp_path / "n.jsonl").write_text('{"text": "a"}\n{"text": 3}\n')
    with pytest.raises(LmforgeError, match=r"n.jsonl:2: 'text' is 3, not a text"):
        classify(models["clf"], file=tmp_path / "n.jsonl")
    # JSON lines by any of their names: each whole line was classified as the text
    for name in ("r.ndjson", "R.JSONL", "r.json"):
        (tmp_path / name).write_text('{"id": 1, "text": "the king"}\n')
        assert read_texts(tmp_path / name) == ["the king"]
    (tmp_path / "array.json").write_text('[\n{"text": "the king"}\n]\n')
    with pytest.raises(
        LmforgeError, match=r"array.json:1: .*\(a .json file is read as JSON Lines: one object a line"
    ):
        read_texts(tmp_path / "array.json")
    (tmp_path / "e.jsonl").write_text('{"text": "a"}\n{"text": "  "}\n')
    with pytest.raises(LmforgeError, match=r"e.jsonl:2: 'text' is \"  \", not a text"):
        read_texts(tmp_path / "e.jsonl")


def test_an_empty_text_is_refused_as_training_refuses_it(models: dict[str, Path]) -> None:
    with pytest.raises(LmforgeError, match=r"^text 2 is empty: nothing to classify$"):
        classify(models["clf"], ["the king", " "])
    with pytest.raises(LmforgeError, match=r"^text 1 is empty"):
        lmforge.pipeline("text-classification", model=models["clf"])("")


def test_cli_prints_a_json_line_per_text(models: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", str(models["clf"]), "the king", "the queen", "--top-k", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [x["text"] for x in lines] == ["the king", "the queen"]
    assert all(len(x["labels"]) == 2 and x["labels"][0]["score"] >= x["labels"][1]["score"] for x in lines)


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["classify", "{clf}"], "nothing to classify: give some text or --file"),
        (["classify", "{gpt}", "hi"], "not a classifier (train one from it with `lmforge finetune-classify"),
        (["classify", "{clf}", "hi", "--top-k", "-1"], "top_k=-1: must be an integer >= 0"),
        (["classify", "{clf}", "--file", "{clf}/missing.txt"], "missing.txt: no such file"),
        (
            ["eval-classify", "{clf}", "--data", "{bad}"],
            "bad.jsonl:2: label 'pos' is not one of ['no', 'yes', 'maybe']",
        ),
    ],
)
def test_bad_input_is_one_line(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], error: str
) -> None:
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": "yes"}\n{"text": "b", "label": "pos"}\n')
    paths = {"clf": models["clf"], "gpt": models["gpt"], "bad": tmp_path / "bad.jsonl"}
    assert main([a.format(**paths) for a in argv]) == 2
    err = capsys.readouterr().err
    assert error in err and len(err.strip().splitlines()) == 1, err


def test_eval_classify_counts_every_example(models: dict[str, Path], tmp_path: Path) -> None:
    """Labels by name or index; the confusion matrix's rows are the gold labels."""
    path = tmp_path / "d.jsonl"
    path.write_text(
        "".join(
            json.dumps({"t": t, "y": y}) + "\n"
            for t, y in [("a", "no"), ("b", 1), ("c", "maybe"), ("d", "no")]
        )
    )
    pipe = lmforge.pipeline("text-classification", model=models["clf"])
    predicted = [LABELS.index(r["label"]) for r in pipe(["a", "b", "c", "d"])]
    result = eval_classify(models["clf"], path, text_field="t", label_field="y", batch_size=3)
    expected = torch.zeros(3, 3, dtype=torch.long)
    for gold, guess in zip([0, 1, 2, 0], predicted, strict=True):
        expected[gold, guess] += 1
    assert result["confusion"] == expected.tolist() and result["labels"] == LABELS
    assert result["accuracy"] == sum(g == p for g, p in zip([0, 1, 2, 0], predicted, strict=True)) / 4
    assert result["examples"] == 4


def test_labels_that_differ_only_in_case_are_read_and_named(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Data labelled `YES`/`No` scores against a model's `yes`/`no` (an HF model's POSITIVE against
    data's positive), saying so once on stderr; a label matching two names by case only, or none,
    is still an error naming its line."""
    from lmforge.data.labelled import read_labelled

    path = tmp_path / "d.jsonl"
    path.write_text(
        "".join(
            json.dumps({"text": t, "label": y}) + "\n" for t, y in [("a", "YES"), ("b", "No"), ("c", "no")]
        )
    )
    result = eval_classify(models["clf"], path)
    assert result["examples"] == 3 and sum(map(sum, result["confusion"])) == 3
    assert [sum(row) for row in result["confusion"]] == [2, 1, 0]  # gold no, yes, maybe
    err = capsys.readouterr().err
    assert err.strip() == f"lmforge: {path}: labels read ignoring case: 'No' as 'no', 'YES' as 'yes'"
    read_labelled(path, LABELS)  # the same file again: said once
    assert capsys.readouterr().err == ""
    (tmp_path / "two.jsonl").write_text('{"text": "a", "label": "Ab"}\n')
    with pytest.raises(LmforgeError, match=r"two.jsonl:1: label 'Ab' is not one of \['ab', 'AB'\]"):
        read_labelled(tmp_path / "two.jsonl", ["ab", "AB"])
    assert read_labelled(tmp_path / "two.jsonl", ["Ab", "AB"]) == [("a", 0)]  # an exact match first


def test_a_label_without_training_examples_is_said(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--labels negative,positive,neutral with no neutral example trained silently, and its macro
    F1 counted the empty class as 0."""
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": f"text {i}", "label": i % 2}) + "\n" for i in range(40)))
    lmforge.finetune_classify(models["gpt"], path, "no,yes,maybe", tmp_path / "run", epochs=1, quiet=True)
    said = f"lmforge: warning: {path}: no example of 'maybe'; the classifier learns never to predict it"
    assert said in capsys.readouterr().err


def test_a_label_whose_every_example_is_held_out_is_said(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A label with examples only on the held-out side of the split trained as silently as one with
    none: the check ran before the split."""
    from lmforge.train.tasks.classification import split_labelled

    rows = [(f"text {i}", i % 2) for i in range(39)] + [("the rare one", 2)]
    seed = next(s for s in range(100) if ("the rare one", 2) in split_labelled(rows, 0.1, s, "", print)[1])
    path = tmp_path / "d.jsonl"
    path.write_text(
        "".join(json.dumps({"text": t, "label": ["no", "yes", "maybe"][y]}) + "\n" for t, y in rows)
    )
    lmforge.finetune_classify(
        models["gpt"], path, "no,yes,maybe", tmp_path / "run", epochs=1, seed=seed, quiet=True
    )
    err = capsys.readouterr().err
    assert f"lmforge: warning: {path}: every example of 'maybe' is held out (data.val_fraction=0.1," in err
    assert "no example of" not in err


def test_a_label_with_a_comma_is_given_as_a_list(models: dict[str, Path], tmp_path: Path) -> None:
    """data.labels was one comma-separated string, so `good, mostly` could not be a label: a TOML
    list was refused, and finetune_classify joined a Python list with commas, splitting it again."""
    names = ["good, mostly", "bad"]
    path = tmp_path / "d.jsonl"
    path.write_text(
        "".join(json.dumps({"text": f"text {i}", "label": names[i % 2]}) + "\n" for i in range(20))
    )
    lmforge.finetune_classify(
        models["gpt"], path, names, tmp_path / "api", epochs=1, batch_size=4, quiet=True
    )
    assert json.loads((tmp_path / "api" / "model" / "config.json").read_text())["labels"] == names
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        f'[data]\ntask = "classification"\ninput = "{path}"\nlabels = ["good, mostly", "bad"]\n'
        f'[train]\ninit_from = "{models["gpt"]}"\nmax_steps = 1\nbatch_size = 4\n'
    )
    assert main(["train", str(recipe), "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    assert json.loads((tmp_path / "cli" / "model" / "config.json").read_text())["labels"] == names
    assert main(["train", "--resume", str(tmp_path / "cli"), "--train.max_steps=2", "--quiet"]) == 0
    given = '--data.labels=["good, mostly", "bad"]'  # a command line's TOML list (it was split on commas)
    argv = ["train", str(recipe), given, "--out", str(tmp_path / "line"), "--quiet"]
    assert main(argv) == 0
    assert json.loads((tmp_path / "line" / "model" / "config.json").read_text())["labels"] == names
    with pytest.raises(LmforgeError, match=r"labels=\['a', 1\] must be a string or a list of strings"):
        lmforge.finetune_classify(models["gpt"], path, ["a", 1], tmp_path / "bad", quiet=True)  # type: ignore[list-item]
