"""A Marian folder's generation_config.json: its length_penalty is the model's default, as
transformers' `generate` takes it (outputs identical on a random MarianMTModel, kept by import,
export and fine-tuning), and the keys that change transformers' decoding which lmforge's translation
does not apply are named once per load on stderr (formats/seq2seq_generation.py)."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from marian_helpers import make_marian_model, pairs

import lmforge
from lmforge.errors import LmforgeError

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")
MAX_NEW = 16
NOTE = "not applied by lmforge's translation"


@pytest.fixture(scope="module")
def marian(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    directory = tmp_path_factory.mktemp("marian-generation") / "hf"
    make_marian_model(directory)  # outputs end at varied lengths: the length penalty matters
    return directory, transformers.MarianTokenizer.from_pretrained(directory)


def with_generation(directory: Path, out: Path, **keys: Any) -> Path:
    """A copy of `directory` whose generation_config.json also says `keys`."""
    shutil.copytree(directory, out)
    file = out / "generation_config.json"
    file.write_text(json.dumps(json.loads(file.read_text()) | keys))
    return out


def generated(directory: Path, tokenizer: Any, sentences: list[str], **options: Any) -> list[str]:
    hf = transformers.MarianMTModel.from_pretrained(directory).eval()
    with torch.no_grad():
        batch = tokenizer(sentences, return_tensors="pt", padding=True)
        out = hf.generate(**batch, max_new_tokens=MAX_NEW, **options)
    return tokenizer.batch_decode(out, skip_special_tokens=True)


def texts(rows: list[dict[str, str]]) -> list[str]:
    return [r["translation_text"] for r in rows]


@pytest.mark.parametrize("penalty", [3.0, -2.0])
def test_the_files_length_penalty_is_the_default_as_in_generate(
    marian: tuple[Path, Any], tmp_path: Path, penalty: float, capsys: pytest.CaptureFixture
) -> None:
    from lmforge.cli import main
    from lmforge.formats.hf_export import export_hf
    from lmforge.formats.hf_files import import_hf

    directory, tokenizer = marian
    own = with_generation(directory, tmp_path / "hf", num_beams=4, length_penalty=penalty)
    sentences = [en for en, _ in pairs(2000) if len(en) < 60][:16]
    expected = generated(own, tokenizer, sentences)
    plain = generated(own, tokenizer, sentences, length_penalty=1.0)
    assert expected != plain  # the penalty changes these outputs
    pipe = lmforge.pipeline("translation", model=own)
    assert texts(pipe(sentences, num_beams=4, max_new_tokens=MAX_NEW)) == expected
    assert pipe.model.length_penalty == penalty
    # an explicit keyword wins, 1.0 included
    assert texts(pipe(sentences, num_beams=4, max_new_tokens=MAX_NEW, length_penalty=1.0)) == plain
    # translate, eval-translate and the CLI take it too (their own length limit: compared with the pipeline's)
    whole = texts(pipe(sentences[:4], num_beams=4))
    assert whole != texts(pipe(sentences[:4], num_beams=4, length_penalty=1.0))
    assert lmforge.translate(own, sentences[:4]) == whole  # the file's num_beams and length_penalty
    src, ref, hyp = tmp_path / "src.en", tmp_path / "ref.fr", tmp_path / "hyp.fr"
    src.write_text("".join(s + "\n" for s in sentences[:4]))
    ref.write_text("".join(s + "\n" for s in sentences[:4]))
    lmforge.eval_translate(own, src, ref, out=hyp)
    assert hyp.read_text().splitlines() == whole
    assert main(["translate", str(own), sentences[0]]) == 0
    assert capsys.readouterr().out.strip() == whole[0]
    one = texts(pipe(sentences[:1], num_beams=4, length_penalty=1.0))[0]
    assert main(["translate", str(own), sentences[0], "--length-penalty", "1"]) == 0
    assert capsys.readouterr().out.strip() == one
    # import keeps it in config.json, export writes it back to generation_config.json
    import_hf(own, tmp_path / "ours")
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["length_penalty"] == penalty
    ours = lmforge.pipeline("translation", model=tmp_path / "ours")
    assert texts(ours(sentences, num_beams=4, max_new_tokens=MAX_NEW)) == expected
    export_hf(tmp_path / "ours", tmp_path / "back")
    assert transformers.GenerationConfig.from_pretrained(tmp_path / "back").length_penalty == penalty
    assert generated(tmp_path / "back", tokenizer, sentences, num_beams=4) == expected
    capsys.readouterr()
    assert lmforge.load(tmp_path / "back")[0].length_penalty == penalty
    assert NOTE not in capsys.readouterr().err  # what export writes, lmforge applies


def test_length_penalty_is_checked_and_read_from_older_config_json(
    marian: tuple[Path, Any], tmp_path: Path
) -> None:
    directory, _ = marian
    bad = with_generation(directory, tmp_path / "bad", length_penalty="long")
    with pytest.raises(LmforgeError, match=r"generation_config.json: length_penalty='long' must be a finite"):
        lmforge.load(bad)
    with pytest.raises(LmforgeError, match=r"^length_penalty=nan: must be a finite number"):
        lmforge.pipeline("translation", model=directory)("hello", length_penalty=float("nan"))
    old = with_generation(directory, tmp_path / "old")  # an older upload: config.json's keys alone
    (old / "generation_config.json").unlink()
    config = old / "config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"length_penalty": 0.6}))
    assert lmforge.load(old)[0].length_penalty == 0.6
    assert lmforge.load(directory)[0].length_penalty == 1.0  # absent: transformers' default


# transformers changes its output for each (checked below for a few); lmforge does not apply them
NAMED = {
    "min_length": 6,
    "min_new_tokens": 3,
    "do_sample": True,
    "temperature": 0.7,
    "num_beam_groups": 2,
    "diversity_penalty": 0.5,
    "exponential_decay_length_penalty": [4, 1.5],
    "forced_bos_token_id": 5,
    "num_return_sequences": 2,
    "suppress_tokens": [5],
    "encoder_no_repeat_ngram_size": 2,
    "max_new_tokens": 5,
    "max_length": 20,
    "renormalize_logits": False,
}
# values that change nothing, and what lmforge applies (opus-mt's own keys among them)
QUIET = {
    "min_length": 0,
    "min_new_tokens": 0,
    "do_sample": False,
    "temperature": 0.7,  # used only in sampling
    "top_k": 50,
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
    "num_return_sequences": 1,
    "suppress_tokens": None,
    "max_length": 64,  # the model's context: lmforge's limit is never longer
    "renormalize_logits": True,
    "num_beams": 4,
    "length_penalty": 2.0,
    "early_stopping": False,
    "repetition_penalty": 1.2,
    "no_repeat_ngram_size": 3,
    "output_scores": True,
    "use_cache": True,
}


def noted(err: str) -> tuple[str, dict[str, Any]]:
    """(the file, the keys) of the one note line in `err`."""
    (line,) = [line for line in err.splitlines() if NOTE in line]
    file, keys = line.removeprefix("lmforge: note: ").removesuffix(f" {NOTE}").split(": ", 1)
    return file, ast.literal_eval(keys)


def test_unapplied_keys_are_named_once_per_load(
    marian: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from lmforge.formats.hf_files import import_hf

    directory, tokenizer = marian
    pipe = lmforge.pipeline("translation", model=directory)  # the helper's opus-mt-shaped file
    pipe("hello")
    quiet = with_generation(directory, tmp_path / "quiet", **QUIET)
    lmforge.pipeline("translation", model=quiet)("hello")
    assert NOTE not in capsys.readouterr().err
    pad = pipe.model.pad_id
    loud = with_generation(directory, tmp_path / "loud", **NAMED, bad_words_ids=[[pad], [7, 8]])
    loud_pipe = lmforge.pipeline("translation", model=loud)
    loud_pipe(["hello", "the cat"])
    err = capsys.readouterr().err
    assert err.count(NOTE) == 1  # once per load, not per call
    named = {**NAMED, "bad_words_ids": [[7, 8]]}  # the one-token entry is applied
    assert noted(err) == (str(loud / "generation_config.json"), named)
    # another EOS, forced EOS or start token than lmforge's: named
    ids = {"eos_token_id": [0, 9], "forced_eos_token_id": 4, "decoder_start_token_id": 3}
    lmforge.load(with_generation(directory, tmp_path / "other", **ids))
    assert noted(capsys.readouterr().err)[1] == ids
    # an import copies the file beside its config.json: loading it names them again
    import_hf(loud, tmp_path / "ours")
    capsys.readouterr()
    lmforge.load(tmp_path / "ours")
    assert noted(capsys.readouterr().err) == (str(tmp_path / "ours" / "generation_config.json"), named)
    # each of these changes transformers' output here (so naming them is no false alarm)
    sentences = [en for en, _ in pairs(400) if len(en) < 40][:6]
    base = generated(directory, tokenizer, sentences, num_beams=4)
    for key in ("min_length", "min_new_tokens", "forced_bos_token_id", "exponential_decay_length_penalty"):
        changed = with_generation(directory, tmp_path / key, **{key: NAMED[key]})
        assert generated(changed, tokenizer, sentences, num_beams=4) != base, key
    renorm = with_generation(directory, tmp_path / "renorm", renormalize_logits=False)
    assert generated(renorm, tokenizer, sentences, num_beams=4) != base
