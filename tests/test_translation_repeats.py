"""transformers' repetition_penalty and no_repeat_ngram_size in translation: on a random
MarianMTModel, lmforge's greedy and beam outputs equal transformers' `generate` with the same
options (processors on the raw logits for greedy, on the log-probabilities for beam search,
renormalized where the model suppresses its pad token, not renormalized where it suppresses none),
through the decoders, the pipeline, `lmforge translate` and the server's /v1/translations."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from marian_helpers import make_marian_model, pairs

import lmforge
from lmforge.errors import LmforgeError
from lmforge.inference.seq2seq_decode import Repeats, beam_decode, greedy_decode

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")
MAX_NEW = 16
OPTIONS = [
    {"repetition_penalty": 1.8},
    {"repetition_penalty": 0.5},
    {"no_repeat_ngram_size": 2},
    {"repetition_penalty": 1.3, "no_repeat_ngram_size": 3},
]


@pytest.fixture(scope="module")
def marian(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    directory = tmp_path_factory.mktemp("marian-repeats") / "hf"
    make_marian_model(directory, eos_bias=2.0)  # long outputs: room to repeat
    hf = transformers.MarianMTModel.from_pretrained(directory).eval()
    tokenizer = transformers.MarianTokenizer.from_pretrained(directory)
    return directory, hf, tokenizer


def theirs(hf: Any, batch: dict, beam: int, keep_pad: bool = False, **options: Any) -> list[list[int]]:
    """transformers' ids, the decoder start, EOS and padding (unless `keep_pad`) stripped."""
    with torch.no_grad():
        out = hf.generate(**batch, num_beams=beam, do_sample=False, max_new_tokens=MAX_NEW,
                          early_stopping=True, **options)  # fmt: skip
    rows = []
    for row in out[:, 1:].tolist():
        row = row[: row.index(0)] if 0 in row else row
        rows.append([i for i in row if keep_pad or i != hf.config.pad_token_id])
    return rows


def ours(model: Any, batch: dict, beam: int, **options: Any) -> list[list[int]]:
    src, limits, repeats = batch["input_ids"], [MAX_NEW] * batch["input_ids"].size(0), Repeats(**options)
    if beam == 1:
        return greedy_decode(model, src, limits, 0, repeats=repeats)
    return beam_decode(model, src, limits, 0, beam, early_stopping=True, repeats=repeats)


@pytest.mark.parametrize("beam", [1, 3])
def test_decoding_equals_transformers_generate(marian: tuple[Path, Any, Any], beam: int) -> None:
    directory, hf, tokenizer = marian
    model = lmforge.load(directory)[0]
    sentences = [en for en, _ in pairs(2000) if len(en) < 40][:6]
    batch = dict(tokenizer(sentences, return_tensors="pt", padding=True))
    plain = ours(model, batch, beam)
    assert plain == theirs(hf, batch, beam)
    for options in OPTIONS:
        expected = theirs(hf, batch, beam, **options)
        assert expected != plain, options  # the option changes the output here
        assert ours(model, batch, beam, **options) == expected, options
    # a model that suppresses nothing: transformers does not renormalize the processed scores
    bare = copy.deepcopy(hf)
    bare.generation_config.bad_words_ids, bare.generation_config.renormalize_logits = None, False
    model.suppress_ids = []
    for options in OPTIONS[::2]:
        expected = theirs(bare, batch, beam, keep_pad=True, **options)
        assert ours(model, batch, beam, **options) == expected, options


