"""`lmforge prep --canaries`: secrets planted in the training split only, the stated number of
times, recorded in canaries.json, the same for the same seed; bad settings give one clear line."""

from __future__ import annotations

import json
import lzma
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import lmforge
from lmforge import LmforgeError, cli
from lmforge.config import ModelConfig
from lmforge.data.canaries import CanarySet, make_canaries, parse_repeats, placements
from lmforge.data.prep import is_val, prep
from lmforge.data.shards import open_split
from lmforge.formats.directory import write_model_dir
from lmforge.model.gpt import GPT
from lmforge.tokenization.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 distinct paragraphs of shipped Shakespeare, as JSON lines."""
    with lzma.open(ROOT / "data" / "shakespeare.jsonl.xz", "rt") as f:
        text = json.loads(f.readline())["text"]
    paragraphs = [p for p in text.split("\n\n") if len(p) > 80][:60]
    path = tmp_path_factory.mktemp("canary-corpus") / "plays.jsonl"
    path.write_text("".join(json.dumps({"text": p}) + "\n" for p in paragraphs))
    return path


@pytest.fixture(scope="module")
def prepared(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("canary-prep") / "out"
    argv = ["prep", str(corpus), "--out", str(out), "--stages", "none", "--workers", "1", "--quiet"]
    argv += ["--canaries", "2", "--canary-repeats", "1,3", "--canary-seed", "7", "--val-fraction", "0.3"]
    assert cli.main(argv) == 0
    return out


def _documents(out: Path, split: str) -> list[str]:
    tok = Tokenizer.load(out / "tokenizer.json")
    ids = np.concatenate(open_split(out, split)).tolist()
    docs, start = [], 0
    for i, t in enumerate(ids):
        if t == tok.eos_id:
            docs.append(tok.decode(ids[start:i]))
            start = i + 1
    return docs


def test_canaries_go_to_train_only_the_stated_number_of_times(prepared: Path) -> None:
    canaries = CanarySet.load(prepared / "canaries.json")
    assert sorted(c.repeats for c in canaries.canaries) == [1, 1, 3, 3]
    assert canaries.candidates == 10**6 and canaries.seed == 7
    train, val = _documents(prepared, "train"), _documents(prepared, "val")
    assert val, "the hash split left validation empty"
    for c in canaries.canaries:
        assert c.text == f"my secret code is {c.secret}" and len(c.secret.split()) == 6
        assert train.count(c.text) == c.repeats
        assert not any(c.secret in doc for doc in val)
    meta = json.loads((prepared / "meta.json").read_text())
    assert meta["canaries"] == 8 and "canaries.json" in meta["files"]
    assert meta["documents_per_split"]["train"] + meta["documents_per_split"]["val"] == meta["documents"] + 8
    report = json.loads((prepared / "report.json").read_text())
    assert report["canaries"] == 4 and report["canary_copies_in_train"] == 8


def test_the_audit_counts_the_documents_meta_json_counts(prepared: Path, tmp_path: Path) -> None:
    """The audit of a prepared directory reads as many documents per side as prep wrote (canary
    copies included: they are train documents), not one more (the trailing EOS is no document)."""
    tok = Tokenizer.load(prepared / "tokenizer.json")
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=1, n_embd=16, block_size=32, vocab_size=tok.vocab_size))
    write_model_dir(tmp_path / "model", model.config, model.state_dict(), tok)
    result = lmforge.audit(
        tmp_path / "model", prepared, prefix_tokens=4, k=4, samples=4, candidates=100, quiet=True
    )
    per_split = json.loads((prepared / "meta.json").read_text())["documents_per_split"]
    assert result["extraction"]["train"]["documents"] == per_split["train"]
    assert result["extraction"]["heldout"]["documents"] == per_split["val"]


def test_copies_are_scattered_among_the_documents(prepared: Path) -> None:
    canaries = CanarySet.load(prepared / "canaries.json")
    texts = {c.text for c in canaries.canaries}
    train = _documents(prepared, "train")
    places = [i for i, doc in enumerate(train) if doc in texts]
    assert len(places) == 8 and places != list(range(places[0], places[0] + 8))  # not one block


def test_the_same_seed_gives_the_same_canaries_and_places() -> None:
    a, b = make_canaries(5, "1,4", seed=3), make_canaries(5, "1,4", seed=3)
    assert a.canaries == b.canaries
    assert make_canaries(5, "1,4", seed=4).canaries != a.canaries
    assert placements(a, 100, 3) == placements(b, 100, 3)
    slots = placements(a, 100, 3)
    assert sum(map(len, slots.values())) == 5 * 1 + 5 * 4 and all(0 <= s <= 100 for s in slots)


def test_secrets_are_distinct_and_drawn_from_the_space() -> None:
    canaries = make_canaries(100, [1, 2, 3], seed=0, length=3)
    secrets = [c.secret for c in canaries.canaries]
    assert len(set(secrets)) == 300 and canaries.candidates == 1000
    assert all(len(s.split(" ")) == 3 and s.replace(" ", "").isdigit() for s in secrets)
    assert canaries.text([1, 2, 3]) == "my secret code is 1 2 3" and canaries.prefix == "my secret code is "


@pytest.mark.parametrize("value", ["1,x", "0", "1,1", "", "-2"])
def test_bad_repeats_are_named(value: str) -> None:
    with pytest.raises(LmforgeError, match="prep.canary_repeats="):
        parse_repeats(value)


def test_more_canaries_than_the_space_allows_is_refused() -> None:
    with pytest.raises(LmforgeError, match="prep.canaries=5 x 2 repeat counts"):
        make_canaries(5, "1,2", length=1)


def test_canaries_as_an_option_with_their_keys_as_overrides(corpus: Path, tmp_path: Path) -> None:
    """`prep --canaries 3 --prep.canary_length=4`: the check waits for every setting (it refused
    the override as set while prep.canaries was still 0)."""
    meta = prep(corpus, tmp_path / "out", stages="none", workers=1, quiet=True, canaries=3,
                canary_repeats="2", overrides=["--prep.canary_length=4"])  # fmt: skip
    secrets = json.loads((tmp_path / "out" / "canaries.json").read_text())
    assert meta["canaries"] == 6 and all(len(c["secret"].split()) == 4 for c in secrets["canaries"])
    with pytest.raises(LmforgeError, match=r"prep\.canary_length=4 is set but prep\.canaries is 0"):
        prep(corpus, tmp_path / "o2", stages="none", quiet=True, overrides=["--prep.canary_length=4"])


def test_canaries_need_the_hash_split(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(
        LmforgeError, match="needs the hash split, and prep.split is 'tail'.*leave prep.split at"
    ):
        prep(corpus, out, stages="none", workers=1, quiet=True, split="tail", canaries=1, canary_repeats="2")
    assert not out.exists()  # nothing half-written


def _paragraphs(corpus: Path, val: bool, n: int) -> list[str]:
    """The corpus's first n paragraphs whose text hash puts them in val (or in train), at 0.1."""
    texts = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
    return [t for t in texts if is_val(t, 0.1) == val][:n]


