"""transformers' typical_p, epsilon_cutoff and eta_cutoff (warpers after min_p), min_length,
suppress_tokens, begin_suppress_tokens and bad_words_ids (bans), and the text-generation
pipeline's max_length: on the same logits lmforge keeps what transformers' processors keep and
draws the same tokens; sampled and greedy tokens are transformers' `generate`'s and its pipeline's
(keywords and generation_config.json); bad values are one-line errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from hf_helpers import REPEATING_PROMPTS as PROMPTS
from hf_helpers import make_hf_model

from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model
from lmforge.inference.bans import Bans, History, bad_words
from lmforge.inference.generate import generate, generate_ids
from lmforge.inference.sampling import Cutoffs, sample_next
from lmforge.pipelines import pipeline

transformers = pytest.importorskip("transformers")
from transformers.generation.logits_process import (  # noqa: E402
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    MinLengthLogitsProcessor,
    MinPLogitsWarper,
    NoBadWordsLogitsProcessor,
    SuppressTokensAtBeginLogitsProcessor,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

NEW = 16
# (temperature, top_k, top_p, min_p, typical_p, epsilon_cutoff, eta_cutoff)
SETTINGS = [
    (1.0, 0, 1.0, 0.0, 0.5, 0.0, 0.0),
    (0.7, 0, 1.0, 0.0, 0.9, 0.0, 0.0),
    (1.0, 0, 1.0, 0.0, 1.0, 0.02, 0.0),
    (1.3, 0, 1.0, 0.0, 1.0, 0.0, 0.05),
    (1.0, 20, 0.9, 0.05, 0.6, 0.01, 0.02),  # all, in transformers' order
    (1.0, 0, 1.0, 0.0, 1e-9, 0.0, 0.0),  # typical_p that small keeps the most typical token alone
    (1.0, 0, 1.0, 0.0, 1.0, 0.999, 0.999),  # cutoffs past every token keep the likeliest
]


def theirs_warped(
    logits: torch.Tensor, t: float, k: int, p: float, mp: float, typ: float, eps: float, eta: float
):
    """transformers' sampling warpers, as _get_logits_processor lists them."""
    scores = TemperatureLogitsWarper(t)(None, logits.clone()) if t != 1.0 else logits.clone()
    if k:
        scores = TopKLogitsWarper(k)(None, scores)
    if p < 1.0:
        scores = TopPLogitsWarper(p)(None, scores)
    if mp:
        scores = MinPLogitsWarper(mp)(None, scores)
    if typ < 1.0:
        scores = TypicalLogitsWarper(typ)(None, scores)
    if 0 < eps < 1:
        scores = EpsilonLogitsWarper(eps)(None, scores)
    if 0 < eta < 1:
        scores = EtaLogitsWarper(eta)(None, scores)
    return scores


@pytest.mark.parametrize("setting", SETTINGS)
def test_cutoffs_keep_and_draw_what_transformers_keeps(setting: tuple[Any, ...]) -> None:
    t, k, p, mp, typ, eps, eta = setting
    torch.manual_seed(0)
    logits = torch.randn(4, 80) * 3
    probs = theirs_warped(logits, *setting).softmax(-1)
    cutoff = theirs_warped(logits, t, k, p, mp, 1.0, 0.0, 0.0).softmax(-1)
    assert ((probs > 0).sum(-1) < (cutoff > 0).sum(-1)).all()  # the cutoffs dropped some: it can fail
    assert torch.equal(
        Cutoffs(typ, eps, eta).apply(logits), theirs_warped(logits, 1.0, 0, 1.0, 0.0, typ, eps, eta)
    )
    for seed in range(30):  # the same draws: the same distribution, to the bit
        g = torch.Generator().manual_seed(seed)
        ours = sample_next(logits, t, k, p, g, mp, Cutoffs(typ, eps, eta))
        g = torch.Generator().manual_seed(seed)
        assert ours.tolist() == torch.multinomial(probs, 1, generator=g)[:, 0].tolist()


def test_bans_are_transformers_processors_on_the_same_ids() -> None:
    torch.manual_seed(1)
    row = [4, 7, 4, 7, 9, 4, 7, 2, 4]  # a prompt of 5, then 4 new tokens
    scores = torch.randn(1, 12)
    words = [[7, 4, 3], [4, 7, 9], [11], [9], [4, 5, 6]]  # [9]: an EOS alone, which transformers keeps
    for cut in range(5, len(row) + 1):  # every step: the prompt, then each new token
        ids = torch.tensor([row[:cut]])
        history = History.start(row[:5], 0)
        history.extend(row[5:cut])
        for m in (3, 8, 9, 12):
            theirs = MinLengthLogitsProcessor(m, [2, 9])(ids, scores.clone())
            assert torch.equal(Bans(0, 0, frozenset({2, 9}), min_length=m).apply(scores, [history]), theirs)
        theirs = SuppressTokensLogitsProcessor([3, 10])(ids, scores.clone())
        assert torch.equal(Bans(suppress=frozenset({3, 10})).apply(scores, [history]), theirs)
        theirs = SuppressTokensAtBeginLogitsProcessor([1, 6], 5)(ids, scores.clone())
        assert torch.equal(Bans(begin_suppress=frozenset({1, 6})).apply(scores, [history]), theirs)
        theirs = NoBadWordsLogitsProcessor(words, [9])(ids, scores.clone())
        assert torch.equal(Bans(bad_words=bad_words(words, {9})).apply(scores, [history]), theirs)


