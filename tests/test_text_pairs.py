"""Text pairs in the text-classification pipeline ({"text": a, "text_pair": b}), as cross-encoders
(NLI models, rerankers) take them: tiny random HF BERT, DistilBERT and RoBERTa
...ForSequenceClassification models and GPT-2 and Llama decoder classifiers, against transformers'
own pipeline (same labels, scores within 1e-5): one pair, a batch of pairs of different lengths,
a pair over the context (transformers' truncation=True: longest_first), pairs among plain texts;
and the one-line refusals of a bad pair."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import test_hf_decoder_classifiers as decoders
import torch
from test_hf_classifiers import CLASSIFIERS, _assert_same_results, save_hf

import lmforge
from lmforge.data.text_pairs import encode_items
from lmforge.errors import LmforgeError

transformers = pytest.importorskip("transformers")

LONG = "a merchant named tobias sold salt, wool and copper pots at the market on tuesdays " * 6
PAIRS = [
    {"text": "the old king kept his crown in a tower", "text_pair": "river"},
    {"text": "river", "text_pair": "a merchant named tobias sold salt and wool"},
    {"text": "Queen Élodie rode south!", "text_pair": LONG},  # over the context of 64 tokens
    {"text": LONG, "text_pair": "the crown"},
]
# transformers' cut: its decoders' tokenizers know no context of their own (model_max_length 1e30)
CUT = {"truncation": True, "max_length": 64}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pairs")
    for family, cls in CLASSIFIERS.items():
        save_hf(family, cls, root / family)
    for family in ("gpt2", "llama"):
        decoders.save_hf(family, root / family)
    return {name: root / name for name in [*CLASSIFIERS, "gpt2", "llama"]}


@pytest.mark.parametrize("family", [*sorted(CLASSIFIERS), "gpt2", "llama"])
def test_pairs_equal_transformers_pipeline(models: dict[str, Path], family: str) -> None:
    directory = models[family]
    theirs = transformers.pipeline("text-classification", model=str(directory))
    ours = lmforge.pipeline("text-classification", model=directory)
    mixed: list[Any] = ["river", PAIRS[0], "the old king"]
    for options in ({}, {"top_k": None}, {"top_k": 2}):
        for inputs in (PAIRS[0], PAIRS, mixed):
            expected = theirs(inputs, **CUT, **options)  # theirs raises on the long pairs without
            _assert_same_results(ours(inputs, **options), expected, f"{family} {options} {inputs!r:.30}")
    _assert_same_results(ours(PAIRS, batch_size=3), theirs(PAIRS, **CUT), f"{family} batches")
    only_first = {"truncation": "only_first", "max_length": 64}  # the long first text alone is cut
    _assert_same_results(
        ours(PAIRS[3], truncation="only_first"), theirs(PAIRS[3], **only_first), "only_first"
    )
    # a reranker's query kept whole beside a long passage (refused until 2026-12-07)
    query = {"text": "who rode south", "text_pair": LONG}
    _assert_same_results(
        ours(query, truncation="only_second"),
        theirs(query, truncation="only_second", max_length=64),
        "only_second",
    )
    for top_k in (1, None):  # given to pipeline(): a pair's labels are a list, as a call's top_k makes them
        theirs = transformers.pipeline("text-classification", model=str(directory), top_k=top_k)
        ours = lmforge.pipeline("text-classification", model=directory, top_k=top_k)
        for inputs in (PAIRS[1], PAIRS[:2]):
            _assert_same_results(ours(inputs), theirs(inputs), f"{family} pipeline(top_k={top_k})")


def test_an_imported_cross_encoder_reads_token_types(models: dict[str, Path], tmp_path: Path) -> None:
    """BERT's second text has token type 1: without it the logits differ, so the parity above
    (within 1e-5) holds only with them; an `lmforge import` keeps its pair template."""
    imported = lmforge.import_hf(models["bert"], tmp_path / "imported")
    theirs = transformers.pipeline("text-classification", model=str(models["bert"]))
    ours = lmforge.pipeline("text-classification", model=imported)
    _assert_same_results(ours(PAIRS, top_k=None), theirs(PAIRS, **CUT, top_k=None), "imported")
    ids, mask, types = encode_items(ours.tokenizer, [(p["text"], p["text_pair"]) for p in PAIRS], 64)
    assert types.sum() > 0
    with torch.no_grad():
        assert float((ours.model(ids, mask, types) - ours.model(ids, mask)).abs().max()) > 1e-3


def test_a_pair_is_encoded_as_transformers_tokenizer_encodes_it(models: dict[str, Path]) -> None:
    for family in ("bert", "roberta", "gpt2"):
        _, tokenizer = lmforge.load(models[family])
        theirs = transformers.AutoTokenizer.from_pretrained(models[family])
        pairs = [(p["text"], p["text_pair"]) for p in PAIRS]
        ids, mask, types = encode_items(tokenizer, [*pairs, "river"], 64)
        for row, (a, b) in enumerate(pairs):
            expected = theirs(a, text_pair=b, truncation=True, max_length=64, return_token_type_ids=True)
            n = int(mask[row].sum())
            assert ids[row, :n].tolist() == expected["input_ids"], (family, row)
            if family == "bert":
                assert types[row, :n].tolist() == expected["token_type_ids"]
        assert types[-1].sum() == 0 and mask[-1].sum() < mask.shape[1]  # the text alone, padded


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"text_pair": "river"}, "the text pair has no 'text'"),
        ({"text": "river", "text_pair": "a", "label": 1}, "has the key(s) 'label'"),
        ({"text": "river", "txt_pair": "a"}, "has the key(s) 'txt_pair'"),
        ({"text": 3, "text_pair": "a"}, "'text' is of type int, not a string"),
        (["river", {"text": "river", "text_pair": ["a"]}], "text item 2: 'text_pair' is of type list"),
        ([["river", "a"]], 'text item 1 is of type list, not a string or a text pair {"text"'),
        ({"text": "river", "text_pair": " "}, "text_pair 1 is empty"),
    ],
)
def test_a_bad_pair_is_one_line(models: dict[str, Path], inputs: Any, message: str) -> None:
    pipe = lmforge.pipeline("text-classification", model=models["bert"])
    with pytest.raises(LmforgeError, match="^.*$") as caught:
        pipe(inputs)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_pair_that_cannot_be_cut_so_is_one_line(models: dict[str, Path]) -> None:
    pipe = lmforge.pipeline("text-classification", model=models["bert"])
    with pytest.raises(LmforgeError, match=r"pair 1: cannot cut it to the model's context of 64 tokens"):
        pipe({"text": "river", "text_pair": LONG}, truncation="only_first")
    with pytest.raises(LmforgeError, match=r"pair 1: cannot cut it .* truncation='only_second'"):
        pipe({"text": LONG, "text_pair": "river"}, truncation="only_second")
    with pytest.raises(LmforgeError, match=r"truncation='only_third': .* 'only_first' or 'only_second'"):
        pipe({"text": "river", "text_pair": "a"}, truncation="only_third")


def test_classifications_route_takes_pairs(models: dict[str, Path]) -> None:
    """/v1/classifications' input may hold pairs ({"text", "text_pair"} objects) among its texts;
    a misspelt key is a 400, not a text classified alone."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from lmforge.server.app import Settings, create_app
    from lmforge.server.models import load_models

    served = load_models([models["bert"]], dtype="fp32")
    (name,) = served
    pipe = lmforge.pipeline("text-classification", model=models["bert"])
    with TestClient(create_app(served, Settings())) as api:
        for body, args in (
            ({"input": PAIRS[0]}, (PAIRS[0],)),
            ({"input": [PAIRS[1], "river", PAIRS[2]], "top_k": None}, ([PAIRS[1], "river", PAIRS[2]],)),
        ):
            reply = api.post("/v1/classifications", json={"model": name, **body})
            assert reply.status_code == 200, reply.text
            options = {"top_k": None} if "top_k" in body else {}
            _assert_same_results(reply.json()["results"], pipe(*args, **options), str(body))
        bad = api.post("/v1/classifications", json={"model": name, "input": {"text": "a", "txt_pair": "b"}})
        assert bad.status_code == 400 and "txt_pair" in bad.text


def test_token_types_a_model_has_no_rows_for_are_read_as_0(models: dict[str, Path], tmp_path: Path) -> None:
    """A RoBERTa (one token type) whose tokenizer marks the second text 1, as XLM-R-style templates
    may: transformers gives it no token types (its tokenizer does not ask for them); not an IndexError."""
    import shutil

    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.processors import TemplateProcessing

    directory = tmp_path / "roberta"
    shutil.copytree(models["roberta"], directory)
    hf = HFTokenizer.from_file(str(directory / "tokenizer.json"))
    hf.post_processor = TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B:1 </s>:1", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    hf.save(str(directory / "tokenizer.json"))
    ours = lmforge.pipeline("text-classification", model=directory)
    assert 1 in encode_items(ours.tokenizer, [("a", "b")], 64)[2].tolist()[0]
    theirs = transformers.pipeline("text-classification", model=str(directory))
    _assert_same_results(ours(PAIRS, top_k=None), theirs(PAIRS, **CUT, top_k=None), "roberta types")
