"""Models loaded from disk are built without random initial weights (model/empty.py): the loaded
model computes what a randomly initialised one given the same weights computes, keeps its tied
lm_head tied, recomputes its rotary and sinusoidal tables, and draws nothing from the global RNG."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.model.empty import empty
from lmforge.model.encoder import Encoder
from lmforge.model.gpt import GPT
from lmforge.model.seq2seq import Seq2Seq

SMALL = dict(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=100)
LLAMA = dict(pos="rope", mlp="swiglu", norm="rmsnorm", tie_embeddings=False)
CASES: dict[str, Callable[[], nn.Module]] = {
    "gpt-tied": lambda: GPT(ModelConfig(**SMALL)),
    "llama-style": lambda: GPT(
        ModelConfig(**SMALL, pos="rope", mlp="swiglu", norm="rmsnorm", tie_embeddings=False)
    ),
    "encoder": lambda: Encoder(ModelConfig(**SMALL)),
    "marian-style": lambda: Seq2Seq(ModelConfig(**SMALL, pos="sinusoidal"), 0, 0, [0], 1),
}


@pytest.mark.parametrize("name", CASES)
def test_an_empty_build_loaded_computes_as_the_initialised_one(name: str) -> None:
    build = CASES[name]
    torch.manual_seed(0)
    reference = build().eval()
    state = torch.random.get_rng_state()
    model = empty(build)
    assert torch.equal(torch.random.get_rng_state(), state)  # nothing drawn
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in reference.named_parameters()]
    model.load_state_dict(reference.state_dict())
    model.eval()
    for (key, mine), (_, theirs) in zip(model.named_buffers(), reference.named_buffers(), strict=True):
        assert torch.equal(mine, theirs), key  # rotary cos/sin, sinusoid: computed again
    if isinstance(model, GPT) and model.config.tie_embeddings:
        assert model.lm_head.weight is model.wte.weight
    ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        if isinstance(model, Seq2Seq):
            assert torch.equal(model(ids, ids), reference(ids, ids))
        else:
            assert torch.equal(model(ids), reference(ids))