def theirs_generate(hf: Any, prompt: list[int], eos: int, **options: Any) -> list[int]:
    """transformers' tokens, up to its EOS (left out), as generate_ids stops; sampled from torch's
    global generator seeded with 0, the stream generate_ids(seed=0) gives a single prompt."""
    torch.manual_seed(0)
    with torch.inference_mode():
        out = hf.generate(
            torch.tensor([prompt]), max_new_tokens=NEW, pad_token_id=eos, eos_token_id=eos, **options
        )[0, len(prompt) :].tolist()
    return out[: out.index(eos)] if eos in out else out


SAMPLED = [
    {"typical_p": 0.6},
    {"epsilon_cutoff": 0.03},
    {"eta_cutoff": 0.05},
    {"typical_p": 0.8, "top_k": 10},
]


@pytest.mark.parametrize("options", SAMPLED)
def test_sampled_tokens_are_transformers(family: tuple[Path, Any], options: dict[str, Any]) -> None:
    directory, hf = family
    net, _ = load_model(directory)
    changed = False
    for prompt in PROMPTS:
        ours = generate_ids(net, [prompt], NEW, 1.0, eos_id=0, seed=0, **{"top_k": 0, **options})[0]
        assert ours == theirs_generate(hf, prompt, 0, do_sample=True, **{"top_k": 0, **options})
        changed |= (
            ours != generate_ids(net, [prompt], NEW, 1.0, eos_id=0, seed=0, top_k=options.get("top_k", 0))[0]
        )
    assert changed  # the cutoff changed some draw, so the comparison can fail


def early_eos(net: Any, prompt: list[int]) -> int:
    """An id greedy decoding takes as its third token: as the EOS, it ends the text early."""
    return generate_ids(net, [prompt], 3, 0.0)[0][2]


@pytest.mark.parametrize(
    "options",
    [
        {"min_length": 14},
        {"suppress_tokens": "first"},
        {"begin_suppress_tokens": "first"},
        {"bad_words_ids": "pair"},
    ],
)
def test_greedy_bans_are_transformers(family: tuple[Path, Any], options: dict[str, Any]) -> None:
    directory, hf = family
    net, _ = load_model(directory)
    for prompt in PROMPTS:
        eos = early_eos(net, prompt)
        plain = generate_ids(net, [prompt], NEW, 0.0)[0]
        given = dict(options)  # tokens the plain text takes, so that banning them changes it
        if given.get("suppress_tokens") == "first":
            given["suppress_tokens"] = plain[:2]
        if given.get("begin_suppress_tokens") == "first":
            given["begin_suppress_tokens"] = plain[:1]
        if given.get("bad_words_ids") == "pair":
            given["bad_words_ids"] = [plain[:2], plain[2:3]]  # plain[2], the EOS alone, is left out
        ours = generate_ids(net, [prompt], NEW, 0.0, eos_id=eos, **given)[0]
        assert ours == theirs_generate(hf, prompt, eos, do_sample=False, **given)
        assert ours != generate_ids(net, [prompt], NEW, 0.0, eos_id=eos)[0]


@pytest.mark.filterwarnings("ignore:Unfeasible length constraints")  # transformers, on min_length
def test_the_pipeline_takes_them_from_keywords_and_generation_config(tmp_path: Path) -> None:
    from test_chat import USER, make_chat_llama, set_generation

    make_chat_llama(tmp_path)
    theirs = transformers.pipeline("text-generation", model=str(tmp_path), dtype=torch.float32)
    ours = pipeline("text-generation", tmp_path, dtype="fp32")
    for options in ({"typical_p": 0.5}, {"eta_cutoff": 0.1, "epsilon_cutoff": 0.02}):
        torch.manual_seed(4)
        expected = theirs("the king", max_new_tokens=NEW, **options)
        assert ours("the king", max_new_tokens=NEW, seed=4, **options) == expected
        assert ours("the king", max_new_tokens=NEW, seed=4) != expected
    chat = len(ours.tokenizer.encode(ours.chat.render([USER])))  # the chat's prompt, in tokens
    for length in (4, 9):  # max_length counts the prompt (3 tokens here), for text and a chat
        expected = theirs("the king", max_length=length, do_sample=False)
        assert ours("the king", max_length=length, do_sample=False) == expected
        expected = theirs([USER], max_length=chat + length, do_sample=False)
        assert ours([USER], max_length=chat + length, do_sample=False) == expected
    prompt = ours.tokenizer.encode(ours.chat.render([USER]))
    plain = generate_ids(ours.model, [prompt], 12, 0.0)[0]  # banned below, to change the reply
    set_generation(
        tmp_path, do_sample=False, max_new_tokens=12, min_length=chat + 12, suppress_tokens=plain[1:2],
        begin_suppress_tokens=plain[:1], bad_words_ids=[plain[2:4]],
    )  # fmt: skip
    ours, theirs = (
        pipeline("text-generation", tmp_path, dtype="fp32"),
        transformers.pipeline("text-generation", model=str(tmp_path), dtype=torch.float32),
    )
    assert ours([USER]) == theirs([USER])
    off = ours([USER], min_length=0, suppress_tokens=[], begin_suppress_tokens=[], bad_words_ids=[])
    assert ours([USER]) != off  # the file's values are applied
    assert ours("the king", max_length=5) == theirs(
        "the king", max_length=5
    )  # the file's max_new_tokens wins