def test_pipeline_cli_and_server_take_them(
    marian: tuple[Path, Any, Any], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from lmforge.cli import main

    directory, hf, tokenizer = marian
    sentence = "the cat sat on the mat and the dog sat on the cat"
    options = {"repetition_penalty": 1.8, "no_repeat_ngram_size": 2}
    with torch.no_grad():
        out = hf.generate(
            **tokenizer([sentence], return_tensors="pt"), num_beams=2, max_new_tokens=MAX_NEW, **options
        )
    expected = tokenizer.batch_decode(out, skip_special_tokens=True)[0]
    pipe = lmforge.pipeline("translation", model=directory)
    got = pipe(sentence, num_beams=2, max_new_tokens=MAX_NEW, **options)[0]["translation_text"]
    assert got == expected != pipe(sentence, num_beams=2, max_new_tokens=MAX_NEW)[0]["translation_text"]
    whole = pipe(sentence, num_beams=2, **options)[0]["translation_text"]  # the model's own length limit
    assert lmforge.translate(directory, sentence, beam=2, **options) == [whole]
    argv = ["translate", str(directory), sentence, "--beam", "2", "--repetition-penalty", "1.8"]
    assert main([*argv, "--no-repeat-ngram-size", "2"]) == 0
    assert capsys.readouterr().out.strip() == whole
    with pytest.raises(LmforgeError, match=r"^repetition_penalty=0: must be a finite number > 0"):
        pipe(sentence, repetition_penalty=0)
    with pytest.raises(LmforgeError, match=r"^no_repeat_ngram_size=-1: must be an integer >= 0"):
        lmforge.translate(directory, sentence, no_repeat_ngram_size=-1)

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from lmforge.server.app import Settings, create_app
    from lmforge.server.models import load_models

    with TestClient(create_app(load_models([directory], dtype="fp32"), Settings())) as api:
        body = {"model": "hf", "input": sentence, "num_beams": 2, "max_new_tokens": MAX_NEW, **options}
        r = api.post("/v1/translations", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["results"] == [{"translation_text": expected}]
        r = api.post("/v1/translations", json={**body, "no_repeat_ngram_size": -1})
        assert r.status_code == 400 and r.json()["error"]["param"] == "no_repeat_ngram_size"


def test_the_models_generation_config_sets_them_by_default(
    marian: tuple[Path, Any, Any], tmp_path: Path
) -> None:
    """As transformers' generate: generation_config.json's values unless a keyword gives others;
    `lmforge import` keeps them and `lmforge export` writes them back."""
    from lmforge.formats.hf_export import export_hf
    from lmforge.formats.hf_files import import_hf

    directory, _, tokenizer = marian
    own = tmp_path / "hf"
    shutil.copytree(directory, own)
    file = own / "generation_config.json"
    file.write_text(
        json.dumps(json.loads(file.read_text()) | {"repetition_penalty": 1.8, "no_repeat_ngram_size": 2})
    )
    hf = transformers.MarianMTModel.from_pretrained(own).eval()
    sentences = [en for en, _ in pairs(2000) if len(en) < 40][:4]
    with torch.no_grad():
        out = hf.generate(**tokenizer(sentences, return_tensors="pt", padding=True), max_new_tokens=MAX_NEW)
        off = hf.generate(**tokenizer(sentences, return_tensors="pt", padding=True), max_new_tokens=MAX_NEW,
                          repetition_penalty=1.0, no_repeat_ngram_size=0)  # fmt: skip
    expected, plain = (tokenizer.batch_decode(o, skip_special_tokens=True) for o in (out, off))
    assert expected != plain
    texts = lambda rows: [r["translation_text"] for r in rows]  # noqa: E731
    pipe = lmforge.pipeline("translation", model=own)
    # the file's beams, as generate takes them (the pipeline's own default is transformers' 4)
    beams = {"max_new_tokens": MAX_NEW, "num_beams": hf.generation_config.num_beams or 1}  # None: 1
    assert texts(pipe(sentences, **beams)) == expected
    assert texts(pipe(sentences, **beams, repetition_penalty=1.0, no_repeat_ngram_size=0)) == plain
    import_hf(own, tmp_path / "ours")
    saved = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert (saved["repetition_penalty"], saved["no_repeat_ngram_size"]) == (1.8, 2)
    assert texts(lmforge.pipeline("translation", model=tmp_path / "ours")(sentences, **beams)) == expected
    export_hf(tmp_path / "ours", tmp_path / "back")
    back = json.loads((tmp_path / "back" / "generation_config.json").read_text())
    assert (back["repetition_penalty"], back["no_repeat_ngram_size"]) == (1.8, 2)
    file.write_text(json.dumps(json.loads(file.read_text()) | {"no_repeat_ngram_size": -2}))
    with pytest.raises(
        LmforgeError, match=r"generation_config.json: no_repeat_ngram_size=-2 must be an integer >= 0"
    ):
        lmforge.pipeline("translation", model=own)
