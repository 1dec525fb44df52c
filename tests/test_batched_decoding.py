"""Batched decoding of prompts of different lengths: one left-padded batch with a padding mask and
per-row positions gives each row exactly the tokens it gives decoded alone."""

from __future__ import annotations

import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.inference.generate import generate_ids
from lmforge.inference.prefill import left_pad
from lmforge.model.gpt import GPT

PROMPTS = [[1, 2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]  # lengths 7, 2, 4, 1


@pytest.fixture(params=["learned", "rope"])
def model(request: pytest.FixtureRequest) -> GPT:
    """A tiny random GPT (learned positions) or a tiny Llama (rotary, RMSNorm, SwiGLU, GQA)."""
    torch.manual_seed(0)
    if request.param == "learned":
        cfg = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=24, vocab_size=40)
    else:
        cfg = ModelConfig(
            n_layer=2, n_head=4, n_kv_head=2, n_embd=32, block_size=24, vocab_size=40, pos="rope",
            mlp="swiglu", norm="rmsnorm", bias=False,
        )  # fmt: skip
    return GPT(cfg).eval()


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("new", [6, 25])  # 25 runs past the 24-token context: the window slides
def test_padded_rows_equal_prompts_alone(model: GPT, use_cache: bool, new: int) -> None:
    batched = generate_ids(model, PROMPTS, new, temperature=0, use_cache=use_cache)
    alone = [generate_ids(model, [p], new, temperature=0, use_cache=use_cache)[0] for p in PROMPTS]
    assert batched == alone
    assert all(len(o) == new for o in batched)


def test_padded_logits_match_alone(model: GPT) -> None:
    """The logits themselves, not just their argmax: padding changes nothing a real token sees."""
    ids, mask = left_pad(PROMPTS, torch.device("cpu"))
    assert mask is not None and mask.sum(1).tolist() == [len(p) for p in PROMPTS]
    with torch.no_grad():
        batched = model(ids, mask=mask)
        for row, p in enumerate(PROMPTS):
            alone = model(torch.tensor([p]))[0]
            torch.testing.assert_close(batched[row, -len(p) :], alone, atol=1e-5, rtol=1e-5)
            # and one cached decoding step on top
            cache = model.new_cache(len(PROMPTS))
            model(ids, cache, mask=mask)
            step = model(torch.full((len(PROMPTS), 1), 3), cache, mask=torch.cat([mask, mask[:, -1:]], 1))
            alone_step = model(torch.tensor([p + [3]]))[0, -1]
            torch.testing.assert_close(step[row, -1], alone_step, atol=1e-5, rtol=1e-5)


def test_rows_finishing_early_stop_cleanly(model: GPT) -> None:
    alone = [generate_ids(model, [p], 10, temperature=0)[0] for p in PROMPTS]
    eos = alone[1][2]  # the short prompt's third token ends it there; the others run on
    seen: list[tuple[int, int]] = []
    out = generate_ids(
        model, PROMPTS, 10, temperature=0, eos_id=eos, on_token=lambda i, t: seen.append((i, t))
    )
    assert out == [a[: a.index(eos)] if eos in a else a for a in alone]
    assert len(out[1]) <= 2 and max(map(len, out)) > len(out[1])  # one stopped early, one ran on
    assert sorted(seen) == sorted((i, t) for i, o in enumerate(out) for t in o)  # nothing after EOS


def test_equal_lengths_and_batch_one_take_the_fast_path() -> None:
    assert left_pad([[1, 2], [3, 4]], torch.device("cpu"))[1] is None
    assert left_pad([[1, 2, 3]], torch.device("cpu"))[1] is None