def test_generation_config_max_length_and_outside_ids_are_as_in_transformers(tmp_path: Path) -> None:
    from test_chat import USER, make_chat_llama, set_generation

    make_chat_llama(tmp_path)
    first = pipeline("text-generation", tmp_path)
    chat = len(first.tokenizer.encode(first.chat.render([USER])))  # the chat's prompt, in tokens
    for length in (chat + 4, 20):  # a prompt and 4 tokens; 20 (transformers 4's default) counts too
        set_generation(tmp_path, do_sample=False, max_length=length)
        ours = pipeline("text-generation", tmp_path, dtype="fp32")
        theirs = transformers.pipeline("text-generation", model=str(tmp_path), dtype=torch.float32)
        for text in ("the king", [USER]):
            if len(ours.tokenizer.encode(ours.chat.render([USER]))) < length or text == "the king":
                assert ours(text) == theirs(text)
        assert ours("the king", max_new_tokens=7) == theirs("the king", max_new_tokens=7)  # the keyword wins
    (tmp_path / "generation_config.json").write_text('{"do_sample": false, "max_length": 2}')
    with pytest.raises(LmforgeError, match=r"generation_config.json: max_length=2: counts the prompt"):
        pipeline("text-generation", tmp_path)("the king the king")
    (tmp_path / "generation_config.json").write_text('{"max_length": 0}')
    with pytest.raises(LmforgeError, match=r"generation_config.json: max_length=0: must be an integer >= 1"):
        pipeline("text-generation", tmp_path)("the king")
    # ids outside the vocabulary (-1 too) suppress nothing, as transformers' processors mask none
    (tmp_path / "generation_config.json").write_text('{"do_sample": false, "max_new_tokens": 6}')
    ours = pipeline("text-generation", tmp_path, dtype="fp32")
    theirs = transformers.pipeline("text-generation", model=str(tmp_path), dtype=torch.float32)
    vocab = ours.model.config.vocab_size
    for ids in ([-1], [-1, vocab, 10**9]):
        expected = theirs("the king", suppress_tokens=ids, begin_suppress_tokens=ids)
        assert ours("the king", suppress_tokens=ids, begin_suppress_tokens=ids) == expected
        assert expected == ours("the king")


def test_bad_values_are_one_line(tmp_path: Path) -> None:
    make_hf_model("gpt2", tmp_path)
    net, _ = load_model(tmp_path)
    for name, bad, allowed in [
        ("typical_p", 0, r"a number in \(0, 1\]"), ("typical_p", 1.5, r"a number in \(0, 1\]"),
        ("epsilon_cutoff", 1.0, r"a number in \[0, 1\)"), ("eta_cutoff", -0.1, r"a number in \[0, 1\)"),
        ("min_length", -1, "an integer >= 0"), ("suppress_tokens", [1, 2.5], "a list of token ids"),
        ("begin_suppress_tokens", 3, "a list of token ids"),
        ("bad_words_ids", [[1], []], "a list of non-empty"),
    ]:  # fmt: skip
        with pytest.raises(LmforgeError, match=rf"^{re.escape(f'{name}={bad!r}')}: must be {allowed}"):
            generate_ids(net, [PROMPTS[0]], 2, **{name: bad})
    with pytest.raises(LmforgeError, match=r"^typical_p=2: must be"):
        generate(tmp_path, "x", typical_p=2)
    pipe = pipeline("text-generation", tmp_path)
    with pytest.raises(LmforgeError, match=r"^max_length=0: must be an integer >= 1"):
        pipe("x", max_length=0)
    with pytest.raises(LmforgeError, match=r"^max_length=2: counts the prompt, and a prompt is \d+ tokens"):
        pipe("the king the king", max_length=2)
    with pytest.raises(LmforgeError, match=r"suppress_tokens=\[.*\] bans every one of the vocabulary"):
        generate_ids(net, [PROMPTS[0]], 2, suppress_tokens=list(range(net.config.vocab_size)))
    vocab = net.config.vocab_size  # a word no token can match: transformers refuses it too
    with pytest.raises(LmforgeError, match=rf"^bad_words_ids: token id\(s\) \[{vocab}\] are outside the mod"):
        generate_ids(net, [PROMPTS[0]], 2, bad_words_ids=[[1], [2, vocab]])
