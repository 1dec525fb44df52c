"""pipeline("text-generation") where a tester found transformers' pipeline doing otherwise
(2026-12-07): a stop_sequence that begins in the prompt, an end-of-text id that is an ordinary
token, and generation_config.json's num_beams; each text is transformers' own pipeline's."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import lmforge
from lmforge.errors import LmforgeError
from lmforge.inference.generate import generate_ids
from lmforge.inference.text_stream import cut_at_stop
from lmforge.pipelines import pipeline

transformers = pytest.importorskip("transformers")
NEW = 12
GREEDY = {"do_sample": False, "max_new_tokens": NEW}
PROMPTS = ["the king said", "the king", "hello world the", "a queen", "long live"]


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hf_helpers import make_hf_model

    directory = tmp_path_factory.mktemp("as-transformers") / "gpt2"
    make_hf_model("gpt2", directory)
    return directory


def _theirs(directory: Path) -> object:
    transformers.logging.set_verbosity_error()
    return transformers.pipeline("text-generation", model=str(directory), dtype=torch.float32)


def test_a_stop_sequence_may_begin_in_the_prompt(gpt2: Path) -> None:
    """transformers' stop_strings search the whole sequence: a stop completed by a new token counts
    where it began in the prompt (lmforge searched the new text only and ran on)."""
    ours, theirs = pipeline("text-generation", gpt2, dtype="fp32"), _theirs(gpt2)
    news = {p: ours(p, return_full_text=False, **GREEDY)[0]["generated_text"] for p in PROMPTS}
    prompt, new = next((p, n) for p, n in news.items() if n[:1].isalnum())  # not half a character
    stop = prompt[-2:] + new[0]  # the prompt's last two characters and the first new one
    got = ours(prompt, stop_sequence=stop, **GREEDY)
    assert got == theirs(prompt, stop_sequence=stop, **GREEDY)
    assert len(got[0]["generated_text"]) < len(prompt + new)  # it stopped
    inside = prompt[:5]  # met in the prompt only: no stop, as in transformers
    assert ours(prompt, stop_sequence=inside, **GREEDY) == theirs(prompt, stop_sequence=inside, **GREEDY)
    # lmforge generate's --stop (vLLM's, OpenAI's stop) searches the output only, as documented
    cli = lmforge.generate(gpt2, prompt, stop=stop, temperature=0.0, max_new_tokens=NEW, dtype="fp32")
    assert cli == [prompt + cut_at_stop(new, [stop])[0]]


@pytest.mark.parametrize("several", [False, True])
def test_an_ordinary_end_of_text_token_keeps_its_text(gpt2: Path, tmp_path: Path, several: bool) -> None:
    """transformers decodes with skip_special_tokens=True: an eos_token_id that is no special token
    stays in the text (lmforge dropped it)."""
    from test_chat import set_generation

    directory = tmp_path / "gpt2"
    shutil.copytree(gpt2, directory)
    ours = pipeline("text-generation", directory, dtype="fp32")
    prompt = "the king said"
    full = ours(prompt, **GREEDY)[0]["generated_text"]
    ids = generate_ids(ours.model, [ours.tokenizer.encode(prompt)], NEW, temperature=0.0)[0]
    end = next(i for i in ids[1:] if ours.tokenizer.decode([i]).strip().isalnum())  # a whole word
    special = ours.tokenizer.eos_id
    set_generation(directory, eos_token_id=[end, special] if several else end)
    ours = pipeline("text-generation", directory, dtype="fp32")
    got = ours(prompt, **GREEDY)
    assert got == _theirs(directory)(prompt, **GREEDY)
    text = got[0]["generated_text"]
    assert len(text) < len(full) and text.endswith(ours.tokenizer.decode([end]))


def test_generation_config_s_num_beams_applies(
    gpt2: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """transformers' pipeline beam-searches with the file's num_beams (and length_penalty); lmforge
    decoded greedily and said "not applied"."""
    from test_chat import set_generation

    directory = tmp_path / "gpt2"
    shutil.copytree(gpt2, directory)
    greedy = pipeline("text-generation", directory, dtype="fp32")("the king", **GREEDY)
    set_generation(directory, num_beams=3, do_sample=False, length_penalty=0.5, max_new_tokens=NEW)
    ours = pipeline("text-generation", directory, dtype="fp32")
    capsys.readouterr()
    got = ours("the king")
    assert got == _theirs(directory)("the king") != greedy
    assert got == ours("the king", num_beams=3, length_penalty=0.5)
    assert "not applied" not in capsys.readouterr().err
    assert ours("the king", num_beams=1) == greedy  # the keyword wins
    with pytest.raises(LmforgeError, match=r"stop_sequence with num_beams=3 \(.*generation_config.json"):
        ours("the king", stop_sequence=".")
    set_generation(directory, num_beams=0)
    with pytest.raises(LmforgeError, match=r"generation_config.json: num_beams=0: must be"):
        pipeline("text-generation", directory, dtype="fp32")("the king")
