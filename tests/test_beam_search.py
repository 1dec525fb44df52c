"""Beam search for decoders in pipeline("text-generation", num_beams=K, do_sample=False): the
texts are transformers' own pipeline's with the same keywords (its vectorised `_beam_search`),
for one and two end-of-text ids, every early_stopping, length penalties, num_return_sequences,
the repetition penalty and the bans, plain text and chats; what it does not do is one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmforge.errors import LmforgeError
from lmforge.pipelines import pipeline

transformers = pytest.importorskip("transformers")
NEW = 10


def likelier_eos(directory: Path, eos: int, boost: float) -> None:
    """Scale the EOS row of the output layer, so that some beams end before the limit."""
    file = directory / "model.safetensors"
    state = load_file(str(file))
    state["lm_head.weight"][eos] *= boost
    save_file(state, str(file), metadata={"format": "pt"})


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_chat import make_chat_llama

    directory = tmp_path_factory.mktemp("beams") / "llama"
    make_chat_llama(directory)  # end-of-text ids 2 and 0
    likelier_eos(directory, 2, 3.0)
    return directory


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hf_helpers import make_hf_model

    directory = tmp_path_factory.mktemp("beams") / "gpt2"
    make_hf_model("gpt2", directory)
    return directory


CASES: list[dict[str, Any]] = [
    {"num_beams": 2},
    {"num_beams": 4, "num_return_sequences": 4},
    {"num_beams": 3, "early_stopping": True, "num_return_sequences": 2},
    {"num_beams": 3, "early_stopping": "never", "length_penalty": 2.0},
    {"num_beams": 4, "length_penalty": 0.3},
    {"num_beams": 3, "length_penalty": -1.0, "early_stopping": "never"},
    {"num_beams": 3, "repetition_penalty": 1.5, "no_repeat_ngram_size": 2},
    {"num_beams": 2, "min_new_tokens": 4, "num_return_sequences": 2},
]


@pytest.mark.parametrize("model", ["llama", "gpt2"])
def test_texts_are_transformers_beam_search(model: str, request: pytest.FixtureRequest) -> None:
    directory = request.getfixturevalue(model)
    ours = pipeline("text-generation", directory, dtype="fp32")
    theirs = transformers.pipeline("text-generation", model=str(directory), dtype=torch.float32)
    prompts = ["the king is", "a"] if model == "llama" else ["the king", "hello world the"]
    ended = 0
    for options in CASES:
        for prompt in prompts:
            expected = theirs(prompt, do_sample=False, max_new_tokens=NEW, **options)
            assert ours(prompt, do_sample=False, max_new_tokens=NEW, **options) == expected, (prompt, options)
            prompt_len = len(ours.tokenizer.encode(prompt))
            ended += sum(len(ours.tokenizer.encode(e["generated_text"])) < prompt_len + NEW for e in expected)
    assert ended > 0 or model == "gpt2"  # some hypotheses ended at an end-of-text id
    greedy = ours(prompts[0], do_sample=False, max_new_tokens=NEW)
    assert (
        ours(prompts[0], do_sample=False, max_new_tokens=NEW, num_beams=4) != greedy
    )  # a search, not greedy


def test_a_chat_and_generation_config_s_defaults(llama: Path) -> None:
    from test_chat import set_generation

    chat = [{"role": "user", "content": "Who is the king?"}]
    options = {"do_sample": False, "max_new_tokens": NEW, "num_beams": 3}
    ours = pipeline("text-generation", llama, dtype="fp32")
    theirs = transformers.pipeline("text-generation", model=str(llama), dtype=torch.float32)
    assert ours(chat, **options) == theirs(chat, **options)
    set_generation(llama, length_penalty=2.5, early_stopping="never")
    ours = pipeline("text-generation", llama, dtype="fp32")
    theirs = transformers.pipeline("text-generation", model=str(llama), dtype=torch.float32)
    assert ours("the king", **options) == theirs("the king", **options)


def test_what_beam_search_does_not_do_is_one_line(gpt2: Path) -> None:
    pipe = pipeline("text-generation", gpt2)
    with pytest.raises(LmforgeError, match=r"^num_beams=2 with sampling: .* give do_sample=False"):
        pipe("x", num_beams=2)
    with pytest.raises(LmforgeError, match=r"^num_return_sequences=3 is more than num_beams=2"):
        pipe("x", num_beams=2, do_sample=False, num_return_sequences=3)
    with pytest.raises(
        LmforgeError, match=r"^stop_sequence with num_beams=2: beam search stops at end-of-text"
    ):
        pipe("x", num_beams=2, do_sample=False, stop_sequence=".")
    with pytest.raises(LmforgeError, match=r"^early_stopping='always': must be"):
        pipe("x", num_beams=2, do_sample=False, early_stopping="always")


def test_the_context_bounds_a_search_and_truncate_prompt_keeps_room(
    gpt2: Path, capsys: pytest.CaptureFixture
) -> None:
    """With truncate_prompt a prompt over the context kept its last `context` tokens, leaving no
    room: the text was empty, unsaid. Now the new tokens are kept room for, and where the context
    cuts them, a line says so."""
    pipe = pipeline("text-generation", gpt2, dtype="fp32")
    context = pipe.model.config.block_size
    prompt = " ".join(["the king"] * context)  # over the context
    options = {"do_sample": False, "num_beams": 2, "return_full_text": False, "max_new_tokens": 5}
    text = pipe(prompt, truncate_prompt=True, **options)[0]["generated_text"]
    assert 1 <= len(pipe.tokenizer.encode(text)) <= 5 and text.strip()
    capsys.readouterr()
    near = pipe.tokenizer.decode(pipe.tokenizer.encode(prompt)[: context - 2])  # room for 2 new tokens
    assert len(pipe.tokenizer.encode(near)) == context - 2
    pipe(near, **options)
    said = (
        f"beam search stops at the model's context of {context} tokens: a {context - 2}-token prompt leaves 2"
    )
    assert said in capsys.readouterr().err