@pytest.mark.parametrize("val", [False, True], ids=["hashed-to-train", "hashed-to-val"])
def test_a_one_document_corpus_is_one_line_naming_it(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture, val: bool
) -> None:
    """Not an error naming the output and a split the user never chose (hashed to train: the tail
    fallback), nor a train split of canary copies alone (hashed to val); refused before the
    tokenizer is trained."""
    one, out = tmp_path / "one.txt", tmp_path / "out"
    one.write_text(_paragraphs(corpus, val, 1)[0])
    assert (
        cli.main(["prep", str(one), "--out", str(out), "--stages", "none", "--quiet", "--canaries", "1"]) == 2
    )
    assert capsys.readouterr().err.splitlines() == [
        f"lmforge: error: {one}: 1 document after cleaning, and prep.canaries needs documents in both"
        " train and val (copies go to train only): give more documents (a .txt or .md file is one, each"
        " .jsonl line one), or leave out prep.canaries (--canaries)"
    ]
    assert not out.exists()
    assert prep(one, out, stages="none", workers=1, quiet=True)["split"] == "tail"  # without canaries: fine


@pytest.mark.parametrize(("val", "change"), [(False, "raise"), (True, "lower")])
def test_documents_all_on_one_side_are_one_line_saying_what_to_change(
    corpus: Path, tmp_path: Path, val: bool, change: str
) -> None:
    few, out = tmp_path / "few.jsonl", tmp_path / "out"
    few.write_text("".join(json.dumps({"text": t}) + "\n" for t in _paragraphs(corpus, val, 3)))
    side = "val" if val else "train"
    why = re.escape(
        f"{few}: all 3 documents fell in {side} (hash split, data.val_fraction=0.1), and prep.canaries"
        f" needs documents in both train and val (copies go to train only): give more documents or"
        f" {change} data.val_fraction (--val-fraction), or leave out prep.canaries (--canaries)"
    )
    with pytest.raises(LmforgeError, match=f"^{why}$"):
        prep(few, out, stages="none", workers=1, quiet=True, canaries=1, canary_repeats="2")
    assert not out.exists()


