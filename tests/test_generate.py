"""Generation: the KV cache changes nothing but speed; sampling controls; context limits."""

from __future__ import annotations

import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.inference.generate import generate_ids, sample_next
from lmforge.model.gpt import GPT


@pytest.fixture(params=["learned", "rope"])
def model(request: pytest.FixtureRequest) -> GPT:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=40, pos=request.param)
    return GPT(cfg).eval()


# 12 fills the 16-token context exactly (a 4-token prompt); 30 runs past it: the window slides
@pytest.mark.parametrize("new", [5, 12, 30])
def test_cache_gives_the_same_tokens(model: GPT, new: int) -> None:
    prompts = [[1, 2, 3, 4], [5, 6, 7, 8], [9]]
    greedy = [generate_ids(model, prompts, new, temperature=0, use_cache=c) for c in (True, False)]
    assert greedy[0] == greedy[1]
    sampled = [generate_ids(model, prompts, new, top_k=10, seed=3, use_cache=c) for c in (True, False)]
    assert sampled[0] == sampled[1]
    assert all(len(o) == new for o in greedy[0])


def test_the_cache_holds_what_the_call_decodes(model: GPT, monkeypatch: pytest.MonkeyPatch) -> None:
    """Room for the prompt and the new tokens, not the whole context (a batch at a long context
    would reserve gigabytes); the whole context once the window must slide."""
    sizes = []
    new_cache = model.new_cache
    monkeypatch.setattr(model, "new_cache", lambda b, n=None: sizes.append(n) or new_cache(b, n))
    generate_ids(model, [[1, 2, 3, 4], [5]], 6, temperature=0)
    assert sizes[0] == 10  # then one cache per prefill group (below)
    sizes.clear()
    generate_ids(model, [[1, 2, 3, 4]], 20, temperature=0)
    assert sizes[0] == 16


@pytest.mark.parametrize("cache", [True, False], ids=["cache", "no-cache"])
def test_no_step_runs_for_a_token_nobody_reads(model: GPT, cache: bool) -> None:
    """N new tokens take the prefill and N - 1 steps: the step after the last token is not run."""
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    generate_ids(model, [[1, 2, 3]], 1, temperature=0, use_cache=cache)
    assert len(calls) == 1
    generate_ids(model, [[1, 2, 3]], 5, temperature=0, use_cache=cache)
    assert len(calls) == 1 + 5


def test_prompts_prefilled_in_groups_equal_each_alone(model: GPT, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prompts of different lengths prefill in groups of similar length (each padded to its own
    longest), not all to the longest: each row still gives what it gives alone, greedy and sampled."""
    prompts = [[3] * n for n in (1, 12, 9, 10, 5, 10, 2)]
    sizes = []
    new_cache = model.new_cache
    monkeypatch.setattr(model, "new_cache", lambda b, n=None: sizes.append((b, n)) or new_cache(b, n))
    batched = generate_ids(model, prompts, 4, temperature=0)
    # the batch's cache, then groups: 12, 10, 10 (10 >= 0.8 x 12); 9; 5; 2; 1
    assert sizes == [(7, 16), (3, 12), (1, 9), (1, 5), (1, 2), (1, 1)]
    monkeypatch.undo()
    assert batched == [generate_ids(model, [p], 4, temperature=0)[0] for p in prompts]
    sampled = [generate_ids(model, prompts, 4, top_k=10, seed=3, use_cache=c) for c in (True, False)]
    assert sampled[0] == sampled[1]  # without a cache nothing is prefilled: one padded batch a step


def test_batched_prompts_equal_single_prompts(model: GPT) -> None:
    prompts = [[1, 2, 3], [4, 5, 6], [7, 8]]
    batched = generate_ids(model, prompts, 8, temperature=0)
    assert batched == [generate_ids(model, [p], 8, temperature=0)[0] for p in prompts]


def test_stops_at_eos(model: GPT) -> None:
    first = generate_ids(model, [[1, 2]], 10, temperature=0)[0]
    eos = first[3]
    out = generate_ids(model, [[1, 2]], 10, temperature=0, eos_id=eos)[0]
    assert out == first[: first.index(eos)]


def test_prompt_longer_than_context(model: GPT) -> None:
    with pytest.raises(LmforgeError, match="longer than the model's context of 16"):
        generate_ids(model, [list(range(20))], 3)
    out = generate_ids(model, [list(range(20))], 3, temperature=0, truncate=True)[0]
    assert out == generate_ids(model, [list(range(4, 20))], 3, temperature=0)[0]


def test_top_k_and_top_p_restrict_the_choice() -> None:
    logits = torch.tensor([[0.0, 5.0, 4.0, -1.0, 3.0]])
    g = torch.Generator().manual_seed(0)
    picks_k = {int(sample_next(logits, 1.0, top_k=2, generator=g)) for _ in range(200)}
    assert picks_k == {1, 2}
    # probabilities ~ [.005, .64, .24, .002, .09]: top_p 0.7 keeps tokens 1 and 2 only
    picks_p = {int(sample_next(logits, 1.0, top_p=0.7, generator=g)) for _ in range(200)}
    assert picks_p == {1, 2}
    assert int(sample_next(logits, 0.0)) == 1