@pytest.mark.parametrize(
    ("content", "culprit"),
    [
        ("{", "invalid JSON"),
        ('{"format": "x"}', "not a canaries file"),
        ('{"format": "lmforge-canaries-1", "template": "t {secret}"}', "key 'alphabet' missing"),
        (
            '{"format": "lmforge-canaries-1", "template": "t {secret}", "alphabet": "01", "separator": " ",'
            ' "length": 2, "seed": 0, "canaries": [{"secret": "0 2", "text": "t 0 2", "repeats": 1}]}',
            r"canaries\[0\]: secret '0 2' is not in the space",
        ),
    ],
)
def test_a_bad_canaries_file_is_named(tmp_path: Path, content: str, culprit: str) -> None:
    path = tmp_path / "canaries.json"
    path.write_text(content)
    with pytest.raises(LmforgeError, match=f"{path}: .*{culprit}"):
        CanarySet.load(path)


def test_a_char_vocabulary_holds_the_whole_canary_alphabet(tmp_path: Path) -> None:
    """A char vocabulary held only the drawn secrets' digits: audit's candidates with the others
    were <|unk|>, never seen in training, so they ranked below the secret and inflated its
    exposure (up to 4 bits for a secret seen once). A tokenizer lacking some is refused by audit."""
    from lmforge.tools.audit_exposure import model_scorer

    corpus = tmp_path / "words.jsonl"
    corpus.write_text(
        "".join(json.dumps({"text": f"no digits here, line {'x' * i}"}) + "\n" for i in range(40))
    )
    out = tmp_path / "out"
    argv = ["prep", str(corpus), "--out", str(out), "--stages", "none", "--workers", "1", "--quiet"]
    argv += ["--tokenizer", "char", "--canaries", "1", "--canary-repeats", "1", "--canary-length", "2"]
    assert cli.main(argv) == 0
    tok = Tokenizer.load(out / "tokenizer.json")
    assert all(tok.unk_id not in tok.hf.encode(d).ids for d in "0123456789")
    old = Tokenizer.train_char(["my secret code is 4 5", "no digits here"])
    canaries = CanarySet.load(out / "canaries.json")
    model = GPT(ModelConfig(n_layer=1, n_head=1, n_embd=8, block_size=32, vocab_size=old.vocab_size))
    with pytest.raises(
        LmforgeError, match=r"no token for the canary symbols 0 1 2 3 6 7 8 9: every candidate"
    ):
        model_scorer(model, old, canaries)
